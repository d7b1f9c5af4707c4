"""The method registry: every pretrainer name `{method}_{arch}` and how to build it.

Registrations are declarative: a method module decorates one factory with the archs it supports
and, for methods that take a base objective, the objectives (the first is the paper's default).
Names are looked up, never parsed.

    @register_method("adios", archs=("resnet18", "vit_tiny_patch4_32"),
                     objectives=("simclr", "byol", "simsiam"))
    def adios(arch: str, objective: str = "simclr", **kwargs) -> Pretrainer: ...
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from zoo.backbones import arch_config


@dataclass(frozen=True)
class MethodEntry:
    name: str                       # "{method}_{arch}", e.g. "adios_resnet18"
    method: str                     # "adios"
    arch: str                       # zoo arch name, e.g. "vit_tiny_patch4_32"
    timm_arch: str                  # plain timm arch of the exported backbone
    model_args: dict                # timm model_args of the exported backbone
    objectives: tuple[str, ...]     # base objectives this method accepts; () if none
    factory: Callable = field(repr=False)
    paper: str = ""                 # short citation, e.g. "ADIOS: Shi, ..., ICML 2022 (arXiv 2201.13100)"
    ours: bool = False              # a pairing no paper ran
    paper_title: str = ""           # the card's and the cfg's paper: full title (authors, venue)
    paper_id: str = ""              # "arXiv:2201.13100"
    phases: tuple[str, ...] = ("encoder",)   # the pretrainer's phases, in step order
    exports: str = ""               # which network is released, one line for the card ("" : by objective)

    def describe_export(self, objective: str | None = None) -> str:
        """Which network of the pretrainer is released (DESIGN.md, "Weights"), for the card.

        The method's own line where it declares one (MAE, ExtreMA, BYOL), else the base objective's
        (`exported` of its class: BYOL's online encoder), else the encoder without its heads.
        """
        if self.exports:
            return self.exports
        from zoo.objectives import OBJECTIVES
        cls = OBJECTIVES.get(objective or self.default_objective or "")
        return getattr(cls, "exported", None) or "the encoder (projection and prediction heads are not released)"

    @property
    def default_objective(self) -> str | None:
        return self.objectives[0] if self.objectives else None


METHODS: dict[str, MethodEntry] = {}


def register_method(method: str, archs: tuple[str, ...], objectives: tuple[str, ...] = (),
                    paper: str = "", ours_archs: tuple[str, ...] = (),
                    export_args: dict | None = None, paper_title: str = "", paper_id: str = "",
                    pretrainer: type | None = None, exports: str = "") -> Callable:
    """Register `factory(arch, [objective], **kwargs) -> Pretrainer` as `{method}_{arch}` per arch.

    export_args: timm model_args that the exported backbone adds to the arch's own (ExtreMA:
    no class token, mean pooling).
    paper_title, paper_id: the paper, as the card and the cfg name it.
    pretrainer: the Pretrainer class the factory builds (its `phases` are the method's phases).
    exports: one line, which network is released (default: the base objective's line).
    """
    from zoo.pretrainer import Pretrainer
    phases = tuple((pretrainer or Pretrainer).phases)

    def wrap(factory: Callable) -> Callable:
        for arch in archs:
            name = f"{method}_{arch}"
            if name in METHODS:
                raise ValueError(f"{name} is registered twice")
            timm_arch, model_args = arch_config(arch)
            model_args.update(export_args or {})
            METHODS[name] = MethodEntry(name, method, arch, timm_arch, model_args, tuple(objectives),
                                        factory, paper, arch in ours_archs, paper_title, paper_id, phases,
                                        exports)
        return factory
    return wrap


def get_method(name: str) -> MethodEntry:
    """The entry of a registered name (tags stripped); unknown names suggest close ones."""
    base = name.split(".", 1)[0]
    if base not in METHODS:
        close = difflib.get_close_matches(base, METHODS, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} See zoo.list_models().")
    return METHODS[base]


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in METHODS if fnmatch.fnmatch(n, pattern))


def create_pretrainer(name: str, objective: str | None = None, **kwargs):
    """Build the pretrainer `name` ("{method}_{arch}"); `objective` picks the base where one applies.

    Example:
        >>> import zoo
        >>> p = zoo.create_pretrainer("adios_resnet18", objective="byol", num_masks=4)
        >>> p.phases
        ('encoder', 'masker')
    """
    entry = get_method(name)
    if entry.objectives:
        objective = objective or entry.default_objective
        if objective not in entry.objectives:
            raise ValueError(f"{entry.name} takes objective one of {entry.objectives}, got {objective!r}")
        return entry.factory(entry.arch, objective=objective, **kwargs)
    if objective is not None:
        raise ValueError(f"{entry.name} takes no objective (got {objective!r})")
    return entry.factory(entry.arch, **kwargs)
