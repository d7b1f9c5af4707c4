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
    assert budget["setting"] == [INTEL, "bf16"]
    # the slow seed alone, against the control's slower Intel seed: 8 x 9400 / 2502 = 30.06
    assert equal_compute_epochs(card({"2": METHOD_SEEDS["2"]}), card({"2": CONTROL_SEEDS["2"]}), 8)["epochs"] == 30
    with pytest.raises(ValueError, match=r"share no host and precision.*Intel Xeon bf16.*AMD EPYC 7B13 fp32"):
        equal_compute_epochs(card(METHOD_SEEDS), card({"0": CONTROL_SEEDS["0"]}), 8)


def test_time_ratio_uses_the_seed_tables():
    """A pair whose released seeds ran on two hosts still has a cost ratio where other seeds share one."""
    from train.readme_table import time_ratio
    assert time_ratio(card(METHOD_SEEDS), card(CONTROL_SEEDS)) == f"{7859.3 / 2388.0:.2f}x"
    assert time_ratio(card(METHOD_SEEDS), card({"0": CONTROL_SEEDS["0"]})) == \
        "not comparable: Intel Xeon bf16 / AMD EPYC 7B13 fp32"
    # seed rows without clocks: the released run's own clock still counts
    clockless = card(METHOD_SEEDS)
    clockless["metrics"]["seeds"] = {k: {**v, "wall_clock_s": None} for k, v in METHOD_SEEDS.items()}
    assert time_ratio(clockless, card(CONTROL_SEEDS)) == f"{7895.2 / 2388.0:.2f}x"


def test_unrecorded_settings_compare_only_with_each_other():
    """A run without its host and precision is not matched against a recorded one, either way round."""
    from train.costs import cost
    unrecorded = {"metrics": {"pretrain": {"wall_clock_s": 50.0}}}
    assert cost(card(METHOD_SEEDS), unrecorded) is None and cost(unrecorded, card(METHOD_SEEDS)) is None
    assert cost(unrecorded, {"metrics": {"pretrain": {"wall_clock_s": 25.0}}}) == (50.0, 25.0, None)
    mixed = card({**METHOD_SEEDS, "3": row(3000.0, machine=None)})       # a row without its host: left out
    assert cost(mixed, card(CONTROL_SEEDS)) == (7859.3, 2388.0, (INTEL, "bf16"))


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """The main pair released before its equal-compute run (copies of both folders; the table's seed
    rows replaced by the ones above, no equal-compute result), their run directories gone; every
    command recorded, none run."""
    import train.release as release
    wdir, table = tmp_path / "weights", tmp_path / "released.json"
    entries = {}
    for key, seeds in ((METHOD, METHOD_SEEDS), (CONTROL, CONTROL_SEEDS)):
        shutil.copytree(REPO / "weights" / key, wdir / key)
        entries[key] = json.loads(json.dumps(TABLE[key]))
        entries[key]["metrics"]["seeds"] = seeds
        entries[key]["metrics"].pop("equal_compute", None)
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
    assert "equal_compute" not in json.loads(r.table.read_text())[METHOD]["metrics"]   # no result yet

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
    assert done["budget"]["epochs"] == 26 and done["budget"]["method_wall_clock_s"] == 7859.3
    assert done["knn_top1_k20"] == 86.1 and done["wall_clock_s"] == 7800.0
    assert done["commands"] == [f"python train/pretrain.py --recipe recipes/{CONTROL}.yaml run_dir=RUN seed=0 "
                                "epochs=26 warmup_epochs=2.6", "python train/evaluate.py RUN"]
    for f, sha in before.items():
        assert weights.sha256_file(r.folder / f) == sha == entry["files"][f]
    text = (r.folder / "README.md").read_text()
    assert (f"| `{CONTROL}` | 26 (8 x 131.0 / 39.8 min = 26.3; bf16 on {INTEL}) | 86.10 | 84.00 | 89.90 | "
            f"130.0 min, bf16, {INTEL} |") in text
    assert f"    python train/pretrain.py --recipe recipes/{CONTROL}.yaml run_dir=RUN seed=0 epochs=26" in text
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


def test_equal_compute_waits_for_the_control_and_the_batch_goes_on(pair, capsys):
    entries = json.loads(pair.table.read_text())
    del entries[CONTROL]
    pair.table.write_text(json.dumps(entries))
    pair.release.equal_compute_pass(pair.item, pair.plan, dry=False)     # no SystemExit: later releases run
    assert pair.ran == [] and f"the run of {CONTROL} at its wall-clock waits" in capsys.readouterr().out


def test_a_resumed_run_keeps_its_length_and_a_run_not_started_is_sized_again(pair):
    r = pair
    r.release.equal_compute_pass(r.item, r.plan, dry=False)           # sized: 26 epochs, nothing trained
    entries = json.loads(r.table.read_text())
    entries[METHOD]["metrics"]["seeds"]["1"]["wall_clock_s"] = 9000.0  # now 7895.2 is the fastest: 26.4
    entries[METHOD]["metrics"]["seeds"]["0"]["wall_clock_s"] = 9600.0  # and now 9000: 8 x 9000 / 2388 = 30.2
    r.table.write_text(json.dumps(entries))
    r.ran.clear()
    r.release.equal_compute_pass(r.item, r.plan, dry=False)           # killed before its first checkpoint
    assert "epochs=30 warmup_epochs=3.0" in " ".join(next(c for c in r.ran if "train/pretrain.py" in c))
    (r.run_dir / "state").mkdir()                                      # it trained: its length is fixed
    entries[METHOD]["metrics"]["seeds"]["1"]["wall_clock_s"] = 7859.3
    r.table.write_text(json.dumps(entries))
    r.ran.clear()
    r.release.equal_compute_pass(r.item, r.plan, dry=False)
    cmd = " ".join(next(c for c in r.ran if "train/pretrain.py" in c))
    assert cmd.endswith("seed=0 epochs=30 warmup_epochs=3.0 resume=true")


def test_a_run_for_an_earlier_release_of_the_method_is_not_attached(pair, capsys):
    r = pair
    r.release.equal_compute_pass(r.item, r.plan, dry=False)
    (r.run_dir / "pretrainer.safetensors").write_bytes(b"")
    entries = json.loads(r.table.read_text())
    entries[METHOD]["files"]["model.safetensors"] = "0" * 64          # the method released again since
    r.table.write_text(json.dumps(entries))
    r.ran.clear()
    r.release.equal_compute_pass(r.item, r.plan, dry=False)
    assert r.ran == [] and "an earlier release of" in capsys.readouterr().out
    assert json.loads(r.table.read_text()) == entries


def test_waits_for_releases_of_the_plans_recipes_and_a_dry_run_writes_nothing(pair, capsys):
    r = pair
    entries = json.loads(r.table.read_text())
    entries[CONTROL]["recipe"]["epochs"] = 1                          # a card of an older round
    r.table.write_text(json.dumps(entries))
    r.release.equal_compute_pass(r.item, r.plan, dry=False)
    assert r.ran == [] and "waits until both are released" in capsys.readouterr().out
    entries[CONTROL]["recipe"]["epochs"] = 8
    r.table.write_text(json.dumps(entries))
    r.release.equal_compute_pass(r.item, r.plan, dry=True)
    assert "26 epochs" in capsys.readouterr().out and not r.run_dir.exists()
    assert json.loads(r.table.read_text()) == entries


def test_a_control_on_another_host_gives_no_time_ratio():
    from train.readme_table import equal_compute_row
    run = {"knn_top1_k20": 86.0, "knn_top1_k200": 84.0, "linear_top1": 90.0, "wall_clock_s": 3000.0,
           "mixed_precision": "no", "machine": AMD,
           "budget": {"epochs": 26, "method_wall_clock_s": 7859.3, "setting": [INTEL, "bf16"]}}
    assert equal_compute_row(METHOD, CONTROL, card(METHOD_SEEDS), run).endswith(
        "| not comparable: Intel Xeon bf16 / AMD EPYC 7B13 fp32 |")
    run.update(mixed_precision="bf16", machine=INTEL)
    assert equal_compute_row(METHOD, CONTROL, card(METHOD_SEEDS), run) == (
        f"| `{METHOD}` | `{CONTROL}` for the method's wall-clock (26 epochs) | 3 / 1 | -1.2 | -1.2 | -1.2 | 2.62x |")


@pytest.mark.parametrize("entry, why", [
    ("equal_compute: simclr_resnet18.fmnist", "a string, not a list"),
    ("equal_compute: [byol_resnet18.fmnist]", "not one of its controls"),
])
def test_plan_checks_equal_compute(tmp_path, entry, why):
    from train.release import load_plan
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""releases:
  - recipe: recipes/simclr_resnet18.fmnist.yaml
  - recipe: recipes/adios_resnet18.simclr_fmnist.yaml
    controls: [simclr_resnet18.fmnist]
    {entry}
""")
    with pytest.raises(SystemExit, match="equal_compute takes a list of its `controls` that the plan releases before"):
        load_plan(plan)
    ok = plan.read_text().replace(entry, "equal_compute: [simclr_resnet18.fmnist]")
    plan.write_text(ok)
    assert load_plan(plan)[1]["equal_compute"] == ["simclr_resnet18.fmnist"]
    first = "  - recipe: recipes/simclr_resnet18.fmnist.yaml\n"
    plan.write_text(ok.replace(first, "", 1) + first)                  # the control after its method
    with pytest.raises(SystemExit, match="releases before"):
        load_plan(plan)
