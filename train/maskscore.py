"""Mask score of a run's masker on held-out scenes, against random and block maskers of the same K
and area on the same images in the same run (zoo.evaluation.score_masker), written to metrics.json.

    python train/maskscore.py runs/adios_resnet18_scenes
    python train/maskscore.py runs/adios_resnet18_scenes --n 256 --out runs/eval
    python train/maskscore.py adios_resnet18.simclr_scenes --out runs/eval   # a released masker

Score: for each ground-truth object (its visible pixels) the best IoU over the K masks binarised
at 0.5, averaged over objects. Cover: per scene, the share of its objects' pixels hidden by the
slot that hides the most of them, averaged over scenes (1: a masked view shows no object). Keys:
"scenes/mask_score", "scenes/mask_cover", each with "_random" and "_block" baselines, plus the
masks' K and mean area.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402

from train.eval_common import image_size_of  # noqa: E402
from zoo.evaluation import mask_protocol, score_masker  # noqa: E402
from zoo.runs import load_pretrainer, update_metrics  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="SOURCE", help="a run directory (train/pretrain.py) whose pretrainer has a "
                   "masker, or a released name (zoo.create_masker(name, pretrained=True))")
    p.add_argument("--n", type=int, default=1000, help="held-out scenes to score (test split)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--seed", type=int, default=0, help="seed of the random / block baselines")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="folder for metrics.json (default: the run directory)")
    args = p.parse_args(argv)
    t0 = time.time()
    if (Path(args.run_dir) / "recipe.yaml").exists():
        pretrainer, recipe = load_pretrainer(args.run_dir)
        masker = getattr(pretrainer, "masker", None)
        if masker is None:
            p.error(f"{recipe.get('model')} has no masker to score")
    elif args.out is None:
        p.error(f"{args.run_dir} is not a run directory (no recipe.yaml): give --out for a released name")
    else:                                  # a released masker, as a user gets it
        import zoo
        masker, recipe = zoo.create_masker(args.run_dir, pretrained=True).float(), {}
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    image_size = image_size_of(args, recipe.get("image_size"))
    # the masker sees images normalised as in its training run (the recipe's values, or scenes')
    own = recipe.get("data") == "scenes" and recipe.get("mean") is not None
    result = score_masker(masker.to(device), image_size=image_size, n=args.n,
                          batch_size=args.batch_size, seed=args.seed, device=device,
                          mean=recipe["mean"] if own else None, std=recipe["std"] if own else None)
    metrics = {f"scenes/{k}": v for k, v in result.items()}
    metrics["scenes/mask_protocol"] = mask_protocol(args.n, image_size, args.seed)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    target = args.out or args.run_dir
    update_metrics(target, metrics)
    print(f"done in {time.time() - t0:.0f} s, metrics in {Path(target) / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
