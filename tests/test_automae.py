"""AutoMAE: attention source, generator sampling, discriminator, rectangle prior, phases."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from zoo.methods.automae import (AutoMAEMasker, MaskDiscriminator, MaskGenerator, cls_attention,
                                 last_kernel, pseudo_real_maps, random_rectangles)


def _vit(img=32, patch=4, arch="vit_tiny_patch16_224"):
    torch.manual_seed(0)
    return timm.create_model(arch, img_size=img, patch_size=patch, num_classes=0)


# ---------------------------------------------------------------------------- attention source

def test_cls_attention_equals_timm_unfused_attention():
    vit = _vit().eval()
    x = torch.randn(2, 3, 32, 32)
    # independent path: timm's own unfused attention, the softmax captured at attn_drop's input
    last = vit.blocks[-1].attn
    last.fused_attn = False
    seen = {}
    handle = last.attn_drop.register_forward_hook(lambda m, inp, out: seen.setdefault("a", inp[0]))
    with torch.no_grad():
        vit(x)
    handle.remove()
    expected = seen["a"][:, :, 0, 1:].reshape(2, 3, 8, 8)
    got = cls_attention(vit, x)
    assert got.shape == (2, 3, 8, 8) and not got.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # post-softmax over all keys: the patch columns sum to 1 minus the CLS-on-CLS weight
    assert (got.flatten(2).sum(-1) < 1).all()


def test_attention_source_without_cls_token_is_refused():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=0,
                            class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="CLS"):
        cls_attention(vit, torch.randn(1, 3, 32, 32))


# ---------------------------------------------------------------------------- generator sampling

def test_generator_layout_and_log_softmax():
    gen = MaskGenerator(heads=12)
    convs = [m for m in gen.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(12, 6, (3, 3)), (6, 1, (3, 3))]
    assert MaskGenerator(heads=1).net[0].out_channels == 1      # heads/2 at least 1
    logp = gen(torch.rand(2, 12, 14, 14))
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(2))


@pytest.mark.parametrize("img,patch,visible", [(32, 4, 16), (224, 16, 49)])
def test_generator_selected_patches_are_masked(img, patch, visible):
    torch.manual_seed(0)
    masker = AutoMAEMasker(_vit(img, patch), mask_ratio=0.75)
    assert masker.visible == visible                     # k = number of VISIBLE patches
    x = torch.randn(2, 3, img, img)
    for _ in range(20 if img == 32 else 3):
        s = masker.sample(x)
        selected = torch.zeros_like(s.y, dtype=torch.bool).scatter_(1, s.y.topk(visible, 1).indices, True)
        hidden = s.hidden.flatten(1)
        assert (hidden.sum(1) == s.y.shape[1] - visible).all()
        assert hidden[selected].all()                   # at mask_factor 0.5: in practice always
        # the noise carries exactly the selection: U(0,1) below, U(0,1) + 0.5 on the selected
        assert (s.noise[selected] >= 0.5).all() and (s.noise[~selected] < 1).all()
        torch.testing.assert_close(s.y.sum(1), torch.ones(2))


def test_selection_guarantee_and_its_rate_at_small_grids():
    torch.manual_seed(0)
    masker = AutoMAEMasker(_vit(), mask_ratio=0.75, mask_factor=1.0)   # noise >= 1 > every U(0,1)
    x = torch.randn(64, 3, 32, 32)
    s = masker.sample(x)
    selected = torch.zeros_like(s.y, dtype=torch.bool).scatter_(1, s.y.topk(16, 1).indices, True)
    assert s.hidden.flatten(1)[selected].all()                       # guaranteed here
    # at 0.5 on an 8x8 grid a selected patch stays visible when <= 15 of the 48 other U(0,1) noises
    # fall below it: binomial(48, 1/2) tail at the smallest selected noise, well under 1 %
    tail = sum(math.comb(48, j) for j in range(16)) / 2 ** 48
    assert tail < 0.01


def test_straight_through_gradient_and_gate_path():
    """d noise / d y = mask_factor (straight-through), whatever the hard top-k."""
    torch.manual_seed(0)
    masker = AutoMAEMasker(_vit(), mask_factor=0.5)
    x = torch.randn(2, 3, 32, 32)
    w = torch.randn(2, 64)
    torch.manual_seed(1)
    s = masker.sample(x)
    g_noise = torch.autograd.grad((w * s.noise).sum(), list(masker.generator.parameters()))
    torch.manual_seed(1)
    s2 = masker.sample(x)
    g_y = torch.autograd.grad((w * s2.y).sum(), list(masker.generator.parameters()))
    for a, b in zip(g_noise, g_y):
        torch.testing.assert_close(a, 0.5 * b)
    assert not any(p.requires_grad for p in masker.source.parameters())


def test_masker_contract_and_frozen_source():
    masker = AutoMAEMasker(_vit())
    masker.train()
    assert masker.generator.training and not masker.source.training
    hide = masker(torch.randn(3, 3, 32, 32))
    assert hide.dtype == torch.bool and hide.shape == (3, 1, 8, 8)
    assert (hide.flatten(1).sum(1) == 48).all()
    assert masker.penalty(hide).item() == 0.0
    with pytest.raises(ValueError, match="mask_ratio"):
        AutoMAEMasker(_vit(), mask_ratio=1.0)


# ---------------------------------------------------------------------------- discriminator, prior

@pytest.mark.parametrize("grid,k", [(14, 3), (8, 2), (6, 1), (4, 1)])
def test_discriminator_shapes_and_rescaled_last_kernel(grid, k):
    assert last_kernel(grid) == k
    d = MaskDiscriminator(grid)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [4, 4, k]
    assert [c.stride[0] for c in convs] == [2, 2, 1]
    assert all(c.bias is None for c in convs)
    assert d(torch.rand(5, 1, grid, grid)).shape == (5, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert d(torch.rand(2, 1, grid, grid)).dtype == torch.float32


def test_discriminator_is_spectrally_normalised():
    torch.manual_seed(0)
    d = MaskDiscriminator(14)
    for _ in range(30):                      # power iterations converge in training mode
        d(torch.rand(4, 1, 14, 14))
    d.eval()
    for conv in (m for m in d.modules() if isinstance(m, torch.nn.Conv2d)):
        w = conv.weight.flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="4 x 4"):
        MaskDiscriminator(3)


@pytest.mark.parametrize("grid,area,cols,rows", [(14, (40, 140), (4, 10), (4, 14)),
                                                 (8, (13, 48), (2, 6), (3, 8))])
def test_rectangle_prior_ranges(grid, area, cols, rows):
    """Reference at 14x14: area ~ U{40..160}, side l ~ U{4..10}, w = min(14, ceil(area / l)),
    so the drawn rectangles cover 40..140 cells (140 = 10 x 14 when w is capped).
    At 8x8 the fractions give area U{13..52}, l U{2..6}: 14..48 cells (l=2 -> w=7)."""
    g = torch.Generator().manual_seed(0)
    boxes = random_rectangles(20000, grid, generator=g)
    assert boxes.shape == (20000, grid, grid) and set(boxes.unique().tolist()) == {0.0, 1.0}
    n_rows = boxes.amax(2).sum(1)
    n_cols = boxes.amax(1).sum(1)
    torch.testing.assert_close(boxes.sum((1, 2)), n_rows * n_cols)      # solid rectangles
    a = boxes.sum((1, 2))
    lo = area[0] if grid == 14 else 14
    assert a.min() >= lo and a.max() <= area[1]
    assert n_cols.min() == cols[0] and n_cols.max() == cols[1]
    assert n_rows.min() >= rows[0] and n_rows.max() == rows[1]
    # every position is reachable: each cell is covered by some rectangle and left out by another
    assert (boxes.amax(0) == 1).all() and (boxes.amin(0) == 0).all()


def test_pseudo_real_maps_are_softmaxes_of_half_boxes_plus_noise():
    torch.manual_seed(0)
    boxes = random_rectangles(3, 8)
    torch.manual_seed(1)
    maps = pseudo_real_maps(boxes, 0.5)
    torch.manual_seed(1)
    expected = F.softmax((0.5 * boxes + torch.rand_like(boxes)).flatten(1), dim=1).view(3, 1, 8, 8)
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(maps.sum((1, 2, 3)), torch.ones(3))
