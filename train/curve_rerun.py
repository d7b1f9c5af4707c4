"""The training curve of a release that kept no snapshots: train its recipe again, with them.

    python train/curve_rerun.py mae_vit_tiny_patch4_32.fmnist      # MAE: ~24 min + ~5 min of curve
    python train/curve_rerun.py --dry-run extrema_vit_tiny_patch4_32.fmnist

The round-2 releases before ADIOS-BYOL were trained without `snapshot_every`, so a flagged one
could not show "the curve of how far it got" (issue 12). This trains the release's plan recipe
(weights/releases.yaml, the released seed) once more into runs/curve_rerun/<name.tag>/seed<S>,
with a backbone snapshot every epoch, measures each snapshot with train/curve.py under the
release's evaluation flags, and compares the last snapshot with the released model.safetensors
tensor by tensor. The card (re-rendered from its folder, weights bit-exact: zoo.publish.republish)
then shows the curve and says which it is: the released weight's own training, when the re-run's
last snapshot is bit-identical to the file (a seed fixes the initialisation, data order and views,
so on the same kind of host and precision it can be), or a re-run's whose last point differs from
the file (by how much).

Re-entrant like train/release.py: the training resumes from its checkpoints, the curve goes on
where it stopped, and a finished curve is only added to the card.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from train import release  # noqa: E402

RUNS = release.REPO / "runs" / "curve_rerun"


def same_tensors(snapshot: Path, released: Path) -> dict:
    """{"identical": bit-for-bit, "max_abs_diff": largest |a - b| over all tensors} of two fp16
    backbone files (same keys required: the same exported architecture)."""
    from safetensors.torch import load_file
    a, b = load_file(str(snapshot)), load_file(str(released))
    if a.keys() != b.keys():
        raise SystemExit(f"{snapshot} and {released} hold different tensors: "
                         f"{sorted(a.keys() ^ b.keys())[:5]} ... not the same architecture")
    diff = max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in a)
    return {"identical": all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a), "max_abs_diff": diff}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("release", help="name.tag of a release in weights/releases.yaml")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args(argv)
    plan = {item["key"]: item for item in release.load_plan()}
    if args.release not in plan:
        from zoo.suggest import did_you_mean
        raise SystemExit(f"{args.release} is not in {release.PLAN}.{did_you_mean(args.release, plan)}")
    item, dry = plan[args.release], args.dry_run
    entry = release.released(item)
    if entry is None:
        raise SystemExit(f"{item['key']}: weights/ holds no release of the plan's recipe to draw a curve for; "
                         f"train it first (python train/release.py {item['key']})")
    facts = entry["metrics"].get("pretrain") or {}
    if not (facts.get("steps") and facts.get("epochs")):
        raise SystemExit(f"{item['key']}: its card records no pretrain steps and epochs to place snapshots by")
    per_epoch = round(facts["steps"] / facts["epochs"])
    seed = item["seeds"][0]
    run_dir = RUNS / item["key"] / f"seed{seed}"
    release.pretrain(item, seed, dry, run_dir=run_dir, overrides=(f"snapshot_every={per_epoch}",))
    if dry:                                       # (release.curve looks for snapshots not yet taken)
        release.run([sys.executable, "train/curve.py", str(run_dir), *item["eval"]], dry)
        return
    release.curve(item, run_dir, dry)
    from zoo import weights
    from zoo.runs import snapshots
    folder = weights.weights_root() / item["key"]
    curve = release.metrics_of(run_dir)["curve"]
    curve["rerun"] = same_tensors(snapshots(run_dir)[-1][1], folder / "model.safetensors")
    print(f"{item['key']}: the re-run's last snapshot is " + ("bit-identical to the released file" if
          curve["rerun"]["identical"] else f"not the released file (max |diff| {curve['rerun']['max_abs_diff']:.3g})"))
    if entry["metrics"].get("curve") != curve:
        release.republish(item, {"curve": curve, "commands": {"curve": f"python train/curve_rerun.py {item['key']}"}}, dry)


if __name__ == "__main__":
    main()
