"""Train, evaluate and publish the release batch of weights/releases.yaml into weights/.

    python train/release.py                                   # everything not yet done, in order
    python train/release.py adios_resnet18.simclr_fmnist      # one release (and its extra seeds)
    python train/release.py --dry-run                         # print the commands only
    python train/release.py --republish                       # re-render finished releases' cards

Every step is one of the project's own commands, run as a subprocess and printed, so each number
in a card is reproducible by the command the card names:

1. pretrain  `python train/pretrain.py --recipe R run_dir=runs/release/<name.tag>/seed<S> seed=S`
             (resume=true when a checkpoint is there: a killed batch picks up where it stopped);
2. publish   `python train/publish.py RUN --tag TAG` (fp16, weights/<name.tag>/, zoo/released.json);
3. evaluate  the *released* file, by name, with the baselines in the same run:
             `python train/evaluate.py <name.tag> --baselines --out RUN` (+ `train/maskscore.py
             <name.tag>` for learned maskers on the scenes), so re-running that command on a fresh
             clone reproduces the card;
4. publish   again, now with the metrics (model.safetensors is byte-identical; the card changes);
5. low-label `python train/finetune.py <name.tag> --labels F --baselines` for each `low_label`
             fraction of the plan (from-scratch and raw-pixel baselines kept in
             runs/release/baselines, keyed by what decides them: one per architecture, data and
             resolution, not one per release), then publish again.

A release whose run directory is gone (a run from another machine or session) is kept when the
table lists it with its kNN/linear results and its recipe is the plan's: it is not retrained; the
steps it still lacks (low-label fine-tunes, extra seeds) run on the released file, and its card
gains their results from its published folder alone (zoo.publish.republish).
Extra seeds run right after their release's first seed (the plan lists the main comparison
first): each is pretrained and evaluated from its run directory (fp32; no baselines, which do not
depend on the trained weights), and the first seed's card gains a per-seed table. An extra seed
whose run directory is gone keeps its card row when that row is whole (all its metrics).
`equal_compute: [CONTROL]`: CONTROL's recipe is trained again for this method's measured
pretraining wall-clock (its epochs scaled by the two cards' cost ratio, train/costs.py: each side's
fastest run on one host and precision; the warmup scaled with them), in
runs/release/CONTROL/equal_compute.METHOD, evaluated like CONTROL's extra seeds, and the method's
card and README's pairs table gain the comparison at equal compute.
A step whose output exists is skipped, so the batch is re-entrant.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "weights" / "releases.yaml"
RUNS = REPO / "runs" / "release"


def machine() -> str:
    """The host in a card's words: "<CPU model>, <n> cores, <GPU name or no GPU>" (runs of two hosts
    do not divide into a cost ratio, train/costs.py)."""
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}" if cpu else f"{os.cpu_count()} CPU cores, {gpu}"


def load_plan(path: Path = PLAN) -> list[dict]:
    plan = yaml.safe_load(path.read_text())["releases"]      # other top-level keys: YAML anchors
    for item in plan:
        unknown = set(item) - {"recipe", "seeds", "eval", "mask_score", "default", "controls", "low_label",
                               "equal_compute"}
        if unknown:
            raise SystemExit(f"{path}: unknown keys {sorted(unknown)} in {item}")
        item["key"] = Path(item["recipe"]).name.removesuffix(".yaml")
        item.setdefault("seeds", [0])
        item["eval"] = [str(a) for a in item.get("eval", [])]
        item["low_label"] = [float(f) for f in item.get("low_label", [])]
        if not all(0 < f < 1 for f in item["low_label"]):
            raise SystemExit(f"{path}: low_label takes label fractions in (0, 1), got {item['low_label']}")
    keys = [item["key"] for item in plan]
    for n, item in enumerate(plan):      # a control trained at the method's wall-clock is released first
        eq = item.setdefault("equal_compute", [])
        if not isinstance(eq, list) or any(k not in (item.get("controls") or []) or k not in keys[:n] for k in eq):
            raise SystemExit(f"{path}: {item['key']}: equal_compute takes a list of its `controls` that the plan "
                             f"releases before it, got {eq!r}")
    return plan


def run(cmd: list[str], dry: bool) -> None:
    """Run one step. A SIGTERM to this batch goes on to the step's process, so that `kill` of the
    batch stops the training it started too (it resumes from its last checkpoint on a rerun); any
    other way out of the wait (Ctrl-C, an error) stops the step as well."""
    print("$ " + shlex.join(cmd), flush=True)
    if dry:
        return
    child, stopped = None, []

    def forward(signum, frame):
        stopped.append(signum)
        if child is not None:
            child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)      # before the step starts: no orphan window
    try:
        child = subprocess.Popen(cmd, cwd=REPO)
        if stopped:
            child.send_signal(signal.SIGTERM)
        code = child.wait()
    except BaseException:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if stopped:
        print(f"release batch stopped by SIGTERM during: {shlex.join(cmd)}\n"
              "run the same release command again to resume from the last checkpoint", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def metrics_of(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_metrics(run_dir: Path, new: dict) -> None:
    from zoo.runs import update_metrics
    update_metrics(run_dir, new)


def data_of(item: dict) -> str:
    return yaml.safe_load((REPO / item["recipe"]).read_text()).get("data", "fashion_mnist")


def released(item: dict) -> dict | None:
    """The table's entry of this release when weights/ holds it and it was trained from the plan's
    recipe (the computing keys a resume checks; the seed aside): the record that survives a lost
    run directory."""
    from train.pretrain import recipe_changes
    from train.recipe import Recipe
    from zoo import weights
    entry = weights.load_table().get(item["key"])
    if entry is None or not (weights.weights_root() / item["key"] / "config.json").is_file():
        return None
    changes = recipe_changes(dict(entry.get("recipe") or {}), Recipe.load(REPO / item["recipe"]))
    return entry if set(changes) <= {"seed"} else None


def pretrain(item: dict, seed: int, dry: bool, run_dir: Path | None = None, overrides: tuple = ()) -> Path:
    run_dir = run_dir or RUNS / item["key"] / f"seed{seed}"
    if (run_dir / "pretrainer.safetensors").exists():
        return run_dir
    if not dry:
        run_dir.mkdir(parents=True, exist_ok=True)
        from train.publish import git_commit
        write_metrics(run_dir, {"commit": git_commit(REPO), "machine": machine()})
    resume = ["resume=true"] if (run_dir / "state").exists() else []
    run([sys.executable, "train/pretrain.py", "--recipe", item["recipe"], f"run_dir={run_dir}",
         f"seed={seed}", *overrides, *resume], dry)
    return run_dir


def publish(item: dict, run_dir: Path, dry: bool) -> None:
    name, tag = item["key"].split(".", 1)
    run([sys.executable, "train/publish.py", str(run_dir), "--tag", tag, "--dtype", "float16",
         "--fact", f"machine={machine()}", *(["--default"] if item.get("default") else [])], dry)


def evaluate(item: dict, source: str, run_dir: Path, baselines: bool, dry: bool) -> None:
    data = data_of(item)
    if f"{data}/knn_top1_k20" in metrics_of(run_dir):
        return
    cmd = ["python", "train/evaluate.py", source, *(["--baselines"] if baselines else []), *item["eval"]]
    run([sys.executable, *cmd[1:], "--out", str(run_dir)], dry)
    commands = {"knn": shlex.join(cmd), "linear": shlex.join(cmd)}
    if item.get("mask_score"):
        mask_cmd = ["python", "train/maskscore.py", source]
        run([sys.executable, *mask_cmd[1:], "--out", str(run_dir)], dry)
        commands["mask"] = shlex.join(mask_cmd)
    if not dry:
        write_metrics(run_dir, {"commands": commands})


def curve_missing(item: dict, run_dir: Path) -> bool:
    """Whether the run kept backbone snapshots (its recipe's `snapshot_every`) that its curve has
    not measured yet (in a dry run: whether the recipe keeps any)."""
    from zoo.runs import snapshots
    if not run_dir.exists():
        return bool(yaml.safe_load((REPO / item["recipe"]).read_text()).get("snapshot_every"))
    points = (metrics_of(run_dir).get("curve") or {}).get("points") or {}
    return any(str(step) not in points for step, _ in snapshots(run_dir))


def curve(item: dict, run_dir: Path, dry: bool) -> bool:
    """The training curve (train/curve.py: kNN of each backbone snapshot, with the release's
    evaluation flags) of a run that kept snapshots; it goes on where it stopped. Whether it ran."""
    if not curve_missing(item, run_dir):
        return False
    cmd = ["python", "train/curve.py", "RUN", *item["eval"]]
    run([sys.executable, cmd[1], str(run_dir), *cmd[3:]], dry)
    if not dry:
        write_metrics(run_dir, {"commands": {**metrics_of(run_dir).get("commands", {}), "curve": shlex.join(cmd)}})
    return True


def low_label_suffix(fraction: float) -> str:
    """train/finetune.py's metric-key suffix of a label fraction: 0.01 -> "_1pct"."""
    from train.finetune import percent
    return f"_{percent(fraction)}pct"


def low_label_key(item: dict, fraction: float) -> str:
    """The metric the low-label fine-tune of `fraction` writes (its presence: that step is done)."""
    return f"{data_of(item)}/finetune_top1{low_label_suffix(fraction)}"


def low_label(item: dict, source: str, run_dir: Path, dry: bool, done: dict | None = None) -> None:
    """The low-label fine-tunes of the released file (train/finetune.py --labels F --baselines:
    pretrained, from scratch and a raw-pixel logistic regression on one class-balanced subset);
    a fraction whose result is in run_dir's metrics or in `done` (the card's) is skipped."""
    for fraction in item["low_label"]:
        if low_label_key(item, fraction) in {**(done or {}), **metrics_of(run_dir)}:
            continue
        cmd = ["python", "train/finetune.py", source, "--labels", f"{fraction:g}", "--baselines",
               *(["--bf16"] if "--bf16" in item["eval"] else [])]
        # the baselines do not depend on the weights: releases of one architecture, data and size share them
        run([sys.executable, *cmd[1:], "--out", str(run_dir), "--baselines-cache", str(RUNS / "baselines")], dry)
        if not dry:          # the card's word for the command: every key of this fraction ends in it
            write_metrics(run_dir, {"commands": {**metrics_of(run_dir).get("commands", {}), low_label_suffix(fraction): shlex.join(cmd)}})


def republish(item: dict, metrics: dict, dry: bool) -> None:
    """Re-render a release from its published folder alone (its run directory is gone), `metrics`
    merged into the card's; the weights stay bit-exact (zoo.publish.republish)."""
    from zoo import weights
    from zoo.publish import republish as from_folder
    folder = weights.weights_root() / item["key"]
    print(f"republish {folder} from its own files" + (f", adding {sorted(metrics)}" if metrics else ""), flush=True)
    if not dry:
        from_folder(folder, metrics)


def later_results(item: dict, entry: dict, run_dir: Path, dry: bool) -> None:
    """The steps after training that a kept release still lacks (its low-label fine-tunes), run on
    the released file into a run directory of their own, then added to its card."""
    if not dry:
        run_dir.mkdir(parents=True, exist_ok=True)
    low_label(item, item["key"], run_dir, dry, done=entry["metrics"])
    added = metrics_of(run_dir)
    new = {k: v for k, v in added.items() if k != "commands" and entry["metrics"].get(k) != v}
    commands = {k: v for k, v in added.get("commands", {}).items() if (entry.get("commands") or {}).get(k) != v}
    if new or commands:
        republish(item, {**new, **({"commands": commands} if commands else {})}, dry)


def first_pass(item: dict, dry: bool) -> None:
    seed = item["seeds"][0]
    planned = RUNS / item["key"] / f"seed{seed}"
    trained_here = (planned / "pretrainer.safetensors").exists() or (planned / "state").exists()
    entry = None if trained_here else released(item)
    if entry is not None and f"{data_of(item)}/knn_top1_k20" in entry["metrics"]:
        print(f"{item['key']}: released from an earlier run (weights/{item['key']}, its recipe as planned); "
              "its run directory is not here, so it is kept, not retrained", flush=True)
        later_results(item, entry, planned, dry)
        return
    run_dir = pretrain(item, seed, dry)
    done = metrics_of(run_dir)
    if f"{data_of(item)}/knn_top1_k20" in done and (REPO / "weights" / item["key"]).exists() and all(
            low_label_key(item, f) in done for f in item["low_label"]) and not curve_missing(item, run_dir):
        return
    publish(item, run_dir, dry)                       # the released fp16 file, which is evaluated
    evaluate(item, item["key"], run_dir, baselines=True, dry=dry)
    publish(item, run_dir, dry)                       # now with its metrics: a stop in the (long)
    if curve(item, run_dir, dry):                     # curve or fine-tunes leaves a whole card to commit
        publish(item, run_dir, dry)
    low_label(item, item["key"], run_dir, dry)
    publish(item, run_dir, dry)


def seed_pass(item: dict, dry: bool) -> None:
    from zoo.publish import SEED_COLUMNS
    if len(item["seeds"]) < 2:
        return
    data = data_of(item)
    first = RUNS / item["key"] / f"seed{item['seeds'][0]}"
    # the first seed's record: its run directory, or the released folder when that run is gone
    first_here = (first / "pretrainer.safetensors").exists()
    card = released(item)                     # read only: a dry run says what a real one would keep
    entry = None if first_here else card
    # an extra seed's row in the card survives its run directory (trained in another session/machine)
    rows = ((card or {}).get("metrics") or {}).get("seeds") or {}
    table = {}
    for seed in item["seeds"]:
        if seed == item["seeds"][0]:
            m = metrics_of(first) if first_here or entry is None else \
                {**entry["metrics"], "machine": (entry.get("facts") or {}).get("machine")}
        elif not any((RUNS / item["key"] / f"seed{seed}" / f).exists() for f in ("pretrainer.safetensors", "state")) \
                and all((rows.get(str(seed)) or {}).get(k) is not None for k in SEED_COLUMNS):
            print(f"{item['key']} seed {seed}: in the card's seed table, its run directory is not here: "
                  "kept, not retrained", flush=True)
            table[str(seed)] = rows[str(seed)]
            continue
        else:
            run_dir = pretrain(item, seed, dry)
            evaluate(item, str(run_dir), run_dir, baselines=False, dry=dry)
            m = metrics_of(run_dir)
        table[str(seed)] = run_row(m, data)
        # a run directory from before the machine was recorded: the card's (its first seed's) host
        table[str(seed)]["machine"] = m.get("machine") or (
            ((card or {}).get("facts") or {}).get("machine") if seed == item["seeds"][0] else None)
    add_to_card(item, {"seeds": table}, dry)


def run_row(m: dict, data: str) -> dict:
    """A run's row in a card's table (metrics.json `m`): its results and how its pretraining ran."""
    from train.costs import known_wall_clock_s
    from zoo.publish import SEED_COLUMNS
    pre = m.get("pretrain") or {}
    return {**{k: m.get(f"{data}/{k}") for k in SEED_COLUMNS}, "wall_clock_s": known_wall_clock_s(pre),
            "mixed_precision": pre.get("mixed_precision"), "machine": m.get("machine")}


def add_to_card(item: dict, new: dict, dry: bool) -> None:
    """Merge `new` into the release's card: through its first seed's run directory when that is
    here (metrics.json, then publish), else from its published folder (republish); nothing is
    rewritten when the card already says it."""
    if dry:
        return
    first = RUNS / item["key"] / f"seed{item['seeds'][0]}"
    if (first / "pretrainer.safetensors").exists():
        if any(metrics_of(first).get(k) != v for k, v in new.items()):
            write_metrics(first, new)
            publish(item, first, dry)
        return
    entry = released(item)
    if entry is None:
        raise SystemExit(f"{item['key']}: neither its run directory ({first}) nor a released card to add "
                         f"{sorted(new)} to")
    if any(entry["metrics"].get(k) != v for k, v in new.items()):
        republish(item, new, dry)


def equal_compute_epochs(method: dict, control: dict, control_epochs: int) -> dict:
    """How long the control trains to cost what the method cost: control_epochs x the cards' cost
    ratio (train/costs.py), rounded to whole epochs, with the clocks it came from; ValueError where
    the two cards' runs share no host and precision."""
    from train.costs import clocks, cost, short
    both = cost(method, control)
    if both is None:
        raise ValueError(f"the method's and the control's runs share no host and precision (method: "
                         f"{sorted({short(s) for s, _ in clocks(method)})}, control: "
                         f"{sorted({short(s) for s, _ in clocks(control)})}); train one where the other ran")
    method_s, control_s, where = both
    return {"epochs": max(1, round(control_epochs * method_s / control_s)), "method_wall_clock_s": method_s,
            "control_wall_clock_s": control_s, "control_epochs": control_epochs,
            "setting": None if where is None else list(where)}


def equal_compute_budget(item: dict, method: dict, control: dict, run_dir: Path, dry: bool) -> dict | None:
    """The length of the control's run at the method's wall-clock: computed from the cards until the
    run trains, then fixed (run_dir's metrics.json), so a resume keeps its schedule whatever later
    seeds do to the cards; None (and why) where there is no budget to train to."""
    from zoo.publish import setting_text
    sha = method["files"]["model.safetensors"]      # which release of the method the budget is for
    if (run_dir / "state").exists() or (run_dir / "pretrainer.safetensors").exists():
        budget = metrics_of(run_dir).get("budget")
        if budget is None or budget.get("method_sha256") != sha:
            print(f"{run_dir}: trained for " + ("an unrecorded budget" if budget is None else
                  "an earlier release of " + item["key"]) + "; delete it to train again for this one", flush=True)
            return None
        return budget
    recipe = control["recipe"]
    try:
        budget = equal_compute_epochs(method, control, int(recipe["epochs"]))
    except ValueError as e:
        print(f"{item['key']}: no equal-compute run of {control['name']}.{control['tag']}: {e}", flush=True)
        return None
    budget["warmup_epochs"] = round(float(recipe["warmup_epochs"]) * budget["epochs"] / budget["control_epochs"], 4)
    budget["method_sha256"] = sha
    print(f"{control['name']}.{control['tag']} at the wall-clock of {item['key']}: {budget['epochs']} epochs "
          f"({budget['control_epochs']} x {budget['method_wall_clock_s'] / 60:.1f} / "
          f"{budget['control_wall_clock_s'] / 60:.1f} min, {setting_text(budget['setting'])})", flush=True)
    if not dry:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(run_dir, {"budget": budget})
    return budget


def equal_compute_pass(item: dict, plan: list[dict], dry: bool) -> None:
    """Each `equal_compute` control trained for this method's wall-clock (one seed, its first),
    evaluated like an extra seed, and the result added to the method's card (`equal_compute`).
    Both must be released from the plan's recipes first: their cards hold the clocks."""
    method, data = released(item), data_of(item)
    done = {k: v for k, v in ((method or {}).get("metrics", {}).get("equal_compute") or {}).items()
            if k in item["equal_compute"]}                  # a control no longer planned leaves the card
    for key in item["equal_compute"]:
        control_item = next(c for c in plan if c["key"] == key)        # load_plan checked it is there
        control = released(control_item)
        if method is None or control is None:
            print(f"{item['key']}: the run of {key} at its wall-clock waits until both are released from "
                  "the plan's recipes (their cards hold the clocks)", flush=True)
            continue
        run_dir = RUNS / key / f"equal_compute.{item['key']}"
        budget = equal_compute_budget(item, method, control, run_dir, dry)
        if budget is None:
            continue
        overrides = (f"epochs={budget['epochs']}", f"warmup_epochs={budget['warmup_epochs']}")
        pretrain(control_item, control_item["seeds"][0], dry, run_dir, overrides)
        evaluate(control_item, str(run_dir), run_dir, baselines=False, dry=dry)
        if not dry and f"{data}/knn_top1_k20" in metrics_of(run_dir):      # trained and evaluated
            done[key] = {**run_row(metrics_of(run_dir), data), "budget": budget, "commands": [
                shlex.join(["python", "train/pretrain.py", "--recipe", control_item["recipe"], "run_dir=RUN",
                            f"seed={control_item['seeds'][0]}", *overrides]),
                shlex.join(["python", "train/evaluate.py", "RUN", *control_item["eval"]])]}
    if method is not None and done != (method["metrics"].get("equal_compute") or {}):
        add_to_card(item, {"equal_compute": done}, dry)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="release keys (name.tag) to do; default: all of the plan")
    ap.add_argument("--plan", type=Path, default=PLAN)
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--republish", action="store_true",
                    help="only publish again the finished releases (after a change of the card's layout)")
    args = ap.parse_args(argv)
    plan = full = load_plan(args.plan)
    unknown = set(args.only) - {item["key"] for item in plan}
    if unknown:
        raise SystemExit(f"not in {args.plan}: {sorted(unknown)}; known: {[i['key'] for i in plan]}")
    plan = [item for item in plan if not args.only or item["key"] in args.only]
    t0 = time.time()
    if args.republish:
        for item in plan:
            run_dir = RUNS / item["key"] / f"seed{item['seeds'][0]}"
            if f"{data_of(item)}/knn_top1_k20" in metrics_of(run_dir):
                publish(item, run_dir, args.dry_run)
            elif released(item):
                republish(item, {}, args.dry_run)
        return
    for item in plan:
        print(f"\n=== {item['key']} (seed {item['seeds'][0]}) ===", flush=True)
        first_pass(item, args.dry_run)
        if len(item["seeds"]) > 1:
            print(f"\n=== {item['key']} seeds {item['seeds']} ===", flush=True)
            seed_pass(item, args.dry_run)
        if item["equal_compute"]:
            print(f"\n=== {item['key']} at equal compute with {item['equal_compute']} ===", flush=True)
            equal_compute_pass(item, full, args.dry_run)
    print(f"\nrelease batch done in {time.time() - t0:.0f} s")
    from train import readme_table
    readme_table.main(["--check"] if args.dry_run else [])      # a dry run writes nothing


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
