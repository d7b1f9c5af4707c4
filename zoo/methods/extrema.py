"""ExtreMA: extreme masking for siamese representation learning (Wu, Lai, Sun, Lin; TMLR 2023,
arXiv 2206.04667). Reference: microsoft/ExtreMA (`vits.py`, `lib/builder.py`, `main.py`).

BYOL with a masked student and a full-view EMA teacher:

- Encoder: a ViT *without* an input CLS token, fixed 2-D sin-cos positions; the self-attention
  blocks see patch tokens only. Two CaiT class-attention blocks (query from a learned CLS, keys and
  values from [CLS; tokens], layer scale init 0.1, no drop path) pool the tokens into the CLS; the
  representation is LN(CLS), LN being the encoder's final norm.
- Multi-masking: per image one random permutation gives K *disjoint* visible subsets of
  v = int(L * (1 - ratio)) tokens (80 % x 5 by default; 90 % x 8 is the paper's other setting).
  The student encodes the K*B short sequences as one batch.
- Teacher: EMA (0.996 -> 1, cosine, per step) of encoder + class-attention + projector; it sees the
  full other view, without gradient.
- Loss: ||q/|q| - k/|k|||^2 (= 2 - 2cos), ONE direction (masked student -> full teacher), mean
  over the batch, averaged over the K masks. Projector Linear(D, 4096)-LN-GELU-Linear(4096, 4096)-
  LN-GELU-Linear(4096, 256) on both branches, predictor Linear(256, 4096)-LN-GELU-Linear(4096, 256)
  on the student. Drop path 0.1 on the student encoder only. Xavier-uniform init (reference).

Exported backbone (DESIGN.md): the *momentum* encoder as a plain timm `VisionTransformer` with
`class_token=False, global_pool="avg", fc_norm=False` (`EXPORT_ARGS`): its forward applies the
momentum encoder's trained final LayerNorm to every patch token, then averages the tokens (no
norm after pooling). The class-attention blocks stay with the pretrainer (vanilla timm cannot
build them). `timm.create_model(timm_arch, num_classes=0, **entry.model_args)` loads its
state_dict exactly.

Example:
    >>> import torch, zoo
    >>> p = zoo.create_pretrainer("extrema_vit_tiny_patch4_32", proj_hidden_dim=64,
    ...                           pred_hidden_dim=64)            # small heads: a doc example only
    >>> views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    >>> p(views).backward(); p.update(progress=0.1)
    >>> p.exported_backbone()(views[0]).shape                     # mean-pooled momentum encoder
    torch.Size([2, 192])

Deviations from the reference, and why:
- Which view is masked: our Pretrainer masks view 2 and the teacher sees view 1 (the reference
  masks view 1); the two views are drawn identically, so this is the same loss. With a single
  view (the reference's spatial-only augmentation, x1 = x2) both branches take it.
- EMA timing: the reference updates the teacher inside the forward, just before the teacher pass,
  with the momentum of the current iteration; here `update(progress)` runs after each optimizer
  step (the zoo's loop). Same sequence of teacher weights, the schedule shifted by one step.
- The final LayerNorm lives in the timm ViT (`norm`, eps 1e-6) and is applied to the CLS only in
  training (LN is per token, so this equals the reference's LN([CLS; tokens])[:, 0]).
- Export: ExtreMA's own fine-tuning (BEiT code, mean pooling) drops the trained final norm and
  adds a fresh LayerNorm after pooling; we keep the trained norm on the tokens before pooling, so
  no untrained weight is released. ExtreMA's linear probe reads the CLS after class-attention,
  which vanilla timm cannot build; the zoo's kNN / linear evaluation reads the mean-pooled tokens.
- Arbitrary patch grids (the reference hard-codes 196 tokens).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from timm.layers import LayerNorm
from timm.models.cait import LayerScaleBlockClassAttn
from torch import Tensor, nn

from zoo.backbones import create_backbone, ids_keep_from_mask, is_vit, vit_tokens
from zoo.maskers import MultiMasker
from zoo.layers import cosine_momentum, ema_, fix_sincos_pos_embed_, mlp, xavier_init_
from zoo.losses import byol_loss
from zoo.pretrainer import Pretrainer
from zoo.registry import register_method

PAPER = "ExtreMA: Wu, Lai, Sun, Lin, TMLR 2023 (arXiv 2206.04667)"
EXPORT_ARGS = dict(class_token=False, global_pool="avg", fc_norm=False)
ARCHS = ("vit_tiny_patch4_32", "vit_small_patch16_224", "vit_base_patch16_224")


class ClassAttentionPool(nn.Module):
    """CaiT class-attention pooling: a learned CLS attends to [CLS; tokens]; tokens stay unchanged.

    Example:
        >>> pool = ClassAttentionPool(dim=192, num_heads=3)
        >>> pool(torch.randn(2, 10, 192)).shape
        torch.Size([2, 192])
    """

    def __init__(self, dim: int, num_heads: int, depth: int = 2, mlp_ratio: float = 4.0,
                 layer_scale_init: float = 0.1):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([
            LayerScaleBlockClassAttn(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm,
                                     init_values=layer_scale_init)
            for _ in range(depth)])

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (N, L, D), un-normed outputs of the SA blocks -> CLS (N, D), before the final norm."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        for block in self.blocks:
            cls = block(tokens, cls)
        return cls[:, 0]


class ExtreMAObjective(nn.Module):
    """Student heads (class-attention, projector, predictor) and the EMA teacher.

    Called as `objective(student_vit, views, masks)`: the view with (B, K, h, w) boolean masks goes
    to the student as K*B short sequences, the other view to the teacher in full.
    `teacher` is a timm ViT of the same architecture without drop path; it gets the student's
    weights here and is frozen.
    """

    def __init__(self, backbone: nn.Module, teacher: nn.Module, proj_hidden_dim: int = 4096,
                 proj_output_dim: int = 256, pred_hidden_dim: int = 4096, base_tau: float = 0.996,
                 class_attention_layers: int = 2, layer_scale_init: float = 0.1):
        super().__init__()
        if not is_vit(backbone) or backbone.num_prefix_tokens != 0:
            raise ValueError("ExtreMA needs a timm ViT without an input CLS token (class_token=False)")
        dim, heads = backbone.embed_dim, backbone.blocks[0].attn.num_heads
        self.pool = ClassAttentionPool(dim, heads, class_attention_layers,
                                       layer_scale_init=layer_scale_init)
        self.projector = mlp([dim, proj_hidden_dim, proj_hidden_dim, proj_output_dim], nn.LayerNorm, nn.GELU)
        self.predictor = mlp([proj_output_dim, pred_hidden_dim, proj_output_dim], nn.LayerNorm, nn.GELU)
        for module in (self.pool, self.projector, self.predictor):
            xavier_init_(module)                    # CLS N(0, 0.02); layer-scale gammas stay 0.1
        teacher.load_state_dict(backbone.state_dict())
        self.teacher = teacher.requires_grad_(False)
        self.teacher_pool = copy.deepcopy(self.pool).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_tau = base_tau
        self.tau = base_tau

    @staticmethod
    def represent(vit: nn.Module, pool: ClassAttentionPool, x: Tensor,
                  ids_keep: Tensor | None = None) -> Tensor:
        """LN(CLS) after class-attention over the (kept) tokens: (N, D)."""
        return vit.norm(pool(vit_tokens(vit, x, ids_keep, final_norm=False)))

    def forward(self, backbone: nn.Module, views: Sequence[Tensor],
                masks: Sequence[Tensor | None] | None = None) -> Tensor:
        views = list(views) * (2 if len(views) == 1 else 1)
        masks = list(masks) if masks is not None else [None] * len(views)
        masks += [None] * (len(views) - len(masks))
        if len(views) != 2:
            raise ValueError(f"ExtreMA takes one or two views, got {len(views)}")
        if all(m is not None for m in masks):
            raise ValueError("ExtreMA masks one view (student); the teacher sees the other in full")
        s = 1 if masks[1] is not None else 0                   # the student's (masked) view
        mask = masks[s]
        if mask is not None and mask.dtype != torch.bool:
            raise ValueError(f"ExtreMA masks are boolean patch masks (token drop), got {mask.dtype}")
        K = mask.shape[1] if mask is not None else 1
        ids_keep = ids_keep_from_mask(mask.flatten(0, 1)) if mask is not None else None
        q = self.predictor(self.projector(self.represent(backbone, self.pool, views[s], ids_keep)))
        with torch.no_grad():
            k = self.teacher_projector(self.represent(self.teacher, self.teacher_pool, views[1 - s]))
        # rows of q are image-major (b*K + k); the mean over all rows = mean over masks of the
        # per-mask batch means (equal batch per mask)
        return byol_loss(q, k.repeat_interleave(K, 0)).mean()

    @torch.no_grad()
    def update(self, backbone: nn.Module, progress: float) -> None:
        """After each step: EMA of encoder, class-attention and projector, tau 0.996 -> 1 cosine."""
        self.tau = cosine_momentum(progress, self.base_tau)
        ema_(self.teacher, backbone, self.tau)
        ema_(self.teacher_pool, self.pool, self.tau)
        ema_(self.teacher_projector, self.projector, self.tau)

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) that take no weight decay: the class-attention CLS token.
        The reference exempts `cls_token` and `pos_embed` (microsoft/ExtreMA `vits.py` l284-285,
        through `lib/builder.py` l112-113 into `add_weight_decay` at `main.py` l225); the position
        embedding is a fixed sin-cos table in both, never trained, so never decayed."""
        return {"pool.cls_token"}


class ExtreMAPretrainer(Pretrainer):
    """Student ViT + ExtreMAObjective + MultiMasker; exports the momentum encoder."""

    def forward(self, views: Sequence[Tensor], phase: str = "encoder") -> Tensor:
        views = list(views) * (2 if len(views) == 1 else 1)    # spatial-only aug: x1 = x2
        return super().forward(views, phase)

    def exported_backbone(self) -> nn.Module:
        return self.objective.teacher


def extrema_vit(arch: str, drop_path_rate: float = 0.0) -> nn.Module:
    """ExtreMA's encoder as a timm ViT: no CLS, mean pooling, fixed sin-cos positions, xavier init."""
    vit = create_backbone(arch, drop_path_rate=drop_path_rate, **EXPORT_ARGS)
    xavier_init_(vit)
    fix_sincos_pos_embed_(vit)
    return vit


@register_method("extrema", archs=ARCHS, paper=PAPER, ours_archs=("vit_tiny_patch4_32",),
                 export_args=EXPORT_ARGS, pretrainer=ExtreMAPretrainer,
                 paper_title="Extreme Masking for Learning Instance and Distributed Visual Representations "
                             "(Wu et al., TMLR 2023)", paper_id="arXiv:2206.04667",
                 exports="the momentum (EMA teacher) encoder, as a timm VisionTransformer with class_token=False and "
                         "mean pooling (ExtreMA's fine-tuning setup); the class-attention pooling blocks stay with "
                         "the pretrainer, since vanilla timm cannot build them")
def extrema(arch: str, mask_ratio: float = 0.8, num_masks: int = 5, disjoint: bool = True,
            proj_hidden_dim: int = 4096, proj_output_dim: int = 256, pred_hidden_dim: int = 4096,
            base_tau: float = 0.996, drop_path_rate: float = 0.1, class_attention_layers: int = 2,
            layer_scale_init: float = 0.1) -> Pretrainer:
    """ExtreMA: 80 % x 5 disjoint masks by default (90 % x 8: mask_ratio=0.9, num_masks=8)."""
    student = extrema_vit(arch, drop_path_rate)
    teacher = create_backbone(arch, **EXPORT_ARGS)             # no drop path on the teacher
    objective = ExtreMAObjective(student, teacher, proj_hidden_dim, proj_output_dim, pred_hidden_dim,
                                 base_tau, class_attention_layers, layer_scale_init)
    masker = MultiMasker(student.patch_embed.patch_size[0], mask_ratio, num_masks, disjoint)
    return ExtreMAPretrainer(student, objective, masker)
