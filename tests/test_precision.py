"""bf16 autocast only where the device has native bf16 kernels (zoo.precision), in training,
fine-tuning and feature extraction; fp32 asked is fp32 everywhere."""
import json

import pytest
import torch

import tests.tiny_method  # noqa: F401  (registers tiny_test_resnet)
from tests.test_resume import TINY
from zoo import precision


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.delenv(precision.FORCE_ENV, raising=False)
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device_type: False)


def test_fp32_is_kept_and_bf16_kept_where_fast(monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device_type: True)
    assert precision.resolve("fp32", "cpu") == ("fp32", None)
    assert precision.resolve("bf16", torch.device("cpu")) == ("bf16", None)


def test_bf16_without_native_kernels_falls_back_to_fp32_and_says_why(no_native_bf16, monkeypatch):
    got, why = precision.resolve("bf16", "cpu")
    assert got == "fp32"
    assert torch.backends.cpu.get_cpu_capability() in why and precision.FORCE_ENV in why
    monkeypatch.setenv(precision.FORCE_ENV, "1")
    assert precision.resolve("bf16", "cpu") == ("bf16", None)


def test_the_cpu_answer_is_onednns():
    assert precision.bf16_is_fast("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize("fast", [False, True])
def test_pretrain_records_the_precision_it_ran(tmp_path, monkeypatch, capsys, fast):
    from train.pretrain import main
    monkeypatch.delenv(precision.FORCE_ENV, raising=False)
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device_type: fast)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)                                   # precision: bf16
    main(["--recipe", str(recipe), f"run_dir={tmp_path / 'run'}", "max_steps=1", "ckpt_every=0"])
    facts = json.loads((tmp_path / "run" / "metrics.json").read_text())["pretrain"]
    assert facts["mixed_precision"] == ("bf16" if fast else "no")
    assert ("no native bf16 kernels" in capsys.readouterr().out) is not fast


def test_features_under_bf16_fall_back_with_a_warning(no_native_bf16):
    from zoo.evaluation import extract_features
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 4)

        def forward(self, x):
            seen.append(torch.is_autocast_enabled("cpu"))
            return self.lin(x.flatten(1))

    data = [(torch.randn(3, 2, 2), i % 2) for i in range(4)]
    with pytest.warns(UserWarning, match="no native bf16 kernels"):
        f, _ = extract_features(Probe(), data, batch_size=2, bf16=True)
    assert seen == [False, False] and f.dtype == torch.float32


def test_the_device_is_known_before_the_accelerator_is_built(monkeypatch):
    from accelerate.state import PartialState
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert precision.accelerate_device_type() == "cuda"
    assert precision.accelerate_device_type(cpu=True) == "cpu"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert precision.accelerate_device_type() == "cpu"
    assert not PartialState._shared_state                 # asking built no accelerate state
