"""The Pretrainer: backbone + objective + masker, stepped by phases.

Every method is a `Pretrainer`, so the training loop is the same for all of them:

    for phase in pretrainer.phases:                  # e.g. ("encoder", "masker") for ADIOS
        loss = pretrainer(views, phase=phase)
        loss.backward(); optimizers[phase].step(); optimizers[phase].zero_grad()
    pretrainer.update(progress)                      # EMA teachers, progress-driven schedules

`views` is a list of augmented batches (B, C, H, W): one for MAE and AutoMAE, two for the
siamese objectives. Each phase has its own parameters (`parameters_of(phase)`) and optimizer.

Example:
    >>> import torch, zoo
    >>> p = zoo.create_pretrainer("simclr_resnet18")
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> p(views, phase="encoder").backward()
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from zoo.kernels import use_fast_kernels


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Run with the modules' parameters excluded from autograd, restoring their flags after.

    Used by adversarial phases: the player that is not being stepped gets no gradient at all.
    """
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _fast_kernels(pretrainer: nn.Module, args: tuple) -> None:
    use_fast_kernels(pretrainer)


class Pretrainer(nn.Module):
    """A backbone trained by an objective on views that a masker hides.

    `masker=None` gives the plain controls (SimCLR, BYOL, SimSiam). A fixed masker (random,
    block) hides parts of the views in the encoder phase. Methods with a learned masker subclass
    this and add phases (ADIOS: "masker"; AutoMAE: "discriminator").
    """

    phases: tuple[str, ...] = ("encoder",)

    def __init__(self, backbone: nn.Module, objective: nn.Module, masker: nn.Module | None = None):
        super().__init__()
        self.backbone, self.objective, self.masker = backbone, objective, masker
        # The faster CPU training kernels (zoo/kernels.py) for every attention module and
        # convolution (backbone, decoders, teachers, maskers), including those a subclass adds later.
        self.register_forward_pre_hook(_fast_kernels)

    def parameters_of(self, phase: str) -> list[nn.Parameter]:
        """The trainable parameters that phase `phase` steps."""
        if phase == "encoder":
            modules = [self.backbone, self.objective]
        elif phase in self.phases and self.masker is not None:
            modules = [self.masker]
        else:
            raise ValueError(f"{type(self).__name__} has no phase {phase!r}; phases: {self.phases}")
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def forward(self, views: Sequence[Tensor], phase: str = "encoder") -> Tensor:
        if phase != "encoder":
            raise ValueError(f"{type(self).__name__} has no phase {phase!r}; phases: {self.phases}")
        masks = None
        if self.masker is not None:
            with torch.no_grad():
                masks = [None] + [self.masker(v) for v in views[1:]]   # hide the second view
        return self.objective(self.backbone, views, masks)

    @torch.no_grad()
    def update(self, progress: float) -> None:
        """After each optimisation step; progress in [0, 1] over the whole run."""
        update = getattr(self.objective, "update", None)
        if update is not None:
            update(self.backbone, progress)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that take no weight decay beyond biases and norms (timm's convention,
        read by train/optim.py): what the objective declares, e.g. ExtreMA's class-attention CLS."""
        declared = getattr(self.objective, "no_weight_decay", None)
        return {f"objective.{name}" for name in declared()} if declared else set()

    def static_lr(self) -> set[str]:
        """Names of parameters that keep the phase's base lr, off the schedule (SimSiam's predictor)."""
        declared = getattr(self.objective, "static_lr", None)
        return {f"objective.{name}" for name in declared()} if declared else set()

    def exported_backbone(self) -> nn.Module:
        """The network that is released as the plain timm backbone (online encoder by default)."""
        return self.backbone
