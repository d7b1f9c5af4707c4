"""A tiny pretrainer for the training tests, built from the zoo's real parts.

`tiny_test_resnet`: timm's `test_resnet` backbone (BatchNorm, ~0.4 M parameters) + the zoo's
BYOL (EMA teacher) or SimCLR objective with small heads + a small ADIOS occluder (N = 2 soft masks)
in `ADIOSPretrainer`: two phases, an EMA teacher, a learned masker and BN buffers: everything
resume and DDP must carry, at a size that trains in milliseconds at 16 px.

`nan_at="masker:3"` makes the 3rd call of that phase return a NaN loss (tests/test_nan.py).
Importing this module registers the method (test processes only).
"""
from __future__ import annotations

import torch

from zoo.backbones import ARCHS, create_backbone
from zoo.methods.adios import ADIOSOccluder, ADIOSPretrainer
from zoo.objectives import create_objective
from zoo.registry import METHODS, register_method

ARCHS.setdefault("test_resnet", ("test_resnet", {}))


class TinyADIOS(ADIOSPretrainer):
    def __init__(self, *args, nan_at: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_at, self.calls = nan_at, {}

    def forward(self, views, phase="encoder"):
        self.calls[phase] = self.calls.get(phase, 0) + 1
        loss = super().forward(views, phase)
        if self.nan_at == f"{phase}:{self.calls[phase]}":
            loss = loss * float("nan")
        return loss


if "tiny_test_resnet" not in METHODS:
    @register_method("tiny", archs=("test_resnet",), objectives=("byol", "simclr"), paper="test only",
                     pretrainer=TinyADIOS, takes_img_size=True)
    def tiny(arch: str, objective: str = "byol", img_size: int = 16, num_masks: int = 2,
             nan_at: str = "") -> TinyADIOS:
        backbone = create_backbone(arch)
        heads = dict(proj_hidden_dim=32, proj_output_dim=16)
        if objective == "byol":
            heads["pred_hidden_dim"] = 32
        obj = create_objective(objective, backbone, **heads)
        occluder = ADIOSOccluder(img_size=img_size, num_masks=num_masks, mask_fbase=8)
        return TinyADIOS(backbone, obj, occluder, nan_at=nan_at)
