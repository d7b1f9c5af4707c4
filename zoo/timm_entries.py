"""timm's view of the zoo: every registered name is a timm model, every release a timm tag.

`sync()` registers each name of `zoo.registry.METHODS` in timm's own registry, the timm way: a
`default_cfgs` dict of this module (released tags first, in table order, so the first is the
default tag; an untagged cfg without weights for names with no release) and one entrypoint per
name, created here and passed to `timm.models.register_model`. After `import zoo`:

    >>> import timm, zoo
    >>> timm.list_pretrained("adios*")                                  # doctest: +SKIP
    ['adios_resnet18.simclr_fmnist']
    >>> m = timm.create_model("adios_resnet18", pretrained=True)      # doctest: +SKIP

The entrypoints call `zoo.weights.resolve`, the load path of `zoo.create_model`, so timm's path
goes through the zoo's resolution and SHA-256 checks; timm's own weight sources (`url`,
`hf_hub_id` in these cfgs) are never used to load.

When it syncs: `zoo/__init__` once the methods are imported, and the writer of the table
(`zoo.publish.update_table`) after each write. `zoo.list_models` / `list_pretrained` call it too,
for methods registered after `import zoo` and a table switched by $ZOO_RELEASED; there it costs
a `stat` of the table, since `sync` returns at once when neither the registered names nor the
table file changed since the last sync.
"""
from __future__ import annotations

import json
import warnings

from timm.models import generate_default_cfgs, is_model, model_entrypoint, register_model

from zoo import weights
from zoo.registry import METHODS

__all__ = ["sync"]

# Read by timm's register_model from this module: it must exist before any registration.
default_cfgs: dict = {}
_registered: dict[str, str] = {}      # name -> fingerprint of the cfgs it was registered with
_shadowed: set[str] = set()           # names timm already had from elsewhere (left alone)
_synced: tuple | None = None          # (registered entries, table file) at the last sync


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
        # timm passes the tag of "name.tag" as pretrained_cfg
        if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
            raise ValueError(f"{name}: zoo models take a tag ('{name}.<tag>'), not a pretrained_cfg; to load "
                             "a file of your own use timm.create_model(<timm arch>, pretrained_cfg=...).")
        source = f"{name}.{pretrained_cfg}" if pretrained_cfg else name
        return weights.resolve(source, pretrained=pretrained, cache_dir=cache_dir,
                               cfg_overlay=pretrained_cfg_overlay).create_model(**kwargs)
    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"Zoo model {name} (see zoo.create_model); resolved by zoo.weights.resolve."
    return create


def _unregister(name: str) -> None:
    """Remove one of our names from timm's registry.

    timm has no public unregister, so this is the one place that touches its private registry
    dicts (`_clear_model_entries` drops the cfgs, tags and module entry; the entrypoint is popped
    by hand): needed when a method is unregistered, and before re-registering a name whose cfgs
    changed, which `register_model` would otherwise do with an "Overwriting" warning.
    """
    from timm.models import _registry
    _registry._clear_model_entries(name)
    _registry._model_entrypoints.pop(name, None)
    default_cfgs.pop(name, None)
    if name in __all__:
        __all__.remove(name)
    _registered.pop(name, None)


def _table_state() -> tuple:
    """The table file's identity: publish writes by rename, so a write changes its inode and mtime."""
    path = weights.table_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        return (str(path),)
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)


def sync() -> None:
    """Make timm's registry match METHODS and the released table (register, update, drop).

    Returns at once when neither the registered names nor the table file changed since the last call.
    """
    global _synced
    state = (tuple((name, id(entry)) for name, entry in METHODS.items()), _table_state())
    if state == _synced:
        return
    table = weights.load_table()
    for name in [n for n in _registered if n not in METHODS]:
        _unregister(name)
    for name, entry in list(METHODS.items()):
        if name in _shadowed:
            continue
        if name not in _registered and is_model(name) and model_entrypoint(name).__module__ != __name__:
            warnings.warn(f"timm already has a model named {name!r} (module "
                          f"{model_entrypoint(name).__module__}); the zoo model of that name is reachable "
                          "through zoo.create_model only.", stacklevel=2)
            _shadowed.add(name)
            continue
        try:
            cfgs = _cfgs(entry, table)
        except Exception as e:        # one odd registration must not break `import zoo`
            warnings.warn(f"zoo: {name} is not registered in timm ({type(e).__name__}: {e}); "
                          "zoo.create_model will report the problem.", stacklevel=2)
            continue
        fingerprint = json.dumps(cfgs, sort_keys=True, default=str)
        if _registered.get(name) == fingerprint:
            continue
        _unregister(name)
        default_cfgs.update(generate_default_cfgs(cfgs))
        register_model(_entrypoint(name))
        _registered[name] = fingerprint
    _synced = state
