"""Test-session settings.

One intra-op thread per process: the suite runs on 2-core machines and several tests start
subprocesses (two-process DDP, resume-after-kill), so 2 threads per process would oversubscribe
the cores, and PyTorch's OpenMP threads slow down by orders of magnitude when they must wait for
a busy core. Set here before torch is imported anywhere, so subprocesses inherit it.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
