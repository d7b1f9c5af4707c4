"""Datasets and view transforms: one entry point, `build_dataset`.

Names: "scenes" (embedded synthetic scenes, no download, `zoo.data.scenes`), "fashion_mnist"
(local IDX files or the Hub, `zoo.data.sources`), "imagefolder" (root = a folder of class
sub-folders), "hf:<id>" (any `datasets` id, streamed when large). Each dataset yields
`(transform(PIL RGB image), label)` and has `.num_classes` and `.skipped` (the unreadable-image
log: see `collate_skip_bad`). `DATASETS[name]` holds the normalisation mean/std, the class count
and whether the images were grayscale (then the view presets use their `_gray` fallback).

Example:
    >>> from zoo.data import build_dataset, DATASETS, eval_transform
    >>> stats = DATASETS["scenes"]
    >>> ds = build_dataset("scenes", "test", image_size=32,
    ...                    transform=eval_transform(32, stats["mean"], stats["std"]))
    >>> x, y = ds[0]
    >>> x.shape, 0 <= y < num_classes("scenes")
    (torch.Size([3, 32, 32]), True)
"""
from __future__ import annotations

from zoo.data.scenes import SceneDataset
from zoo.data.sources import (DataMissingError, FashionMNIST, SkipLog, UnreadableImageError,
                              collate_skip_bad, hub_dataset, image_folder)
from zoo.data.views import eval_transform, finetune_transform, two_views
from zoo.suggest import did_you_mean

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# mean / std measured on the train split at 32 px (scenes: the first 5 000 scenes; Fashion-MNIST:
# all 60 000 images, resized to 32 px (fit="resize"), 3 channels), by
#   python -c "from zoo.data import channel_stats; print(channel_stats('scenes'))"
#   python -c "from zoo.data import channel_stats; print(channel_stats('fashion_mnist', n=60000))"
DATASETS: dict[str, dict] = {
    "scenes": dict(mean=(0.5011, 0.4979, 0.5005), std=(0.2980, 0.2979, 0.2967), num_classes=8,
                   grayscale=False),
    "fashion_mnist": dict(mean=(0.2856,) * 3, std=(0.3385,) * 3, num_classes=10, grayscale=True),
    # unknown data: ImageNet statistics, class count read from the dataset itself
    "imagefolder": dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=None, grayscale=False),
    "hf": dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=None, grayscale=False),
}


def _key(name: str) -> str:
    key = "hf" if name.startswith("hf:") else name
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}.{did_you_mean(name, DATASETS)} Known: scenes, fashion_mnist, "
                         "imagefolder, hf:<datasets id>.")
    return key


def dataset_stats(name: str) -> dict:
    """mean, std, num_classes, grayscale of a dataset name (ImageNet stats for imagefolder / hf:)."""
    return DATASETS[_key(name)]


def num_classes(dataset_or_name) -> int:
    """Class count of a dataset name ("scenes" -> 8) or of a built dataset."""
    n = (dataset_stats(dataset_or_name)["num_classes"] if isinstance(dataset_or_name, str)
         else getattr(dataset_or_name, "num_classes", None))
    if n is None:
        raise ValueError(f"The class count of {dataset_or_name!r} is known only once it is built "
                         "(build_dataset(...).num_classes), or its labels are not a ClassLabel.")
    return n


def build_dataset(name: str, split: str = "train", root=None, image_size: int = 32,
                  transform=None, **kw):
    """A torch Dataset yielding `(transform(PIL RGB image), label)`.

    name: "scenes" | "fashion_mnist" | "imagefolder" | "hf:<id>". root: the data folder
    (Fashion-MNIST IDX folder, image folder) where one is needed. image_size: the size scenes
    are drawn at and Fashion-MNIST is brought to (image folders and Hub images keep theirs: the
    transform sizes them). kw go to the source: scenes (length, seed), fashion_mnist (fit, source),
    imagefolder / hf (strict, image_key, label_key, cache_dir; hf: streaming, revision).
    """
    key = _key(name)
    if key == "scenes":
        return SceneDataset(split, image_size, transform=transform, **kw)
    if key == "fashion_mnist":
        return FashionMNIST(split, root, image_size, transform, **kw)
    if key == "imagefolder":
        return image_folder(root, split, transform, **kw)
    return hub_dataset(name[3:], split, transform, **kw)


def channel_stats(name: str, n: int = 5000, image_size: int = 32, **kw) -> tuple:
    """Per-channel mean and std over the first n train images (how DATASETS was measured)."""
    import numpy as np
    ds = build_dataset(name, "train", image_size=image_size, **kw)
    x = np.stack([np.asarray(ds[i][0], np.float64) / 255 for i in range(min(n, len(ds)))])
    return tuple(x.mean((0, 1, 2)).round(4).tolist()), tuple(x.std((0, 1, 2)).round(4).tolist())


__all__ = ["DATASETS", "SceneDataset", "FashionMNIST", "SkipLog", "DataMissingError",
           "UnreadableImageError", "build_dataset", "channel_stats", "collate_skip_bad",
           "dataset_stats", "eval_transform", "finetune_transform", "num_classes", "two_views"]
