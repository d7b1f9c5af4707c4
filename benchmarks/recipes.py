"""Find the CPU-scale recipe (recipes/*.yaml) of a pretrainer, so benchmarks use its settings.

A recipe matches a case when its `model` is the registered name and its `objective` (or the
method's default) is the case's objective. Among several, the 32 px ones come first, then
Fashion-MNIST (the releases' data), then by file name, so the choice is deterministic.

Example:
    >>> from benchmarks.recipes import find
    >>> find("no_such_model", None) is None
    True
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def _all(root: str) -> tuple[dict, ...]:
    out = []
    for path in sorted(Path(root, "recipes").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("model"):
            out.append(dict(data, path=str(path.relative_to(root))))
    return tuple(out)


def find(name: str, objective: str | None, root: Path = ROOT) -> dict | None:
    """The recipe dict (plus "path") for `name` with `objective`, or None."""
    default = None
    try:
        from zoo.registry import get_method
        default = get_method(name).default_objective
    except (ImportError, ValueError):
        pass
    hits = [r for r in _all(str(root)) if r["model"] == name
            and (r.get("objective") or default) == (objective or default)]
    hits.sort(key=lambda r: (r.get("image_size", 32) != 32, r.get("data") != "fashion_mnist", r["path"]))
    return hits[0] if hits else None


def optimizers_from_recipe(recipe: dict, pretrainer) -> dict | None:
    """Per-phase optimizers built by the training code from a recipe (None if unavailable)."""
    try:
        from train.optim import build_optimizer, phase_named_parameters
        from train.recipe import Recipe
    except ImportError:
        return None
    r = Recipe.load(ROOT / recipe["path"])
    return {ph: build_optimizer(r, ph, phase_named_parameters(pretrainer, ph)) for ph in pretrainer.phases}
