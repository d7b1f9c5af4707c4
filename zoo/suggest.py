"""The one "did you mean" helper behind every unknown-name error (models, archs, objectives,
datasets, view presets, recipe keys and files)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, choices: Iterable, n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Up to `n` choices that look like `name` (difflib's ratio >= cutoff), best first."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable, n: int = 3, cutoff: float = 0.5, quote: bool = False) -> str:
    """' Did you mean a, b?' (empty when nothing is close): the hint appended to an error message.

    Example:
        >>> did_you_mean("simclr_resnet19", ["simclr_resnet18", "mae_vit_tiny"])
        ' Did you mean simclr_resnet18?'
    """
    close = close_matches(name, choices, n, cutoff)
    if not close:
        return ""
    return " Did you mean " + ", ".join(repr(c) if quote else c for c in close) + "?"
