"""Resume: a run killed with SIGKILL (mid-run, and in the middle of a checkpoint write) and resumed
ends bitwise identical to an uninterrupted run: weights, EMA teacher, learned masker, BN buffers,
optimizer states (both phases), RNG states and the logged losses.

The runs are real `train/pretrain.py` processes (tests/tiny_launch.py adds the tiny test method and
the fault injection). One kill plan is drawn at random per test run and printed on failure; `-m slow` runs all of them.
The uninterrupted run loads data in the main process, the interrupted ones in a worker process:
augmentation is seeded per sample, so that must not matter either.

Note: 32 px images. At 16 px the tiny ResNet's last stage sees 1 x 1 maps, where oneDNN's bf16
convolution weight gradient is not repeatable on this CPU even without any interruption (a kernel
issue outside the zoo: the same backward twice in one process gives two results).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = """\
model: tiny_test_resnet
objective: byol
data: scenes
data_args: {length: 24}
image_size: 32
views: simclr
epochs: 2
batch_size: 8
optimizer: lars
lr: 0.1
masker_lr: 0.05
warmup_epochs: 1
precision: bf16
channels_last: false
num_workers: 0
log_every: 1
ckpt_every: 2
"""
STEPS, CKPT_EVERY = 6, 2          # 24 scenes / batch 8 = 3 steps per epoch, 2 epochs


def launch(recipe: Path, run_dir: Path, *overrides: str, kill_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("TINY_KILL_AT", None)
    if kill_at:
        env["TINY_KILL_AT"] = kill_at
    cmd = [sys.executable, str(ROOT / "tests" / "tiny_launch.py"), "--recipe", str(recipe),
           f"run_dir={run_dir}", *overrides]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def losses(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith(("step", "loss/", "lr/"))} for r in rows]


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: {len(differ)} tensors differ, e.g. {differ[:5]}"


def assert_same_optimizer(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["param_groups"] == sb["param_groups"], a.name
    assert sa["state"].keys() == sb["state"].keys() and sa["state"], a.name
    for i in sa["state"]:
        for key, value in sa["state"][i].items():
            assert torch.equal(value, sb["state"][i][key]), f"{a.name}: state of parameter {i} ({key}) differs"


def kill_plans() -> list[tuple[int, int]]:
    """Every (kill_step, kill_write): SIGKILL inside the update of optimizer step `kill_step` (before
    that step's checkpoint), then inside checkpoint write `kill_write` of the resumed run."""
    return [(k, w) for k in range(1, STEPS) for w in range(1, writes_after(last_saved(k)) + 1)]


def last_saved(kill_step: int) -> int:
    """The step the first resume starts from: the newest checkpoint written before the kill."""
    return (kill_step - 1) // CKPT_EVERY * CKPT_EVERY


def writes_after(step: int) -> int:
    return (STEPS - step) // CKPT_EVERY


def test_killed_and_resumed_run_is_bitwise_identical(tmp_path):
    kill_step, kill_write = random.Random().choice(kill_plans())   # one plan per run; all: -m slow
    check_kill_and_resume(tmp_path, kill_step, kill_write)


@pytest.mark.slow
@pytest.mark.parametrize("kill_step,kill_write", kill_plans())
def test_every_kill_plan_resumes_bitwise_identical(tmp_path, kill_step, kill_write):
    check_kill_and_resume(tmp_path, kill_step, kill_write)


def check_kill_and_resume(tmp_path: Path, kill_step: int, kill_write: int) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    plan = f"killed after step {kill_step}, then during checkpoint write {kill_write} of the resumed run"
    # the checkpoint the final resume starts from (0: none survived both kills)
    survivor = last_saved(kill_step) + CKPT_EVERY * (kill_write - 1)

    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = launch(recipe, ref_dir)                    # in parallel with the first interrupted part
    first = launch(recipe, run_dir, "num_workers=1", kill_at=f"update:{kill_step}")
    code, log = finish(first)
    assert code == -signal.SIGKILL, f"{plan}: first part should have been killed\n{log}"
    code, log = finish(reference)
    assert code == 0, log

    code, log = finish(launch(recipe, run_dir, "num_workers=1", "resume=true", kill_at=f"save_state:{kill_write}"))
    assert code == -signal.SIGKILL, f"{plan}: second part should have been killed\n{log}"
    torn = list((run_dir / "state").glob(".tmp_step_*"))
    assert torn, f"{plan}: the killed write should have left a torn temp folder"
    complete = sorted(p.name for p in (run_dir / "state").glob("step_*"))
    assert complete == ([f"step_{survivor:08d}"] if survivor else []), f"{plan}: {complete}"

    code, log = finish(launch(recipe, run_dir, "num_workers=1", "resume=true"))
    assert code == 0, f"{plan}\n{log}"
    expected = f"step_{survivor:08d} at step {survivor}/{STEPS}" if survivor else "has no checkpoint yet: starting at step 0"
    assert expected in log, f"{plan}: expected '{expected}' in the log\n{log}"

    final = f"step_{STEPS:08d}"
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == [final], "stray or old checkpoints left"
    a, b = load_file(str(ref_dir / "pretrainer.safetensors")), load_file(str(run_dir / "pretrainer.safetensors"))
    assert any(k.startswith("objective.teacher.") for k in a) and any(k.startswith("masker.") for k in a)
    assert_same_tensors(a, b, f"{plan}: final pretrainer (weights, EMA teacher, masker, BN buffers)")
    ref_state, run_state = ref_dir / "state" / final, run_dir / "state" / final
    assert_same_tensors(load_file(str(ref_state / "model.safetensors")),
                        load_file(str(run_state / "model.safetensors")), f"{plan}: checkpointed model")
    for opt in ("optimizer.bin", "optimizer_1.bin"):       # encoder and masker phases
        assert_same_optimizer(ref_state / opt, run_state / opt)
    # RNG states (torch, numpy, python) as accelerate pickled them: compared as bytes, never unpickled
    assert (ref_state / "random_states_0.pkl").read_bytes() == (run_state / "random_states_0.pkl").read_bytes(), plan
    assert losses(ref_dir) == losses(run_dir), plan
    assert [r["step"] for r in losses(run_dir)] == list(range(1, STEPS + 1))
    assert_clock_goes_on(run_dir, survivor, plan)


def assert_clock_goes_on(run_dir: Path, resumed_at: int, what: str) -> None:
    """The run's clock counts the kept steps of every part: log time_s never falls back at a resume,
    and wall_clock_s is at least the resumed checkpoint's record plus the last part's steps."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    times = [r["time_s"] for r in rows]
    assert times == sorted(times), f"{what}: time_s falls back across a resume: {times}"
    pretrain = json.loads((run_dir / "metrics.json").read_text())["pretrain"]
    assert "wall_clock_from_step" not in pretrain, what
    assert pretrain["wall_clock_s"] >= times[-1] - 0.1, what
    if resumed_at:
        before = [r["time_s"] for r in rows if r["step"] <= resumed_at]
        assert pretrain["wall_clock_s"] > before[-1], what


def killed_with_a_clockless_checkpoint(tmp_path: Path, kill_in_step: int) -> tuple[Path, Path]:
    """(recipe, run_dir) of a tiny run killed in step `kill_in_step`, its last checkpoint's
    progress.json stripped of the wall-clock record, as a checkpoint from before the record was."""
    recipe, run_dir = tmp_path / "tiny.yaml", tmp_path / "run"
    recipe.write_text(TINY)
    code, log = finish(launch(recipe, run_dir, kill_at=f"update:{kill_in_step}"))
    assert code == -signal.SIGKILL, log
    progress = run_dir / "state" / f"step_{last_saved(kill_in_step):08d}" / "progress.json"
    saved = json.loads(progress.read_text())
    assert saved["wall_clock_s"] > 0                        # what the new checkpoints record
    progress.write_text(json.dumps({k: v for k, v in saved.items() if k != "wall_clock_s"}))
    return recipe, run_dir


def test_a_checkpoint_without_a_clock_record_says_its_run_time_is_partial(tmp_path):
    """A checkpoint from before the wall-clock record (progress.json without wall_clock_s): the
    resumed run counts its time from there and says so, and release.py's seed table gives no time."""
    recipe, run_dir = killed_with_a_clockless_checkpoint(tmp_path, kill_in_step=5)
    code, log = finish(launch(recipe, run_dir, "resume=true"))
    assert code == 0, log
    assert "predates its wall-clock record" in log
    pretrain = json.loads((run_dir / "metrics.json").read_text())["pretrain"]
    assert pretrain["wall_clock_from_step"] == 4
    with_record = tmp_path / "run2"
    code, log = finish(launch(recipe, with_record, kill_at="update:5"))
    assert code == -signal.SIGKILL, log
    code, log = finish(launch(recipe, with_record, "resume=true"))
    assert code == 0, log
    assert_clock_goes_on(with_record, 4, "resumed once from step 4")


def test_a_partial_clock_stays_marked_through_later_resumes(tmp_path):
    """Resumed from a checkpoint without the record, killed again and resumed from a newer one
    (which has a clock, but a partial one): metrics.json still says where the clock starts."""
    recipe, run_dir = killed_with_a_clockless_checkpoint(tmp_path, kill_in_step=3)
    code, log = finish(launch(recipe, run_dir, "resume=true", kill_at="update:3"))   # in step 5
    assert code == -signal.SIGKILL, log
    newer = json.loads((run_dir / "state" / "step_00000004" / "progress.json").read_text())
    assert newer["wall_clock_from_step"] == 2 and newer["wall_clock_s"] > 0
    code, log = finish(launch(recipe, run_dir, "resume=true"))
    assert code == 0, log
    assert "predates its wall-clock record" not in log          # this checkpoint has a clock ...
    assert json.loads((run_dir / "metrics.json").read_text())["pretrain"]["wall_clock_from_step"] == 2  # ... a partial one


def test_existing_checkpoints_need_resume_true(tmp_path):
    from train.checkpoint import STATE
    from train.pretrain import TrainingStopped, main
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: simclr_resnet18\nepochs: 1\n")
    (tmp_path / "run" / STATE / "step_00000004").mkdir(parents=True)
    with pytest.raises(TrainingStopped, match="already holds checkpoint step_00000004: pass resume=true"):
        main(["--recipe", str(recipe), f"run_dir={tmp_path / 'run'}"])


def test_checkpoint_folders(tmp_path):
    from train.checkpoint import checkpoints, last_checkpoint
    state = tmp_path / "state"
    for name in ("step_00000002", "step_00000010", ".tmp_step_00000012", "step_12", "notes"):
        (state / name).mkdir(parents=True)
    assert [s for s, _ in checkpoints(tmp_path)] == [2, 10]      # torn and foreign folders ignored
    assert last_checkpoint(tmp_path)[0] == 10
    assert last_checkpoint(tmp_path / "nothing") is None
