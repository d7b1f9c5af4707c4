"""Pretrain any registered pretrainer from a recipe, on one CPU or many GPUs, unchanged.

    accelerate launch train/pretrain.py --recipe recipes/simclr_resnet18.fmnist.yaml [key=value ...]
    python train/pretrain.py --recipe recipes/adios_resnet18.simclr_scenes.yaml epochs=1   # one process

The file reads top to bottom (MAE's main_pretrain.py + engine_pretrain.py, nanoGPT's train.py):
`main` builds the processes, the data, the pretrainer with one optimizer and schedule per phase,
resumes, then `train` runs the optimizer steps: `train_step` takes every phase of the pretrainer in
its order (ADIOS: encoder then masker; AutoMAE: discriminator then encoder): set the phase's
learning rate, forward, check the loss is finite, backward, step; then `pretrainer.update(progress)`
(EMA teachers, progress-driven schedules); then log, draw masks and checkpoint at their intervals.
No callbacks. The CPU training kernels (zoo/kernels.py) are installed on the pretrainer for the
loop only, so the trained pretrainer returned holds plain timm modules.

What a run leaves in `run_dir` (zoo/runs.py): `recipe.yaml` (resolved), `log.jsonl`,
`masks.png` (+ `masks/step_*.png`) for pretrainers with a masker, `state/step_*` resume
checkpoints, `snapshots/step_*.safetensors` (the fp16 exported backbone every `snapshot_every`
steps and at the end, for train/curve.py), and at the end `pretrainer.safetensors` and a
`pretrain` block in `metrics.json` (wall-clock, steps, images, unreadable-image count).

Decisions, and why:
- Gradient accumulation runs phase-outer: for each phase, all `grad_accum` micro-batches are
  forwarded and backwarded, then that phase's optimizer steps. So an accumulated step equals one
  big-batch step of the alternating game: the masker phase sees the encoder already updated on
  the whole batch, as in the reference's 1:1 alternation. (BatchNorm still normalises per
  micro-batch.) Gradients of every parameter are cleared after each phase's step, because a
  phase's loss may reach parameters of another phase (AutoMAE's generator loss passes through the
  discriminator) and those must not leak into the other optimizer.
- DDP: `find_unused_parameters=True` for every pretrainer. A learned masker is idle in the
  encoder phase, the encoder is frozen in the masker phase, and some pretrainers keep backbone
  parameters their objective never uses (a ViT's class token when tokens are pooled without it);
  the cost is one autograd-graph traversal per forward. EMA teachers are updated from the
  all-reduced online weights by the same arithmetic on every process, so they stay identical
  (tests/test_distributed.py); BatchNorm buffers are broadcast from process 0 at each forward
  (DDP's default) and once more before the final save.
- Per-process randomness (masks, dropout) is seeded with the process index (accelerate's
  `device_specific`), after the model is built from the common seed; augmentation is seeded per
  sample (train/sampling.py), so `resume=true` is step-exact: same images, same views, same RNG.
- A non-finite loss stops the run before its backward, naming step and phase; the last checkpoint
  was written before it and is kept. All processes agree on the check (one all-reduce per phase).
- Mixed precision: bf16 autocast (also on CPU, where accelerate supports it and fp16 is ignored);
  objectives cast what matters to fp32 themselves. A CPU without native bf16 kernels (AVX2 only)
  runs the recipe in fp32 instead, with a warning and metrics.json's mixed_precision "no": there
  bf16 matmuls ran ~400x slower than fp32 (zoo.precision).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from tqdm.auto import tqdm

import zoo
from zoo.data import build_dataset, collate_skip_bad, dataset_stats, eval_transform, two_views
from zoo.data.batch_views import BatchViews, ViewParams, collate_draws
from zoo.kernels import fast_kernels
from zoo.precision import accelerate_device_type, resolve as resolve_precision
from zoo.runs import atomic_write, save_pretrainer, save_snapshot, snapshot_path, update_metrics
from train.allocator import keep_freed_memory
from train.checkpoint import last_checkpoint, load_checkpoint, save_checkpoint
from train.mask_grid import masker_picture, save_mask_grid
from train.optim import build_optimizer, build_schedule, phase_named_parameters
from train.recipe import BOOKKEEPING, Recipe, translate_legacy_phase_keys
from train.sampling import SeededSamples, StepSampler


class TrainingStopped(RuntimeError):
    """The run cannot go on (non-finite loss, bad setup); the message says why and what is kept."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="recipes/NAME.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=1 model_args.num_masks=2")
    return parser.parse_args(argv)


def main(argv=None) -> torch.nn.Module:
    """Train as the recipe says; returns the trained pretrainer (unwrapped, on its device)."""
    args = parse_args(argv)
    recipe = Recipe.load(args.recipe, args.overrides)
    keep_freed_memory()                           # train/allocator.py: 2.2x on BYOL-ViT's CPU loop
    run_dir = Path(recipe.run_dir)
    found = checkpoint_to_resume(recipe, run_dir)
    accelerator = build_accelerator(recipe, run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        recipe.save(run_dir / "recipe.yaml")
    data = build_data(recipe, accelerator)

    set_seed(recipe.seed)                         # the same initial weights on every process
    pretrainer = build_pretrainer(recipe, accelerator.num_processes)
    optimizers, schedules = build_optimizers(recipe, pretrainer, data)
    model, *prepared = accelerator.prepare(pretrainer, *optimizers.values())
    optimizers = dict(zip(optimizers, prepared))
    set_seed(recipe.seed, device_specific=True)   # masks / dropout differ across processes
    picture = mask_picture_batch(recipe, pretrainer, data, accelerator)

    step, elapsed_s, clock_from_step = resume(recipe, accelerator, found, data.last_step)
    if gained_snapshots(recipe, found, step):
        snapshot(accelerator, pretrainer, recipe, step)
    log = TrainingLog(recipe, accelerator, pretrainer.phases, step, data, elapsed_s, clock_from_step)
    try:                                          # the bar is closed before any stop message
        with fast_kernels(pretrainer):            # zoo/kernels.py, taken off again for the export
            step = train(recipe, accelerator, model, pretrainer, optimizers, schedules, data, picture, log, step)
    finally:
        log.close()
    finish(recipe, accelerator, pretrainer, data, log, step)
    return pretrainer


# ---- set-up ------------------------------------------------------------------------------------

def checkpoint_to_resume(recipe: Recipe, run_dir: Path) -> tuple[int, Path] | None:
    """The run's newest checkpoint; one left behind without resume=true is an error, not overwritten."""
    found = last_checkpoint(run_dir)
    if found and not recipe.resume:
        raise TrainingStopped(f"{run_dir} already holds checkpoint {found[1].name}: pass resume=true "
                              "to continue it, or another run_dir=")
    return found


def build_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    """Processes and precision; the global batch must split into micro-batches evenly.

    The recipe's bf16 becomes fp32 on a device without native bf16 kernels (zoo.precision), said
    once and recorded in metrics.json as the run's mixed_precision."""
    precision, why = resolve_precision(recipe.precision, accelerate_device_type())
    accelerator = Accelerator(
        mixed_precision="bf16" if precision == "bf16" else "no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with="tensorboard" if recipe.tensorboard else None,
        project_dir=str(run_dir))
    if recipe.batch_size % (accelerator.num_processes * recipe.grad_accum):
        raise TrainingStopped(f"batch_size {recipe.batch_size} (global) must be divisible by "
                              f"{accelerator.num_processes} processes x grad_accum {recipe.grad_accum}")
    if why:
        accelerator.print(f"warning: {why}")
    return accelerator


@dataclass
class Data:
    """This process's training data: step-exact micro-batches, views seeded per sample."""
    train_set: Dataset
    sampler: StepSampler
    micro_batch: int
    steps_per_epoch: int
    total_steps: int                   # the schedule's length (all epochs)
    last_step: int                     # where this run stops (max_steps, else total_steps)
    mean: tuple
    std: tuple
    device_views: BatchViews | None    # augment_on=device: the views are made on the device
    data_kw: dict
    skipped: object | None             # the dataset's unreadable-image counter, if it has one
    loader_kw: dict

    def loader_from(self, step: int, seed: int):
        """Micro-batches of this process from optimizer step `step` to the end of its epoch."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        self.sampler.set_position(epoch, in_epoch)
        return iter(DataLoader(SeededSamples(self.train_set), batch_size=self.micro_batch, sampler=self.sampler,
                               collate_fn=collate_draws if self.device_views is not None else collate_skip_bad,
                               generator=torch.Generator().manual_seed(seed + epoch),
                               persistent_workers=False, **self.loader_kw))


def build_data(recipe: Recipe, accelerator: Accelerator) -> Data:
    """The dataset with the recipe's views, and the sampler: global batch -> micro-batches per process."""
    world = accelerator.num_processes
    micro_batch = recipe.batch_size // (world * recipe.grad_accum)
    stats = dataset_stats(recipe.data)
    mean, std = recipe.mean or stats["mean"], recipe.std or stats["std"]
    view_args = dict(grayscale=stats["grayscale"], jitter=recipe.jitter)
    if recipe.augment_on == "device":          # the loader draws, the device applies (batch_views)
        views = ViewParams(recipe.views, recipe.image_size, **view_args)
        device_views = BatchViews(recipe.views, recipe.image_size, mean, std, **view_args).to(accelerator.device)
    else:
        views, device_views = two_views(recipe.views, recipe.image_size, mean, std, **view_args), None
    data_kw = dict(recipe.data_args)
    if recipe.data == "imagefolder" or recipe.data.startswith("hf:"):
        data_kw["strict"] = recipe.strict_data
    dataset = build_dataset(recipe.data, recipe.data_split, root=recipe.data_root,
                            image_size=recipe.image_size, transform=views, **data_kw)
    if isinstance(dataset, IterableDataset):
        raise TrainingStopped(f"{recipe.data} was opened as a stream; pretrain.py needs random access "
                              "for its step-exact sampler: pass data_args.streaming=false (or an imagefolder)")
    train_set = Subset(dataset, range(min(recipe.limit_train, len(dataset)))) if recipe.limit_train else dataset
    steps_per_epoch = len(train_set) // recipe.batch_size
    if steps_per_epoch == 0:
        raise TrainingStopped(f"{len(train_set)} training images make no full batch of {recipe.batch_size}")
    total_steps = recipe.epochs * steps_per_epoch
    last_step = min(total_steps, recipe.max_steps) if recipe.max_steps else total_steps
    sampler = StepSampler(len(train_set), recipe.batch_size, micro_batch, world, accelerator.process_index,
                          recipe.seed)
    return Data(train_set, sampler, micro_batch, steps_per_epoch, total_steps, last_step, mean, std,
                device_views, data_kw, getattr(dataset, "skipped", None),
                dict(num_workers=recipe.num_workers, pin_memory=accelerator.device.type == "cuda"))


def build_pretrainer(recipe: Recipe, world: int) -> torch.nn.Module:
    """The registered pretrainer in the recipe's memory format (SyncBatchNorm if asked, on many processes)."""
    pretrainer = zoo.create_pretrainer(recipe.model, recipe.objective, **recipe.model_args)
    pretrainer = pretrainer.to(memory_format=_memory_format(recipe))
    if recipe.sync_bn and world > 1:
        pretrainer = torch.nn.SyncBatchNorm.convert_sync_batchnorm(pretrainer)
    return pretrainer


def build_optimizers(recipe: Recipe, pretrainer, data: Data) -> tuple[dict, dict]:
    """One optimizer and one schedule per phase, keyed by phase in the pretrainer's order."""
    no_decay, static = pretrainer.no_weight_decay(), pretrainer.static_lr()
    optimizers = {ph: build_optimizer(recipe, ph, phase_named_parameters(pretrainer, ph), no_decay, static)
                  for ph in pretrainer.phases}
    schedules = {ph: build_schedule(recipe, ph, opt, data.steps_per_epoch, data.total_steps)
                 for ph, opt in optimizers.items()}
    return optimizers, schedules


def mask_picture_batch(recipe: Recipe, pretrainer, data: Data, accelerator: Accelerator) -> torch.Tensor | None:
    """A fixed batch of unaugmented train images for the mask pictures (main process, learned or
    fixed maskers only)."""
    if pretrainer.masker is None or not accelerator.is_main_process:
        return None
    plain = build_dataset(recipe.data, recipe.data_split, root=recipe.data_root, image_size=recipe.image_size,
                          transform=eval_transform(recipe.image_size, data.mean, data.std), **data.data_kw)
    return torch.stack([plain[i][0] for i in range(min(8, len(plain)))]).to(accelerator.device)


def recipe_changes(saved: dict, recipe: Recipe) -> dict[str, tuple]:
    """{key: (checkpoint's value, recipe's value)} for every computing key that differs; a checkpoint
    of an older run, with the flat per-phase keys (`masker_lr`), is read in the `phases` format."""
    now = recipe.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        then = translate_legacy_phase_keys(saved, "checkpoint")
    return {k: (v, now.get(k)) for k, v in then.items() if k not in BOOKKEEPING and now.get(k) != v}


def resume(recipe: Recipe, accelerator: Accelerator, found: tuple[int, Path] | None,
           last_step: int) -> tuple[int, float, int | None]:
    """Restore model, optimizers and RNG from the newest checkpoint if resume=true: (the step to go
    on from, the wall-clock seconds the run had spent to reach it, and the step its clock counts
    from where a checkpoint on the way predates that record, else None)."""
    if not recipe.resume:
        return 0, 0.0, None
    if not found:
        accelerator.print(f"resume=true but {Path(recipe.run_dir)} has no checkpoint yet: starting at step 0")
        return 0, 0.0, None
    progress = load_checkpoint(accelerator, found[1])
    step, elapsed_s = progress["step"], progress.get("wall_clock_s")
    accelerator.print(f"resumed from {found[1]} at step {step}/{last_step}")
    from_step = progress.get("wall_clock_from_step")      # an earlier part already lacked the record
    if elapsed_s is None:
        from_step = step
        accelerator.print("warning: the checkpoint predates its wall-clock record: the run's wall_clock_s "
                          f"counts from this resume (metrics.json says so: wall_clock_from_step {step})")
    changed = recipe_changes(progress.get("recipe", {}), recipe)
    if changed:                                # allowed (e.g. a fixed data path), but not step-exact
        accelerator.print("warning: the recipe differs from the checkpoint's, the run is no longer "
                          "step-exact: " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return step, elapsed_s or 0.0, from_step


# ---- the loop ----------------------------------------------------------------------------------

def train(recipe: Recipe, accelerator: Accelerator, model, pretrainer, optimizers: dict, schedules: dict,
          data: Data, picture: torch.Tensor | None, log: TrainingLog, step: int) -> int:
    """Optimizer steps from `step` to `data.last_step`; returns the step reached."""
    batches = data.loader_from(step, recipe.seed) if step < data.last_step else None
    grad_clip = {ph: recipe.phase_grad_clip(ph) for ph in optimizers}
    while step < data.last_step:
        micro_batches = next_micro_batches(batches, recipe, data, accelerator.device, step)
        losses = train_step(accelerator, model, optimizers, schedules, micro_batches, step, Path(recipe.run_dir),
                            grad_clip)
        pretrainer.update((step + 1) / data.total_steps)     # EMA teachers, progress-driven schedules
        step += 1
        log.add(losses)
        if step % data.steps_per_epoch == 0 and step < data.last_step:
            batches = data.loader_from(step, recipe.seed)     # next epoch: a new order
        if step % recipe.log_every == 0 or step == data.last_step:
            log.write(step, optimizers)
        log.bar.update(1)
        if picture is not None and (step == data.last_step
                                    or (recipe.mask_grid_every and step % recipe.mask_grid_every == 0)):
            draw_masks(pretrainer.masker, picture, Path(recipe.run_dir), step, data)
        if recipe.snapshot_every and (step % recipe.snapshot_every == 0 or step == data.last_step):
            snapshot(accelerator, pretrainer, recipe, step)
        if recipe.ckpt_every and (step % recipe.ckpt_every == 0 or step == data.last_step):
            save_checkpoint(accelerator, recipe.run_dir, step, {"recipe": recipe.to_dict(), **log.clock()})
    return step


def next_micro_batches(batches, recipe: Recipe, data: Data, device, step: int) -> list[list[torch.Tensor]]:
    """The `grad_accum` micro-batches of one optimizer step, as views on the device."""
    micro_batches = [next(batches) for _ in range(recipe.grad_accum)]
    if any(b is None for b in micro_batches):
        raise TrainingStopped(f"step {step}: a whole micro-batch of images was unreadable "
                              f"({data.skipped.report() if data.skipped else ''})")
    memory_format = _memory_format(recipe)
    return [[v.contiguous(memory_format=memory_format) for v in _views_of(b[0], data.device_views, device)]
            for b in micro_batches]


def train_step(accelerator: Accelerator, model, optimizers: dict, schedules: dict,
               micro_batches: list[list[torch.Tensor]], step: int, run_dir: Path,
               grad_clip: dict[str, float] | None = None) -> dict[str, list[float]]:
    """One optimizer step on one global batch, phase by phase in the pretrainer's order.

    For each phase: its schedule sets the lr of `step`; each micro-batch is forwarded (under the
    autocast that `accelerator.prepare` put on `model`), checked finite, and backwarded (DDP
    all-reduces on the last one only); then the phase's optimizer steps and every gradient is
    cleared (see "Decisions" above). `grad_clip[phase]` > 0 clips that phase's accumulated gradient
    to that total L2 norm first (after accelerate unscales it). Returns each phase's loss per micro-batch.
    """
    losses = {}
    for phase in accelerator.unwrap_model(model).phases:
        schedules[phase].step_update(step)
        losses[phase] = []
        for i, views in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            with nullcontext() if sync else accelerator.no_sync(model):
                loss = model(views, phase=phase)
                _check_finite(accelerator, loss, step, phase, run_dir)
                accelerator.backward(loss / len(micro_batches))
            losses[phase].append(loss.detach().float().item())
        max_norm = (grad_clip or {}).get(phase, 0.0)
        if max_norm > 0:
            accelerator.clip_grad_norm_([p for g in optimizers[phase].param_groups for p in g["params"]], max_norm)
        optimizers[phase].step()
        model.zero_grad(set_to_none=True)
    return losses


# ---- log, pictures, the end --------------------------------------------------------------------

class TrainingLog:
    """log.jsonl (main process), TensorBoard and the progress bar: each phase's loss averaged over
    the steps since the last line, the phases' lr, images/s. Its clock (`time_s`, the run's
    wall_clock_s) goes on from the `elapsed_s` a resumed checkpoint had reached, so a run cut
    into sessions reports the time of the steps it kept; the time between that checkpoint and a
    kill is lost work, not counted. `from_step`: the step the clock counts from where a checkpoint
    on the way predated the record (kept through later checkpoints), else None."""

    def __init__(self, recipe: Recipe, accelerator: Accelerator, phases, step: int, data: Data,
                 elapsed_s: float = 0.0, from_step: int | None = None):
        self.recipe, self.accelerator, self.phases, self.data = recipe, accelerator, tuple(phases), data
        self.from_step = from_step
        self.path = Path(recipe.run_dir) / "log.jsonl"
        if accelerator.is_main_process:
            _truncate_log(self.path, step)
        if recipe.tensorboard:
            accelerator.init_trackers("tb", config={k: v for k, v in recipe.to_dict().items()
                                                    if isinstance(v, (int, float, str, bool))})
        self.bar = tqdm(total=data.last_step, initial=step, unit="step", dynamic_ncols=True,
                        disable=not accelerator.is_local_main_process)
        self.sums = {ph: 0.0 for ph in self.phases}
        self.seen, self.t_log = 0, time.perf_counter()
        self.t_start = self.t_log - elapsed_s

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t_start

    def clock(self) -> dict:
        """What a checkpoint keeps of the clock (at time_s's precision, so the log never falls back)."""
        return {"wall_clock_s": round(self.elapsed_s(), 2),
                **({"wall_clock_from_step": self.from_step} if self.from_step is not None else {})}

    def add(self, losses: dict[str, list[float]]) -> None:
        for ph, per_micro_batch in losses.items():
            for value in per_micro_batch:
                self.sums[ph] += value / self.recipe.grad_accum
        self.seen += self.recipe.batch_size

    def write(self, step: int, optimizers: dict) -> None:
        now = time.perf_counter()
        n = (step - 1) % self.recipe.log_every + 1
        losses = {ph: _mean_over_processes(self.accelerator, self.sums[ph] / n) for ph in self.phases}
        record = {"step": step, "epoch": round(step / self.data.steps_per_epoch, 4),
                  **{f"loss/{ph}": v for ph, v in losses.items()},
                  **{f"lr/{ph}": optimizers[ph].param_groups[0]["lr"] for ph in self.phases},
                  "images_per_s": self.seen / (now - self.t_log), "time_s": round(now - self.t_start, 2)}
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.recipe.tensorboard:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
        self.bar.set_postfix({**{ph: f"{v:.4f}" for ph, v in losses.items()},
                              "img/s": f"{record['images_per_s']:.0f}"})
        self.sums = {ph: 0.0 for ph in self.phases}
        self.seen, self.t_log = 0, now

    def close(self) -> None:
        self.bar.close()


def gained_snapshots(recipe: Recipe, found: tuple[int, Path] | None, step: int) -> bool:
    """A run resumed with snapshot_every from a checkpoint whose recipe had none: its curve starts
    at the resume step (other resumes keep the snapshot_every grid)."""
    if not (recipe.snapshot_every and recipe.resume and found and step):
        return False
    saved = json.loads((found[1] / "progress.json").read_text()).get("recipe") or {}
    return not saved.get("snapshot_every") and not snapshot_path(recipe.run_dir, step).exists()


def snapshot(accelerator: Accelerator, pretrainer, recipe: Recipe, step: int) -> None:
    """The exported backbone at `step`, fp16, for the training curve (train/curve.py)."""
    if accelerator.is_main_process:
        save_snapshot(recipe.run_dir, step, pretrainer.exported_backbone())


def draw_masks(masker, picture: torch.Tensor, run_dir: Path, step: int, data: Data) -> None:
    """The masker's masks on the fixed batch: masks/step_*.png, and masks.png as the newest."""
    masks = masker_picture(masker, picture)
    save_mask_grid(run_dir / "masks" / f"step_{step:08d}.png", picture, masks, data.mean, data.std)
    save_mask_grid(run_dir / "masks.png", picture, masks, data.mean, data.std)


def finish(recipe: Recipe, accelerator: Accelerator, pretrainer, data: Data, log: TrainingLog, step: int) -> None:
    """The trained pretrainer and what the run cost (pretrainer.safetensors, metrics.json)."""
    run_dir, world = Path(recipe.run_dir), accelerator.num_processes
    if world > 1:
        for buffer in pretrainer.buffers():           # BN statistics of process 0 everywhere
            torch.distributed.broadcast(buffer.data, src=0)
    skipped = data.skipped
    unreadable = _sum_over_processes(accelerator, skipped.count if skipped else 0)
    if accelerator.is_main_process:
        save_pretrainer(run_dir, pretrainer, recipe.to_dict())
        update_metrics(run_dir, {"pretrain": {
            "steps": step, "epochs": round(step / data.steps_per_epoch, 4), "images": step * recipe.batch_size,
            **log.clock(), "processes": world,
            "device": str(accelerator.device), "mixed_precision": accelerator.mixed_precision,
            "unreadable_images": unreadable}})
        report = skipped.report() if skipped else "no unreadable images"
        accelerator.print(f"done: {step} steps -> {run_dir / 'pretrainer.safetensors'}; {report}"
                          + (f" (all processes: {unreadable})" if world > 1 else ""))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _memory_format(recipe: Recipe) -> torch.memory_format:
    return torch.channels_last if recipe.channels_last else torch.contiguous_format


def _views_of(loaded, device_views, device) -> list[torch.Tensor]:
    """The views of one micro-batch on the device: loaded as they are, or made there from
    (uint8 images, per-image draws) by `device_views`."""
    loaded = [t.to(device, non_blocking=True) for t in loaded]
    return device_views(*loaded) if device_views is not None else loaded


def _check_finite(accelerator, loss: torch.Tensor, step: int, phase: str, run_dir: Path) -> None:
    finite = torch.isfinite(loss.detach()).all().float()
    if accelerator.num_processes > 1:
        finite = accelerator.reduce(finite, reduction="sum") / accelerator.num_processes
    if finite.item() < 1:
        good = last_checkpoint(run_dir)
        kept = f"the last good checkpoint {good[1]} (step {good[0]}) is kept; " if good else "no checkpoint was written yet; "
        raise TrainingStopped(
            f"non-finite loss ({loss.detach().float().item()}) at step {step + 1}, phase {phase!r}: stopping before its "
            f"backward. {kept}lower lr (or the {phase} phase's lr), check the data, and resume=true.")


def _mean_over_processes(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor(value, device=accelerator.device, dtype=torch.float64)
    return accelerator.reduce(t, reduction="mean").item()


def _sum_over_processes(accelerator, value: int) -> int:
    if accelerator.num_processes == 1:
        return int(value)
    t = torch.tensor(value, device=accelerator.device, dtype=torch.float64)
    return int(accelerator.reduce(t, reduction="sum").item())


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):       # a line torn by a killed write
            pass
    atomic_write(path, "".join(line + "\n" for line in kept))


if __name__ == "__main__":
    try:
        main()
    except TrainingStopped as e:
        print(f"pretrain.py: stopped: {e}", file=sys.stderr)
        sys.exit(1)
