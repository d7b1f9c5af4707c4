"""Every registered pretrainer at CPU scale: images/s, step time, peak memory, MFU.

A case is one (registered name, objective) pair on a CPU-scale arch (32 px: `resnet18`,
`vit_tiny_patch4_32`), built with its recipe's `model_args` and per-phase optimizers
(`train.optim.build_optimizer`) where `recipes/` has one (else the factory defaults at 32 px and
SGD with momentum), stepped the way the training loop steps it (`benchmarks.stepping`: all
phases, one optimizer each, then the EMA update) on fixed random inputs. The batch is the same
for every case (128 by default), so that cases compare; a recipe's own batch size is not used.

Measured per case:
- `step_s`: median seconds of one full step (all phases), after warm-up; `phase_s` per phase;
- `images_per_s`: batch / step_s (dataset images, whatever the number of views per image);
- `flops_per_step`: `FlopCounterMode` over one full step (forward + backward of every phase;
  dropped ViT tokens are never computed, so never counted);
- `mfu`: flops_per_step / step_s / measured matmul peak of the same precision (filled in by
  `benchmarks.run`, which measures the peak in the same run);
- `peak_mem_mb`: peak RSS during the steps minus RSS before the first step (the training step's
  working memory: activations, gradients, optimizer state). Exact only in a fresh process, which
  is why `benchmarks.run` runs each case in its own process (`python -m benchmarks.pretrainers`).

Example:
    >>> from benchmarks.pretrainers import bench_case
    >>> r = bench_case("simclr_resnet18", batch=8, precision="fp32", warmup=1, repeats=2)  # doctest: +SKIP
    >>> r["images_per_s"] > 0                                                               # doctest: +SKIP
    True
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
import warnings

import torch

from benchmarks import recipes as recipe_table
from benchmarks.common import PeakMemory, count_flops, median, rss_mb, set_threads, spread
from benchmarks.stepping import make_optimizers, prepare, train_step, views_for

CPU_ARCHS = ("resnet18", "vit_tiny_patch4_32")


def case_id(name: str, objective: str | None) -> str:
    return f"{name}:{objective}" if objective else name


def parse_case(case: str) -> tuple[str, str | None]:
    name, _, objective = case.partition(":")
    return name, (objective or None)


def all_cases(archs=CPU_ARCHS) -> list[str]:
    """Every registered (name, objective) pair on the CPU-scale archs, as "name[:objective]"."""
    import zoo  # noqa: F401  (registers the methods)
    from zoo.registry import METHODS
    out = []
    for name, entry in sorted(METHODS.items()):
        if entry.arch in archs:
            out += [case_id(name, o) for o in (entry.objectives or (None,))]
    return out


def factory_kwargs(entry, objective: str | None, image_size: int) -> tuple[dict, dict]:
    """(model_args for the factory, recipe facts) from the case's recipe, else factory defaults.

    A method whose masker is built for an image size (`entry.takes_img_size`) gets the benchmark's.
    """
    recipe = recipe_table.find(entry.name, objective)
    kwargs = dict(recipe.get("model_args") or {}) if recipe else {}
    if entry.takes_img_size and "img_size" not in kwargs:
        kwargs["img_size"] = image_size
    return kwargs, ({"recipe": recipe["path"], "recipe_precision": recipe.get("precision", "bf16")}
                    if recipe else {"recipe": None})


def bench_case(name: str, objective: str | None = None, batch: int = 64, precision: str = "bf16",
               image_size: int = 32, warmup: int = 2, repeats: int = 5, max_seconds: float = 30.0,
               seed: int = 0) -> dict:
    """Measure one pretrainer (see the module docstring for what each field means)."""
    import zoo  # noqa: F401
    from zoo.kernels import use_fast_kernels
    from zoo.registry import create_pretrainer, get_method
    from zoo.weights import ZooWeightsError
    entry = get_method(name)
    kwargs, facts = factory_kwargs(entry, objective, image_size)
    torch.manual_seed(seed)
    try:
        pretrainer = create_pretrainer(name, objective, **kwargs).train()
    except ZooWeightsError as e:
        # AutoMAE's attention source (a released MAE) may not be released yet: its weights do
        # not change the cost, so a random frozen ViT of the same arch stands in.
        if kwargs.get("attention_source") is None:
            raise
        facts["note"] = (f"attention_source {kwargs['attention_source']} not available "
                         f"({type(e).__name__}); a random frozen ViT of the same arch stands in")
        kwargs = dict(kwargs, attention_source=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pretrainer = create_pretrainer(name, objective, **kwargs).train()
    views = views_for(pretrainer, batch, image_size, seed)
    recipe = recipe_table.find(name, objective)
    # bf16 runs use the recipe's memory format (channels_last unless it says otherwise)
    channels_last = precision == "bf16" and (recipe or {}).get("channels_last", True)
    pretrainer, views = prepare(pretrainer, views, precision, channels_last)
    use_fast_kernels(pretrainer)            # the CPU kernels the training loop trains with (zoo/kernels.py)
    optimizers = (recipe_table.optimizers_from_recipe(recipe, pretrainer) if recipe else None)
    facts["optimizer"] = recipe.get("optimizer", "lars") if optimizers else "sgd"
    optimizers = optimizers or make_optimizers(pretrainer)
    params = sum(p.numel() for p in pretrainer.parameters())
    rss_before = rss_mb()

    steps: list[float] = []
    phases: dict[str, list[float]] = {p: [] for p in pretrainer.phases}
    losses: list[float] = []
    with PeakMemory() as mem:
        i = 0
        while i < warmup + repeats:
            per_phase: dict[str, float] = {}
            t0 = time.perf_counter()
            losses.append(train_step(pretrainer, views, optimizers, precision, progress=0.5,
                                     phase_seconds=per_phase))
            dt = time.perf_counter() - t0
            if i < warmup:
                if dt > 10.0:           # a slow case: one warm-up step is enough
                    warmup = i + 1
            else:
                steps.append(dt)
                for p, s in per_phase.items():
                    phases[p].append(s)
                if len(steps) >= 3 and sum(steps) > max_seconds:
                    break
            i += 1
    flops = count_flops(lambda: train_step(pretrainer, views, optimizers, precision))
    step = median(steps)
    return dict(case=case_id(name, objective), name=name, method=entry.method, arch=entry.arch,
                objective=objective, precision=precision, channels_last=bool(channels_last),
                batch=batch, image_size=image_size,
                views=len(views), phases=list(pretrainer.phases), model_args=kwargs, **facts,
                params_m=params / 1e6, step_s=step, step_min_s=min(steps), step_spread=spread(steps),
                repeats=len(steps),
                phase_s={p: median(v) for p, v in phases.items() if v},
                images_per_s=batch / step, flops_per_step=flops,
                achieved_gflops=flops / step / 1e9,
                peak_mem_mb=mem.delta_mb, rss_before_mb=rss_before,
                loss_finite=all(math.isfinite(x) for x in losses))


def main(argv=None) -> None:
    """Run one case in this process and print its JSON on the last line (used by benchmarks.run)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", required=True, help='"name" or "name:objective"')
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    set_threads(a.threads)
    name, objective = parse_case(a.case)
    try:
        result = bench_case(name, objective, a.batch, a.precision, a.image_size, a.warmup,
                            a.repeats, a.max_seconds)
    except Exception as e:  # reported, not fatal: one broken method must not hide the others
        traceback.print_exc()
        result = dict(case=a.case, precision=a.precision, batch=a.batch,
                      error=f"{type(e).__name__}: {e}")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
