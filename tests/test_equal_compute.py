"""A control trained for its method's measured wall-clock (train/release.py's `equal_compute`): the
cost ratio comes from each side's fastest run in one host and precision (train/costs.py), the run's
length is fixed when it starts, and its result reaches the method's card and README's pairs table.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from zoo import weights

REPO = Path(__file__).resolve().parents[1]
TABLE = json.loads((REPO / "zoo" / "released.json").read_text())
METHOD, CONTROL = "adios_resnet18.simclr_fmnist", "simclr_resnet18.fmnist"
INTEL, AMD = "Intel(R) Xeon(R) Processor, 2 cores, no GPU", "AMD EPYC 7B13, 2 cores, no GPU"

pytestmark = pytest.mark.skipif(not {METHOD, CONTROL} <= set(TABLE), reason="the main pair is not released")


def row(wall, machine=INTEL, precision="bf16", knn=85.0):
    return {"knn_top1_k20": knn, "knn_top1_k200": knn - 2, "linear_top1": knn + 4, "wall_clock_s": wall,
            "mixed_precision": precision, "machine": machine}


def card(seeds: dict) -> dict:
    first = next(iter(seeds.values()))
    return {"metrics": {"seeds": seeds, "pretrain": {"wall_clock_s": first["wall_clock_s"],
                                                     "mixed_precision": first["mixed_precision"]}},
            "facts": {"machine": first["machine"]}}


# the method: three seeds on the Intel host, one slowed by a job beside it; the control: its released
# seed fp32 on another host, two more on the Intel host
METHOD_SEEDS = {"0": row(7895.2, knn=84.7), "1": row(7859.3, knn=85.0), "2": row(9400.0, knn=84.8)}
CONTROL_SEEDS = {"0": row(6389.5, AMD, "no", 85.75), "1": row(2388.0, knn=85.7), "2": row(2502.0, knn=85.6)}


def test_cost_is_each_sides_fastest_run_in_a_shared_setting():
    from train.costs import cost
    from train.release import equal_compute_epochs
    assert cost(card(METHOD_SEEDS), card(CONTROL_SEEDS)) == (7859.3, 2388.0, (INTEL, "bf16"))
    budget = equal_compute_epochs(card(METHOD_SEEDS), card(CONTROL_SEEDS), 8)
    assert budget["epochs"] == 26                     # 8 x 7859.3 / 2388.0 = 26.3
    assert budget["setting"] == f"bf16 on {INTEL}"
    # the slow seed alone, against the control's slower Intel seed: 8 x 9400 / 2502 = 30.06
    assert equal_compute_epochs(card({"2": METHOD_SEEDS["2"]}), card({"2": CONTROL_SEEDS["2"]}), 8)["epochs"] == 30
    with pytest.raises(SystemExit, match=r"share no host and precision.*Intel Xeon bf16.*AMD EPYC 7B13 fp32"):
        equal_compute_epochs(card(METHOD_SEEDS), card({"0": CONTROL_SEEDS["0"]}), 8)


def test_time_ratio_uses_the_seed_tables():
    """A pair whose released seeds ran on two hosts still has a cost ratio where other seeds share one."""
    from train.readme_table import time_ratio
    assert time_ratio(card(METHOD_SEEDS), card(CONTROL_SEEDS)) == f"{7859.3 / 2388.0:.2f}x"
    assert time_ratio(card(METHOD_SEEDS), card({"0": CONTROL_SEEDS["0"]})) == \
        "not comparable: Intel Xeon bf16 / AMD EPYC 7B13 fp32"


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """The main pair released (copies of both folders; the table's seed rows replaced by the ones
    above), their run directories gone; every command recorded, none run."""
    import train.release as release
    wdir, table = tmp_path / "weights", tmp_path / "released.json"
    entries = {}
    for key, seeds in ((METHOD, METHOD_SEEDS), (CONTROL, CONTROL_SEEDS)):
        shutil.copytree(REPO / "weights" / key, wdir / key)
        entries[key] = json.loads(json.dumps(TABLE[key]))
        entries[key]["metrics"]["seeds"] = seeds
    table.write_text(json.dumps(entries))
    monkeypatch.setenv(weights.TABLE_ENV, str(table))
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(wdir))
    monkeypatch.setattr(release, "RUNS", tmp_path / "runs")
    ran = []
    monkeypatch.setattr(release, "run", lambda cmd, dry: ran.append(cmd))
    plan = release.load_plan()
    item = next(i for i in plan if i["key"] == METHOD)
    assert item["equal_compute"] == [CONTROL]
    return SimpleNamespace(release=release, plan=plan, item=item, ran=ran, table=table, folder=wdir / METHOD,
                           run_dir=tmp_path / "runs" / CONTROL / f"equal_compute.{METHOD}")


def test_control_trains_for_the_methods_wall_clock_and_reaches_the_card(pair):
    r = pair
    r.release.equal_compute_pass(r.item, r.plan, dry=False)
    pretrain = [c for c in r.ran if "train/pretrain.py" in c]
    assert len(pretrain) == 1
    cmd = " ".join(pretrain[0])
    assert f"recipes/{CONTROL}.yaml" in cmd and f"run_dir={r.run_dir}" in cmd
    assert "seed=0 epochs=26 warmup_epochs=2.6" in cmd        # the recipe's 0.8 of 8 epochs, scaled
    assert any("train/evaluate.py" in c and str(r.run_dir) in c for c in r.ran)

    # the run trained and was evaluated (its files as pretrain.py and evaluate.py leave them)
    (r.run_dir / "pretrainer.safetensors").write_bytes(b"")
    r.release.write_metrics(r.run_dir, {
        "fashion_mnist/knn_top1_k20": 86.1, "fashion_mnist/knn_top1_k200": 84.0, "fashion_mnist/linear_top1": 89.9,
        "pretrain": {"wall_clock_s": 7800.0, "mixed_precision": "bf16"}, "machine": INTEL})
    # the cards' clocks change after the run started (another seed): the run keeps its length
    entries = json.loads(r.table.read_text())
    entries[METHOD]["metrics"]["seeds"]["1"]["wall_clock_s"] = 9000.0
    r.table.write_text(json.dumps(entries))
    before = {f: weights.sha256_file(r.folder / f) for f in ("model.safetensors", "masker.safetensors")}
    r.ran.clear()
    r.release.equal_compute_pass(r.item, r.plan, dry=False)
    assert r.ran == []                                        # trained and evaluated: only the card changes
    entry = json.loads(r.table.read_text())[METHOD]
    done = entry["metrics"]["equal_compute"][CONTROL]
    assert done["epochs"] == 26 and done["method_wall_clock_s"] == 7859.3 and done["knn_top1_k20"] == 86.1
    assert done["wall_clock_s"] == 7800.0 and done["command"] == f"python train/release.py {METHOD}"
    for f, sha in before.items():
        assert weights.sha256_file(r.folder / f) == sha == entry["files"][f]
    text = (r.folder / "README.md").read_text()
    assert (f"| `{CONTROL}` | 26 (8 x 131.0 / 39.8 min, bf16 on {INTEL}) | 86.10 | 84.00 | 89.90 | "
            f"130.0 min, bf16, {INTEL} |") in text
    assert f"    python train/release.py {METHOD}" in text
    from zoo.publish import split_metrics
    assert not any("equal_compute" in k for part in split_metrics(entry["metrics"]) for k in part)  # not its own

    from train.readme_table import cards, pairs_table
    rows = pairs_table(cards(r.table, r.folder.parent), [{"recipe": f"recipes/{METHOD}.yaml", "controls": [CONTROL]}])
    seeds = entry["metrics"]["seeds"]
    mean = {k: sum(s[k] for s in seeds.values()) / len(seeds) for k in ("knn_top1_k20", "knn_top1_k200", "linear_top1")}
    assert rows[3] == (f"| `{METHOD}` | `{CONTROL}` for the method's wall-clock (26 epochs) | {len(seeds)} / 1 | "
                       f"{mean['knn_top1_k20'] - 86.1:+.1f} | {mean['knn_top1_k200'] - 84.0:+.1f} | "
                       f"{mean['linear_top1'] - 89.9:+.1f} | {7859.3 / 7800.0:.2f}x |")

    r.release.equal_compute_pass(r.item, r.plan, dry=False)  # again: nothing to do, nothing rewritten
    assert r.ran == [] and json.loads(r.table.read_text())[METHOD] == entry


def test_equal_compute_needs_both_released(pair):
    entries = json.loads(pair.table.read_text())
    del entries[CONTROL]
    pair.table.write_text(json.dumps(entries))
    with pytest.raises(SystemExit, match=f"needs {CONTROL}.*both released first"):
        pair.release.equal_compute_pass(pair.item, pair.plan, dry=False)
    assert pair.ran == []
