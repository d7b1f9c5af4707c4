"""The method registry: every pretrainer name `{method}_{arch}` and how to build it.

Registrations are declarative: a method module decorates one factory with the archs it supports
and, for methods that take a base objective, the objectives (the first is the paper's default).
Names are looked up, never parsed.

    @register_method("adios", archs=("resnet18", "vit_tiny_patch4_32"),
                     objectives=("simclr", "byol", "simsiam"), pretrainer=ADIOSPretrainer,
                     takes_img_size=True)
    def adios(arch: str, objective: str = "simclr", num_masks: int = 6, ...,
              **objective_args) -> Pretrainer: ...

The entry carries the method's facts, so train/, publishing and the tests read them without
building a model: its paper, its phases and what each steps, its views (how many, which masked),
whether its masker is built for an image size (`takes_img_size`), every keyword its factory
takes (`arguments`), and which network it exports.

A factory's `**objective_args` are its base objective's knobs (zoo.objectives.OBJECTIVE_ARGS):
the registry lists them in `arguments` and in the factory's signature, so a recipe's model_args
and `create_pretrainer` name an unknown one.

Example:
    >>> import zoo
    >>> e = zoo.registry.get_method("adios_resnet18")
    >>> e.phases, e.num_views, e.masked_views("simsiam"), e.takes_img_size
    (('encoder', 'masker'), 2, (0, 1), True)
    >>> e.phase_modules["masker"], e.arguments["temperature"]
    (('masker',), None)
"""
from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from zoo.backbones import arch_config
from zoo.suggest import did_you_mean


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
    phase_modules: dict = field(default_factory=lambda: {"encoder": ("backbone", "objective")})
    num_views: int = 2              # augmented views per step (1: MAE, AutoMAE)
    masked: dict = field(default_factory=dict, repr=False)   # objective (None: none) -> masked views
    takes_img_size: bool = False    # the factory builds its masker for `img_size` (ADIOS's U-Net)
    arguments: dict = field(default_factory=dict, repr=False)   # factory keyword -> default
    base: str = ""                  # the fixed base objective of a method that takes none by name

    def masked_views(self, objective: str | None = None) -> tuple[int, ...]:
        """Indices of the views the masker hides (() without a masker), with base `objective`."""
        key = objective or self.default_objective
        if key not in self.masked:
            raise ValueError(f"{self.name} takes objective one of {self.objectives}, got {objective!r}"
                             if self.objectives else f"{self.name} takes no objective (got {objective!r})")
        return self.masked[key]

    def describe_export(self, objective: str | None = None) -> str:
        """Which network of the pretrainer is released (DESIGN.md, "Weights"), for the card.

        The method's own line where it declares one (MAE, ExtreMA, BYOL), else the base objective's
        (`exported` of its class: BYOL's online encoder), else the encoder without its heads.
        """
        if self.exports:
            return self.exports
        from zoo.objectives import OBJECTIVES
        cls = OBJECTIVES.get(objective or self.default_objective or self.base)
        return getattr(cls, "exported", None) or "the encoder (projection and prediction heads are not released)"

    @property
    def default_objective(self) -> str | None:
        return self.objectives[0] if self.objectives else None


METHODS: dict[str, MethodEntry] = {}


def register_method(method: str, archs: tuple[str, ...], objectives: tuple[str, ...] = (),
                    paper: str = "", ours_archs: tuple[str, ...] = (),
                    export_args: dict | None = None, paper_title: str = "", paper_id: str = "",
                    pretrainer: type | None = None, exports: str = "", base: str = "",
                    masked_views: tuple[int, ...] | None = None,
                    takes_img_size: bool = False) -> Callable:
    """Register `factory(arch, [objective], **kwargs) -> Pretrainer` as `{method}_{arch}` per arch.

    export_args: timm model_args that the exported backbone adds to the arch's own (ExtreMA:
    no class token, mean pooling).
    paper_title, paper_id: the paper, as the card and the cfg name it.
    pretrainer: the Pretrainer class the factory builds: its `phases`, `phase_modules`,
    `num_views` and `masked_views_of(objective)` are the method's.
    exports: one line, which network is released (default: the base objective's line).
    base: the one base objective of a method without `objectives` whose factory takes that
    objective's knobs as **objective_args (simclr: "simclr").
    masked_views: overrides the class's, for a method built without a masker (the plain controls: ()).
    takes_img_size: the factory takes `img_size`, the images its masker is built for (a ViT's own
    size, else the data's); the training recipe passes its image size.
    """
    from zoo.pretrainer import Pretrainer
    cls = pretrainer or Pretrainer

    def wrap(factory: Callable) -> Callable:
        args = _factory_arguments(method, factory, tuple(objectives) or ((base,) if base else ()))
        if takes_img_size and "img_size" not in args:
            raise TypeError(f"{method}: takes_img_size=True but the factory has no img_size argument")
        masked = {o: (tuple(masked_views) if masked_views is not None else cls.masked_views_of(o))
                  for o in objectives or (None,)}
        for arch in archs:
            name = f"{method}_{arch}"
            if name in METHODS:
                raise ValueError(f"{name} is registered twice")
            timm_arch, model_args = arch_config(arch)
            model_args.update(export_args or {})
            METHODS[name] = MethodEntry(
                name=name, method=method, arch=arch, timm_arch=timm_arch, model_args=model_args,
                objectives=tuple(objectives), factory=factory, paper=paper, ours=arch in ours_archs,
                paper_title=paper_title, paper_id=paper_id, phases=tuple(cls.phases), exports=exports,
                phase_modules=dict(cls.phase_modules), num_views=cls.num_views, masked=masked,
                takes_img_size=takes_img_size, arguments=args, base=base)
        return factory
    return wrap


def _factory_arguments(method: str, factory: Callable, objectives: tuple[str, ...]) -> dict:
    """{keyword: default} of every keyword `factory` takes beyond `arch` and `objective`.

    A factory's **objective_args become the knobs of its objectives (default: the objective's
    own for a fixed base; None, "the chosen objective's default", where the objective is chosen),
    and its `__signature__` is set to list them, so `inspect.signature` and `help()` show the
    factory's real keywords (train/recipe.py checks model_args against that signature).
    """
    sig = inspect.signature(factory)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    if len(params) < len(sig.parameters):                      # **objective_args
        if not objectives:
            raise TypeError(f"{method}: a factory's **kwargs are its base objective's knobs; "
                            "register it with objectives=(...) or base=...")
        from zoo.objectives import OBJECTIVE_ARGS, objective_args
        knobs = {}
        for o in objectives:
            knobs.update({k: objective_args(o)[k] if len(objectives) == 1 else None for k in OBJECTIVE_ARGS[o]})
        clash = sorted(set(knobs) & {p.name for p in params})
        if clash:
            raise TypeError(f"{method}: factory arguments {clash} shadow objective knobs")
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in knobs.items()]
        factory.__signature__ = sig.replace(parameters=params)
    return {p.name: p.default for p in params if p.name not in ("arch", "objective")}


def get_method(name: str) -> MethodEntry:
    """The entry of a registered name (tags stripped); unknown names suggest close ones."""
    base = name.split(".", 1)[0]
    if base not in METHODS:
        raise ValueError(f"Unknown model {name!r}.{did_you_mean(base, METHODS, cutoff=0.6)} "
                         "See zoo.list_models().")
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
    unknown = [k for k in kwargs if k not in entry.arguments]
    if unknown:
        raise ValueError(f"{entry.name} has no argument {unknown[0]!r}."
                         f"{did_you_mean(unknown[0], entry.arguments, quote=True)} "
                         f"Valid: {', '.join(entry.arguments)}.")
    if entry.objectives:
        objective = objective or entry.default_objective
        if objective not in entry.objectives:
            raise ValueError(f"{entry.name} takes objective one of {entry.objectives}, got {objective!r}")
        return entry.factory(entry.arch, objective=objective, **kwargs)
    if objective is not None:
        raise ValueError(f"{entry.name} takes no objective (got {objective!r})")
    return entry.factory(entry.arch, **kwargs)
