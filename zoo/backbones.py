"""Backbones: plain timm models, and the one place that knows a ResNet from a ViT.

A backbone is `timm.create_model(timm_arch, num_classes=0, **model_args)`; calling it returns
pooled features of width `backbone.num_features`. `encode` adds masks:

- a float mask at (or below) pixel resolution occludes the image, `x * (1 - m)` (ADIOS), for CNNs
  and ViTs alike;
- a boolean mask on the patch grid drops the hidden tokens of a ViT (no mask tokens); a CNN sees
  it as an occlusion of the matching pixel blocks.

`masks` always carry a copies axis K: (B, K, h, w), 1 = hidden. The K copies are encoded in one
batched forward of B*K images (or token sequences), which is why a ResNet's BatchNorm sees the K
masked copies of a batch together; the method docstrings say what that changes.

The faster CPU kernels a `Pretrainer` trains with (same math, plain timm modules) are in
zoo/kernels.py.

Example:
    >>> import torch, zoo.backbones as bb
    >>> vit = bb.create_backbone("vit_tiny_patch4_32")
    >>> x = torch.randn(2, 3, 32, 32)
    >>> bb.encode(vit, x).shape
    torch.Size([2, 192])
    >>> hide = torch.zeros(2, 3, 8, 8, dtype=torch.bool); hide[..., :4, :] = True
    >>> bb.encode(vit, x, hide).shape     # 3 masked copies, half the tokens dropped in each
    torch.Size([2, 3, 192])
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.suggest import did_you_mean

# zoo arch name -> (timm arch, model_args). The small variants are named the timm way and stay
# constructible by vanilla timm from `config.json` (`architecture` + `model_args`).
ARCHS: dict[str, tuple[str, dict]] = {
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    # CPU scale at 32 px: layer 4 dilated instead of strided keeps a 2 x 2 map (1 x 1 with the
    # ImageNet stem); timm's own `output_stride` keyword, so vanilla timm builds it from config.json.
    "resnet18_os16": ("resnet18", {"output_stride": 16}),
    "vit_tiny_patch16_224": ("vit_tiny_patch16_224", {}),
    "vit_small_patch16_224": ("vit_small_patch16_224", {}),
    "vit_base_patch16_224": ("vit_base_patch16_224", {}),
    # ADIOS's ViT-Tiny/16 at 96 px (STL10, ImageNet100-S): 6 x 6 tokens.
    "vit_tiny_patch16_96": ("vit_tiny_patch16_224", {"img_size": 96}),
    # CPU scale: 32 px images, 8 x 8 = 64 tokens.
    "vit_tiny_patch4_32": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}),
    "vit_small_patch4_32": ("vit_small_patch16_224", {"img_size": 32, "patch_size": 4}),
}


def arch_config(arch: str) -> tuple[str, dict]:
    """(timm arch, model_args) of a zoo arch name; unknown names get close matches."""
    if arch not in ARCHS:
        raise ValueError(f"Unknown backbone {arch!r}.{did_you_mean(arch, ARCHS)} Known: {', '.join(ARCHS)}.")
    timm_arch, model_args = ARCHS[arch]
    return timm_arch, dict(model_args)


def create_backbone(arch: str, **overrides) -> nn.Module:
    """The headless timm model of a zoo arch (`num_classes=0`: forward returns pooled features)."""
    timm_arch, model_args = arch_config(arch)
    model_args.update(overrides)
    return timm.create_model(timm_arch, pretrained=False, num_classes=0, **model_args)


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks")


def patch_grid(backbone: nn.Module) -> tuple[int, int]:
    """(h, w) of a ViT's patch grid."""
    return tuple(backbone.patch_embed.grid_size)


def occlude(x: Tensor, masks: Tensor) -> Tensor:
    """x (B, C, H, W), masks (B, K, h, w) in [0, 1] -> (B, K, C, H, W) = x * (1 - m).

    Masks coarser than the image are upsampled with nearest neighbours (patch masks on a CNN).
    """
    masks = masks.to(x.dtype)
    if masks.shape[-2:] != x.shape[-2:]:
        masks = F.interpolate(masks, size=x.shape[-2:], mode="nearest")
    return x[:, None] * (1 - masks[:, :, None])


def ids_keep_from_mask(mask: Tensor) -> Tensor:
    """Boolean patch mask (N, h, w), True = hidden -> indices of the visible patches (N, L_keep).

    Every row must keep the same number of patches (the maskers guarantee it), so the kept tokens
    stack into one dense batch.
    """
    visible = ~mask.flatten(1)
    counts = visible.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError(f"Patch masks keep different token counts per image ({counts.tolist()}); "
                         "token dropping needs the same count in every row.")
    return visible.nonzero()[:, 1].view(mask.shape[0], -1)


def vit_tokens(vit: nn.Module, x: Tensor, ids_keep: Tensor | None = None,
               gate: Tensor | None = None, final_norm: bool = True) -> Tensor:
    """Final-normed tokens of a timm ViT, prefix (CLS) tokens first: (B, prefix + L_keep, D).

    ids_keep (B*K, L_keep): patch indices to keep (positions are added before dropping, as in
    MAE); with K > 1 copies per image the embedded tokens are repeated, image b giving rows
    b*K .. b*K + K - 1, so the patch embedding runs once per image.
    gate (B, L): AutoMAE's gradient path, tokens <- gate * t + sg(1 - gate) * t (values unchanged,
    the gradient reaches whatever produced the gate).
    final_norm=False returns the blocks' output before `vit.norm` (ExtreMA's class-attention
    pooling reads the un-normed tokens and norms only its CLS).
    """
    tokens = vit._pos_embed(vit.patch_embed(x))            # (B, prefix + L, D)
    p = vit.num_prefix_tokens
    prefix, patches = tokens[:, :p], tokens[:, p:]
    if gate is not None:
        g = gate[..., None].to(patches.dtype)
        patches = g * patches + (1 - g).detach() * patches
    if ids_keep is not None:
        copies = ids_keep.shape[0] // patches.shape[0]
        if copies > 1:
            prefix, patches = prefix.repeat_interleave(copies, 0), patches.repeat_interleave(copies, 0)
        patches = patches.gather(1, ids_keep[..., None].expand(-1, -1, patches.shape[-1]))
    tokens = torch.cat([prefix, patches], dim=1)
    tokens = vit.blocks(vit.norm_pre(vit.patch_drop(tokens)))
    return vit.norm(tokens) if final_norm else tokens


def pool(vit: nn.Module, tokens: Tensor) -> Tensor:
    """Pooled features of ViT tokens, exactly as the plain forward pools them."""
    return vit.forward_head(tokens, pre_logits=True)


def encode(backbone: nn.Module, x: Tensor, masks: Tensor | None = None) -> Tensor:
    """Pooled features. masks None -> (B, D); masks (B, K, h, w) -> (B, K, D), one row per copy.

    Float masks occlude pixels; boolean patch masks drop tokens on a ViT (occlude on a CNN).
    """
    if masks is None:
        return backbone(x)
    B, K = masks.shape[:2]
    if masks.dtype == torch.bool and is_vit(backbone):
        ids_keep = ids_keep_from_mask(masks.flatten(0, 1))  # (B*K, L_keep)
        return pool(backbone, vit_tokens(backbone, x, ids_keep)).view(B, K, -1)
    hidden = occlude(x, masks.float())                     # (B, K, C, H, W)
    return backbone(hidden.flatten(0, 1)).view(B, K, -1)
