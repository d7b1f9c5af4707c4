"""One training step of any pretrainer, the way the training loop runs it: every phase in order,
each with its own optimizer, then `update(progress)` (EMA teachers, schedules).

The benchmark times exactly this (all phases, optimizer steps and the EMA update included), so
that "step time" means what a user's run pays per batch. The callers install the CPU kernels the
training loop trains with (`zoo.kernels.use_fast_kernels`) on the pretrainer first.

Example:
    >>> import torch, zoo
    >>> from benchmarks.stepping import make_optimizers, train_step, views_for
    >>> p = zoo.create_pretrainer("simclr_resnet18")                      # doctest: +SKIP
    >>> opts = make_optimizers(p)                                          # doctest: +SKIP
    >>> train_step(p, views_for(p, 8), opts, "fp32")                       # doctest: +SKIP
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchmarks.common import autocast, make_inputs, sync, to_format

def views_for(pretrainer: nn.Module, batch: int, image_size: int = 32, seed: int = 0, device="cpu") -> list[Tensor]:
    """As many random views as the pretrainer declares its step takes (`num_views`)."""
    return make_inputs(batch, pretrainer.num_views, image_size, seed, device)


def make_optimizers(pretrainer: nn.Module, lr: float = 0.01) -> dict[str, torch.optim.Optimizer]:
    """One SGD(momentum 0.9) optimizer per phase, over that phase's parameters.

    SGD with momentum is the inner step of the papers' LARS and costs about what AdamW costs; the
    benchmark uses the same optimizer for every method and for the lightly peer.
    """
    return {phase: torch.optim.SGD(pretrainer.parameters_of(phase), lr=lr, momentum=0.9,
                                   weight_decay=1e-5)
            for phase in pretrainer.phases}


def train_step(pretrainer: nn.Module, views: Sequence[Tensor], optimizers: dict, precision: str,
               progress: float = 0.5, phase_seconds: dict | None = None) -> float:
    """Run every phase (zero grads, forward under the precision's autocast, backward, step), then
    `update(progress)`; returns the last phase's loss. `phase_seconds` accumulates per phase."""
    device = views[0].device
    loss = torch.zeros(())
    for phase in pretrainer.phases:
        t0 = time.perf_counter()
        pretrainer.zero_grad(set_to_none=True)      # a phase never sees another phase's grads
        with autocast(precision, device.type):
            loss = pretrainer(views, phase=phase)
        loss.backward()
        optimizers[phase].step()
        if phase_seconds is not None:
            sync(device)
            phase_seconds[phase] = phase_seconds.get(phase, 0.0) + time.perf_counter() - t0
    pretrainer.update(progress)
    return float(loss.detach())


def prepare(pretrainer: nn.Module, views: Sequence[Tensor], precision: str,
            channels_last: bool | None = None):
    """Model and inputs in channels_last (default: for bf16, the recipes' default) or NCHW."""
    fmt = "bf16" if (precision == "bf16" if channels_last is None else channels_last) else "fp32"
    return to_format(pretrainer, fmt), [to_format(v, fmt) for v in views]
