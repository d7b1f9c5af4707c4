"""A run directory: what `train/pretrain.py` leaves behind, and how everything else reads it.

    runs/NAME/
      recipe.yaml               the resolved recipe (model, objective, model_args, every knob)
      pretrainer.safetensors    the whole pretrainer's state (backbone, heads, teacher, masker)
      log.jsonl                 one JSON object per logged step
      metrics.json              evaluation results, merged by knn / linear / finetune / mask score
      state/                    accelerate resume state (trusted, local, never published)
      snapshots/step_*.safetensors  the exported backbone every `snapshot_every` steps, fp16 like a
                                release: what train/curve.py measures along the training

Example:
    >>> from zoo.runs import load_pretrainer
    >>> pretrainer, recipe = load_pretrainer("runs/adios_resnet18")   # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from zoo.registry import create_pretrainer


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file so that a reader sees the old content or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """safetensors, written atomically; tensors are made contiguous and unshared."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata)
    os.replace(tmp, path)


def save_pretrainer(run_dir: str | os.PathLike, pretrainer, recipe: dict) -> None:
    run_dir = Path(run_dir)
    atomic_write(run_dir / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
    save_tensors(run_dir / "pretrainer.safetensors", pretrainer.state_dict())


def cast_state(state: dict, dtype: torch.dtype | None) -> dict:
    """A state dict on the CPU with its floating tensors in `dtype` (None: as they are)."""
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu()
            for k, v in state.items()}


SNAPSHOTS = "snapshots"


def snapshot_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step_{step:08d}.safetensors"


def save_snapshot(run_dir: str | os.PathLike, step: int, backbone) -> Path:
    """The exported backbone at `step`, cast to float16 as train/release.py publishes it (so the
    last snapshot holds the released file's tensors)."""
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, cast_state(backbone.state_dict(), torch.float16), {"step": str(step)})
    return path


def snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, file) of a run's backbone snapshots, oldest first ([] when it kept none)."""
    folder = Path(run_dir) / SNAPSHOTS
    named = (re.fullmatch(r"step_(\d{8})\.safetensors", p.name) for p in folder.iterdir()) if folder.is_dir() else ()
    return sorted((int(m.group(1)), folder / m.group(0)) for m in named if m)   # others (a torn write's .tmp) ignored


def build_pretrainer(recipe: dict):
    """The pretrainer a run's recipe describes, freshly built (untrained)."""
    return create_pretrainer(recipe["model"], recipe.get("objective"), **(recipe.get("model_args") or {}))


def exported_architecture(recipe: dict):
    """The exported backbone of a run's recipe, freshly built (untrained)."""
    return build_pretrainer(recipe).exported_backbone()


def load_pretrainer(run_dir: str | os.PathLike):
    """(pretrainer with its trained state, recipe dict) of a finished run directory."""
    run_dir = Path(run_dir)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    pretrainer = build_pretrainer(recipe)
    pretrainer.load_state_dict(load_file(str(run_dir / "pretrainer.safetensors")))
    return pretrainer, recipe


def load_metrics(run_dir: str | os.PathLike) -> dict:
    """run_dir/metrics.json as a dict ({} before any evaluation)."""
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(run_dir: str | os.PathLike, new: dict) -> dict:
    """Merge `new` into run_dir/metrics.json (atomically) and return the whole dict."""
    path = Path(run_dir) / "metrics.json"
    metrics = load_metrics(run_dir)
    metrics.update(new)
    atomic_write(path, json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
