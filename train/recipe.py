"""A pretraining recipe: every knob of a run, typed, loaded from flat YAML, strict about keys.

    recipe = Recipe.load("recipes/adios_resnet18.simclr_fmnist.yaml", ["epochs=1", "model_args.num_masks=2"])

A recipe file sets the fields of `Recipe` below (the defaults and their reasons are there, in one
place, nanoGPT-style); `key=value` overrides win over the file (values are parsed as YAML, so
`lr=0.1`, `betas=[0.9,0.95]`, `resume=true`; `model_args.KEY=value` reaches into `model_args`,
`phases.PHASE.KEY=value` into a phase's block). An unknown key anywhere, top level, in
`model_args` (checked against `MethodEntry.arguments`) or in `phases` (checked
against the method's registered phases), is an error naming it, the close matches and the valid
choices; so is a value of the wrong type or outside its choices (optimizer, precision, model,
objective, view preset).

Batch semantics: `batch_size` is the GLOBAL batch of one optimizer step, summed over processes
and gradient-accumulation micro-batches. Each process loads micro-batches of
`batch_size // (num_processes * grad_accum)` images, so a recipe means the same optimisation on
one CPU, one GPU with accumulation, or many GPUs.

Per-phase optimizers: the "encoder" phase (every pretrainer's) takes the top-level `optimizer`,
`lr`, `weight_decay`; any other phase the method registers (`zoo.registry.MethodEntry.phases`)
may set its own in the `phases` block, each key defaulting to the top-level value:

    phases: {masker: {lr: 0.1}}                # ADIOS's mask_lr; optimizer and weight decay as the encoder's

`momentum` (SGD, LARS), `betas` (AdamW), the LARS knobs and the schedule shape are shared.
Recipes written before the block (released `weights/*/recipe.yaml`) spell a phase's key
`<phase>_<key>` at the top level (`masker_lr: 0.1`); they still load, translated into the block
with a FutureWarning (`translate_legacy_phase_keys`).

Example:
    >>> from train.recipe import Recipe
    >>> r = Recipe.from_dict({"model": "simclr_resnet18", "epochs": 2, "lr": 0.3})  # doctest: +SKIP
    >>> r.optimizer, r.batch_size                                                    # doctest: +SKIP
    ('lars', 256)
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from zoo.suggest import did_you_mean

OPTIMIZERS = ("lars", "sgd", "adamw")
PRECISIONS = ("bf16", "fp32")
LR_SCALINGS = ("none", "linear")
# Every pretrainer's main phase (zoo.pretrainer.Pretrainer.phases): set by the top-level keys.
MAIN_PHASE = "encoder"
# What a `phases` block may set for one phase (each defaults to the top-level field of that name).
PHASE_KEYS = ("optimizer", "lr", "weight_decay", "grad_clip")


# Recipe fields that do not change what is computed (a resume may change them freely).
BOOKKEEPING = ("resume", "max_steps", "run_dir", "num_workers", "log_every", "ckpt_every",
               "mask_grid_every", "snapshot_every", "tensorboard", "strict_data", "data_root")


class RecipeError(ValueError):
    """A recipe (file or override) names an unknown key or gives a bad value."""


@dataclass
class Recipe:
    """Every knob of a pretraining run (train/pretrain.py). Comments say why the default is what it is."""

    # --- what is trained -----------------------------------------------------------------------
    model: str = ""                      # registered pretrainer "{method}_{arch}" (zoo.list_methods())
    objective: Optional[str] = None      # base objective for methods that take one (ADIOS: simclr)
    model_args: dict = field(default_factory=dict)   # factory keywords (num_masks, mask_ratio, ...)

    # --- data ----------------------------------------------------------------------------------
    data: str = "scenes"                 # zoo.data.build_dataset name: scenes | fashion_mnist | imagefolder | hf:<id>
    data_root: Optional[str] = None      # folder for fashion_mnist / imagefolder (None: the dataset's default)
    data_split: str = "train"            # split to pretrain on ("train+unlabeled" for STL10 through hf:)
    data_args: dict = field(default_factory=dict)    # extra source keywords (scenes: length, seed; fashion_mnist: fit)
    image_size: int = 32
    views: str = "simclr"                # zoo.data.views preset (simclr, byol, mae, extrema, ... and *_gray)
    augment_on: Literal["loader", "device"] = "loader"   # "device": draws per image in the loader,
                                         # ops on the whole batch on the training device (zoo.data.batch_views;
                                         # same-size images; ~10x less CPU than per-image PIL ops)
    jitter: Optional[tuple[float, float, float, float]] = None   # ColorJitter brightness, contrast,
                                         # saturation, hue for every view (None: the preset's; the ADIOS
                                         # scripts set their own)
    mean: Optional[tuple[float, ...]] = None   # normalisation; None: the dataset's own statistics
    std: Optional[tuple[float, ...]] = None
    limit_train: int = 0                 # use only the first N training images (0: all); CPU-scale subsets
    strict_data: bool = False            # an unreadable image stops the run (True) or is skipped and counted
    num_workers: int = 2                 # DataLoader workers per process

    # --- length and batch ----------------------------------------------------------------------
    epochs: int = 100
    max_steps: int = 0                   # stop after this many optimizer steps (0: run all epochs); the
                                         # schedule still spans `epochs` (smoke runs, tests)
    batch_size: int = 256                # GLOBAL batch per optimizer step (all processes x grad_accum)
    grad_accum: int = 1                  # micro-batches per optimizer step

    # --- optimisation (main phase; the others default to these) --------------------------------
    optimizer: Literal["lars", "sgd", "adamw"] = "lars"
    lr: float = 0.3
    lr_scaling: Literal["none", "linear"] = "none"   # "linear": lr * batch_size / 256 (MAE's blr rule)
    weight_decay: float = 1e-5           # never on biases and norm parameters (ndim <= 1)
    grad_clip: float = 0.0               # clip each phase's gradient to this total L2 norm before its step
                                         # (0: off, the ADIOS/MAE references; HPM's clips at 5.0)
    momentum: float = 0.9                # SGD and LARS
    betas: tuple[float, float] = (0.9, 0.95)   # AdamW (MAE, AutoMAE, ExtreMA all use 0.9/0.95)
    lars_eta: float = 0.02               # LARS trust coefficient (solo-learn / ADIOS eta_lars)
    lars_clip: bool = True               # LARS trust-ratio clipping (ADIOS grad_clip_lars)
    phases: dict = field(default_factory=dict)   # {phase: {optimizer, lr, weight_decay}} for the
                                         # method's other phases; unset keys take the values above

    # --- schedule: per step, linear warmup from warmup_start_lr, then cosine to min_lr ---------
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 0.0         # ADIOS: 0.003; MAE / ExtreMA: 0
    min_lr: float = 0.0

    # --- numerics ------------------------------------------------------------------------------
    precision: Literal["bf16", "fp32"] = "bf16"   # bf16 autocast also on CPU (~1.9x on ResNet here)
    channels_last: bool = True           # helps CNNs in bf16; a no-op for ViTs
    sync_bn: bool = False                # SyncBatchNorm across processes (GPU runs with BN backbones)
    seed: int = 0

    # --- bookkeeping ---------------------------------------------------------------------------
    run_dir: str = ""                    # "" -> runs/<recipe file name>
    log_every: int = 10                  # steps between log.jsonl lines / progress-bar updates
    ckpt_every: int = 0                  # steps between resume checkpoints (0: none)
    mask_grid_every: int = 0             # steps between mask pictures (0: only at the end); masked pretrainers
    snapshot_every: int = 0              # steps between fp16 backbone snapshots for train/curve.py (0: none)
    tensorboard: bool = False            # also log to TensorBoard (run_dir/tb)
    resume: bool = False                 # continue from run_dir/state (step-exact)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> "Recipe":
        """Read a YAML recipe, apply `key=value` overrides, check every key and value."""
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"Recipe file {str(path)!r} not found"
                              + _suggest_file(path))
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of keys to values, got {type(values).__name__}")
        values = translate_legacy_phase_keys(values, str(path))   # before the overrides, which then win
        values = apply_overrides(values, overrides)
        values.setdefault("run_dir", "")
        if not values["run_dir"]:
            values["run_dir"] = str(Path("runs") / path.name.removesuffix(".yaml").removesuffix(".yml"))
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_dict(cls, values: dict, source: str = "recipe") -> "Recipe":
        """Build and check a recipe from a plain dict (what `load` does after reading the file)."""
        values = translate_legacy_phase_keys(values, source)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in fields:
                raise RecipeError(_unknown(key, fields, f"{source}: unknown key"))
        hints = typing.get_type_hints(cls)
        checked = {k: _check_type(k, v, hints[k], source) for k, v in values.items()}
        recipe = cls(**checked)
        recipe.validate(source)
        return recipe

    def validate(self, source: str = "recipe") -> None:
        """Values that types alone do not pin down: the model, objective, model_args, views, sizes."""
        if not self.model:
            raise RecipeError(f"{source}: `model` is required (one of zoo.list_methods())")
        entry = _method_entry(self.model, source)
        if entry.objectives:
            if self.objective is None:
                self.objective = entry.default_objective      # saved resolved, never implicit
            elif self.objective not in entry.objectives:
                raise RecipeError(_unknown(self.objective, entry.objectives,
                                           f"{source}: objective of {entry.name}"))
        elif self.objective is not None:
            raise RecipeError(f"{source}: {entry.name} takes no objective, got objective={self.objective!r}")
        check_model_args(entry, self.model_args, source)
        self.phases = check_phases(entry, self.phases, source)
        if entry.takes_img_size:                     # maskers built for a size (ADIOS's U-Net)
            given = self.model_args.setdefault("img_size", self.image_size)
            if given != self.image_size:
                raise RecipeError(f"{source}: model_args.img_size {given} != image_size {self.image_size}; "
                                  "the masker must be built for the images it sees (drop model_args.img_size)")
        check_data(self.data, self.data_args, source)
        try:
            from zoo.data.views import resolve_preset
        except ImportError:          # zoo.data not installed yet: the loader checks it later
            resolve_preset = None
        if resolve_preset is not None:
            try:
                resolve_preset(self.views)
            except ValueError as e:
                raise RecipeError(f"{source}: views: {e}") from None
        for key in ("epochs", "batch_size", "grad_accum", "image_size", "log_every"):
            if getattr(self, key) < 1:
                raise RecipeError(f"{source}: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "limit_train", "num_workers", "ckpt_every", "mask_grid_every", "snapshot_every"):
            if getattr(self, key) < 0:
                raise RecipeError(f"{source}: {key} must be >= 0, got {getattr(self, key)}")
        if self.batch_size % self.grad_accum:
            raise RecipeError(f"{source}: batch_size {self.batch_size} is not divisible by "
                              f"grad_accum {self.grad_accum}")
        for key in ("lr", "weight_decay", "grad_clip", "warmup_epochs", "warmup_start_lr", "min_lr"):
            if getattr(self, key) < 0:
                raise RecipeError(f"{source}: {key} must be >= 0, got {getattr(self, key)}")
        if self.jitter is not None and (any(v < 0 for v in self.jitter) or self.jitter[3] > 0.5):
            raise RecipeError(f"{source}: jitter (brightness, contrast, saturation, hue) must be >= 0 "
                              f"with hue <= 0.5, got {list(self.jitter)}")
        if (self.mean is None) != (self.std is None):
            raise RecipeError(f"{source}: give both mean and std, or neither")

    # --- per-phase optimizer settings ----------------------------------------------------------
    def phase_optimizer(self, phase: str) -> tuple[str, float, float]:
        """(optimizer, lr, weight_decay) of a phase: its `phases` block's values where set, else the
        top-level ones (always for the main phase)."""
        return tuple(self.phase_value(phase, key) for key in ("optimizer", "lr", "weight_decay"))

    def phase_value(self, phase: str, key: str):
        """One of PHASE_KEYS for a phase: its `phases` block's value where set, else the top-level one."""
        value = (self.phases.get(phase) or {}).get(key)
        return getattr(self, key) if value is None else value

    def phase_grad_clip(self, phase: str) -> float:
        """Max gradient norm of a phase (0: no clipping)."""
        return self.phase_value(phase, "grad_clip")

    def to_dict(self) -> dict:
        """Plain YAML-safe dict (tuples as lists): what `recipe.yaml` in the run directory holds."""
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | os.PathLike) -> None:
        from zoo.runs import atomic_write
        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# -------------------------------------------------------------------------------------------------
# Overrides

def apply_overrides(values: dict, overrides: typing.Sequence[str]) -> dict:
    """`["lr=0.1", "model_args.num_masks=4", "phases.masker.lr=0.01"]` -> a new dict; values are
    parsed as YAML scalars/lists/mappings (`phases.masker={lr: 0.01}` replaces that phase's block)."""
    values = dict(values)
    for item in overrides:
        key, sep, raw = item.removeprefix("--").partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(raw) if raw != "" else None
        if (legacy := _legacy_phase_key(key)) is not None:
            key = "phases.{}.{}".format(*legacy)
            warnings.warn(f"override {item!r}: the old per-phase key; read as {key}={raw} (write that)",
                          FutureWarning, stacklevel=2)
        parts = key.split(".")
        if parts[0] == "model_args" and len(parts) == 2:
            values["model_args"] = {**_mapping(values.get("model_args"), "model_args"), parts[1]: value}
        elif parts[0] == "phases" and len(parts) in (2, 3):
            phases = dict(_mapping(values.get("phases"), "phases"))
            if len(parts) == 3:
                value = {**_mapping(phases.get(parts[1]), f"phases.{parts[1]}"), parts[2]: value}
            phases[parts[1]] = value
            values["phases"] = phases
        elif "." in key:
            raise RecipeError(f"override {item!r}: only model_args.KEY and phases.PHASE[.KEY] may be nested")
        else:
            values[key] = value
    return values


def _mapping(value, key: str) -> dict:
    """A nested block an override reaches into: absent is empty, anything but a mapping is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{key} must be a mapping, got {value!r}")
    return value


# -------------------------------------------------------------------------------------------------
# Phases: the `phases` block, checked against the method's registered phases; the old flat keys

def check_phases(entry, phases: dict, source: str = "recipe") -> dict:
    """The checked `phases` block: each phase one the method steps (not the main one, which the
    top-level keys set), each key one of PHASE_KEYS with a valid value; null keys (default) dropped."""
    hints = typing.get_type_hints(Recipe)
    checked = {}
    for phase, block in phases.items():
        if phase == MAIN_PHASE:
            # one place per value: a second spelling of the top-level keys could only agree or conflict
            raise RecipeError(f"{source}: phases.{phase}: the {MAIN_PHASE} phase takes the top-level "
                              f"{', '.join(PHASE_KEYS)}; set those instead")
        if phase not in entry.phases:
            others = [p for p in entry.phases if p != MAIN_PHASE]
            hint = did_you_mean(phase, entry.phases, quote=True)
            raise RecipeError(
                f"{source}: phases: {entry.name} has no phase {phase!r}.{hint} "
                + (f"Its phases: {', '.join(entry.phases)}; the block may set {', '.join(others)}." if others else
                   f"Its only phase is {MAIN_PHASE}, which the top-level {', '.join(PHASE_KEYS)} set."))
        for key, value in _mapping(block, f"{source}: phases.{phase}").items():
            if key not in PHASE_KEYS:
                raise RecipeError(_unknown(key, PHASE_KEYS, f"{source}: phases.{phase}: unknown key"))
            if value is None:
                continue
            value = _check_type(f"phases.{phase}.{key}", value, hints[key], source)
            if key != "optimizer" and value < 0:
                raise RecipeError(f"{source}: phases.{phase}.{key} must be >= 0, got {value}")
            checked.setdefault(phase, {})[key] = value
    return checked


def _legacy_phase_key(key: str) -> tuple[str, str] | None:
    """(phase, key) of an old flat per-phase key (`masker_lr` -> ("masker", "lr")): `<phase>_<key>`
    where <phase> is a non-main phase of some registered method and <key> one of the keys the flat
    format had (optimizer, lr, weight_decay; grad_clip came with the block)."""
    if key in _field_names():
        return None
    for name in PHASE_KEYS[:3]:
        phase = key.removesuffix(f"_{name}")
        if phase != key and phase in _registered_phases():
            return phase, name
    return None


def translate_legacy_phase_keys(values: dict, source: str = "recipe") -> dict:
    """Old flat per-phase keys -> the `phases` block, with a FutureWarning. A null old key meant
    "as the main phase" and is dropped (released recipes list every old key, null for the phases
    their method lacks); a value the block also sets must agree."""
    legacy = {k: (_legacy_phase_key(k), v) for k, v in values.items() if isinstance(k, str)}
    legacy = {k: (pk, v) for k, (pk, v) in legacy.items() if pk is not None}
    if not legacy:
        return values
    values = {k: v for k, v in values.items() if k not in legacy}
    given = _mapping(values.get("phases"), f"{source}: phases")
    phases = {p: dict(_mapping(b, f"{source}: phases.{p}")) for p, b in given.items()}
    for old, ((phase, key), value) in legacy.items():
        if value is None:
            continue
        block = phases.setdefault(phase, {})
        if block.get(key) is not None and block[key] != value:
            raise RecipeError(f"{source}: {old}: {value!r} conflicts with phases.{phase}.{key}: {block[key]!r}")
        block[key] = value
    values["phases"] = phases
    block = yaml.safe_dump(_plain(phases), default_flow_style=True).strip()
    warnings.warn(f"{source}: {', '.join(legacy)}: the old per-phase keys (deprecated); read as "
                  f"phases: {block} (null ones as the main phase's). Write the `phases` block instead.",
                  FutureWarning, stacklevel=3)
    return values


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(Recipe)}


def _registered_phases() -> set[str]:
    """Every non-main phase of every registered method (the old keys' possible prefixes)."""
    from zoo.registry import METHODS
    import zoo  # noqa: F401  (registers every method)
    return {p for entry in METHODS.values() for p in entry.phases if p != MAIN_PHASE}


# -------------------------------------------------------------------------------------------------
# Error messages and type checks

def _unknown(name: str, choices, what: str) -> str:
    choices = list(choices)
    if not choices:
        return f"{what} {name!r} (it takes none)."
    return f"{what} {name!r}.{did_you_mean(name, choices, quote=True)} Valid: {', '.join(str(c) for c in choices)}."


def _suggest_file(path: Path) -> str:
    folder = path.parent if path.parent.is_dir() else None
    if folder is None:
        return ""
    hint = did_you_mean(path.name, [p.name for p in folder.glob("*.yaml")])
    return f".{hint}" if hint else ""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(key: str, value, tp, source: str):
    """Check (and lightly coerce: int -> float, list -> tuple) one value against its annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner[0], source)
    if origin is Literal:
        if value not in args:
            raise RecipeError(_unknown(value, args, f"{source}: {key}: unknown value"))
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{source}: {key} must be a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{source}: {key} must be a list, got {value!r}")
        fixed = len(args) != 2 or args[1] is not Ellipsis
        if fixed and len(value) != len(args):
            raise RecipeError(f"{source}: {key} must have {len(args)} entries, got {list(value)}")
        item_types = args if fixed else [args[0]] * len(value)
        return tuple(_check_type(f"{key}[{i}]", v, t, source) for i, (v, t) in enumerate(zip(value, item_types)))
    raise TypeError(f"recipe field {key}: unsupported annotation {_type_name(tp)}")


def _method_entry(model: str, source: str):
    from zoo.registry import get_method, METHODS
    import zoo  # noqa: F401  (registers every method)
    base = model.split(".", 1)[0]
    if base not in METHODS:
        raise RecipeError(_unknown(model, sorted(METHODS), f"{source}: unknown model"))
    return get_method(base)


def check_model_args(entry, model_args: dict, source: str = "recipe") -> None:
    """Every key of model_args must be an argument the method declares (`MethodEntry.arguments`)."""
    valid = entry.arguments
    for key in model_args:
        if key not in valid:
            raise RecipeError(_unknown(key, valid, f"{source}: model_args: {entry.name} has no argument"))


def _data_sources() -> dict:
    """Which callable `zoo.data.build_dataset` hands `data_args` to, per dataset kind."""
    import zoo.data as zd
    from zoo.data.sources import HFImages
    return {"scenes": [zd.SceneDataset], "fashion_mnist": [zd.FashionMNIST],
            "imagefolder": [zd.sources.image_folder, HFImages], "hf": [zd.sources.hub_dataset, HFImages]}


def check_data(data: str, data_args: dict, source: str = "recipe") -> None:
    """The dataset name exists; every data_args key is a keyword its source takes."""
    from zoo.data import dataset_stats
    try:
        dataset_stats(data)
    except ValueError as e:
        raise RecipeError(f"{source}: data: {e}") from None
    kind = "hf" if data.startswith("hf:") else data
    fixed = {"self", "split", "root", "image_size", "transform", "strict", "name", "hf", "hf_id"}
    valid = {n for fn in _data_sources()[kind] for n, p in inspect.signature(fn).parameters.items()
             if n not in fixed and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key in data_args:
        if key not in valid:
            raise RecipeError(_unknown(key, sorted(valid), f"{source}: data_args: {data} has no argument"))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
