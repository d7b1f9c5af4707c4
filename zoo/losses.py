"""The self-supervised losses, computed in fp32 whatever the autocast dtype: NT-Xent (SimCLR,
negatives gathered across processes), BYOL's 2 - 2cos and SimSiam's -cos, both against a
stop-gradient target.

Example:
    >>> import torch
    >>> from zoo.losses import byol_loss, nt_xent
    >>> z = torch.randn(4, 8)
    >>> bool(byol_loss(z, z).abs().max() < 1e-6)         # identical directions: zero loss
    True
    >>> nt_xent(z, z + 0.01 * torch.randn(4, 8), temperature=0.2).shape
    torch.Size([])
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["nt_xent", "byol_loss", "neg_cosine"]


def _gather(z: Tensor) -> tuple[Tensor, int]:
    """All processes' rows (gradient-carrying) and this process's offset in them."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather
        return torch.cat(all_gather(z), 0), dist.get_rank() * z.shape[0]
    return z, 0


def nt_xent(z1: Tensor, z2: Tensor, temperature: float, gather_distributed: bool = True) -> Tensor:
    """NT-Xent (SimCLR), mean over the 2B local anchors.

    For anchor z1_i the positive is z2_i; the negatives are every other embedding of both views,
    gathered over all processes when torch.distributed is initialised (all_gather with gradient:
    each process's loss reaches every process's embeddings; DDP's gradient averaging then gives
    the gradient of the global mean).
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    B = z1.shape[0]
    if gather_distributed:
        bank1, offset = _gather(z1)
        bank2, _ = _gather(z2)
    else:
        bank1, bank2, offset = z1, z2, 0
    N = bank1.shape[0]
    logits = torch.cat([z1, z2]) @ torch.cat([bank1, bank2]).T / temperature   # (2B, 2N)
    idx = torch.arange(B, device=z1.device) + offset
    self_col = torch.cat([idx, idx + N])
    pos_col = torch.cat([idx + N, idx])
    rows = torch.arange(2 * B, device=z1.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_col] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, pos_col)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """2 - 2 cos(p, sg(z)) per row (= ||p/|p| - z/|z|||^2), over the last dim."""
    return 2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)


def neg_cosine(p: Tensor, z: Tensor) -> Tensor:
    """-cos(p, sg(z)) per row (SimSiam's D), over the last dim."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1)
