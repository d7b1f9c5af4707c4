"""Keep freed memory in the process: glibc malloc settings for the training and evaluation scripts.

A training step on the CPU allocates and frees the same large activations every step (a ViT-Tiny
MLP activation at batch 256 x 65 tokens is 25 MB in bf16). glibc serves blocks above its mmap
threshold with fresh `mmap` pages and gives the top of the heap back to the kernel above its trim
threshold, so every step pays the kernel again: a page fault for each 4 KiB page it writes and an
`munmap` to free it. On this project's 2-core hosts that kernel time was half the step of
BYOL-ViT (`python benchmarks/allocator.py`, BENCHMARKS.md "glibc malloc: keep freed memory"):
the loop ran at 40.3 images/s with glibc's defaults and 87.6 with the settings below (2.17x),
with the same losses to the last digit (the arithmetic is untouched; only where the bytes live
changes).

`keep_freed_memory()` raises the mmap threshold to its ceiling (32 MiB on 64-bit glibc), so
activations come from the heap, and stops trimming, so freed heap stays mapped for the next step;
the heap top is grown in 256 MiB steps. The price is that the process keeps its peak memory
until it exits, which a training or evaluation process does anyway. DataLoader workers started
by fork (Linux's default before Python 3.14) inherit the settings; others run with glibc's.
Elsewhere (macOS, musl, Windows) it does nothing and says so by returning False. `ZOO_KEEP_FREED_MEMORY=0` in the environment turns it off (the benchmark's "before").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "ENV"]

ENV = "ZOO_KEEP_FREED_MEMORY"

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 << 20          # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TOP_PAD = 256 << 20
NO_TRIM = -1                           # mallopt(3): -1 turns trimming off completely


def keep_freed_memory() -> bool:
    """Apply the settings above to this process's glibc malloc; True when they took effect."""
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):     # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = [mallopt(param, value) == 1 for param, value in          # each one, whatever the others did
            ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, NO_TRIM), (M_TOP_PAD, TOP_PAD))]
    return all(done)
