"""Resume checkpoints: `accelerator.save_state` written atomically, the last good one kept.

Layout: `run_dir/state/step_00000120/` holds what `save_state` writes (model, one optimizer per
phase, every process's RNG states) plus `progress.json` (the step, the recipe that made it, the
run's wall-clock so far). A checkpoint is written to `run_dir/state/.tmp_step_.../` and only
renamed to its final name once complete: a process killed mid-write leaves a `.tmp_*` folder
that is ignored and cleaned, never a torn checkpoint. Older checkpoints are deleted only after the new one is in place, so the last
good one always exists. This protects against the training process dying at any point (SIGKILL,
OOM, a NaN stop); it does not fsync, so a power cut before the OS has flushed the newest
checkpoint can still damage it (on this shared machine an fsync of a tiny checkpoint took up to a
minute when other processes were writing).

Resume state is trusted and local (accelerate unpickles the optimizer and RNG files): it is never
published (DESIGN.md). On several machines without a shared file system each node writes its own
copy of the RNG files; run the resume from the same node layout.

Example:
    >>> from train.checkpoint import last_checkpoint
    >>> last_checkpoint("runs/does-not-exist") is None
    True
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STATE = "state"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / STATE
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def last_checkpoint(run_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint, or None."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, run_dir: str | os.PathLike, step: int, progress: dict,
                    keep: int = 1) -> Path:
    """Every process calls this; the main process renames and prunes. Returns the final folder."""
    folder = Path(run_dir) / STATE
    final, tmp = folder / f"step_{step:08d}", folder / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)          # a leftover of a killed write
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))                   # every process writes its RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step, **progress}, indent=1))
        if final.exists():                              # the same step saved again after a resume
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
        for old_step, old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stray in folder.glob(".tmp_step_*"):
            shutil.rmtree(stray, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: Path) -> dict:
    """Restore model, optimizers and RNG from `folder`; returns its progress.json."""
    accelerator.load_state(str(folder))
    return json.loads((folder / "progress.json").read_text())
