"""Retrain a released weight from its own recipe.yaml and check the result against its card.

    python train/reproduce.py simclr_resnet18.fmnist             # seed 0 of the card's recipe
    python train/reproduce.py simclr_resnet18.fmnist --seed 3    # a seed the card has not seen

Pretrains `weights/<name>.<tag>/recipe.yaml` into runs/reproduce/<name>.<tag>/seed<S> (resumable),
evaluates it with the card's protocol (train/evaluate.py, without baselines) and compares kNN and
linear top-1 with the card: with a per-seed table, the new run must land in the 95 % prediction
interval of one more run drawn like the card's seeds, mean ± t(0.975, n - 1) · sd · sqrt(1 + 1/n)
(n seeds; for 3 seeds ± 4.97 sd); without one, within --tolerance points of the card's value.
Exit status 1 when it does not.

Why a prediction interval: the question is whether one new run is what another seed would give,
and n = 3 seeds estimate the spread poorly. The rule used before (mean ± max(2 sd, half the range))
rejects a run drawn exactly like the seeds about one time in four per metric at n = 3 (the
new run's distance from the mean, in estimated sds, is t-distributed with 2 degrees of freedom,
times sqrt(4/3)): with three metrics checked, a faithful reproduction failed about half the time.
The new rule still rejects a faithful run about one time in seven over three metrics (1 - 0.95^3
if they were independent; they are correlated, so less), and it assumes the new run is drawn
independently of the card's seeds: a rerun of a seed the card holds (seed 0, on another host or
precision) starts from the same weights and should land closer than a new seed, so for it the band
is generous.

Released recipe files are never rewritten, so older ones spell per-phase settings the old way
(`masker_lr: 0.1`); `train.recipe.Recipe.load` reads them into the `phases` block (with a
FutureWarning), so they run as released.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from zoo.publish import SEED_COLUMNS  # noqa: E402  (the columns a card's per-seed table holds)


# Student's t, two-sided 95 %: t(0.975, df) for df = 1..10 (standard tables); beyond, the
# Cornish-Fisher expansion to 1/df^3, within 3e-4 of the exact value from df = 11 on.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t975(df: int) -> float:
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def band(card_metrics: dict, data: str, leaf: str, tolerance: float) -> tuple[float, float, str]:
    """(low, high, how) of the values the card accepts for `leaf`."""
    seeds = [r[leaf] for r in (card_metrics.get("seeds") or {}).values() if r.get(leaf) is not None]
    if len(seeds) > 1:
        n, mean, sd = len(seeds), statistics.mean(seeds), statistics.stdev(seeds)
        half = t975(n - 1) * sd * (1 + 1 / n) ** 0.5
        return mean - half, mean + half, f"{n} seeds, mean {mean:.2f}, 95 % prediction ± {half:.2f}"
    value = card_metrics[f"{data}/{leaf}"]
    return value - tolerance, value + tolerance, f"card {value:.2f} ± {tolerance}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("key", help="a released name.tag, e.g. simclr_resnet18.fmnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1.0, help="points, for a card without seeds")
    args = ap.parse_args(argv)
    folder = REPO / "weights" / args.key
    if not (folder / "config.json").exists():
        raise SystemExit(f"{folder} is not a released weight folder")
    card = json.loads((folder / "config.json").read_text())["zoo"]
    data = card["recipe"].get("data", "fashion_mnist")
    run_dir = REPO / "runs" / "reproduce" / args.key / f"seed{args.seed}"
    commands = []
    if not (run_dir / "pretrainer.safetensors").exists():
        commands.append([sys.executable, "train/pretrain.py", "--recipe", str(folder / "recipe.yaml"),
                         f"run_dir={run_dir}", f"seed={args.seed}",
                         *(["resume=true"] if (run_dir / "state").exists() else [])])
    evaluate = shlex.split(card["commands"].get("knn", f"python train/evaluate.py {args.key}"))
    evaluate = [a for a in evaluate[2:] if a != "--baselines"]        # the card's flags, minus baselines
    commands.append([sys.executable, "train/evaluate.py", str(run_dir), *evaluate[1:], "--out", str(run_dir)])
    for cmd in commands:
        print("$ " + shlex.join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    got = json.loads((run_dir / "metrics.json").read_text())
    ok = True
    for leaf in SEED_COLUMNS:
        if f"{data}/{leaf}" not in card["metrics"]:
            continue
        low, high, how = band(card["metrics"], data, leaf, args.tolerance)
        value = got[f"{data}/{leaf}"]
        inside = low <= value <= high
        ok &= inside
        print(f"{leaf}: {value:.2f}  ({how}: [{low:.2f}, {high:.2f}]) {'ok' if inside else 'OUTSIDE'}")
    print("reproduced within the card's spread" if ok else "NOT reproduced within the card's spread")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
