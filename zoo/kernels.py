"""Faster CPU kernels for training, on plain timm modules: the same math, another kernel.

`use_fast_kernels(model)` sets up two choices, each measured on the project's 2-core CPU hosts
(benchmarks/, BENCHMARKS.md), each made per call and only in training mode on the CPU, so
inference (eval mode) and accelerators stay bit-for-bit what timm does. State dicts, module
classes and `repr` are unchanged, but the modules are patched per instance (a pre-hook, an
instance `_conv_forward`): the training loop (train/pretrain.py) and the benchmarks that time
training steps install them, the model classes never do, and `with fast_kernels(model):` takes
them off again on the way out, so a backbone exported after training is the plain timm module
(`remove_fast_kernels`; tests/test_kernels.py).

1. Attention (`use_fast_attention`). PyTorch's CPU flash-attention kernel behind
   `F.scaled_dot_product_attention` is slower than timm's plain matmul-softmax-matmul path for
   short token sequences. Forward + backward, 3 heads x 64 dims: 13-65 tokens 3-8x slower in bf16
   and 1.1-2.2x in fp32; 197 tokens 3x slower in bf16, even in fp32; 785 tokens: flash 1.8x faster
   in fp32, even in bf16. Sequences of at most `CPU_SDPA_MIN_TOKENS` take the plain path.

2. Convolutions with a 1 x 1 output (`use_fast_conv`). At 32 px a timm ResNet's last stage sees
   1 x 1 maps: a 3 x 3 convolution (padding 1) there multiplies 8 of its 9 taps by padding zeros,
   and oneDNN's bf16 kernels for such maps are slow: a 512 x 512 stage-4 convolution on 256 images,
   bf16 + channels_last, forward + backward, takes 62 ms as `nn.Conv2d` and 2.8 ms as the matmul
   below on the Intel Xeon (AMX) host (`python -m benchmarks.probes stage4`; on the earlier AMD
   host the backward alone took ~10x the forward). The output is exactly one matmul of the
   input with the taps that see it (`seen_taps`), which is what runs instead: the other taps get
   an exact zero gradient, as they do from the convolution (`_Taps` writes that gradient once, in
   the weight's memory format). BENCHMARKS.md ("Before / after the 1 x 1 convolution change")
   has the step times with and without it. Only `nn.Conv2d` itself with zero padding, groups 1
   and dilation 1 is touched.

Example:
    >>> import torch, timm
    >>> net = use_fast_kernels(timm.create_model("resnet18", num_classes=0)).train()
    >>> conv = net.layer4[1].conv2
    >>> seen_taps(conv, (512, 1, 1))            # 1 x 1 map: the centre tap is all it sees
    (slice(1, 2, None), slice(1, 2, None))
    >>> type(conv).__name__, seen_taps(conv, (512, 2, 2)) is None
    ('Conv2d', True)
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fast_kernels", "use_fast_kernels", "remove_fast_kernels", "use_fast_attention", "use_fast_conv",
           "seen_taps", "CPU_SDPA_MIN_TOKENS"]

CPU_SDPA_MIN_TOKENS = 256


def use_fast_kernels(model: nn.Module) -> nn.Module:
    """Both kernel choices below, for every module in `model`. Idempotent."""
    return use_fast_conv(use_fast_attention(model))


def remove_fast_kernels(model: nn.Module) -> nn.Module:
    """Undo `use_fast_kernels` on every module in `model` (copies included: EMA teachers carry the
    patches of the module they were copied from): the hooks, the instance `_conv_forward` and the
    saved flag go, `fused_attn` is timm's choice again. Modules it never patched are untouched."""
    for m in model.modules():
        conv_forward = m.__dict__.get("_conv_forward")
        if isinstance(conv_forward, functools.partial) and conv_forward.func is _conv_forward:
            del m._conv_forward
        if "_zoo_fused_attn" in m.__dict__:
            for key in [k for k, hook in m._forward_pre_hooks.items() if hook is _attention_kernel_hook]:
                del m._forward_pre_hooks[key]
            m.fused_attn = m._zoo_fused_attn
            del m._zoo_fused_attn
    return model


@contextlib.contextmanager
def fast_kernels(model: nn.Module) -> Iterator[nn.Module]:
    """`use_fast_kernels(model)` for the block, `remove_fast_kernels(model)` after it (also on an
    error), so what leaves the block is the plain timm network.

    Example:
        >>> import timm
        >>> net = timm.create_model("resnet18", num_classes=0)
        >>> with fast_kernels(net):
        ...     "_conv_forward" in net.layer4[0].conv1.__dict__
        True
        >>> "_conv_forward" in net.layer4[0].conv1.__dict__
        False
    """
    use_fast_kernels(model)
    try:
        yield model
    finally:
        remove_fast_kernels(model)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------

def _attention_kernel_hook(module: nn.Module, args: tuple) -> None:
    x = args[0]                                             # (B, N, C) tokens
    short_on_cpu = x.device.type == "cpu" and x.dim() == 3 and x.shape[1] <= CPU_SDPA_MIN_TOKENS
    module.fused_attn = module._zoo_fused_attn and not (module.training and short_on_cpu)


def use_fast_attention(model: nn.Module) -> nn.Module:
    """Let every timm attention module (`fused_attn` attribute) in `model` choose per call: fused
    SDPA as timm configured it, except plain attention for short sequences on the CPU in training
    mode. Idempotent.

    Example:
        >>> import torch, timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=0)
        >>> vit = use_fast_attention(vit).train()
        >>> _ = vit(torch.randn(1, 3, 32, 32)); vit.blocks[0].attn.fused_attn   # 65 tokens on CPU
        False
        >>> _ = vit.eval()(torch.randn(1, 3, 32, 32)); vit.blocks[0].attn.fused_attn
        True
    """
    for m in model.modules():
        if hasattr(m, "fused_attn") and not hasattr(m, "_zoo_fused_attn"):
            m._zoo_fused_attn = bool(m.fused_attn)
            m.register_forward_pre_hook(_attention_kernel_hook)
    return model


# --------------------------------------------------------------------------------------------
# Convolutions with a 1 x 1 output
# --------------------------------------------------------------------------------------------

def seen_taps(conv: nn.Conv2d, input_shape: tuple[int, ...]) -> tuple[slice, slice] | None:
    """The kernel rows and columns that see the input when `conv`'s output is 1 x 1, else None.

    Output position 0 reads input row `r - padding` with kernel row r: the rows in
    [padding, padding + H) that exist in the kernel. Input rows past `kernel - padding` are never
    read (a stride larger than the map).
    """
    H, W = input_shape[-2:]
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if H + 2 * ph - kh >= sh or W + 2 * pw - kw >= sw:       # more than one output position
        return None
    rows, cols = slice(ph, min(kh, ph + H)), slice(pw, min(kw, pw + W))
    return (rows, cols) if rows.start < rows.stop and cols.start < cols.stop else None


class _Taps(torch.autograd.Function):
    """`weight[:, :, rows, cols]`, whose gradient is the full kernel written once, in the weight's
    own memory format. Autograd's slice backward zero-fills a contiguous full-size kernel for each
    of the two slices, and the gradient is then copied again into a channels_last weight's
    layout: a bf16 SimCLR step at batch 64 (2 views x 5 stage-4 convolutions) took 186 ms that
    way and 166 ms with this (`python -m benchmarks.probes taps`, interleaved)."""

    @staticmethod
    def forward(ctx, weight: Tensor, rows: slice, cols: slice) -> Tensor:
        # the backward needs only the layout
        ctx.layout = weight.shape, weight.stride(), weight.device
        ctx.taps = rows, cols
        return weight[:, :, rows, cols]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (shape, stride, device), (rows, cols) = ctx.layout, ctx.taps
        full = torch.empty_strided(shape, stride, dtype=grad.dtype, device=device).zero_()
        full[:, :, rows, cols] = grad
        return full, None, None


seen_weight = _Taps.apply          # (weight, rows, cols) -> weight[:, :, rows, cols]


def _conv_forward(conv: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    taps = seen_taps(conv, x.shape) if conv.training and x.device.type == "cpu" and x.dim() == 4 else None
    if taps is None:
        return nn.Conv2d._conv_forward(conv, x, weight, bias)
    rows, cols = taps
    seen = x[:, :, : rows.stop - rows.start, : cols.stop - cols.start]       # from input row/col 0
    out = F.linear(seen.flatten(1), seen_weight(weight, rows, cols).flatten(1), bias)
    return out[:, :, None, None]


def use_fast_conv(model: nn.Module) -> nn.Module:
    """Let every plain `nn.Conv2d` in `model` (zero padding, groups 1, dilation 1) compute a 1 x 1
    output as one matmul over the taps that see the input, in training mode on the CPU. Idempotent.
    """
    for m in model.modules():
        if (type(m) is nn.Conv2d and "_conv_forward" not in m.__dict__ and m.groups == 1
                and m.dilation == (1, 1) and m.padding_mode == "zeros" and not isinstance(m.padding, str)):
            # a partial, not a bound method: deepcopy (EMA teachers) rebinds it to the copy, and
            # torch.save can pickle it
            m._conv_forward = functools.partial(_conv_forward, m)
    return model
