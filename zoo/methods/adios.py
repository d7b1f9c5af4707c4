"""ADIOS: adversarial inference-occlusion self-supervision (Shi et al., ICML 2022, arXiv 2201.13100).

A U-Net occluder splits every image into N soft masks (a softmax over N, so the masks partition
each pixel); the encoder is trained on the view hidden by each mask, `x * (1 - m_n)`, and the
occluder is trained to *maximise* the same loss, with a sparsity penalty that keeps every mask
away from empty and full. Two phases per batch, each with its own optimizer (reference:
YugeTen/adios, `src/methods/*_adios*.py`, `src/utils/unet.py`):

    encoder: masks = occluder(x2).detach();  loss = sum_n L(x1, x2 * (1 - m_n))
    masker:  encoder and heads frozen;        loss = -sum_n L(x1, x2 * (1 - m_n)) + penalty(m)

penalty(m) = alpha_sparsity * sum_n mean_b 1 / (sin(pi * s_bn) + 1e-10) + alpha_entropy * H,
s_bn = area fraction of mask n in image b, H = sum_b entropy(softmax_n(s_b)) (the reference adds
`alpha_entropy * sum p log p` to the objective it maximises, i.e. H to the loss we minimise).

Bases (the objective's wiring, zoo/objectives.py): SimCLR and BYOL mask view 2 only (BYOL feeds
the masked view to the online and the momentum branch); SimSiam masks both views, one U-Net pass
per view, and its penalty covers the 2N masks of both views (the entropy over the (B, 2N) area
matrix, as the reference's full SimSiam-ADIOS does).

ADIOS-s (`adios_s`): the same occluder and penalty over all N masks, but each image uses one mask
index drawn uniformly per step, drawn independently in the two phases, so only one masked copy is
encoded (K = 1). SimSiam-ADIOS-s uses the same drawn index for both views and penalises each
view's N masks separately (the reference's `simsiam_adios_s.py`).

Example:
    >>> import torch, zoo
    >>> p = zoo.create_pretrainer("adios_resnet18", objective="simclr", img_size=32, num_masks=3)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> p(views, phase="encoder").backward()      # step the "encoder" optimizer
    >>> p(views, phase="masker").backward()       # step the "masker" optimizer
    >>> p.masker(views[1]).sum(1).allclose(torch.ones(4, 32, 32))   # masks partition each pixel
    True

Deviations from the reference, and why:
- The N masked copies of view 2 go through the encoder in one batched forward of B*N images
  (speed; DESIGN.md). A ResNet's BatchNorm therefore normalises over the N masked copies
  together, where the reference runs N separate forwards of B images (batch statistics per mask).
  ViTs (LayerNorm) are unaffected.
- The unmasked view x1 is encoded once per phase; the reference recomputes its features N times
  (once per mask). The values are identical; only a ResNet's BatchNorm running statistics see x1
  once instead of N times.
- The reference's online linear classifier (trained inside the encoder step on detached
  features) is not part of the pretrainer: evaluation (kNN, linear probe on frozen features,
  zoo/evaluation.py) replaces it. It never influenced the encoder, since its input is detached.
- Optimizers and schedules (SGD + LARS, warmup-cosine, `mask_lr`) belong to the recipe, not to
  this module.
- BYOL-ADIOS(-s): the reference's `train_mask_epoch` (YugeTen/adios `src/methods/base_adios.py`:
  default 10 for the momentum bases, l250, and 0 for SimCLR / SimSiam, l50; no script sets it)
  does one thing: the encoder optimizer's warmup-cosine runs over max_epochs - train_mask_epoch
  (l317; the occluder's over max_epochs, l324). pl_bolts' chainable cosine then continues past its
  end, so the encoder's lr reaches min_lr at epoch 390 of 400 and climbs back to only 0.14 % of
  its base lr by the last epoch. Not reproduced: every phase's schedule spans the whole run
  (train/optim.py), because a per-phase schedule length is a knob that the training loop would
  have to pass to `build_schedule` for this one method. The difference at 400 epochs (warmup 10):
  at most 2.4 % of the base lr mid-run (ours 0.520 x base at epoch 200 where the reference is at
  0.500), and over the last 10 epochs ours anneals from 0.16 % of the base lr to 0 where the
  reference stays below 0.14 %. The BYOL paper recipes name it.
- U-Net depth: `num_blocks` defaults to the reference's log2(img_size) - 1 (what its SimCLR and
  BYOL methods pass); its SimSiam methods take `--num_blocks` (argparse default 4) and the scripts
  set 4, or 5 in stl10/resnet18/simsiam_adios, which the recipes set through
  `model_args.num_blocks`. Same channel tables and bottleneck rule, f = img_size / 2^(blocks - 1):
  4 blocks at 96 px give a 12 x 12 bottleneck (6 x 6 at the default 5).
- SimSiam base: its predictor trains at the fixed base lr (`static_lr`, `simsiam_adios.py` l147),
  declared by the objective (`SimSiam.static_lr`) and honoured by train/optim.py (which names the
  reference's first epoch at warmup_start_lr, an artefact of how it patches the scheduler).
- The U-Net's channel plan is the reference's for 4, 5 and 6 blocks (32, 64/96, 224 px); other
  image sizes use the same rule extended (encoder outputs c repeated num_blocks - 3 times then
  2c three times; decoder outputs 2c, 2c then c), which the reference does not define (ours).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.backbones import create_backbone, is_vit
from zoo.objectives import create_objective
from zoo.pretrainer import Pretrainer, frozen
from zoo.registry import register_method

PAPER = "ADIOS: Shi, Siddharth, Torr, Kosiorek, ICML 2022 (arXiv 2201.13100)"
PAPER_TITLE, PAPER_ID = "Adversarial Masking for Self-Supervised Learning (Shi et al., ICML 2022)", "arXiv:2201.13100"
UNET_NORMS = ("gn", "in", "no")


def _conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    """Conv3x3 (stride 1, padding 1) + norm + ReLU: the Genesis block the reference uses."""
    if norm == "gn":
        if cout % 8:
            raise ValueError(f"unet_norm='gn' uses GroupNorm(8, C): {cout} channels is not a "
                             "multiple of 8; pick mask_fbase a multiple of 8 or unet_norm='in'/'no'")
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.GroupNorm(8, cout),
                             nn.ReLU(inplace=True))
    if norm == "in":
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                             nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(inplace=True))   # "no": with bias


def unet_plan(num_blocks: int, c: int, in_chans: int = 3):
    """(enc_in, enc_out, dec_in, dec_out) channel lists of the reference U-Net with c = mask_fbase."""
    enc_out = [c] * (num_blocks - 3) + [2 * c] * 3
    enc_in = [in_chans] + enc_out[:-1]
    dec_out = [2 * c, 2 * c] + [c] * (num_blocks - 2)
    # each decoder block sees the previous output (the bottleneck's 2c first) and the mirror skip
    dec_in = [prev + skip for prev, skip in zip([2 * c] + dec_out[:-1], enc_out[::-1])]
    return enc_in, enc_out, dec_in, dec_out


class ADIOSOccluder(nn.Module):
    """The ADIOS occlusion model: U-Net -> Conv1x1(c -> N) -> softmax over N.

    forward(images (B, 3, H, W)) -> masks (B, N, H, W), soft, summing to 1 over N at every pixel
    (1 = hidden). `penalty(masks)` is what the masker phase adds to the negated objective.

    Example:
        >>> import torch
        >>> occ = ADIOSOccluder(img_size=32, num_masks=4)
        >>> m = occ(torch.randn(2, 3, 32, 32)); m.shape
        torch.Size([2, 4, 32, 32])
        >>> bool(occ.penalty(torch.full((2, 4, 32, 32), 0.5)) == 4.0)   # 4 masks at area 0.5
        True
    """

    def __init__(self, img_size: int, num_masks: int = 6, mask_fbase: int = 32,
                 alpha_sparsity: float = 1.0, alpha_entropy: float = 0.0, unet_norm: str = "gn",
                 in_chans: int = 3, num_blocks: int | None = None):
        super().__init__()
        if unet_norm not in UNET_NORMS:
            raise ValueError(f"unet_norm must be one of {UNET_NORMS}, got {unet_norm!r}")
        if num_masks < 2:
            raise ValueError(f"num_masks must be >= 2 (a softmax over one mask hides everything), "
                             f"got {num_masks}")
        # the reference's default depth: 32 px: 4, 64/96 px: 5, 224 px: 6; its SimSiam scripts
        # set num_blocks themselves (4 at 96 px: a 12 x 12 bottleneck)
        self.num_blocks = int(math.log2(img_size) - 1) if num_blocks is None else int(num_blocks)
        if self.num_blocks < 3 or img_size % 2 ** (self.num_blocks - 1):
            raise ValueError(f"ADIOSOccluder needs num_blocks >= 3 and img_size divisible by "
                             f"2**(num_blocks - 1) (default num_blocks = log2(img_size) - 1), got "
                             f"img_size {img_size}, num_blocks {self.num_blocks}")
        self.img_size, self.num_masks = img_size, num_masks
        self.alpha_sparsity, self.alpha_entropy = alpha_sparsity, alpha_entropy
        c = mask_fbase
        enc_in, enc_out, dec_in, dec_out = unet_plan(self.num_blocks, c, in_chans)
        self.down = nn.ModuleList(_conv_block(i, o, unet_norm) for i, o in zip(enc_in, enc_out))
        self.up = nn.ModuleList(_conv_block(i, o, unet_norm) for i, o in zip(dec_in, dec_out))
        self.featuremap_size = f = img_size // 2 ** (self.num_blocks - 1)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * c * f * f, 128), nn.ReLU(),
            nn.Linear(128, 128), nn.ReLU(),
            nn.Linear(128, 2 * c * f * f), nn.ReLU(),
        )
        self.head = nn.Conv2d(c, num_masks, 1)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"ADIOSOccluder was built for {self.img_size} px images, got "
                             f"{tuple(images.shape[-2:])}; build it with img_size={images.shape[-1]}")
        skips, x = [], images
        for i, block in enumerate(self.down):
            x = block(x)
            skips.append(x)
            if i < len(self.down) - 1:
                x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        f = self.featuremap_size
        x = self.mlp(x).view(x.shape[0], -1, f, f)
        for i, block in enumerate(self.up):
            x = block(torch.cat([x, skips[-1 - i]], dim=1))
            if i < len(self.up) - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.head(x).float().softmax(dim=1)          # (B, N, H, W), partitions each pixel

    def penalty(self, masks: Tensor) -> Tensor:
        """alpha_sparsity * sum_n mean_b 1/(sin(pi s_bn) + 1e-10) + alpha_entropy * sum_b H(s_b).

        masks (B, N, H, W); s_bn = mean of mask n over the pixels of image b (area fraction).
        Minimal (1 per mask) at s = 0.5, infinite at 0 and 1.
        """
        area = masks.float().mean(dim=(-2, -1))                         # (B, N)
        sparsity = (1.0 / (torch.sin(math.pi * area) + 1e-10)).mean(0).sum()
        entropy = -(area.softmax(1) * area.log_softmax(1)).sum()        # sum over b of H(s_b)
        return self.alpha_sparsity * sparsity + self.alpha_entropy * entropy


def choose_one(masks: Tensor, index: Tensor) -> Tensor:
    """masks (B, N, H, W), index (B,) -> the chosen mask of each image, (B, 1, H, W)."""
    return masks.gather(1, index.view(-1, 1, 1, 1).expand(-1, 1, *masks.shape[-2:]))


class ADIOSPretrainer(Pretrainer):
    """Backbone + base objective + ADIOSOccluder, stepped by the phases ("encoder", "masker").

    single=True gives ADIOS-s (one uniformly drawn mask per image per phase).
    mask_both_views=True (SimSiam) generates masks for both views, one U-Net pass per view;
    otherwise only view 2 is masked (SimCLR, BYOL).
    `last_choice` keeps ADIOS-s's most recent mask indices (per view) for inspection.
    """

    phases = ("encoder", "masker")
    phase_modules = {"encoder": ("backbone", "objective"), "masker": ("masker",)}
    BOTH_VIEWS = ("simsiam",)                # the bases whose ADIOS masks both views

    def __init__(self, backbone: nn.Module, objective: nn.Module, masker: ADIOSOccluder,
                 single: bool = False, mask_both_views: bool = False):
        super().__init__(backbone, objective, masker)
        self.single, self.mask_both_views = single, mask_both_views
        self.masked_views = (0, 1) if mask_both_views else (1,)
        self.last_choice: Tensor | None = None

    @classmethod
    def masked_views_of(cls, objective: str | None = None) -> tuple[int, ...]:
        return (0, 1) if objective in cls.BOTH_VIEWS else (1,)

    def _masks(self, views: Sequence[Tensor]) -> tuple[list[Tensor | None], Tensor]:
        """(masks per view for the objective, the penalty on the occluder's full masks)."""
        if len(views) != 2:
            raise ValueError(f"ADIOS takes two views, got {len(views)}")
        masked = self.masked_views
        full = {i: self.masker(views[i]) for i in masked}               # (B, N, H, W) each
        penalty = (sum(self.masker.penalty(full[i]) for i in masked) if self.single
                   else self.masker.penalty(torch.cat([full[i] for i in masked], dim=1)))
        if self.single:
            B, N = full[masked[0]].shape[:2]
            self.last_choice = torch.randint(N, (B,), device=views[1].device)
            full = {i: choose_one(m, self.last_choice) for i, m in full.items()}
        return [full.get(0), full.get(1)], penalty

    def forward(self, views: Sequence[Tensor], phase: str = "encoder") -> Tensor:
        if phase == "encoder":
            with torch.no_grad():                  # the occluder is not trained here
                masks, _ = self._masks(views)
            return self.objective(self.backbone, views, masks)
        if phase == "masker":
            # The player not being stepped gets no gradient at all (not just a zeroed one).
            with frozen(self.backbone, self.objective):
                masks, penalty = self._masks(views)
                objective = self.objective(self.backbone, views, masks)
            return -objective + penalty            # the occluder maximises the objective
        raise self.no_phase(phase)


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------

ARCHS = ("resnet18", "resnet50", "vit_tiny_patch16_96", "vit_tiny_patch4_32",
         "vit_small_patch16_224")
# The paper ran ResNet-18 (96 px; 224 px for ADIOS-s) and ViT-Tiny/16 at 96 px.
OURS = ("resnet50", "vit_tiny_patch4_32", "vit_small_patch16_224")
OBJECTIVES = ("simclr", "byol", "simsiam")
# ResNets have no image size of their own: the paper's 96 px (STL10, ImageNet100-S) by default.
DEFAULT_CNN_IMG_SIZE = 96


def _build(arch: str, objective: str, single: bool, num_masks: int, mask_fbase: int,
           alpha_sparsity: float, alpha_entropy: float, unet_norm: str, img_size: int | None,
           num_blocks: int | None = None, **objective_args) -> ADIOSPretrainer:
    backbone = create_backbone(arch)
    if is_vit(backbone):
        own = backbone.patch_embed.img_size[0]
        if img_size is not None and img_size != own:
            raise ValueError(f"{arch} takes {own} px images (img_size={img_size} given); the "
                             "occluder and the ViT must see the same size")
        img_size = own
    occluder = ADIOSOccluder(img_size or DEFAULT_CNN_IMG_SIZE, num_masks, mask_fbase,
                             alpha_sparsity, alpha_entropy, unet_norm, num_blocks=num_blocks)
    base = create_objective(objective, backbone, **objective_args)
    return ADIOSPretrainer(backbone, base, occluder, single=single,
                           mask_both_views=ADIOSPretrainer.masked_views_of(objective) == (0, 1))


@register_method("adios", archs=ARCHS, objectives=OBJECTIVES, paper=PAPER, ours_archs=OURS,
                 paper_title=PAPER_TITLE, paper_id=PAPER_ID, pretrainer=ADIOSPretrainer,
                 takes_img_size=True)
def adios(arch: str, objective: str = "simclr", num_masks: int = 6, mask_fbase: int = 32,
          alpha_sparsity: float = 1.0, alpha_entropy: float = 0.0, unet_norm: str = "gn",
          img_size: int | None = None, num_blocks: int | None = None,
          **objective_args) -> ADIOSPretrainer:
    """ADIOS: N soft masks from a U-Net occluder, trained adversarially against the encoder.

    num_masks (N), mask_fbase (c), alpha_sparsity, alpha_entropy, unet_norm ("gn", "in", "no"):
    the reference's flags (defaults: its argparse defaults). img_size: the occluder's input size
    (a ViT's own size; 96 px for ResNets, the paper's). num_blocks: the U-Net depth (None: the
    reference's default log2(img_size) - 1; its SimSiam scripts set 4 or 5). objective_args: the
    base objective's knobs (`zoo.objectives.OBJECTIVE_ARGS`, e.g. temperature, pred_hidden_dim;
    unset or None keeps its default, e.g. SimCLR T = 0.2).

    Example:
        >>> import zoo
        >>> p = zoo.create_pretrainer("adios_resnet18", objective="byol", img_size=32,
        ...                           pred_hidden_dim=8192, alpha_sparsity=1.719)
        >>> p.phases, p.masker.num_masks
        (('encoder', 'masker'), 6)
    """
    return _build(arch, objective, False, num_masks, mask_fbase, alpha_sparsity, alpha_entropy,
                  unet_norm, img_size, num_blocks, **objective_args)


# The paper ran ADIOS-s on ResNet-18 only (ImageNet100, 224 px).
@register_method("adios_s", archs=ARCHS, objectives=OBJECTIVES, paper=PAPER,
                 ours_archs=tuple(a for a in ARCHS if a != "resnet18"),
                 paper_title=PAPER_TITLE, paper_id=PAPER_ID, pretrainer=ADIOSPretrainer,
                 takes_img_size=True)
def adios_s(arch: str, objective: str = "simclr", num_masks: int = 6, mask_fbase: int = 32,
            alpha_sparsity: float = 1.0, alpha_entropy: float = 0.0, unet_norm: str = "gn",
            img_size: int | None = None, num_blocks: int | None = None,
            **objective_args) -> ADIOSPretrainer:
    """ADIOS-s: ADIOS with one uniformly drawn mask per image per phase (one masked copy).

    Same parameters as `adios`. The penalty still covers all N masks.

    Example:
        >>> import torch, zoo
        >>> p = zoo.create_pretrainer("adios_s_resnet18", img_size=32, num_masks=4)
        >>> p([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)], phase="masker").shape
        torch.Size([])
    """
    return _build(arch, objective, True, num_masks, mask_fbase, alpha_sparsity, alpha_entropy,
                  unet_norm, img_size, num_blocks, **objective_args)
