"""Two CPU processes (gloo, DDP) train with identical replicas, learned masker and EMA teacher included.

`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port <free>`
runs train/pretrain.py (through tests/tiny_launch.py, which adds the tiny test method: ResNet with
BatchNorm, BYOL EMA teacher, ADIOS occluder, two phases) for a few steps; each process then writes
its own final state. Every parameter and buffer must be bitwise equal across the two processes, and
training must have moved the backbone, the masker and the teacher (~20 s here, mostly imports).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
model: tiny_test_resnet
objective: byol
data: scenes
data_args: {length: 32}
image_size: 32
epochs: 1
batch_size: 8
lr: 0.1
phases: {masker: {lr: 0.05}}
warmup_epochs: 0
channels_last: false
num_workers: 0
log_every: 1
ckpt_every: 2
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_keep_identical_replicas(tmp_path):
    recipe, run_dir, dump = tmp_path / "tiny.yaml", tmp_path / "run", tmp_path / "dump"
    recipe.write_text(TINY)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(ROOT / "tests" / "tiny_launch.py"), "--recipe", str(recipe), f"run_dir={run_dir}"]
    env = {**{k: v for k, v in os.environ.items() if k != "TINY_KILL_AT"},
           "ACCELERATE_USE_CPU": "1", "TINY_DUMP": str(dump), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "ZOO_FORCE_BF16": "1"}     # the recipe's bf16 even on a CPU without native bf16 kernels
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
    assert done.returncode == 0, done.stderr[-4000:]

    facts = json.loads((run_dir / "metrics.json").read_text())["pretrain"]
    assert facts["processes"] == 2 and facts["steps"] == 4           # 32 images / global batch 8
    assert facts["mixed_precision"] == "bf16"                         # the recipe's, not the launcher's
    r0, r1 = (load_file(str(dump / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0.keys() == r1.keys()
    differ = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not differ, f"replicas differ in {len(differ)} tensors, e.g. {differ[:5]}"

    init = load_file(str(dump / "init_rank0.safetensors"))
    for group in ("backbone.", "masker.", "objective.teacher.", "objective.projector."):
        keys = [k for k in r0 if k.startswith(group) and r0[k].is_floating_point()]
        assert keys and any(not torch.equal(r0[k], init[k]) for k in keys), f"{group} did not train"
    # the checkpoint written by process 0 holds the same state
    ckpt = load_file(str(run_dir / "state" / "step_00000004" / "model.safetensors"))
    assert all(torch.equal(ckpt[k], r0[k]) for k in ckpt if "running_" not in k and "num_batches" not in k)
