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
    for name in ("simsiam_resnet18", "adios_resnet18"):
        kw = {"objective": "simsiam"} if name.startswith("adios") else {}
        p = zoo.create_pretrainer(name, **kw)
        r = Recipe(model=name, lr=0.05, warmup_epochs=1, warmup_start_lr=0.003, **kw)
        opt = build_optimizer(r, "encoder", phase_named_parameters(p, "encoder"), p.no_weight_decay(), p.static_lr())
        sched = build_schedule(r, "encoder", opt, steps_per_epoch=10, total_steps=100)
        pred = next(p.objective.predictor.parameters())
        proj = next(p.objective.projector.parameters())
        for step, expect_other in ((0, 0.003), (50, None), (99, None)):
            sched.step_update(step)
            g_pred, g_proj = _groups_of(opt, [pred, proj])
            assert g_pred["lr"] == 0.05, (name, step)
            if expect_other is not None:
                assert abs(g_proj["lr"] - expect_other) < 1e-12
            else:
                assert g_proj["lr"] < 0.05
        assert _groups_of(opt, [p.backbone.conv1.weight])[0]["lr"] < 0.01   # the encoder follows the cosine


def test_simclr_has_no_static_groups():
    p, r, opt = _optimizer("simclr_resnet18", lr=0.3, warmup_epochs=1)
    assert not any(g["static_lr"] for g in opt.param_groups)
