"""Every entry of the repository's weight table (zoo/released.json) as a user meets it: the files in
weights/ hash to the table's SHA-256, and the backbone loads through zoo.create_model,
torch.hub.load(..., source="local") and vanilla timm `local-dir:` (a process that never imports
the zoo) with the same outputs; learned maskers load through zoo.create_masker; the README's
tables are what the cards say.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo import weights

REPO = Path(__file__).resolve().parents[1]
TABLE = json.loads((REPO / "zoo" / "released.json").read_text())
KEYS = list(TABLE)

pytestmark = pytest.mark.skipif(not KEYS, reason="no released weights in zoo/released.json")


def probe(entry: dict) -> torch.Tensor:
    size = entry["pretrained_cfg"]["input_size"]
    return torch.randn(2, *size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vanilla_outputs(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Every release's outputs on its probe, from vanilla timm `local-dir:` in a process without the zoo."""
    io = tmp_path_factory.mktemp("vanilla")
    save_file({k: probe(e) for k, e in TABLE.items()}, io / "inputs.safetensors")
    code = f"""
        import sys, torch, timm
        from safetensors.torch import load_file, save_file
        inputs = load_file({str(io / 'inputs.safetensors')!r})
        out = {{}}
        for key, x in inputs.items():
            model = timm.create_model("local-dir:" + {str(REPO / 'weights')!r} + "/" + key, pretrained=True).eval()
            with torch.no_grad():
                out[key] = model(x)
        assert "zoo" not in sys.modules, "vanilla timm imported the zoo"
        save_file({{k: v.contiguous() for k, v in out.items()}}, {str(io / 'outputs.safetensors')!r})
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=io, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return load_file(io / "outputs.safetensors")


@pytest.mark.parametrize("key", KEYS)
def test_files_hash_to_the_table(key):
    entry, folder = TABLE[key], REPO / "weights" / key
    config = json.loads((folder / "config.json").read_text())
    assert entry["files"]["model.safetensors"] == config["zoo"]["files"]["model.safetensors"]
    for name, sha in entry["files"].items():
        assert weights.sha256_file(folder / name) == sha, f"{folder / name} does not hash to the table's {sha}"
    assert config["zoo"]["metrics"] == entry["metrics"], "the table and the card disagree on the metrics"


@pytest.mark.parametrize("key", KEYS)
def test_loads_three_ways_with_equal_outputs(key, vanilla_outputs):
    entry = TABLE[key]
    x = probe(entry)
    model = zoo.create_model(key, pretrained=True).eval()
    hub = torch.hub.load(str(REPO), entry["name"], tag=entry["tag"], pretrained=True, source="local",
                         trust_repo=True).eval()
    with torch.no_grad():
        ours, theirs = model(x), hub(x)
    assert ours.shape == (2, model.num_features)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(ours, vanilla_outputs[key], rtol=1e-5, atol=1e-5)
    untrained = zoo.create_model(entry["name"], pretrained=False).eval()
    with torch.no_grad():
        assert not torch.allclose(untrained(x), ours), "pretrained=True gave untrained weights"


@pytest.mark.parametrize("key", KEYS)
def test_publishing_again_gives_the_released_bytes(key, tmp_path):
    """zoo.publish.republish, fed only the released folder (weights and config.json's zoo block),
    writes every file of weights/<key>/ byte for byte (card template, config layout, fp16 tensors)
    and the same table entry: a republish after a code change, or one that adds a lost run's
    results, leaves the hash chain README.md -> config.json -> table intact."""
    from zoo.publish import republish
    folder = REPO / "weights" / key
    shutil.copytree(folder, tmp_path / key)
    table = tmp_path / "released.json"
    table.write_text(json.dumps({key: TABLE[key]}))
    entry = republish(tmp_path / key, {}, table=table)
    for f in sorted(folder.iterdir()):
        assert (tmp_path / key / f.name).read_bytes() == f.read_bytes(), f"{f.name} of {key} differs"
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == sorted(p.name for p in folder.iterdir())
    assert json.loads(table.read_text())[key] == entry == TABLE[key]


@pytest.mark.parametrize("key", [k for k in KEYS if "masker.safetensors" in TABLE[k]["files"]])
def test_released_masker_loads_and_masks(key):
    entry = TABLE[key]
    masker = zoo.create_masker(key, pretrained=True)
    x = probe(entry)
    with torch.no_grad():
        m = masker(x)
    assert m.dim() == 4 and m.shape[0] == 2           # (B, K, h, w): pixels (ADIOS) or patches (AutoMAE)
    assert torch.isfinite(m.float()).all()
    if entry["name"].startswith("automae"):     # the generator's selection: mask_ratio of the patches
        ratio = entry["pretrainer"]["model_args"].get("mask_ratio", 0.75)
        assert m.float().mean().item() == pytest.approx(ratio, abs=1 / m[0].numel())
    if entry["name"].startswith("adios"):        # ADIOS: K soft masks partition every pixel
        torch.testing.assert_close(m.float().sum(1), torch.ones_like(m[:, 0].float()), atol=1e-3, rtol=0)


def test_readme_tables_match_the_cards():
    from train import readme_table
    assert readme_table.main(["--check"]) == 0, "README.md is stale: run python train/readme_table.py"


def test_weights_folder_stays_small():
    total = sum(f.stat().st_size for f in (REPO / "weights").rglob("*") if f.is_file())
    assert total < 250 * 2 ** 20, f"weights/ holds {total / 2 ** 20:.0f} MB (limit 250 MB)"


@pytest.mark.parametrize("key", [k for k in KEYS if "masker.safetensors" in TABLE[k]["files"]][:1])
def test_mask_picture_of_a_users_image(key, tmp_path):
    from PIL import Image
    from train import mask_picture
    image = tmp_path / "mine.png"
    Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy()).save(image)
    out = mask_picture.main([key, "--image", str(image), "--out", str(tmp_path / "m.png")])
    assert Image.open(out).size[0] > 32
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="cannot read image .*bad.jpg"):
        mask_picture.main([key, "--image", str(tmp_path / "bad.jpg"), "--out", str(tmp_path / "x.png")])


def test_reproduce_band_uses_the_seed_spread():
    from train.reproduce import band
    card = {"seeds": {"0": {"knn_top1_k20": 80.0}, "1": {"knn_top1_k20": 81.0}, "2": {"knn_top1_k20": 82.0}},
            "fashion_mnist/knn_top1_k20": 80.0, "fashion_mnist/linear_top1": 70.0}
    low, high, _ = band(card, "fashion_mnist", "knn_top1_k20", 1.0)
    half = 4.303 * 1.0 * (4 / 3) ** 0.5                                     # t(0.975, 2) · sd · sqrt(1 + 1/3)
    assert (low, high) == pytest.approx((81.0 - half, 81.0 + half), abs=1e-9)
    low, high, _ = band(card, "fashion_mnist", "linear_top1", 0.5)          # no seeds: the card's value
    assert (low, high) == (69.5, 70.5)


def test_t_quantiles_against_the_t_distribution():
    """train.reproduce.t975 against the Student t CDF, integrated here from its density: the
    interval it gives holds 95 % of the mass, for the tabled and the expanded degrees of freedom."""
    import math
    from train.reproduce import t975

    def cdf(t, df, steps=20000):                    # P(T <= t) = 1/2 + integral_0^t of the density
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        h = t / steps                               # Simpson's rule on [0, t]
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    for df in (*range(1, 13), 20, 60):
        assert cdf(t975(df), df) == pytest.approx(0.975, abs=3e-5), df   # a table typo in the 3rd decimal moves it ~5e-4


def test_release_plan_is_checked(tmp_path):
    from train.release import load_plan
    plan = load_plan()
    assert {Path(i["recipe"]).name.removesuffix(".yaml") for i in plan} == {i["key"] for i in plan}
    for item in plan:
        assert (REPO / item["recipe"]).exists(), item["recipe"]
        for control in item.get("controls") or []:
            assert control in {i["key"] for i in plan}, f"{item['key']}: unknown control {control}"
    bad = tmp_path / "plan.yaml"
    bad.write_text("releases:\n  - recipe: recipes/simclr_resnet18.fmnist.yaml\n    seed: [0]\n")
    with pytest.raises(SystemExit, match="unknown keys \\['seed'\\]"):
        load_plan(bad)
    bad.write_text("releases:\n  - recipe: recipes/simclr_resnet18.fmnist.yaml\n    low_label: [1]\n")
    with pytest.raises(SystemExit, match="low_label takes label fractions in \\(0, 1\\)"):
        load_plan(bad)


def test_release_runs_the_low_label_protocol_on_the_released_file(tmp_path, capsys, monkeypatch):
    import train.release as release
    plan = tmp_path / "plan.yaml"
    plan.write_text("releases:\n  - recipe: recipes/mae_vit_tiny_patch4_32.fmnist.yaml\n"
                    "    eval: [--bf16]\n    low_label: [0.01, 0.1]\n")
    monkeypatch.setattr(release, "RUNS", tmp_path / "runs")
    monkeypatch.setenv(weights.TABLE_ENV, str(tmp_path / "released.json"))    # not released yet: trained,
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "weights"))        # whatever the repository holds
    release.first_pass(release.load_plan(plan)[0], dry=True)
    printed = [line for line in capsys.readouterr().out.splitlines() if "finetune.py" in line]
    run = tmp_path / "runs" / "mae_vit_tiny_patch4_32.fmnist" / "seed0"
    assert [line.split("train/", 1)[1] for line in printed] == [
        f"finetune.py mae_vit_tiny_patch4_32.fmnist --labels {f} --baselines --bf16 --out {run} "
        f"--baselines-cache {tmp_path / 'runs' / 'baselines'}" for f in ("0.01", "0.1")]
    assert release.low_label_suffix(0.01) == "_1pct" and release.low_label_suffix(0.005) == "_0p5pct"


def test_republish_refuses_to_change_the_weights(tmp_path):
    """A republish that would re-save the weights differently (here: the zoo block claims bfloat16
    for a float16 file) names the file and both hashes, and leaves the folder as it was."""
    from zoo.publish import republish
    key = "simclr_resnet18.fmnist"
    folder = tmp_path / key
    shutil.copytree(REPO / "weights" / key, folder)
    config = json.loads((folder / "config.json").read_text())
    config["zoo"]["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    sha = TABLE[key]["files"]["model.safetensors"][:12]
    with pytest.raises(RuntimeError, match=rf"model.safetensors.*SHA-256 \(\['{sha}'\] -> \['[0-9a-f]{{12}}'\]\)"):
        republish(folder, {"seeds": {}}, table=tmp_path / "none.json")
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]          # no temp folder left behind


@pytest.fixture
def lost_run(tmp_path, monkeypatch):
    """simclr_resnet18.fmnist released (a copy of its folder and table entry) but its run directory
    gone, as on a new machine; seed 1 trained and evaluated here; every command recorded, none run."""
    import train.release as release
    key = "simclr_resnet18.fmnist"
    wdir, table = tmp_path / "weights", tmp_path / "released.json"
    shutil.copytree(REPO / "weights" / key, wdir / key)
    table.write_text(json.dumps({key: TABLE[key]}))
    monkeypatch.setenv(weights.TABLE_ENV, str(table))
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(wdir))
    monkeypatch.setattr(release, "RUNS", tmp_path / "runs")
    ran = []
    monkeypatch.setattr(release, "run", lambda cmd, dry: ran.append(cmd))
    seed1 = tmp_path / "runs" / key / "seed1"
    seed1.mkdir(parents=True)
    (seed1 / "pretrainer.safetensors").write_bytes(b"")
    (seed1 / "metrics.json").write_text(json.dumps({
        "fashion_mnist/knn_top1_k20": 85.0, "fashion_mnist/knn_top1_k200": 83.0, "fashion_mnist/linear_top1": 89.0,
        "pretrain": {"wall_clock_s": 2640.0, "mixed_precision": "bf16"}, "machine": "Intel host"}))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"releases:\n  - recipe: recipes/{key}.yaml\n    seeds: [0, 1]\n    low_label: [0.01, 0.1]\n")
    return SimpleNamespace(release=release, key=key, folder=wdir / key, table=table, ran=ran,
                           item=release.load_plan(plan)[0])


def test_release_whose_run_is_gone_is_kept_and_gains_its_seeds(lost_run):
    """A release in the table, trained from the plan's recipe, whose run directory is not here: the
    batch neither retrains nor re-evaluates it, and the extra seeds reach its card from the published
    folder alone, the weights bit-exact and the table's hash chain intact."""
    r, before = lost_run, {f.name: f.read_bytes() for f in lost_run.folder.iterdir()}
    r.release.first_pass(r.item, dry=False)
    assert r.ran == []                                      # no pretrain, publish, evaluate or fine-tune
    r.release.seed_pass(r.item, dry=False)
    assert r.ran == []                                      # seed 1 was done: only the card changes
    assert (r.folder / "model.safetensors").read_bytes() == before["model.safetensors"]
    assert (r.folder / "README.md").read_bytes() != before["README.md"]
    card = (r.folder / "README.md").read_text()
    m = {k: v for k, v in TABLE[r.key]["metrics"].items() if k != "seeds"}
    assert f"| 0 | {m['fashion_mnist/knn_top1_k20']:.2f} |" in card
    assert "| 1 | 85.00 | 83.00 | 89.00 | 44.0 min, bf16, Intel host |" in card
    assert "106.5 min, fp32, AMD EPYC, 2 cores, no GPU |" in card          # seed 0's own run, from the card
    entry = json.loads(r.table.read_text())[r.key]
    assert entry["metrics"]["seeds"]["1"]["knn_top1_k20"] == 85.0
    for f, sha in entry["files"].items():
        assert weights.sha256_file(r.folder / f) == sha, f
    zoo_block = json.loads((r.folder / "config.json").read_text())["zoo"]
    assert {k: v for k, v in zoo_block["metrics"].items() if k != "seeds"} == m
    r.release.seed_pass(r.item, dry=False)                  # again: nothing left to do, nothing rewritten
    assert json.loads(r.table.read_text())[r.key] == entry


def test_extra_seed_whose_run_is_gone_is_kept_from_the_card(lost_run):
    """Seed 1 reached the card in an earlier session; on a new machine (its run directory gone) a
    plan with seeds [0, 1, 2] trains only seed 2, and seed 1's row stays as the card had it."""
    r = lost_run
    r.release.seed_pass(r.item, dry=False)                  # seed 1's row reaches the card
    row = json.loads(r.table.read_text())[r.key]["metrics"]["seeds"]["1"]
    shutil.rmtree(r.release.RUNS / r.key / "seed1")
    r.item["seeds"] = [0, 1, 2]
    r.release.seed_pass(r.item, dry=False)
    trained = [c for c in r.ran if "train/pretrain.py" in c]
    assert [c[-1] for c in trained] == ["seed=2"]
    assert all("seed1" not in " ".join(c) for c in r.ran)
    seeds = json.loads(r.table.read_text())[r.key]["metrics"]["seeds"]
    assert seeds["1"] == row and set(seeds) == {"0", "1", "2"}


def test_seed_resumed_from_a_checkpoint_without_a_clock_gives_no_time(lost_run):
    """A seed whose run resumed from a checkpoint older than the wall-clock record knows only its
    last part's time (metrics.json: wall_clock_from_step): its row gives no time rather than that."""
    r = lost_run
    path = r.release.RUNS / r.key / "seed1" / "metrics.json"
    m = json.loads(path.read_text())
    m["pretrain"]["wall_clock_from_step"] = 1600
    path.write_text(json.dumps(m))
    r.release.seed_pass(r.item, dry=False)
    row = json.loads(r.table.read_text())[r.key]["metrics"]["seeds"]["1"]
    assert row["wall_clock_s"] is None and row["knn_top1_k20"] == 85.0
    assert "| 1 | 85.00 | 83.00 | 89.00 | -, bf16, Intel host |" in (r.folder / "README.md").read_text()


def test_extra_seed_with_an_incomplete_row_is_trained_again(lost_run):
    """A card row missing a metric (a seed cut off before its evaluation) is not a result: retrained."""
    r = lost_run
    r.release.seed_pass(r.item, dry=False)
    shutil.rmtree(r.release.RUNS / r.key / "seed1")
    entry = json.loads(r.table.read_text())
    entry[r.key]["metrics"]["seeds"]["1"]["linear_top1"] = None
    r.table.write_text(json.dumps(entry))
    r.release.seed_pass(r.item, dry=False)
    assert [c[-1] for c in r.ran if "train/pretrain.py" in c] == ["seed=1"]


def test_release_whose_run_is_gone_gets_its_missing_fine_tune(lost_run, monkeypatch):
    """A kept release lacking a planned low-label fraction: only that fine-tune runs, on the
    released file, and its results (with the baselines and the command) reach the card."""
    r = lost_run
    r.item["low_label"] = [0.01, 0.1, 0.05]

    def fake_finetune(cmd, dry):             # what train/finetune.py --out DIR writes
        r.ran.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        r.release.write_metrics(out, {"fashion_mnist/finetune_top1_5pct": 84.0,
                                      "fashion_mnist/untrained/finetune_top1_5pct": 81.0,
                                      "fashion_mnist/raw_pixels/logreg_top1_5pct": 77.0})
    monkeypatch.setattr(r.release, "run", fake_finetune)
    r.release.first_pass(r.item, dry=False)
    assert [c[1:5] for c in r.ran] == [["train/finetune.py", r.key, "--labels", "0.05"]]
    card = (r.folder / "README.md").read_text()
    assert "| fine-tune top-1, 5 % labels, fashion_mnist | 84 | 81 | 77 |" in card
    assert f"    python train/finetune.py {r.key} --labels 0.05 --baselines" in card
    assert f"    python train/finetune.py {r.key} --labels 0.01 --baselines" in card      # the old ones kept
    entry = json.loads(r.table.read_text())[r.key]
    assert entry["metrics"]["fashion_mnist/finetune_top1_5pct"] == 84.0
    assert entry["metrics"]["fashion_mnist/knn_top1_k20"] == TABLE[r.key]["metrics"]["fashion_mnist/knn_top1_k20"]
    r.ran.clear()
    r.release.first_pass(r.item, dry=False)                 # again: done, nothing run or rewritten
    assert r.ran == [] and json.loads(r.table.read_text())[r.key] == entry


def test_release_whose_recipe_changed_is_trained_again(lost_run, tmp_path):
    """The table's release was trained from another recipe (here: one epoch fewer): not kept."""
    r = lost_run
    recipe = tmp_path / f"{r.key}.yaml"
    recipe.write_text((REPO / "recipes" / f"{r.key}.yaml").read_text().replace("epochs: 8", "epochs: 7"))
    item = {**r.item, "recipe": str(recipe)}
    assert r.release.released(r.item) is not None and r.release.released(item) is None
    r.release.first_pass(item, dry=True)
    assert "train/pretrain.py" in r.ran[0] and r.ran[0][-1] == "seed=0"


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in KEYS if TABLE[k]["recipe"].get("data") == "scenes"][:1])
def test_card_command_reproduces_the_card(key, tmp_path):
    """The card's own re-measuring command, run on the released file, gives the card's numbers (~40 s)."""
    import shlex
    card = json.loads((REPO / "weights" / key / "config.json").read_text())["zoo"]
    cmd = shlex.split(card["commands"]["knn"])
    r = subprocess.run([sys.executable, *cmd[1:], "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((tmp_path / "metrics.json").read_text())
    for k, v in card["metrics"].items():
        if k in got and isinstance(v, float):
            assert got[k] == pytest.approx(v, abs=1e-6), k


def test_a_card_below_baselines_says_so_in_its_first_line():
    import json
    from zoo.publish import below_baselines
    root = Path(__file__).resolve().parents[1]
    table = json.loads((root / "zoo" / "released.json").read_text())
    assert below_baselines({"d/knn_top1_k20": 80.0, "d/raw_pixels/knn_top1_k20": 85.5,
                             "d/linear_top1": 83.0, "d/raw_pixels/linear_top1": 82.3}, "d") == \
        ["kNN k=20 80.0 <= raw pixels 85.5"]
    for key, entry in table.items():
        misses = below_baselines(entry["metrics"], entry["recipe"]["data"])
        body = [line for line in (root / "weights" / key / "README.md").read_text().split("---", 2)[2].splitlines() if line]
        assert body[0] == f"# {key}"
        assert body[1].startswith("**Does not beat the trivial baseline") == bool(misses), key
        assert all(m in body[1] for m in misses), key


def test_pairs_table_compares_only_pairs_trained_with_the_same_settings():
    """A method and its control may differ in the method (model, args, phases), never in the
    setting: a pair from two release rounds (1 epoch at 32 px against 8 at 48) is named, not diffed."""
    from train.readme_table import pairs_table, setting_differences

    def card(model, knn, **recipe):
        base = {"model": model, "data": "fashion_mnist", "epochs": 8, "image_size": 48, "seed": 0,
                "run_dir": f"runs/{model}", "num_workers": 1}
        return {"recipe": {**base, **recipe}, "metrics": {
            "fashion_mnist/knn_top1_k20": knn, "fashion_mnist/knn_top1_k200": knn - 2,
            "fashion_mnist/linear_top1": knn + 3, "pretrain": {"wall_clock_s": 60.0}}}

    control = card("simclr_resnet18", 80.0)
    legacy = card("adios_resnet18", 81.5, objective="simclr", masker_lr=0.1, run_dir="elsewhere")
    assert setting_differences(legacy, control) == {}      # flat masker_lr is a phase key; run_dir bookkeeping
    plan = [{"recipe": "recipes/adios_resnet18.simclr_fmnist.yaml", "controls": ["simclr_resnet18.fmnist"]}]
    rows = pairs_table({"adios_resnet18.simclr_fmnist": legacy, "simclr_resnet18.fmnist": control}, plan)
    assert rows[2] == ("| `adios_resnet18.simclr_fmnist` | `simclr_resnet18.fmnist` | 1 | +1.5 | +1.5 | +1.5 "
                       "| 1.00x |")
    old = card("adios_resnet18", 75.0, objective="simclr", epochs=1, image_size=32)
    assert setting_differences(old, control) == {"epochs": (1, 8), "image_size": (32, 48)}
    rows = pairs_table({"adios_resnet18.simclr_fmnist": old, "simclr_resnet18.fmnist": control}, plan)
    assert "not compared: trained with other settings (epochs 1 / 8, image_size 32 / 48)" in rows[2]
    assert "-5.0" not in rows[2] and rows[2].count("|") == 8
    newer = card("simclr_resnet18", 80.0, augment_on="loader", grad_clip=0.0)   # fields older cards predate,
    assert setting_differences(legacy, newer) == {}                              # at their defaults
    short = card("adios_resnet18", 70.0, objective="simclr", max_steps=100)      # a cut schedule counts
    assert setting_differences(short, control) == {"max_steps": (100, 0)}


def test_pairs_table_divides_wall_clocks_only_from_one_host_and_precision():
    """The pretraining-time ratio is a cost only when both runs had the same host and precision;
    else the cell names both settings instead of a number."""
    from train.readme_table import time_ratio

    def card(wall, machine=None, precision=None):
        pre = {"wall_clock_s": wall, **({"mixed_precision": precision} if precision else {})}
        return {"metrics": {"pretrain": pre}, **({"facts": {"machine": machine}} if machine else {})}

    intel, amd = "Intel(R) Xeon(R) Processor, 2 cores, no GPU", "AMD EPYC, 2 cores, no GPU"
    assert time_ratio(card(7895.2, intel, "bf16"), card(6389.5, amd, "no")) == \
        "not comparable: Intel Xeon bf16 / AMD EPYC fp32"
    assert time_ratio(card(7895.2, intel, "bf16"), card(6389.5, intel, "no")) == \
        "not comparable: Intel Xeon bf16 / Intel Xeon fp32"
    assert time_ratio(card(7920.0, intel, "bf16"), card(2640.0, intel, "bf16")) == "3.00x"
    assert time_ratio(card(120.0, intel, "bf16"), card(60.0, intel.replace("2 cores", "8 cores"), "bf16")) == \
        f"not comparable: {intel} bf16 / {intel.replace('2 cores', '8 cores')} bf16"
    assert time_ratio(card(120.0), card(60.0)) == "2.00x"          # older cards: no record, as before
    assert time_ratio(card(120.0), card(None)) == "-"
    partial = card(7920.0, intel, "bf16")                  # resumed from a checkpoint without a clock
    partial["metrics"]["pretrain"]["wall_clock_from_step"] = 1600
    assert time_ratio(partial, card(2640.0, intel, "bf16")) == "-"
    from train.readme_table import minutes
    assert minutes(partial) is None and minutes(card(120.0)) == 2.0


def test_sigterm_to_the_release_batch_stops_its_step(tmp_path):
    """`kill` of train/release.py stops the training it started (no orphan holding the cores)."""
    import signal
    import time
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    batch = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                              f"from train.release import run; run([sys.executable, '-c', {child!r}], False)"],
                             stderr=subprocess.PIPE, text=True)
    step_pid = None
    try:
        deadline = time.time() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline and batch.poll() is None, "the step never started"
            time.sleep(0.1)
        step_pid = int(pid_file.read_text())
        batch.send_signal(signal.SIGTERM)
        _, err = batch.communicate(timeout=30)
        assert batch.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err and "resume" in err
        with pytest.raises(ProcessLookupError):         # the step is gone too, not orphaned
            for _ in range(50):
                os.kill(step_pid, 0)
                time.sleep(0.1)
    finally:                                            # a failed assertion leaves nothing running
        for pid in (batch.pid, step_pid):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        batch.wait()


def test_a_failing_release_step_stops_the_batch():
    from train.release import run
    with pytest.raises(subprocess.CalledProcessError):
        run([sys.executable, "-c", "raise SystemExit(3)"], False)


def test_a_dry_run_of_the_batch_only_checks_the_readme(tmp_path, monkeypatch, capsys):
    """`release.py --dry-run` prints its commands and compares README's table; it writes nothing."""
    import train.readme_table as readme_table
    import train.release as release
    plan = tmp_path / "plan.yaml"
    plan.write_text("releases:\n  - recipe: recipes/simclr_resnet18.fmnist.yaml\n"
                    "  - recipe: recipes/adios_resnet18.byol_fmnist.yaml\n")     # keeps snapshots
    monkeypatch.setattr(release, "RUNS", tmp_path / "runs")
    monkeypatch.setenv(weights.TABLE_ENV, str(tmp_path / "released.json"))
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "weights"))
    called = []
    monkeypatch.setattr(readme_table, "main", lambda argv=None: called.append(argv) or 0)
    release.main(["--dry-run", "--plan", str(plan)])
    assert called == [["--check"]]
    out = capsys.readouterr().out
    curves = [line for line in out.splitlines() if "train/curve.py" in line]
    assert "train/pretrain.py" in out                   # the curve after the evaluation, of the recipe with snapshots
    assert curves == [f"$ {sys.executable} train/curve.py {tmp_path / 'runs' / 'adios_resnet18.byol_fmnist'}/seed0"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "weights").exists()
