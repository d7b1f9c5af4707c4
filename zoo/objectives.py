"""Base objectives: SimCLR, BYOL, SimSiam and MAE, with the ADIOS mask wiring (the losses are in
zoo/losses.py, the heads, EMA and position helpers in zoo/layers.py).

Each objective is an `nn.Module` that owns its heads (and EMA teacher, if any) and is called as

    loss = objective(backbone, views, masks=None)       # scalar
    objective.update(backbone, progress)                # EMA teachers only (BYOL)

`views` is a list of augmented batches (B, C, H, W); `masks[i]` is None or (B, K, h, w) and hides
`views[i]` (float: occlusion `x * (1 - m)`, bool: ViT token drop; see zoo/backbones.py). The K
masked copies of a view are encoded in ONE batched forward (`zoo.backbones.encode`).

Mask wiring (ADIOS, YugeTen/adios `src/methods/*_adios.py`). Copy k of a view is its k-th masked
copy when the view has masks, else the view itself; the loss is summed over the K copies:

- SimCLR:  sum_k NT-Xent(z(x1_k), z(x2_k)). ADIOS masks view 2 only: sum_k NT-Xent(z1, z2m_k).
- BYOL:    sum_k [byol(p(x1_k), zt(x2_k)) + byol(p(x2_k), zt(x1_k))]; the masked view feeds the
  online AND the momentum branch, as in the reference.
- SimSiam: per copy, the mean of the enabled term sets, summed over copies (`terms`):
  "mask" (p1m, z2), (p2m, z1); "symmetry" (p2, z1m), (p1, z2m); "no_mask" (p1, z2), (p2, z1);
  "both" (p1m, z2m), (p2m, z1m). The reference always enables "mask" and adds the others with
  flags (use_symmetry_mask, use_no_mask, use_both_mask); a set without "mask" is ours.
Without masks every objective is the plain two-view method (SimSiam: the mean of its two terms).

MAE (He et al., CVPR 2022; facebookresearch/mae `models_mae.py`) is the one-view objective: the
encoder sees only the visible tokens (no mask tokens), a light decoder (timm `Block`s, fixed 2-D
sin-cos positions, a mask token in the decoder only) predicts the pixels, and the loss is the
norm-pix MSE on the hidden patches only.

Example:
    >>> import torch, zoo.backbones as bb
    >>> from zoo.objectives import SimCLR
    >>> net = bb.create_backbone("resnet18")
    >>> simclr = SimCLR(net)
    >>> x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    >>> simclr(net, [x1, x2]).backward()
    >>> m2 = torch.rand(4, 3, 32, 32)                 # 3 soft masks for view 2 (ADIOS wiring)
    >>> simclr(net, [x1, x2], [None, m2]).shape
    torch.Size([])

Deviations from the references, and why:
- Batched copies: the K masked copies of a view go through the encoder and the heads as one batch
  of B*K (speed; DESIGN.md). A ResNet's BatchNorm, and the BatchNorm layers of the BYOL / SimSiam
  heads, therefore see the K copies together, where the reference runs K forwards of B images
  (batch statistics per mask). ViT backbones (LayerNorm) and SimCLR's BN-free head are unaffected.
- An unmasked view is encoded once and shared by the K copies; the reference recomputes it per
  mask. The values are the same; a ResNet's BN running statistics see it once instead of K times.
- SimSiam's projector ends in Linear(bias=False) + BN(affine=False); solo-learn/ADIOS keep a bias
  there with requires_grad=False. A constant bias before a mean-subtracting BN has no effect.
- MAE's sin-cos table is built with timm's `build_sincos2d_pos_embed` and reordered to MAE's
  channel layout [sin x, cos x, sin y, cos y] (x = column), so the values are MAE's exactly.
- MAE with K > 1 masked copies (ours; the reference draws one mask): the loss is the mean over the
  hidden patches of all copies.
- Every loss is computed in fp32 (inputs cast), whatever the autocast dtype.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from zoo.backbones import encode, ids_keep_from_mask, is_vit, patch_grid, vit_tokens
# The losses and layers live in zoo/losses.py and zoo/layers.py; their names stay importable from
# here, where they lived before the split, so that users' `from zoo.objectives import nt_xent` keeps
# working (tests/test_objectives_args.py checks they are the moved objects).
from zoo.layers import (cosine_momentum, ema_, fix_sincos_pos_embed_, mlp, sincos_pos_embed,  # noqa: F401
                        xavier_init_)
from zoo.losses import byol_loss, neg_cosine, nt_xent  # noqa: F401
from zoo.suggest import did_you_mean

__all__ = ["SimCLR", "BYOL", "SimSiam", "MAE", "OBJECTIVES", "OBJECTIVE_ARGS", "objective_args",
           "create_objective"]


# --------------------------------------------------------------------------------------------
# Mask wiring shared by the siamese objectives
# --------------------------------------------------------------------------------------------

def _num_copies(masks: Sequence[Tensor | None]) -> int:
    ks = {m.shape[1] for m in masks if m is not None}
    if len(ks) > 1:
        raise ValueError(f"masks of the two views have different numbers of copies K: {sorted(ks)}")
    return ks.pop() if ks else 1


def _check_views(views: Sequence[Tensor], masks: Sequence[Tensor | None] | None, name: str):
    if len(views) != 2:
        raise ValueError(f"{name} takes two views, got {len(views)}")
    masks = list(masks) if masks is not None else [None, None]
    if len(masks) != 2:
        raise ValueError(f"{name}: masks must align with the 2 views, got {len(masks)} entries")
    for v, m in zip(views, masks):
        if m is not None and (m.dim() != 4 or m.shape[0] != v.shape[0]):
            raise ValueError(f"{name}: a mask must be (B, K, h, w) with B = {v.shape[0]}, "
                             f"got {tuple(m.shape)}")
    return masks


def _embed(backbone: nn.Module, head: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    """head(features) of every copy of x: (B, K, D) with K = 1 when mask is None."""
    feats = encode(backbone, x, mask)
    feats = feats[:, None] if mask is None else feats          # (B, K, F)
    B, K = feats.shape[:2]
    return head(feats.flatten(0, 1)).view(B, K, -1)


def _copy(z: Tensor, K: int) -> Tensor:
    """(B, 1 or K, D) -> (B, K, D): an unmasked view stands for each of the K copies."""
    return z.expand(-1, K, -1)


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------

class SimCLR(nn.Module):
    """SimCLR (Chen et al., ICML 2020): NT-Xent between the projections of two views.

    projector Linear(F, 2048) - ReLU - Linear(2048, 256) and temperature 0.2, the ADIOS scripts'
    values (solo-learn's default temperature is 0.1).
    """

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 2048, proj_output_dim: int = 256,
                 temperature: float = 0.2, gather_distributed: bool = True):
        super().__init__()
        self.projector = mlp([backbone.num_features, proj_hidden_dim, proj_output_dim])
        self.temperature, self.gather_distributed = temperature, gather_distributed

    def forward(self, backbone: nn.Module, views: Sequence[Tensor],
                masks: Sequence[Tensor | None] | None = None) -> Tensor:
        masks = _check_views(views, masks, "SimCLR")
        K = _num_copies(masks)
        z1, z2 = (_copy(_embed(backbone, self.projector, x, m), K) for x, m in zip(views, masks))
        return sum(nt_xent(z1[:, k], z2[:, k], self.temperature, self.gather_distributed)
                   for k in range(K))


class BYOL(nn.Module):
    """BYOL (Grill et al., NeurIPS 2020): predict an EMA teacher's projection, both directions.

    projector Linear(F, 4096) - BN - ReLU - Linear(4096, 256); predictor Linear(256, h) - BN - ReLU -
    Linear(h, 256), h = 4096 (BYOL; the ADIOS scripts use 8192); teacher = deep copy of the backbone
    and projector, EMA tau cosine 0.99 -> 1 (`update`). loss = byol(p1, zt2) + byol(p2, zt1).
    """

    exported = "the online encoder (projector, predictor and momentum teacher are not released)"

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 4096, proj_output_dim: int = 256,
                 pred_hidden_dim: int = 4096, base_tau: float = 0.99):
        super().__init__()
        self.projector = mlp([backbone.num_features, proj_hidden_dim, proj_output_dim], nn.BatchNorm1d)
        self.predictor = mlp([proj_output_dim, pred_hidden_dim, proj_output_dim], nn.BatchNorm1d)
        self.teacher = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_tau = base_tau
        self.tau = base_tau                                      # last momentum used by `update`

    def forward(self, backbone: nn.Module, views: Sequence[Tensor],
                masks: Sequence[Tensor | None] | None = None) -> Tensor:
        masks = _check_views(views, masks, "BYOL")
        K = _num_copies(masks)
        online = nn.Sequential(self.projector, self.predictor)
        p1, p2 = (_copy(_embed(backbone, online, x, m), K) for x, m in zip(views, masks))
        with torch.no_grad():
            t1, t2 = (_copy(_embed(self.teacher, self.teacher_projector, x, m), K)
                      for x, m in zip(views, masks))
        per_copy = byol_loss(p1, t2) + byol_loss(p2, t1)       # (B, K)
        return per_copy.mean(0).sum()

    @torch.no_grad()
    def update(self, backbone: nn.Module, progress: float) -> None:
        """After each step: EMA of backbone and projector with tau = cosine_momentum(progress)."""
        self.tau = cosine_momentum(progress, self.base_tau)
        ema_(self.teacher, backbone, self.tau)
        ema_(self.teacher_projector, self.projector, self.tau)


SIMSIAM_TERMS = ("mask", "symmetry", "no_mask", "both")


class SimSiam(nn.Module):
    """SimSiam (Chen & He, CVPR 2021): predict the other view's stop-gradient projection.

    projector Linear(F, 2048) - BN - ReLU - Linear(2048, 2048) - BN - ReLU - Linear(2048, 2048) -
    BN(affine=False); predictor Linear(2048, 512) - BN - ReLU - Linear(512, 2048); D = -cos(p, sg(z)).
    `terms`: the ADIOS term sets (module docstring); per copy the mean of the enabled terms.
    """

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 2048, proj_output_dim: int = 2048,
                 pred_hidden_dim: int = 512, terms: Sequence[str] = ("mask",)):
        super().__init__()
        terms = tuple(terms)
        bad = [t for t in terms if t not in SIMSIAM_TERMS]
        if bad or not terms:
            raise ValueError(f"SimSiam terms must be a non-empty subset of {SIMSIAM_TERMS}, got {terms}")
        self.terms = terms
        self.projector = mlp([backbone.num_features, proj_hidden_dim, proj_hidden_dim, proj_output_dim],
                             nn.BatchNorm1d, hidden_bias=False,
                             out_norm=nn.BatchNorm1d(proj_output_dim, affine=False))
        self.predictor = mlp([proj_output_dim, pred_hidden_dim, proj_output_dim], nn.BatchNorm1d,
                             hidden_bias=False)

    def static_lr(self) -> set[str]:
        """Names (relative to this module) of the parameters that train at the fixed base lr, off
        the warmup-cosine schedule: the predictor (SimSiam's `--fix-pred-lr`, facebookresearch/simsiam;
        solo-learn's and ADIOS's `static_lr` groups). train/optim.py gives them their own groups."""
        return {name for name, _ in self.predictor.named_parameters(prefix="predictor")}

    def forward(self, backbone: nn.Module, views: Sequence[Tensor],
                masks: Sequence[Tensor | None] | None = None) -> Tensor:
        masks = _check_views(views, masks, "SimSiam")
        K = _num_copies(masks)
        need_full = any(t != "both" for t in self.terms)
        z, zm = [], []                                         # unmasked / masked projections
        for x, m in zip(views, masks):
            full = _embed(backbone, self.projector, x, None) if (need_full or m is None) else None
            masked = full if m is None else _embed(backbone, self.projector, x, m)
            z.append(full)
            zm.append(_copy(masked, K))
        B = views[0].shape[0]
        p = [self.predictor(t.flatten(0, 1)).view(B, -1, t.shape[-1]) if t is not None else None
             for t in z]
        pm = [self.predictor(t.flatten(0, 1)).view(B, K, -1) for t in zm]
        pairs = {"mask": [(pm[0], z[1]), (pm[1], z[0])],
                 "symmetry": [(p[1], zm[0]), (p[0], zm[1])],
                 "no_mask": [(p[0], z[1]), (p[1], z[0])],
                 "both": [(pm[0], zm[1]), (pm[1], zm[0])]}
        losses = [neg_cosine(_copy(a, K), _copy(b, K)).mean(0)   # (K,) per term
                  for t in self.terms for a, b in pairs[t]]
        return torch.stack(losses).mean(0).sum()


class MAE(nn.Module):
    """MAE (He et al., CVPR 2022): reconstruct the hidden patches from the visible ones.

    Encoder: the timm ViT on the visible tokens only (`zoo.backbones.vit_tokens`; no mask tokens).
    Decoder: Linear(D, Dd), mask token, fixed 2-D sin-cos positions, `decoder_depth` timm Blocks
    (Dd = 512, depth 8, 16 heads in the paper), LayerNorm, Linear(Dd, p*p*C). Loss: MSE on the
    hidden patches only, each target patch normalised by its own mean and variance
    (`norm_pix_loss`, var unbiased, eps 1e-6, as the reference).

    init_encoder=True gives the backbone MAE's encoder init: fixed sin-cos positions (CLS row 0,
    frozen) and xavier-uniform weights. The decoder always gets MAE's init.
    """

    def __init__(self, backbone: nn.Module, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, norm_pix_loss: bool = True,
                 init_encoder: bool = True):
        super().__init__()
        if not is_vit(backbone):
            raise ValueError(f"MAE needs a ViT backbone, got {type(backbone).__name__}")
        self.grid = patch_grid(backbone)
        self.patch_size = tuple(backbone.patch_embed.patch_size)
        self.in_chans = backbone.patch_embed.proj.in_channels
        self.norm_pix_loss = norm_pix_loss
        self.decoder_embed = nn.Linear(backbone.embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(self.grid, decoder_embed_dim)[None],
                             persistent=False)
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
            for _ in range(decoder_depth)])
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size[0] * self.patch_size[1] * self.in_chans)
        xavier_init_(self)
        if init_encoder:
            xavier_init_(backbone)
            fix_sincos_pos_embed_(backbone)

    def patchify(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, L, p*q*C), MAE's order (row-major patches; pixel rows, cols, channel)."""
        B, C = images.shape[:2]
        (h, w), (p, q) = self.grid, self.patch_size
        x = images.reshape(B, C, h, p, w, q)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(B, h * w, p * q * C)

    def forward(self, backbone: nn.Module, views: Sequence[Tensor],
                masks: Sequence[Tensor | None] | None = None, gate: Tensor | None = None) -> Tensor:
        """views [x] (B, C, H, W); masks [hidden] (B, K, h, w) bool, True = hidden; gate (B, L)."""
        if len(views) != 1 or masks is None or len(masks) != 1 or masks[0] is None:
            raise ValueError("MAE takes one view and one boolean patch mask: views=[x], masks=[(B, K, h, w)]")
        x, hidden = views[0], masks[0]
        if hidden.dtype != torch.bool or tuple(hidden.shape[-2:]) != self.grid:
            raise ValueError(f"MAE masks must be bool on the {self.grid} patch grid, got "
                             f"{hidden.dtype} {tuple(hidden.shape)}")
        B, K = hidden.shape[:2]
        hidden = hidden.flatten(0, 1).flatten(1)                   # (B*K, L)
        ids_keep = ids_keep_from_mask(hidden)                       # (B*K, L_keep)
        latent = vit_tokens(backbone, x, ids_keep, gate)            # (B*K, prefix + L_keep, D)
        pred = self.decode(latent, ids_keep, backbone.num_prefix_tokens)
        target = self.patchify(x).float().repeat_interleave(K, 0)   # (B*K, L, p*q*C)
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - target) ** 2).mean(-1)        # (B*K, L)
        w = hidden.float()
        return (per_patch * w).sum() / w.sum()

    def decode(self, latent: Tensor, ids_keep: Tensor, num_prefix: int) -> Tensor:
        """Encoder tokens of the visible patches -> pixel predictions for every patch (N, L, p*q*C)."""
        y = self.decoder_embed(latent)
        prefix, visible = y[:, :num_prefix], y[:, num_prefix:]
        N, L, Dd = visible.shape[0], self.decoder_pos_embed.shape[1], visible.shape[-1]
        full = self.mask_token.to(visible.dtype).expand(N, L, Dd)
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, Dd), visible)   # unshuffle
        full = full + self.decoder_pos_embed.to(full.dtype)
        y = self.decoder_norm(self.decoder_blocks(torch.cat([prefix, full], 1)))  # CLS: position 0
        return self.decoder_pred(y[:, num_prefix:])


# --------------------------------------------------------------------------------------------
# Building by name (the siamese bases that ADIOS and the mask controls take)
# --------------------------------------------------------------------------------------------

OBJECTIVES = {"simclr": SimCLR, "byol": BYOL, "simsiam": SimSiam}
# The one list of the knobs a method passes to its base objective (create_objective; the method
# factories' **objective_args; recipes' model_args), as the constructors name them, except
# SimSiam's `terms`, spelt `simsiam_terms` beside a method's own arguments (`_KEYWORD`). The
# defaults are the constructors' (`objective_args`).
OBJECTIVE_ARGS = {"simclr": ("proj_hidden_dim", "proj_output_dim", "temperature"),
                  "byol": ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "base_tau"),
                  "simsiam": ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "simsiam_terms")}
_KEYWORD = {"simsiam_terms": "terms"}


def _unknown_objective(name: str) -> ValueError:
    return ValueError(f"Unknown objective {name!r}.{did_you_mean(name, OBJECTIVES, n=2)} "
                      f"Known: {', '.join(OBJECTIVES)}.")


def objective_args(name: str) -> dict:
    """The knobs of base objective `name` with their defaults, read from its constructor.

    Example:
        >>> objective_args("simclr")
        {'proj_hidden_dim': 2048, 'proj_output_dim': 256, 'temperature': 0.2}
    """
    if name not in OBJECTIVES:
        raise _unknown_objective(name)
    params = inspect.signature(OBJECTIVES[name]).parameters
    return {knob: params[_KEYWORD.get(knob, knob)].default for knob in OBJECTIVE_ARGS[name]}


def create_objective(name: str, backbone: nn.Module, **knobs) -> nn.Module:
    """A siamese base objective by name, with the knobs of `OBJECTIVE_ARGS[name]`; None keeps
    that objective's default.

    A knob the named objective does not have is an error (e.g. `temperature` for BYOL).

    Example:
        >>> import zoo.backbones as bb
        >>> obj = create_objective("byol", bb.create_backbone("resnet18"), pred_hidden_dim=8192)
        >>> obj.predictor[0].out_features
        8192
    """
    if name not in OBJECTIVES:
        raise _unknown_objective(name)
    given = {k: v for k, v in knobs.items() if v is not None}
    foreign = sorted(set(given) - set(OBJECTIVE_ARGS[name]))
    if foreign:
        raise ValueError(f"objective {name!r} has no option {', '.join(foreign)};"
                         f"{did_you_mean(foreign[0], OBJECTIVE_ARGS[name])} "
                         f"its options: {', '.join(sorted(OBJECTIVE_ARGS[name]))}")
    return OBJECTIVES[name](backbone, **{_KEYWORD.get(k, k): v for k, v in given.items()})
