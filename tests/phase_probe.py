"""One training step run the way train/pretrain.py runs it, observed phase by phase (tests only).

train/pretrain.py steps every batch as `for phase in pretrainer.phases: loss, backward,
optimizers[phase].step(), zero_grad`, so the order the players see each other in is the order
of `pretrainer.phases`. `loop_step` runs that sequence and records, per phase, the loss and the
CPU RNG state at the phase's start, so that a test can recompute each phase's loss from
parameters it sets up by hand (before or after the other player's update) and see which one the
loop used.
"""
from __future__ import annotations

import copy

import torch


def sgd_per_phase(pretrainer, lr: float | dict[str, float]) -> dict[str, torch.optim.Optimizer]:
    """Plain SGD over each phase's parameters (one step of it is easy to redo by hand);
    `lr` one value or one per phase."""
    lrs = lr if isinstance(lr, dict) else dict.fromkeys(pretrainer.phases, lr)
    return {ph: torch.optim.SGD(pretrainer.parameters_of(ph), lr=lrs[ph]) for ph in pretrainer.phases}


def loop_step(pretrainer, views, optimizers) -> tuple[list[str], dict[str, float], dict[str, torch.Tensor]]:
    """(phases in the order run, loss per phase, RNG state at each phase's start)."""
    order, losses, rng = [], {}, {}
    for phase in pretrainer.phases:
        order.append(phase)
        rng[phase] = torch.get_rng_state()
        loss = pretrainer(views, phase=phase)
        loss.backward()
        optimizers[phase].step()
        pretrainer.zero_grad(set_to_none=True)
        losses[phase] = loss.item()
    return order, losses, rng


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
