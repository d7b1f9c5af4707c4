"""Test-session settings.

One intra-op thread per process: the suite runs on 2-core machines and several tests start
subprocesses (two-process DDP, resume-after-kill), so 2 threads per process would oversubscribe
the cores, and PyTorch's OpenMP threads slow down by orders of magnitude when they must wait for
a busy core. Set here before torch is imported anywhere, so subprocesses inherit it.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test starts with no Accelerator state: accelerate keeps one per process, and a test that
    runs train/pretrain.py's main in-process (bf16, cpu=True) would otherwise refuse the next test's
    Accelerator of another precision ("AcceleratorState has already been initialized")."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def env(rel, monkeypatch):
    """The zoo's weight table and folder pointed at a test's own release `rel` (a fixture of the
    test module: {"table": path, "wdir": path, ...}), the Hub offline."""
    from huggingface_hub import constants as hf_constants
    from zoo import weights
    monkeypatch.setenv(weights.TABLE_ENV, str(rel["table"]))
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(rel["wdir"]))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return rel
