"""Time to beat raw pixels: the CPU-minutes of SimCLR pretraining until kNN top-1 (k=20) on
Fashion-MNIST first exceeds raw pixels', ours against lightly's, each in its default precision
(ours: bf16 autocast + channels_last + the zoo's CPU kernels, as the release recipe trains;
lightly: fp32, as its examples train).

Both sides train from the release recipe `recipes/simclr_resnet18.fmnist.yaml`, so the record
speaks for the released weight's configuration: its data (Fashion-MNIST, 48 px), its views (the
"adios" preset, grayscale fallback, drawn per sample from (seed, epoch, index) and made on batched
tensors: the same images and views for both sides, step for step), its batch (256), its optimizer
(LARS over the recipe's parameter groups) and its warmup-cosine schedule over its 8 epochs, from
the same initial weights (lightly's model gets a copy of ours, `benchmarks.versus.build_pair`).
Only the model code and the precision differ.

Every `check_every` epochs the backbone's frozen fp32 features go through the weighted kNN
(cosine, T = 0.1, k = 20 and 200; `zoo.evaluation`) with the first `knn_train` train images as the
bank, tested on the first `knn_test` test images; raw pixels (the same images, the same
normalisation, flattened) are measured once on the same split. The record of a side is the first
check above raw pixels at k=20: its training-step minutes (forward, backward, optimizer step; the
shared augmentation and the checks are off the clock, as in `benchmarks.quality`) and its
wall-clock minutes with the augmentation. A side that does not get there within the schedule
says so, with its best check.

A side costs about its release run (ours: ~44 min on the Intel AMX host, bf16; lightly fp32 is
slower), so each side runs as its own call and the results merge:

    python -m benchmarks.run --only to_pixels --to-pixels-sides ours --merge --out benchmarks/results.json
    python -m benchmarks.run --only to_pixels --to-pixels-sides lightly --merge --out benchmarks/results.json
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "simclr_resnet18.fmnist.yaml"


def side_precision(side: str, recipe) -> str:
    """Each library's default: ours the recipe's (bf16, or fp32 where this CPU has no native bf16,
    as train/pretrain.py resolves it); lightly fp32, as its examples train."""
    from zoo.precision import resolve
    return resolve(recipe.precision, "cpu")[0] if side == "ours" else "fp32"


def check_recipe(recipe) -> None:
    """What this harness reproduces of train/pretrain.py: one micro-batch per step, no gradient
    clipping, the factory's SimCLR ResNet-18 (the one both sides are built as)."""
    want = {"grad_accum": 1, "grad_clip": 0.0, "model": "simclr_resnet18", "model_args": {}}
    have = {"grad_accum": recipe.grad_accum, "grad_clip": recipe.phase_grad_clip("encoder"),
            "model": recipe.model, "model_args": dict(recipe.model_args or {})}
    bad = {k: have[k] for k in want if have[k] != want[k]}
    if bad:
        raise ValueError(f"to_pixels trains simclr_resnet18 with grad_accum 1, no grad_clip and no model_args; "
                         f"the recipe (with overrides) has {bad}")


def optimizer(side: str, model, recipe, data):
    """(optimizer, schedule): ours exactly as train/pretrain.py builds them; lightly's model the
    same optimizer and parameter groups (weight decay on ndim >= 2) over its trainable parameters."""
    from train.optim import build_optimizer, build_schedule
    from train.pretrain import build_optimizers
    if side == "ours":
        opts, schedules = build_optimizers(recipe, model, data)
        return opts["encoder"], schedules["encoder"]
    opt = build_optimizer(recipe, "encoder", [(n, p) for n, p in model.named_parameters() if p.requires_grad])
    return opt, build_schedule(recipe, "encoder", opt, data.steps_per_epoch, data.total_steps)


def train_side(side: str, model, recipe, data, split, raw_k20: float, check_every: float,
               stop_when_beaten: bool = True, log=print) -> dict:
    """Train one side on the recipe's schedule; kNN every `check_every` epochs until it beats raw pixels."""
    from benchmarks import peer_lightly
    from benchmarks.common import to_format
    from benchmarks.quality import knn
    from benchmarks.stepping import train_step
    from train.pretrain import next_micro_batches
    precision = side_precision(side, recipe)
    model = to_format(model.train(), precision)
    if side == "ours":                 # the CPU kernels the training loop trains with (zoo/kernels.py)
        from zoo.kernels import use_fast_kernels
        use_fast_kernels(model)
    opt, schedule = optimizer(side, model, recipe, data)
    check_steps = max(1, round(check_every * data.steps_per_epoch))
    step, step_s, check_s, t_start = 0, 0.0, 0.0, time.perf_counter()
    checks, first, first_loss = [], None, None
    batches = data.loader_from(0, recipe.seed)
    while step < data.last_step:
        views = [to_format(v, precision) for v in next_micro_batches(batches, recipe, data, "cpu", step)[0]]
        t0 = time.perf_counter()
        schedule.step_update(step)
        progress = (step + 1) / data.total_steps
        loss = (train_step(model, views, {"encoder": opt}, precision, progress=progress) if side == "ours"
                else peer_lightly.train_step(model, views, opt, precision, progress=progress))
        step_s += time.perf_counter() - t0
        step += 1
        first_loss = loss if first_loss is None else first_loss
        if not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(f"{side}: loss {loss} at step {step}")
        if step % data.steps_per_epoch == 0 and step < data.last_step:
            batches = data.loader_from(step, recipe.seed)        # next epoch: a new order
        if step % check_steps == 0 or step == data.last_step:
            t0 = time.perf_counter()
            k = knn(model.backbone, split)
            model.train()
            check_s += time.perf_counter() - t0
            checks.append(dict(step=step, epochs=round(step / data.steps_per_epoch, 3),
                               step_minutes=round(step_s / 60, 2),
                               wall_minutes=round((time.perf_counter() - t_start - check_s) / 60, 2),
                               loss=loss, knn_top1_k20=k["knn_top1_k20"], knn_top1_k200=k["knn_top1_k200"]))
            log(f"  {side} step {step}: kNN k=20 {k['knn_top1_k20']:.2f} (raw pixels {raw_k20:.2f}), "
                f"{step_s / 60:.1f} step-min")
            if first is None and k["knn_top1_k20"] > raw_k20:
                first = checks[-1]
                if stop_when_beaten:
                    break
    return dict(precision=precision, steps=step, images=step * recipe.batch_size, first_loss=first_loss,
                images_per_s=step * recipe.batch_size / step_s, checks=checks, beaten_at=first,
                best=max(checks, key=lambda c: c["knn_top1_k20"]))


def run(sides=("ours", "lightly"), check_every: float = 0.5, knn_train: int = 10000, knn_test: int = 2000,
        overrides=(), log=print) -> dict:
    """{"settings", "raw_pixels", side: record} for each of `sides` (see the module docstring); a
    side that fails is recorded as its error, beside the sides that did not."""
    from accelerate import Accelerator
    from benchmarks.common import machine, machine_line
    from benchmarks.quality import eval_split, knn
    from benchmarks.versus import build_pair
    from train.eval_common import raw_pixels
    from train.pretrain import build_data
    from train.recipe import Recipe
    from zoo.data import dataset_stats
    from zoo.data.sources import DataMissingError
    recipe = Recipe.load(RECIPE, list(overrides))
    check_recipe(recipe)
    stats = dataset_stats(recipe.data)
    try:
        split = eval_split(recipe.data, recipe.image_size, recipe.mean or stats["mean"], recipe.std or stats["std"],
                           knn_train, knn_test)
    except DataMissingError as e:
        return dict(skipped=f"{e} (apt-get update && apt-get install -y dataset-fashion-mnist)")
    data = build_data(recipe, Accelerator(cpu=True))
    raw = knn(raw_pixels(), split)
    settings = dict(recipe=str(RECIPE.relative_to(ROOT)), overrides=list(overrides), image_size=recipe.image_size,
                    batch=recipe.batch_size, epochs=recipe.epochs, check_every_epochs=check_every,
                    knn_train=len(split[0][1]), knn_test=len(split[1][1]))
    out = dict(settings=settings, raw_pixels=raw)
    for side in sides:
        # sides merge from separate calls: each carries its settings, split baseline and machine
        record = dict(settings=dict(settings), raw_pixels=dict(raw), machine=machine_line(machine()))
        try:
            ours, theirs = build_pair("simclr", recipe.seed)
            record.update(train_side(side, ours if side == "ours" else theirs, recipe, data, split,
                                     raw["knn_top1_k20"], check_every, log=log))
        except Exception as e:  # noqa: BLE001 - recorded; the other side still runs
            import traceback
            traceback.print_exc()
            record["error"] = f"{type(e).__name__}: {e}"
        out[side] = record
    return out
