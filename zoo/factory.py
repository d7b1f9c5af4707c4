"""The user-facing factory: `create_model`, `list_models`, `list_pretrained`, `create_masker`.

`create_model` returns the plain timm backbone of a zoo name (a ResNet, a VisionTransformer),
headless by default, exactly what `timm.create_model(timm_arch, num_classes=0, **model_args)`
builds; `num_classes=N` gives a fresh head for fine-tuning and `features_only=True` a feature
pyramid, as in timm. With `pretrained=True` the released weights are resolved and checked by
`zoo.weights` (repository first, then the Hub cache; structure, SHA-256 and shapes) and loaded by
timm's own loader from the checked safetensors file.

Example:
    >>> import torch, zoo
    >>> model = zoo.create_model("simclr_resnet18").eval()           # random init, headless
    >>> model(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 512])
    >>> ft = zoo.create_model("adios_resnet18", pretrained=True, num_classes=10)   # doctest: +SKIP
    >>> local = zoo.create_model("weights/adios_resnet18.simclr_fmnist")         # doctest: +SKIP
"""
from __future__ import annotations

import fnmatch
import json
import os
import warnings
from pathlib import Path

import timm
from torch import nn

from zoo import weights
from zoo.registry import METHODS, MethodEntry, create_pretrainer

_LOCAL = "local-dir:"
_HUB = ("hf-hub:", "hf_hub:")


def _sync() -> dict:
    from zoo import timm_entries
    table = weights.load_table()
    timm_entries.sync(table)
    return table


def _entry(name: str, table: dict) -> MethodEntry:
    if name not in METHODS:
        raise weights.UnknownModelError(name, weights.suggest(name, list(METHODS) + list(table)))
    return METHODS[name]


def _split(name: str) -> tuple[str, str | None]:
    base, _, tag = name.partition(".")
    return base, (tag or None)


def _is_folder(name: str) -> bool:
    return name.startswith(_LOCAL) or "/" in name or os.sep in name or (Path(name) / "config.json").is_file()


def list_models(pattern: str = "*") -> list[str]:
    """Registered zoo names `{method}_{arch}` matching an fnmatch pattern.

    Example:
        >>> import zoo
        >>> zoo.list_models("adios_*")                     # doctest: +SKIP
        ['adios_resnet18', 'adios_s_resnet18', ...]
    """
    _sync()
    return sorted(n for n in METHODS if fnmatch.fnmatch(n, pattern))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Released `name.tag` entries matching an fnmatch pattern (on `name.tag`, as timm does).

    Example:
        >>> import zoo
        >>> zoo.list_pretrained("adios*")                  # doctest: +SKIP
        ['adios_resnet18.simclr_fmnist']
    """
    table = _sync()
    return sorted(k for k, e in table.items() if e["name"] in METHODS and fnmatch.fnmatch(k, pattern))


def create_model(name: str, pretrained: bool | None = None, **kwargs) -> nn.Module:
    """The plain timm backbone of a zoo name, a published folder or a Hub repo.

    name: `"{method}_{arch}"` (default tag), `"{method}_{arch}.{tag}"`, `"local-dir:PATH"` or a
        path to a published folder, or `"hf-hub:ORG/NAME"`.
    pretrained: load the released weights. Default: False for names (timm's rule), True for a
        folder or a Hub repo (the point of naming one).
    kwargs: timm kwargs (`num_classes=N` for a fresh head, `features_only=True`, `drop_path_rate`,
        `in_chans`, `cache_dir`, ...); `num_classes` defaults to 0 (headless).

    Example:
        >>> import zoo
        >>> zoo.create_model("simclr_resnet18").num_features
        512
    """
    if name.startswith(_HUB):
        return _create_from_hub(name.split(":", 1)[1], pretrained is not False, **kwargs)
    if _is_folder(name):
        folder = name[len(_LOCAL):] if name.startswith(_LOCAL) else name
        return _create_from_folder(Path(folder), pretrained is not False, **kwargs)
    _sync()
    base, tag = _split(name)
    return build(base, tag, bool(pretrained), **kwargs)


def build(name: str, tag: str | None, pretrained: bool, cache_dir=None, pretrained_cfg_overlay=None,
          **kwargs) -> nn.Module:
    """Build `name` (tag None: the default tag) with the table's cfg; load checked weights if asked.

    The one path behind `create_model`, timm's registered entrypoints and `hubconf.py`.
    """
    if kwargs.pop("pretrained_cfg", None) is not None:
        raise ValueError(f"{name}: zoo models take a tag ('{name}.<tag>'), not a pretrained_cfg; to load a file "
                         "of your own use timm.create_model(<timm arch>, pretrained_cfg=...).")
    table = weights.load_table()
    entry = _entry(name, table)
    release = None
    if pretrained or tag is not None:
        try:
            release = weights.find_release(name, tag, table)
        except weights.NoReleasedWeightsError:
            if pretrained:
                raise
            raise weights.UnknownModelError(f"{name}.{tag}", weights.suggest(
                f"{name}.{tag}", [k for k, e in table.items() if e["name"] == name] or list(table))) from None
    elif weights.released_tags(name, table):      # untrained, but with the default tag's data config (timm's rule)
        release = weights.find_release(name, None, table)
    if release is not None:
        cfg = weights.cfg_for_timm(release[1]["pretrained_cfg"])
    else:
        cfg = weights.make_pretrained_cfg(entry.timm_arch, entry.model_args)
    if pretrained_cfg_overlay:
        sources = [k for k in pretrained_cfg_overlay if k in weights.SOURCE_KEYS]
        if sources:
            raise ValueError(f"{name}: pretrained_cfg_overlay may not set a weight source ({sources}); the zoo "
                             "resolves and checks its own files.")
        cfg.update(weights.cfg_for_timm(pretrained_cfg_overlay))
    if pretrained:
        path = weights.resolve_file(release[0], "model.safetensors", table=table, cache_dir=cache_dir)
        weights.check_shapes(path, entry.timm_arch, entry.model_args)
        cfg["file"] = str(path)
    args = {"num_classes": 0, **entry.model_args, **kwargs}
    return timm.create_model(entry.timm_arch, pretrained=pretrained, pretrained_cfg=cfg,
                             cache_dir=cache_dir, **args)


def read_folder_config(folder: str | os.PathLike) -> dict:
    """config.json of a published folder (timm's layout plus the `zoo` block)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a published model folder: it has no config.json "
                                "(a Hub repo is named 'hf-hub:ORG/NAME').")
    return json.loads(path.read_text())


def _checked_folder_file(folder: Path, config: dict, filename: str, expected: str | None = None) -> Path:
    path = folder / filename
    if not path.is_file():
        raise weights.NoReleasedWeightsError(str(folder), [], detail=f" (no {filename} in the folder)")
    recorded = (config.get("zoo") or {}).get("files", {}).get(filename)
    if recorded is None and expected is None:
        warnings.warn(f"{folder}/config.json records no SHA-256 for {filename} (no `zoo` block): loading "
                      "it unchecked.", stacklevel=3)
        weights.safetensors_header(path)
    for sha in {recorded, expected} - {None}:
        weights.verify_file(path, sha)
    return path


def _create_from_folder(folder: Path, pretrained: bool, expected: dict | None = None,
                        cache_dir=None, **kwargs) -> nn.Module:
    config = read_folder_config(folder)
    arch, model_args = config["architecture"], config.get("model_args") or {}
    cfg = weights.cfg_for_timm(config.get("pretrained_cfg") or {})
    cfg["num_classes"] = config.get("num_classes", cfg.get("num_classes", 0))
    if pretrained:
        path = _checked_folder_file(folder, config, "model.safetensors", (expected or {}).get("model.safetensors"))
        got = {k: tuple(v["shape"]) for k, v in weights.safetensors_header(path).items()}
        with_head = {**model_args, "num_classes": cfg["num_classes"]}
        weights.check_state_shapes(got, _shapes_with_head(arch, with_head), str(path))
        cfg["file"] = str(path)
    args = {"num_classes": cfg["num_classes"], **model_args, **kwargs}
    return timm.create_model(arch, pretrained=pretrained, pretrained_cfg=cfg, **args)


def _shapes_with_head(arch: str, model_args: dict) -> dict:
    num_classes = model_args.pop("num_classes", 0)
    if num_classes == 0:
        return weights.expected_shapes(arch, model_args)
    import torch
    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=num_classes, **model_args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _hub_snapshot(repo: str, filenames: list[str], cache_dir=None) -> tuple[Path, dict | None]:
    """Download config.json (+ files) of a Hub repo into the cache; the table entry naming it, if any."""
    repo_id, _, revision = repo.partition("@")
    table = weights.load_table()
    known = next(({"files": e["files"], "name_tag": k} for k, e in table.items()
                  if e.get("hf_hub_id") == repo_id), None)
    entry = {"hf_hub_id": repo_id, "revision": revision or None}
    folder = None
    for filename in ["config.json", *filenames]:
        path = weights._hub_download(repo, entry, filename, None, cache_dir)
        folder = path.parent
    return folder, known


def _create_from_hub(repo: str, pretrained: bool, cache_dir=None, **kwargs) -> nn.Module:
    folder, known = _hub_snapshot(repo, ["model.safetensors"] if pretrained else [], cache_dir)
    return _create_from_folder(folder, pretrained, expected=known and known["files"], **kwargs)


def create_masker(name: str, pretrained: bool = True, cache_dir=None) -> nn.Module:
    """The learned masker of a release (ADIOS occluder, AutoMAE generator), in eval mode.

    Builds the pretrainer from the release's `pretrainer` facts (model, objective, model_args) and
    loads the released `masker.safetensors` into its `.masker`, checked like every file.
    `pretrained=False` gives the untrained masker of the name's default configuration.

    Example:
        >>> import torch, zoo
        >>> masker = zoo.create_masker("adios_resnet18.simclr_scenes")     # doctest: +SKIP
        >>> masks = masker(torch.randn(1, 3, 32, 32))                      # (1, N, 32, 32)  # doctest: +SKIP
    """
    if name.startswith(_HUB) or _is_folder(name):
        if name.startswith(_HUB):
            folder, known = _hub_snapshot(name.split(":", 1)[1], ["masker.safetensors"], cache_dir)
            expected = known and known["files"].get("masker.safetensors")
        else:
            folder, expected = Path(name[len(_LOCAL):] if name.startswith(_LOCAL) else name), None
        config = read_folder_config(folder)
        info = (config.get("zoo") or {}).get("pretrainer")
        if not info:
            raise weights.NoReleasedWeightsError(str(folder), [], detail=" (config.json has no zoo.pretrainer)")
        path = _checked_folder_file(folder, config, "masker.safetensors", expected) if pretrained else None
    else:
        table = _sync()
        base, tag = _split(name)
        _entry(base, table)
        if pretrained:
            key, release = weights.find_release(base, tag, table)
            info = release.get("pretrainer") or {"model": base}
            if "masker.safetensors" not in release.get("files", {}):
                raise weights.NoReleasedWeightsError(key, [k for k, e in table.items()
                                                           if "masker.safetensors" in e.get("files", {})],
                                                     detail=" for a masker (no masker.safetensors)")
            path = weights.resolve_file(key, "masker.safetensors", table=table, cache_dir=cache_dir)
        else:
            info, path = {"model": base}, None
    pretrainer = create_pretrainer(info["model"], info.get("objective"), **(info.get("model_args") or {}))
    masker = pretrainer.masker
    if masker is None:
        raise ValueError(f"{info['model']} has no masker (a plain control); see zoo.list_models().")
    if path is not None:
        state = masker.state_dict()
        got = {k: tuple(v["shape"]) for k, v in weights.safetensors_header(path).items()}
        weights.check_state_shapes(got, {k: tuple(v.shape) for k, v in state.items()}, str(path))
        masker.load_state_dict(weights.load_tensors(path))
    return masker.eval()
