"""What masking itself costs.

1. The batched K-mask forward vs a loop over masks: `zoo.backbones.encode(backbone, x, masks)`
   with K masks in one call (B*K images or token sequences in one forward) against K separate
   calls `encode(backbone, x, masks[:, k:k+1])`, forward + backward of a scalar of the features,
   interleaved, median. Cases: ResNet-18 with K = 6 soft occlusion masks (ADIOS's N), and
   ViT-Tiny/4 at 32 px with K = 5 disjoint token masks at 80 % (ExtreMA's multi-masking, tokens
   dropped). `speedup` = loop / batched. Batch 64 in fp32 and bf16, and 16 in bf16.
2. ADIOS vs ADIOS-s vs its base, per step, and ExtreMA vs full-view BYOL per image: ratios read
   off the per-pretrainer results of the same run (`benchmarks.pretrainers`), see `derive`.

Example:
    >>> from benchmarks.masking import batched_vs_loop
    >>> r = batched_vs_loop("resnet18", K=2, batch=4, precision="fp32", rounds=1)   # doctest: +SKIP
    >>> r["speedup"] > 0                                                              # doctest: +SKIP
    True
"""
from __future__ import annotations

import time

import torch

from benchmarks.common import autocast, make_inputs, median, spread, to_format

CASES = (("resnet18", 6, "occlusion"), ("vit_tiny_patch4_32", 5, "token_drop"))


def _masks(backbone, x: torch.Tensor, K: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "occlusion":                       # soft masks partitioning each pixel (ADIOS)
        logits = torch.randn(x.shape[0], K, *x.shape[-2:], generator=g)
        return logits.softmax(1)
    from zoo.backbones import patch_grid
    h, w = patch_grid(backbone)
    L = h * w
    keep = int(L * 0.2)                           # ExtreMA 80 %: K disjoint visible subsets
    perm = torch.argsort(torch.rand(x.shape[0], L, generator=g), 1)
    hidden = torch.ones(x.shape[0], K, L, dtype=torch.bool)
    for k in range(K):
        hidden[torch.arange(x.shape[0])[:, None], k, perm[:, k * keep:(k + 1) * keep]] = False
    return hidden.view(x.shape[0], K, h, w)


def batched_vs_loop(arch: str, K: int, kind: str = "occlusion", batch: int = 64,
                    precision: str = "bf16", rounds: int = 5, warmup: int = 1) -> dict:
    from zoo.backbones import create_backbone, encode
    from zoo.kernels import use_fast_kernels
    torch.manual_seed(0)
    # the kernel choices the training loop makes (zoo/kernels.py)
    net = use_fast_kernels(to_format(create_backbone(arch).train(), precision))
    x = to_format(make_inputs(batch, 1)[0], precision)
    masks = _masks(net, x, K, kind)

    def batched():
        net.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = encode(net, x, masks).float().pow(2).mean()
        loss.backward()

    def loop():
        net.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = sum(encode(net, x, masks[:, k:k + 1]).float().pow(2).mean() for k in range(K)) / K
        loss.backward()

    fns = {"batched": batched, "loop": loop}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(warmup):
            f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: median(v) for k, v in times.items()}
    return dict(arch=arch, K=K, kind=kind, batch=batch, precision=precision, seconds=med,
                min_seconds={k: min(v) for k, v in times.items()},
                spread={k: spread(v) for k, v in times.items()}, repeats=rounds,
                speedup=med["loop"] / med["batched"])


def derive(pretrainers: dict) -> dict:
    """Cost ratios between pretrainers measured in the same run (step time per batch of images).

    adios / base and adios_s / base for every base objective and arch; extrema / byol (full
    view) on the same ViT, per image, plus the FLOPs ratio."""
    by_case = {r["case"]: r for r in pretrainers.values() if "step_s" in r}
    out = {}
    for case, r in by_case.items():
        if r["method"] in ("adios", "adios_s"):
            base = by_case.get(f"{r['objective']}_{r['arch']}")
            if base:
                out[f"{case} / {base['case']}"] = dict(
                    step_ratio=r["step_s"] / base["step_s"],
                    flops_ratio=r["flops_per_step"] / base["flops_per_step"], precision=r["precision"])
        if r["method"] == "extrema":
            base = by_case.get(f"byol_{r['arch']}")
            if base:
                out[f"{case} / {base['case']}"] = dict(
                    step_ratio=r["step_s"] / base["step_s"] * base["batch"] / r["batch"],
                    flops_ratio=(r["flops_per_step"] / r["batch"]) / (base["flops_per_step"] / base["batch"]),
                    precision=r["precision"])
    return out


def run(quick: bool = False) -> dict:
    """Each case at batch 64 (fp32 and bf16) and 16 (bf16), where per-call overhead weighs more."""
    settings = ([(8, "bf16")] if quick else [(64, "fp32"), (64, "bf16"), (16, "bf16")])
    kw = dict(rounds=1, warmup=1) if quick else dict(rounds=5, warmup=1)
    out = {}
    for arch, K, kind in CASES:
        for batch, precision in settings:
            key = f"{arch} K={K} {kind} {precision} b{batch}"
            try:
                out[key] = batched_vs_loop(arch, K, kind, batch=batch, precision=precision, **kw)
            except Exception as e:
                out[key] = dict(arch=arch, K=K, kind=kind, precision=precision, batch=batch,
                                error=f"{type(e).__name__}: {e}")
    return out
