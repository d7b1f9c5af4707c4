"""The training loop with glibc's malloc defaults against `train/allocator.py`'s settings, side by side.

    python benchmarks/allocator.py                       # -> benchmarks/allocator.json (+ a table)
    python benchmarks/allocator.py --steps 12 --recipes recipes/byol_vit_tiny_patch4_32.fmnist.yaml

For each release recipe, train/pretrain.py runs `--steps` steps twice, defaults first
(`ZOO_KEEP_FREED_MEMORY=0`) and then the settings, one process after the other with nothing else
running (`benchmarks/step_time.py`'s loop: one loader worker, log every 5 steps, images/s the
median of the log lines after the first). Besides images/s it records the CPU seconds the process
spent in the kernel, which is where the defaults lose (page faults on fresh `mmap` pages, `munmap`
and heap trims every step), and the last logged loss of each, which must be the same: only where
the bytes live changes, not the arithmetic.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402
from benchmarks.step_time import loop  # noqa: E402
from train.allocator import ENV  # noqa: E402

RECIPES = ("recipes/byol_vit_tiny_patch4_32.fmnist.yaml", "recipes/mae_vit_tiny_patch4_32.fmnist.yaml",
           "recipes/simclr_resnet18.fmnist.yaml", "recipes/adios_resnet18.simclr_fmnist.yaml")
SETTINGS = {"glibc defaults": "0", "keep_freed_memory": "1"}


def measure(recipe: str, steps: int, threads: int) -> dict:
    text = Path(ROOT, recipe).read_text()
    augment_on = "device" if "augment_on: device" in text else "loader"
    runs = {name: loop(256, steps, augment_on, threads, ("mask_grid_every=0",), recipe, {ENV: flag})
            for name, flag in SETTINGS.items()}
    before, after = runs.values()
    return {**runs, "speedup": after["images_per_s"] / before["images_per_s"],
            "same_loss": before["last_loss"] == after["last_loss"]}


def render(r: dict) -> str:
    lines = [f"Allocator, {r['steps']} steps per run, batch 256, {r['threads']} threads, "
             f"{r['machine'].get('cpu', '')} (`{r['command'].strip()}`)", "",
             "| recipe | images/s defaults | kept | speedup | kernel CPU s defaults | kept | same loss |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for recipe, m in r["recipes"].items():
        d, k = m["glibc defaults"], m["keep_freed_memory"]
        lines.append(f"| {Path(recipe).stem} | {d['images_per_s']:.1f} | {k['images_per_s']:.1f} | "
                     f"{m['speedup']:.2f}x | {d['system_s']:.1f} | {k['system_s']:.1f} | "
                     f"{'yes' if m['same_loss'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "allocator.json"))
    args = ap.parse_args(argv)
    result = {"machine": machine(), "steps": args.steps, "threads": args.threads,
              "command": "python benchmarks/allocator.py " + " ".join(argv or sys.argv[1:]),
              "recipes": {r: measure(r, args.steps, args.threads) for r in args.recipes}}
    from zoo.runs import atomic_write
    atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    print(render(result))
    return result


if __name__ == "__main__":
    main()
