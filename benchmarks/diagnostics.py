"""Why the numbers are what they are: the two kernel-level measurements behind BENCHMARKS.md's
"closing the gaps" notes, kept in the suite so the explanation is re-measured with every run.

1. `attention`: forward + backward of one attention op, PyTorch's fused
   `scaled_dot_product_attention` (flash kernel on the CPU) against the plain
   matmul-softmax-matmul path, ViT-Tiny heads (3 x 64), for the token counts our CPU-scale ViTs
   see (17 = MAE's visible tokens + CLS, 65 = a full 8 x 8 grid + CLS, 197 = a 14 x 14 grid + CLS)
   at 8320 tokens per call, fp32 and bf16. This is what `zoo.kernels.use_fast_attention` acts on.
2. `resnet_phases`: timm resnet18 at 32 px, one training step split into forward, backward and
   optimizer step (SGD, momentum): fp32 NCHW, bf16 autocast + channels_last, and the same with
   the zoo's CPU kernels (`zoo.kernels.use_fast_kernels`, what the training loop trains with). At
   32 px the feature maps of layers 2-4 are 4 x 4 to 1 x 1; on the 1 x 1 maps of layer 4 oneDNN's
   bf16 kernels are slow (`python -m benchmarks.probes stage4`), which kept a ResNet's bf16 step
   no faster than fp32 until the zoo computed those convolutions as the matmul they are.

Example:
    >>> from benchmarks.diagnostics import attention
    >>> r = attention(tokens=(17,), total_tokens=544, repeats=2)       # doctest: +SKIP
    >>> r["17 bf16"]["plain_s"] > 0                                     # doctest: +SKIP
    True
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks.common import autocast, median, to_format


def _time(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def attention(tokens=(17, 65, 197), total_tokens: int = 8320, heads: int = 3, head_dim: int = 64,
              warmup: int = 2, repeats: int = 7) -> dict:
    out = {}
    for L in tokens:
        n = max(1, total_tokens // L)
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(n, heads, L, head_dim, generator=g).to(dtype).requires_grad_()
                       for _ in range(3))
            grad = torch.randn(n, heads, L, head_dim, generator=g).to(dtype)

            def fused():
                F.scaled_dot_product_attention(q, k, v).backward(grad)

            def plain():
                ((q * head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(-1).matmul(v).backward(grad)

            t = {"fused": [], "plain": []}
            for _ in range(warmup):
                fused(), plain()
            for _ in range(repeats):              # interleaved
                for name, fn in (("fused", fused), ("plain", plain)):
                    t0 = time.perf_counter()
                    fn()
                    t[name].append(time.perf_counter() - t0)
            out[f"{L} {precision}"] = dict(tokens=L, sequences=n, precision=precision,
                                           fused_s=median(t["fused"]), plain_s=median(t["plain"]),
                                           fused_over_plain=median(t["fused"]) / median(t["plain"]))
    return out


def resnet_phases(batch: int = 128, warmup: int = 2, repeats: int = 7) -> dict:
    import timm

    from zoo.kernels import use_fast_kernels
    out = {}
    for variant in ("fp32", "bf16", "bf16_zoo"):
        precision = variant[:4]
        torch.manual_seed(0)
        net = to_format(timm.create_model("resnet18", num_classes=0), precision)
        if variant.endswith("_zoo"):
            net = use_fast_kernels(net)
        x = to_format(torch.randn(batch, 3, 32, 32), precision)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

        def step(record: bool):
            t0 = time.perf_counter()
            with autocast(precision):
                loss = net(x).float().pow(2).mean()
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad()
            t3 = time.perf_counter()
            if record:
                for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                    parts[k].append(dt)

        for _ in range(warmup):
            step(False)
        for _ in range(repeats):
            step(True)
        out[variant] = {k: median(v) for k, v in parts.items()}
    out["speedup"] = {k: out["fp32"][k] / out["bf16"][k] for k in out["fp32"]}
    out["speedup_zoo"] = {k: out["fp32"][k] / out["bf16_zoo"][k] for k in out["fp32"]}
    out["batch"] = batch
    return out


def run(quick: bool = False) -> dict:
    if quick:
        return dict(attention=attention(tokens=(17,), total_tokens=544, warmup=1, repeats=2),
                    resnet_phases=resnet_phases(batch=8, warmup=1, repeats=2))
    return dict(attention=attention(), resnet_phases=resnet_phases())
