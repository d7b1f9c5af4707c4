"""The main job: the whole loop on the embedded scenes, in a few minutes on 2 CPU cores, no download.

    python train/demo.py [--steps 150] [--out runs/demo]

1. pretrain ADIOS (adios_resnet18, SimCLR base; recipes/adios_resnet18.simclr_scenes.yaml with
   a short schedule) through train/pretrain.py, exactly as a user would launch it;
2. weighted kNN on held-out scenes (train/knn.py): the trained backbone against the same
   architecture untrained and raw pixels, measured in the same run;
3. mask score of the learned occluder on held-out scenes against random and block masks of the
   same K and area (train/maskscore.py), and the mask picture the run saved;
4. publish the backbone and its occluder to a local Hub-layout folder with its own weight table
   (train/publish.py), then load it back with `zoo.create_model(<folder>)` and
   `torch.hub.load(<repo>, "adios_resnet18", tag=..., source="local")` and check both give the
   trained backbone's features exactly (fp16 release: up to fp16 rounding);
5. print a table of what it did.

Each step is the project's own command (printed before it runs), so any line can be re-run alone.
The numbers are CPU-scale smoke numbers of a ~150-step run, not a release.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "adios_resnet18.simclr_scenes.yaml"
TAG = "simclr_scenes_demo"


def run(cmd: list[str], env: dict | None = None) -> float:
    """Run one project command, echoing it; stop the demo (with its output) if it fails."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    t0 = time.time()
    subprocess.run([str(c) for c in cmd], cwd=REPO, check=True, env=env)
    return time.time() - t0


def load_back(folder: Path, table: Path, run_dir: Path) -> dict:
    """Load the published folder two ways in a fresh process and compare with the run's backbone."""
    code = f"""
import json, torch, zoo
from zoo.runs import load_pretrainer
ref = load_pretrainer({str(run_dir)!r})[0].exported_backbone().eval()
a = zoo.create_model({str(folder)!r}).eval()
b = torch.hub.load({str(REPO)!r}, "adios_resnet18", tag={TAG!r}, source="local").eval()
x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    r, fa, fb = ref(x), a(x), b(x)
print(json.dumps(dict(folder_vs_hub=float((fa - fb).abs().max()),
                      release_vs_run=float(((fa - r).abs().max() / r.abs().max()))))) 
"""
    env = dict(os.environ, ZOO_RELEASED=str(table), ZOO_WEIGHTS_DIR=str(folder.parent))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps of pretraining")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--eval-train", type=int, default=5000, help="kNN memory bank (train scenes)")
    ap.add_argument("--eval-test", type=int, default=1000, help="held-out test scenes")
    args = ap.parse_args(argv)
    py, run_dir = sys.executable, args.out / "adios_resnet18"
    if args.out.exists():
        shutil.rmtree(args.out)
    timings = {}
    timings["pretrain"] = run([py, "train/pretrain.py", "--recipe", RECIPE, f"run_dir={run_dir}",
                               f"max_steps={args.steps}", "batch_size=64", "warmup_epochs=0.1",
                               "ckpt_every=0", "num_workers=0", f"mask_grid_every={args.steps}"])
    limits = ["--limit-train", args.eval_train, "--limit-test", args.eval_test]
    timings["knn"] = run([py, "train/knn.py", run_dir, "--baselines", *limits])
    timings["maskscore"] = run([py, "train/maskscore.py", run_dir, "--n", args.eval_test])
    folder, table = args.out / "weights" / f"adios_resnet18.{TAG}", args.out / "released.json"
    timings["publish"] = run([py, "train/publish.py", run_dir, "--tag", TAG, "--out", folder,
                              "--table", table, "--fact", "note=demo run, not a release"])
    t0 = time.time()
    loaded = load_back(folder, table, run_dir)
    timings["load back"] = time.time() - t0

    metrics = json.loads((run_dir / "metrics.json").read_text())
    pictures = sorted(run_dir.glob("**/*.png"))
    print("\n== zoo main job: ADIOS (SimCLR base) on ResNet-18, embedded scenes, 32 px ==")
    rows = [(k, v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float))
            and ("knn" in k or "top1" in k or "mask" in k or "iou" in k)]
    width = max([len(k) for k, _ in rows] + [30])
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.4g}")
    print(f"  {'load back: folder vs torch.hub (max |diff|)':<{width}}  {loaded['folder_vs_hub']:.3g}")
    print(f"  {'load back: release vs run (rel. max diff, fp16)':<{width}}  {loaded['release_vs_run']:.3g}")
    print(f"  {'mask picture':<{width}}  {pictures[-1] if pictures else 'none saved'}")
    print(f"  {'published folder':<{width}}  {folder}")
    print("  wall-clock: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    if loaded["folder_vs_hub"] != 0.0 or loaded["release_vs_run"] > 1e-2:
        sys.exit("the published weights do not reproduce the trained backbone")


if __name__ == "__main__":
    main()
