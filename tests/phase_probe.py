"""One training step run by train/pretrain.py's own `train_step`, observed phase by phase (tests only).

`train_step` steps every batch phase by phase (loss, backward, `optimizers[phase].step()`,
zero_grad), so the order the players see each other in is the order the loop takes the phases
in. `loop_step` runs the real function on one micro-batch (so a change inside the loop is
caught) and records, per phase, the loss and the CPU RNG state at the phase's forward, so that a
test can recompute each phase's loss from parameters it sets up by hand (before or after the
other player's update) and see which one the loop used.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # train/ is not installed

from train.pretrain import train_step  # noqa: E402


def sgd_per_phase(pretrainer, lr: float | dict[str, float]) -> dict[str, torch.optim.Optimizer]:
    """Plain SGD over each phase's parameters (one step of it is easy to redo by hand);
    `lr` one value or one per phase."""
    lrs = lr if isinstance(lr, dict) else dict.fromkeys(pretrainer.phases, lr)
    return {ph: torch.optim.SGD(pretrainer.parameters_of(ph), lr=lrs[ph]) for ph in pretrainer.phases}


class _FixedLr:
    """A schedule that leaves the optimizer's lr as it is (the by-hand steps use that lr)."""

    def step_update(self, step: int) -> None:
        pass


def loop_step(pretrainer, views, optimizers, grad_clip: dict[str, float] | None = None
              ) -> tuple[list[str], dict[str, float], dict[str, torch.Tensor]]:
    """(phases in the order run, loss per phase, RNG state at each phase's forward)."""
    order, rng = [], {}

    def observe(module, args, kwargs):
        phase = kwargs["phase"]
        order.append(phase)
        rng[phase] = torch.get_rng_state()

    accelerator = Accelerator(cpu=True)
    handle = pretrainer.register_forward_pre_hook(observe, with_kwargs=True)
    try:
        model, *prepared = accelerator.prepare(pretrainer, *optimizers.values())
        losses = train_step(accelerator, model, dict(zip(optimizers, prepared)),
                            dict.fromkeys(optimizers, _FixedLr()), [list(views)], step=0, run_dir=Path("unused"),
                            grad_clip=grad_clip)
    finally:
        handle.remove()
        # the in-process Accelerator's state must not leak into later tests' Accelerators
        AcceleratorState._reset_state(reset_partial_state=True)
    return order, {ph: per_micro_batch[0] for ph, per_micro_batch in losses.items()}, rng


def step_phase_by_hand(pretrainer, views, phase: str, lr: float, rng: torch.Tensor | None = None) -> float:
    """One SGD step of `phase` alone on `pretrainer` (in place); returns that phase's loss."""
    if rng is not None:
        torch.set_rng_state(rng)
    opt = torch.optim.SGD(pretrainer.parameters_of(phase), lr=lr)
    loss = pretrainer(views, phase=phase)
    loss.backward()
    opt.step()
    pretrainer.zero_grad(set_to_none=True)
    return loss.item()


def phase_loss(pretrainer, views, phase: str, rng: torch.Tensor | None = None) -> float:
    """A phase's loss on a throwaway copy (buffers such as spectral-norm vectors stay untouched)."""
    probe = copy.deepcopy(pretrainer)
    if rng is not None:
        torch.set_rng_state(rng)
    with torch.no_grad():
        return probe(views, phase=phase).item()


def assert_same_parameters(pretrainer, reference) -> None:
    """The loop's step landed where the by-hand sequence did (every parameter, by name)."""
    for (name, q), q_ref in zip(pretrainer.named_parameters(), reference.parameters()):
        torch.testing.assert_close(q, q_ref, rtol=1e-5, atol=1e-6, msg=name)
