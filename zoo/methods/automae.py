"""AutoMAE: an MAE whose masks come from a learned generator (Chen et al., arXiv 2303.06583).

Reference: hyperea/automae (`models_mae.py`, `engine_pretrain.py`), a modification of MAE.

- Attention source: a separate *frozen, pretrained* ViT. Its last block's post-softmax attention
  of the CLS query over the patch keys, per head, on the unmasked image, without gradient:
  (B, heads, h, w).
- Generator: Conv3x3(heads -> heads/2) -> ReLU -> Conv3x3(-> 1) -> log-softmax over patches.
  y = gumbel_softmax(logp, tau=1) (soft, one sample); b = top-k one-hot of y with k = number of
  *visible* patches; m = b - sg(y) + y (straight-through); noise = U(0, 1) + 0.5 * m. The MAE keeps
  the k lowest-noise patches, so the generator's top-k patches are (almost always) masked and the
  rest of the masked set is random. Tokens are gated, t <- noise * t + sg(1 - noise) * t: values
  unchanged, but the reconstruction loss reaches the generator through the noise.
- Discriminator: spectral-norm convs, LeakyReLU 0.2, no sigmoid, LSGAN. "Real" maps are random
  rectangles (0.5 inside, plus U(0, 1) noise everywhere, softmax over the cells); "fake" is y.
- Phases per batch ("discriminator", "encoder"): D step MSE(D(real), 1) + MSE(D(y_d), 0) on a
  separate, gradient-free Gumbel sample y_d; then MAE + generator together (D frozen):
  L_rec + 0.2 * MSE(D(y), 1). The generator *minimises* the reconstruction loss with the MAE.

Example:
    >>> import torch, warnings, zoo
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")      # attention_source=None: random source, tests only
    ...     p = zoo.create_pretrainer("automae_vit_tiny_patch4_32", decoder_depth=2)
    >>> x = [torch.randn(2, 3, 32, 32)]
    >>> p(x, phase="discriminator").backward()  # step the "discriminator" optimizer
    >>> p(x, phase="encoder").backward()        # step the "encoder" optimizer (MAE + generator)
    >>> p.masker(x[0]).shape                    # the generator's masks, True = hidden (48 of 64)
    torch.Size([2, 1, 8, 8])
    >>> real = zoo.create_pretrainer("automae_vit_tiny_patch4_32",
    ...                              attention_source="mae_vit_tiny_patch4_32")  # doctest: +SKIP

Deviations and scale choices:
- Attention source of the paper recipe: timm's `vit_base_patch16_224.mae` (MAE's public ViT-B/16,
  1600 pretraining epochs, norm-pix loss); the official run loads its own 800-epoch MAE checkpoint
  (hyperea/automae `main_pretrain.py` l112 `--pretrained_weight ./mae-base-checkpoint-799.pth`,
  loaded at l173; README: "AutoMAE(MAE-800)"), which is not released. Same architecture and
  loss; the source was pretrained twice as long.
- Small patch grids (ours; the reference is ViT-B/16 at 224 px, a 14 x 14 grid). The
  discriminator keeps its two Conv(k4, s2, p1) layers and sizes the last conv's kernel to the
  map left after them, so it still ends in one score per map: k3 at 14 x 14 (the reference),
  k2 at 8 x 8 (vit_tiny_patch4_32), k1 at 6 x 6. The rectangle prior keeps the reference's
  fractions of the grid: area 40/196 .. 160/196 of the cells, side 4/14 .. 10/14 of the grid
  (rounded): at 14 x 14 exactly the reference's area 40-160 and side 4-10; at 8 x 8 area
  13-52 of 64 cells and side 2-6.
- At 8 x 8 with 75 % masking (16 visible patches) the noise ordering leaves a generator-selected
  patch visible in about 0.2 % of images (measured); at 14 x 14 practically never. Kept as in the
  reference (mask_factor 0.5).
- The generator's input channels follow the source's head count (12 for ViT-B as in the
  reference; 3 for ViT-Tiny, 6 for ViT-Small), hidden channels heads // 2 (at least 1).
- `attention_source=None` builds a frozen *randomly initialised* ViT of the backbone's arch.
  Only for tests and smoke runs: its attention carries no image structure. Real runs name a
  pretrained zoo model (e.g. a released `mae_...` backbone), loaded with
  `zoo.create_model(name, pretrained=True)`.
- The discriminator runs in fp32 (autocast disabled inside it), as the reference's D step does;
  the Gumbel sampling and top-k run in fp32 too.
- Optimizers and schedules belong to the recipe: the reference steps MAE + generator with AdamW
  (0.9, 0.95), wd 0.05, and the discriminator with Adam (0.9, 0.95) without weight decay, both on
  the same per-iteration warmup-cosine schedule.
- Spectral norm uses torch's parametrization API (state-dict keys `parametrizations.weight.*`),
  one power iteration per training-mode forward, as the reference's hook-based version.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from zoo.backbones import create_backbone, is_vit, patch_grid
from zoo.objectives import MAE
from zoo.pretrainer import Pretrainer, frozen
from zoo.registry import register_method

PAPER = "AutoMAE: Chen, Zhang, Wang, Yang, arXiv 2303.06583 (PRCV 2023)"

# The reference's rectangle prior on a 14 x 14 grid, as fractions of the grid.
AREA_RANGE = (40 / 196, 160 / 196)
SIDE_MIN = 4 / 14


@torch.no_grad()
def cls_attention(vit: nn.Module, images: Tensor) -> Tensor:
    """Last block's post-softmax attention of the CLS query over the patch keys: (B, heads, h, w).

    Computed from timm's block internals (norm1 -> qkv of the last block's attention) on the
    unmasked image; the softmax runs over all keys (CLS included) and the patch columns are kept.
    """
    if getattr(vit, "cls_token", None) is None:
        raise ValueError("the attention source needs a CLS token (got a ViT with class_token=False)")
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    for block in vit.blocks[:-1]:
        tokens = block(tokens)
    last = vit.blocks[-1]
    attn = last.attn
    x = last.norm1(tokens)
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])                  # (B, heads, N, head_dim)
    logits = (q[:, :, :1].float() * attn.scale) @ k.float().transpose(-2, -1)   # CLS query only
    probs = logits.softmax(dim=-1)[:, :, 0, vit.num_prefix_tokens:]  # (B, heads, L)
    return probs.unflatten(-1, patch_grid(vit))


class MaskGenerator(nn.Module):
    """Conv3x3(heads -> heads/2) -> ReLU -> Conv3x3(-> 1) -> log-softmax over the patches."""

    def __init__(self, heads: int):
        super().__init__()
        hidden = max(1, heads // 2)
        self.net = nn.Sequential(nn.Conv2d(heads, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 3, padding=1), nn.Flatten())

    def forward(self, attention: Tensor) -> Tensor:
        """attention (B, heads, h, w) -> log-probabilities over the h*w patches, (B, L), fp32."""
        return self.net(attention).float().log_softmax(dim=-1)


class MaskSample(NamedTuple):
    y: Tensor        # (B, L) Gumbel-softmax probabilities (the discriminator's "fake")
    noise: Tensor    # (B, L) U(0, 1) + mask_factor * m: the MAE keeps the lowest; the token gate
    hidden: Tensor   # (B, h, w) bool, True = masked (not among the `visible` lowest-noise patches)


class AutoMAEMasker(nn.Module):
    """Frozen attention source + learned generator: images -> MAE masks (B, 1, h, w), bool.

    `sample(images)` gives the full MaskSample (the pretrainer needs y and the noise too).
    The attention source stays frozen and in eval mode whatever `train()` is called with.

    Example:
        >>> import torch, timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=0)
        >>> masker = AutoMAEMasker(vit, mask_ratio=0.75)
        >>> hide = masker(torch.randn(2, 3, 32, 32)); hide.shape, int(hide[0].sum())
        (torch.Size([2, 1, 8, 8]), 48)
    """

    def __init__(self, attention_source: nn.Module, mask_ratio: float = 0.75,
                 mask_factor: float = 0.5, tau: float = 1.0):
        super().__init__()
        if not is_vit(attention_source):
            raise ValueError(f"the attention source must be a timm ViT, got {type(attention_source).__name__}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.source = attention_source.requires_grad_(False).eval()
        self.grid = patch_grid(attention_source)
        self.num_patches = self.grid[0] * self.grid[1]
        self.visible = int(self.num_patches * (1 - mask_ratio))        # k: 49 of 196 at 75 %
        if self.visible < 1:
            raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch of {self.num_patches}")
        self.mask_factor, self.tau = mask_factor, tau
        self.generator = MaskGenerator(attention_source.blocks[-1].attn.num_heads)

    def train(self, mode: bool = True):
        super().train(mode)
        self.source.eval()                  # frozen: no dropout / drop-path whatever the mode
        return self

    def sample(self, images: Tensor) -> MaskSample:
        attention = cls_attention(self.source, images)                  # no grad
        logp = self.generator(attention)                                # (B, L)
        y = F.gumbel_softmax(logp, tau=self.tau, hard=False)            # one soft sample
        b = torch.zeros_like(y).scatter_(1, y.topk(self.visible, dim=1).indices, 1.0)
        m = b - y.detach() + y                                          # straight-through
        noise = torch.rand_like(y) + self.mask_factor * m
        keep = noise.argsort(dim=1)[:, :self.visible]                   # MAE: lowest noise kept
        hidden = torch.ones_like(y, dtype=torch.bool).scatter_(1, keep, False)
        return MaskSample(y, noise, hidden.view(-1, *self.grid))

    def forward(self, images: Tensor) -> Tensor:
        return self.sample(images).hidden[:, None]

    def penalty(self, masks: Tensor) -> Tensor:
        return masks.new_zeros((), dtype=torch.float32)


def last_kernel(grid: int) -> int:
    """Kernel of the discriminator's last conv: the map left after two Conv(k4, s2, p1)."""
    size = grid // 2 // 2                       # Conv(k4, s2, p1) maps n -> floor(n / 2)
    if size < 1:
        raise ValueError(f"the mask discriminator needs a patch grid of at least 4 x 4, got {grid}")
    return size


class MaskDiscriminator(nn.Module):
    """SN-Conv(1->16, k4 s2 p1) - LReLU(0.2) - SN-Conv(16->32, k4 s2 p1) - LReLU(0.2) - SN-Conv(32->1).

    The last kernel covers what is left of the grid (k3 at 14 x 14 as in the reference, k2 at
    8 x 8): one unbounded score per map (LSGAN, no sigmoid). Convs without bias, as the reference.
    Input (B, 1, h, w) probability maps; always computed in fp32.
    """

    def __init__(self, grid: int):
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(1, 16, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(16, 32, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(32, 1, last_kernel(grid), bias=False)), nn.Flatten())

    def forward(self, maps: Tensor) -> Tensor:
        with torch.autocast(device_type=maps.device.type, enabled=False):
            return self.net(maps.float())       # (B, 1)


def random_rectangles(batch: int, grid: int, device=None, generator: torch.Generator | None = None) -> Tensor:
    """The reference's random-rectangle prior, rescaled to the grid: (B, grid, grid) of 0/1.

    Per sample: area ~ U{a_lo..a_hi}, side l ~ U{s..grid-s} (columns), rows w = min(grid,
    ceil(area / l)), uniform position. At grid 14: area 40..160, l 4..10 (the reference).
    """
    L = grid * grid
    a_lo, a_hi = round(AREA_RANGE[0] * L), round(AREA_RANGE[1] * L)
    s = max(1, round(SIDE_MIN * grid))
    kw = dict(device=device, generator=generator)
    area = torch.randint(a_lo, a_hi + 1, (batch,), **kw)
    cols = torch.randint(s, grid - s + 1, (batch,), **kw)
    rows = torch.clamp(torch.div(area + cols - 1, cols, rounding_mode="floor"), max=grid)  # ceil
    # uniform top-left corner: floor(U * (range + 1))
    x0 = (torch.rand(batch, device=device, generator=generator) * (grid - cols + 1)).long()
    y0 = (torch.rand(batch, device=device, generator=generator) * (grid - rows + 1)).long()
    r = torch.arange(grid, device=device)
    in_rows = (r >= y0[:, None]) & (r < (y0 + rows)[:, None])          # (B, grid)
    in_cols = (r >= x0[:, None]) & (r < (x0 + cols)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).float()


def pseudo_real_maps(boxes: Tensor, mask_factor: float = 0.5) -> Tensor:
    """Rectangles (B, h, w) -> "real" maps (B, 1, h, w): softmax over cells of 0.5*box + U(0, 1)."""
    logits = (mask_factor * boxes + torch.rand_like(boxes)).flatten(1)
    return logits.softmax(dim=1).view(boxes.shape[0], 1, *boxes.shape[1:])


class AutoMAEPretrainer(Pretrainer):
    """MAE backbone + MAE objective (decoder) + AutoMAEMasker + MaskDiscriminator.

    Phases ("discriminator", "encoder"); parameters_of("discriminator") = D,
    parameters_of("encoder") = backbone + MAE decoder + generator (never the frozen source).
    """

    phases = ("discriminator", "encoder")
    phase_modules = {"discriminator": ("discriminator",),
                     "encoder": ("backbone", "objective", "masker.generator")}
    num_views, masked_views = 1, (0,)

    def __init__(self, backbone: nn.Module, objective: nn.Module, masker: AutoMAEMasker,
                 loss_g_factor: float = 0.2, prior_mask_factor: float = 0.5):
        super().__init__(backbone, objective, masker)
        if patch_grid(backbone) != masker.grid:
            raise ValueError(f"attention source grid {masker.grid} != backbone grid {patch_grid(backbone)}")
        self.discriminator = MaskDiscriminator(masker.grid[0])
        self.loss_g_factor, self.prior_mask_factor = loss_g_factor, prior_mask_factor

    def _maps(self, y: Tensor) -> Tensor:
        return y.view(-1, 1, *self.masker.grid)

    def forward(self, views: Sequence[Tensor], phase: str = "encoder") -> Tensor:
        x = views[0]
        if phase == "discriminator":
            with torch.no_grad():
                fake = self._maps(self.masker.sample(x).y)           # a separate Gumbel sample
                boxes = random_rectangles(x.shape[0], self.masker.grid[0], device=x.device)
                real = pseudo_real_maps(boxes, self.prior_mask_factor)
            d_real, d_fake = self.discriminator(real), self.discriminator(fake)
            return F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake))
        if phase == "encoder":
            with frozen(self.discriminator):
                s = self.masker.sample(x)
                rec = self.objective(self.backbone, [x], [s.hidden[:, None]], gate=s.noise)
                d = self.discriminator(self._maps(s.y))
                loss_g = F.mse_loss(d, torch.ones_like(d))
            return rec + self.loss_g_factor * loss_g
        raise self.no_phase(phase)


def load_attention_source(arch: str, attention_source: str | None) -> nn.Module:
    """The frozen ViT whose attention the generator reads.

    A zoo name (or published folder / hf-hub repo) -> `zoo.create_model(name, pretrained=True)`;
    None -> a randomly initialised ViT of `arch`, for tests and smoke runs only (warns).
    """
    if attention_source is None:
        warnings.warn(f"automae_{arch}: attention_source=None uses a frozen RANDOMLY initialised "
                      f"{arch} as the attention source; its attention carries no image structure. "
                      "Only for tests and smoke runs: name a pretrained ViT (e.g. a released MAE) "
                      "for real training.", stacklevel=4)
        return create_backbone(arch)
    from zoo.factory import create_model       # lazy: the factory imports the registry
    return create_model(attention_source, pretrained=True)


@register_method("automae", archs=("vit_tiny_patch4_32", "vit_small_patch16_224", "vit_base_patch16_224"),
                 paper=PAPER, ours_archs=("vit_tiny_patch4_32", "vit_small_patch16_224"),
                 paper_title="Improving Masked Autoencoders by Learning Where to Mask (Chen et al., 2023)",
                 paper_id="arXiv:2303.06583", pretrainer=AutoMAEPretrainer,
                 exports="the MAE encoder (the decoder is not released)")
def automae(arch: str, attention_source: str | None = None, mask_ratio: float = 0.75,
            mask_factor: float = 0.5, loss_g_factor: float = 0.2, decoder_embed_dim: int = 512,
            decoder_depth: int = 8, decoder_num_heads: int = 16, norm_pix_loss: bool = True) -> AutoMAEPretrainer:
    """AutoMAE: MAE + Gumbel top-k mask generator on a frozen ViT's attention + LSGAN discriminator.

    attention_source: zoo name of a pretrained ViT with the backbone's patch grid (the reference
    uses an 800-epoch MAE ViT-B/16), loaded with `zoo.create_model(name, pretrained=True)`;
    None = random frozen ViT (tests only, warns). mask_ratio 0.75, mask_factor 0.5 and
    loss_g_factor 0.2 are the reference's; the decoder knobs are MAE's (512 x 8, 16 heads).

    Example:
        >>> import torch, warnings, zoo
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     p = zoo.create_pretrainer("automae_vit_tiny_patch4_32", decoder_depth=1)
        >>> x = [torch.randn(2, 3, 32, 32)]
        >>> p(x, phase="discriminator").backward(); p(x, phase="encoder").backward()
    """
    backbone = create_backbone(arch)
    source = load_attention_source(arch, attention_source)
    if not is_vit(source) or patch_grid(source) != patch_grid(backbone):
        got = patch_grid(source) if is_vit(source) else type(source).__name__
        raise ValueError(f"attention_source {attention_source!r} must be a ViT with the {patch_grid(backbone)} "
                         f"patch grid of {arch}, got {got}")
    objective = MAE(backbone, decoder_embed_dim, decoder_depth, decoder_num_heads,
                    norm_pix_loss=norm_pix_loss)
    masker = AutoMAEMasker(source, mask_ratio=mask_ratio, mask_factor=mask_factor)
    return AutoMAEPretrainer(backbone, objective, masker, loss_g_factor=loss_g_factor)
