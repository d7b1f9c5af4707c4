"""The main job, train/demo.py, end to end at a few steps: it trains, measures the trained backbone
beside the untrained one, raw pixels and every released scenes weight, publishes, loads back."""
import json

import numpy as np
import pytest

import zoo
from test_data import _write_idx
from train import demo
from zoo import weights

TINY = ["--knn-train", "64", "--knn-test", "32", "--mask-images", "8", "--fmnist-train", "64", "--fmnist-test", "32",
        "epochs=1", "limit_train=64", "batch_size=32", "num_workers=0", "log_every=1", "ckpt_every=0", "mask_grid_every=0"]


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
    assert 0 <= r["scenes/mask_cover"] <= 1 and 0 <= r["scenes/mask_cover_random"] <= 1
    assert json.loads((out / "demo.json").read_text())["results"] == r
    printed = capsys.readouterr().out
    assert "trained - untrained" in printed and "linear probe top-1" in printed and "mask cover" in printed
    assert all(f"released {n}" in printed for n in releases)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), *TINY])
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_demo_measures_the_released_weights_that_beat_the_baselines(tmp_path):
    """Every released Fashion-MNIST weight whose card is above raw pixels (kNN k=20, linear) is
    loaded and measured in the demo's run beside its architecture untrained and raw pixels; a card
    flagged below a trivial baseline is not; without the data, one row says how to get it."""
    table = weights.load_table()
    keys = demo.released_beyond_baselines()
    for key, entry in table.items():
        m, card = entry["metrics"], (weights.weights_root() / key / "README.md").read_text()
        if key in keys:
            assert m["fashion_mnist/knn_top1_k20"] > m["fashion_mnist/raw_pixels/knn_top1_k20"]
            assert m["fashion_mnist/linear_top1"] > m["fashion_mnist/raw_pixels/linear_top1"]
            assert "below a trivial baseline" not in card.lower()
        elif entry["recipe"].get("data") == "fashion_mnist":
            first_line = card.split("\n# ", 1)[1].split("\n\n")[1]
            assert first_line.startswith("**Does not beat the trivial baseline"), key
    rng = np.random.default_rng(0)
    labels = (np.arange(60) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    results, rows = demo.fmnist_rows(40, 20, root=tmp_path)
    if not keys:
        assert rows[0][1].startswith("none above")
        return
    for key in keys:
        for who in ("", "untrained/", "raw_pixels/"):
            assert 0 <= results[f"fashion_mnist/released/{key}/{who}knn_top1_k20"] <= 100
            assert 0 <= results[f"fashion_mnist/released/{key}/{who}linear_top1"] <= 100
        assert any(label == f"released {key}" and "40 train / 20 test images" in text for label, text in rows)
    (tmp_path / "empty").mkdir()
    _, rows = demo.fmnist_rows(40, 20, root=tmp_path / "empty")
    assert "apt-get install -y dataset-fashion-mnist" in rows[0][1] and all(k in rows[0][1] for k in keys)
