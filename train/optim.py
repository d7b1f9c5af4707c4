"""One optimizer and one per-step warmup-cosine schedule per phase of a pretrainer.

- Parameter groups: weight decay on weights (ndim >= 2), none on biases and norm parameters
  (ndim <= 1), nanoGPT's rule; it is also what MAE's `add_weight_decay` and solo-learn's
  `exclude_bias_n_norm` exclude.
- LARS is timm's `Lars` (SGD momentum + layer-wise trust ratio, `trust_coeff` = eta, clipping
  as solo-learn's `grad_clip_lars`). With `always_adapt=False` timm skips the adaptation for the
  groups without weight decay, i.e. biases and norms are excluded from LARS as in the ADIOS
  reference. SGD is torch's with momentum; AdamW is torch's with the recipe's betas.
- The schedule is timm's `CosineLRScheduler` stepped per optimizer step (`step_update`): linear
  warmup from `warmup_start_lr` over `warmup_epochs`, then a half cosine to `min_lr` over the
  remaining steps (`warmup_prefix=True`, pl_bolts' `LinearWarmupCosineAnnealingLR` shape).
  ADIOS's reference steps its scheduler once per epoch; per step is smoother and is what MAE and
  ExtreMA do (named in the recipes).
- What a method declares: `Pretrainer.no_weight_decay()` names join the no-decay group (ExtreMA's
  class-attention CLS token; only ExtreMA's reference exempts ViT tokens, so timm's own
  `VisionTransformer.no_weight_decay()` is deliberately not read); `Pretrainer.static_lr()` names
  get groups of their own, marked `static_lr`, that stay at the phase's base lr through warmup and
  cosine (SimSiam's predictor, solo-learn's / ADIOS's `static_lr` groups). The reference replaces
  those groups' lr in every `get_lr()` call, warmup included (YugeTen/adios `src/methods/base.py`
  l51-57 and l359-366, `base_adios.py` l14-20 and l136-147; `simsiam.py` l104, `simsiam_adios.py`
  l147), but installs the replacement after the pl_bolts scheduler's constructor has already set
  every group to `warmup_start_lr`; so its predictor runs the first epoch at `warmup_start_lr`
  (0.003) and every later epoch at the base lr. We hold the base lr from the first step: that
  first epoch is an artefact of the patching order, and SimSiam's own `--fix-pred-lr`
  (facebookresearch/simsiam) fixes the predictor's lr from the start.

Example:
    >>> import torch
    >>> from train.recipe import Recipe
    >>> from train.optim import build_optimizer, build_schedule
    >>> net = torch.nn.Linear(4, 2)
    >>> r = Recipe(model="x", optimizer="lars", lr=0.1, warmup_epochs=1)
    >>> opt = build_optimizer(r, "encoder", list(net.named_parameters()))
    >>> [g["weight_decay"] for g in opt.param_groups]
    [1e-05, 0.0]
    >>> sched = build_schedule(r, "encoder", opt, steps_per_epoch=10, total_steps=100)
    >>> sched.step_update(10); round(opt.param_groups[0]["lr"], 4)
    0.1
"""
from __future__ import annotations

import torch
from timm.optim import Lars
from timm.scheduler import CosineLRScheduler
from torch import nn


def phase_named_parameters(pretrainer: nn.Module, phase: str) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs that `phase` steps, named as in the pretrainer's state dict."""
    wanted = {id(p) for p in pretrainer.parameters_of(phase)}
    named = [(n, p) for n, p in pretrainer.named_parameters() if id(p) in wanted]
    if not named:
        raise ValueError(f"{type(pretrainer).__name__}.parameters_of({phase!r}) is empty: "
                         "a phase without trainable parameters cannot have an optimizer")
    return named


def param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float,
                 no_weight_decay: set[str] = frozenset(), static_lr: set[str] = frozenset()) -> list[dict]:
    """Weights decay; biases, norms (ndim < 2) and the names in `no_weight_decay` do not. The
    names in `static_lr` get groups of their own, marked `static_lr`, that the schedule leaves at
    the base lr."""
    groups = []
    for static in (False, True):
        mine = [(n, p) for n, p in named if (n in static_lr) == static]
        decay = [p for n, p in mine if p.ndim >= 2 and n not in no_weight_decay]
        no_decay = [p for n, p in mine if p.ndim < 2 or n in no_weight_decay]
        groups += [{"params": decay, "weight_decay": weight_decay, "static_lr": static},
                   {"params": no_decay, "weight_decay": 0.0, "static_lr": static}]
    return [g for g in groups if g["params"]]


def effective_lr(recipe, lr: float) -> float:
    """The recipe's lr, scaled with the global batch when `lr_scaling: linear` (lr * bs / 256)."""
    return lr * recipe.batch_size / 256 if recipe.lr_scaling == "linear" else lr


def build_optimizer(recipe, phase: str, named: list[tuple[str, nn.Parameter]],
                    no_weight_decay: set[str] = frozenset(), static_lr: set[str] = frozenset()) -> torch.optim.Optimizer:
    """The optimizer of one phase, from the recipe's (per-phase) settings; `no_weight_decay` and
    `static_lr`: parameter names the pretrainer declares (`Pretrainer.no_weight_decay()`, `.static_lr()`)."""
    kind, lr, wd = recipe.phase_optimizer(phase)
    lr = effective_lr(recipe, lr)
    groups = param_groups(named, wd, no_weight_decay, static_lr)
    if kind == "lars":
        return Lars(groups, lr=lr, momentum=recipe.momentum, trust_coeff=recipe.lars_eta,
                    trust_clip=recipe.lars_clip, always_adapt=False)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.betas))
    raise ValueError(f"unknown optimizer {kind!r} for phase {phase!r}; use lars, sgd or adamw")


class StaticGroups:
    """A timm scheduler that leaves the `static_lr` parameter groups at their base lr."""

    def __init__(self, scheduler: CosineLRScheduler):
        self.scheduler = scheduler
        self.base = [g["initial_lr"] for g in scheduler.optimizer.param_groups]   # set by timm: the base lr
        self._hold()                  # timm's constructor set every group to warmup_lr_init

    def step_update(self, step: int) -> None:
        self.scheduler.step_update(step)          # timm writes `lr` into every group
        self._hold()

    def _hold(self) -> None:
        for group, lr in zip(self.scheduler.optimizer.param_groups, self.base):
            if group.get("static_lr"):
                group["lr"] = lr


def build_schedule(recipe, phase: str, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                   total_steps: int) -> StaticGroups:
    """Per-step linear warmup + cosine; call `.step_update(step)` before each optimizer step."""
    warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total_steps)
    return StaticGroups(CosineLRScheduler(optimizer, t_initial=max(1, total_steps - warmup), lr_min=recipe.min_lr,
                                          warmup_t=warmup, warmup_lr_init=recipe.warmup_start_lr,
                                          warmup_prefix=True, t_in_epochs=False))
