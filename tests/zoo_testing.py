"""Shared helpers for the weight tests: a throwaway method with a learned masker, and releases.

The throwaway names (`zootest_*`) are registered only inside the fixtures that need them and
removed after, so the registry test matrix of other test files never sees them.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

import zoo
from zoo import timm_entries
from zoo.backbones import create_backbone
from zoo.pretrainer import Pretrainer
from zoo.publish import publish, update_table
from zoo.registry import METHODS, register_method


class TinyMasker(nn.Module):
    """A learned masker small enough to test with: softmax over K of a 1x1 conv."""

    def __init__(self, num_masks: int = 2):
        super().__init__()
        self.head = nn.Conv2d(3, num_masks, 1)

    def forward(self, images):
        return self.head(images).softmax(1)          # (B, K, H, W)

    def penalty(self, masks):
        return masks.new_zeros(())


@contextlib.contextmanager
def throwaway_method(method: str = "zootest", archs=("resnet18", "vit_tiny_patch4_32", "vit_small_patch4_32")):
    """Register `{method}_{arch}` for each arch; remove them (and their timm entries) on exit."""
    def factory(arch: str, num_masks: int = 2) -> Pretrainer:
        return Pretrainer(create_backbone(arch), nn.Identity(), TinyMasker(num_masks))

    register_method(method, archs=archs)(factory)
    names = [f"{method}_{a}" for a in archs]
    try:
        timm_entries.sync()
        yield names
    finally:
        for n in names:
            METHODS.pop(n, None)
        timm_entries.sync()


def tiny_name(arch: str = "vit_tiny_patch4_32") -> str | None:
    """A real registered method to publish (simclr first), when the methods have landed."""
    for method in ("simclr", "byol", "mae"):
        if f"{method}_{arch}" in METHODS:
            return f"{method}_{arch}"
    return None


def make_release(root: Path, name: str, tag: str, table: Path, *, seed: int = 0, dtype=None,
                 metrics: dict | None = None, with_masker: bool = True, **kw):
    """Build `name` untrained, publish it to root/<name>.<tag>, add it to `table`; (entry, pretrainer)."""
    torch.manual_seed(seed)
    pretrainer = zoo.create_pretrainer(name).eval()
    recipe = {"model": name, "objective": None, "model_args": {}, "data": "fashion_mnist", "image_size": 32,
              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "epochs": 1, "seed": seed}
    metrics = metrics if metrics is not None else {      # the layout train/knn.py etc. write
        "fashion_mnist/knn_top1_k20": 81.5, "fashion_mnist/knn_top1_k200": 80.25,
        "fashion_mnist/linear_top1": 84.0, "fashion_mnist/untrained/knn_top1_k20": 30.0,
        "fashion_mnist/raw_pixels/knn_top1_k20": 70.0, "fashion_mnist/knn_protocol": "weighted kNN, T=0.1",
        "pretrain": {"steps": 10, "wall_clock_s": 1.5}}
    entry = publish(pretrainer.exported_backbone(), root / f"{name}.{tag}", name, tag, recipe=recipe,
                    metrics=metrics, masker=pretrainer.masker if with_masker else None,
                    commit="0123456789abcdef0123456789abcdef01234567", dtype=dtype,
                    commands={"knn": "python train/knn.py runs/x --baselines"},
                    facts={"wall-clock": "1 s", "machine": "test"}, **kw)
    update_table(entry, table)
    return entry, pretrainer
