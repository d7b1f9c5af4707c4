"""A non-finite loss stops the run with a clear message naming step and phase; the last good
checkpoint is kept, still loads, and the run resumes from it.

The tiny test method (tests/tiny_method.py) returns NaN on the 4th call of its masker phase, i.e. in
optimizer step 4 (steps count from 1, as in log.jsonl), after checkpoints at steps 1, 2 and 3
(ckpt_every=1; only the newest is kept).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
model: tiny_test_resnet
objective: simclr
model_args: {nan_at: "masker:4"}
data: scenes
data_args: {length: 32}
image_size: 32
epochs: 1
batch_size: 8
lr: 0.1
channels_last: false
num_workers: 0
log_every: 1
ckpt_every: 1
"""


def run(recipe: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tests" / "tiny_launch.py"), "--recipe", str(recipe),
           f"run_dir={run_dir}", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "TINY_KILL_AT"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "PYTHONWARNINGS": "ignore"})


def test_nan_loss_stops_with_step_and_phase_and_keeps_last_good_checkpoint(tmp_path):
    recipe, run_dir = tmp_path / "nan.yaml", tmp_path / "run"
    recipe.write_text(TINY)
    done = run(recipe, run_dir)
    assert done.returncode == 1, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("pretrain.py: stopped: non-finite loss (nan) at step 4, phase 'masker'"), message
    assert "last good checkpoint" in message and "step_00000003 (step 3) is kept" in message
    assert "Traceback" not in done.stderr                   # a message, not a crash

    state = run_dir / "state"
    assert sorted(p.name for p in state.iterdir()) == ["step_00000003"]
    assert json.loads((state / "step_00000003" / "progress.json").read_text())["step"] == 3
    weights = load_file(str(state / "step_00000003" / "model.safetensors"))
    assert all(v.isfinite().all() for v in weights.values())   # the NaN never reached the weights
    assert not (run_dir / "pretrainer.safetensors").exists()    # an unfinished run is not a result
    logged = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]

    # the kept checkpoint is good: resume from it without the fault and finish the epoch
    done = run(recipe, run_dir, "resume=true", "model_args.nan_at=")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout + done.stderr
    assert [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert (run_dir / "pretrainer.safetensors").exists()
