"""The controls every masking paper compares with: SimCLR, BYOL, SimSiam, MAE, random and block masks.

- `simclr`, `byol`, `simsiam`: the plain two-view methods (zoo/objectives.py), no masker.
  SimCLR (Chen et al., ICML 2020), BYOL (Grill et al., NeurIPS 2020), SimSiam (Chen & He,
  CVPR 2021), with the heads and hyper-parameters of the ADIOS reference's bases (solo-learn):
  SimCLR projector 2048 -> 256, T = 0.2; BYOL projector 4096 -> 256, predictor 4096, EMA 0.99 -> 1;
  SimSiam projector 2048 x 3, predictor 512. The exported backbone is the online encoder (BYOL's
  EMA teacher stays with the pretrainer).
- `mae`: MAE (He et al., CVPR 2022): one view, 75 % of the patches hidden by a RandomMasker in
  the encoder phase, decoder 512 x 8 blocks x 16 heads, norm-pix loss on hidden patches. The
  encoder gets MAE's fixed sin-cos positions and xavier init. The exported backbone is the encoder
  (timm ViT with its CLS token, as MAE's linear probe uses).
- `randmask`, `blockmask`: ADIOS's fixed-mask baselines (YugeTen/adios `simclr_rand_mask.py`,
  `src/utils/masking_schemes.py`): a base objective (SimCLR by default; BYOL, SimSiam too) whose
  second view is hidden by MAE-style random patches (75 %) or BEiT-style blocks (>= 30 %; exactly
  the target count here, see zoo/maskers.py). One masked copy per image by default (`num_masks`).

Example:
    >>> import torch, zoo
    >>> p = zoo.create_pretrainer("randmask_resnet18", objective="byol", pred_hidden_dim=8192)
    >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> p(views).backward(); p.update(progress=0.5)      # EMA teacher step, tau ~ 0.995
    >>> mae = zoo.create_pretrainer("mae_vit_tiny_patch4_32", decoder_depth=2)
    >>> mae([torch.randn(2, 3, 32, 32)]).shape
    torch.Size([])

Pairings no paper ran ("ours", flagged in the registry): every control on `vit_tiny_patch4_32`
(the CPU-scale ViT); SimSiam on ViT-S/B (MoCo v3 compares SimCLR and BYOL on ViT-S/B, not
SimSiam); MAE on ViT-Tiny and ViT-S (MAE reports ViT-B/L/H); the mask baselines on every ViT and
with BYOL / SimSiam (the reference's baseline is SimCLR with a ResNet-18; its mask-comparison
table could not be read, see FAITHFULNESS.md). ResNet-18 and ViT-Tiny/16 at 96 px are ADIOS's
own baselines for SimCLR, BYOL and SimSiam.

Deviations from the references, and why:
- Mask baselines on a ViT drop the hidden tokens; the reference occludes pixels, `x * (1 - m)`,
  for every backbone (DESIGN.md: a boolean patch mask drops tokens, which is also faster). On a
  CNN the masks occlude `mask_patch_size`-pixel cells (default 16 px, the reference's grid).
- For the mask baselines with SimSiam, only view 2 is masked (the Pretrainer's default wiring,
  SimSiam's "mask" terms then pair each view with the other view's masked or unmasked copy);
  ADIOS's SimSiam masks both views, but its fixed-mask baseline exists only for SimCLR.
- The rest (batched copies, BatchNorm over the K copies) is in zoo/objectives.py.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from zoo.backbones import create_backbone, is_vit
from zoo.maskers import BlockMasker, RandomMasker
from zoo.objectives import BYOL, MAE, create_objective
from zoo.pretrainer import Pretrainer
from zoo.registry import register_method

SIMCLR = "SimCLR: Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv 2002.05709)"
BYOL_PAPER = "BYOL: Grill et al., NeurIPS 2020 (arXiv 2006.07733)"
SIMSIAM = "SimSiam: Chen, He, CVPR 2021 (arXiv 2011.10566)"
MAE_PAPER = "MAE: He, Chen, Xie, Li, Dollar, Girshick, CVPR 2022 (arXiv 2111.06377)"
MASK_BASELINES = ("ADIOS's fixed-mask baselines (Shi et al., ICML 2022, arXiv 2201.13100): "
                  "MAE-style random patches, BEiT-style blocks (Bao et al., ICLR 2022)")

BASE_ARCHS = ("resnet18", "resnet50", "vit_tiny_patch16_96", "vit_tiny_patch4_32",
              "vit_small_patch16_224", "vit_base_patch16_224")
MAE_ARCHS = ("vit_tiny_patch4_32", "vit_tiny_patch16_96", "vit_small_patch16_224",
             "vit_base_patch16_224")
MASK_ARCHS = ("resnet18", "vit_tiny_patch16_96", "vit_tiny_patch4_32", "vit_small_patch16_224")
OBJECTIVES = ("simclr", "byol", "simsiam")


# --------------------------------------------------------------------------------------------
# Plain two-view controls
# --------------------------------------------------------------------------------------------

# Each factory takes its objective's knobs (zoo.objectives.OBJECTIVE_ARGS, defaults the objective's
# own) as **objective_args; `base=` tells the registry which objective's, so zoo.create_pretrainer
# and recipes check them by name. No masker: no view is hidden (masked_views=()).

@register_method("simclr", archs=BASE_ARCHS + ("resnet18_os16",), paper=SIMCLR,
                 ours_archs=("vit_tiny_patch4_32", "resnet18_os16"), paper_id="arXiv:2002.05709",
                 paper_title="A Simple Framework for Contrastive Learning of Visual Representations (Chen et al., 2020)",
                 base="simclr", masked_views=())
def simclr(arch: str, **objective_args) -> Pretrainer:
    """SimCLR: NT-Xent between the two views' projections (negatives gathered across processes)."""
    backbone = create_backbone(arch)
    return Pretrainer(backbone, create_objective("simclr", backbone, **objective_args))


@register_method("byol", archs=BASE_ARCHS, paper=BYOL_PAPER, ours_archs=("vit_tiny_patch4_32",),
                 paper_title="Bootstrap Your Own Latent (Grill et al., 2020)", paper_id="arXiv:2006.07733",
                 exports=BYOL.exported, base="byol", masked_views=())
def byol(arch: str, **objective_args) -> Pretrainer:
    """BYOL: symmetric 2 - 2cos(p, sg(z_teacher)); EMA teacher, tau cosine base_tau -> 1."""
    backbone = create_backbone(arch)
    return Pretrainer(backbone, create_objective("byol", backbone, **objective_args))


@register_method("simsiam", archs=BASE_ARCHS, paper=SIMSIAM,
                 ours_archs=("vit_tiny_patch4_32", "vit_small_patch16_224", "vit_base_patch16_224"),
                 paper_title="Exploring Simple Siamese Representation Learning (Chen & He, 2021)",
                 paper_id="arXiv:2011.10566", base="simsiam", masked_views=())
def simsiam(arch: str, **objective_args) -> Pretrainer:
    """SimSiam: symmetric -cos(p, sg(z)), averaged over the two directions (`simsiam_terms` only
    matter with masks: without them every term set is this loss)."""
    backbone = create_backbone(arch)
    return Pretrainer(backbone, create_objective("simsiam", backbone, **objective_args))


# --------------------------------------------------------------------------------------------
# MAE
# --------------------------------------------------------------------------------------------

class MAEPretrainer(Pretrainer):
    """ViT + MAE decoder; the encoder phase hides `masker(x)` of its single view."""

    num_views, masked_views = 1, (0,)

    def forward(self, views: Sequence[Tensor], phase: str = "encoder") -> Tensor:
        if phase != "encoder":
            raise self.no_phase(phase)
        if len(views) != 1:
            raise ValueError(f"MAE takes one view per image, got {len(views)}")
        with torch.no_grad():
            masks = [self.masker(views[0])]
        return self.objective(self.backbone, views, masks)


@register_method("mae", archs=MAE_ARCHS, paper=MAE_PAPER,
                 ours_archs=("vit_tiny_patch4_32", "vit_tiny_patch16_96", "vit_small_patch16_224"),
                 paper_title="Masked Autoencoders Are Scalable Vision Learners (He et al., 2022)",
                 paper_id="arXiv:2111.06377", pretrainer=MAEPretrainer,
                 exports="the MAE encoder (the decoder is not released)")
def mae(arch: str, mask_ratio: float = 0.75, decoder_embed_dim: int = 512, decoder_depth: int = 8,
        decoder_num_heads: int = 16, norm_pix_loss: bool = True) -> Pretrainer:
    """MAE: random masking (75 %), visible tokens only in the encoder, norm-pix loss on hidden patches."""
    backbone = create_backbone(arch)
    objective = MAE(backbone, decoder_embed_dim, decoder_depth, decoder_num_heads,
                    norm_pix_loss=norm_pix_loss)
    masker = RandomMasker(backbone.patch_embed.patch_size[0], mask_ratio)
    return MAEPretrainer(backbone, objective, masker)


# --------------------------------------------------------------------------------------------
# Fixed-mask baselines
# --------------------------------------------------------------------------------------------

def _mask_patch_size(backbone: nn.Module, mask_patch_size: int | None) -> int:
    """The masker's cell size: a ViT's own patch (token drop needs it); 16 px on a CNN (ADIOS)."""
    if is_vit(backbone):
        ph, pw = backbone.patch_embed.patch_size
        if ph != pw:
            raise ValueError(f"the patch maskers need square patches, got {ph}x{pw}")
        if mask_patch_size not in (None, ph):
            raise ValueError(f"mask_patch_size {mask_patch_size} must equal the ViT's patch size "
                             f"{ph} (hidden tokens are dropped)")
        return ph
    return 16 if mask_patch_size is None else mask_patch_size


def _masked_control(arch: str, objective: str, masker_factory, mask_patch_size: int | None,
                    objective_args: dict) -> Pretrainer:
    backbone = create_backbone(arch)
    masker = masker_factory(_mask_patch_size(backbone, mask_patch_size))
    return Pretrainer(backbone, create_objective(objective, backbone, **objective_args), masker)


@register_method("randmask", archs=MASK_ARCHS, objectives=OBJECTIVES, paper=MASK_BASELINES,
                 ours_archs=MASK_ARCHS[1:], paper_id="arXiv:2201.13100",
                 paper_title="Random patch masks, the control of ADIOS (Shi et al., 2022)")
def randmask(arch: str, objective: str = "simclr", mask_ratio: float = 0.75, num_masks: int = 1,
             mask_patch_size: int | None = None, **objective_args) -> Pretrainer:
    """Base objective with view 2 hidden by random patches (MAE-style, 75 %); objective_args: the
    base's knobs (zoo.objectives.OBJECTIVE_ARGS; None = base default)."""
    return _masked_control(arch, objective, lambda p: RandomMasker(p, mask_ratio, num_masks),
                           mask_patch_size, objective_args)


@register_method("blockmask", archs=MASK_ARCHS, objectives=OBJECTIVES, paper=MASK_BASELINES,
                 ours_archs=MASK_ARCHS[1:], paper_id="arXiv:2201.13100",
                 paper_title="Block masks, the control of ADIOS (Shi et al., 2022)")
def blockmask(arch: str, objective: str = "simclr", mask_ratio: float = 0.3, num_masks: int = 1,
              mask_patch_size: int | None = None, min_block_patches: int = 4,
              min_aspect: float = 0.3, **objective_args) -> Pretrainer:
    """Base objective with view 2 hidden by BEiT-style blocks (>= 30 %, exact count); objective_args
    as `randmask`."""
    return _masked_control(
        arch, objective,
        lambda p: BlockMasker(p, mask_ratio, num_masks, min_block_patches, min_aspect=min_aspect),
        mask_patch_size, objective_args)
