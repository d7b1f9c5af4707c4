"""Where a training step's time goes: SimCLR ResNet-18 on Fashion-MNIST, the release recipe's step.

    python benchmarks/step_time.py                      # -> benchmarks/step_time.json (+ a table on stdout)
    python benchmarks/step_time.py --steps 30 --batch 256

Parts, per global batch (timed one after another in this process, nothing else running):
- loading: the image from the IDX array (PIL, resized to 32 px) under its sample seed, the seed
  set by `torch.manual_seed` (what train/sampling.py did before) and by the CPU generator alone;
- augmentation: the per-image PIL pipeline (augment_on=loader, what a DataLoader worker runs) and
  the device path (augment_on=device): the draws in the loader, the batched ops on the device;
- the model: forward, backward, optimizer step (timm LARS) under the recipe's bf16 autocast +
  channels_last, on fixed tensors; and the step of each pilot configuration (train/pilot.py);
- the whole loop: train/pretrain.py for `--steps` steps with each augment_on, images/s of its log
  (median over log lines after the first).
A DataLoader worker overlaps loading and augmentation with the model, but on 2 cores it competes
with the model for them: the sums say what the step costs in CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import machine, median, set_threads, timeit  # noqa: E402

RECIPE = "recipes/simclr_resnet18.fmnist.yaml"


def _median_time(fn) -> float:
    return median(timeit(fn, warmup=1, repeats=5))


def data_parts(batch: int) -> dict:
    from zoo.data import build_dataset, dataset_stats, two_views
    from zoo.data.batch_views import BatchViews, ViewParams, collate_draws
    stats = dataset_stats("fashion_mnist")
    ds = build_dataset("fashion_mnist", "train", image_size=32)
    per_image = two_views("adios", 32, stats["mean"], stats["std"], grayscale=True)
    draws = ViewParams("adios", 32, grayscale=True)
    apply = BatchViews("adios", 32, stats["mean"], stats["std"], grayscale=True)

    def seeded(fn, how):
        def run():
            for i in range(batch):
                with torch.random.fork_rng(devices=[]):
                    (torch.manual_seed if how == "global" else torch.default_generator.manual_seed)(i)
                    fn(ds[i][0])
        return run

    items = [(draws(ds[i][0]), 0) for i in range(batch)]
    (x, p), _ = collate_draws(items)
    return {
        "load_seed_torch_manual_seed_s": _median_time(seeded(lambda im: None, "global")),
        "load_seed_cpu_generator_s": _median_time(seeded(lambda im: None, "cpu")),
        "views_per_image_pil_s": _median_time(seeded(per_image, "cpu")),
        "views_device_draws_s": _median_time(seeded(draws, "cpu")),
        "views_device_apply_s": _median_time(lambda: apply(x, p)),
    }


def model_parts(batch: int, configs: dict) -> dict:
    import zoo
    from train.optim import build_optimizer, phase_named_parameters
    from zoo.kernels import use_fast_kernels
    from train.recipe import Recipe
    recipe = Recipe.load(ROOT / RECIPE)
    out = {}
    for name, (model, size) in configs.items():
        torch.manual_seed(0)
        p = zoo.create_pretrainer(model).to(memory_format=torch.channels_last)
        use_fast_kernels(p)                 # the CPU kernels the training loop trains with (zoo/kernels.py)
        opt = build_optimizer(recipe, "encoder", phase_named_parameters(p, "encoder"))
        views = [torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last) for _ in range(2)]
        parts = {"forward": [], "backward": [], "optimizer": []}
        for it in range(7):
            t0 = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16):
                loss = p(views, phase="encoder")
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if it >= 2:
                for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                    parts[k].append(v)
        med = {f"{k}_s": statistics.median(v) for k, v in parts.items()}
        med["images_per_s"] = batch / sum(med.values())
        out[name] = med
    return out


def loop(batch: int, steps: int, augment_on: str, threads: int, overrides: tuple[str, ...] = (),
         recipe: str = RECIPE, env: dict | None = None) -> dict:
    """train/pretrain.py on `recipe` (+ overrides, + `env` variables) for `steps` steps: median
    images/s of its log lines after the first, its last loss, the process's wall-clock and the CPU
    seconds it spent in user and kernel (system) mode, its loader worker included."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "train/pretrain.py", "--recipe", recipe, f"max_steps={steps}",
                        f"batch_size={batch}", "log_every=5", f"augment_on={augment_on}", "num_workers=1",
                        "ckpt_every=0", f"run_dir={tmp}/run", *overrides], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = [json.loads(line) for line in Path(tmp, "run", "log.jsonl").read_text().splitlines()]
        wall, cpu = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"images_per_s": statistics.median(r["images_per_s"] for r in log[1:]),
                "process_wall_s": wall, "user_s": cpu.ru_utime - cpu0.ru_utime,
                "system_s": cpu.ru_stime - cpu0.ru_stime,
                "last_loss": {k: v for k, v in log[-1].items() if k.startswith("loss/")}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "step_time.json"))
    args = ap.parse_args(argv)
    set_threads(args.threads)
    configs = {"r18_32px": ("simclr_resnet18", 32), "r18_os16_32px": ("simclr_resnet18_os16", 32),
               "r18_48px": ("simclr_resnet18", 48)}
    result = {"machine": machine(), "batch": args.batch, "threads": args.threads, "recipe": RECIPE,
              "command": "python benchmarks/step_time.py " + " ".join(argv or sys.argv[1:]),
              "data": data_parts(args.batch), "model": model_parts(args.batch, configs),
              "loop": {a: loop(args.batch, args.steps, a, args.threads) for a in ("loader", "device")}}
    from zoo.runs import atomic_write
    atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    print(render(result))
    return result


def render(r: dict) -> str:
    d, m = r["data"], r["model"]["r18_32px"]
    rows = [("load + seed, torch.manual_seed (before)", d["load_seed_torch_manual_seed_s"]),
            ("load + seed, CPU generator only (now)", d["load_seed_cpu_generator_s"]),
            ("views, per-image PIL (augment_on=loader, incl. load)", d["views_per_image_pil_s"]),
            ("views, device path: draws in the loader (incl. load)", d["views_device_draws_s"]),
            ("views, device path: batched ops", d["views_device_apply_s"]),
            ("forward (bf16, channels_last)", m["forward_s"]), ("backward", m["backward_s"]),
            ("optimizer (timm LARS)", m["optimizer_s"])]
    lines = [f"Step-time breakdown, SimCLR ResNet-18, Fashion-MNIST 32 px, batch {r['batch']}, "
             f"{r['threads']} threads, {r['machine'].get('cpu', '')} (`{r['command'].strip()}`)", "",
             "| part | ms per batch |", "| --- | ---: |"]
    lines += [f"| {k} | {v * 1000:.0f} |" for k, v in rows]
    lines += ["", "| configuration | model step images/s (fixed tensors) |", "| --- | ---: |"]
    lines += [f"| {k} | {v['images_per_s']:.0f} |" for k, v in r["model"].items()]
    lines += ["", "| whole loop (train/pretrain.py, 1 loader worker) | images/s |", "| --- | ---: |"]
    lines += [f"| augment_on={k} | {v['images_per_s']:.0f} |" for k, v in r["loop"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
