"""Keeps the benchmark suite alive: FLOP counting against hand counts, one tiny harness run with
its JSON schema, the lightly peer's losses against ours, and the report renderer."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                                  # benchmarks/ is not installed

from benchmarks.common import count_flops  # noqa: E402
from benchmarks.probes import SMALL_MAPS, dense_conv  # noqa: E402


def _small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Flatten(), nn.Linear(5 * 6 * 6, 4))


def test_flop_count_matches_hand_count():
    m, x = _small_model(), torch.randn(2, 3, 6, 6)
    conv = 2 * (2 * 5 * 6 * 6) * (3 * 3 * 3)     # 2 * output elements * (C_in * k * k) = 19440
    lin = 2 * 2 * 180 * 4                          # 2 * B * in * out = 2880
    assert count_flops(lambda: m(x)) == conv + lin
    # backward: the Linear computes grad_input and grad_weight; the Conv only grad_weight, since
    # the images need no gradient
    assert count_flops(lambda: m(x).sum().backward()) == 2 * conv + 3 * lin
    xg = x.clone().requires_grad_()
    assert count_flops(lambda: m(xg).sum().backward()) == 3 * conv + 3 * lin


def test_flop_count_excludes_dropped_tokens():
    """Token dropping halves a ViT block's token work: the counter only sees what runs."""
    from zoo.backbones import create_backbone, encode
    vit = create_backbone("vit_tiny_patch4_32").eval()
    x = torch.randn(1, 3, 32, 32)
    hide = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    hide[..., :4, :] = True                                       # 32 of 64 tokens dropped
    full, half = count_flops(lambda: encode(vit, x)), count_flops(lambda: encode(vit, x, hide))
    assert 0.4 < half / full < 0.6


def test_quick_harness_writes_schema(tmp_path):
    from benchmarks import run
    out = tmp_path / "bench.json"
    run.main(["--quick", "--only", "peak,pretrainers", "--cases", "simclr_resnet18", "--inproc",
              "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["schema"] == run.SCHEMA
    info = r["runs"][0]
    assert info["machine"]["cores"] >= 1 and info["machine"]["torch"] == torch.__version__
    assert info["command"].startswith("python -m benchmarks.run")
    for p in ("fp32", "bf16"):
        assert r["peak"]["data"][p]["gflops"] > 0
    case = r["pretrainers"]["data"]["simclr_resnet18 bf16"]
    assert "error" not in case, case.get("error")
    for key in ("step_s", "images_per_s", "flops_per_step", "achieved_gflops", "mfu", "peak_mem_mb",
                "phase_s", "loss_finite"):
        assert key in case, key
    assert case["loss_finite"] and case["batch"] == 8 and case["views"] == 2
    assert case["images_per_s"] == pytest.approx(case["batch"] / case["step_s"])
    assert case["mfu"] == pytest.approx(case["achieved_gflops"] / r["peak"]["data"]["bf16"]["gflops"])
    # a SimCLR step on 2 views of a ResNet-18 at 32 px is a few GFLOPs per 8 images, not 0
    assert 0.5e9 < case["flops_per_step"] < 20e9


def _patched_convs(net: nn.Module) -> int:
    return sum("_conv_forward" in m.__dict__ for m in net.modules())


def test_timed_steps_run_with_the_training_loops_kernels(monkeypatch):
    """The model classes install no CPU kernels (zoo/kernels.py): the benchmarks that time
    training steps install them, as train/pretrain.py does, or they would time another step."""
    from benchmarks import pretrainers, stepping, versus
    seen = []

    def observed(pretrainer, *args, **kwargs):
        seen.append(_patched_convs(pretrainer.backbone))
        return stepping.train_step(pretrainer, *args, **kwargs)
    monkeypatch.setattr(pretrainers, "train_step", observed)
    monkeypatch.setattr(pretrainers, "count_flops", lambda fn: 0)
    pretrainers.bench_case("simclr_resnet18", batch=2, warmup=1, repeats=1)
    assert seen and all(seen), seen

    seen.clear()
    monkeypatch.setattr(versus, "train_step", observed)
    versus.compare("simclr", batch=2, rounds=1, steps_per_round=1, warmup=0)
    assert len(seen) == 2 and all(seen), seen                    # ours in fp32 and in bf16
    ours, theirs = versus.build_pair("simclr")
    assert _patched_convs(theirs) == 0                           # lightly's side stays vanilla


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_lightly_peer_computes_our_loss(method):
    from benchmarks.common import make_inputs
    from benchmarks.versus import build_pair, check_losses
    ours, theirs = build_pair(method)
    r = check_losses(method, ours, theirs, make_inputs(4, 2))
    assert r["loss_equal"], r
    # and a different weight breaks the equality (the check is not vacuous)
    with torch.no_grad():
        next(theirs.projection_head.parameters()).mul_(1.5)
    assert not check_losses(method, ours, theirs, make_inputs(4, 2))["loss_equal"]


def test_report_renders_tables():
    from benchmarks.report import render
    results = {"runs": [{"machine_line": "cpu", "command": "python -m benchmarks.run", "started": "t"}],
               "peak": {"data": {"fp32": {"n": 8, "gflops": 1.5, "spread": 0.1}}, "run": 0,
                        "seconds": 1.0, "load_before": [0.1], "load_after": [0.2]}}
    text = render(results)
    assert "| fp32 | 8 | 1.5 |" in text and "## Machine" in text


def test_report_before_after_per_change(tmp_path, capsys):
    from benchmarks import report

    def res(images_per_s):
        return {"pretrainers": {"data": {"simclr_resnet18 bf16": {"images_per_s": images_per_s}}}}
    changes = {"change A": (res(100.0), res(300.0)), "change B": (res(200.0), res(300.0))}
    text = report.render({}, changes)
    assert "## Before / after change A" in text and "## Before / after change B" in text
    assert "| simclr_resnet18 bf16 | 100.0 | 300.0 | 3.00x |" in text
    assert "After change B: ResNet pretrainers 1.50x to 1.50x" in report.summary({}, changes)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res(1.0)))
    with pytest.raises(SystemExit):
        report.main([str(path), "--change", str(path)])              # no WHAT= label
    assert "expected WHAT=BEFORE[,AFTER]" in capsys.readouterr().err


def _generating_argv() -> list[str]:
    """The report arguments BENCHMARKS.md says generated it."""
    line = next(x for x in (ROOT / "BENCHMARKS.md").read_text().splitlines() if x.startswith("<!-- generated by `"))
    argv = shlex.split(line.split("`")[1])
    assert argv[:3] == ["python", "-m", "benchmarks.report"], argv
    return argv[3:]


def test_benchmarks_page_and_readme_headline_are_what_the_committed_results_give(monkeypatch):
    from benchmarks import report
    monkeypatch.chdir(ROOT)
    argv = _generating_argv()
    assert "--write" in argv and "--readme" in argv
    assert report.main(argv + ["--check"]) == 0, "stale: re-run the command in BENCHMARKS.md's generated-by line"


def test_readme_check_catches_a_changed_number(tmp_path, monkeypatch, capsys):
    from benchmarks import report
    monkeypatch.chdir(ROOT)
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    block = text[text.index(report.README_START):text.index(report.README_END)]
    digit = next(i for i, c in enumerate(block) if c.isdigit() and i > len(report.README_START))
    bumped = block[:digit] + str((int(block[digit]) + 1) % 10) + block[digit + 1:]
    readme.write_text(text.replace(block, bumped))
    assert report.main(["benchmarks/results.json", "--readme", str(readme), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert report.main(["benchmarks/results.json", "--readme", str(readme)]) == 0        # repairs it
    assert readme.read_text() == text


@pytest.mark.parametrize("cin,cout,size,stride", [(c // 16, o // 16, n, s) for c, o, n, s in SMALL_MAPS])
def test_probe_dense_conv_is_the_convolution(cin, cout, size, stride):
    """The small-map probe times a dense matmul against oneDNN: it must be the same map."""
    torch.manual_seed(0)
    x = torch.randn(3, cin, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: dense_conv(a, b, stride, 1), (x, w))
    torch.testing.assert_close(dense_conv(x, w, stride, 1), F.conv2d(x, w, stride=stride, padding=1))


def test_probes_reject_unknown_names():
    from benchmarks import probes
    with pytest.raises(SystemExit, match="unknown probe"):
        probes.main(["stage5"])


def test_to_pixels_quick_run_records_both_sides(tmp_path):
    """The time-to-raw-pixels record, tiny: both sides train the release recipe's first steps from
    the same weights and views, are checked against raw pixels on one split, and merge per side."""
    from benchmarks import run
    out = tmp_path / "bench.json"
    run.main(["--quick", "--only", "to_pixels", "--to-pixels-sides", "ours", "--threads", "1", "--out", str(out)])
    d = json.loads(out.read_text())["to_pixels"]["data"]
    if "skipped" in d:
        pytest.skip(d["skipped"])
    assert "error" not in d, d.get("error")
    run.main(["--quick", "--only", "to_pixels", "--to-pixels-sides", "lightly", "--threads", "1", "--merge",
              "--out", str(out)])
    d = json.loads(out.read_text())["to_pixels"]["data"]
    from benchmarks.to_pixels import RECIPE, side_precision
    from train.recipe import Recipe
    for side in ("ours", "lightly"):
        r = d[side]
        assert "error" not in r, r.get("error")
        assert r["precision"] == side_precision(side, Recipe.load(RECIPE)) and r["steps"] <= 4
        raw = r["raw_pixels"]["knn_top1_k20"]
        # every 2 steps (1/8 of a 16-step epoch) until the first check above raw pixels, or to the end
        above = [c["knn_top1_k20"] > raw for c in r["checks"]]
        assert [c["step"] for c in r["checks"]] == [2, 4][:len(r["checks"])] and r["steps"] == r["checks"][-1]["step"]
        assert r["beaten_at"] == (r["checks"][above.index(True)] if any(above) else None)
        assert any(above) or r["steps"] == 4                             # stopped early only when beaten
        assert r["best"] == max(r["checks"], key=lambda c: c["knn_top1_k20"])
        assert 0 < r["checks"][0]["step_minutes"] <= r["checks"][0]["wall_minutes"]
    assert d["ours"]["settings"] == d["lightly"]["settings"]
    assert d["ours"]["raw_pixels"] == d["lightly"]["raw_pixels"]      # one split for both calls
    # the same initial weights and views: the first losses agree up to ours' bf16 rounding
    assert d["ours"]["first_loss"] == pytest.approx(d["lightly"]["first_loss"], rel=2e-2)


def test_to_pixels_refuses_a_recipe_it_does_not_reproduce():
    from benchmarks.to_pixels import check_recipe
    from train.recipe import Recipe
    from benchmarks.to_pixels import RECIPE
    check_recipe(Recipe.load(RECIPE))
    with pytest.raises(ValueError, match=r"grad_accum.: 2"):
        check_recipe(Recipe.load(RECIPE, ["grad_accum=2"]))
    with pytest.raises(ValueError, match="model.: .byol_resnet18"):
        check_recipe(Recipe.load(RECIPE, ["model=byol_resnet18"]))


def test_to_pixels_report_compares_only_equal_settings():
    from benchmarks.report import to_pixels_table

    def side(precision, hit_min, best=86.0):
        hit = dict(step_minutes=hit_min, wall_minutes=hit_min + 5, epochs=6, knn_top1_k20=best) if hit_min else None
        return dict(precision=precision, images_per_s=180.0, checks=[{}], beaten_at=hit,
                    best=dict(knn_top1_k20=best, epochs=8, step_minutes=40.0), machine="Intel Xeon, 2 cores; x",
                    raw_pixels={"knn_top1_k20": 85.0}, settings=settings)

    settings = dict(recipe="recipes/simclr_resnet18.fmnist.yaml", overrides=[], image_size=48, batch=256,
                    epochs=8, check_every_epochs=0.5, knn_train=10000, knn_test=2000)
    text = to_pixels_table({"ours": side("bf16", 30.0), "lightly": side("fp32", 75.0)})
    assert "| ours | bf16 | 180.0 | 85.00 | 30.0 / 35.0 min, epoch 6, kNN 86.00 | Intel Xeon, 2 cores |" in text
    assert "lightly / ours: 2.50x" in text
    text = to_pixels_table({"ours": side("bf16", 30.0), "lightly": side("fp32", None, best=84.0)})
    assert "not within 8 epochs (best 84.00 at epoch 8, 40.0 step-min)" in text and "lightly / ours" not in text
    other = side("fp32", 75.0)
    other["settings"] = {**settings, "overrides": ["epochs=4"]}
    text = to_pixels_table({"ours": side("bf16", 30.0), "lightly": other})
    assert "not compared" in text and "lightly / ours" not in text
    elsewhere = {**side("fp32", 75.0), "machine": "AMD EPYC, 2 cores; x"}              # another host
    text = to_pixels_table({"ours": side("bf16", 30.0), "lightly": elsewhere})
    assert "on different hosts: not compared" in text and "lightly / ours" not in text
    text = to_pixels_table({"ours": side("bf16", 30.0), "lightly": {"error": "MemoryError: x", "machine": "m"}})
    assert "| lightly | - | - | - | ERROR MemoryError: x | m |" in text
