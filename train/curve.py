"""The training curve of a run: weighted kNN top-1 (train/knn.py's protocol) of every backbone
snapshot the run kept, written to the `curve` block of its metrics.json and printed as a table.

    python train/curve.py runs/adios_resnet18.byol_fmnist --bf16
    python train/curve.py runs/release/adios_vit_tiny_patch4_32.simclr_fmnist/seed0 --bf16 --limit-train 10000

It takes train/evaluate.py's flags, so a release's evaluation flags pass as they are (the
linear-probe ones change nothing here).

A run keeps snapshots when its recipe sets `snapshot_every` (train/pretrain.py): the exported
backbone, fp16, every that many steps and at the last step. Each is loaded into the run's exported
architecture and measured like a release; the last one holds the released file's tensors, so with
the release's evaluation flags the last point repeats its card's kNN. It answers "how far did it
get, and was it still climbing", which a weight below its baselines owes its card (issue 12).
A run still training has a curve up to its newest snapshot; points already measured are kept, so
a stopped curve goes on where it stopped.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from safetensors.torch import load_file  # noqa: E402

from train import eval_common as ec  # noqa: E402
from train.allocator import keep_freed_memory  # noqa: E402
from train.knn import knn_args, knn_metrics  # noqa: E402
from train.linear import linear_args  # noqa: E402
from zoo.runs import exported_architecture, load_metrics, snapshots, update_metrics  # noqa: E402

LEAVES = ("knn_top1_k20", "knn_top1_k200")


def steps_per_epoch(run_dir: Path) -> int | None:
    """From the finished run's `pretrain` block, else its log's highest-step line (`epoch` is
    rounded to 4 decimals, so the largest step gives the exact ratio); None without either."""
    done = load_metrics(run_dir).get("pretrain") or {}
    if done.get("steps") and done.get("epochs"):
        return round(done["steps"] / done["epochs"])
    log = run_dir / "log.jsonl"
    rows = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:              # a line torn by a kill
            continue
    last = max((r for r in rows if r.get("epoch")), key=lambda r: r["step"], default=None)
    return round(last["step"] / last["epoch"]) if last else None


def settings(args, data: str) -> dict:
    """What decides a point besides the weights: a curve's points must share them."""
    return {"data": data, "image_size": args.image_size, "limit_train": args.limit_train,
            "limit_test": args.limit_test, "bf16": args.bf16, "T": args.T, "root": args.root}


def main(argv=None) -> dict:
    p = ec.parser(__doc__.split("\n\n")[0])
    knn_args(p)
    linear_args(p)
    args = p.parse_args(argv)
    if not set(LEAVES) <= {f"knn_top1_k{k}" for k in args.k}:
        p.error(f"the curve is kNN at k=20 and k=200: --k must include both, got {args.k}")
    run_dir = Path(args.source)
    recipe = ec.recipe_of(args.source)
    if not recipe:
        raise SystemExit(f"{run_dir}: not a run directory (no recipe.yaml)")
    found = snapshots(run_dir)
    if not found:
        raise SystemExit(f"{run_dir}: no snapshots/ to measure: train with snapshot_every=N (steps) to keep them")
    keep_freed_memory()
    t0 = time.time()
    data = ec.data_name(args)
    args.image_size = ec.image_size_of(args, recipe.get("image_size"))
    args.weight_norm = None                       # the run's data statistics, as for a run in knn.py
    curve = load_metrics(run_dir).get("curve") or {}
    points = dict(curve.get("points") or {})
    if points and curve.get("settings") != settings(args, data):
        raise SystemExit(f"{run_dir}: its curve was measured with {curve.get('settings')}, this run of curve.py "
                         f"asks for {settings(args, data)}: use the same flags, or delete the curve block")
    train, test = ec.datasets(args, data, args.image_size)
    backbone = exported_architecture(recipe)
    per_epoch = steps_per_epoch(run_dir)
    for step, path in found:
        if str(step) in points:
            continue
        backbone.load_state_dict(load_file(str(path)))
        measured = knn_metrics(backbone, train, test, args, data)
        protocol = measured.pop(f"{data}/knn_protocol")
        points[str(step)] = {"step": step, "images": step * recipe["batch_size"],
                             **({"epoch": round(step / per_epoch, 2)} if per_epoch else {}),
                             **{leaf: measured[f"{data}/{leaf}"] for leaf in LEAVES}}
        curve = {"data": data, "protocol": protocol, "settings": settings(args, data), "points": points}
        update_metrics(run_dir, {"curve": curve})   # after each point: a stop keeps what was measured
        print(f"step {step}: " + ", ".join(f"{leaf} {points[str(step)][leaf]:.2f}" for leaf in LEAVES), flush=True)
    print(f"{data}, {curve.get('protocol')}")
    print("step | epoch | " + " | ".join(LEAVES))
    for row in sorted(points.values(), key=lambda r: r["step"]):
        print(f"{row['step']} | {row.get('epoch', '-')} | " + " | ".join(f"{row[leaf]:.2f}" for leaf in LEAVES))
    print(f"done in {time.time() - t0:.0f} s, curve in {run_dir / 'metrics.json'}")
    return curve


if __name__ == "__main__":
    main()
