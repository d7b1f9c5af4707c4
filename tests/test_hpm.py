"""HPM (Hard Patches Mining, Wang et al., CVPR 2023): loss-prediction objectives, hard-patch mask
selection and its schedule, the EMA teacher, gradient isolation, recipes, registry.

Reference: Haochen-Wang409/HPM at commit c15ae9077160b7940957f1423071d84044e41c8b (file:line
cited at each value).
"""
import copy
import math
from pathlib import Path

import pytest
import torch

import zoo
import zoo.methods.hpm  # noqa: F401  (registers hpm_*; zoo/methods/__init__.py imports it once landed)
from zoo.backbones import create_backbone, ids_keep_from_mask, vit_tokens
from zoo.methods.hpm import (HardPatchMasker, HPMObjective, HPMPretrainer, ema_decay, hard_patch_mask,
                             relative_loss, standardised_loss)
from zoo.objectives import MAE
from zoo.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
TINY = "hpm_vit_tiny_patch4_32"


def _tiny(**kwargs):
    torch.manual_seed(0)
    kwargs = {"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2, **kwargs}
    return zoo.create_pretrainer(TINY, **kwargs)


def _images(n=2, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- loss prediction

def test_relative_loss_hand_computed():
    eps = 1e-6
    # two patches, patch 1 harder; equal predictions: each ordered pair costs -log(0.5 + eps)
    got = relative_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 2.0]]))
    assert math.isclose(got.item(), -math.log(0.5 + eps), rel_tol=1e-6)
    # predictions ln 3 apart in the right order: sigmoid(ln 3) = 0.75 for both ordered pairs
    got = relative_loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[1.0, 2.0]]))
    assert math.isclose(got.item(), -math.log(0.75 + eps), rel_tol=1e-6)
    # the wrong order costs -log(0.25 + eps); a tied pair (patches 0 and 2) is not counted
    got = relative_loss(torch.tensor([[math.log(3.0), 0.0, 5.0]]), torch.tensor([[1.0, 2.0, 1.0]]))
    s = lambda v: 1 / (1 + math.exp(-v))                                     # noqa: E731
    # pairs (0, 1), (1, 0): wrong order by ln 3; pairs (2, 1), (1, 2): wrong order by 5
    pairs = [-math.log(s(-math.log(3.0)) + eps)] * 2 + [-math.log(s(0.0 - 5.0) + eps)] * 2
    assert math.isclose(got.item(), sum(pairs) / 4, rel_tol=1e-6)


def test_relative_loss_matches_the_reference_form_pair_by_pair():
    """models_mae_learn_loss.py l307-317, written out pair by pair: positive pairs (t_j > t_i)
    -log(sigmoid(p_j - p_i) + 1e-6), negative pairs -log(1 - sigmoid(p_j - p_i) + 1e-6), summed over
    images and pairs, divided by the count of non-tied pairs of the whole batch."""
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 6), generator=g).double()                # ties on purpose
    total, count = 0.0, 0
    for b in range(3):
        for i in range(6):
            for j in range(6):
                m = 1 / (1 + math.exp(-(pred[b, j] - pred[b, i]).item()))
                if target[b, j] > target[b, i]:
                    total, count = total - math.log(m + 1e-6), count + 1
                elif target[b, j] < target[b, i]:
                    total, count = total - math.log(1 - m + 1e-6), count + 1
    assert count > 0
    assert math.isclose(relative_loss(pred, target).item(), total / count, rel_tol=1e-5)


def test_relative_loss_sees_only_the_order_of_the_targets():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 7, generator=g), torch.rand(2, 7, generator=g)
    base = relative_loss(pred, target)
    torch.testing.assert_close(relative_loss(pred, torch.exp(5 * target) + 3), base)   # monotone map
    perm = torch.randperm(7, generator=g)
    torch.testing.assert_close(relative_loss(pred[:, perm], target[:, perm]), base)
    # predictions in the targets' order cost less than the reversed order
    assert relative_loss(10 * target, target) < base < relative_loss(-10 * target, target)


def test_standardised_loss_hand_computed():
    # targets 1, 2, 3: mean 2, unbiased var 1 -> standardised (-1, 0, 1) / sqrt(1 + 1e-6)
    got = standardised_loss(torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 3.0]]))
    assert math.isclose(got.item(), (2 / 3) / (1 + 1e-6), rel_tol=1e-6)


# ---------------------------------------------------------------------------- mask selection

def test_hard_patch_mask_hides_the_top_scored_and_draws_the_rest_uniformly():
    g = torch.Generator().manual_seed(3)
    B, L, hidden_n, hard_n = 400, 64, 48, 12
    scores = torch.rand(B, L, generator=g)
    hidden = hard_patch_mask(scores, hidden_n, hard_n, generator=g)
    assert hidden.dtype == torch.bool and (hidden.sum(1) == hidden_n).all()
    order = scores.argsort(1, descending=True)
    top = hidden.gather(1, order[:, :hard_n])
    rest = hidden.gather(1, order[:, hard_n:])
    assert top.all()                                             # the predicted-hardest are hidden
    # the other 36 hidden patches: uniform over the 52 others, rate 36/52 for each rank
    rate = rest.float().mean(0)
    assert (rate - 36 / 52).abs().max() < 0.12 and rest.float().mean().sub(36 / 52).abs() < 0.01
    # num_hard = 0: plain random masking, the top-scored patches hidden at the mask ratio
    hidden0 = hard_patch_mask(scores, hidden_n, 0, generator=g)
    assert abs(hidden0.gather(1, order[:, :hard_n]).float().mean().item() - 0.75) < 0.03


@pytest.mark.parametrize("progress,hard", [(0.0, 0), (0.5, 12), (1.0, 24)])
def test_masker_hides_the_predicted_hardest_in_the_scheduled_share(monkeypatch, progress, hard):
    """L = 64, mask 0.75: M = 64 - int(64 * 0.25) = 48 hidden; int(48 * 0.5 * progress) of them by
    predicted loss (models_mae_learn_loss.py l261, l270, l273-286)."""
    p = _tiny()
    if progress:
        p.update(progress)                                      # the pretrainer drives the schedule
    assert p.masker.num_hidden == 48 and p.masker.num_hard == hard
    assert math.isclose(p.masker.hard_ratio, 0.5 * progress)
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(300, 64, generator=g)
    monkeypatch.setattr(p.masker, "scores", lambda images: scores)
    hidden = p.masker(torch.zeros(300, 3, 32, 32)).flatten(1)
    assert (hidden.sum(1) == 48).all()
    order = scores.argsort(1, descending=True)
    ranked = hidden.gather(1, order).float()                    # column r: the r-th hardest patch
    assert ranked[:, :hard].all()
    # beyond the hard set the hidden patches are random: the next ranks are sometimes visible, and
    # the hidden set has exactly `hard` guaranteed patches above the uniform rate
    nxt = ranked[:, hard:hard + 12].mean().item()
    assert abs(nxt - (48 - hard) / (64 - hard)) < 0.05


def test_scores_come_from_the_ema_teacher_on_the_full_image():
    p = _tiny()
    with torch.no_grad():                                       # teacher != student from here on
        for q in p.teacher.parameters():
            q.add_(0.05 * torch.randn_like(q))
    x = _images()
    got = p.masker.scores(x)
    t_vit, t_obj = p.teacher["backbone"], p.teacher["objective"]
    with torch.no_grad():                                       # independent path: timm's own forward
        tokens = t_vit.forward_features(x)                      # all 64 patches + CLS, normed
        y = t_obj.decoder_embed(tokens)
        y = torch.cat([y[:, :1], y[:, 1:] + t_obj.decoder_pos_embed], 1)
        for blk in t_obj.losspred_blocks:
            y = blk(y)
        want = t_obj.losspred_pred(t_obj.losspred_norm(y))[:, 1:].mean(-1)
    assert got.shape == (2, 64) and not got.requires_grad
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():                                       # the student does not score
        for q in p.backbone.parameters():
            q.mul_(0.0)
    torch.testing.assert_close(p.masker.scores(x), got)


def test_teacher_is_the_ema_of_the_student_with_the_scheduled_decay():
    # engine_pretrain.py l41-44: 0.999 + epoch / 100 * (0.9999 - 0.999) below epoch 100 of 200
    assert math.isclose(ema_decay(0.0), 0.999)
    assert math.isclose(ema_decay(0.25), 0.999 + 0.5 * 0.0009)            # epoch 50
    assert math.isclose(ema_decay(0.5), 0.9999) and math.isclose(ema_decay(0.9), 0.9999)
    assert math.isclose(ema_decay(0.0625, ramp=0.125), 0.999 + 0.5 * 0.0009)  # 800 epochs: epoch 50
    p = _tiny(ema_decay_start=0.9, ema_decay_final=0.99, ema_ramp=0.5)
    # the teacher starts as the initialised student (main_pretrain.py l236: ModelEma of the model)
    twins = dict(p.teacher.named_parameters())
    for name, q in [*(("backbone." + n, q) for n, q in p.backbone.named_parameters()),
                    *(("objective." + n, q) for n, q in p.objective.named_parameters())]:
        assert torch.equal(twins[name], q), name
    student = p.objective.losspred_pred.weight
    teacher = p.teacher["objective"].losspred_pred.weight
    with torch.no_grad():
        student.fill_(1.0)
        teacher.fill_(0.0)
    p.update(0.25)                                               # decay 0.945
    torch.testing.assert_close(teacher, torch.full_like(teacher, 1 - 0.945))
    assert math.isclose(p.decay, 0.945) and math.isclose(float(p.masker.progress), 0.25)
    # every trainable student tensor has its teacher twin, moved by the same rule
    s_vit, t_vit = p.backbone.blocks[0].attn.qkv.weight, p.teacher["backbone"].blocks[0].attn.qkv.weight
    before_t, before_s = t_vit.detach().clone(), s_vit.detach().clone()
    p.update(1.0)
    torch.testing.assert_close(t_vit, 0.99 * before_t + 0.01 * before_s)


# ---------------------------------------------------------------------------- gradient isolation

def _grads(module):
    return [q.grad for q in module.parameters() if q.requires_grad]


def _touched(module):
    return any(g is not None and g.abs().sum() > 0 for g in _grads(module))


@pytest.mark.parametrize("relative", [True, False])
def test_learning_loss_reaches_the_loss_predictor_and_encoder_but_not_the_reconstructor(relative):
    """engine_pretrain.py l105-110: the target `loss_outs['matrix']` is detached; the rest of the
    graph is one model with one optimizer, so L_learn also trains the shared trunk (encoder,
    decoder_embed, mask token) that the loss predictor reads. The reconstructor is not even in
    L_learn's graph (grad None): the ranking loss reads the targets only through sign(), whose
    gradient is 0, so a zero gradient would not show a missing detach; the MSE variant would."""
    p = _tiny(relative=relative)
    obj, x = p.objective, _images()
    hidden = p.masker(x).flatten(1)
    rec, learn = obj.losses(p.backbone, x, hidden)
    learn.backward(retain_graph=True)
    assert all(g is None for m in (obj.decoder_blocks, obj.decoder_norm, obj.decoder_pred) for g in _grads(m))
    assert all(_touched(m) for m in (obj.losspred_blocks, obj.losspred_norm, obj.losspred_pred))
    assert _touched(p.backbone) and _touched(obj.decoder_embed) and obj.mask_token.grad.abs().sum() > 0
    p.zero_grad(set_to_none=True)
    rec.backward()                                              # and L_rec never trains the predictor
    assert not any(_touched(m) for m in (obj.losspred_blocks, obj.losspred_norm, obj.losspred_pred))
    assert _touched(obj.decoder_pred) and _touched(p.backbone)


def test_full_step_gives_the_teacher_and_the_mask_no_gradient():
    p = _tiny()
    p.train()
    assert not p.teacher.training and not any(q.requires_grad for q in p.teacher.parameters())
    loss = p([_images()])
    loss.backward()
    assert all(q.grad is None for q in p.teacher.parameters())
    names = {n for n, q in p.named_parameters() if q.requires_grad and q.grad is None}
    assert not names, sorted(names)[:5]                         # the whole student is trained
    assert {id(q) for q in p.parameters_of("encoder")} == \
        {id(q) for n, q in p.named_parameters() if q.requires_grad}
    assert list(p.masker.parameters()) == []                    # nothing of the masker is published


def test_reconstruction_term_is_maes_loss():
    for norm_pix in (False, True):
        torch.manual_seed(0)
        backbone = create_backbone("vit_tiny_patch4_32")
        obj = HPMObjective(backbone, 32, 1, 2, norm_pix_loss=norm_pix)
        mae = MAE(copy.deepcopy(backbone), 32, 1, 2, norm_pix_loss=norm_pix, init_encoder=False)
        missing = mae.load_state_dict(obj.state_dict(), strict=False)
        assert not missing.missing_keys
        x = _images()
        hidden = hard_patch_mask(torch.rand(2, 64), 48, 0)
        rec, _ = obj.losses(backbone, x, hidden)
        want = mae(backbone, [x], [hidden.view(2, 1, 8, 8)])
        torch.testing.assert_close(rec, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(obj(backbone, [x], [hidden.view(2, 1, 8, 8)]),
                                   rec + relative_loss(*_predicted_and_actual(obj, backbone, x, hidden)))


def _predicted_and_actual(obj, backbone, x, hidden):
    """The hidden patches' predicted and actual losses, picked by boolean indexing (the reference's
    `target[mask]`, models_mae_learn_loss.py l233)."""
    ids_keep = ids_keep_from_mask(hidden)
    with torch.no_grad():
        tokens = obj.decoder_tokens(vit_tokens(backbone, x, ids_keep), ids_keep, 1)
        actual = obj.per_patch_loss(x, obj.reconstruct(tokens, 1))[hidden].view(2, -1)
        predicted = obj.predict_loss(tokens, 1)[hidden].view(2, -1)
    return predicted, actual


# ---------------------------------------------------------------------------- pretrainer, registry

def test_one_training_step_on_tiny_inputs():
    p = _tiny()
    p.train()
    opt = torch.optim.AdamW(p.parameters_of("encoder"), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    teacher_before = p.teacher["backbone"].blocks[0].mlp.fc1.weight.detach().clone()
    x = [_images(4)]
    loss = p(x, phase="encoder")
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    p.update(0.5)
    assert not torch.equal(p.teacher["backbone"].blocks[0].mlp.fc1.weight, teacher_before)
    assert p.masker.num_hard == 12 and p.masker(x[0]).shape == (4, 1, 8, 8)
    assert torch.isfinite(p(x))
    with pytest.raises(ValueError, match="no phase 'masker'"):
        p(x, phase="masker")
    assert p.exported_backbone() is p.backbone


def test_progress_is_resumed_and_a_copy_masks_with_its_own_teacher():
    p = _tiny()
    p.update(0.5)
    q = _tiny()
    q.load_state_dict(p.state_dict())                            # what a resume restores
    assert q.masker.num_hard == 12 and "masker.progress" in p.state_dict()
    c = copy.deepcopy(p)
    assert c.masker._teacher[0] is c.teacher["backbone"] and c.masker._teacher[1] is c.teacher["objective"]
    x = _images()
    torch.testing.assert_close(c.masker.scores(x), p.masker.scores(x))


def test_registry_names_and_facts():
    names = sorted(n for n in METHODS if n.startswith("hpm_"))
    mae_archs = sorted(METHODS[n].arch for n in METHODS if n.startswith("mae_"))
    assert names == sorted(f"hpm_{a}" for a in mae_archs)
    assert TINY in names and "hpm_vit_base_patch16_224" in names
    e = METHODS["hpm_vit_base_patch16_224"]
    assert e.paper_id == "arXiv:2304.05919" and "Hard Patches Mining" in e.paper_title
    assert e.phases == ("encoder",) and not e.objectives and not e.ours
    assert e.num_views == 1 and e.masked_views() == (0,)               # one view, the one masked
    assert e.phase_modules == {"encoder": ("backbone", "objective")}   # never the teacher
    assert e.describe_export() == "the MAE encoder (the decoder and the loss predictor are not released)"
    assert all(METHODS[n].ours for n in names if n != "hpm_vit_base_patch16_224")
    assert (e.timm_arch, e.model_args) == (METHODS["mae_vit_base_patch16_224"].timm_arch,
                                           METHODS["mae_vit_base_patch16_224"].model_args)
    assert isinstance(_tiny(), HPMPretrainer) and isinstance(_tiny().masker, HardPatchMasker)


def test_paper_size_parameter_counts_on_meta():
    """ViT-B/16 + decoder 512 x 8 + loss predictor 512 x 8 (models_mae_learn_loss.py l63-84), and an
    EMA copy of all of it (main_pretrain.py l236)."""
    with torch.device("meta"):
        p = zoo.create_pretrainer("hpm_vit_base_patch16_224")
    d, D = 512, 768
    block = lambda w: 12 * w * w + 13 * w                                     # noqa: E731
    vit = (3 * 256 * D + D) + D + 197 * D + 12 * block(D) + 2 * D
    # decoder_embed, mask token, blocks, norm, pred
    reconstructor = (D * d + d) + d + 8 * block(d) + 2 * d + (d * 768 + 768)
    predictor = 8 * block(d) + 2 * d + (d * 768 + 768)
    count = lambda m: sum(q.numel() for q in m.parameters())                  # noqa: E731
    assert count(p.backbone) == vit
    assert count(p.objective) == reconstructor + predictor
    assert count(p.teacher) == vit + reconstructor + predictor
    assert sum(q.numel() for q in p.parameters_of("encoder")) == vit - 197 * D + reconstructor + predictor


# ---------------------------------------------------------------------------- recipes

# Haochen-Wang409/HPM@c15ae90: PRETRAIN.md (the pretraining command), main_pretrain.py defaults.
OFFICIAL = dict(
    gpus=8,                     # PRETRAIN.md l5   --nproc_per_node=8
    batch_per_gpu=32,           # PRETRAIN.md l7   --batch_size 32
    accum_iter=8,               # PRETRAIN.md l8   --accum_iter 8
    model="mae_vit_base_patch16_dec512d8b",   # PRETRAIN.md l9
    input_size=224,             # PRETRAIN.md l10
    mask_ratio=0.75,            # PRETRAIN.md l12
    epochs=200,                 # PRETRAIN.md l13
    warmup_epochs=40,           # PRETRAIN.md l14
    blr=1.5e-4,                 # PRETRAIN.md l15  (lr = blr * eff_batch / 256: main_pretrain.py l240-241)
    weight_decay=0.05,          # PRETRAIN.md l15
    relative=True,              # PRETRAIN.md l20  --learning_loss --relative
    norm_pix_loss=False,        # main_pretrain.py l59-61 (default False; the command does not set it)
    min_lr=0.0,                 # main_pretrain.py l97
    seed=0,                     # main_pretrain.py l110
    num_workers=8,              # main_pretrain.py l116
    betas=(0.9, 0.95),          # main_pretrain.py l255  AdamW(param_groups, lr, betas=(0.9, 0.95))
    decoder=(512, 8, 16),       # models_mae_learn_loss.py l330-335 (dec512d8b, 16 heads)
    hard_ratio_final=0.5,       # models_mae_learn_loss.py l270  keep_ratio = (epoch + 1) / total * 0.5
    ema=(0.999, 0.9999, 100),   # engine_pretrain.py l41-44  (0.999 -> 0.9999 over epochs 0..100)
    crop_scale=(0.2, 1.0),      # mask_transform.py l87  RandomResizedCrop(scale=(0.2, 1.0), bicubic)
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),   # mask_transform.py l90
)


def test_paper_recipe_says_what_the_official_command_says():
    from train.recipe import Recipe
    from zoo.data.views import PRESETS

    o = OFFICIAL
    path = ROOT / "recipes" / "paper" / "hpm_vit_base_patch16_224.in1k.yaml"
    assert "PRETRAIN.md" in path.read_text().split("\nmodel:")[0], "the header names the command"
    r = Recipe.load(path)
    assert r.model == "hpm_vit_base_patch16_224" and o["model"].startswith("mae_vit_base_patch16")
    assert r.image_size == o["input_size"]
    assert r.batch_size == o["gpus"] * o["batch_per_gpu"] * o["accum_iter"] == 2048
    assert r.grad_accum == o["accum_iter"]
    assert r.epochs == o["epochs"] and r.warmup_epochs == o["warmup_epochs"]
    assert (r.lr, r.lr_scaling) == (o["blr"], "linear") and r.optimizer == "adamw"
    assert r.weight_decay == o["weight_decay"] and tuple(r.betas) == o["betas"]
    assert r.min_lr == o["min_lr"] and r.warmup_start_lr == 0.0     # util/lr_sched.py l13-14: from 0
    assert r.seed == o["seed"] and r.num_workers == o["num_workers"]
    assert r.views == "mae" and PRESETS["mae"].scale == o["crop_scale"]
    assert tuple(r.mean) == o["mean"] and tuple(r.std) == o["std"]
    a = r.model_args
    assert a["mask_ratio"] == o["mask_ratio"] and a["relative"] is o["relative"]
    assert a["norm_pix_loss"] is o["norm_pix_loss"] and a["hard_ratio_final"] == o["hard_ratio_final"]
    assert (a["decoder_embed_dim"], a["decoder_depth"], a["decoder_num_heads"]) == o["decoder"]
    start, final, ramp_epochs = o["ema"]
    assert (a["ema_decay_start"], a["ema_decay_final"]) == (start, final)
    assert math.isclose(a["ema_ramp"], ramp_epochs / o["epochs"])
    # the values reach the modules (meta device: no memory)
    with torch.device("meta"):
        p = zoo.create_pretrainer(r.model, **a)
    assert p.masker.num_hidden == 196 - int(196 * 0.25) == 147 and len(p.objective.losspred_blocks) == 8
    assert p.objective.decoder_blocks[0].attn.num_heads == 16 and p.objective.relative
    assert tuple(p.backbone.patch_embed.patch_size) == (16, 16)


def test_cpu_recipe_loads_and_builds():
    from train.recipe import Recipe

    r = Recipe.load(ROOT / "recipes" / "hpm_vit_tiny_patch4_32.fmnist.yaml")
    mae = Recipe.load(ROOT / "recipes" / "mae_vit_tiny_patch4_32.fmnist.yaml")
    for key in ("epochs", "batch_size", "lr", "lr_scaling", "betas", "weight_decay", "warmup_epochs",
                "data", "image_size", "views", "limit_train", "augment_on", "seed"):
        assert getattr(r, key) == getattr(mae, key), key          # paired with the MAE control
    p = zoo.create_pretrainer(r.model, **r.model_args)
    assert len(p.objective.losspred_blocks) == r.model_args["decoder_depth"] == 4
    assert p.ema_decay_start == 0.93 and p.masker.num_hidden == 48
