"""ExtreMA: one-way loss vs an independent per-mask computation, teacher, export, architecture."""
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo
from zoo.backbones import vit_tokens
from zoo.methods.extrema import EXPORT_ARGS, ExtreMAPretrainer
from zoo.layers import sincos_pos_embed
from zoo.registry import get_method

NAME = "extrema_vit_tiny_patch4_32"
SMALL = dict(proj_hidden_dim=32, pred_hidden_dim=48)     # small heads: test speed only


@pytest.fixture(scope="module")
def pre():
    torch.manual_seed(0)
    return zoo.create_pretrainer(NAME, **SMALL)


def _views(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 32, 32, generator=g), torch.randn(b, 3, 32, 32, generator=g)]


def _rep_by_hand(vit, pool, x, keep=None):
    """LN(CLS) of one copy, written from the timm modules: patches + pos, keep, SA blocks, CA, norm."""
    t = vit.patch_embed(x) + vit.pos_embed                      # (B, L, D), no CLS at the input
    if keep is not None:
        t = torch.stack([t[b, keep[b]] for b in range(t.shape[0])])
    t = vit.blocks(t)
    cls = pool.cls_token.expand(t.shape[0], -1, -1)
    for blk in pool.blocks:
        cls = cls + blk.gamma_1 * blk.attn(blk.norm1(torch.cat([cls, t], 1)))
        cls = cls + blk.gamma_2 * blk.mlp(blk.norm2(cls))
    return vit.norm(cls[:, 0])


def test_loss_is_one_way_byol_averaged_over_disjoint_masks(pre):
    pre.eval()                                                  # no drop path: compare values
    views = _views()
    torch.manual_seed(5)
    masks = pre.masker(views[1])                                # (B, 5, 8, 8), drawn like forward
    torch.manual_seed(5)
    loss = pre(views)
    obj = pre.objective
    with torch.no_grad():
        k = obj.teacher_projector(_rep_by_hand(obj.teacher, obj.teacher_pool, views[0]))
        expected = 0.0
        for i in range(masks.shape[1]):
            keep = [(~masks[b, i]).flatten().nonzero().flatten() for b in range(3)]
            assert all(len(kb) == 12 for kb in keep)            # 80 %: 12 of 64 tokens visible
            q = obj.predictor(obj.projector(_rep_by_hand(pre.backbone, obj.pool, views[1], keep)))
            expected += ((F.normalize(q, dim=1) - F.normalize(k, dim=1)) ** 2).sum(1).mean() / masks.shape[1]
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    pre.train()


def test_student_gets_gradient_teacher_none_and_sees_short_sequences(pre):
    pre.zero_grad()
    shapes = []
    hook = pre.backbone.blocks[0].register_forward_hook(lambda m, i, o: shapes.append(i[0].shape))
    pre(_views()).backward()
    hook.remove()
    assert shapes == [(3 * 5, 12, 192)]                         # K*B sequences of v tokens, one batch
    obj = pre.objective
    for m in (obj.teacher, obj.teacher_pool, obj.teacher_projector):
        assert all(p.grad is None and not p.requires_grad for p in m.parameters())
    for m in (pre.backbone, obj.pool, obj.projector, obj.predictor):
        grads = [p.grad for p in m.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    names = {id(p) for p in pre.parameters_of("encoder")}
    assert not any(id(p) in names for p in obj.teacher.parameters())
    pre.zero_grad()


def test_ema_update_and_export_is_the_momentum_encoder(pre):
    obj = pre.objective
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    with torch.no_grad():
        for p in pre.backbone.parameters():
            if p.requires_grad:
                p.add_(0.01)
    pre.update(progress=0.0)
    assert obj.tau == pytest.approx(0.996)
    student = pre.backbone.state_dict()
    for key, value in obj.teacher.state_dict().items():
        torch.testing.assert_close(value, 0.996 * before[key] + 0.004 * student[key])
    exported = pre.exported_backbone()
    assert exported is obj.teacher and isinstance(exported, timm.models.VisionTransformer)
    assert not torch.equal(exported.blocks[0].attn.qkv.weight, pre.backbone.blocks[0].attn.qkv.weight)
    pre.update(progress=1.0)
    assert obj.tau == 1.0


def test_export_loads_in_vanilla_timm_exactly(pre):
    entry = get_method(NAME)
    assert entry.model_args == {"img_size": 32, "patch_size": 4, **EXPORT_ARGS}
    plain = timm.create_model(entry.timm_arch, num_classes=0, **entry.model_args)
    plain.load_state_dict(pre.exported_backbone().state_dict())            # strict
    x = _views()[0]
    pre.eval(), plain.eval()
    torch.testing.assert_close(plain(x), pre.exported_backbone()(x), rtol=0, atol=0)
    # the exported forward = mean over tokens of the trained final LayerNorm (no norm after pooling)
    t = vit_tokens(plain, x, final_norm=False)
    torch.testing.assert_close(plain(x), plain.norm(t).mean(1))
    assert plain.cls_token is None and isinstance(plain.fc_norm, torch.nn.Identity)
    pre.train()


def test_architecture_facts(pre):
    obj = pre.objective
    assert len(obj.pool.blocks) == 2
    for pool in (obj.pool, obj.teacher_pool):
        for blk in pool.blocks:
            assert torch.all(blk.gamma_1 == 0.1) and torch.all(blk.gamma_2 == 0.1)
    vit = pre.backbone
    assert vit.num_prefix_tokens == 0 and not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed[0], sincos_pos_embed((8, 8), 192))
    dpr = [blk.drop_path1.drop_prob for blk in vit.blocks[1:]]
    assert dpr[-1] == pytest.approx(0.1)                        # student: drop path up to 0.1
    assert all(isinstance(blk.drop_path1, torch.nn.Identity) for blk in obj.teacher.blocks)
    kinds = [type(m).__name__ for m in obj.projector]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Linear", "LayerNorm", "GELU", "Linear"]
    assert [type(m).__name__ for m in obj.predictor] == ["Linear", "LayerNorm", "GELU", "Linear"]
    assert isinstance(pre, ExtreMAPretrainer) and pre.masker.num_masks == 5 and pre.masker.mask_ratio == 0.8


def test_unmasked_paths_equal_plain_forwards(pre):
    pre.eval()
    x = _views()[0]
    obj = pre.objective
    all_visible = torch.arange(64).expand(3, 64)
    with torch.no_grad():
        full = obj.represent(pre.backbone, obj.pool, x)
        torch.testing.assert_close(obj.represent(pre.backbone, obj.pool, x, all_visible), full)
        torch.testing.assert_close(_rep_by_hand(pre.backbone, obj.pool, x), full)
        # zoo.backbones.encode with nothing hidden = the timm forward of the student ViT
        none_hidden = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
        torch.testing.assert_close(zoo.backbones.encode(pre.backbone, x, none_hidden)[:, 0], pre.backbone(x))
    pre.train()


def test_one_view_feeds_both_branches_and_bad_masks(pre):
    x = _views()[0]
    assert torch.isfinite(pre([x]))
    with pytest.raises(ValueError, match="teacher sees the other"):
        pre.objective(pre.backbone, [x, x], [pre.masker(x), pre.masker(x)])
    with pytest.raises(ValueError, match="boolean"):
        pre.objective(pre.backbone, [x, x], [None, pre.masker(x).float()])


def test_ninety_percent_by_eight_option():
    p = zoo.create_pretrainer(NAME, mask_ratio=0.9, num_masks=8, **SMALL)
    masks = p.masker(torch.zeros(2, 3, 32, 32))
    assert masks.shape == (2, 8, 8, 8) and ((~masks).sum((-2, -1)) == 6).all()


def test_paper_size_parameter_count_on_meta():
    with torch.device("meta"):
        p = zoo.create_pretrainer("extrema_vit_base_patch16_224")
    D, L, depth, H, P = 768, 196, 12, 4096, 256
    lin = lambda i, o: i * o + o
    block = 2 * 2 * D + lin(D, 3 * D) + lin(D, D) + lin(D, 4 * D) + lin(4 * D, D)
    ca_block = 2 * 2 * D + 3 * lin(D, D) + lin(D, D) + lin(D, 4 * D) + lin(4 * D, D) + 2 * D
    vit = lin(3 * 16 * 16, D) + L * D + depth * block + 2 * D  # patch embed, pos, blocks, final norm
    pool = D + 2 * ca_block
    projector = lin(D, H) + 2 * H + lin(H, H) + 2 * H + lin(H, P)
    predictor = lin(P, H) + 2 * H + lin(H, P)
    count = lambda m: sum(q.numel() for q in m.parameters())
    obj = p.objective
    assert count(p.backbone) == count(obj.teacher) == vit
    assert count(obj.pool) == count(obj.teacher_pool) == pool
    assert count(obj.projector) == projector and count(obj.predictor) == predictor
    trainable = sum(q.numel() for q in p.parameters_of("encoder"))
    assert trainable == vit - L * D + pool + projector + predictor          # pos embed frozen
