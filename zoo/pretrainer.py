"""The Pretrainer: backbone + objective + masker, stepped by phases.

Every method is a `Pretrainer`, so the training loop is the same for all of them:

    for phase in pretrainer.phases:                  # e.g. ("encoder", "masker") for ADIOS
        loss = pretrainer(views, phase=phase)
        loss.backward(); optimizers[phase].step(); optimizers[phase].zero_grad()
    pretrainer.update(progress)                      # EMA teachers, progress-driven schedules

`views` is a list of augmented batches (B, C, H, W): one for MAE and AutoMAE, two for the
siamese objectives. Each phase has its own parameters (`parameters_of(phase)`) and optimizer.

What code outside the method needs to know is declared on the class, so that the registry
(`zoo.registry.MethodEntry`), train/ and the tests read it without building a model:

    phases          the phases, in step order
    phase_modules   phase -> the attribute names (dotted for submodules) whose parameters it steps
    num_views       how many augmented views one step takes
    masked_views    which of them the masker hides (`masked_views_of(objective)` where the base
                    objective decides, ADIOS's SimSiam masking both)

The CPU training kernels (zoo/kernels.py) are the training loop's business (train/pretrain.py,
benchmarks/): a model class never patches its modules, so an exported backbone is plain timm.

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

from zoo.suggest import did_you_mean


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


class Pretrainer(nn.Module):
    """A backbone trained by an objective on views that a masker hides.

    `masker=None` gives the plain controls (SimCLR, BYOL, SimSiam). A fixed masker (random,
    block) hides view 2 (`masked_views`) in the encoder phase. Methods with a learned masker
    subclass this and declare their phases and what each steps (ADIOS: "masker"; AutoMAE:
    "discriminator").
    """

    phases: tuple[str, ...] = ("encoder",)
    phase_modules: dict[str, tuple[str, ...]] = {"encoder": ("backbone", "objective")}
    num_views: int = 2
    masked_views: tuple[int, ...] = (1,)     # ADIOS's wiring: view 1 stays whole, view 2 is hidden

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A method author learns at import, not mid-training, that a phase steps nothing declared.
        if set(cls.phase_modules) != set(cls.phases):
            raise TypeError(f"{cls.__name__}.phase_modules must name the modules of each phase "
                            f"{cls.phases}, got {sorted(cls.phase_modules)}")
        if any(not 0 <= i < cls.num_views for i in cls.masked_views):
            raise TypeError(f"{cls.__name__}.masked_views {cls.masked_views} must index its "
                            f"{cls.num_views} views")

    def __init__(self, backbone: nn.Module, objective: nn.Module, masker: nn.Module | None = None):
        super().__init__()
        self.backbone, self.objective, self.masker = backbone, objective, masker
        if masker is None:                      # the plain controls hide nothing (as their registry entries say)
            self.masked_views = ()

    @classmethod
    def masked_views_of(cls, objective: str | None = None) -> tuple[int, ...]:
        """The views the masker hides when the base objective is `objective` (the class's by default)."""
        return cls.masked_views

    def no_phase(self, phase: str) -> ValueError:
        """The error for a phase this pretrainer does not have (raised by forward, parameters_of)."""
        return ValueError(f"{type(self).__name__} has no phase {phase!r}; phases: {self.phases}."
                          f"{did_you_mean(phase, self.phases, quote=True)}")

    def parameters_of(self, phase: str) -> list[nn.Parameter]:
        """The trainable parameters that phase `phase` steps (its `phase_modules`, in order)."""
        if phase not in self.phases:
            raise self.no_phase(phase)
        modules = [self.get_submodule(name) for name in self.phase_modules[phase]]
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def forward(self, views: Sequence[Tensor], phase: str = "encoder") -> Tensor:
        if phase != "encoder":
            raise self.no_phase(phase)
        masks = None
        if self.masker is not None:
            with torch.no_grad():
                masks = [self.masker(v) if i in self.masked_views else None for i, v in enumerate(views)]
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
