"""Turn a finished run into a released weight: weights/<name>.<tag>/ and its entry in zoo/released.json.

    python train/publish.py runs/adios_resnet18 --tag simclr_fmnist --dtype float16
    python train/publish.py runs/adios_resnet18 --tag simclr_fmnist --push my-org/adios_resnet18.simclr_fmnist
    python train/publish.py weights/adios_resnet18.simclr_fmnist --push my-org/adios_resnet18.simclr_fmnist

Reads the run directory through zoo.runs (recipe.yaml, pretrainer.safetensors, metrics.json),
exports `pretrainer.exported_backbone()` (and the learned masker, if the method has one), writes
the Hub-layout folder with zoo.publish.publish and adds the release to the table. `--push` uploads
the folder with huggingface_hub to whatever endpoint is configured (HF_ENDPOINT, a token from
`hf auth login` or HF_TOKEN) and records the Hub repo and commit in the table. Given an already
published folder instead of a run, `--push` uploads it as it is. Nothing is pushed otherwise.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import zoo  # noqa: F401
except ImportError:      # a clone used without `pip install -e .`
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from zoo import publish as zpub  # noqa: E402
from zoo import weights  # noqa: E402
from zoo.runs import load_metrics, load_pretrainer  # noqa: E402

# metrics.json keys that are facts about the run (shown in the card's training section), not results.
FACT_KEYS = ("wall_clock_s", "wall_clock", "train_seconds", "train_time_s", "machine", "images_per_s",
             "epochs_done", "steps", "commit", "skipped_images")


def git_commit(repo: Path) -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def has_learned_masker(pretrainer) -> bool:
    masker = getattr(pretrainer, "masker", None)
    return masker is not None and any(True for _ in masker.parameters())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished run directory (recipe.yaml, pretrainer.safetensors), "
                    "or a published folder to --push as it is")
    ap.add_argument("--tag", help="release tag: {objective}_{data} or {data}, e.g. simclr_fmnist")
    ap.add_argument("--name", help="zoo name (default: the recipe's model)")
    ap.add_argument("--out", type=Path, help="folder to write (default: <repo>/weights/<name>.<tag>)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                    help="storage precision of floating tensors (default float16: keeps weights/ small)")
    ap.add_argument("--hub-id", help=f"Hub repo the table names (default {zpub.DEFAULT_HUB_ORG}/<name>.<tag>)")
    ap.add_argument("--push", metavar="ORG/NAME", help="upload the folder to this Hub repo after writing it")
    ap.add_argument("--private", action="store_true", help="create the Hub repo private (with --push)")
    ap.add_argument("--default", action="store_true", help="make this tag the name's default (listed first)")
    ap.add_argument("--table", type=Path, help="released table to update (default zoo/released.json)")
    ap.add_argument("--no-table", action="store_true", help="write the folder only")
    ap.add_argument("--fact", action="append", default=[], metavar="KEY=VALUE",
                    help="extra card fact, e.g. machine='2-core EPYC'; repeatable")
    args = ap.parse_args(argv)
    if (args.run_dir / "config.json").is_file() and not (args.run_dir / "pretrainer.safetensors").is_file():
        return push_folder(ap, args)          # a published folder, not a run
    if not args.tag:
        ap.error("--tag is required to publish a run")

    pretrainer, recipe = load_pretrainer(args.run_dir)
    metrics = load_metrics(args.run_dir)
    name = args.name or recipe["model"]
    facts = {k: metrics.pop(k) for k in FACT_KEYS if k in metrics}
    commit = facts.pop("commit", None) or recipe.get("commit")
    if commit is None:
        commit = git_commit(REPO)
        commit = commit and f"{commit} (at publish time; the run recorded none)"
    facts.setdefault("published on", f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    for item in args.fact:
        key, _, value = item.partition("=")
        facts[key] = value
    # The eval scripts do not record their command lines: the card gives the command that
    # re-measures each metric on this run directory (the flags of a limited run are not known).
    scripts = (("knn", "knn.py --baselines"), ("linear", "linear.py --baselines"), ("finetune", "finetune.py"),
               ("mask", "maskscore.py"))
    commands = {word: f"python train/{script.split()[0]} {args.run_dir}{script[len(script.split()[0]):]}"
                for word, script in scripts if (REPO / "train" / script.split()[0]).exists()}
    out = args.out or REPO / "weights" / f"{name}.{args.tag}"
    masker = pretrainer.masker if has_learned_masker(pretrainer) else None
    entry = zpub.publish(pretrainer.exported_backbone(), out, name, args.tag, recipe=recipe, metrics=metrics,
                         masker=masker, commit=commit, dtype=args.dtype, objective=recipe.get("objective"),
                         pretrainer_args=recipe.get("model_args") or {}, hf_hub_id=args.push or args.hub_id,
                         facts=facts, commands=metrics.pop("commands", None) or commands)
    print(f"wrote {out}: " + ", ".join(f"{f} {h[:12]}" for f, h in entry["files"].items()))
    if args.push:
        entry["revision"] = zpub.push(out, args.push, private=args.private)
        print(f"pushed {out} to {args.push} at commit {entry['revision']}")
    if not args.no_table:
        path = zpub.update_table(entry, args.table or weights.table_path(), default=args.default)
        print(f"updated {path}: {entry['name']}.{entry['tag']}")
    return entry


def push_folder(ap, args) -> dict:
    """Upload an already published folder; point its table entry (if any) at the pushed commit."""
    if not args.push:
        ap.error(f"{args.run_dir} is a published folder, not a run: give --push ORG/NAME to upload it")
    import json
    block = json.loads((args.run_dir / "config.json").read_text()).get("zoo") or {}
    revision = zpub.push(args.run_dir, args.push, private=args.private)
    print(f"pushed {args.run_dir} to {args.push} at commit {revision}")
    table_path = args.table or weights.table_path()
    key = f"{block.get('name')}.{block.get('tag')}"
    entry = weights.load_table(table_path).get(key)
    if entry is None or args.no_table:
        return {"hf_hub_id": args.push, "revision": revision}
    if entry["files"].get("config.json") != weights.sha256_file(args.run_dir / "config.json"):
        raise SystemExit(f"{args.run_dir} is not the folder the table records for {key} (config.json differs): "
                         "the table is left as it was.")
    entry.update(hf_hub_id=args.push, revision=revision)
    zpub.update_table(entry, table_path)
    print(f"updated {table_path}: {key} -> {args.push}@{revision}")
    return entry


if __name__ == "__main__":
    main()
