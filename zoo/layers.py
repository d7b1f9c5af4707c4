"""Layers and parameter helpers the objectives and methods share: MLP heads, EMA teachers and
their momentum schedule, MAE's fixed sin-cos positions and init.

Example:
    >>> import torch
    >>> from zoo.layers import cosine_momentum, mlp
    >>> mlp([512, 4096, 256], torch.nn.BatchNorm1d)(torch.randn(2, 512)).shape
    torch.Size([2, 256])
    >>> cosine_momentum(0.0, 0.99), cosine_momentum(1.0, 0.99)
    (0.99, 1.0)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import build_sincos2d_pos_embed
from torch import Tensor, nn

from zoo.backbones import is_vit, patch_grid

__all__ = ["mlp", "ema_", "cosine_momentum", "sincos_pos_embed", "fix_sincos_pos_embed_", "xavier_init_"]


def mlp(dims: Sequence[int], norm: type[nn.Module] | None = None, act: type[nn.Module] = nn.ReLU,
        hidden_bias: bool = True, out_norm: nn.Module | None = None) -> nn.Sequential:
    """Linear(dims[0], dims[1]) [-norm] -act ... Linear(dims[-2], dims[-1]) [-out_norm].

    Example: BYOL's projector is `mlp([512, 4096, 256], nn.BatchNorm1d)`.
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=(out_norm is None) if last else hidden_bias))
        if not last:
            layers += ([norm(d_out)] if norm is not None else []) + [act()]
    if out_norm is not None:
        layers.append(out_norm)
    return nn.Sequential(*layers)


@torch.no_grad()
def ema_(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, over parameters.

    Buffers (BatchNorm running statistics) stay the teacher's own, as in BYOL / solo-learn, where
    the momentum network runs in train mode and keeps its own statistics.
    """
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"EMA teacher has {len(t_params)} parameter tensors, student {len(s_params)}")
    for t, s in zip(t_params, s_params):
        if t.shape != s.shape:
            raise ValueError(f"EMA shape mismatch: teacher {tuple(t.shape)} vs student {tuple(s.shape)}")
        t.lerp_(s.detach().to(t.dtype), 1.0 - m)


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """EMA momentum, cosine from `base` (progress 0) to `final` (progress 1).

    tau = final - (final - base) * (cos(pi * progress) + 1) / 2  (BYOL; solo-learn's
    MomentumUpdater; ExtreMA's adjust_ema_momentum with progress = epoch / epochs).
    """
    p = min(max(float(progress), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * p) + 1) / 2


def sincos_pos_embed(grid: tuple[int, int], dim: int) -> Tensor:
    """MAE's fixed 2-D sin-cos position table (h*w, dim), row-major tokens.

    Channels [sin(x w), cos(x w), sin(y w), cos(y w)], x = column, y = row, w_i = 10000^(-i/(dim/4)),
    exactly MAE's `get_2d_sincos_pos_embed` (built from timm's table, whose channel order is
    [sin y, sin x, cos y, cos x], by a fixed reordering of its four quarters).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    table = build_sincos2d_pos_embed(list(grid), dim)          # (h*w, dim)
    q = table.view(-1, 4, dim // 4)                            # quarters: sin y, sin x, cos y, cos x
    return q[:, [1, 3, 0, 2]].reshape(-1, dim)


@torch.no_grad()
def fix_sincos_pos_embed_(vit: nn.Module) -> None:
    """Write the fixed sin-cos table into a timm ViT's `pos_embed` and freeze it (MAE, ExtreMA).

    Prefix (CLS) positions, if the table has them, get zeros (MAE's `cls_token=True` row).
    """
    pos = vit.pos_embed                                        # (1, [prefix +] L, D)
    table = sincos_pos_embed(patch_grid(vit), pos.shape[-1]).to(pos)
    pos.zero_()
    pos[0, pos.shape[1] - table.shape[0]:] = table
    pos.requires_grad_(False)


@torch.no_grad()
def xavier_init_(module: nn.Module) -> None:
    """MAE / ExtreMA / MoCo-v3-style init: xavier-uniform Linear (bias 0), LayerNorm (1, 0), a
    ViT's patch-embedding conv xavier-uniform as if it were a Linear, CLS/mask tokens N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if is_vit(module):
        w = module.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if module.patch_embed.proj.bias is not None:
            nn.init.zeros_(module.patch_embed.proj.bias)
    for name in ("cls_token", "mask_token"):
        token = getattr(module, name, None)
        if isinstance(token, nn.Parameter):
            nn.init.normal_(token, std=0.02)
