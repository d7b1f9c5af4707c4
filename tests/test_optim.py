"""train/optim.py: what methods declare reaches the optimizer (no weight decay, static lr)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from train.optim import build_optimizer, build_schedule, phase_named_parameters  # noqa: E402
from train.recipe import Recipe  # noqa: E402


def _groups_of(opt, params):
    ids = {id(p): i for i, g in enumerate(opt.param_groups) for p in g["params"]}
    return [opt.param_groups[ids[id(p)]] for p in params]


def _optimizer(name, **recipe):
    p = zoo.create_pretrainer(name)
    r = Recipe(model=name, **recipe)
    opt = build_optimizer(r, "encoder", phase_named_parameters(p, "encoder"), p.no_weight_decay(), p.static_lr())
    return p, r, opt


def test_extrema_class_attention_cls_token_takes_no_weight_decay():
    p, _, opt = _optimizer("extrema_vit_tiny_patch4_32", optimizer="adamw", weight_decay=0.1)
    cls, qkv = p.objective.pool.cls_token, p.backbone.blocks[0].attn.qkv.weight
    assert cls.ndim == 3                      # the ndim < 2 rule alone would decay it
    g_cls, g_qkv = _groups_of(opt, [cls, qkv])
    assert g_cls["weight_decay"] == 0.0 and g_qkv["weight_decay"] == 0.1
    assert not p.backbone.pos_embed.requires_grad   # fixed sin-cos: never trained, never decayed


def test_mae_keeps_its_reference_weight_decay_on_the_cls_token():
    p, _, opt = _optimizer("mae_vit_tiny_patch4_32", optimizer="adamw", weight_decay=0.05)
    assert p.no_weight_decay() == set()
    assert _groups_of(opt, [p.backbone.cls_token])[0]["weight_decay"] == 0.05


def test_simsiam_predictor_stays_at_the_base_lr_through_warmup_and_cosine():
    # solo-learn's SimSiam and every SimSiam-ADIOS(-s) mark the predictor `static_lr`
    for name, objective in (("simsiam_resnet18", None), ("adios_resnet18", "simsiam"),
                            ("adios_s_resnet18", "simsiam")):
        kw = {"objective": objective} if objective else {}
        p = zoo.create_pretrainer(name, **kw)
        r = Recipe(model=name, lr=0.05, warmup_epochs=1, warmup_start_lr=0.003, **kw)
        opt = build_optimizer(r, "encoder", phase_named_parameters(p, "encoder"), p.no_weight_decay(), p.static_lr())
        sched = build_schedule(r, "encoder", opt, steps_per_epoch=10, total_steps=100)
        assert not opt.param_groups[0]["static_lr"]          # pretrain.py logs group 0 as the phase's lr
        pred = list(p.objective.predictor.parameters())
        assert all(g["lr"] == 0.05 for g in _groups_of(opt, pred))   # already before the first step
        proj = next(p.objective.projector.parameters())
        for step, expect_other in ((0, 0.003), (5, None), (50, None), (99, None)):
            sched.step_update(step)
            assert all(g["lr"] == 0.05 for g in _groups_of(opt, pred)), (name, step)
            g_proj = _groups_of(opt, [proj])[0]
            if expect_other is not None:
                assert abs(g_proj["lr"] - expect_other) < 1e-12
            else:
                assert g_proj["lr"] < 0.05
        assert _groups_of(opt, [p.backbone.conv1.weight])[0]["lr"] < 0.01   # the encoder follows the cosine
        if name.startswith("adios"):                         # the occluder's optimizer has no static group
            masker = build_optimizer(r, "masker", phase_named_parameters(p, "masker"), p.no_weight_decay(),
                                     p.static_lr())
            assert not any(g["static_lr"] for g in masker.param_groups)


def test_vit_tokens_decay_everywhere_but_extrema():
    """Only ExtreMA's reference exempts ViT tokens: MAE and AutoMAE (`add_weight_decay` without a
    skip list) and solo-learn / ADIOS (LARS exempts ndim-1 tensors only) decay every trainable one
    (cls_token; pos_embed where it trains)."""
    import warnings
    for name in ("mae_vit_tiny_patch4_32", "automae_vit_tiny_patch4_32", "adios_vit_tiny_patch4_32",
                 "simclr_vit_tiny_patch4_32", "randmask_vit_tiny_patch4_32"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")               # automae: random attention source
            p, _, opt = _optimizer(name, optimizer="adamw", weight_decay=0.05)
        assert p.no_weight_decay() == set(), name
        tokens = [t for t in (p.backbone.cls_token, p.backbone.pos_embed) if t is not None and t.requires_grad]
        assert tokens, name
        assert all(g["weight_decay"] == 0.05 for g in _groups_of(opt, tokens)), name


def test_simclr_has_no_static_groups():
    p, r, opt = _optimizer("simclr_resnet18", lr=0.3, warmup_epochs=1)
    assert not any(g["static_lr"] for g in opt.param_groups)
