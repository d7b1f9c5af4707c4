"""Training curves: backbone snapshots kept by train/pretrain.py (`snapshot_every`), measured by
train/curve.py, shown in the model card.

The snapshot runs are real `train/pretrain.py` processes of the tiny test method (as in
tests/test_resume.py); the curve's numbers are checked against train/knn.py measuring the same
weights through its own load path (a run directory's pretrainer.safetensors).
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import zoo
from zoo.runs import load_pretrainer, save_pretrainer, save_snapshot, snapshots, update_metrics

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from test_publish_hub import fake_card  # noqa: E402
from test_resume import TINY, finish, launch  # noqa: E402
from train import curve, knn  # noqa: E402


def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)                     # 6 steps, checkpoint every 2
    return path


def test_snapshots_every_n_steps_and_the_last_holds_the_final_backbone_in_fp16(tmp_path):
    run = tmp_path / "run"
    code, log = finish(launch(tiny_recipe(tmp_path), run, "snapshot_every=4"))
    assert code == 0, log
    assert [s for s, _ in snapshots(run)] == [4, 6]            # every 4 steps, and the last step
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_method  # noqa: F401  (registers tiny_test_resnet for load_pretrainer)
    final = load_pretrainer(run)[0].exported_backbone().state_dict()
    last = load_file(str(snapshots(run)[-1][1]))
    assert last.keys() == final.keys()
    for k, v in final.items():                   # what publish --dtype float16 would store
        assert torch.equal(last[k], v.to(torch.float16) if v.is_floating_point() else v), k
    first = load_file(str(snapshots(run)[0][1]))
    assert any(not torch.equal(first[k], last[k]) for k in last if last[k].is_floating_point())


def test_a_run_that_gains_snapshot_every_on_resume_snapshots_its_resume_step(tmp_path):
    recipe, run = tiny_recipe(tmp_path), tmp_path / "run"
    code, log = finish(launch(recipe, run, "max_steps=4"))          # stops at 4, checkpoint there
    assert code == 0, log
    assert snapshots(run) == []
    code, log = finish(launch(recipe, run, "resume=true", "snapshot_every=5"))
    assert code == 0, log
    assert [s for s, _ in snapshots(run)] == [4, 5, 6]


def test_a_resume_keeps_the_snapshot_grid(tmp_path):
    """Killed inside step 5 (checkpoint at 4) with snapshot_every=5 all along: the resume adds no
    snapshot of its own step."""
    recipe, run = tiny_recipe(tmp_path), tmp_path / "run"
    code, log = finish(launch(recipe, run, "snapshot_every=5", kill_at="update:5"))
    assert code == -signal.SIGKILL, log
    assert snapshots(run) == []
    code, log = finish(launch(recipe, run, "resume=true", "snapshot_every=5"))
    assert code == 0, log
    assert [s for s, _ in snapshots(run)] == [5, 6]


@pytest.fixture
def run_with_snapshots(tmp_path):
    """An untrained SimCLR ResNet-18 run on scenes with two snapshots: step 10 (other weights)
    and step 20, the run's own backbone rounded to fp16, which pretrainer.safetensors holds too."""
    run = tmp_path / "run"
    torch.manual_seed(1)
    early = zoo.create_pretrainer("simclr_resnet18")
    torch.manual_seed(2)
    pretrainer = zoo.create_pretrainer("simclr_resnet18")
    with torch.no_grad():
        for t in pretrainer.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    save_pretrainer(run, pretrainer, {"model": "simclr_resnet18", "objective": None, "model_args": {},
                                      "data": "scenes", "image_size": 32, "batch_size": 8})
    (run / "log.jsonl").write_text(json.dumps({"step": 5, "epoch": 0.5}) + "\n")   # 10 steps an epoch
    save_snapshot(run, 10, early.exported_backbone())
    save_snapshot(run, 20, pretrainer.exported_backbone())
    return run


FLAGS = ["--limit-train", "120", "--limit-test", "40"]


def test_curve_points_match_knn_of_the_same_weights(run_with_snapshots):
    run = run_with_snapshots
    c = curve.main([str(run), *FLAGS])
    assert sorted(c["points"]) == ["10", "20"] and c["data"] == "scenes"
    last, first = c["points"]["20"], c["points"]["10"]
    assert (last["step"], last["epoch"], last["images"]) == (20, 2.0, 160)
    measured = knn.main([str(run), *FLAGS])                       # pretrainer.safetensors: the same weights
    assert last["knn_top1_k20"] == measured["scenes/knn_top1_k20"]
    assert last["knn_top1_k200"] == measured["scenes/knn_top1_k200"]
    assert c["protocol"] == measured["scenes/knn_protocol"]
    assert first["knn_top1_k20"] != last["knn_top1_k20"] or first["knn_top1_k200"] != last["knn_top1_k200"]
    assert json.loads((run / "metrics.json").read_text())["curve"] == c


def test_curve_keeps_measured_points_and_refuses_other_settings(run_with_snapshots, capsys):
    run = run_with_snapshots
    (run / "pretrainer.safetensors").unlink()          # a run still training: its snapshots are enough
    c = curve.main([str(run), *FLAGS])
    kept = {**c["points"]["10"], "knn_top1_k20": -1.0}
    update_metrics(run, {"curve": {**c, "points": {"10": kept}}})
    capsys.readouterr()
    again = curve.main([str(run), *FLAGS])
    assert again["points"]["10"] == kept and again["points"]["20"] == c["points"]["20"]   # only 20 measured
    out = capsys.readouterr().out
    assert "step 20:" in out and "step 10:" not in out
    for other in (["--limit-train", "100", "--limit-test", "40"], [*FLAGS, "--bf16"], [*FLAGS, "--data", "fashion_mnist"]):
        with pytest.raises(SystemExit, match="use the same flags"):      # before measuring anything
            curve.main([str(run), *other])
    with pytest.raises(SystemExit):
        curve.main([str(run), *FLAGS, "--k", "20"])     # the curve is k=20 and k=200
    assert "--k must include both" in capsys.readouterr().err


def test_snapshot_listing_ignores_other_files(tmp_path):
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for name in ("step_00000010.safetensors", "step_00000002.safetensors", ".step_00000012.safetensors.tmp",
                 "step_x.safetensors", "step_00000004.json"):
        (folder / name).touch()
    assert snapshots(tmp_path) == [(2, folder / "step_00000002.safetensors"), (10, folder / "step_00000010.safetensors")]
    assert snapshots(tmp_path / "none") == []


def test_curve_needs_snapshots(tmp_path):
    save_pretrainer(tmp_path, zoo.create_pretrainer("simclr_resnet18"),
                    {"model": "simclr_resnet18", "data": "scenes", "image_size": 32, "batch_size": 8})
    with pytest.raises(SystemExit, match="no snapshots/ to measure: train with snapshot_every"):
        curve.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="not a run directory"):
        curve.main([str(tmp_path / "nothing")])


def test_card_shows_the_curve_and_its_baselines_only_under_the_same_protocol():
    curve_block = {"data": "d", "protocol": "weighted", "points": {
        "20": {"step": 20, "epoch": 2.0, "images": 160, "knn_top1_k20": 80.0, "knn_top1_k200": 78.5},
        "10": {"step": 10, "epoch": 1.0, "images": 80, "knn_top1_k20": 70.25, "knn_top1_k200": 66.0}}}
    metrics = {"d/knn_top1_k20": 80.0, "d/raw_pixels/knn_top1_k20": 85.5, "d/raw_pixels/knn_top1_k200": 82.0,
               "d/raw_pixels/knn_protocol": "weighted", "d/untrained/knn_top1_k20": 30.0,
               "d/untrained/knn_top1_k200": 28.0, "d/untrained/knn_protocol": "other", "curve": curve_block}
    card = ModelCard(fake_card(metrics=metrics, commands={"knn": "python train/knn.py RUN",
                                                          "curve": "python train/curve.py RUN --bf16"}))
    body = [line for line in card.text.splitlines() if line]
    assert body[1].endswith("(a CPU-scale run; the Results below have every number, the training curve how far "
                            "it got).")
    rows = [line for line in body if line.startswith("| 10 |") or line.startswith("| 20 |")]
    assert rows == ["| 10 | 1.0 | 80 | 70.25 | 66.00 |", "| 20 | 2.0 | 160 | 80.00 | 78.50 |"]   # by step
    text = card.text
    assert "weighted, on `d`; raw pixels 85.50 / 82.00 (k=20 / k=200, same protocol)" in text
    assert "untrained" not in text.split("Training curve")[1].split("|")[0]    # another protocol: left out
    assert "    python train/curve.py RUN --bf16" in text
    assert "curve" not in json.dumps([r.metric_name for r in card.data.eval_results])
    plain = fake_card(metrics={k: v for k, v in metrics.items() if k != "curve"})
    assert "Training curve" not in plain and "how far it got" not in plain


@pytest.mark.parametrize("identical", [True, False])
def test_card_says_a_rerun_curve_is_a_rerun_and_whether_its_last_row_is_this_file(identical):
    """A release that kept no snapshots gets its curve from train/curve_rerun.py: the card must not
    claim the last row is the released file unless the re-run's last snapshot is bit-identical."""
    points = {"10": {"step": 10, "epoch": 1.0, "images": 80, "knn_top1_k20": 70.25, "knn_top1_k200": 66.0}}
    rerun = {"identical": identical, "max_abs_diff": 0.0 if identical else 0.000977}
    text = " ".join(fake_card(metrics={"d/knn_top1_k20": 71.0, "curve": {
        "data": "d", "protocol": "weighted", "points": points, "rerun": rerun}},
        commands={"curve": "python train/curve_rerun.py n.t"}).split())
    assert "from a re-run of its recipe and seed" in text
    assert ("whose last snapshot is bit-identical to this file: the last row is this file" in text) == identical
    assert ("whose last snapshot is not this file: largest difference 0.000977, so the last row need not "
            "repeat the Results" in text) == (not identical)
    assert "Re-measure (trains the recipe again with a snapshot every epoch, then measures them): " \
           "python train/curve_rerun.py n.t" in text
    plain = " ".join(fake_card(metrics={"curve": {"data": "d", "protocol": "weighted", "points": points}}).split())
    assert "re-run" not in plain and "(fp16, like this file; the last row is this file)" in plain


def test_rerun_compares_its_last_snapshot_with_the_released_file_tensor_by_tensor(tmp_path):
    from safetensors.torch import save_file

    from train.curve_rerun import same_tensors
    a = {"w": torch.randn(4, 3).half(), "b": torch.zeros(3, dtype=torch.float16)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file({k: v.clone() for k, v in a.items()}, str(tmp_path / "same.safetensors"))
    assert same_tensors(tmp_path / "a.safetensors", tmp_path / "same.safetensors") == \
        {"identical": True, "max_abs_diff": 0.0}
    moved = {**a, "w": a["w"].clone()}
    moved["w"][2, 1] += 0.5                                    # one element, 0.5 away (fp16-exact near 0-2)
    save_file(moved, str(tmp_path / "moved.safetensors"))
    out = same_tensors(tmp_path / "a.safetensors", tmp_path / "moved.safetensors")
    assert out["identical"] is False
    assert out["max_abs_diff"] == float((moved["w"].float() - a["w"].float()).abs().max()) > 0.4
    save_file({"w": a["w"]}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SystemExit, match="hold different tensors.*'b'.*not the same architecture"):
        same_tensors(tmp_path / "a.safetensors", tmp_path / "other.safetensors")


def test_curve_rerun_snapshots_every_epoch_and_hands_the_comparison_to_the_card(tmp_path, monkeypatch, capsys):
    """train/curve_rerun.py's plumbing, with training, curve and republish stubbed: a snapshot every
    steps/epochs of the card's pretrain block, the last snapshot compared with the released file,
    the curve and its command handed to the card; unknown names and unreleased recipes refused."""
    from safetensors.torch import save_file

    from train import curve_rerun, release
    from zoo import weights
    item = {"key": "n.t", "recipe": "recipes/n.t.yaml", "seeds": [3], "eval": ["--bf16"]}
    entry = {"metrics": {"pretrain": {"steps": 1872, "epochs": 8.0}}}
    released_file = {"w": torch.ones(2, dtype=torch.float16)}
    (tmp_path / "weights" / "n.t").mkdir(parents=True)
    save_file(released_file, str(tmp_path / "weights" / "n.t" / "model.safetensors"))
    calls = {}

    def pretrain(it, seed, dry, run_dir=None, overrides=()):
        calls["pretrain"] = (seed, run_dir, overrides)
        save_snapshot(run_dir, 1872, torch.nn.Linear(2, 1, bias=False))   # not the released tensors
        return run_dir

    def curve_of(it, run_dir, dry):
        update_metrics(run_dir, {"curve": {"data": "d", "protocol": "p", "points": {"1872": {"step": 1872}}}})
        return True

    monkeypatch.setattr(release, "load_plan", lambda: [dict(item)])
    monkeypatch.setattr(release, "released", lambda it: entry)
    monkeypatch.setattr(release, "pretrain", pretrain)
    monkeypatch.setattr(release, "curve", curve_of)
    monkeypatch.setattr(release, "republish", lambda it, metrics, dry: calls.setdefault("republish", metrics))
    monkeypatch.setattr(weights, "weights_root", lambda: tmp_path / "weights")
    monkeypatch.setattr(curve_rerun, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(curve_rerun, "same_tensors", lambda a, b: calls.setdefault("compared", (a, b)) and
                        {"identical": False, "max_abs_diff": 0.5})
    curve_rerun.main(["n.t"])
    run_dir = tmp_path / "runs" / "n.t" / "seed3"
    assert calls["pretrain"] == (3, run_dir, ("snapshot_every=234",))
    assert calls["compared"] == (snapshots(run_dir)[-1][1], tmp_path / "weights" / "n.t" / "model.safetensors")
    sent = calls["republish"]
    assert sent["commands"] == {"curve": "python train/curve_rerun.py n.t"}
    assert sent["curve"]["rerun"] == {"identical": False, "max_abs_diff": 0.5} and sent["curve"]["points"]
    assert "not the released file (max |diff| 0.5)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"n\.s is not in .*Did you mean n\.t\?"):
        curve_rerun.main(["n.s"])
    monkeypatch.setattr(release, "released", lambda it: None)
    with pytest.raises(SystemExit, match="holds no release of the plan's recipe.*python train/release.py n.t"):
        curve_rerun.main(["n.t"])
