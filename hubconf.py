"""torch.hub entrypoints of the zoo, generated from its registry: one per name, a `tag=` keyword.

Entrypoint names cannot contain dots, so the tag of a release is a keyword:

    import torch
    model = torch.hub.load("PATH/TO/zoo", "adios_resnet18", tag="simclr_fmnist", source="local")
    model = torch.hub.load("OWNER/zoo", "adios_resnet18", trust_repo=True)     # a GitHub checkout

Each entrypoint returns what `zoo.create_model` returns (the plain timm backbone, hash-checked
weights from the checkout's weights/ folder or the Hub cache) and takes timm kwargs
(`num_classes=N`, `features_only=True`, ...). Its docstring lists the released tags and their
metrics. Every public callable here is an entrypoint, so helpers and imports are private.
"""
dependencies = ["torch", "timm", "safetensors", "huggingface_hub", "yaml"]

import zoo as _zoo  # noqa: E402
from zoo import weights as _weights  # noqa: E402
from zoo.publish import headline as _headline  # noqa: E402
from zoo.registry import METHODS as _METHODS  # noqa: E402


def _doc(name: str, table: dict) -> str:
    entry = _METHODS[name]
    args = f", model_args {entry.model_args}" if entry.model_args else ""
    lines = [f"{name}: {entry.method} on {entry.arch} (timm {entry.timm_arch}{args})"
             f"{'; a pairing no paper ran (ours)' if entry.ours else ''}.", ""]
    releases = [e for e in table.values() if e["name"] == name]
    if releases:
        lines.append("Released tags (the first is the default):")
        for e in releases:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in _headline(e.get("metrics") or {}).items())
            data = (e.get("recipe") or {}).get("data", "")
            lines.append(f"  {e['tag']}: {shown or 'no metrics recorded'}{f' (data: {data})' if data else ''}")
    else:
        lines.append("No released weights yet: pretrained=True raises; pretrained=False builds it untrained.")
    lines += ["", "Args:",
              "    tag: a released tag (default: the first one listed).",
              "    pretrained: load the released, SHA-256-checked weights (default: True when released).",
              "    **kwargs: timm kwargs, e.g. num_classes=10 (fresh head), features_only=True.",
              "", "Example:",
              f"    model = torch.hub.load(REPO, \"{name}\", source=\"local\""
              f"{', tag=' + repr(releases[0]['tag']) if releases else ''})"]
    return "\n".join(lines)


def _entrypoint(name: str, table: dict):
    released = any(e["name"] == name for e in table.values())

    def entry(tag: str | None = None, pretrained: bool | None = None, **kwargs):
        pretrained = released if pretrained is None else pretrained
        return _zoo.create_model(f"{name}.{tag}" if tag else name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = _doc(name, table)
    return entry


def _generate() -> None:
    table = _weights.load_table()
    for name in _zoo.list_models():
        globals()[name] = _entrypoint(name, table)


_generate()
