"""Publishing round trips: publish -> zoo.create_model, torch.hub, vanilla timm, and a Hub push.

The released weight is a real tiny method (simclr_vit_tiny_patch4_32 when the methods have
landed; a throwaway registration until then) published into a tmp folder. The Hub is a fake one
on 127.0.0.1 (tests/fake_hub.py); the client side runs in subprocesses with HF_ENDPOINT pointing
at it, offline mode off and HF_HOME in tmp. Nothing touches the network.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from timm.models._pretrained import PretrainedCfg

import zoo
from zoo import publish as zpub
from zoo import weights
from zoo.data import dataset_stats
from zoo.registry import METHODS
from zoo.runs import save_pretrainer, update_metrics
from fake_hub import FakeHub
from zoo_testing import make_release, throwaway_method, tiny_name

REPO = Path(__file__).resolve().parents[1]
TAG = "t1"
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    """A published tiny release (fp32) and its fp16 twin, with the table pointed at them."""
    root = tmp_path_factory.mktemp("pub")
    wdir, table = root / "weights", root / "released.json"
    with contextlib.ExitStack() as stack:
        name = tiny_name()
        if name is None:                       # the methods have not landed: a throwaway method
            name = stack.enter_context(throwaway_method("zootestpub", archs=("vit_tiny_patch4_32",)))[0]
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setenv(weights.TABLE_ENV, str(table))
        mp.setenv(weights.WEIGHTS_ENV, str(wdir))
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        entry, pretrainer = make_release(wdir, name, TAG, table, seed=0)
        half, _ = make_release(wdir, name, "half", table, seed=0, dtype="float16")
        backbone = pretrainer.exported_backbone().eval()
        with torch.no_grad():
            y = backbone(X)
        io = root / "io.safetensors"                 # inputs and expected outputs for the subprocesses
        save_file({"x": X, "y": y.contiguous()}, str(io))
        yield dict(root=root, wdir=wdir, table=table, name=name, entry=entry, half=half,
                   pretrainer=pretrainer, backbone=backbone, y=y, io=io, folder=wdir / f"{name}.{TAG}")


def run_py(code: str, env: dict, cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, f"subprocess failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    return r.stdout


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "ZOO_", "PYTHONPATH", "HUGGINGFACE"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)
    return env


# ------------------------------------------------------------------------------------------------
# publish -> zoo

def test_publish_then_create_model_identical(env):
    name, y = env["name"], env["y"]
    for source in (f"{name}.{TAG}", str(env["folder"]), f"local-dir:{env['folder']}"):
        model = zoo.create_model(source, pretrained=True if "." in source[-4:] else None).eval()
        with torch.no_grad():
            assert torch.equal(model(X), y), source


def test_fp16_release_is_the_rounded_backbone(env):
    model = zoo.create_model(f"{env['name']}.half", pretrained=True).eval()
    rounded = {k: (v.half().float() if v.is_floating_point() else v)
               for k, v in env["backbone"].state_dict().items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in rounded.items())
    assert (env["wdir"] / f"{env['name']}.half" / "model.safetensors").stat().st_size < \
        0.55 * (env["folder"] / "model.safetensors").stat().st_size


def test_config_json_is_timm_layout_with_zoo_block(env):
    config = json.loads((env["folder"] / "config.json").read_text())
    entry = METHODS[env["name"]]
    assert config["architecture"] == entry.timm_arch and config["model_args"] == entry.model_args
    assert config["num_classes"] == 0 and config["num_features"] == env["backbone"].num_features
    PretrainedCfg(**config["pretrained_cfg"])                    # only keys timm knows
    assert not set(config["pretrained_cfg"]) & set(weights.SOURCE_KEYS)
    block = config["zoo"]
    assert set(block["files"]) == {"model.safetensors", "recipe.yaml", "README.md"} | (
        {"masker.safetensors"} if env["pretrainer"].masker is not None else set())
    for f, sha in block["files"].items():
        assert weights.sha256_file(env["folder"] / f) == sha
    assert block["pretrainer"] == {"model": env["name"], "objective": None, "model_args": {}}
    assert block["metrics"]["fashion_mnist/knn_top1_k20"] == 81.5 and block["commit"].startswith("0123")
    assert yaml.safe_load((env["folder"] / "recipe.yaml").read_text())["model"] == env["name"]
    assert env["entry"]["files"]["config.json"] == weights.sha256_file(env["folder"] / "config.json")


def test_model_card_front_matter_and_body(env):
    card = ModelCard.load(env["folder"] / "README.md")
    assert card.data.library_name == "timm" and card.data.license == "apache-2.0"
    assert "self-supervised" in card.data.tags and card.data.datasets == ["zalando-datasets/fashion_mnist"]
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {"kNN top-1 (k=20), fashion_mnist": 81.5, "kNN top-1 (k=200), fashion_mnist": 80.25,
                       "linear probe top-1, fashion_mnist": 84.0}        # baselines are not the model's
    assert {r.dataset_type for r in card.data.eval_results} == {"zalando-datasets/fashion_mnist"}
    body = card.text
    for needle in ("T = 0.1", "k = 20 and k = 200", "frozen, unaugmented",
                   "| kNN top-1 (k=20), fashion_mnist | 81.5 | 30 | 70 |", "| kNN top-1 (k=200), fashion_mnist | 80.25 | - | - |",
                   "untrained, same run | raw pixels, same run |", "    python train/knn.py runs/x --baselines",
                   "fashion_mnist/knn_protocol: weighted kNN, T=0.1", "pretrain wall_clock_s: 1.5",
                   "## Exported network", METHODS[env["name"]].describe_export(),
                   "0123456789abcdef", "epochs: 1", "wall-clock: 1 s",
                   env["entry"]["files"]["model.safetensors"]):
        assert needle in body, needle


def fake_card(**changes) -> str:
    """A card rendered by zoo/card_template.md for a fake entry (no registration, no files)."""
    from types import SimpleNamespace
    entry = SimpleNamespace(method="fakemethod", arch="fake_arch", timm_arch="resnet18", ours=False,
                            paper_title="A Fake Paper (Doe et al., 2099)", paper_id="arXiv:9999.99999")
    for k in [k for k in changes if hasattr(entry, k)]:
        setattr(entry, k, changes.pop(k))
    kw = dict(name="fakemethod_fake_arch", tag="d", entry=entry, num_features=512, hf_hub_id="org/fake.d",
              cfg={"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
              exported="the fake encoder", recipe={"model": "fakemethod_fake_arch", "data": "d", "objective": "obj"},
              metrics={"d/knn_top1_k20": 80.0, "d/raw_pixels/knn_top1_k20": 85.5, "d/untrained/knn_top1_k20": 30,
                       "d/linear_top1": 83.25, "d/random_masks/knn_top1_k20": 77.0, "d/knn_protocol": "weighted",
                       "pretrain": {"steps": 3}, "seeds": {"0": {"knn_top1_k20": 80.0, "wall_clock_s": 90},
                                                           "1": {"knn_top1_k20": 82.0, "wall_clock_s": 60,
                                                                 "mixed_precision": "no", "machine": "box2"}}},
              commands={"knn": "python train/knn.py RUN"}, commit="c0ffee", files={"model.safetensors": "ab12"},
              has_masker=True, facts={"machine": "box"}, license="mit", dtype="float16")
    kw.update(changes)
    return zpub.model_card(**kw)


def test_card_template_has_every_section():
    card = ModelCard(fake_card())
    assert card.data.library_name == "timm" and card.data.license == "mit" and "fakemethod" in card.data.tags
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        "kNN top-1 (k=20), d": 80.0, "linear probe top-1, d": 83.25}
    body = [line for line in card.text.splitlines() if line]
    assert body[0] == "# fakemethod_fake_arch.d"
    assert body[1] == ("**Does not beat the trivial baseline on its own test set:** kNN k=20 80.0 <= raw pixels "
                       "85.5 (a CPU-scale run; the Results below have every number).")
    assert body[2].startswith("A self-supervised `resnet18` backbone (fake_arch) pretrained with **fakemethod** "
                              "on a obj base on `d` by the zoo.")
    assert "input (3, 32, 32), mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25)." in body[2]
    headings = [line for line in body if line.startswith("## ")]
    assert headings == ["## Use", "## Results", "## Exported network", "## Training", "## Files", "## Paper",
                        "## Licence"]
    for needle in ('masker = zoo.create_masker("fakemethod_fake_arch.d")', "hf-hub:org/fake.d", zpub.PROTOCOL,
                   "| metric (test split) | this model | untrained, same run | raw pixels, same run |",
                   "| kNN top-1 (k=20), d | 80 | 30 | 85.5 |", "| linear probe top-1, d | 83.25 | - | - |",
                   "| kNN top-1 (k=20), d random_masks (baseline) | 77 | - | - |",
                   "Re-measure (prints these numbers):", "    python train/knn.py RUN", "- d/knn_protocol: weighted",
                   "| seed | kNN top-1 (k=20) | pretraining (wall-clock, precision, host) |", "| 0 | 80.00 | 1.5 min |",
                   "| 1 | 82.00 | 1.0 min, fp32, box2 |",
                   "| mean ± sd | 81.00 ± 1.41 | |",
                   "This file holds the fake encoder. Stored as float16.",
                   "- Method: fakemethod, objective obj; pretrainer `fakemethod_fake_arch`.",
                   "- Code commit: `c0ffee`.", "- machine: box", "- pretrain steps: 3", "```yaml", "data: d",
                   "| model.safetensors | `ab12` |", "A Fake Paper (Doe et al., 2099), arXiv:9999.99999.",
                   "mit. Trained and published with the zoo (Apache-2.0)."):
        assert needle in card.text, needle
    assert card.content.endswith("(Apache-2.0).\n") and "{{" not in card.content and "{%" not in card.content


def test_card_template_leaves_out_what_does_not_apply():
    text = fake_card(metrics={"d/knn_top1_k20": 90.0, "d/raw_pixels/knn_top1_k20": 85.5}, paper_title="",
                     paper_id="", has_masker=False, commands={}, ours=True)
    body = [line for line in text.split("---", 2)[2].splitlines() if line]
    assert body[0] == "# fakemethod_fake_arch.d" and body[1].startswith("A self-supervised")   # beats raw pixels
    assert "(a pairing no paper ran: ours)" in body[1]
    for absent in ("## Paper", "create_masker", "Seeds", "Protocols as run", "Re-measure"):
        assert absent not in text, absent
    assert "No measuring command was recorded." in text
    assert "No metrics were recorded for this weight." in fake_card(metrics={})


def test_card_low_label_rows_pair_scratch_and_raw_pixel_logreg():
    """train/finetune.py's low-label keys: the scratch run is the untrained column, the raw-pixel
    logistic regression the raw column; a fine-tune at or below either is named in the first line."""
    metrics = {"d/knn_top1_k20": 90.0, "d/raw_pixels/knn_top1_k20": 85.5,
               "d/finetune_top1_1pct": 70.5, "d/untrained/finetune_top1_1pct": 71.25,
               "d/raw_pixels/logreg_top1_1pct": 69.0,
               "d/finetune_top1_10pct": 88.0, "d/untrained/finetune_top1_10pct": 80.0,
               "d/raw_pixels/logreg_top1_10pct": 90.5}
    assert zpub.below_baselines(metrics, "d") == ["fine-tune 1 % labels 70.5 <= from scratch 71.2",
                                                  "fine-tune 10 % labels 88.0 <= raw pixels 90.5"]
    card = ModelCard(fake_card(metrics=metrics, commands={"_1pct": "python train/finetune.py X --labels 0.01"}))
    assert "| fine-tune top-1, 1 % labels, d | 70.5 | 71.25 | 69 |" in card.text
    assert "| fine-tune top-1, 10 % labels, d | 88 | 80 | 90.5 |" in card.text
    assert "logreg" not in card.text.split("## Results")[1].split("## Exported")[0].split("Re-measure")[0]
    assert "    python train/finetune.py X --labels 0.01" in card.text
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["fine-tune top-1, 1 % labels, d"] == 70.5
    body = [line for line in card.text.splitlines() if line]
    assert body[1].startswith("**Does not beat the trivial baseline") and "from scratch 71.2" in body[1]


def test_publish_is_atomic_and_checks_the_backbone(env, tmp_path, monkeypatch):
    out = tmp_path / "w" / "x.t"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("old release")

    def broken(**kw):
        raise RuntimeError("card failed")
    monkeypatch.setattr(zpub, "model_card", broken)
    with pytest.raises(RuntimeError, match="card failed"):
        zpub.publish(env["backbone"], out, env["name"], "t", recipe={"model": env["name"]}, metrics={})
    assert [p.name for p in out.iterdir()] == ["old.txt"]           # the old folder, untouched
    assert [p.name for p in out.parent.iterdir()] == ["x.t"]          # no temp folder left
    other = timm.create_model("resnet18", num_classes=0)          # not the backbone of this name
    with pytest.raises(weights.ShapeMismatchError):
        zpub.publish(other, tmp_path / "y", env["name"], "t", recipe={})
    with pytest.raises(ValueError, match="tag"):
        zpub.publish(env["backbone"], tmp_path / "z", env["name"], "a.b", recipe={})


# ------------------------------------------------------------------------------------------------
# torch.hub

def load_hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_hub_load_local(env):
    name = env["name"]
    model = torch.hub.load(str(REPO), name, source="local", tag=TAG).eval()
    with torch.no_grad():
        assert torch.equal(model(X), env["y"])
    ft = torch.hub.load(str(REPO), name, source="local", num_classes=4)     # t1 listed first: the default
    assert ft(X).shape == (2, 4)
    assert all(torch.equal(ft.state_dict()[k], v) for k, v in env["backbone"].state_dict().items())


def test_hubconf_entrypoints_and_docstrings(env):
    hub = load_hubconf()
    public = sorted(k for k, v in vars(hub).items() if callable(v) and not k.startswith("_"))
    assert public == zoo.list_models()                   # one entrypoint per name, nothing else
    assert all("." not in k for k in public)
    assert isinstance(hub.dependencies, list) and "timm" in hub.dependencies
    for dep in hub.dependencies:
        assert importlib.util.find_spec(dep) is not None
    doc = getattr(hub, env["name"]).__doc__
    assert (f"{TAG}: kNN top-1 (k=20), fashion_mnist 81.5, kNN top-1 (k=200), fashion_mnist 80.25, "
            "linear probe top-1, fashion_mnist 84 (data: fashion_mnist)") in doc and "half:" in doc


# ------------------------------------------------------------------------------------------------
# Vanilla timm (no zoo) and the Hub

@pytest.fixture(scope="module")
def hub(rel):
    """Push the release to a fake Hub from a subprocess, then resolve it through zoo's Hub path there."""
    with FakeHub() as server:
        root = rel["root"]
        table = json.loads(rel["table"].read_text())
        table_path = root / "hub_table.json"
        repo_id = f"org/{rel['name']}.{TAG}"
        env = clean_env(HF_ENDPOINT=server.url, HF_HOME=str(root / "hf_home"), HF_TOKEN="hf_fake",
                        PYTHONPATH=str(REPO), ZOO_WEIGHTS_DIR=str(root / "no_weights_here"),
                        ZOO_RELEASED=str(table_path))
        key = f"{rel['name']}.{TAG}"
        (root / "hub_table.json").write_text(json.dumps({key: table[key]}))    # hf_hub_id: the default org
        out = run_py(f"""
            import runpy, sys, torch, zoo
            from pathlib import Path
            from safetensors.torch import load_file
            from zoo import weights
            io = load_file({str(rel['io'])!r})
            sys.argv = ["publish.py", {str(rel['folder'])!r}, "--push", {repo_id!r}]   # push a published folder
            runpy.run_path({str(REPO / "train" / "publish.py")!r}, run_name="__main__")
            oid = weights.load_table()[{key!r}]["revision"]
            assert weights.load_table()[{key!r}]["hf_hub_id"] == {repo_id!r}
            for source in ({key!r}, "hf-hub:{repo_id}"):
                model = zoo.create_model(source, pretrained=True).eval()
                with torch.no_grad():
                    assert torch.allclose(model(io["x"]), io["y"], atol=1e-5), source
            # the hash is checked on the Hub path too: damage the cached blob
            path = weights.resolve_file({key!r}, "model.safetensors")
            assert "hf_home" in str(path), path
            data = bytearray(Path(path).read_bytes()); data[-3] ^= 1; Path(path).write_bytes(bytes(data))
            try:
                zoo.create_model({key!r}, pretrained=True)
                raise SystemExit("no HashMismatchError")
            except weights.HashMismatchError as err:
                print("HASH", err.file)
            data[-3] ^= 1; Path(path).write_bytes(bytes(data))
            print("OID", oid)
        """, env, root)
        yield dict(server=server, repo_id=repo_id, out=out, env=env)


def test_push_and_zoo_hub_resolution(rel, hub):
    files = hub["server"].files(hub["repo_id"])
    assert set(files) == {p.name for p in rel["folder"].iterdir()}
    for f, data in files.items():
        assert data == (rel["folder"] / f).read_bytes()
    assert "HASH" in hub["out"] and "hf_home" in hub["out"]
    oid = hub["out"].split("OID ")[1].split()[0]
    assert any(f"/resolve/{oid}/model.safetensors" in r for r in hub["server"].requests)   # pinned revision


def test_vanilla_timm_local_dir_and_hf_hub(rel, hub):
    """A process that never imports zoo loads the folder and the pushed repo with plain timm."""
    env = dict(hub["env"])
    for k in ("PYTHONPATH", "ZOO_WEIGHTS_DIR", "ZOO_RELEASED"):
        env.pop(k)
    env["HF_HOME"] = str(rel["root"] / "hf_home_vanilla")     # a cold cache: a real download
    out = run_py(f"""
        import sys, timm, torch
        from safetensors.torch import load_file
        io = load_file({str(rel['io'])!r})
        for source in ("local-dir:{rel['folder']}", "hf-hub:{hub['repo_id']}"):
            model = timm.create_model(source, pretrained=True).eval()
            with torch.no_grad():
                assert torch.allclose(model(io["x"]), io["y"], atol=1e-5), source
            assert model.num_classes == 0
        ft = timm.create_model("hf-hub:{hub['repo_id']}", pretrained=True, num_classes=5)
        assert ft(io["x"]).shape == (2, 5)
        assert "zoo" not in sys.modules
        print("VANILLA OK")
    """, env, rel["root"])
    assert "VANILLA OK" in out


# ------------------------------------------------------------------------------------------------
# train/publish.py

def test_train_publish_cli(env, tmp_path, monkeypatch):
    name = env["name"]
    pretrainer = zoo.create_pretrainer(name).eval()
    run = tmp_path / "run"
    recipe = {"model": name, "objective": None, "model_args": {}, "data": "scenes", "image_size": 32,
              "mean": None, "std": None, "commit": "feedbeef"}      # None: the dataset's own statistics
    save_pretrainer(run, pretrainer, recipe)
    update_metrics(run, {"scenes/knn_top1_k20": 42.0, "pretrain": {"wall_clock_s": 12.5}})
    spec = importlib.util.spec_from_file_location("train_publish", REPO / "train" / "publish.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    table = tmp_path / "released.json"
    entry = cli.main([str(run), "--tag", "scenes", "--out", str(tmp_path / "w" / f"{name}.scenes"),
                      "--table", str(table), "--fact", "machine=test box"])
    assert list(weights.load_table(table)) == [f"{name}.scenes"]
    assert entry["commit"] == "feedbeef" and entry["metrics"]["pretrain"]["wall_clock_s"] == 12.5
    assert entry["metrics"]["scenes/knn_top1_k20"] == 42.0 and entry["dtype"] == "float16"
    assert entry["commands"]["knn"] == f"python train/knn.py {run} --baselines"
    assert entry["commands"]["mask"] == f"python train/maskscore.py {run}"
    assert entry["hf_hub_id"] == f"{zpub.DEFAULT_HUB_ORG}/{name}.scenes"
    model = zoo.create_model(str(tmp_path / "w" / f"{name}.scenes")).eval()
    assert model.pretrained_cfg["mean"] == dataset_stats("scenes")["mean"]
    ref = {k: (v.half().float() if v.is_floating_point() else v)
           for k, v in pretrainer.exported_backbone().state_dict().items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())
    card = (tmp_path / "w" / f"{name}.scenes" / "README.md").read_text()
    assert "machine: test box" in card and "feedbeef" in card and "pretrain wall_clock_s: 12.5" in card
    pushed = []
    monkeypatch.setattr(zpub, "push", lambda folder, repo, private=False: pushed.append((folder, repo)) or "c0ffee")
    entry = cli.main([str(run), "--tag", "scenes", "--out", str(tmp_path / "w2"), "--table", str(table),
                      "--push", "org/x.scenes", "--default"])
    assert pushed == [(tmp_path / "w2", "org/x.scenes")]
    assert weights.load_table(table)[f"{name}.scenes"]["revision"] == "c0ffee"
    assert entry["hf_hub_id"] == "org/x.scenes" and "hf-hub:org/x.scenes" in (tmp_path / "w2" / "README.md").read_text()
