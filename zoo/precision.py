"""Which precision a run gets: bf16 autocast only where the device has fast bf16 kernels.

The recipes ask for bf16 autocast (about 2x a ResNet step on CPUs with AVX-512 BF16 or AMX, on
GPUs). A CPU without native bf16 support (an AVX2-only x86, as some of our hosts are) runs oneDNN's
reference bf16 path instead: measured on such a host (AMD EPYC, AVX2, torch 2.14.1), a 2048^2
matmul ran at 0.28 GFLOP/s in bf16 against 111 in fp32, and a ResNet-18 SimCLR step at 48 px took
about 56 s instead of a few. There bf16 is no speed choice at all, so such a run falls back to fp32
and says so; the math of every method is the same in both (losses are computed in fp32 either way).

    >>> resolve("fp32", "cpu")
    ('fp32', None)
"""
from __future__ import annotations

import functools
import os

import torch

FORCE_ENV = "ZOO_FORCE_BF16"   # "1": keep bf16 even where it is slow (to measure that slowness)


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device_type: str) -> bool:
    """True where bf16 autocast runs on native kernels: CUDA with bf16 support, a CPU where oneDNN
    has bf16 kernels (AVX-512 BF16 / AMX, or AVX-512 core), and other accelerators (MPS, XPU)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):   # a build without oneDNN: no fast bf16 path either
        return False


def resolve(precision: str, device) -> tuple[str, str | None]:
    """(the precision to run, why it differs from the one asked for, or None).

    `precision` is a recipe's "bf16" or "fp32"; `device` a torch.device or its type name.
    """
    device_type = device if isinstance(device, str) else torch.device(device).type
    if precision != "bf16" or os.environ.get(FORCE_ENV) == "1" or bf16_is_fast(device_type):
        return precision, None
    capability = torch.backends.cpu.get_cpu_capability() if device_type == "cpu" else device_type
    return "fp32", (f"precision bf16 asked, but this {device_type} ({capability}) has no native bf16 "
                    f"kernels, where bf16 autocast runs a reference path hundreds of times slower "
                    f"than fp32: running fp32 (set {FORCE_ENV}=1 to keep bf16)")


def accelerate_device_type(cpu: bool = False) -> str:
    """The device type an `Accelerator(cpu=cpu)` will run on, known before it is built (its
    precision is fixed at construction). Reads ACCELERATE_USE_CPU as accelerate does; building a
    `PartialState` here instead would initialise accelerate's state before the launcher's flags
    are read (two launched processes then each ran alone)."""
    from accelerate.utils import parse_flag_from_env
    if cpu or parse_flag_from_env("ACCELERATE_USE_CPU"):
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"
