"""One load path: zoo.create_model, zoo.create_masker, timm's entrypoints and the evaluation loader
all resolve through `zoo.weights.resolve`; timm's registry is synced only when something changed."""
from __future__ import annotations

import json

import pytest
import timm
import torch

import zoo
from zoo import timm_entries, weights
from zoo.evaluation import load_backbone
from zoo.registry import METHODS
from zoo_testing import throwaway_method

RESNET = "zootest_resnet18"


@pytest.fixture
def spy(monkeypatch):
    """Records (source, file) of every weights.resolve call, then resolves as usual."""
    calls, resolve = [], weights.resolve

    def recording(source, file=weights.MODEL_FILE, **kw):
        calls.append((source, file))
        return resolve(source, file, **kw)
    monkeypatch.setattr(weights, "resolve", recording)
    return calls


@pytest.fixture
def names(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.TABLE_ENV, str(tmp_path / "no_table.json"))
    with throwaway_method() as registered:
        yield registered


def test_every_creator_resolves_through_weights_resolve(names, spy):
    with torch.device("meta"):
        zoo.create_model(RESNET)
        zoo.create_model(f"{RESNET}", pretrained=False, num_classes=3)
        timm.create_model(RESNET)                                   # timm's entrypoint for the name
        load_backbone(RESNET, pretrained=False)
    zoo.create_masker(RESNET, pretrained=False)
    assert spy == [(RESNET, "model.safetensors")] * 4 + [(RESNET, "masker.safetensors")]


def test_resolve_of_an_unreleased_name(names):
    r = weights.resolve(RESNET)
    assert (r.timm_arch, r.num_classes, r.file, r.pretrainer) == ("resnet18", 0, None, {"model": RESNET})
    assert "file" not in r.pretrained_cfg and not set(r.pretrained_cfg) & set(weights.SOURCE_KEYS)
    with pytest.raises(weights.NoReleasedWeightsError):
        weights.resolve(RESNET, pretrained=True)
    with pytest.raises(ValueError, match="weight source"):
        weights.resolve(RESNET, cfg_overlay={"url": "https://example.com/w.pth"})


def test_sync_does_nothing_when_nothing_changed(names):
    timm_entries.sync()

    def refuse(*a, **k):
        raise AssertionError("sync touched the table or timm's registry although nothing changed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timm_entries.weights, "load_table", refuse)
        mp.setattr(timm_entries, "_unregister", refuse)
        mp.setattr(timm_entries, "register_model", refuse)
        zoo.list_models()
        timm_entries.sync()


def test_sync_follows_a_written_table(names, tmp_path, monkeypatch):
    """A table written (by rename, as publish writes it) is seen by the next sync."""
    timm_entries.sync()
    assert timm.list_pretrained(f"{RESNET}*") == []
    cfg = weights.make_pretrained_cfg("resnet18", {}, tag="w", image_size=32)
    entry = {"name": RESNET, "tag": "w", "pretrained_cfg": json.loads(json.dumps(cfg)), "files": {}}
    (tmp_path / "new.json").write_text(json.dumps({f"{RESNET}.w": entry}))
    (tmp_path / "new.json").replace(tmp_path / "no_table.json")
    timm_entries.sync()
    assert timm.list_pretrained(f"{RESNET}*") == [f"{RESNET}.w"]
    assert timm.models.get_pretrained_cfg(RESNET).input_size == (3, 32, 32)


def test_late_registration_and_removal_reach_timm(names):
    assert set(names) <= set(timm.list_models("zootest*"))
    METHODS.pop(names[-1])
    zoo.list_models()
    assert names[-1] not in timm.list_models("zootest*")
