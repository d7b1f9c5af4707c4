"""The user-facing factory: `create_model`, `create_masker`, `list_models`, `list_pretrained`.

`create_model` returns the plain timm backbone of a zoo name (a ResNet, a VisionTransformer),
headless by default, exactly what `timm.create_model(timm_arch, num_classes=0, **model_args)`
builds; `num_classes=N` gives a fresh head for fine-tuning and `features_only=True` a feature
pyramid, as in timm. Both creators go through `zoo.weights.resolve`, the one load path (table,
repository folder, Hub cache; structure, SHA-256 and shapes), as timm's registered entrypoints do;
the backbone's weights are then loaded by timm's own loader from the checked safetensors file.

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

from torch import nn

from zoo import timm_entries, weights
from zoo.registry import METHODS, create_pretrainer


def list_models(pattern: str = "*") -> list[str]:
    """Registered zoo names `{method}_{arch}` matching an fnmatch pattern.

    Example:
        >>> import zoo
        >>> zoo.list_models("adios_*")                     # doctest: +SKIP
        ['adios_resnet18', 'adios_s_resnet18', ...]
    """
    timm_entries.sync()     # a no-op unless a method registered or the table changed since the last sync
    return sorted(n for n in METHODS if fnmatch.fnmatch(n, pattern))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Released `name.tag` entries matching an fnmatch pattern (on `name.tag`, as timm does).

    Example:
        >>> import zoo
        >>> zoo.list_pretrained("adios*")                  # doctest: +SKIP
        ['adios_resnet18.simclr_fmnist']
    """
    timm_entries.sync()
    return sorted(k for k, e in weights.load_table().items()
                  if e["name"] in METHODS and fnmatch.fnmatch(k, pattern))


def create_model(name: str, pretrained: bool | None = None, *, cache_dir=None, pretrained_cfg_overlay=None,
                 **kwargs) -> nn.Module:
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
    if kwargs.pop("pretrained_cfg", None) is not None:
        raise ValueError(f"{name}: zoo models take a tag ('{name}.<tag>'), not a pretrained_cfg; to load a file "
                         "of your own use timm.create_model(<timm arch>, pretrained_cfg=...).")
    resolved = weights.resolve(name, pretrained=pretrained, cache_dir=cache_dir, cfg_overlay=pretrained_cfg_overlay)
    return resolved.create_model(**kwargs)


def create_masker(name: str, pretrained: bool = True, cache_dir=None) -> nn.Module:
    """The learned masker of a release (ADIOS occluder, AutoMAE generator), in eval mode.

    Builds the pretrainer from the release's `pretrainer` facts (model, objective, model_args) and
    loads the released `masker.safetensors` into its `.masker`, checked like every file.
    `pretrained=False` gives the untrained masker of the same configuration (the name's default
    tag, or the method's defaults when nothing is released).

    Example:
        >>> import torch, zoo
        >>> masker = zoo.create_masker("adios_resnet18.simclr_scenes")     # doctest: +SKIP
        >>> masks = masker(torch.randn(1, 3, 32, 32))                      # (1, N, 32, 32)  # doctest: +SKIP
    """
    resolved = weights.resolve(name, "masker.safetensors", pretrained=pretrained, cache_dir=cache_dir)
    facts = resolved.pretrainer
    if not facts:
        raise weights.NoReleasedWeightsError(name, [], detail=" (config.json has no zoo.pretrainer)")
    pretrainer = create_pretrainer(facts["model"], facts.get("objective"), **(facts.get("model_args") or {}))
    masker = pretrainer.masker
    if masker is None:
        raise ValueError(f"{facts['model']} has no masker (a plain control); see zoo.list_models().")
    if resolved.file is not None:
        expected = {k: tuple(v.shape) for k, v in masker.state_dict().items()}
        weights.check_state_shapes(weights.tensor_shapes(resolved.file), expected, str(resolved.file))
        masker.load_state_dict(weights.load_tensors(resolved.file))
    return masker.eval()
