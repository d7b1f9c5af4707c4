"""The pilot: SimCLR ResNet-18 on Fashion-MNIST, kNN and linear probe against training length, per
configuration, to choose the release configuration by accuracy per CPU-minute (issue 12).

    python train/pilot.py                 # run what is missing (re-entrant: resumes a killed run)
    python train/pilot.py --only r18_32px --lengths 1 2
    python train/pilot.py --throughput    # each config's loop side by side on this host (idle machine)
    python train/pilot.py --report        # benchmarks/pilot/README.md (table) + pilot.png from pilot.json

Each (configuration, length) is its own run of `recipes/simclr_resnet18.fmnist.yaml` through
train/pretrain.py with `epochs=N`, its own warmup-cosine schedule (warmup 0.1 x N epochs) and
`augment_on=device`, in `runs/pilot/<config>_e<N>`, checkpointed every 100 steps and resumed when
found. Then the fixed protocols of zoo.evaluation on frozen features of the whole train split:
weighted kNN (cosine, T 0.1, k 20 / 200) and the linear probe (100 epochs). Results land in
`benchmarks/pilot/pilot.json` one by one, with the run's wall-clock, images/s and thread count
(images/s under other load is not comparable: the clean, side-by-side throughput of each
configuration is `python benchmarks/step_time.py`).

Cost axis: the runs' own wall-clocks come from different hosts and loads (recorded per row), so
the curve's x-axis is the cost of each length on ONE host: epochs x 60k images / the loop's
images/s of that configuration, measured side by side by `--throughput` (train/pretrain.py,
`augment_on=device`, 1 loader worker, nothing else running), kept in pilot.json with the host.

Threads: each run reads `OMP_NUM_THREADS` from the file named by --threads-file when it exists
(default runs/pilot/threads), else uses 2, so the thread count can be lowered while tests run
beside it without stopping the campaign.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = "recipes/simclr_resnet18.fmnist.yaml"
# name -> (recipe overrides, what it is)
CONFIGS = {
    "r18_32px": ([], "timm resnet18 at 32 px (ImageNet stem: layer 4 is 1 x 1)"),
    "r18_os16_32px": (["model=simclr_resnet18_os16"], "resnet18, output_stride=16, 32 px (layer 4 is 2 x 2)"),
    "r18_48px": (["image_size=48"], "timm resnet18 at 48 px (layer 4 is 2 x 2)"),
}
LENGTHS = (1, 2, 4, 8)
TRAIN_IMAGES = 60_000
OUT = ROOT / "benchmarks" / "pilot"


def run_dir(config: str, epochs: int) -> Path:
    return ROOT / "runs" / "pilot" / f"{config}_e{epochs}"


def threads(path: Path) -> str:
    try:
        return str(int(path.read_text().strip()))
    except (OSError, ValueError):
        return "2"


def pretrain(config: str, epochs: int, threads_file: Path) -> None:
    overrides, _ = CONFIGS[config]
    out = run_dir(config, epochs)
    if (out / "pretrainer.safetensors").exists():
        return
    n = threads(threads_file)
    args = [sys.executable, "train/pretrain.py", "--recipe", RECIPE, f"epochs={epochs}",
            f"warmup_epochs={0.1 * epochs}", "augment_on=device", "num_workers=1", "ckpt_every=100",
            "log_every=20", "resume=true", f"run_dir={out}", *overrides]
    print(f"[pilot] {config} e{epochs}: pretraining, {n} thread(s)", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def evaluate(config: str, epochs: int) -> dict:
    """kNN k 20 / 200 and the linear probe of the run's exported backbone (one feature pass)."""
    import torch
    from zoo.data import build_dataset, dataset_stats, eval_transform
    from zoo.evaluation import extract_features, knn_classify, linear_probe, load_backbone
    out = run_dir(config, epochs)
    backbone, info = load_backbone(str(out))
    size, stats = info["image_size"], dataset_stats("fashion_mnist")
    tf = eval_transform(size, stats["mean"], stats["std"])
    train = build_dataset("fashion_mnist", "train", image_size=size, transform=tf)
    test = build_dataset("fashion_mnist", "test", image_size=size, transform=tf)
    train_f, train_y = extract_features(backbone, train, bf16=True)
    test_f, test_y = extract_features(backbone, test, bf16=True)
    knn = knn_classify(train_f.float(), train_y, test_f.float(), test_y)
    linear = linear_probe(train_f, train_y, test_f, test_y)
    metrics = json.loads((out / "metrics.json").read_text())["pretrain"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"config": config, "epochs": epochs, "steps": metrics["steps"],
            "knn_top1_k20": round(knn["knn_top1_k20"], 2), "knn_top1_k200": round(knn["knn_top1_k200"], 2),
            "linear_top1": round(linear["linear_top1"], 2),
            "wall_clock_s": metrics["wall_clock_s"],
            "images_per_s_median": round(sorted(r["images_per_s"] for r in log)[len(log) // 2], 1),
            "recipe": RECIPE, "overrides": CONFIGS[config][0]}


def throughput(steps: int = 30, rounds: int = 2, threads: int = 2) -> dict:
    """Images/s of each configuration's whole loop, interleaved rounds on this host (median of rounds)."""
    import statistics
    from benchmarks.common import cpu_model
    from benchmarks.step_time import loop
    seen: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for _ in range(rounds):
        for config, (overrides, _) in CONFIGS.items():
            seen[config].append(loop(256, steps, "device", threads, tuple(overrides))["images_per_s"])
    return {"cpu": cpu_model(), "threads": threads, "steps": steps, "rounds": rounds,
            "command": "python train/pilot.py --throughput",
            "images_per_s": {c: round(statistics.median(v), 1) for c, v in seen.items()}}


def cost_minutes(results: dict, row: dict) -> float | None:
    """Minutes of training on the --throughput host for this row's length (None before --throughput)."""
    speed = results.get("throughput", {}).get("images_per_s", {}).get(row["config"])
    return None if not speed else row["epochs"] * TRAIN_IMAGES / speed / 60


def load_results() -> dict:
    path = OUT / "pilot.json"
    return json.loads(path.read_text()) if path.exists() else {"runs": [], "baselines": {}}


def save_results(results: dict) -> None:
    from zoo.runs import atomic_write
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write(OUT / "pilot.json", json.dumps(results, indent=1) + "\n")


def baselines() -> dict:
    """Raw pixels at 32 px: the line every configuration must cross (same protocols)."""
    from zoo.data import build_dataset, dataset_stats, eval_transform
    from zoo.evaluation import extract_features, knn_classify, linear_probe
    from train.eval_common import raw_pixels
    stats = dataset_stats("fashion_mnist")
    tf = eval_transform(32, stats["mean"], stats["std"])
    train_f, train_y = extract_features(raw_pixels(), build_dataset("fashion_mnist", "train", transform=tf))
    test_f, test_y = extract_features(raw_pixels(), build_dataset("fashion_mnist", "test", transform=tf))
    knn = knn_classify(train_f, train_y, test_f, test_y)
    return {"raw_pixels": {"knn_top1_k20": round(knn["knn_top1_k20"], 2),
                           "knn_top1_k200": round(knn["knn_top1_k200"], 2),
                           "linear_top1": round(linear_probe(train_f, train_y, test_f, test_y)["linear_top1"], 2)}}


def report(results: dict) -> None:
    """benchmarks/pilot/README.md and pilot.png from pilot.json."""
    base = results["baselines"].get("raw_pixels", {})
    rows = sorted(results["runs"], key=lambda r: (list(CONFIGS).index(r["config"]), r["epochs"]))
    lines = ["# Pilot: SimCLR ResNet-18 on Fashion-MNIST, accuracy against training length", "",
             "Made by `python train/pilot.py` (runs) and `python train/pilot.py --report` (this page, "
             "pilot.png). Each row is its own run with its own schedule; kNN k=20 / k=200 and the linear "
             "probe on frozen features of the whole train split, tested on the 10k test split. Wall-clock "
             "is the run's own (threads as listed; see the notes for load beside it).", "",
             f"Raw pixels (32 px, same protocols): kNN k=20 {base.get('knn_top1_k20')}, "
             f"k=200 {base.get('knn_top1_k200')}, linear {base.get('linear_top1')}.", ""]
    tp = results.get("throughput")
    if tp:
        lines += [f"Cost: minutes of training on one host, {tp['cpu']}, {tp['threads']} threads, idle: epochs x "
                  f"{TRAIN_IMAGES} / the loop's images/s measured side by side (`{tp['command']}`: "
                  + ", ".join(f"{c} {v}" for c, v in tp["images_per_s"].items()) + " images/s).", ""]
    lines += ["| config | epochs | steps | kNN k=20 | kNN k=200 | linear | cost (min, one host) | run's wall-clock (min) "
              "| run's images/s (median) | threads | host |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        cost = cost_minutes(results, r)
        lines.append(f"| {r['config']} | {r['epochs']} | {r['steps']} | {r['knn_top1_k20']} | "
                     f"{r['knn_top1_k200']} | {r['linear_top1']} | {'' if cost is None else f'{cost:.1f}'} | "
                     f"{r['wall_clock_s'] / 60:.1f} | {r['images_per_s_median']} | {r.get('threads', '')} | "
                     f"{r.get('cpu', 'AMD EPYC (earlier session)')} |")
    lines += ["", "Configurations:", ""] + [f"- `{k}`: {v[1]}; overrides `{' '.join(v[0]) or '(none)'}`"
                                            for k, v in CONFIGS.items()]
    notes = results.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): table only")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "knn_top1_k20", "kNN top-1, k=20"), (axes[1], "linear_top1", "linear probe top-1")):
        for config in CONFIGS:
            pts = [(cost_minutes(results, r) or r["wall_clock_s"] / 60, r[key]) for r in rows if r["config"] == config]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=config)
        if key in base:
            ax.axhline(base[key], color="gray", linestyle="--", label="raw pixels")
        ax.set_xlabel("training cost (min on one host, see README)" if tp else "run's wall-clock (min)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("SimCLR ResNet-18, Fashion-MNIST: runs of 1, 2, 4, 8 epochs")
    fig.tight_layout()
    fig.savefig(OUT / "pilot.png", dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--lengths", nargs="*", type=int, default=list(LENGTHS))
    p.add_argument("--report", action="store_true")
    p.add_argument("--throughput", action="store_true", help="measure each config's loop side by side, store it")
    p.add_argument("--threads-file", type=Path, default=ROOT / "runs" / "pilot" / "threads")
    args = p.parse_args(argv)
    results = load_results()
    if args.report:
        report(results)
        return
    if args.throughput:
        measured = throughput()
        results = load_results()
        results["throughput"] = measured
        save_results(results)
        report(results)
        print(json.dumps(measured, indent=1))
        return
    if not results["baselines"]:
        results["baselines"] = baselines()
        save_results(results)
    for epochs in args.lengths:               # short runs of every config first: the curve grows evenly
        for config in args.only:
            if any(r["config"] == config and r["epochs"] == epochs for r in results["runs"]):
                continue
            t0 = time.time()
            n = threads(args.threads_file)
            pretrain(config, epochs, args.threads_file)
            row = evaluate(config, epochs)
            row["threads"] = int(n)
            from benchmarks.common import cpu_model
            row["cpu"] = cpu_model()              # hosts change between sessions: wall-clocks differ by ~1.7x
            results = load_results()
            results["runs"].append(row)
            save_results(results)
            print(f"[pilot] {config} e{epochs}: {row} ({time.time() - t0:.0f} s with eval)", flush=True)
        report(load_results())


if __name__ == "__main__":
    main()
