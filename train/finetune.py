"""Full fine-tune of a backbone with a fresh classifier head, a short schedule fixed in advance,
through Accelerate (the same script runs on CPU, one GPU or several: `accelerate launch`).

    python train/finetune.py simclr_resnet18 --data fashion_mnist --out runs/ft
    accelerate launch train/finetune.py runs/adios_resnet18 --bf16
    python train/finetune.py runs/x --limit-train 512 --limit-test 256 --epochs 1   # a quick look

Model: `zoo.create_model(name, pretrained=True, num_classes=N)` for a zoo name, a run's exported
backbone with `reset_classifier(N)`, or timm `local-dir:` with num_classes=N; --untrained starts
from random weights instead (supervised from scratch, the reference point).
Schedule (fixed): AdamW betas (0.9, 0.999), lr = 1e-3 x global batch / 256, weight decay 0.05 (none
on biases and norms), 1 warmup epoch then cosine to 0 per step, 10 epochs, global batch 128,
cross-entropy; augmentation RandomResizedCrop(0.2-1) + flip; test on unaugmented images.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from train import eval_common as ec  # noqa: E402
from zoo.data import collate_skip_bad, dataset_stats, finetune_transform  # noqa: E402


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm weights (every 1-D parameter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main(argv=None) -> dict:
    p = ec.parser(__doc__.split("\n\n")[0])
    p.set_defaults(batch_size=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--blr", type=float, default=1e-3, help="lr at global batch 256")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--untrained", action="store_true", help="random init: supervised from scratch")
    p.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is there")
    args = p.parse_args(argv)
    if args.source == ec.RAW:
        p.error("raw-pixels has nothing to fine-tune")
    accelerator = Accelerator(mixed_precision="bf16" if args.bf16 else "no", cpu=args.cpu)
    torch.manual_seed(args.seed)
    t0 = time.time()

    data = ec.data_name(args)
    stats = dataset_stats(data)
    num_classes = stats["num_classes"] or ec.num_classes_of(ec.datasets(args, data, 32)[0])
    if not num_classes:
        p.error(f"the class count of {data!r} is unknown (its labels are not a ClassLabel)")
    # zoo name: zoo.create_model(name, pretrained=True, num_classes=N); run: fresh head
    model, data, args.image_size = ec.backbone_and_defaults(args, num_classes, not args.untrained)
    augment = finetune_transform(args.image_size, *ec.normalisation(args, data))
    train, test = ec.datasets(args, data, args.image_size, train_transform=augment)

    per_process = max(1, args.batch_size // accelerator.num_processes)
    train_loader = DataLoader(train, batch_size=per_process, shuffle=True, drop_last=True,
                              num_workers=args.num_workers, collate_fn=collate_skip_bad)
    test_loader = DataLoader(test, batch_size=per_process, num_workers=args.num_workers,
                             collate_fn=collate_skip_bad)
    lr = args.blr * args.batch_size / 256
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=lr, betas=(0.9, 0.999))
    model, opt, train_loader, test_loader = accelerator.prepare(model, opt, train_loader, test_loader)

    steps_per_epoch = len(train_loader)
    total, warmup = args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for batch in train_loader:
            # lr per step in plain sight: linear warmup, then cosine to 0
            scale = (step + 1) / warmup if step < warmup else \
                0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            if batch is None:  # every image of this batch unreadable (single process only)
                step += 1
                continue
            x, y = batch
            with accelerator.autocast():
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            step += 1
        accelerator.print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.4f} "
                          f"({time.time() - t0:.0f} s)")

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
    prefix = f"{data}/untrained" if args.untrained else data
    metrics = {f"{prefix}/finetune_top1": 100.0 * correct / max(1, seen),
               f"{prefix}/finetune_protocol": (
                   f"full fine-tune, AdamW lr {lr:g} wd {args.weight_decay} cosine, warmup "
                   f"{args.warmup_epochs} ep, {args.epochs} epochs, batch {args.batch_size}, "
                   f"RRC(0.2-1)+flip, train={len(train_loader.dataset)}, test={seen}, "
                   f"image_size={args.image_size}")}
    if accelerator.is_main_process:
        ec.finish(args, metrics, train, test, t0)
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main()
