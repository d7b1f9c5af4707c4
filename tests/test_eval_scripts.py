"""train/knn.py, linear.py, finetune.py, maskscore.py on tiny data: they run and write metrics."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.runs import save_pretrainer, update_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository: `train` scripts
from train import finetune, knn, linear, maskscore  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as train/pretrain.py leaves it (an untrained SimCLR ResNet-18 on scenes)."""
    d = tmp_path_factory.mktemp("run")
    save_pretrainer(d, zoo.create_pretrainer("simclr_resnet18"),
                    {"model": "simclr_resnet18", "objective": None, "model_args": {},
                     "data": "scenes", "image_size": 32})
    update_metrics(d, {"kept": 1})
    return d


def test_knn_raw_pixels_to_out_dir(tmp_path):
    m = knn.main(["raw-pixels", "--data", "scenes", "--limit-train", "200", "--limit-test", "50",
                  "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == m and set(m) == {"scenes/raw_pixels/knn_top1_k20", "scenes/raw_pixels/knn_top1_k200",
                                     "scenes/raw_pixels/knn_protocol"}
    assert 0 <= m["scenes/raw_pixels/knn_top1_k20"] <= 100
    assert "train=200" in m["scenes/raw_pixels/knn_protocol"]


def test_knn_run_dir_with_baselines_merges_metrics(run_dir):
    m = knn.main([str(run_dir), "--limit-train", "100", "--limit-test", "40", "--baselines"])
    for prefix in ("scenes", "scenes/untrained", "scenes/raw_pixels"):
        assert f"{prefix}/knn_top1_k20" in m
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["kept"] == 1 and saved["scenes/knn_top1_k200"] == m["scenes/knn_top1_k200"]


def test_linear_run_dir(run_dir):
    m = linear.main([str(run_dir), "--limit-train", "100", "--limit-test", "40", "--epochs", "2"])
    assert 0 <= m["scenes/linear_top1"] <= 100 and "2 epochs" in m["scenes/linear_protocol"]


def test_finetune_run_dir(run_dir, tmp_path):
    m = finetune.main([str(run_dir), "--limit-train", "64", "--limit-test", "32", "--epochs", "1",
                       "--batch-size", "32", "--out", str(tmp_path)])
    assert 0 <= m["scenes/finetune_top1"] <= 100
    assert json.loads((tmp_path / "metrics.json").read_text()) == m


def test_maskscore_run_dir(tmp_path):
    d = tmp_path / "adios"
    args = {"img_size": 32, "num_masks": 3}
    save_pretrainer(d, zoo.create_pretrainer("adios_resnet18", **args),
                    {"model": "adios_resnet18", "objective": "simclr", "model_args": args,
                     "data": "scenes", "image_size": 32})
    m = maskscore.main([str(d), "--n", "16", "--batch-size", "8"])
    assert m["scenes/mask_k"] == 3 and m["scenes/mask_images"] == 16
    assert all(0 <= m[f"scenes/mask_score{s}"] <= 1 for s in ("", "_random", "_block"))


def test_maskscore_needs_a_masker(run_dir):
    with pytest.raises(SystemExit):
        maskscore.main([str(run_dir), "--n", "4"])


def test_knn_reports_unreadable_images(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    tmp_path / "img" / split / cls / f"{i}.png")
    (tmp_path / "img" / "test" / "b" / "bad.png").write_bytes(b"\x89PNG broken")
    m = knn.main(["raw-pixels", "--data", "imagefolder", "--root", str(tmp_path / "img"),
                  "--image-size", "16"])
    assert "test=8" in m["imagefolder/raw_pixels/knn_protocol"]
    assert "1 unreadable image(s) skipped" in capsys.readouterr().out
    with pytest.raises(Exception, match="bad.png"):
        knn.main(["raw-pixels", "--data", "imagefolder", "--root", str(tmp_path / "img"),
                  "--image-size", "16", "--strict-data"])


def test_local_dir_source(tmp_path):
    """A Hub-layout folder (written here by timm itself) loads through `local-dir:` with the same
    weights, a fresh head on request, and its cfg's data config; knn.py evaluates it."""
    import timm
    import torch
    from timm.models._hub import save_for_hf

    from zoo.evaluation import load_backbone
    model = timm.create_model("resnet18", num_classes=0).eval()
    save_for_hf(model, str(tmp_path / "w"), safe_serialization=True)
    loaded, info = load_backbone(f"local-dir:{tmp_path / 'w'}")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.eval()(x), model(x)) and info["kind"] == "local-dir"
    assert info["mean"] == tuple(model.pretrained_cfg["mean"])
    assert load_backbone(f"local-dir:{tmp_path / 'w'}", num_classes=5)[0](x).shape == (2, 5)
    m = knn.main([f"local-dir:{tmp_path / 'w'}", "--data", "scenes", "--image-size", "32",
                  "--limit-train", "60", "--limit-test", "20"])
    assert "image_size=32" in m["scenes/knn_protocol"]


def test_balanced_subset_takes_each_class_share_by_seed():
    labels = [0] * 300 + [1] * 100 + [2] * 600
    chosen = finetune.balanced_subset(labels, 0.1, seed=0)
    counts = [sum(labels[i] == c for i in chosen) for c in range(3)]
    assert counts == [30, 10, 60] and len(set(chosen)) == 100
    assert chosen == finetune.balanced_subset(labels, 0.1, seed=0)
    assert chosen != finetune.balanced_subset(labels, 0.1, seed=1)
    assert finetune.balanced_subset(labels, 0.001, seed=0).__len__() == 3     # at least one per class


def test_finetune_low_label_with_baselines(run_dir, tmp_path):
    m = finetune.main([str(run_dir), "--limit-train", "200", "--limit-test", "32", "--labels", "0.1",
                       "--steps", "3", "--batch-size", "8", "--baselines", "--out", str(tmp_path)])
    for key in ("scenes/finetune_top1_10pct", "scenes/untrained/finetune_top1_10pct",
                "scenes/raw_pixels/logreg_top1_10pct"):
        assert 0 <= m[key] <= 100, key
    assert "3 steps" in m["scenes/finetune_protocol_10pct"] and "subset seed 0" in m["scenes/finetune_protocol_10pct"]
    assert "train=2" in m["scenes/finetune_protocol_10pct"]       # ~10 % of 200 scenes, class-balanced


def test_finetune_baselines_cache_reuses_only_what_the_key_covers(run_dir, tmp_path, monkeypatch):
    """The baselines are measured once per key and reused (the from-scratch fine-tune is not run
    again); another seed or subset is another key, so it is measured afresh."""
    cache = tmp_path / "cache"
    argv = [str(run_dir), "--limit-train", "200", "--limit-test", "32", "--labels", "0.1", "--steps", "3",
            "--batch-size", "8", "--baselines", "--baselines-cache", str(cache)]
    first = finetune.main([*argv, "--out", str(tmp_path / "a")])
    assert len(list(cache.glob("*.json"))) == 1
    calls = []
    real = finetune.finetune
    monkeypatch.setattr(finetune, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = finetune.main([*argv, "--out", str(tmp_path / "b")])
    assert len(calls) == 1                                  # the pretrained backbone only
    for key in ("scenes/untrained/finetune_top1_10pct", "scenes/raw_pixels/logreg_top1_10pct"):
        assert again[key] == first[key], key
    finetune.main([*argv, "--subset-seed", "1", "--out", str(tmp_path / "c")])
    assert len(calls) == 3 and len(list(cache.glob("*.json"))) == 2
    fresh = finetune.main([*argv[:-2], "--out", str(tmp_path / "d")])   # no cache: measured again, equal
    assert len(calls) == 5 and fresh["scenes/untrained/finetune_top1_10pct"] == first["scenes/untrained/finetune_top1_10pct"]
    with pytest.raises(SystemExit):                         # the cache keeps --baselines numbers only
        finetune.main([str(run_dir), "--labels", "0.1", "--baselines-cache", str(cache)])


def test_image_size_from_the_flag_then_the_source_then_the_recipe_default():
    from argparse import Namespace

    from train.eval_common import image_size_of
    assert image_size_of(Namespace(image_size=48), 32) == 48          # the flag wins
    assert image_size_of(Namespace(image_size=None), 48) == 48        # then the recipe / weight cfg
    assert image_size_of(Namespace(image_size=None), None) == 32      # then the recipes' default


def test_untrained_baseline_of_a_run_is_its_architecture_built_after_the_trained_one(run_dir):
    """The published "untrained" numbers were measured with this initialisation: keep it."""
    import torch

    from zoo.evaluation import load_backbone
    from zoo.runs import exported_architecture, load_pretrainer
    torch.manual_seed(0)
    untrained, info = load_backbone(str(run_dir), pretrained=False)
    torch.manual_seed(0)
    _, recipe = load_pretrainer(run_dir)
    expected = exported_architecture(recipe).state_dict()
    trained = load_backbone(str(run_dir))[0].state_dict()
    assert info["kind"] == "run" and info["image_size"] == 32
    assert all(torch.equal(v, expected[k]) for k, v in untrained.state_dict().items())
    assert any(not torch.equal(v, trained[k]) for k, v in untrained.state_dict().items()
               if v.is_floating_point())
