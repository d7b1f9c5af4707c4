"""Pretraining cost from the cards: each run's wall-clock, the host and precision it ran on, and the
ratio of two releases' costs (README's pairs table; train/release.py's equal-compute runs).

A card's runs are its per-seed table (the first row is the released run) or, without clocks there,
the released run alone. Wall-clocks divide into a cost ratio only within one setting (host and
precision): an fp32 run on one CPU and a bf16 run on another measure the hosts, not the methods.
Cards from before the record (no host or precision) share the setting "unrecorded" with each
other only. Within a setting each side's *fastest* run is its cost: a run's clock only ever grows
with what else the machine did (a test suite beside it, a paused process), so the minimum is the
closest to the method's own cost, as timeit takes the best of several repeats.
"""
from __future__ import annotations

from zoo.publish import precision_name

Setting = tuple[str, str]          # (machine, precision: "fp32" | "bf16" | ...)


def known_wall_clock_s(pretrain: dict) -> float | None:
    """A run's pretraining wall-clock (metrics.json's `pretrain`); None where it is unknown or only
    partly known (resumed from a checkpoint older than the wall-clock record: `wall_clock_from_step`)."""
    return None if "wall_clock_from_step" in pretrain else pretrain.get("wall_clock_s")


def setting(machine: str | None, mixed_precision: str | None) -> Setting | None:
    """(machine, precision) of a run, or None where its record lacks either."""
    if not machine or not mixed_precision:
        return None
    return machine, precision_name(mixed_precision)


def run_setting(card: dict) -> Setting | None:
    """The setting of a card's released run (its facts' machine, its pretrain block's precision)."""
    return setting((card.get("facts") or {}).get("machine"),
                   (card["metrics"].get("pretrain") or {}).get("mixed_precision"))


def clocks(card: dict) -> list[tuple[Setting | None, float]]:
    """Every known pretraining wall-clock of a card, in seconds, with its setting: one per row of
    its seed table that has one, else its released run's (partial clocks are not known)."""
    seeds = (card["metrics"].get("seeds") or {}).values()
    rows = [(setting(r.get("machine"), r.get("mixed_precision")), r.get("wall_clock_s")) for r in seeds]
    rows = [(s, w) for s, w in rows if w] or \
        [(run_setting(card), known_wall_clock_s(card["metrics"].get("pretrain") or {}))]
    return [(s, w) for s, w in rows if w]


def cost(a: dict, b: dict) -> tuple[float, float, Setting | None] | None:
    """(a's seconds, b's seconds, their setting): each side's fastest run in the first setting of
    a's runs (its released run's first) that b also ran in; None when they share none."""
    ca, cb = clocks(a), clocks(b)
    for s in dict.fromkeys(t for t, _ in ca):
        wb = [w for t, w in cb if t == s]
        if wb:
            return min(w for t, w in ca if t == s), min(wb), s
    return None


def short(s: Setting | None) -> str:
    """"Intel Xeon bf16" for ("Intel(R) Xeon(R) Processor, 2 cores, no GPU", "bf16")."""
    if s is None:
        return "unrecorded"
    machine, precision = s
    return f"{machine.split(',')[0].replace('(R)', '').replace(' Processor', '')} {precision}"
