"""Evaluation with protocols fixed in advance (never tuned on the test set).

Features: `extract_features` runs a frozen backbone in eval mode, without gradients, on
unaugmented images (`zoo.data.eval_transform`: resize + normalise), optionally under bf16
autocast; features are returned as float32 on the CPU.

kNN (`knn_classify`), DINO-style weighted kNN: features L2-normalised, cosine similarity to every
train feature, the k most similar train samples vote for their class with weight exp(sim / T),
T = 0.1, k = 20 and 200; prediction = the class with the largest summed weight. Neighbours with
equal similarity are taken in train order (stable sort); a vote tie goes to the lowest class
index; k larger than the train set uses the whole train set. Weights are computed as
exp((sim - max sim) / T), the same ranking without overflow. Reported: top-1 in percent on the
test split, with the whole train split as memory bank. (The ADIOS reference prints the best of a
k, T, distance grid; we report the fixed protocol only.)

Linear probe (`linear_probe`), on frozen, unaugmented features: standardise with the train mean
and std; one Linear layer (zero init) trained with cross-entropy by SGD, momentum 0.9, lr 0.1
cosine-decayed per step to 0 (timm's `CosineLRScheduler`), batch 256, no weight decay, 100 epochs
over the train features (shuffled with seed 0); no validation split, no early stopping; report the
final model's top-1 on the test split. (The ADIOS reference trains on augmented images, 100
epochs, step decay; with frozen precomputed features augmentation is impossible, cosine replaces
the steps.)

Mask score (`mask_score`): each mask binarised at 0.5 (hidden where m >= 0.5; masks coarser than
the image, e.g. patch masks, upsampled with nearest neighbours); for every ground-truth object
(its visible pixels, objects with no visible pixel ignored) the best IoU over the K masks of its
image; the score is the mean over all objects of all images. Baselines scored on the same images
and in the same run: `random_masks_like` (per image and slot, the same number of cells of an 8 x 8
grid, chosen at random: MAE-style random patches of the same area) and `block_masks_like` (per
image and slot, one rectangle of the same area, aspect ratio log-uniform in [0.3, 1/0.3],
BEiT-style, random position). `score_masker` does all three on held-out scenes.

Mask cover (`mask_cover`), the other side of the same masks: per image, the share of its objects'
visible pixels (their union) that the one slot hiding the most of them hides, mean over images.
1 means some masked view shows no object at all. On the scenes every object carries the label
(`zoo.data.scenes`), so a cover near 1 says a view pulled toward the full image keeps no class
evidence; the score alone does not say this (a slot can fit one object tightly, IoU 1, and still
leave the others in view). `score_masker` reports it with the same two baselines.

Example:
    >>> import torch
    >>> f = torch.eye(4); y = torch.tensor([0, 1, 2, 3])
    >>> knn_classify(f, y, f, y, k=(1,))
    {'knn_top1_k1': 100.0}
    >>> m = torch.zeros(1, 2, 4, 4); m[0, 0, :2] = 1
    >>> gt = [torch.zeros(1, 4, 4, dtype=torch.bool)]; gt[0][0, :2, :2] = True
    >>> mask_score(m, gt)      # IoU = 4 / 8
    0.5
"""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.scheduler import CosineLRScheduler
from torch import Tensor, nn
from torch.utils.data import DataLoader

from zoo import weights
from zoo.data import collate_skip_bad
from zoo.precision import resolve as resolve_precision


# ---------------------------------------------------------------------------------------------
# Backbones to evaluate

def load_backbone(source: str, num_classes: int = 0, pretrained: bool = True) -> tuple[nn.Module, dict]:
    """(plain timm backbone, info) from a run directory, a zoo model name or `local-dir:<path>`.

    info: {"source", "kind": "run" | "name" | "local-dir", "data", "image_size", "mean", "std"}
    where known (a run's recipe, a weight's pretrained cfg). num_classes > 0 gives a fresh
    classifier head; pretrained=False the same architecture untrained (the "untrained" baseline).
    """
    info = {"source": source, "data": None, "image_size": None}
    if Path(source).is_dir() and (Path(source) / "recipe.yaml").exists():
        from zoo.runs import exported_architecture, load_pretrainer
        # the untrained architecture is built after the trained one, as the published
        # "untrained" baselines were: the same seed then gives the same initialisation
        pretrainer, recipe = load_pretrainer(source)
        backbone = pretrainer.exported_backbone() if pretrained else exported_architecture(recipe)
        if num_classes:
            backbone.reset_classifier(num_classes)
        info.update(kind="run", data=recipe.get("data"), image_size=recipe.get("image_size"))
        return backbone, info
    # a zoo name, a published folder (`local-dir:` or a path) or `hf-hub:`: the load path of zoo.create_model
    backbone = weights.resolve(source, pretrained=pretrained).create_model(num_classes=num_classes)
    info.update(kind="local-dir" if source.startswith("local-dir:") else "name")
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    if cfg.get("input_size"):
        info["image_size"] = int(cfg["input_size"][-1])
    if cfg.get("mean") and cfg.get("std"):   # the weight's own normalisation (its data config)
        info.update(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    return backbone, info


# ---------------------------------------------------------------------------------------------
# Features

@torch.no_grad()
def extract_features(backbone: nn.Module, data, batch_size: int = 256, device=None,
                     bf16: bool = False, num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32 CPU, labels (N,) int64 CPU) of a frozen backbone.

    data: a Dataset yielding (image tensor, label) or a DataLoader (unreadable images dropped by
    `collate_skip_bad`). The backbone runs in eval mode (restored afterwards), without gradients,
    on its own device unless `device` is given, under bf16 autocast if `bf16` (fp32, with a warning,
    where the device has no native bf16 kernels: zoo.precision).

    Example:
        >>> import torch
        >>> data = [(torch.randn(3, 8, 8), i % 2) for i in range(6)]
        >>> f, y = extract_features(torch.nn.Flatten(), data, batch_size=4)
        >>> f.shape, y.tolist()
        (torch.Size([6, 192]), [0, 1, 0, 1, 0, 1])
    """
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_skip_bad)
    param = next(backbone.parameters(), None)
    device = torch.device(device) if device is not None else (param.device if param is not None
                                                              else torch.device("cpu"))
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    if bf16:
        precision, why = resolve_precision("bf16", device)
        if why:
            warnings.warn(why, stacklevel=2)
        bf16 = precision == "bf16"
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    try:
        for batch in loader:
            if batch is None:  # a batch of unreadable images only
                continue
            x, y = batch
            with autocast:
                f = backbone(x.to(device, non_blocking=True))
            feats.append(f.float().flatten(1).cpu())
            labels.append(torch.as_tensor(y).long().cpu())
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("extract_features: the data yielded no readable sample.")
    return torch.cat(feats), torch.cat(labels)


# ---------------------------------------------------------------------------------------------
# kNN

@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, test_f: Tensor, k=(20, 200), T: float = 0.1,
                num_classes: int | None = None, batch_size: int = 128) -> dict[int, Tensor]:
    """Weighted-kNN predictions {k: (N_test,) int64} (protocol in the module docstring)."""
    ks = (k,) if isinstance(k, int) else tuple(k)
    if len(train_f) == 0 or len(test_f) == 0:
        raise ValueError("kNN needs at least one train and one test feature.")
    if len(train_f) != len(train_y):
        raise ValueError(f"{len(train_f)} train features but {len(train_y)} labels.")
    train_f = F.normalize(train_f.float(), dim=1)
    test_f = F.normalize(test_f.float().to(train_f.device), dim=1)
    train_y = train_y.long().to(train_f.device)
    C = int(num_classes or int(train_y.max()) + 1)
    kmax = min(max(ks), len(train_f))                 # k beyond the train set: all of it
    preds = {kk: [] for kk in ks}
    for start in range(0, len(test_f), batch_size):
        sim = test_f[start:start + batch_size] @ train_f.T                      # (b, N)
        # stable: equal similarities keep train order, so the k nearest are well defined
        top_sim, top_idx = torch.sort(sim, dim=1, descending=True, stable=True)
        top_sim, top_idx = top_sim[:, :kmax], top_idx[:, :kmax]
        top_lab = train_y[top_idx]                                             # (b, kmax)
        weight = torch.exp((top_sim - top_sim[:, :1]) / T)                     # ranks as exp(sim/T)
        for kk in ks:
            n = min(kk, kmax)
            votes = torch.zeros(len(sim), C, device=sim.device, dtype=weight.dtype)
            votes.scatter_add_(1, top_lab[:, :n], weight[:, :n])
            preds[kk].append(votes.argmax(1).cpu())                            # first max: lowest class
    return {kk: torch.cat(v) for kk, v in preds.items()}


def knn_classify(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor,
                 k=(20, 200), T: float = 0.1, num_classes: int | None = None,
                 batch_size: int = 128) -> dict[str, float]:
    """Weighted kNN top-1 (%) per k, cosine similarity, weights exp(sim / T) (module docstring).

    Returns {"knn_top1_k20": ..., "knn_top1_k200": ...}.
    """
    test_y = test_y.long().cpu()
    preds = knn_predict(train_f, train_y, test_f, k, T, num_classes, batch_size)
    return {f"knn_top1_k{kk}": 100.0 * float((p == test_y).float().mean()) for kk, p in preds.items()}


# ---------------------------------------------------------------------------------------------
# Linear probe

def linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor,
                 epochs: int = 100, lr: float = 0.1, batch_size: int = 256, momentum: float = 0.9,
                 weight_decay: float = 0.0, num_classes: int | None = None, seed: int = 0,
                 device=None) -> dict[str, float]:
    """Linear classifier on frozen standardised features (module docstring); top-1 in percent.

    Returns {"linear_top1": test top-1, "linear_train_top1": train top-1}.
    """
    device = torch.device(device) if device is not None else train_f.device
    train_f, test_f = train_f.float().to(device), test_f.float().to(device)
    train_y, test_y = train_y.long().to(device), test_y.long().to(device)
    mu, sd = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    train_f, test_f = (train_f - mu) / sd, (test_f - mu) / sd
    C = int(num_classes or int(max(train_y.max(), test_y.max())) + 1)
    head = nn.Linear(train_f.shape[1], C).to(device)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    total = epochs * math.ceil(len(train_f) / batch_size)
    sched = CosineLRScheduler(opt, t_initial=total, lr_min=0.0, t_in_epochs=False)   # per step, to 0
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(train_f), generator=gen).to(device)
        for start in range(0, len(train_f), batch_size):
            idx = order[start:start + batch_size]
            sched.step_update(step)
            loss = F.cross_entropy(head(train_f[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        test_acc = (head(test_f).argmax(1) == test_y).float().mean().item()
        train_acc = (head(train_f).argmax(1) == train_y).float().mean().item()
    return {"linear_top1": 100.0 * test_acc, "linear_train_top1": 100.0 * train_acc}


# ---------------------------------------------------------------------------------------------
# Mask score

def binarise(masks: Tensor, size: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """(B, K, h, w) float or bool -> (B, K, H, W) bool, hidden where m >= threshold."""
    masks = masks.detach().float().cpu()
    if masks.shape[-2:] != tuple(size):
        masks = F.interpolate(masks, size=tuple(size), mode="nearest")
    return masks >= threshold


def _gt_list(gt_masks) -> list[Tensor]:
    return [torch.as_tensor(np.asarray(g) if not isinstance(g, Tensor) else g).bool().cpu()
            for g in gt_masks]


def _per_image(masks: Tensor, gt_masks, threshold: float):
    """(binarised masks (K, H, W), ground truth (n, H, W)) per image, at the ground truth's size."""
    gts = _gt_list(gt_masks)
    if len(gts) != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} images of masks but {len(gts)} of ground truth.")
    return zip(binarise(masks, gts[0].shape[-2:], threshold), gts)


def mask_ious(masks: Tensor, gt_masks, threshold: float = 0.5) -> Tensor:
    """Best IoU over the K masks of each ground-truth object: a 1-D tensor, one entry per object.

    masks (B, K, h, w); gt_masks: a list of B (n_i, H, W) boolean arrays (visible pixels of each
    object) or a (B, N, H, W) tensor; objects with no pixel (padding) are skipped.
    """
    ious = []
    for m, g in _per_image(masks, gt_masks, threshold):
        g = g[g.flatten(1).any(1)]
        if len(g) == 0:
            continue
        m, g = m.flatten(1).float(), g.flatten(1).float()           # (K, P), (n, P)
        inter = g @ m.T                                             # (n, K)
        union = g.sum(1, keepdim=True) + m.sum(1)[None] - inter
        ious.append((inter / union).max(1).values)
    return torch.cat(ious) if ious else torch.zeros(0)


def mask_score(masks: Tensor, gt_masks, threshold: float = 0.5) -> float:
    """Mean over ground-truth objects of the best IoU over the K binarised masks."""
    ious = mask_ious(masks, gt_masks, threshold)
    if len(ious) == 0:
        raise ValueError("mask_score: no ground-truth object with visible pixels.")
    return float(ious.mean())


def mask_cover(masks: Tensor, gt_masks, threshold: float = 0.5) -> Tensor:
    """Per image, the share of its objects' visible pixels hidden by the slot that hides the most
    of them: a 1-D tensor, one entry per image with a visible object (module docstring)."""
    covers = []
    for m, g in _per_image(masks, gt_masks, threshold):
        objects = g.any(0).flatten().float()                        # union of visible pixels (P,)
        if objects.sum() == 0:
            continue
        covers.append((m.flatten(1).float() @ objects).max() / objects.sum())
    return torch.stack(covers) if covers else torch.zeros(0)


def random_masks_like(masks: Tensor, size: tuple[int, int], grid: int = 8, generator=None) -> Tensor:
    """Per image and slot: random cells of a grid x grid grid, as many as match the slot's area."""
    hard = binarise(masks, size)
    B, K = hard.shape[:2]
    cells = (hard.flatten(2).float().mean(2) * grid * grid).round().long()   # (B, K)
    scores = torch.rand(B, K, grid * grid, generator=generator)
    rank = scores.argsort(2).argsort(2)                                      # random rank per cell
    out = (rank < cells[..., None]).view(B, K, grid, grid).float()
    return F.interpolate(out, size=tuple(size), mode="nearest") >= 0.5


def block_masks_like(masks: Tensor, size: tuple[int, int], generator=None) -> Tensor:
    """Per image and slot: one rectangle of the slot's area, aspect in [0.3, 1/0.3], random place."""
    hard = binarise(masks, size)
    B, K = hard.shape[:2]
    H, W = size
    area = hard.flatten(2).sum(2)                                            # (B, K) pixels
    out = torch.zeros(B, K, H, W, dtype=torch.bool)
    u = torch.rand(B, K, 3, generator=generator)
    for b in range(B):
        for k in range(K):
            a = float(area[b, k])
            if a == 0:
                continue
            aspect = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * float(u[b, k, 0]))
            h = min(H, max(1, round(math.sqrt(a * aspect))))
            w = min(W, max(1, round(a / h)))
            top = int(float(u[b, k, 1]) * (H - h + 1))
            left = int(float(u[b, k, 2]) * (W - w + 1))
            out[b, k, top:top + h, left:left + w] = True
    return out


def mask_protocol(n: int, image_size: int, seed: int = 0) -> str:
    """The protocol line that `score_masker`'s numbers are reported with."""
    return (f"best IoU per ground-truth object over K masks binarised at 0.5, mean over objects; "
            f"cover: share of a scene's object pixels hidden by its most-covering slot, mean over "
            f"scenes; {n} held-out scenes at {image_size} px; baselines: same K and area per slot, "
            f"seed {seed}")


@torch.no_grad()
def score_masker(masker: nn.Module, image_size: int = 32, n: int = 512, batch_size: int = 64,
                 mean=None, std=None, seed: int = 0, device=None, split: str = "test") -> dict:
    """Mask score and mask cover of a masker on n held-out scenes, with random and block baselines
    of the same K and area on the same images (module docstring).

    Returns {"mask_score", "mask_score_random", "mask_score_block", "mask_cover",
    "mask_cover_random", "mask_cover_block", "mask_k", "mask_area", "mask_images"}.

    Example:
        >>> import torch
        >>> class Halves(torch.nn.Module):      # a fixed 2-mask masker: left / right half
        ...     def forward(self, x):
        ...         m = torch.zeros(x.shape[0], 2, *x.shape[-2:]); m[:, 0, :, : x.shape[-1] // 2] = 1
        ...         m[:, 1] = 1 - m[:, 0]; return m
        >>> r = score_masker(Halves(), n=8)
        >>> r["mask_k"], r["mask_area"]
        (2, 0.5)
    """
    from zoo.data import DATASETS, SceneDataset, eval_transform
    stats = DATASETS["scenes"]
    transform = eval_transform(image_size, mean or stats["mean"], std or stats["std"])
    scenes = SceneDataset(split, image_size, length=max(n, 1))
    param = next(masker.parameters(), None)
    device = torch.device(device) if device is not None else (param.device if param is not None
                                                              else torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    was_training = masker.training
    masker.eval()
    ious = {"": [], "_random": [], "_block": []}
    covers = {key: [] for key in ious}
    k, areas = None, []
    try:
        for start in range(0, n, batch_size):
            batch = [scenes.scene(i) for i in range(start, min(n, start + batch_size))]
            x = torch.stack([transform(Image.fromarray(s.image)) for s in batch]).to(device)
            gt = [s.masks for s in batch]
            masks = masker(x)
            hard = binarise(masks, (image_size, image_size))
            k = hard.shape[1]
            areas.append(hard.flatten(2).float().mean(2).flatten())
            for key, m in (("", masks), ("_random", random_masks_like(masks, (image_size,) * 2, generator=gen)),
                           ("_block", block_masks_like(masks, (image_size,) * 2, generator=gen))):
                ious[key].append(mask_ious(m, gt))
                covers[key].append(mask_cover(m, gt))
    finally:
        masker.train(was_training)
    out = {f"mask_score{key}": float(torch.cat(v).mean()) for key, v in ious.items()}
    out.update({f"mask_cover{key}": float(torch.cat(v).mean()) for key, v in covers.items()})
    out.update(mask_k=k, mask_area=float(torch.cat(areas).mean()), mask_images=n)
    return out
