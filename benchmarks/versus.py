"""Ours vs lightly, side by side: SimCLR, BYOL, SimSiam (timm resnet18) and MAE (timm
vit_tiny_patch4_32), same backbone, heads, batch, resolution, threads and input tensors.

Per method:
1. Equal losses. lightly's model is built around a copy of our backbone with our head widths
   (`peer_lightly.build`), then every weight of ours is copied into it (backbone, heads, BYOL's
   momentum branch, MAE's decoder). On the same inputs (and, for MAE, the same token mask) both
   losses are computed in fp32, training mode, and must agree up to float tolerance, after the
   one documented change of convention: our BYOL loss is `sum of both directions of 2 - 2cos`,
   lightly's `0.5 * (-cos - cos)`, so ours = 4 + 4 * lightly (the gradients scale by 4). The
   backbone gradients are compared too (largest difference relative to the largest gradient).
2. Step time, interleaved. Four variants take turns, round after round (ours fp32, theirs fp32,
   ours bf16, theirs bf16; a few timed steps each per round), after warm-up steps: median step
   time per variant. Reported ratios:
   - `ratio_fp32` = ours / theirs, both fp32 (target <= 1.05);
   - `ratio_bf16` = ours / theirs, both bf16 autocast + channels_last (target <= 1.05);
   - `speedup_default` = theirs fp32 / ours bf16 + channels_last: each library in its default
     precision (lightly's examples train in fp32; our recipes in bf16), target >= 1.5.
   Both sides step with SGD (momentum 0.9) over their trainable parameters; ours runs its full
   training step (masker draw for MAE, EMA update for BYOL), lightly's runs its example's step
   (momentum update, loss, backward, step).

Example:
    >>> from benchmarks.versus import compare
    >>> r = compare("simclr", batch=8, rounds=1, steps_per_round=1, warmup=1)   # doctest: +SKIP
    >>> r["loss_equal"]                                                          # doctest: +SKIP
    True
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from benchmarks import peer_lightly
from benchmarks.common import make_inputs, median, spread, to_format
from benchmarks.stepping import make_optimizers, train_step

ARCH = {"simclr": "resnet18", "byol": "resnet18", "simsiam": "resnet18", "mae": "vit_tiny_patch4_32"}
# ours = a + s * lightly, for the loss; gradients scale by s.
LOSS_MAP = {"simclr": (0.0, 1.0), "byol": (4.0, 4.0), "simsiam": (0.0, 1.0), "mae": (0.0, 1.0)}


def _linears(m: nn.Module) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


def dims_of(method: str, pretrainer: nn.Module) -> dict:
    """Our objective's head widths and hyper-parameters, for building lightly's side alike."""
    obj = pretrainer.objective
    if method == "mae":
        block = obj.decoder_blocks[0]
        return dict(decoder_embed_dim=obj.decoder_embed.out_features, decoder_depth=len(obj.decoder_blocks),
                    decoder_num_heads=block.attn.num_heads,
                    mlp_ratio=block.mlp.fc1.out_features / obj.decoder_embed.out_features,
                    mask_ratio=pretrainer.masker.mask_ratio, norm_pix_loss=obj.norm_pix_loss)
    proj = _linears(obj.projector)
    dims = dict(proj_hidden_dim=proj[0].out_features, proj_output_dim=proj[-1].out_features)
    if method == "simclr":
        dims["temperature"] = obj.temperature
    if method in ("byol", "simsiam"):
        dims["pred_hidden_dim"] = _linears(obj.predictor)[0].out_features
    if method == "byol":
        dims["base_tau"] = obj.base_tau
    return dims


@torch.no_grad()
def copy_head(src: nn.Module, dst: nn.Module) -> None:
    """Copy an MLP head's Linear and BatchNorm1d weights in order. A bias that `src` has and `dst`
    lacks is only allowed right before a BatchNorm (which cancels it in training mode)."""
    kinds = (nn.Linear, nn.BatchNorm1d)
    s = [m for m in src.modules() if isinstance(m, kinds)]
    d = [m for m in dst.modules() if isinstance(m, kinds)]
    if [type(m) for m in s] != [type(m) for m in d]:
        raise ValueError(f"head layouts differ: {[type(m).__name__ for m in s]} vs {[type(m).__name__ for m in d]}")
    for i, (a, b) in enumerate(zip(s, d)):
        if a.weight is not None and b.weight is not None:
            b.weight.copy_(a.weight)
        if b.bias is not None:
            b.bias.copy_(a.bias)
        elif a.bias is not None and not (i + 1 < len(s) and isinstance(s[i + 1], nn.BatchNorm1d)):
            raise ValueError(f"layer {i}: ours has a bias lightly lacks, not followed by BatchNorm")
        if isinstance(a, nn.BatchNorm1d):
            b.running_mean.copy_(a.running_mean)
            b.running_var.copy_(a.running_var)


@torch.no_grad()
def copy_weights(method: str, ours: nn.Module, theirs: nn.Module) -> None:
    """Make lightly's model compute exactly what ours computes."""
    obj = ours.objective
    if method == "mae":
        theirs.backbone.vit.load_state_dict(ours.backbone.state_dict())
        dec = theirs.decoder
        for name in ("decoder_embed", "decoder_blocks", "decoder_norm", "decoder_pred"):
            getattr(dec, name).load_state_dict(getattr(obj, name).state_dict())
        dec.mask_token.copy_(obj.mask_token)
        prefix = dec.decoder_pos_embed.shape[1] - obj.decoder_pos_embed.shape[1]
        dec.decoder_pos_embed.zero_()
        dec.decoder_pos_embed[:, prefix:] = obj.decoder_pos_embed
        return
    theirs.backbone.load_state_dict(ours.backbone.state_dict())
    copy_head(obj.projector, theirs.projection_head)
    if method in ("byol", "simsiam"):
        copy_head(obj.predictor, theirs.prediction_head)
    if method == "byol":
        theirs.backbone_momentum.load_state_dict(obj.teacher.state_dict())
        copy_head(obj.teacher_projector, theirs.projection_head_momentum)


def build_pair(method: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(our pretrainer, lightly's model with our weights) for a shared method."""
    import zoo  # noqa: F401
    from zoo.registry import create_pretrainer, get_method
    from benchmarks.pretrainers import factory_kwargs
    name = f"{method}_{ARCH[method]}"
    kwargs, _ = factory_kwargs(get_method(name), None, 32)
    torch.manual_seed(seed)
    ours = create_pretrainer(name, **kwargs).train()
    theirs = peer_lightly.build(method, copy.deepcopy(ours.backbone), dims_of(method, ours)).train()
    # lightly's side runs vanilla modules: our CPU kernel choices (zoo/kernels.py) are installed
    # on our side only, for its timed steps (`compare`, quality.py), as the training loop does
    assert not any("_conv_forward" in m.__dict__ or hasattr(m, "_zoo_fused_attn") for m in theirs.modules())
    copy_weights(method, ours, theirs)
    return ours, theirs


def _mae_mask(ours: nn.Module, x: torch.Tensor):
    """One token mask in both conventions: ours (B, 1, h, w) bool, lightly's idx_keep/idx_mask
    (class token at index 0, patches shifted by one)."""
    hidden = ours.masker(x)                                       # (B, 1, h, w) bool
    flat = hidden.flatten(1)
    B = x.shape[0]
    keep = (~flat).nonzero()[:, 1].view(B, -1) + 1
    idx_keep = torch.cat([torch.zeros(B, 1, dtype=keep.dtype), keep], 1)
    idx_mask = flat.nonzero()[:, 1].view(B, -1) + 1
    return hidden, idx_keep, idx_mask


def check_losses(method: str, ours: nn.Module, theirs: nn.Module, views, rtol: float = 1e-4) -> dict:
    """Both losses (fp32, training mode) and backbone gradients on the same inputs."""
    a, s = LOSS_MAP[method]
    ours.zero_grad(set_to_none=True)
    theirs.zero_grad(set_to_none=True)
    if method == "mae":
        hidden, idx_keep, idx_mask = _mae_mask(ours, views[0])
        l_ours = ours.objective(ours.backbone, views, [hidden])
        l_theirs = theirs.loss(views, idx_keep, idx_mask)
    else:
        l_ours = ours.objective(ours.backbone, views, None)
        l_theirs = theirs.loss(views)
    l_ours.backward()
    l_theirs.backward()
    theirs_bb = theirs.backbone.vit if method == "mae" else theirs.backbone
    g_o = torch.cat([p.grad.flatten() for p in ours.backbone.parameters() if p.grad is not None])
    g_t = torch.cat([p.grad.flatten() for p in theirs_bb.parameters() if p.grad is not None])
    grad_rel = float((g_o - s * g_t).abs().max() / g_o.abs().max().clamp_min(1e-12))
    if not bool(g_o.abs().max() > 0):
        raise RuntimeError(f"{method}: our backbone got no gradient; nothing to compare")
    l_ours, l_theirs = l_ours.detach(), l_theirs.detach()
    mapped = a + s * float(l_theirs)
    loss_rel = abs(float(l_ours) - mapped) / max(abs(float(l_ours)), 1e-12)
    ours.zero_grad(set_to_none=True)
    theirs.zero_grad(set_to_none=True)
    return dict(loss_ours=float(l_ours), loss_theirs=float(l_theirs), loss_theirs_mapped=mapped,
                loss_map=f"ours = {a:g} + {s:g} * lightly", loss_rel_diff=loss_rel,
                grad_rel_diff=grad_rel, loss_equal=loss_rel <= rtol and grad_rel <= 1e-3)


def compare(method: str, batch: int = 64, rounds: int = 6, steps_per_round: int = 2, warmup: int = 2,
            seed: int = 0, pair: tuple[nn.Module, nn.Module] | None = None) -> dict:
    """Loss equality and interleaved step-time ratios for one shared method (module docstring).
    `pair` = (ours, theirs) already built (default: `build_pair`)."""
    from zoo.kernels import use_fast_kernels
    ours, theirs = pair or build_pair(method, seed)
    views = make_inputs(batch, ours.num_views, 32, seed)
    equality = check_losses(method, ours, theirs, views)

    variants = {}
    for precision in ("fp32", "bf16"):
        o = use_fast_kernels(ours if precision == "fp32" else to_format(copy.deepcopy(ours), precision))
        t = theirs if precision == "fp32" else to_format(copy.deepcopy(theirs), precision)
        v = [to_format(x, precision) for x in views]
        o_opt = make_optimizers(o)
        t_opt = torch.optim.SGD([p for p in t.parameters() if p.requires_grad], lr=0.01,
                                momentum=0.9, weight_decay=1e-5)
        variants[f"ours_{precision}"] = lambda o=o, v=v, opt=o_opt, p=precision: train_step(o, v, opt, p)
        variants[f"theirs_{precision}"] = (lambda t=t, v=v, opt=t_opt, p=precision:
                                           peer_lightly.train_step(t, v, opt, p))
    order = ["ours_fp32", "theirs_fp32", "ours_bf16", "theirs_bf16"]
    times: dict[str, list[float]] = {k: [] for k in order}
    for k in order:
        for _ in range(warmup):
            variants[k]()
    for _ in range(rounds):
        for k in order:
            for _ in range(steps_per_round):
                t0 = time.perf_counter()
                variants[k]()
                times[k].append(time.perf_counter() - t0)
    med = {k: median(v) for k, v in times.items()}
    return dict(method=method, arch=ARCH[method], batch=batch, dims=dims_of(method, ours), **equality,
                step_s=med, step_min_s={k: min(v) for k, v in times.items()},
                step_spread={k: spread(v) for k, v in times.items()},
                images_per_s={k: batch / m for k, m in med.items()},
                repeats=rounds * steps_per_round,
                ratio_fp32=med["ours_fp32"] / med["theirs_fp32"],
                ratio_bf16=med["ours_bf16"] / med["theirs_bf16"],
                speedup_default=med["theirs_fp32"] / med["ours_bf16"])


def run(quick: bool = False, methods=peer_lightly.METHODS, batches=(128, 64)) -> dict:
    """Every shared method at each batch (128: lightly's own CIFAR-10 benchmark batch; 64)."""
    kw = dict(rounds=2, steps_per_round=1, warmup=1) if quick else {}
    out = {}
    for batch in ((16,) if quick else batches):
        for m in methods:
            try:
                out[f"{m} b{batch}"] = compare(m, batch=batch, **kw)
            except Exception as e:  # one missing method must not hide the others
                out[f"{m} b{batch}"] = dict(method=m, batch=batch, error=f"{type(e).__name__}: {e}")
    return out
