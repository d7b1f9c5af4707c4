"""Draw what a released learned masker does: the image, its K learned masks and masked views, and
below it the same image under random masks of the same K and area (what ADIOS is compared with).

    python train/mask_picture.py adios_resnet18.simclr_scenes --out masks.png             # held-out scenes
    python train/mask_picture.py adios_resnet18.simclr_fmnist --data fashion_mnist --out m.png
    python train/mask_picture.py adios_resnet18.simclr_scenes --image my.jpg --out my_masks.png

The masker comes from `zoo.create_masker(name, pretrained=True)` (hash-checked like every file);
images are resized to the release's input size and normalised with its mean and std. Rows: for
each image, `image | learned masks | masked views`, then `image | random masks | masked views`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import zoo  # noqa: E402
from train.mask_grid import save_mask_grid  # noqa: E402
from zoo import weights  # noqa: E402
from zoo.data import build_dataset, eval_transform  # noqa: E402
from zoo.evaluation import random_masks_like  # noqa: E402


def images_for(args, size: int, mean, std) -> torch.Tensor:
    tf = eval_transform(size, mean, std)
    if args.image:
        out = []
        for path in args.image:
            try:
                out.append(tf(Image.open(path).convert("RGB")))
            except (OSError, ValueError) as e:
                raise SystemExit(f"cannot read image {path}: {e}") from e
        return torch.stack(out)
    ds = build_dataset(args.data, "test", image_size=size, transform=tf)
    return torch.stack([ds[i][0] for i in range(args.n)])


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="a release with a learned masker, e.g. adios_resnet18.simclr_scenes")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--image", nargs="+", help="your own image file(s) instead of held-out test images")
    p.add_argument("--data", default="scenes", help="test images of this dataset (default scenes)")
    p.add_argument("--n", type=int, default=6, help="how many test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    args = p.parse_args(argv)
    key, entry = weights.find_release(*args.name.split(".", 1))      # "name" -> its default tag
    cfg = entry["pretrained_cfg"]
    size, mean, std = cfg["input_size"][-1], cfg["mean"], cfg["std"]
    masker = zoo.create_masker(key, pretrained=True).float().eval()
    x = images_for(args, size, mean, std)
    with torch.no_grad():
        learned = masker(x).float()
    rand = random_masks_like(learned, (size, size), generator=torch.Generator().manual_seed(args.seed)).float()
    rows = torch.stack([x, x], 1).flatten(0, 1)                 # image i learned, image i random, ...
    masks = torch.stack([learned, rand], 1).flatten(0, 1)
    save_mask_grid(args.out, rows, masks, mean, std)
    print(f"wrote {args.out}: {len(x)} images x (learned, random) masks, K={learned.shape[1]}, {key}")
    return args.out


if __name__ == "__main__":
    main()
