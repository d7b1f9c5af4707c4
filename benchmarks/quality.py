"""Quality at a fixed budget: kNN top-1 on Fashion-MNIST after the same training-compute minutes,
ours vs lightly, SimCLR and BYOL on timm resnet18 at 32 px, each in its default precision (ours:
the recipes' bf16 autocast + channels_last; lightly: fp32, as its examples train).

Identical for both sides: initial weights (lightly's model gets a copy of ours, `versus`), head
widths, the augmentation (`zoo.data.views.two_views`, the Fashion-MNIST grayscale fallback of the
method's preset), the order of the images (one seeded shuffle), batch size, optimizer (SGD,
momentum 0.9, weight decay 5e-4, lr 0.06 * batch / 128 as lightly's CIFAR-10 benchmark) and its
cosine decay over the budget, and the evaluation: weighted kNN (cosine, T = 0.1, k = 20 and 200;
zoo.evaluation) on frozen fp32 features of the first `knn_train` train images, tested on the
first `knn_test` test images.

The budget counts training-step time only: the clock runs during forward, backward, optimizer
step and EMA update and stops while the (shared, identical) augmentation pipeline prepares the
next batch, so a slow data pipeline does not blur the comparison of the two training steps. The
learning-rate and BYOL-momentum schedules follow that clock (progress = elapsed / budget).

Example:
    >>> from benchmarks.quality import run
    >>> r = run(minutes=0.05, knn_train=200, knn_test=100)      # doctest: +SKIP
    >>> sorted(r["runs"])                                       # doctest: +SKIP
    ['byol/lightly', 'byol/ours', 'simclr/lightly', 'simclr/ours']
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks import peer_lightly
from benchmarks.common import to_format
from benchmarks.stepping import train_step

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
PRESET = {"simclr": "simclr", "byol": "byol"}


def available() -> bool:
    return (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def _loader(method: str, batch: int, seed: int):
    from zoo.data import DATASETS, build_dataset, two_views
    stats = DATASETS["fashion_mnist"]
    views = two_views(PRESET[method], 32, stats["mean"], stats["std"], grayscale=True)
    ds = build_dataset("fashion_mnist", "train", image_size=32, transform=views)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, generator=g, num_workers=0)


def eval_split(data: str, image_size: int, mean, std, n_train: int, n_test: int):
    """(train images, labels), (test images, labels): the first n_train / n_test images of the
    splits, unaugmented at `image_size` with the given normalisation."""
    from zoo.data import build_dataset, eval_transform
    tf = eval_transform(image_size, mean, std)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        ds = build_dataset(data, split, image_size=image_size, transform=tf)
        pairs = [ds[i] for i in range(min(n, len(ds)))]
        out.append((torch.stack([x for x, _ in pairs]), torch.as_tensor([y for _, y in pairs])))
    return out


def knn(backbone, split, num_classes: int = 10) -> dict:
    """Weighted kNN top-1 (k = 20, 200) of `backbone`'s frozen fp32 features on `split` (eval_split);
    train.eval_common.raw_pixels() as the backbone gives the raw-pixel baseline."""
    from zoo.evaluation import extract_features, knn_classify
    net = copy.deepcopy(backbone).float().to(memory_format=torch.contiguous_format).eval()
    (ftr, ytr), (fte, yte) = (extract_features(net, list(zip(x, y)), batch_size=256) for x, y in split)
    return knn_classify(ftr, ytr, fte, yte, k=(20, 200), T=0.1, num_classes=num_classes)


def _knn(backbone, knn_train: int, knn_test: int) -> dict:
    from zoo.data import DATASETS
    stats = DATASETS["fashion_mnist"]
    return knn(backbone, eval_split("fashion_mnist", 32, stats["mean"], stats["std"], knn_train, knn_test))


def _train(side: str, model, method: str, precision: str, seconds: float, batch: int, seed: int) -> dict:
    """Train `model` (our pretrainer or lightly's model) for `seconds` of step time."""
    model = to_format(model.train(), precision)
    if side == "ours":                      # the CPU kernels the training loop trains with (zoo/kernels.py)
        from zoo.kernels import use_fast_kernels
        use_fast_kernels(model)
    params = (model.parameters_of("encoder") if side == "ours"
              else [p for p in model.parameters() if p.requires_grad])
    base_lr = 0.06 * batch / 128
    opt = torch.optim.SGD(params, lr=base_lr, momentum=0.9, weight_decay=5e-4)
    opts = {"encoder": opt}
    elapsed, steps, losses = 0.0, 0, []
    while elapsed < seconds:
        for views, _ in _loader(method, batch, seed + steps):
            progress = min(elapsed / seconds, 1.0)
            for g in opt.param_groups:
                g["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * progress))
            views = [to_format(v, precision) for v in views]
            t0 = time.perf_counter()
            if side == "ours":
                loss = train_step(model, views, opts, precision, progress=progress)
            else:
                loss = peer_lightly.train_step(model, views, opt, precision, progress=progress)
            elapsed += time.perf_counter() - t0
            steps += 1
            losses.append(loss)
            if elapsed >= seconds:
                break
    return dict(steps=steps, images=steps * batch, train_seconds=elapsed,
                images_per_s=steps * batch / elapsed, first_loss=losses[0], last_loss=losses[-1],
                loss_finite=all(math.isfinite(x) for x in losses))


def run(minutes: float = 3.0, batch: int = 128, knn_train: int = 10000, knn_test: int = 10000,
        seed: int = 0, methods=("simclr", "byol")) -> dict:
    from benchmarks.versus import build_pair
    if not available():
        return dict(skipped=f"Fashion-MNIST not found in {FMNIST_DIR} "
                            "(apt-get update && apt-get install -y dataset-fashion-mnist)")
    out = dict(minutes=minutes, batch=batch, knn_train=knn_train, knn_test=knn_test, runs={})
    for method in methods:
        ours, theirs = build_pair(method, seed)
        out["runs"][f"{method}/untrained"] = dict(knn=_knn(ours.backbone, knn_train, knn_test))
        for side, model, precision in (("ours", ours, "bf16"), ("lightly", theirs, "fp32")):
            r = _train(side, model, method, precision, minutes * 60, batch, seed)
            r["precision"] = precision
            r["knn"] = _knn(model.backbone, knn_train, knn_test)
            out["runs"][f"{method}/{side}"] = r
    return out
