"""The pilot: SimCLR ResNet-18 against training length, per configuration, to choose a release
configuration by accuracy per CPU-minute (issue 12). Two studies: Fashion-MNIST (`--data
fashion_mnist`, the default: benchmarks/pilot/) and the embedded scenes (`--data scenes`:
benchmarks/pilot/scenes/).

    python train/pilot.py                 # run what is missing (re-entrant: resumes a killed run)
    python train/pilot.py --only r18_32px --lengths 1 2
    python train/pilot.py --throughput    # each config's loop side by side on this host (idle machine)
    python train/pilot.py --report        # the study's README.md (table) + pilot.png from pilot.json
    python train/pilot.py --data scenes   # the same for the scenes (lengths 4-32 epochs of 20k scenes)

Each (configuration, length) is its own run of the study's recipe through train/pretrain.py with
`epochs=N`, its own warmup-cosine schedule (warmup 0.1 x N epochs) and `augment_on=device`, in
`runs/pilot/[scenes/]<config>_e<N>`, checkpointed every 100 steps and resumed when found. Every
configuration names its image size: the recipe's own size moves with the releases. Then the fixed
protocols of zoo.evaluation on frozen features: weighted kNN (cosine, T 0.1, k 20 / 200) and the
linear probe (100 epochs), on the whole Fashion-MNIST train split (10k test), or on the scenes'
release protocol (the first 10 000 train / 2 000 test scenes, as `eval` in weights/releases.yaml).
Raw pixels are measured the same way at each configuration's image size. Results land in the
study's pilot.json one by one, with the run's wall-clock, images/s and thread count (images/s under
other load is not comparable: the clean, side-by-side throughput of each configuration is
`--throughput`).

Cost axis: the runs' own wall-clocks come from different hosts and loads (recorded per row), so
the curve's x-axis is the cost of each length on ONE host: epochs x the study's train images / the
loop's images/s of that configuration, measured side by side by `--throughput` (train/pretrain.py,
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Study:
    """One pilot: a recipe, its data, the configurations (name -> (overrides, what it is)) and lengths."""
    recipe: str
    data: str
    title: str
    train_images: int                 # images per epoch (the recipe's train split or limit_train)
    configs: dict
    lengths: tuple
    out: Path                         # pilot.json, README.md, pilot.png
    runs: Path
    eval_length: dict                 # build_dataset kw per split ({} = the whole split)


STUDIES = {
    "fashion_mnist": Study(
        recipe="recipes/simclr_resnet18.fmnist.yaml", data="fashion_mnist", title="Fashion-MNIST",
        train_images=60_000, lengths=(1, 2, 4, 8), out=ROOT / "benchmarks" / "pilot", runs=ROOT / "runs" / "pilot",
        eval_length={},
        configs={
            "r18_32px": (["image_size=32"], "timm resnet18 at 32 px (ImageNet stem: layer 4 is 1 x 1)"),
            "r18_os16_32px": (["model=simclr_resnet18_os16", "image_size=32"],
                              "resnet18, output_stride=16, 32 px (layer 4 is 2 x 2)"),
            "r18_48px": (["image_size=48"], "timm resnet18 at 48 px (layer 4 is 2 x 2)"),
        }),
    # Round 1 (32 px, 2 epochs of 20k scenes) reached kNN 13-16 % against raw pixels' ~30 %: longer
    # runs, and 48 px (scenes are drawn at the asked size, so 48 px is more detail, not upsampling).
    "scenes": Study(
        recipe="recipes/simclr_resnet18.scenes.yaml", data="scenes", title="the embedded scenes",
        train_images=20_000, lengths=(4, 8, 16, 32), out=ROOT / "benchmarks" / "pilot" / "scenes",
        runs=ROOT / "runs" / "pilot" / "scenes", eval_length={"train": 10_000, "test": 2_000},
        configs={
            "r18_32px": (["image_size=32"], "timm resnet18 at 32 px (layer 4 is 1 x 1)"),
            "r18_48px": (["image_size=48"], "timm resnet18 at 48 px (layer 4 is 2 x 2)"),
        }),
}


def data_flag(study: Study) -> str:
    """The command-line flag that selects the study (none for the default, Fashion-MNIST)."""
    return "" if study.data == "fashion_mnist" else f" --data {study.data}"


def image_size(study: Study, config: str) -> int:
    return next(int(o.split("=")[1]) for o in study.configs[config][0] if o.startswith("image_size="))


def run_dir(study: Study, config: str, epochs: int) -> Path:
    return study.runs / f"{config}_e{epochs}"


def threads(path: Path) -> str:
    try:
        return str(int(path.read_text().strip()))
    except (OSError, ValueError):
        return "2"


def pretrain(study: Study, config: str, epochs: int, threads_file: Path) -> None:
    overrides, _ = study.configs[config]
    out = run_dir(study, config, epochs)
    if (out / "pretrainer.safetensors").exists():
        return
    n = threads(threads_file)
    args = [sys.executable, "train/pretrain.py", "--recipe", study.recipe, f"epochs={epochs}",
            f"warmup_epochs={0.1 * epochs}", "augment_on=device", "num_workers=1", "ckpt_every=100",
            "log_every=20", "resume=true", f"run_dir={out}", *overrides]
    print(f"[pilot] {study.data} {config} e{epochs}: pretraining, {n} thread(s)", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def probe(study: Study, backbone, size: int) -> dict:
    """kNN k 20 / 200 and the linear probe of `backbone` (one feature pass) on the study's eval sets."""
    from zoo.data import build_dataset, dataset_stats, eval_transform
    from zoo.evaluation import extract_features, knn_classify, linear_probe
    stats = dataset_stats(study.data)
    tf = eval_transform(size, stats["mean"], stats["std"])
    train, test = (build_dataset(study.data, split, image_size=size, transform=tf,
                                 **({"length": study.eval_length[split]} if split in study.eval_length else {}))
                   for split in ("train", "test"))
    train_f, train_y = extract_features(backbone, train, bf16=True)
    test_f, test_y = extract_features(backbone, test, bf16=True)
    knn = knn_classify(train_f.float(), train_y, test_f.float(), test_y)
    return {"knn_top1_k20": round(knn["knn_top1_k20"], 2), "knn_top1_k200": round(knn["knn_top1_k200"], 2),
            "linear_top1": round(linear_probe(train_f, train_y, test_f, test_y)["linear_top1"], 2)}


def evaluate(study: Study, config: str, epochs: int) -> dict:
    """The probes of the run's exported backbone, with its steps, wall-clock and median images/s."""
    from zoo.evaluation import load_backbone
    out = run_dir(study, config, epochs)
    backbone, info = load_backbone(str(out))
    metrics = json.loads((out / "metrics.json").read_text())["pretrain"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"config": config, "epochs": epochs, "steps": metrics["steps"], **probe(study, backbone, info["image_size"]),
            "wall_clock_s": metrics["wall_clock_s"],
            "images_per_s_median": round(sorted(r["images_per_s"] for r in log)[len(log) // 2], 1),
            "recipe": study.recipe, "overrides": study.configs[config][0]}


def baselines(study: Study, results: dict) -> dict:
    """Raw pixels at each configuration's image size (the line every run must cross), measured once:
    {size in px (str): metrics}."""
    from train.eval_common import raw_pixels
    have = dict(results["baselines"])
    for size in sorted({image_size(study, c) for c in study.configs}):
        if str(size) not in have:
            have[str(size)] = probe(study, raw_pixels(), size)
    return have


def throughput(study: Study, steps: int = 30, rounds: int = 2, threads: int = 2) -> dict:
    """Images/s of each configuration's whole loop, interleaved rounds on this host (median of rounds)."""
    import statistics
    from benchmarks.common import cpu_model
    from benchmarks.step_time import loop
    seen: dict[str, list[float]] = {c: [] for c in study.configs}
    for _ in range(rounds):
        for config, (overrides, _) in study.configs.items():
            seen[config].append(loop(256, steps, "device", threads, tuple(overrides), recipe=study.recipe)["images_per_s"])
    return {"cpu": cpu_model(), "threads": threads, "steps": steps, "rounds": rounds,
            "command": f"python train/pilot.py{data_flag(study)} --throughput",
            "images_per_s": {c: round(statistics.median(v), 1) for c, v in seen.items()}}


def cost_minutes(study: Study, results: dict, row: dict) -> float | None:
    """Minutes of training on the --throughput host for this row's length (None before --throughput)."""
    speed = results.get("throughput", {}).get("images_per_s", {}).get(row["config"])
    return None if not speed else row["epochs"] * study.train_images / speed / 60


def load_results(study: Study) -> dict:
    path = study.out / "pilot.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": [], "baselines": {}}
    if "raw_pixels" in results["baselines"]:      # before per-size baselines: Fashion-MNIST's, at 32 px
        results["baselines"]["32"] = results["baselines"].pop("raw_pixels")
    return results


def save_results(study: Study, results: dict) -> None:
    from zoo.runs import atomic_write
    study.out.mkdir(parents=True, exist_ok=True)
    atomic_write(study.out / "pilot.json", json.dumps(results, indent=1) + "\n")


def _baseline_text(metrics: dict) -> str:
    return f"kNN k=20 {metrics.get('knn_top1_k20')}, k=200 {metrics.get('knn_top1_k200')}, linear {metrics.get('linear_top1')}"


def report(study: Study, results: dict) -> None:
    """The study's README.md and pilot.png from pilot.json."""
    base = results["baselines"]
    rows = sorted((r for r in results["runs"] if r["config"] in study.configs),
                  key=lambda r: (list(study.configs).index(r["config"]), r["epochs"]))
    flag = data_flag(study)
    evaluated = ("on frozen features of the whole train split, tested on the 10k test split" if not study.eval_length else
                 f"on frozen features of the first {study.eval_length['train']} train images, tested on the first "
                 f"{study.eval_length['test']} test images (the release protocol)")
    lines = [f"# Pilot: SimCLR ResNet-18 on {study.title}, accuracy against training length", "",
             f"Made by `python train/pilot.py{flag}` (runs) and `python train/pilot.py{flag} --report` (this page, "
             f"pilot.png), recipe `{study.recipe}`. Each row is its own run with its own schedule; kNN k=20 / k=200 "
             f"and the linear probe {evaluated}. Wall-clock is the run's own (threads as listed; see the notes for "
             "load beside it).", ""]
    lines += [f"Raw pixels ({size} px, same protocols): {_baseline_text(m)}." for size, m in sorted(base.items(), key=lambda kv: int(kv[0]))]
    lines += [""]
    tp = results.get("throughput")
    if tp:
        lines += [f"Cost: minutes of training on one host, {tp['cpu']}, {tp['threads']} threads, idle: epochs x "
                  f"{study.train_images} / the loop's images/s measured side by side (`{tp['command']}`: "
                  + ", ".join(f"{c} {v}" for c, v in tp["images_per_s"].items()) + " images/s).", ""]
    lines += ["| config | epochs | steps | kNN k=20 | kNN k=200 | linear | cost (min, one host) | run's wall-clock (min) "
              "| run's images/s (median) | threads | host |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        cost = cost_minutes(study, results, r)
        lines.append(f"| {r['config']} | {r['epochs']} | {r['steps']} | {r['knn_top1_k20']} | "
                     f"{r['knn_top1_k200']} | {r['linear_top1']} | {'' if cost is None else f'{cost:.1f}'} | "
                     f"{r['wall_clock_s'] / 60:.1f} | {r['images_per_s_median']} | {r.get('threads', '')} | "
                     f"{r.get('cpu', 'AMD EPYC (earlier session)')} |")
    lines += ["", "Configurations:", ""] + [f"- `{k}`: {v[1]}; overrides `{' '.join(v[0]) or '(none)'}`"
                                            for k, v in study.configs.items()]
    notes = results.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    study.out.mkdir(parents=True, exist_ok=True)
    (study.out / "README.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): table only")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "knn_top1_k20", "kNN top-1, k=20"), (axes[1], "linear_top1", "linear probe top-1")):
        for config in study.configs:
            pts = [(cost_minutes(study, results, r) or r["wall_clock_s"] / 60, r[key]) for r in rows if r["config"] == config]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=config)
        for i, (size, m) in enumerate(sorted(base.items(), key=lambda kv: int(kv[0]))):
            if key in m:
                ax.axhline(m[key], color="gray", linestyle=("--", ":", "-.")[i % 3], label=f"raw pixels, {size} px")
        ax.set_xlabel("training cost (min on one host, see README)" if tp else "run's wall-clock (min)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"SimCLR ResNet-18, {study.title}: runs of " + ", ".join(map(str, sorted({r['epochs'] for r in rows})))
                 + " epochs")
    fig.tight_layout()
    fig.savefig(study.out / "pilot.png", dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion_mnist", choices=list(STUDIES))
    p.add_argument("--only", nargs="*", help="configurations (default: all of the study's)")
    p.add_argument("--lengths", nargs="*", type=int, help="epochs (default: the study's)")
    p.add_argument("--report", action="store_true")
    p.add_argument("--throughput", action="store_true", help="measure each config's loop side by side, store it")
    p.add_argument("--threads-file", type=Path, default=ROOT / "runs" / "pilot" / "threads")
    args = p.parse_args(argv)
    study = STUDIES[args.data]
    unknown = sorted(set(args.only or ()) - set(study.configs))
    if unknown:
        p.error(f"unknown configuration(s) {unknown} for --data {args.data}; known: {sorted(study.configs)}")
    results = load_results(study)
    if args.report:
        report(study, results)
        return
    if args.throughput:
        measured = throughput(study)
        results = load_results(study)
        results["throughput"] = measured
        save_results(study, results)
        report(study, results)
        print(json.dumps(measured, indent=1))
        return
    results["baselines"] = baselines(study, results)
    save_results(study, results)
    for epochs in args.lengths or study.lengths:      # short runs of every config first: the curve grows evenly
        for config in args.only or study.configs:
            if any(r["config"] == config and r["epochs"] == epochs for r in results["runs"]):
                continue
            t0 = time.time()
            n = threads(args.threads_file)
            pretrain(study, config, epochs, args.threads_file)
            row = evaluate(study, config, epochs)
            row["threads"] = int(n)
            from benchmarks.common import cpu_model
            row["cpu"] = cpu_model()              # hosts change between sessions: wall-clocks differ by ~1.7x
            results = load_results(study)
            results["runs"].append(row)
            save_results(study, results)
            print(f"[pilot] {study.data} {config} e{epochs}: {row} ({time.time() - t0:.0f} s with eval)", flush=True)
        report(study, load_results(study))


if __name__ == "__main__":
    main()
