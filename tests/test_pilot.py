"""train/pilot.py: its studies, the order and re-entry of its campaign, its report, and that its scenes
probes are the release protocol's (train/knn.py with the plan's limits)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from train import pilot

ROOT = Path(__file__).resolve().parents[1]


def test_every_configuration_names_its_image_size():
    # the recipes' own size moves with the releases (Fashion-MNIST's went from 32 to 48 px): a
    # configuration that relied on it would silently change what its name says
    for study in pilot.STUDIES.values():
        for config in study.configs:
            assert f"{pilot.image_size(study, config)}px" in config


def test_scenes_study_evaluates_like_the_release_plan():
    plan = yaml.safe_load((ROOT / "weights" / "releases.yaml").read_text())
    evals = [item["eval"] for item in plan["releases"] if "scenes" in item["recipe"]]
    assert evals
    study = pilot.STUDIES["scenes"]
    for args in evals:
        assert int(args[args.index("--limit-train") + 1]) == study.eval_length["train"]
        assert int(args[args.index("--limit-test") + 1]) == study.eval_length["test"]
    recipe = yaml.safe_load((ROOT / study.recipe).read_text())
    assert recipe["data"] == "scenes" and recipe["limit_train"] == study.train_images


def test_scenes_probe_matches_the_knn_script():
    from train import knn
    from train.eval_common import raw_pixels
    study = dataclasses.replace(pilot.STUDIES["scenes"], eval_length={"train": 300, "test": 100})
    ours = pilot.probe(study, raw_pixels(), 32)
    theirs = knn.main(["raw-pixels", "--data", "scenes", "--image-size", "32", "--limit-train", "300",
                       "--limit-test", "100", "--bf16"])
    for k in (20, 200):
        assert ours[f"knn_top1_k{k}"] == pytest.approx(theirs[f"scenes/raw_pixels/knn_top1_k{k}"], abs=0.006)
    assert 0 <= ours["linear_top1"] <= 100


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The scenes study writing under tmp_path, with training and probing replaced by a record."""
    s = dataclasses.replace(pilot.STUDIES["scenes"], out=tmp_path / "out", runs=tmp_path / "runs", lengths=(4, 8))
    monkeypatch.setitem(pilot.STUDIES, "scenes", s)
    calls = []
    monkeypatch.setattr(pilot, "pretrain", lambda st, config, epochs, tf: calls.append((config, epochs)))

    def evaluate(st, config, epochs):
        return {"config": config, "epochs": epochs, "steps": epochs * 78, "knn_top1_k20": 10.0 + epochs,
                "knn_top1_k200": 9.0 + epochs, "linear_top1": 20.0 + epochs, "wall_clock_s": 60.0 * epochs,
                "images_per_s_median": 300.0, "recipe": st.recipe, "overrides": st.configs[config][0]}
    monkeypatch.setattr(pilot, "evaluate", evaluate)
    sizes = []
    monkeypatch.setattr(pilot, "probe", lambda st, backbone, size: sizes.append(size) or
                        {"knn_top1_k20": 30.0, "knn_top1_k200": 26.0, "linear_top1": 28.0})
    return s, calls, sizes


def test_campaign_runs_short_lengths_of_every_config_first_and_reenters(study, tmp_path):
    s, calls, sizes = study
    pilot.main(["--data", "scenes", "--threads-file", str(tmp_path / "none")])
    assert calls == [("r18_32px", 4), ("r18_48px", 4), ("r18_32px", 8), ("r18_48px", 8)]
    assert sizes == [32, 48]                              # raw pixels at each configuration's size
    results = json.loads((s.out / "pilot.json").read_text())
    assert [(r["config"], r["epochs"]) for r in results["runs"]] == calls
    assert set(results["baselines"]) == {"32", "48"}
    calls.clear(), sizes.clear()
    pilot.main(["--data", "scenes", "--lengths", "4", "8", "16", "--only", "r18_48px",
                "--threads-file", str(tmp_path / "none")])
    assert calls == [("r18_48px", 16)] and sizes == []    # done rows and baselines are kept
    page = (s.out / "README.md").read_text()
    assert "python train/pilot.py --data scenes" in page
    assert "Raw pixels (32 px, same protocols): kNN k=20 30.0" in page and "Raw pixels (48 px" in page
    assert "| r18_48px | 16 | 1248 | 26.0 | 25.0 | 36.0 |" in page
    assert "first 10000 train images" in page


def test_unknown_configuration_is_named_with_the_known_ones(study, capsys):
    with pytest.raises(SystemExit):
        pilot.main(["--data", "scenes", "--only", "r18_os16_32px"])
    err = capsys.readouterr().err
    assert "r18_os16_32px" in err and "known: ['r18_32px', 'r18_48px']" in err


def test_old_results_keep_their_raw_pixel_baseline(tmp_path):
    s = dataclasses.replace(pilot.STUDIES["fashion_mnist"], out=tmp_path)
    (tmp_path / "pilot.json").write_text(json.dumps({"runs": [], "baselines": {"raw_pixels": {"knn_top1_k20": 85.52}}}))
    assert pilot.load_results(s)["baselines"] == {"32": {"knn_top1_k20": 85.52}}
