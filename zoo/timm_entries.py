"""timm's view of the zoo: every registered name is a timm model, every release a timm tag.

`sync()` registers each name of `zoo.registry.METHODS` in timm's own registry, the timm way: a
`default_cfgs` dict of this module (released tags first, in table order, so the first is the
default tag; an untagged cfg without weights for names with no release) and one entrypoint per
name, created here and passed to `timm.models.register_model`. After `import zoo`:

    >>> import timm, zoo
    >>> timm.list_pretrained("adios*")                                  # doctest: +SKIP
    ['adios_resnet18.simclr_fmnist']
    >>> m = timm.create_model("adios_resnet18", pretrained=True)      # doctest: +SKIP

The entrypoints call `zoo.factory.build`, so timm's path goes through the zoo's resolution and
SHA-256 checks; timm's own weight sources (`url`, `hf_hub_id` in these cfgs) are never used to
load. `sync()` is idempotent and cheap: `zoo/__init__` calls it once the methods are imported, and
every `zoo.create_model` / `list_models` / `list_pretrained` call repeats it, so a method
registered later, or a table updated by `publish`, is covered too.
"""
from __future__ import annotations

import json
import warnings

from timm.models import generate_default_cfgs, register_model
from timm.models import _registry as _timm_registry

from zoo import weights

__all__ = ["sync"]

# Read by timm's register_model from this module: it must exist before any registration.
default_cfgs: dict = {}
_registered: dict[str, str] = {}      # name -> fingerprint of the cfgs it was registered with
_shadowed: set[str] = set()           # names timm already had from elsewhere (left alone)


def _cfgs(entry, table: dict) -> dict[str, dict]:
    releases = [e for e in table.values() if e["name"] == entry.name]
    if not releases:
        return {entry.name: weights.make_pretrained_cfg(entry.timm_arch, entry.model_args)}
    cfgs = {}
    for e in releases:
        cfg = weights.cfg_for_timm(e["pretrained_cfg"])
        # timm lists a tag as pretrained only if its cfg names a source; the zoo loads from the
        # table, never from these fields.
        cfg["hf_hub_id"] = e.get("hf_hub_id") or f"local/{entry.name}.{e['tag']}"
        cfgs[f"{entry.name}.{e['tag']}"] = cfg
    return cfgs


def _entrypoint(name: str):
    def create(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
               cache_dir=None, **kwargs):
        if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
            raise ValueError(f"{name}: zoo models take a tag ('{name}.<tag>'), not a pretrained_cfg; to load "
                             "a file of your own use timm.create_model(<timm arch>, pretrained_cfg=...).")
        from zoo.factory import build
        return build(name, pretrained_cfg or None, pretrained, cache_dir=cache_dir,
                     pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)
    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"Zoo model {name} (see zoo.create_model); built by zoo.factory.build."
    return create


def _unregister(name: str) -> None:
    _timm_registry._clear_model_entries(name)
    _timm_registry._model_entrypoints.pop(name, None)
    default_cfgs.pop(name, None)
    if name in __all__:
        __all__.remove(name)
    _registered.pop(name, None)


def sync(table: dict | None = None) -> None:
    """Make timm's registry match METHODS and the released table (register, update, drop)."""
    from zoo.registry import METHODS

    table = weights.load_table() if table is None else table
    for name in [n for n in _registered if n not in METHODS]:
        _unregister(name)
    for name, entry in list(METHODS.items()):
        try:
            cfgs = _cfgs(entry, table)
        except Exception as e:        # one odd registration must not break `import zoo`
            warnings.warn(f"zoo: {name} is not registered in timm ({type(e).__name__}: {e}); "
                          "zoo.create_model will report the problem.", stacklevel=2)
            continue
        fingerprint = json.dumps(cfgs, sort_keys=True, default=str)
        if _registered.get(name) == fingerprint:
            continue
        if name in _shadowed:
            continue
        owner = _timm_registry._model_to_module.get(name)
        if name not in _registered and owner not in (None, __name__.rsplit(".", 1)[-1]):
            warnings.warn(f"timm already has a model named {name!r} (module {owner}); the zoo model of "
                          "that name is reachable through zoo.create_model only.", stacklevel=2)
            _shadowed.add(name)
            continue
        _unregister(name)
        default_cfgs.update(generate_default_cfgs(cfgs))
        register_model(_entrypoint(name))
        _registered[name] = fingerprint
