"""HPM: Hard Patches Mining for Masked Image Modeling (Wang et al., CVPR 2023, arXiv 2304.05919).

Reference: Haochen-Wang409/HPM (commit c15ae90), a modification of MAE, run with
`--learning_loss --relative` (PRETRAIN.md, scripts/pretrain_*.sh). Read from
`models_mae_learn_loss.py` (model, mask generation, learning loss), `engine_pretrain.py` (the
step: EMA teacher, mask, losses) and `main_pretrain.py` (defaults, EMA, optimizer).

- Model: an MAE (encoder on the visible tokens, decoder 512 x 8 x 16 heads) with a second decoder
  branch, the **loss predictor**: as many blocks as the reconstructor, its own norm and
  Linear(Dd, p*p*C), averaged over the p*p*C outputs to one score per patch. Both branches start
  from the same decoder input (embedded visible tokens, mask tokens, fixed sin-cos positions).
- Teacher: an EMA copy of the whole model (encoder and both decoder branches), decay 0.999
  rising linearly to 0.9999 over the first 100 epochs (of 200 in PRETRAIN.md's command), updated
  after each optimizer step. It sees the FULL image (no mask, no gradient); its loss predictor
  scores every patch.
- Mask (`hard_patch_mask`): of the M = L - int(L * (1 - mask_ratio)) hidden patches, the
  int(M * hard_ratio) with the highest predicted loss are hidden, the rest of the hidden set is
  drawn uniformly from the other patches; hard_ratio grows from 0 (random masking) to 0.5
  ("easy to hard") over training.
- Loss: L_rec + L_learn, weight 1 (engine_pretrain.py l122). L_rec is MAE's MSE on the hidden
  patches, on pixel targets: `norm_pix_loss` defaults off (main_pretrain.py l59-61) and no
  official command sets it (../shared/FAITHFULNESS.md says norm-pix; the code does not).
  L_learn trains the student's loss predictor on the student's own per-patch reconstruction
  losses of the hidden patches, DETACHED: with `relative=True` (the official setting) the
  pairwise ranking loss of `relative_loss`; with False, MSE to the per-image standardised
  losses (`standardised_loss`, the reference's other branch). Only the target is isolated:
  L_learn trains the loss predictor and, through the shared decoder input (decoder_embed, mask
  token), the encoder, as in the reference; it never reaches the reconstructor or the
  reconstruction target. (The ranking loss reads the targets only through sign(), so there the
  detach changes no gradient; for the MSE branch it does.)

Exported backbone: the student MAE encoder (a plain timm ViT with its CLS token). The decoder,
the loss predictor and the EMA teacher stay with the pretrainer; `masker` holds no parameters of
its own (it reads the teacher the pretrainer owns), so publishing ships no masker file.

Example:
    >>> import torch, zoo
    >>> p = zoo.create_pretrainer("hpm_vit_tiny_patch4_32", decoder_depth=1)
    >>> x = [torch.randn(2, 3, 32, 32)]
    >>> p(x).backward()                     # L_rec + L_learn on the teacher's mask
    >>> p.update(progress=0.5)              # EMA teacher; the schedule: hard_ratio 0.25 next step
    >>> hidden = p.masker(x[0]); hidden.shape, int(hidden[0].sum())   # 48 of 64 hidden, 12 hard
    (torch.Size([2, 1, 8, 8]), 48)

Pairings no paper ran ("ours"): HPM on ViT-Tiny (32 and 96 px) and ViT-S; the paper reports
ViT-B/16 and ViT-L/16 (ViT-L is not registered: the zoo's MAE has no ViT-L).

Deviations from the reference, and why:
- Schedules by progress (the zoo's `update(progress)`, progress = step / total steps) instead of
  by epoch: hard_ratio = hard_ratio_final * progress, where the reference uses
  0.5 * (epoch + 1) / epochs held for the epoch (`generate_mask`, guide=True); the two differ by
  at most 0.5 / epochs (under one of the 147 hidden patches at 200 epochs). The EMA decay ramps
  continuously over the first `ema_ramp` of the run (0.5 = 100 of 200 epochs) where the
  reference sets it once per epoch (`engine_pretrain.py` l41-44).
- Vectorised mask: the reference loops over images in Python (argsort, np.delete,
  np.random.shuffle); here the hard patches get a noise value above every uniform draw and the
  top-M noise values are hidden. Same distribution: the hard set plus a uniform random subset
  of the rest. Ties in the predicted loss may break differently.
- The decoder sees [CLS, all L patches in grid order] (MAE's unshuffle, as zoo/objectives.py)
  where the reference orders [CLS, visible, mask tokens]; attention without a causal mask is
  order-equivariant and every token carries its position, so the outputs are the same.
- The ranking loss is written as -log(sigmoid(s * (p_j - p_i)) + 1e-6) with s = sign(t_j - t_i)
  over ordered pairs with t_i != t_j; the reference's two terms, -log(sigmoid(m) + 1e-6) and
  -log(1 - sigmoid(m) + 1e-6), are the two signs of this. A batch whose targets are all tied
  gives 0 here (the reference divides 0 by 0 and stops the run).
- `main_pretrain.py` l234 reads `args.byol`, which its parser does not define (an
  AttributeError as released); we follow the evident intent, an EMA model whenever
  `learning_loss` is on (l236: `ModelEma(model, decay=0.999)`).
- The teacher averages parameters only (zoo.layers.ema_); timm's ModelEma also averages
  buffers, and this model has none that change (the fixed sin-cos tables are constants).
- Losses and predicted-loss scores in fp32 under bf16 autocast (the network itself runs in bf16); the
  reference runs fp16 autocast with a loss scaler.
- Gradient clipping at total norm 5.0 (util/misc.py l256, called without clip_grad at
  engine_pretrain.py l125) is the paper recipe's `grad_clip: 5.0`; the CPU recipe leaves it off like
  its MAE control (mae_vit_tiny_patch4_32.fmnist.yaml), so the pair differs in the method only.
- The decoder-input and per-patch-loss lines of `zoo.objectives.MAE` are restated here
  (`decoder_tokens`, `per_patch_loss`) because `MAE.decode` / `MAE.forward` do not expose the
  decoder input or the per-patch losses that the loss predictor needs.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from zoo.backbones import create_backbone, ids_keep_from_mask, patch_grid, vit_tokens
from zoo.layers import ema_, xavier_init_
from zoo.methods.controls import MAE_ARCHS, MAEPretrainer
from zoo.objectives import MAE
from zoo.registry import register_method

PAPER = "HPM: Wang, Song, Fan, Wang, Xie, Zhang, CVPR 2023 (arXiv 2304.05919)"


# --------------------------------------------------------------------------------------------
# The loss-prediction objectives (models_mae_learn_loss.py `forward_learning_loss`)
# --------------------------------------------------------------------------------------------

def relative_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise ranking loss of predicted vs actual per-patch losses, (B, M) each -> scalar.

    For every ordered pair (i, j) of one image's patches with target_i != target_j: binary
    cross-entropy of sigmoid(pred_j - pred_i) against [target_j > target_i], i.e.
    -log(sigmoid(s * (pred_j - pred_i)) + eps) with s = sign(target_j - target_i); summed over
    pairs and images, divided by the number of such pairs. Only the ORDER of the targets
    matters (HPM's "relative relationship learning").
    """
    pred, target = pred.float(), target.float()
    s = torch.sign(target[:, None, :] - target[:, :, None])          # (B, i, j): sign(t_j - t_i)
    margin = pred[:, None, :] - pred[:, :, None]                     # (B, i, j): p_j - p_i
    valid = s != 0
    per_pair = -torch.log(torch.sigmoid(s * margin) + eps)
    return (per_pair * valid).sum() / valid.sum().clamp(min=1)


def standardised_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """MSE of pred to each image's targets standardised over its patches (unbiased var): the
    reference's `relative=False` branch."""
    target = target.float()
    mean, var = target.mean(1, keepdim=True), target.var(1, keepdim=True)
    return ((pred.float() - (target - mean) / (var + eps) ** 0.5) ** 2).mean()


# --------------------------------------------------------------------------------------------
# MAE + loss predictor
# --------------------------------------------------------------------------------------------

class HPMObjective(MAE):
    """MAE's decoder plus the loss predictor; loss L_rec + L_learn on one boolean mask (K = 1).

    `losses(backbone, x, hidden)` returns both terms; `forward` their sum.
    """

    def __init__(self, backbone: nn.Module, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, norm_pix_loss: bool = False,
                 relative: bool = True):
        super().__init__(backbone, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                         norm_pix_loss=norm_pix_loss)
        self.relative = relative
        # The loss predictor: the reconstructor's shape, its own weights (models_mae_learn_loss.py
        # l79-84); its output is averaged to one score per patch.
        self.losspred_blocks = nn.Sequential(*[
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
            for _ in range(decoder_depth)])
        self.losspred_norm = LayerNorm(decoder_embed_dim)
        self.losspred_pred = nn.Linear(decoder_embed_dim, self.decoder_pred.out_features)
        for m in (self.losspred_blocks, self.losspred_norm, self.losspred_pred):
            xavier_init_(m)

    def decoder_tokens(self, latent: Tensor, ids_keep: Tensor | None, num_prefix: int) -> Tensor:
        """Encoder tokens -> the decoder input both branches share: (N, prefix + L, Dd).

        ids_keep None: every patch is visible (the teacher's full view), no mask token.
        """
        y = self.decoder_embed(latent)
        prefix, visible = y[:, :num_prefix], y[:, num_prefix:]
        if ids_keep is None:
            full = visible
        else:
            N, L, Dd = visible.shape[0], self.decoder_pos_embed.shape[1], visible.shape[-1]
            full = self.mask_token.to(visible.dtype).expand(N, L, Dd)
            full = full.scatter(1, ids_keep[..., None].expand(-1, -1, Dd), visible)   # unshuffle
        return torch.cat([prefix, full + self.decoder_pos_embed.to(full.dtype)], 1)

    def reconstruct(self, tokens: Tensor, num_prefix: int) -> Tensor:
        """Decoder input -> pixel predictions for every patch (N, L, p*q*C)."""
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(tokens)))[:, num_prefix:]

    def predict_loss(self, tokens: Tensor, num_prefix: int) -> Tensor:
        """Decoder input -> predicted reconstruction loss of every patch (N, L)."""
        y = self.losspred_pred(self.losspred_norm(self.losspred_blocks(tokens)))
        return y[:, num_prefix:].float().mean(-1)     # fp32 scores: bf16 would tie many at the hard-set edge

    def per_patch_loss(self, images: Tensor, pred: Tensor) -> Tensor:
        """MSE of each patch's prediction (N, L, p*q*C) to its pixels (norm-pix if set): (N, L), fp32."""
        target = self.patchify(images).float()
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return ((pred.float() - target) ** 2).mean(-1)

    def losses(self, backbone: nn.Module, x: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W), hidden (B, L) bool (True = hidden) -> (L_rec, L_learn)."""
        B = x.shape[0]
        ids_keep = ids_keep_from_mask(hidden)                       # (B, L_keep)
        latent = vit_tokens(backbone, x, ids_keep)
        P = backbone.num_prefix_tokens
        tokens = self.decoder_tokens(latent, ids_keep, P)
        per_patch = self.per_patch_loss(x, self.reconstruct(tokens, P))          # (B, L)
        ids_hidden = hidden.nonzero()[:, 1].view(B, -1)            # (B, M): the reference's target[mask]
        actual = per_patch.gather(1, ids_hidden)
        predicted = self.predict_loss(tokens, P).float().gather(1, ids_hidden)
        rec = actual.mean()                                         # = mean over hidden patches and pixels
        target = actual.detach()                                    # isolation: engine_pretrain.py l108
        learn = relative_loss(predicted, target) if self.relative else standardised_loss(predicted, target)
        return rec, learn

    def forward(self, backbone: nn.Module, views: Sequence[Tensor],
                masks: Sequence[Tensor | None] | None = None) -> Tensor:
        """views [x]; masks [(B, 1, h, w) bool, True = hidden]."""
        if len(views) != 1 or masks is None or len(masks) != 1 or masks[0] is None:
            raise ValueError("HPM takes one view and one boolean patch mask: views=[x], masks=[(B, 1, h, w)]")
        hidden = masks[0]
        if hidden.dtype != torch.bool or hidden.dim() != 4 or hidden.shape[1] != 1 \
                or tuple(hidden.shape[-2:]) != self.grid:
            raise ValueError(f"HPM masks must be bool (B, 1, h, w) on the {self.grid} patch grid, "
                             f"got {hidden.dtype} {tuple(hidden.shape)}")
        rec, learn = self.losses(backbone, views[0], hidden.flatten(1))
        return rec + learn


# --------------------------------------------------------------------------------------------
# Mask generation (models_mae_learn_loss.py `generate_mask`)
# --------------------------------------------------------------------------------------------

def hard_patch_mask(scores: Tensor, num_hidden: int, num_hard: int,
                    generator: torch.Generator | None = None) -> Tensor:
    """scores (B, L) predicted losses -> hidden (B, L) bool, `num_hidden` True per row.

    The `num_hard` highest-scored patches are hidden; the other num_hidden - num_hard hidden
    patches are a uniform random subset of the rest. num_hard = 0 is plain random masking.
    """
    B, L = scores.shape
    if not 0 <= num_hard <= num_hidden <= L:
        raise ValueError(f"need 0 <= num_hard ({num_hard}) <= num_hidden ({num_hidden}) <= L ({L})")
    noise = torch.rand(B, L, device=scores.device, generator=generator)     # U[0, 1)
    if num_hard > 0:
        hard = scores.float().topk(num_hard, dim=1).indices
        noise = noise.scatter(1, hard, 2.0)                                   # above every draw
    hidden = noise.topk(num_hidden, dim=1).indices
    return torch.zeros(B, L, dtype=torch.bool, device=scores.device).scatter_(1, hidden, True)


class HardPatchMasker(nn.Module):
    """images -> (B, 1, h, w) bool masks from the EMA teacher's predicted losses on the full image.

    `hard_ratio` = hard_ratio_final * progress, the share of the hidden patches chosen by
    predicted loss. The progress is a persistent buffer (resumes with the checkpoint). The
    teacher is owned and registered by the pretrainer; the masker keeps a plain reference to it
    (not a submodule), so the teacher is saved once and the masker has no parameters to publish.
    """

    def __init__(self, grid: tuple[int, int], mask_ratio: float = 0.75, hard_ratio_final: float = 0.5):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if not 0.0 <= hard_ratio_final <= 1.0:
            raise ValueError(f"hard_ratio_final must be in [0, 1], got {hard_ratio_final}")
        self.grid = tuple(grid)
        L = self.grid[0] * self.grid[1]
        self.num_hidden = L - int(L * (1 - mask_ratio))            # the reference's L - len_keep
        if self.num_hidden >= L:
            raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch of {L}")
        self.hard_ratio_final = hard_ratio_final
        self.register_buffer("progress", torch.zeros(()))
        self._teacher: tuple = ()                                  # (backbone, objective): the pretrainer's

    @property
    def hard_ratio(self) -> float:
        return self.hard_ratio_final * min(max(float(self.progress), 0.0), 1.0)

    @property
    def num_hard(self) -> int:
        return int(self.num_hidden * self.hard_ratio)

    @torch.no_grad()
    def scores(self, images: Tensor) -> Tensor:
        """The teacher's predicted per-patch losses on the unmasked images: (B, L), fp32."""
        if not self._teacher:
            raise RuntimeError("HardPatchMasker has no teacher: build it through the hpm factory")
        backbone, objective = self._teacher
        P = backbone.num_prefix_tokens
        tokens = objective.decoder_tokens(vit_tokens(backbone, images), None, P)
        return objective.predict_loss(tokens, P).float()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        hidden = hard_patch_mask(self.scores(images), self.num_hidden, self.num_hard)
        return hidden.view(-1, 1, *self.grid)

    def penalty(self, masks: Tensor) -> Tensor:
        return masks.new_zeros((), dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# The pretrainer
# --------------------------------------------------------------------------------------------

def ema_decay(progress: float, start: float = 0.999, final: float = 0.9999, ramp: float = 0.5) -> float:
    """The teacher's EMA decay: linear from `start` to `final` over the first `ramp` of the run.

    engine_pretrain.py l41-44: 0.999 + epoch / 100 * (0.9999 - 0.999) for epoch < 100, then
    0.9999; ramp = 100 / epochs (0.5 for the README's 200 epochs, 0.125 for the 800-epoch script).
    """
    if ramp <= 0:
        return final
    return start + (final - start) * min(max(float(progress), 0.0) / ramp, 1.0)


class HPMPretrainer(MAEPretrainer):
    """ViT + HPMObjective, masked by HardPatchMasker reading an EMA teacher of both.

    One phase, "encoder" (backbone + decoder + loss predictor, one optimizer as the reference);
    the teacher takes no gradient and is updated by `update(progress)`.
    """

    def __init__(self, backbone: nn.Module, objective: HPMObjective, masker: HardPatchMasker,
                 ema_decay_start: float = 0.999, ema_decay_final: float = 0.9999, ema_ramp: float = 0.5):
        super().__init__(backbone, objective, masker)
        if patch_grid(backbone) != masker.grid:
            raise ValueError(f"masker grid {masker.grid} != backbone grid {patch_grid(backbone)}")
        # The EMA teacher starts as a copy of the initialised student (main_pretrain.py l236, timm ModelEma).
        self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(backbone),
                                      "objective": copy.deepcopy(objective)}).requires_grad_(False).eval()
        masker._teacher = (self.teacher["backbone"], self.teacher["objective"])
        self.ema_decay_start, self.ema_decay_final, self.ema_ramp = ema_decay_start, ema_decay_final, ema_ramp
        self.decay = ema_decay_start                                # last decay used by `update`

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()                  # ModelEma's copy stays in eval mode
        return self

    @torch.no_grad()
    def update(self, progress: float) -> None:
        """After each optimizer step: the schedule's progress, then the EMA teacher step."""
        self.masker.progress.fill_(float(progress))
        self.decay = ema_decay(progress, self.ema_decay_start, self.ema_decay_final, self.ema_ramp)
        ema_(self.teacher["backbone"], self.backbone, self.decay)
        ema_(self.teacher["objective"], self.objective, self.decay)


@register_method("hpm", archs=MAE_ARCHS, paper=PAPER,
                 ours_archs=tuple(a for a in MAE_ARCHS if a != "vit_base_patch16_224"),
                 paper_title="Hard Patches Mining for Masked Image Modeling (Wang et al., 2023)",
                 paper_id="arXiv:2304.05919", pretrainer=HPMPretrainer,
                 exports="the MAE encoder (the decoder and the loss predictor are not released)")
def hpm(arch: str, mask_ratio: float = 0.75, hard_ratio_final: float = 0.5, relative: bool = True,
        decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
        norm_pix_loss: bool = False, ema_decay_start: float = 0.999, ema_decay_final: float = 0.9999,
        ema_ramp: float = 0.5) -> HPMPretrainer:
    """HPM: MAE + loss predictor; masks hide the EMA teacher's predicted-hardest patches.

    Defaults are the official command's (PRETRAIN.md, `main_pretrain.py` defaults): mask 0.75,
    hard share 0 -> 0.5, relative loss, decoder 512 x 8 x 16 heads, pixel targets
    (norm_pix_loss off), EMA 0.999 -> 0.9999 over the first half of 200 epochs (ema_ramp 0.5;
    0.125 for the 800-epoch script).

    Example:
        >>> import torch, zoo
        >>> p = zoo.create_pretrainer("hpm_vit_tiny_patch4_32", decoder_depth=1, ema_ramp=0.125)
        >>> p([torch.randn(2, 3, 32, 32)]).shape
        torch.Size([])
    """
    backbone = create_backbone(arch)
    objective = HPMObjective(backbone, decoder_embed_dim, decoder_depth, decoder_num_heads,
                             norm_pix_loss=norm_pix_loss, relative=relative)
    masker = HardPatchMasker(patch_grid(backbone), mask_ratio, hard_ratio_final)
    return HPMPretrainer(backbone, objective, masker, ema_decay_start, ema_decay_final, ema_ramp)
