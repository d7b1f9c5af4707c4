"""Full fine-tune of a backbone with a fresh classifier head, on all labels or on a class-balanced
low-label subset, a schedule fixed in advance, through Accelerate (CPU, one GPU or several).

    python train/finetune.py simclr_resnet18 --data fashion_mnist --out runs/ft
    python train/finetune.py simclr_resnet18.fmnist --labels 0.01 --baselines --out runs/ft   # the low-label protocol
    accelerate launch train/finetune.py runs/adios_resnet18 --bf16
    python train/finetune.py runs/x --limit-train 512 --limit-test 256 --epochs 1   # a quick look

Model: `zoo.create_model(name, pretrained=True, num_classes=N)` for a zoo name, a run's exported
backbone with `reset_classifier(N)`, or timm `local-dir:` with num_classes=N; --untrained starts
from random weights instead (supervised from scratch, the reference point).

All labels (fixed): AdamW betas (0.9, 0.999), lr = 1e-3 x global batch / 256, weight decay 0.05
(none on biases and norms: timm's `param_groups_weight_decay`), 1 warmup epoch then cosine to 0
per step (timm's `CosineLRScheduler`), 10 epochs, global batch 128, cross-entropy; augmentation
RandomResizedCrop(0.2-1) + flip; test on the whole unaugmented test split.

Low-label protocol (`--labels F`, F = 0.01 or 0.1): the train split is cut to a class-balanced
subset, `round(F x n_c)` images of each class c, the first ones of `randperm(n_c)` under
`--subset-seed` (default 0) over that class's indices in split order, so every model sees the same
images. The schedule is then counted in steps, the same for every model and both fractions:
500 optimizer steps at batch 128 (50 warmup), otherwise as above (epochs over the subset as many as
that takes). `--baselines` also measures, on the same subset and test split, the same architecture
from scratch (--untrained) and a raw-pixel logistic regression (zoo.evaluation.linear_probe on the
flattened normalised images: standardised, SGD, 100 epochs).
Metric keys: `<data>/finetune_top1` (all labels) or `<data>/finetune_top1_<pct>pct`, with
`<data>/untrained/...` and `<data>/raw_pixels/logreg_top1_<pct>pct` for the baselines.

`--baselines-cache DIR` keeps the two baselines in DIR/<key>.json and reuses them: they depend on
the architecture, not on the pretrained weights, so the zoo-name releases of one architecture,
data, resolution and precision share them (train/release.py passes runs/release/baselines; a run
directory builds its whole pretrainer first, so its head's init, and its key, is its own). The key
hashes everything that decides them: the from-scratch model's settings and seeded initial weights,
the label fraction and chosen subset, the schedule, workers, precision, devices and process count,
the data (name, root, arguments, normalisation), the library versions, and the source of this
script and of what it calls to load and transform data.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from timm.optim import param_groups_weight_decay  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from train import eval_common as ec  # noqa: E402
from train.allocator import keep_freed_memory  # noqa: E402
from zoo.data import collate_skip_bad, dataset_stats, finetune_transform  # noqa: E402
from zoo.precision import accelerate_device_type, resolve as resolve_precision  # noqa: E402
from zoo.runs import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the source the baselines' numbers depend on beyond the model: a change to any of it is a new key
BASELINE_CODE = ("train/finetune.py", "train/eval_common.py", "zoo/evaluation.py", "zoo/data")

LOW_LABEL_STEPS, LOW_LABEL_WARMUP = 500, 50


def balanced_subset(labels, fraction: float, seed: int = 0) -> list[int]:
    """Indices of a class-balanced subset: round(fraction * n_c) of each class, drawn by seed."""
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        n = max(1, round(fraction * len(members)))
        chosen += members[torch.randperm(len(members), generator=g)[:n]].tolist()
    return sorted(chosen)


def labels_of(ds) -> list[int]:
    """Train labels in index order (a Subset's through its parent)."""
    if isinstance(ds, Subset):
        parent = labels_of(ds.dataset)
        return [parent[i] for i in ds.indices]
    return list(ds.targets)


def percent(fraction: float) -> str:
    return f"{fraction * 100:g}".replace(".", "p")


def finetune(model, train, test, args, accelerator, steps: int | None = None, warmup: int | None = None):
    """Train `model` (with its head) on `train`, return (test top-1 in %, protocol string)."""
    per_process = max(1, args.batch_size // accelerator.num_processes)
    train_loader = DataLoader(train, batch_size=per_process, shuffle=True, drop_last=len(train) >= args.batch_size,
                              num_workers=args.num_workers, collate_fn=collate_skip_bad,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test, batch_size=per_process, num_workers=args.num_workers,
                             collate_fn=collate_skip_bad)
    lr = args.blr * args.batch_size / 256
    opt = torch.optim.AdamW(param_groups_weight_decay(model, args.weight_decay), lr=lr, betas=(0.9, 0.999))
    model, opt, train_loader, test_loader = accelerator.prepare(model, opt, train_loader, test_loader)
    steps_per_epoch = len(train_loader)
    total = steps if steps else args.epochs * steps_per_epoch
    warmup = warmup if warmup is not None else int(args.warmup_epochs * steps_per_epoch)
    sched = CosineLRScheduler(opt, t_initial=max(1, total - warmup), lr_min=0.0, warmup_t=warmup,
                              warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
    step, t0, loss = 0, time.time(), torch.zeros(())
    model.train()
    while step < total:
        for batch in train_loader:
            if step >= total:
                break
            sched.step_update(step + 1)         # lr of step + 1: warmup starts above 0, as before
            step += 1
            if batch is None:  # every image of this batch unreadable (single process only)
                continue
            x, y = batch
            with accelerator.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
        accelerator.print(f"step {step}/{total} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for batch in test_loader:
            if batch is None:
                continue
            x, y = batch
            with accelerator.autocast():
                pred = model(x).argmax(1)
            pred, y = accelerator.gather_for_metrics((pred, y))
            correct += int((pred == y).sum())
            seen += len(y)
    length = f"{total} steps ({warmup} warmup)" if steps else f"{args.epochs} epochs (warmup {args.warmup_epochs} ep)"
    protocol = (f"full fine-tune, AdamW lr {lr:g} wd {args.weight_decay} cosine, {length}, batch "
                f"{args.batch_size}, RRC(0.2-1)+flip, train={len(train)}, test={seen}, image_size={args.image_size}")
    return 100.0 * correct / max(1, seen), protocol


def raw_pixel_logreg(train_plain, test, args) -> float:
    """Logistic regression on raw pixels of the same labelled subset (the trivial baseline)."""
    from zoo.evaluation import extract_features, linear_probe
    flat = ec.raw_pixels()
    train_f, train_y = extract_features(flat, train_plain, batch_size=256)
    test_f, test_y = extract_features(flat, test, batch_size=256)
    return linear_probe(train_f, train_y, test_f, test_y, device=ec.device_of(args))["linear_top1"]


def baseline_key(scratch, chosen: list[int], args, precision: str, accelerator, data: str, steps, warmup,
                 test) -> str:
    """The content key of the low-label baselines (see the module docstring): equal keys, the same
    computation (on CPU the same numbers; GPU kernels need not be bitwise deterministic)."""
    import accelerate
    import timm
    import torchvision
    h = hashlib.sha256(repr(scratch).encode())      # the architecture's settings (dilation, pool, drop rates)
    for name, t in scratch.state_dict().items():       # and its seeded initial weights
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    root, data_kw = ec.data_source(args, data)
    facts = {"data": data, "root": root, "data_args": data_kw, "image_size": args.image_size,
             "normalisation": list(map(list, ec.normalisation(args, data))), "labels": args.labels,
             "subset": chosen, "steps": steps, "warmup": warmup, "batch_size": args.batch_size, "blr": args.blr,
             "weight_decay": args.weight_decay, "seed": args.seed, "num_workers": args.num_workers,
             "precision": precision, "processes": accelerator.num_processes, "device": accelerator.device.type,
             "logreg_device": ec.device_of(args).type, "test": len(test) if hasattr(test, "__len__") else None,
             "limit_train": args.limit_train, "limit_test": args.limit_test,
             "versions": [torch.__version__, timm.__version__, torchvision.__version__, accelerate.__version__]}
    h.update(json.dumps(facts, sort_keys=True, default=str).encode())
    for entry in BASELINE_CODE:
        path = REPO / entry
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(REPO).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:20]


def main(argv=None) -> dict:
    p = ec.parser(__doc__.split("\n\n")[0])
    p.set_defaults(batch_size=128)
    p.add_argument("--epochs", type=int, default=10, help="all-label schedule (the low-label one is in steps)")
    p.add_argument("--blr", type=float, default=1e-3, help="lr at global batch 256")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", type=float, default=None,
                   help="low-label protocol: the class-balanced fraction of train labels (0.01, 0.1)")
    p.add_argument("--subset-seed", type=int, default=0, help="which low-label subset (fixed, named in cards)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"override the low-label schedule's {LOW_LABEL_STEPS} steps (quick looks, tests)")
    p.add_argument("--untrained", action="store_true", help="random init: supervised from scratch")
    p.add_argument("--baselines", action="store_true",
                   help="low-label: also from scratch and a raw-pixel logistic regression, same subset")
    p.add_argument("--baselines-cache", type=Path, default=None, metavar="DIR",
                   help="keep and reuse the --baselines numbers in DIR, keyed by what decides them")
    p.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is there")
    args = p.parse_args(argv)
    if args.source == ec.RAW:
        p.error("raw-pixels has nothing to fine-tune (--baselines gives its logistic regression)")
    if args.labels is not None and not 0 < args.labels <= 1:
        p.error(f"--labels is a fraction in (0, 1], got {args.labels}")
    if args.baselines_cache and not args.baselines:
        p.error("--baselines-cache keeps the --baselines numbers: pass --baselines too")
    if args.baselines and args.labels is None:
        p.error("--baselines belongs to the low-label protocol: pass --labels 0.01 (or 0.1)")
    keep_freed_memory()                 # train/allocator.py
    precision, why = resolve_precision("bf16" if args.bf16 else "fp32", accelerate_device_type(args.cpu))
    if why:
        print(f"warning: {why}", file=sys.stderr)
    accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=args.cpu)
    t0 = time.time()

    data = ec.data_name(args)
    stats = dataset_stats(data)
    num_classes = stats["num_classes"] or ec.num_classes_of(ec.datasets(args, data, 32)[0])
    if not num_classes:
        p.error(f"the class count of {data!r} is unknown (its labels are not a ClassLabel)")
    torch.manual_seed(args.seed)
    # zoo name: zoo.create_model(name, pretrained=True, num_classes=N); run: fresh head
    model, data, args.image_size = ec.backbone_and_defaults(args, num_classes, not args.untrained)
    augment = finetune_transform(args.image_size, *ec.normalisation(args, data))
    train, test = ec.datasets(args, data, args.image_size, train_transform=augment)
    train_plain = ec.datasets(args, data, args.image_size)[0]    # unaugmented, for the logistic regression

    suffix, steps, warmup = "", None, None
    if args.labels is not None:
        chosen = balanced_subset(labels_of(train), args.labels, args.subset_seed)
        train, train_plain = Subset(train, chosen), Subset(train_plain, chosen)
        suffix = f"_{percent(args.labels)}pct"
        steps, warmup = args.steps or LOW_LABEL_STEPS, min(LOW_LABEL_WARMUP, (args.steps or LOW_LABEL_STEPS) // 10)

    prefix = f"{data}/untrained" if args.untrained else data
    top1, protocol = finetune(model, train, test, args, accelerator, steps, warmup)
    if args.labels is not None:
        protocol += f", class-balanced {args.labels:g} of the train labels (subset seed {args.subset_seed})"
    metrics = {f"{prefix}/finetune_top1{suffix}": top1, f"{prefix}/finetune_protocol{suffix}": protocol}
    if args.baselines:
        torch.manual_seed(args.seed)
        scratch = ec.untrained(args, num_classes=num_classes, seed=args.seed)
        cached = None
        if args.baselines_cache:
            key = baseline_key(scratch, chosen, args, precision, accelerator, data, steps, warmup, test)
            cached = args.baselines_cache / f"{key}.json"
        if cached is not None and cached.exists():
            baselines = json.loads(cached.read_text())["metrics"]
            accelerator.print(f"baselines reused from {cached} (same key: architecture, init, subset, schedule, code)")
        else:
            baselines = {
                f"{data}/untrained/finetune_top1{suffix}": finetune(scratch, train, test, args, accelerator,
                                                                    steps, warmup)[0],
                f"{data}/raw_pixels/logreg_top1{suffix}": raw_pixel_logreg(train_plain, test, args)}
            if cached is not None and accelerator.is_main_process:
                cached.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(cached, json.dumps({"metrics": baselines, "measured_with": args.source}, indent=2))
        metrics.update(baselines)
    if accelerator.is_main_process:
        ec.finish(args, metrics, train, test, t0)
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main()
