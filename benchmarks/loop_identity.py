"""Does a change to the training loop keep its math? Bit-identical weights before and after.

    python benchmarks/loop_identity.py --out /tmp/before.json      # on the commit before the change
    python benchmarks/loop_identity.py --out /tmp/after.json       # on the change
    python benchmarks/loop_identity.py --compare /tmp/before.json /tmp/after.json

One recipe of each method (plus blockmask and SimSiam on a zoo recipe's settings) runs a few
steps of train/pretrain.py on a 64-image subset, one thread, seed 0; every tensor of the saved
pretrainer (all phases' networks, EMA teachers included) is hashed. `--compare` names every
tensor whose bytes differ. Each tree runs its own recipe files, so a recipe migrated to a new
format is compared with its old self.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (recipe, extra overrides)
CASES = {
    "simclr": ("recipes/simclr_resnet18.fmnist.yaml", []),
    "simsiam": ("recipes/simclr_resnet18.fmnist.yaml", ["model=simsiam_resnet18", "optimizer=sgd"]),
    "byol": ("recipes/byol_resnet18.fmnist.yaml", []),
    "randmask": ("recipes/randmask_resnet18.simclr_fmnist.yaml", []),
    "blockmask": ("recipes/randmask_resnet18.simclr_fmnist.yaml", ["model=blockmask_resnet18"]),
    "adios": ("recipes/adios_resnet18.simclr_fmnist.yaml", []),
    "adios_byol": ("recipes/adios_resnet18.byol_fmnist.yaml", []),
    "adios_vit": ("recipes/adios_vit_tiny_patch4_32.simclr_fmnist.yaml", []),
    "mae": ("recipes/mae_vit_tiny_patch4_32.fmnist.yaml", []),
    "automae": ("recipes/automae_vit_tiny_patch4_32.fmnist.yaml", []),
    "extrema": ("recipes/extrema_vit_tiny_patch4_32.fmnist.yaml", []),
}
COMMON = ["max_steps=3", "batch_size=16", "limit_train=64", "num_workers=0", "ckpt_every=0", "log_every=1",
          "seed=0", "grad_accum=1"]


def digests(path: Path) -> dict[str, str]:
    import torch
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return {k: hashlib.sha256(f.get_tensor(k).contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
                for k in sorted(f.keys())}


def run(out: Path) -> dict:
    result = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (recipe, extra) in CASES.items():
            run_dir = Path(tmp, name)
            proc = subprocess.run([sys.executable, "train/pretrain.py", "--recipe", recipe, *COMMON, *extra,
                                   f"run_dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode:
                result[name] = {"error": proc.stderr[-2000:]}
            else:
                result[name] = digests(run_dir / "pretrainer.safetensors")
            print(f"{name}: {'error' if proc.returncode else len(result[name])} tensors", flush=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def compare(a: Path, b: Path) -> int:
    before, after = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for name in CASES:
        x, y = before.get(name, {}), after.get(name, {})
        if "error" in x or "error" in y or not x or not y:
            print(f"{name}: could not compare ({'error' if 'error' in x or 'error' in y else 'missing'})")
            bad += 1
            continue
        diff = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
        print(f"{name}: {'bit-identical' if not diff else f'{len(diff)} of {len(x)} tensors differ: {diff[:5]}'}"
              f" ({len(x)} tensors)")
        bad += bool(diff)
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--compare", nargs=2, type=Path)
    args = p.parse_args(argv)
    if args.compare:
        return int(compare(*args.compare) > 0)
    run(args.out or Path("loop_identity.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
