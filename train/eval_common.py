"""What train/knn.py, train/linear.py and train/finetune.py share: arguments, data, the backbone.

A SOURCE is a run directory (its exported backbone; data, image size and normalisation default to
its recipe's), a zoo model name (`zoo.create_model(name, pretrained=True)`; image size and
normalisation from its pretrained cfg, data default fashion_mnist, the released weights' data),
`local-dir:<folder>` (vanilla timm loading a published folder, likewise) or `raw-pixels` (the
flattened normalised image: the raw-pixel baseline). Metrics go to SOURCE/metrics.json for a run
directory, else to --out/metrics.json when given, under keys "<data>/<metric>" (e.g. "scenes/knn_top1_k20"); the baselines of --baselines
under "<data>/untrained/<metric>" and "<data>/raw_pixels/<metric>".
"""
from __future__ import annotations

import argparse
import itertools
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import IterableDataset, Subset  # noqa: E402

from train.allocator import keep_freed_memory  # noqa: E402
from train.recipe import Recipe  # noqa: E402
from zoo.data import build_dataset, dataset_stats, eval_transform  # noqa: E402
from zoo.evaluation import extract_features, load_backbone  # noqa: E402
from zoo.runs import update_metrics  # noqa: E402

RAW = "raw-pixels"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("source", help="run directory, zoo model name, local-dir:<folder> or raw-pixels")
    p.add_argument("--data", default=None, help="scenes | fashion_mnist | imagefolder | hf:<id> "
                   "(default: the run's recipe data, else fashion_mnist)")
    p.add_argument("--root", default=None, help="data folder (Fashion-MNIST IDX files, image folder)")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: the run's or weight's image size, else 32")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N train images")
    p.add_argument("--limit-test", type=int, default=None, help="use only the first N test images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the backbone")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="folder for metrics.json (default: the run directory)")
    p.add_argument("--strict-data", action="store_true", help="stop at the first unreadable image")
    return p


def recipe_of(source: str) -> dict:
    """The recipe of a run directory ({} for anything else), read without loading weights."""
    path = Path(source) / "recipe.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def data_name(args) -> str:
    return args.data or recipe_of(args.source).get("data") or "fashion_mnist"


def image_size_of(args, known: int | None = None) -> int:
    """--image-size, else what the source says (its recipe, its weight's cfg), else the recipes' default."""
    return int(args.image_size or known or Recipe.image_size)


def backbone_and_defaults(args, num_classes: int = 0, pretrained: bool = True):
    """(backbone or None for raw pixels, data name, image size), filling args' defaults."""
    backbone, info = (None, {"data": None, "image_size": None}) if args.source == RAW else \
        load_backbone(args.source, num_classes=num_classes, pretrained=pretrained)
    args.weight_norm = (info["mean"], info["std"]) if info.get("mean") else None
    return backbone, data_name(args), image_size_of(args, info.get("image_size"))


def _limit(ds, n):
    if n is None:
        return ds
    if isinstance(ds, IterableDataset):
        return _Head(ds, n)
    return Subset(ds, range(min(n, len(ds))))


class _Head(IterableDataset):
    def __init__(self, ds, n):
        self.ds, self.n, self.skipped = ds, n, ds.skipped

    def __iter__(self):
        return itertools.islice(iter(self.ds), self.n)


def normalisation(args, data: str) -> tuple:
    """(mean, std): a released weight's own (its pretrained cfg); a run's recipe values when it
    set them and is evaluated on its own data; else the dataset's statistics."""
    if getattr(args, "weight_norm", None):
        return args.weight_norm
    recipe = recipe_of(args.source)
    stats = dataset_stats(data)
    if recipe.get("data") == data and recipe.get("mean") is not None:
        return tuple(recipe["mean"]), tuple(recipe["std"])
    return stats["mean"], stats["std"]


def data_source(args, data: str) -> tuple[str | None, dict]:
    """(root, dataset keywords) that `datasets` builds `data` from: --root, or for a run evaluated on
    its own data the recipe's data_root, and its data_args but `length` (a pretraining subset)."""
    recipe = recipe_of(args.source)
    own = recipe.get("data") == data
    root = args.root or (recipe.get("data_root") if own else None)
    return root, ({k: v for k, v in (recipe.get("data_args") or {}).items() if k != "length"} if own else {})


def datasets(args, data: str, image_size: int, train_transform=None):
    """(train, test) datasets with the eval transform (train_transform overrides the train one).

    For a run evaluated on its own data, the recipe's data_root and data_args (but `length`, a
    pretraining subset) are used too: the same images, e.g. Fashion-MNIST's `fit`.
    """
    root, kw = data_source(args, data)
    test_tf = eval_transform(image_size, *normalisation(args, data))
    if args.strict_data and (data == "imagefolder" or data.startswith("hf:")):
        kw["strict"] = True
    if data == "scenes":  # scenes are drawn lazily: a limit is just a shorter dataset
        train = build_dataset(data, "train", image_size=image_size, transform=train_transform or test_tf,
                              **kw, **({"length": args.limit_train} if args.limit_train else {}))
        test = build_dataset(data, "test", image_size=image_size, transform=test_tf,
                             **kw, **({"length": args.limit_test} if args.limit_test else {}))
        return train, test
    train = build_dataset(data, "train", root, image_size, train_transform or test_tf, **kw)
    test = build_dataset(data, "test", root, image_size, test_tf, **kw)
    return _limit(train, args.limit_train), _limit(test, args.limit_test)


def device_of(args) -> torch.device:
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def features(backbone, train, test, args) -> tuple:
    """(train_f, train_y, test_f, test_y): frozen features of both splits, on the eval device."""
    kw = dict(batch_size=args.batch_size, bf16=args.bf16, num_workers=args.num_workers)
    backbone = backbone.to(device_of(args))
    return (*extract_features(backbone, train, **kw), *extract_features(backbone, test, **kw))


def raw_pixels() -> nn.Module:
    """The raw-pixel 'backbone': the flattened normalised image."""
    return nn.Flatten()


def untrained(args, num_classes: int = 0, seed: int = 0) -> nn.Module:
    """The same architecture as SOURCE with fresh weights (seeded), the untrained baseline."""
    torch.manual_seed(seed)
    return load_backbone(args.source, num_classes=num_classes, pretrained=False)[0]


def num_classes_of(ds) -> int | None:
    return getattr(getattr(ds, "dataset", ds), "num_classes", None)


def skipped_report(*dsets) -> str | None:
    logs = [getattr(getattr(d, "dataset", d), "skipped", None) for d in dsets]
    n = sum(log.count for log in logs if log is not None)
    return "\n".join(log.report() for log in logs if log is not None and log.count) if n else None


def write_metrics(args, metrics: dict) -> Path | None:
    """Merge metrics into SOURCE/metrics.json (run directory) or --out/metrics.json."""
    target = args.out or (args.source if (Path(args.source) / "recipe.yaml").exists() else None)
    if target is None:
        print("(no run directory and no --out: metrics not written)")
        return None
    update_metrics(target, metrics)
    return Path(target) / "metrics.json"


def with_baselines(args, measure) -> tuple[dict, object, object]:
    """`measure(backbone, train, test, args, prefix)` on the source and, with --baselines (or for
    `raw-pixels`), on the untrained architecture and raw pixels, in the same run."""
    backbone, data, args.image_size = backbone_and_defaults(args)
    train, test = datasets(args, data, args.image_size)
    metrics = {}
    if backbone is not None:
        metrics.update(measure(backbone, train, test, args, data))
        if args.baselines:
            metrics.update(measure(untrained(args), train, test, args, f"{data}/untrained"))
    if backbone is None or args.baselines:
        metrics.update(measure(raw_pixels(), train, test, args, f"{data}/raw_pixels"))
    return metrics, train, test


def run_script(doc: str, measure, *add_args, argv=None) -> dict:
    """The main() of knn.py / linear.py / evaluate.py: the common options, `add_args(parser)` of
    each protocol, --baselines; measure (with the baselines), print and write the metrics."""
    p = parser(doc.split("\n\n")[0])
    for add in add_args:
        add(p)
    p.add_argument("--baselines", action="store_true",
                   help="also the untrained architecture and raw pixels, in the same run")
    args = p.parse_args(argv)
    keep_freed_memory()                 # train/allocator.py
    t0 = time.time()
    metrics, train, test = with_baselines(args, measure)
    finish(args, metrics, train, test, t0)
    return metrics


def finish(args, metrics: dict, train, test, t0: float) -> None:
    """Print the metrics and any skipped-image report, and merge them into metrics.json."""
    for key, value in metrics.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    report = skipped_report(train, test)
    if report:
        print(report)
    path = write_metrics(args, metrics)
    print(f"done in {time.time() - t0:.0f} s" + (f", metrics in {path}" if path else ""))
