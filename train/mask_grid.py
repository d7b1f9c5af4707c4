"""A picture of what a masker does: one row per image, `image | mask 1..K | masked view 1..K`.

Masks (B, K, h, w) in [0, 1] (1 = hidden) are shown white where hidden; boolean patch masks are
upsampled to pixels. A masked view is what the encoder sees: `x * (1 - m)` in normalised space,
i.e. hidden pixels take the dataset's mean colour.

Example:
    >>> import torch
    >>> from train.mask_grid import mask_grid
    >>> x = torch.zeros(2, 3, 16, 16); m = torch.rand(2, 3, 16, 16)
    >>> mask_grid(x, m, mean=(0.5,) * 3, std=(0.25,) * 3).shape   # 2 rows of 1 + 3 + 3 tiles
    torch.Size([3, 38, 128])
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid, save_image


def mask_grid(images: Tensor, masks: Tensor, mean, std, pad: int = 2) -> Tensor:
    """images (B, C, H, W) normalised, masks (B, K, h, w) -> one RGB grid image (3, H', W') in [0, 1]."""
    images, masks = images.detach().float().cpu(), masks.detach().float().cpu()
    B, K = masks.shape[:2]
    if masks.shape[-2:] != images.shape[-2:]:
        masks = F.interpolate(masks, size=images.shape[-2:], mode="nearest")
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)

    def show(x: Tensor) -> Tensor:                 # normalised -> [0, 1] RGB
        return (x * std + mean).clamp(0, 1).expand(-1, 3, -1, -1)

    tiles = [show(images)[:, None]]                                        # (B, 1, 3, H, W)
    tiles.append(masks[:, :, None].expand(-1, -1, 3, -1, -1))              # (B, K, 3, H, W)
    tiles.append(show((images[:, None] * (1 - masks[:, :, None])).flatten(0, 1)).view(B, K, 3, *images.shape[-2:]))
    rows = torch.cat(tiles, dim=1)                                          # (B, 1 + 2K, 3, H, W)
    return make_grid(rows.flatten(0, 1), nrow=1 + 2 * K, padding=pad, pad_value=1.0)


def save_mask_grid(path: str | os.PathLike, images: Tensor, masks: Tensor, mean, std) -> Path:
    """Write the grid as PNG atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    save_image(mask_grid(images, masks, mean, std), tmp)
    os.replace(tmp, path)
    return path


@torch.no_grad()
def masker_picture(masker, images: Tensor) -> Tensor:
    """The masker's masks for `images`, without disturbing training: eval mode, forked RNG."""
    was_training = masker.training
    masker.eval()
    try:
        device = images.device
        devices = [] if device.type != "cuda" else [device.index if device.index is not None
                                                     else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=devices):
            return masker(images)
    finally:
        masker.train(was_training)
