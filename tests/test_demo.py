"""The main job, train/demo.py, end to end at a few steps: it trains, measures the trained backbone
beside the untrained one, raw pixels and every released scenes weight, publishes, loads back."""
import json

import pytest

import zoo
from train import demo

TINY = ["--knn-train", "64", "--knn-test", "32", "--mask-images", "8", "epochs=1", "limit_train=64",
        "batch_size=32", "num_workers=0", "log_every=1", "ckpt_every=0", "mask_grid_every=0"]


def test_demo_runs_measures_publishes_and_loads_back(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = demo.main(["--out", str(out), *TINY])
    r = summary["results"]
    for who in ("", "untrained/", "raw_pixels/"):
        assert 0 <= r[f"scenes/{who}knn_top1_k20"] <= 100 and 0 <= r[f"scenes/{who}linear_top1"] <= 100
    releases = zoo.list_pretrained("*scenes*")
    assert releases, "the repository releases scenes weights"
    for name in releases:                    # each released scenes weight measured in the same run
        assert 0 <= r[f"scenes/released/{name}/knn_top1_k20"] <= 100
        assert 0 <= r[f"scenes/released/{name}/linear_top1"] <= 100
    assert max(summary["load_max_abs_diff"].values()) <= 1e-5
    assert json.loads((out / "demo.json").read_text())["results"] == r
    printed = capsys.readouterr().out
    assert "trained - untrained" in printed and "linear probe top-1" in printed and all(f"released {n}" in printed for n in releases)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), *TINY])
    assert (tmp_path / "keep.txt").read_text() == "mine"
