"""The weight table, resolution and every error of zoo.weights; timm's registry path; fine-tuning.

Releases are published into a tmp folder by the fixture and the table is pointed at it
($ZOO_RELEASED, $ZOO_WEIGHTS_DIR): nothing depends on real released weights, and huggingface_hub
is kept offline (nothing touches the network).
"""
from __future__ import annotations

import json
import shutil
import struct

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file, save_file
from timm.models._pretrained import PretrainedCfg

import zoo
from zoo import weights
from zoo.publish import update_table
from zoo.registry import METHODS, register_method
from zoo_testing import TinyMasker, make_release, throwaway_method

RESNET, VIT, UNRELEASED = "zootest_resnet18", "zootest_vit_tiny_patch4_32", "zootest_vit_small_patch4_32"
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    """Two tags of the ResNet (t1 default, t2), one of the ViT; VIT_SMALL registered, not released."""
    root = tmp_path_factory.mktemp("released")
    wdir, table = root / "weights", root / "released.json"
    with throwaway_method(), pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.TABLE_ENV, str(table))
        mp.setenv(weights.WEIGHTS_ENV, str(wdir))
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        out = {"root": root, "wdir": wdir, "table": table}
        out[RESNET], out["p_" + RESNET] = make_release(wdir, RESNET, "t1", table, seed=1)
        out["t2"], _ = make_release(wdir, RESNET, "t2", table, seed=2, with_masker=False)
        out[VIT], out["p_" + VIT] = make_release(wdir, VIT, "t1", table, seed=3)
        with torch.no_grad():                       # reference outputs, computed once
            out["y_" + RESNET], out["y_" + VIT] = (plain(out["p_" + n])(X) for n in (RESNET, VIT))
        yield out


def copy_release(rel, tmp_path, name_tag=f"{RESNET}.t1"):
    """A private copy of the weights folder, to damage; returns the copied release folder."""
    wdir = tmp_path / "weights"
    shutil.copytree(rel["wdir"] / name_tag, wdir / name_tag)
    return wdir / name_tag


def plain(pretrainer):
    return pretrainer.exported_backbone().eval()


def same_weights(model, pretrainer) -> bool:
    """The model holds exactly the published backbone's tensors (heads aside)."""
    ref = plain(pretrainer).state_dict()
    state = model.state_dict()
    return all(torch.equal(state[k], v) for k, v in ref.items())


# ------------------------------------------------------------------------------------------------
# Loading

def test_create_model_pretrained_matches_published(env):
    for name in (RESNET, VIT):
        model = zoo.create_model(f"{name}.t1", pretrained=True).eval()
        with torch.no_grad():
            assert torch.equal(model(X), env["y_" + name])
        assert model.num_classes == 0 and model.pretrained_cfg["tag"] == "t1"
        assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_bare_name_is_default_tag_and_tags_differ(env):
    assert weights.find_release(RESNET)[0] == f"{RESNET}.t1"
    t2 = zoo.create_model(f"{RESNET}.t2", pretrained=True)
    assert not same_weights(t2, env["p_" + RESNET])              # seeds 1 and 2: different weights
    assert same_weights(zoo.create_model(RESNET, pretrained=True), env["p_" + RESNET])


def test_untrained_is_not_released(env):
    for name in (f"{RESNET}.t2", RESNET):
        model = zoo.create_model(name, pretrained=False)
        assert model.pretrained_cfg["tag"] == (name.partition(".")[2] or "t1")   # the tag's data config ...
        assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
        assert not same_weights(model, env["p_" + RESNET])                       # ... and random weights


def test_list_models_and_pretrained(env):
    assert zoo.list_pretrained("zootest*") == [f"{RESNET}.t1", f"{RESNET}.t2", f"{VIT}.t1"]
    assert set(zoo.list_models("zootest*")) == {RESNET, VIT, UNRELEASED}
    assert zoo.list_pretrained("*vit*") == [f"{VIT}.t1"]


def test_never_reads_pickle(env, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.load called on a released file")
    monkeypatch.setattr(torch, "load", refuse)
    zoo.create_model(f"{VIT}.t1", pretrained=True)
    zoo.create_masker(f"{RESNET}.t1")


# ------------------------------------------------------------------------------------------------
# timm's own registry

def test_timm_registry_lists_and_loads(env):
    zoo.list_models()                                          # sync with this test's table
    assert timm.list_pretrained("zootest*") == [f"{RESNET}.t1", f"{RESNET}.t2", f"{VIT}.t1"]
    assert UNRELEASED in timm.list_models("zootest*")
    assert timm.models.get_pretrained_cfg(RESNET).tag == "t1"   # released tag first = default
    model = timm.create_model(RESNET, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(X), env["y_" + RESNET])
    assert same_weights(timm.create_model(f"{VIT}.t1", pretrained=True), env["p_" + VIT])


def test_timm_path_checks_the_hash(env, tmp_path, monkeypatch):
    folder = copy_release(env, tmp_path)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder.parent))
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(weights.HashMismatchError):
        timm.create_model(f"{RESNET}.t1", pretrained=True)


def test_late_registration_is_covered(env):
    @register_method("zootestlate", archs=("resnet18",))
    def late(arch: str):
        return zoo.create_pretrainer(RESNET)
    try:
        assert "zootestlate_resnet18" in zoo.list_models("zootestlate*")
        assert timm.list_models("zootestlate*") == ["zootestlate_resnet18"]
        assert timm.create_model("zootestlate_resnet18").num_features == 512
    finally:
        METHODS.pop("zootestlate_resnet18")
        zoo.list_models()
    assert timm.list_models("zootestlate*") == []


# ------------------------------------------------------------------------------------------------
# Fine-tuning heads and feature extraction

def test_finetune_head(env):
    model = zoo.create_model(f"{RESNET}.t1", pretrained=True, num_classes=10).eval()
    assert model.fc.out_features == 10 and model.fc.weight.requires_grad
    with torch.no_grad():
        assert torch.equal(model.forward_head(model.forward_features(X), pre_logits=True), env["y_" + RESNET])
    vit = timm.create_model(f"{VIT}.t1", pretrained=True, num_classes=3).eval()    # timm's path too
    assert vit.head.out_features == 3 and same_weights(vit, env["p_" + VIT])


def test_features_only(env):
    feats = zoo.create_model(f"{RESNET}.t1", pretrained=True, features_only=True).eval()(X)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]
    assert torch.equal(feats[-1], plain(env["p_" + RESNET]).forward_features(X))
    vit_feats = zoo.create_model(f"{VIT}.t1", pretrained=True, features_only=True, out_indices=(-1,)).eval()(X)
    assert vit_feats[-1].shape == (2, 192, 8, 8)


def test_in_chans_adapts_first_conv(env):
    model = zoo.create_model(f"{RESNET}.t1", pretrained=True, in_chans=1).eval()
    ref = plain(env["p_" + RESNET]).conv1.weight
    assert torch.allclose(model.conv1.weight, ref.sum(1, keepdim=True))   # timm's RGB -> gray rule


# ------------------------------------------------------------------------------------------------
# Errors

def test_unknown_name_suggests_close_matches(env):
    with pytest.raises(weights.UnknownModelError) as e:
        zoo.create_model("zootest_resnt18")
    assert RESNET in e.value.suggestions and RESNET in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, weights.ZooWeightsError)
    with pytest.raises(weights.UnknownModelError):
        zoo.create_model(f"{RESNET}.nosuchtag")             # unknown tag, even untrained


def test_no_released_weights_lists_released(env):
    with pytest.raises(weights.NoReleasedWeightsError) as e:
        zoo.create_model(UNRELEASED, pretrained=True)
    assert f"{RESNET}.t1" in e.value.released and f"{VIT}.t1" in str(e.value)
    with pytest.raises(weights.NoReleasedWeightsError) as e:
        zoo.create_model(f"{RESNET}.t9", pretrained=True)
    assert e.value.released == [f"{RESNET}.t1", f"{RESNET}.t2"]
    with torch.device("meta"):                                   # untrained still builds (no init cost)
        assert zoo.create_model(UNRELEASED).num_features == 384


def test_hash_mismatch_names_file_expected_actual(env, tmp_path, monkeypatch):
    folder = copy_release(env, tmp_path)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder.parent))
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01                        # one bit inside the tensor data: structure intact
    path.write_bytes(bytes(data))
    weights.safetensors_header(path)                      # still a well-formed file
    with pytest.raises(weights.HashMismatchError) as e:
        zoo.create_model(f"{RESNET}.t1", pretrained=True)
    expected = env[RESNET]["files"]["model.safetensors"]
    assert e.value.file == str(path) and e.value.expected == expected
    assert e.value.actual == weights.sha256_file(path) != expected
    for part in (str(path), expected, e.value.actual):
        assert part in str(e.value)


def test_truncated_and_corrupt_files(env, tmp_path, monkeypatch):
    folder = copy_release(env, tmp_path)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder.parent))
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(weights.CorruptWeightsError) as e:
        zoo.create_model(f"{RESNET}.t1", pretrained=True)
    assert e.value.file == str(path) and "truncated" in str(e.value) and str(path) in str(e.value)
    path.write_bytes(data[:5])
    with pytest.raises(weights.CorruptWeightsError, match="truncated"):
        zoo.create_model(f"{RESNET}.t1", pretrained=True)
    path.write_bytes(b"\x80\x02}q\x00." + b"\x00" * 64)     # a pickle under the safetensors name
    with pytest.raises(weights.CorruptWeightsError, match="not a safetensors"):
        zoo.create_model(f"{RESNET}.t1", pretrained=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 12)
    with pytest.raises(weights.CorruptWeightsError, match="12 bytes for shape"):
        zoo.create_model(f"{RESNET}.t1", pretrained=True)


def odd_offsets() -> bytes:
    """A safetensors file whose one tensor has a single data offset."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 16


def test_corrupt_reasons_name_the_numbers(tmp_path):
    """safetensors' reader refuses these files; the error says why with the file's own numbers."""
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(4)}, str(path))
    good = path.read_bytes()
    assert weights.safetensors_header(path) == {"w": {"dtype": "F32", "shape": [4]}}
    cases = {good + b"\x00" * 7: "7 trailing bytes after the last tensor",
             good[:-4]: f"truncated: {len(good) - 4} bytes, the header needs {len(good)}",
             good[:8] + b"[" + good[9:]: "unreadable safetensors header",
             struct.pack("<Q", len(good)) + good[8:]: f"header of {len(good)} bytes in a {len(good)}-byte file",
             odd_offsets(): "malformed header entry: data_offsets must be [start, stop]"}
    for data, reason in cases.items():
        path.write_bytes(data)
        with pytest.raises(weights.CorruptWeightsError) as e:
            weights.safetensors_header(path)
        assert reason in str(e.value) and str(path) in str(e.value), (reason, str(e.value))


@pytest.mark.parametrize("revision", ["", "@v1", "@0123abc"])
def test_hub_repo_is_checked_against_the_table_at_any_pinned_revision(env, tmp_path, monkeypatch, revision):
    """The table records a repo's hash with no revision: a pinned revision (tag, short sha) keeps the
    check, so a repo whose weights and config were both replaced does not load."""
    snapshot = tmp_path / "snapshots" / "0123abc0123abc"
    shutil.copytree(copy_release(env, tmp_path), snapshot)
    other = tmp_path / "other.safetensors"                   # the replaced weights, recorded by the replaced config
    save_file({k: v + 1 for k, v in load_file(str(snapshot / "model.safetensors")).items()}, str(other))
    config = json.loads((snapshot / "config.json").read_text())
    config["zoo"]["files"]["model.safetensors"] = weights.sha256_file(other)
    (snapshot / "config.json").write_text(json.dumps(config))
    shutil.copy(other, snapshot / "model.safetensors")
    table = json.loads(env["table"].read_text())
    table[f"{RESNET}.t1"].update(hf_hub_id="org/repo", revision=None)
    (tmp_path / "table.json").write_text(json.dumps(table))      # a private copy: the module's table stays
    monkeypatch.setenv(weights.TABLE_ENV, str(tmp_path / "table.json"))
    monkeypatch.setattr(weights, "_hub_download", lambda repo, where, filename, local, cache_dir: snapshot / filename)
    with pytest.raises(weights.HashMismatchError):
        zoo.create_model(f"hf-hub:org/repo{revision}")


def test_folder_loads_check_the_config_hashes(env, tmp_path):
    folder = copy_release(env, tmp_path)
    assert same_weights(zoo.create_model(str(folder)), env["p_" + RESNET])
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-5] ^= 0x04
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(weights.HashMismatchError) as e:
        zoo.create_model(f"local-dir:{folder}")
    assert e.value.expected == env[RESNET]["files"]["model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    del config["zoo"]                                         # a plain timm folder: loads, with a warning
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="no SHA-256"):
        zoo.create_model(str(folder))
    with pytest.raises(FileNotFoundError, match="hf-hub:"):
        zoo.create_model("org/not_a_folder")


def test_offline_not_cached_says_what_to_do(env, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "empty"))
    with pytest.raises(weights.WeightsNotCachedError) as e:
        zoo.create_model(f"{RESNET}.t1", pretrained=True, cache_dir=tmp_path / "hf")
    msg = str(e.value)
    assert "HF_HUB_OFFLINE=0" in msg and "clone" in msg and env[RESNET]["hf_hub_id"] in msg
    assert "model.safetensors" in msg and isinstance(e.value, OSError)


def test_shape_mismatch_names_key_expected_got(env, tmp_path, monkeypatch):
    folder = copy_release(env, tmp_path)
    table = json.loads(env["table"].read_text())
    state = plain(env["p_" + RESNET]).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    table[f"{RESNET}.t1"]["files"]["model.safetensors"] = weights.sha256_file(folder / "model.safetensors")
    (tmp_path / "table.json").write_text(json.dumps(table))
    monkeypatch.setenv(weights.TABLE_ENV, str(tmp_path / "table.json"))
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder.parent))
    with pytest.raises(weights.ShapeMismatchError) as e:
        zoo.create_model(f"{RESNET}.t1", pretrained=True)
    assert (e.value.key, e.value.expected, e.value.got) == ("conv1.weight", (64, 3, 7, 7), (64, 3, 3, 3))
    assert "conv1.weight" in str(e.value) and "(64, 3, 7, 7)" in str(e.value)


def test_shape_check_catches_missing_and_extra_keys():
    expected = {"a": (2,), "b": (3,)}
    with pytest.raises(weights.ShapeMismatchError) as e:
        weights.check_state_shapes({"a": (2,), "c": (1,)}, expected, "f")
    assert (e.value.key, e.value.expected, e.value.got) == ("b", (3,), None) and "1 more" in str(e.value)


# ------------------------------------------------------------------------------------------------
# Maskers

def test_create_masker_loads_released_masker(env):
    ref = env["p_" + RESNET].masker
    for name in (f"{RESNET}.t1", RESNET, str(env["wdir"] / f"{RESNET}.t1")):
        masker = zoo.create_masker(name)
        assert isinstance(masker, TinyMasker) and not masker.training
        assert torch.equal(masker(X), ref(X))
    fresh = zoo.create_masker(RESNET, pretrained=False)
    assert not torch.equal(fresh(X), ref(X))


def test_create_masker_errors(env, tmp_path, monkeypatch):
    with pytest.raises(weights.NoReleasedWeightsError, match="masker"):
        zoo.create_masker(f"{RESNET}.t2")                     # released without its masker
    folder = copy_release(env, tmp_path)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder.parent))
    data = bytearray((folder / "masker.safetensors").read_bytes())
    data[-2] ^= 0x10
    (folder / "masker.safetensors").write_bytes(bytes(data))
    with pytest.raises(weights.HashMismatchError, match="masker.safetensors"):
        zoo.create_masker(f"{RESNET}.t1")


# ------------------------------------------------------------------------------------------------
# The table and the cfg

def test_table_entries_carry_cfg_hashes_and_card_facts(env):
    table = weights.load_table()
    for key, e in table.items():
        cfg = weights.cfg_for_timm(e["pretrained_cfg"])
        PretrainedCfg(**cfg)                                   # only keys timm knows
        assert not set(e["pretrained_cfg"]) & set(weights.SOURCE_KEYS)
        assert cfg["num_classes"] == 0 and cfg["classifier"] and cfg["first_conv"]
        assert cfg["custom_load"] is False
        folder = env["wdir"] / key
        assert set(e["files"]) == {p.name for p in folder.iterdir()}
        for f, sha in e["files"].items():
            assert weights.sha256_file(folder / f) == sha and len(sha) == 64
        for fact in ("metrics", "recipe", "commit", "license", "paper", "exported", "hf_hub_id", "pretrainer"):
            assert fact in e


def test_make_pretrained_cfg_drops_timm_sources():
    cfg = weights.make_pretrained_cfg("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, tag="x",
                                      mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    assert cfg["custom_load"] is False            # timm's own vit_tiny cfg says True (an .npz loader)
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == (0.1, 0.2, 0.3)
    assert cfg["classifier"] == "head" and cfg["first_conv"] == "patch_embed.proj" and cfg["num_classes"] == 0
    assert not set(cfg) & set(weights.SOURCE_KEYS) and "paper_ids" not in cfg   # not timm's supervised paper
    r = weights.make_pretrained_cfg("resnet18", {}, image_size=32)
    assert r["pool_size"] is None and "test_input_size" not in r and "origin_url" not in r


def test_update_table_order_and_default(env, tmp_path):
    table = tmp_path / "t.json"
    a, b, c = ({"name": n, "tag": t} for n, t in (("m1", "a"), ("m2", "x"), ("m1", "b")))
    for e in (a, b, c):
        update_table(e, table)
    assert list(weights.load_table(table)) == ["m1.a", "m1.b", "m2.x"]
    assert weights.find_release("m1", None, weights.load_table(table))[0] == "m1.a"
    update_table(dict(c, extra=1), table, default=True)
    assert list(weights.load_table(table)) == ["m1.b", "m1.a", "m2.x"]
    assert weights.load_table(table)["m1.b"]["extra"] == 1
    assert not list(tmp_path.glob(".t.json*"))                  # atomic write left no temp file
