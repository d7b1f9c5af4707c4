"""Run train/pretrain.py with the tiny test method registered (tests only).

    python tests/tiny_launch.py --recipe R.yaml key=value ...
    accelerate launch ... tests/tiny_launch.py --recipe R.yaml ...

Fault injection for the resume tests, through the environment:
- TINY_KILL_AT=update:N      SIGKILL this process inside the N-th `pretrainer.update` (mid-run);
- TINY_KILL_AT=save_state:N  let the N-th `accelerator.save_state` write, cut one of its files to
                             half, then SIGKILL: a crash in the middle of a checkpoint write.
TINY_DUMP=DIR writes each process's final (and initial) pretrainer state to DIR/[init_]rank<r>.safetensors.
"""
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import accelerate  # noqa: E402

import tiny_method  # noqa: E402,F401  (registers tiny_test_resnet)
from train import pretrain  # noqa: E402

what, _, when = os.environ.get("TINY_KILL_AT", "").partition(":")
calls = {"update": 0, "save_state": 0}


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("TINY_DUMP"):              # keep the initial state to show training moved it
    original_init = tiny_method.TinyADIOS.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.initial_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
    tiny_method.TinyADIOS.__init__ = init

if what == "update":
    original_update = tiny_method.TinyADIOS.update

    def update(self, progress):
        original_update(self, progress)
        calls["update"] += 1
        if calls["update"] == int(when):
            _die()
    tiny_method.TinyADIOS.update = update

if what == "save_state":
    original_save = accelerate.Accelerator.save_state

    def save_state(self, output_dir=None, **kw):
        out = original_save(self, output_dir, **kw)
        calls["save_state"] += 1
        if calls["save_state"] == int(when):
            victim = max((p for p in Path(output_dir).iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
            with open(victim, "r+b") as f:
                f.truncate(victim.stat().st_size // 2)
            _die()
        return out
    accelerate.Accelerator.save_state = save_state

if __name__ == "__main__":
    try:
        pretrainer = pretrain.main()
    except pretrain.TrainingStopped as e:
        print(f"pretrain.py: stopped: {e}", file=sys.stderr)
        sys.exit(1)
    dump = os.environ.get("TINY_DUMP")
    if dump:
        from safetensors.torch import save_file
        rank = int(os.environ.get("RANK", "0"))
        Path(dump).mkdir(parents=True, exist_ok=True)
        for prefix, state in (("", pretrainer.state_dict()), ("init_", pretrainer.initial_state)):
            save_file({k: v.detach().contiguous().clone() for k, v in state.items()},
                      str(Path(dump) / f"{prefix}rank{rank}.safetensors"))
