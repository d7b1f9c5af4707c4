"""The machine's limit: sustained matmul GFLOP/s in fp32 and bf16 on all cores, in one run.

`torch.matmul` of two large square matrices (2 n^3 FLOPs), warm-up calls first, then the median of
repeated timed calls. The bf16 number is what a bf16-autocast model could reach at best; every MFU
in this suite divides by the peak of its own precision.

Example:
    >>> from benchmarks.peak import matmul_peak
    >>> r = matmul_peak("fp32", n=256, repeats=3)
    >>> r["gflops"] > 0
    True
"""
from __future__ import annotations

import torch

from benchmarks.common import median, spread, timeit

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(precision: str, n: int = 2048, warmup: int = 3, repeats: int = 10, device="cpu") -> dict:
    """Median GFLOP/s of an (n x n) @ (n x n) matmul in `precision` ("fp32" or "bf16")."""
    dtype = DTYPES[precision]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = timeit(lambda: torch.matmul(a, b, out=out), warmup=warmup, repeats=repeats, device=device)
    flops = 2 * n ** 3
    return dict(precision=precision, n=n, seconds=median(times), gflops=flops / median(times) / 1e9,
                spread=spread(times), repeats=len(times))


def run(quick: bool = False, device="cpu") -> dict:
    """Both precisions, same run: {"fp32": {...}, "bf16": {...}}."""
    n, repeats = (1024, 5) if quick else (2048, 15)
    return {p: matmul_peak(p, n=n, repeats=repeats, device=device) for p in DTYPES}
