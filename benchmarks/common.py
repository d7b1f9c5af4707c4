"""What every benchmark shares: the machine line, fixed threads, timing, precision, FLOP counting.

Rules the suite follows everywhere, so that numbers taken in one run compare:
- a fixed thread count (`torch.set_num_threads`, default 2 = this machine's cores) set once;
- warm-up iterations first, then the median of repeated, individually timed iterations;
- "fp32" = float32, NCHW; "bf16" = the recipes' default, `torch.autocast(bfloat16)` with the
  model and inputs in channels_last;
- FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on the work actually executed,
  so tokens a ViT drops are never counted (they are never computed).

Example:
    >>> import torch
    >>> from benchmarks.common import count_flops
    >>> lin = torch.nn.Linear(8, 4)
    >>> count_flops(lambda: lin(torch.randn(2, 8)))      # 2 * batch * in * out
    128
"""
from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

PRECISIONS = ("fp32", "bf16")
DEFAULT_THREADS = 2


def set_threads(n: int = DEFAULT_THREADS) -> int:
    """Fix the intra-op thread count (and the inter-op one, once per process)."""
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):       # inter-op threads can only be set once
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed (AVX-512, bf16 instructions, AMX)."""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx512f", "avx512_bf16", "amx",
                                                               "avx2", "avx_vnni")))
    return []


def machine() -> dict:
    """The machine line recorded beside every number."""
    import timm
    info = dict(cpu=cpu_model(), cores=os.cpu_count(), flags=cpu_flags(),
                threads=torch.get_num_threads(), python=platform.python_version(),
                torch=torch.__version__, timm=timm.__version__,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                load_average=list(os.getloadavg()))
    with contextlib.suppress(ImportError):
        import lightly
        info["lightly"] = lightly.__version__
    return info


def machine_line(info: dict) -> str:
    return (f"{info['cpu']}, {info['cores']} cores ({info['threads']} threads used), "
            f"{' '.join(info.get('flags', []))}; Python {info['python']}, torch {info['torch']}, "
            f"timm {info['timm']}" + (f", lightly {info['lightly']}" if info.get("lightly") else ""))


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued device work, so wall-clock timings cover it (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], warmup: int = 2, repeats: int = 5, max_seconds: float | None = None,
           min_repeats: int = 3, device=None) -> list[float]:
    """Seconds per call of `fn`, each call timed alone, after `warmup` untimed calls.

    Stops early once `max_seconds` of timed calls have passed and `min_repeats` are done, so an
    expensive case costs a bounded time.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and len(times) >= min_repeats and sum(times) > max_seconds:
            break
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> float:
    """Relative spread (max - min) / median of repeated timings: how noisy a number was."""
    m = median(xs)
    return float((max(xs) - min(xs)) / m) if m > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class PeakMemory:
    """Peak memory a block of work adds: CUDA max-allocated, or RSS high-water mark on the CPU.

    On the CPU the high-water mark is per process (`ru_maxrss` cannot be reset), so the delta is
    exact only in a fresh process whose earlier peak was lower; `benchmarks.run` runs every
    pretrainer case in its own process for this reason.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.base = rss_mb()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak = peak_rss_mb()
        self.delta_mb = max(0.0, self.peak - self.base)


# --------------------------------------------------------------------------------------------
# Precision, FLOPs
# --------------------------------------------------------------------------------------------

def autocast(precision: str, device_type: str = "cpu"):
    """The recipes' mixed precision: bf16 autocast for "bf16", nothing for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(precision: str) -> torch.memory_format:
    """bf16 runs use channels_last (the recipes' default); fp32 runs the plain NCHW layout."""
    return torch.channels_last if precision == "bf16" else torch.contiguous_format


def to_format(x, precision: str):
    """Model or 4-D tensor in the memory format of `precision` (other tensors unchanged)."""
    fmt = memory_format(precision)
    if isinstance(x, nn.Module):
        return x.to(memory_format=fmt)
    return x.contiguous(memory_format=fmt) if x.dim() == 4 else x


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that `fn` executes (forward and, if it calls backward, backward), one multiply-add
    counted as 2, as `torch.utils.flop_counter` counts them (matmul, conv, attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def make_inputs(batch: int, views: int, image_size: int = 32, seed: int = 0, device="cpu") -> list[Tensor]:
    """Deterministic normalised-image-like inputs: `views` tensors (batch, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, image_size, image_size, generator=g).to(device) for _ in range(views)]
