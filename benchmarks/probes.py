"""One-off measurements behind the notes of BENCHMARKS.md: kernel alternatives that were tried and
the one refinement that was kept, each measured side by side in one process (interleaved rounds,
median of individually timed steps). Not part of `benchmarks.run`; each prints its own table.

    python -m benchmarks.probes stage4        # a stage-4 convolution at 32 px: oneDNN vs zoo.kernels
    python -m benchmarks.probes taps          # 1 x 1-output path: autograd slicing vs zoo.kernels._Taps
    python -m benchmarks.probes small_maps    # 2 x 2 / 4 x 4 / 8 x 8 maps: oneDNN vs a dense matmul
    python -m benchmarks.probes optimizers    # torch SGD / AdamW: for-loop vs foreach vs fused
    python -m benchmarks.probes malloc        # a ResNet-18 step with glibc's default vs raised thresholds
    python -m benchmarks.probes               # all five (~5 min on 2 cores)

Example:
    >>> from benchmarks.probes import dense_conv
    >>> import torch, torch.nn.functional as F
    >>> x, w = torch.randn(2, 3, 2, 2), torch.randn(4, 3, 3, 3)
    >>> torch.allclose(dense_conv(x, w, 1, 1), F.conv2d(x, w, padding=1), atol=1e-5)
    True
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import median, set_threads


def interleaved(variants: dict, rounds: int = 7, per_round: int = 3, warmup: int = 1) -> dict:
    """Median seconds per call of each variant, the variants taking turns round after round."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(warmup + rounds):
        for name, fn in variants.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in times.items()}


# --------------------------------------------------------------------------------------------
# stage4 and taps: the kernel choice for 1 x 1 outputs, and its refinement
# --------------------------------------------------------------------------------------------

def stage4(batch: int = 256) -> dict:
    """ResNet-18's 512 x 512 3 x 3 convolution on 1 x 1 maps, bf16 + channels_last, fwd + bwd."""
    from zoo.kernels import use_fast_conv
    torch.manual_seed(0)
    plain = nn.Conv2d(512, 512, 3, padding=1, bias=False).train().to(memory_format=torch.channels_last)
    fast = use_fast_conv(nn.Conv2d(512, 512, 3, padding=1, bias=False)).train().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 512, 1, 1).contiguous(memory_format=torch.channels_last).requires_grad_()

    def step(conv):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().sum().backward()
    t = interleaved({"conv": lambda: step(plain), "zoo": lambda: step(fast)}, per_round=5)
    print(f"  512 -> 512, 3 x 3, 1 x 1 map, batch {batch}: nn.Conv2d {t['conv'] * 1e3:.1f} ms, "
          f"zoo.kernels {t['zoo'] * 1e3:.2f} ms (fwd + bwd, bf16 + channels_last)", flush=True)
    return dict(batch=batch, conv_s=t["conv"], zoo_s=t["zoo"])


# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------

def _sliced(step):
    """`step` with the seen taps taken by autograd slicing, as zoo.kernels first wrote it."""
    import zoo.kernels as kernels

    def run():
        kernels.seen_weight = lambda w, rows, cols: w[:, :, rows, cols]
        try:
            step()
        finally:
            kernels.seen_weight = kernels._Taps.apply
    return run


def taps(methods=("simclr", "byol", "simsiam"), batches=(64, 128), precisions=("bf16", "fp32")) -> dict:
    from benchmarks.stepping import make_optimizers, prepare, train_step, views_for
    from benchmarks.versus import build_pair
    from zoo.kernels import use_fast_kernels
    out = {}
    for method in methods:
        for batch in batches:
            for precision in precisions:
                variants = {}
                for name in ("sliced", "taps"):
                    ours, _ = build_pair(method)
                    ours, views = prepare(use_fast_kernels(ours), views_for(ours, batch), precision)
                    opt = make_optimizers(ours)
                    step = functools.partial(train_step, ours, views, opt, precision)
                    variants[name] = _sliced(step) if name == "sliced" else step
                t = interleaved(variants)
                key = f"{method} b{batch} {precision}"
                out[key] = dict(sliced_s=t["sliced"], taps_s=t["taps"], taps_over_sliced=t["taps"] / t["sliced"])
                print(f"  {key}: sliced {t['sliced'] * 1e3:.1f} ms, _Taps {t['taps'] * 1e3:.1f} ms "
                      f"({t['taps'] / t['sliced']:.2f}x)", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# small_maps: a dense matmul for the 2 x 2 .. 8 x 8 maps (tried, not kept)
# --------------------------------------------------------------------------------------------

def _window(i: int, stride: int, pad: int, k: int, size: int) -> tuple[int, int, int, int]:
    """Kernel rows [k0, k1) and input rows [a0, a1) that output row i reads."""
    a0, a1 = max(0, stride * i - pad), min(size, stride * i - pad + k)
    return a0 - (stride * i - pad), a1 - (stride * i - pad), a0, a1


def dense_conv(x, weight, stride: int, padding: int):
    """The convolution as the one matmul it is on a small map: (B, H*W*C) @ (H*W*C, Ho*Wo*O)."""
    B, C, H, W = x.shape
    O, _, k, _ = weight.shape
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    blocks = []
    for i in range(Ho):
        k0, k1, a0, a1 = _window(i, stride, padding, k, H)
        for j in range(Wo):
            l0, l1, b0, b1 = _window(j, stride, padding, k, W)
            # block (i, j): the kernel taps placed over the input they read, zeros elsewhere
            blocks.append(F.pad(weight[:, :, k0:k1, l0:l1], (b0, W - b1, a0, H - a1)))
    dense = torch.stack(blocks).permute(0, 1, 3, 4, 2).reshape(Ho * Wo * O, H * W * C)
    y = F.linear(x.permute(0, 2, 3, 1).reshape(B, H * W * C), dense)
    return y.view(B, Ho, Wo, O).permute(0, 3, 1, 2)


SMALL_MAPS = [  # (channels in, channels out, input size, stride): ResNet-18's layers 1-3 at 32 px
    (256, 256, 2, 1), (128, 256, 4, 2), (128, 128, 4, 1), (64, 128, 8, 2), (64, 64, 8, 1)]


def small_maps(batches=(64, 128)) -> dict:
    out = {}
    for batch in batches:
        for cin, cout, size, stride in SMALL_MAPS:
            x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
            w = torch.randn(cout, cin, 3, 3).contiguous(memory_format=torch.channels_last).requires_grad_()

            def step(fn):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = fn(x, w)
                y.float().sum().backward()
            t = interleaved({"conv": lambda: step(lambda a, b: F.conv2d(a, b, stride=stride, padding=1)),
                             "dense": lambda: step(lambda a, b: dense_conv(a, b, stride, 1))}, per_round=5)
            key = f"{cin}->{cout} {size}x{size} s{stride} b{batch}"
            out[key] = dict(conv_s=t["conv"], dense_s=t["dense"], dense_over_conv=t["dense"] / t["conv"])
            print(f"  {key}: conv {t['conv'] * 1e3:.2f} ms, dense {t['dense'] * 1e3:.2f} ms "
                  f"({t['dense'] / t['conv']:.2f}x), bf16 + channels_last, fwd + bwd", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# optimizers and malloc: process and library settings that would help both sides alike
# --------------------------------------------------------------------------------------------

def optimizers() -> dict:
    import timm
    params = list(timm.create_model("resnet18", num_classes=0).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    out = {}
    for name, cls, kw in (("sgd", torch.optim.SGD, dict(lr=0.01, momentum=0.9, weight_decay=1e-5)),
                          ("adamw", torch.optim.AdamW, dict(lr=1e-3))):
        opts = {impl: cls(params, **kw, **{impl: True} if impl != "loop" else dict(foreach=False))
                for impl in ("loop", "foreach", "fused")}
        t = interleaved({k: o.step for k, o in opts.items()}, per_round=5)
        out[name] = {f"{k}_s": v for k, v in t.items()}
        print(f"  {name} over ResNet-18's parameters: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()),
              flush=True)
    return out


_MALLOC_STEP = """
import json, time, torch, timm
torch.set_num_threads(2)
out = {}
for batch in (64, 128):
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        net, x = timm.create_model("resnet18", num_classes=0).train(), torch.randn(batch, 3, 32, 32)
        if precision == "bf16":
            net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        ts = []
        for i in range(13):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = net(x).float().pow(2).mean()
            loss.backward(); opt.step(); opt.zero_grad()
            if i >= 3:
                ts.append(time.perf_counter() - t0)
        out[f"b{batch} {precision}"] = sorted(ts)[len(ts) // 2]
print(json.dumps(out))
"""
RAISED = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}


def malloc(rounds: int = 3) -> dict:
    """A vanilla timm ResNet-18 step in fresh processes, glibc's defaults vs raised thresholds,
    alternating processes round after round."""
    runs: dict[str, list[dict]] = {"default": [], "raised": []}
    base = {k: v for k, v in os.environ.items() if k not in RAISED}
    for _ in range(rounds):
        for name, env in (("default", base), ("raised", {**base, **RAISED})):
            p = subprocess.run([sys.executable, "-c", _MALLOC_STEP], env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
    out = {}
    for key in runs["default"][0]:
        d, r = median([x[key] for x in runs["default"]]), median([x[key] for x in runs["raised"]])
        out[key] = dict(default_s=d, raised_s=r, raised_over_default=r / d)
        print(f"  resnet18 step {key}: default {d * 1e3:.1f} ms, raised thresholds {r * 1e3:.1f} ms "
              f"({r / d:.2f}x)", flush=True)
    return out


PROBES = {"stage4": stage4, "taps": taps, "small_maps": small_maps, "optimizers": optimizers, "malloc": malloc}


def main(argv=None) -> dict:
    names = list(sys.argv[1:] if argv is None else argv) or list(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise SystemExit(f"unknown probe(s) {unknown}; choose from {sorted(PROBES)}")
    set_threads()
    results = {}
    for name in names:
        print(f"[{name}]", flush=True)
        results[name] = PROBES[name]()
    return results


if __name__ == "__main__":
    main()
