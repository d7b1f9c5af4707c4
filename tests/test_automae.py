"""AutoMAE: attention source, generator sampling, discriminator, rectangle prior, phases."""
import copy
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


# ---------------------------------------------------------------------------- pretrainer phases

import warnings  # noqa: E402

import zoo  # noqa: E402
from zoo.backbones import create_backbone  # noqa: E402
from zoo.methods.automae import AutoMAEPretrainer  # noqa: E402
from zoo.objectives import MAE  # noqa: E402

from phase_probe import assert_same_parameters, loop_step, phase_loss, sgd_per_phase, step_phase_by_hand  # noqa: E402


def _automae(**kw):
    torch.manual_seed(0)
    kw.setdefault("decoder_depth", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zoo.create_pretrainer("automae_vit_tiny_patch4_32", **kw)


class _ConstD(torch.nn.Module):
    """A stand-in discriminator: records its inputs and scores every map `c`."""

    def __init__(self, c):
        super().__init__()
        self.c, self.seen = c, []
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, maps):
        self.seen.append(maps.detach())
        return self.w + self.c + 0 * maps.flatten(1)[:, :1]


def test_random_source_warns():
    with pytest.warns(UserWarning, match="RANDOMLY initialised"):
        zoo.create_pretrainer("automae_vit_tiny_patch4_32", decoder_depth=1)


def test_named_attention_source_is_loaded_pretrained_and_grid_checked(monkeypatch):
    import zoo.factory
    calls = []

    def fake_create_model(name, pretrained=None, **kw):
        calls.append((name, pretrained))
        return create_backbone("vit_tiny_patch4_32" if name == "good" else "vit_tiny_patch16_224")

    monkeypatch.setattr(zoo.factory, "create_model", fake_create_model)
    p = zoo.create_pretrainer("automae_vit_tiny_patch4_32", attention_source="good", decoder_depth=1)
    assert calls == [("good", True)] and p.masker.grid == (8, 8)
    with pytest.raises(ValueError, match=r"\(8, 8\) patch grid"):
        zoo.create_pretrainer("automae_vit_tiny_patch4_32", attention_source="bad", decoder_depth=1)


def test_discriminator_phase_touches_only_the_discriminator():
    p = _automae()
    loss = p([torch.randn(2, 3, 32, 32)], phase="discriminator")
    loss.backward()
    assert torch.isfinite(loss)
    for name, q in p.named_parameters():
        assert (q.grad is not None) == name.startswith("discriminator."), name
    assert {id(q) for q in p.parameters_of("discriminator")} == {id(q) for q in p.discriminator.parameters()}


def test_discriminator_phase_is_lsgan_on_prior_and_generator_maps():
    p = _automae()
    p.discriminator = _ConstD(0.3)
    loss = p([torch.randn(2, 3, 32, 32)], phase="discriminator")
    assert loss.item() == pytest.approx((0.3 - 1) ** 2 + 0.3 ** 2)       # MSE(D(real),1) + MSE(D(fake),0)
    real, fake = p.discriminator.seen
    for maps in (real, fake):
        assert maps.shape == (2, 1, 8, 8)
        torch.testing.assert_close(maps.sum((1, 2, 3)), torch.ones(2))   # probability maps
    # the real maps are rectangles: two levels of logits (0.5 + U inside, U outside)
    assert (real.log().flatten(1).amax(1) - real.log().flatten(1).amin(1) <= 1.5 + 1e-5).all()


def test_encoder_phase_loss_is_rec_plus_0_2_lsgan_generator_term():
    p = _automae()
    p.discriminator = _ConstD(0.3)
    x = [torch.randn(2, 3, 32, 32)]
    torch.manual_seed(3)
    with_g = p(x, phase="encoder")
    p.loss_g_factor = 0.0
    torch.manual_seed(3)
    rec = p(x, phase="encoder")
    assert (with_g - rec).item() == pytest.approx(0.2 * (0.3 - 1) ** 2, rel=1e-5)


class _FixedLogits(torch.nn.Module):
    """A stand-in generator: the same log-probabilities over the patches for every image."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, attention):
        return self.logits.log_softmax(-1).expand(attention.shape[0], -1)


class _MaxD(torch.nn.Module):
    """A stand-in discriminator whose score depends on its input: D(m) = 2 max(m) - 0.5 + b.

    With a near one-hot generator (`_peaked`), fake maps score about 1.5 and the prior's
    near-uniform maps (max <= e^1.5 / 67.5, about 0.07) about -0.4: LSGAN with real/fake targets
    swapped gives a very different value (0.4 instead of 4.2).
    """

    def __init__(self):
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, maps):
        self.seen.append(maps.detach().clone())
        return 2 * maps.flatten(1).amax(1, keepdim=True) - 0.5 + self.b


def _peaked(L=64):
    return torch.tensor([30.0] + [0.0] * (L - 1))       # Gumbel noise practically never beats 30


def _scores_of_seen(d):
    maps = torch.cat(d.seen).flatten(1)                 # every map D scored, whatever the batching
    return 2 * maps.amax(1) - 0.5, maps.amax(1) > 0.5   # (scores, is the generator's sample)


def test_discriminator_phase_lsgan_targets_with_an_input_dependent_discriminator():
    p = _automae()
    p.masker.generator, p.discriminator = _FixedLogits(_peaked()), _MaxD()
    loss = p([torch.randn(4, 3, 32, 32)], phase="discriminator")
    score, fake = _scores_of_seen(p.discriminator)
    assert int(fake.sum()) == 4 and int((~fake).sum()) == 4    # 4 prior maps, 4 generator samples
    real_s, fake_s = score[~fake], score[fake]
    expected = ((real_s - 1) ** 2).mean() + (fake_s ** 2).mean()      # MSE(D(real),1) + MSE(D(fake),0)
    swapped = (real_s ** 2).mean() + ((fake_s - 1) ** 2).mean()
    assert abs(expected - swapped).item() > 1.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5), \
        f"got {loss.item():.4f}; real/fake targets swapped would give {swapped.item():.4f}"
    # d loss / d b = 2 mean(D(real) - 1) + 2 mean(D(fake)): D is pushed down on fakes, up on reals
    loss.backward()
    assert p.discriminator.b.grad.item() == pytest.approx((2 * (real_s - 1).mean() + 2 * fake_s.mean()).item(),
                                                          rel=1e-5)


def test_generator_term_targets_real_with_an_input_dependent_discriminator():
    p = _automae()
    p.masker.generator, p.discriminator = _FixedLogits(_peaked()), _MaxD()
    x = [torch.randn(2, 3, 32, 32)]
    torch.manual_seed(3)
    with_g = p(x, phase="encoder")
    score, fake = _scores_of_seen(p.discriminator)
    assert fake.all() and len(score) == 2                       # D sees the generator's maps only
    p.loss_g_factor = 0.0
    torch.manual_seed(3)
    rec = p(x, phase="encoder")
    expected = 0.2 * ((score - 1) ** 2).mean()                   # 0.2 x MSE(D(y), 1)
    assert abs(expected - 0.2 * (score ** 2).mean()).item() > 0.3   # target 0 would be far off
    assert (with_g - rec).item() == pytest.approx(expected.item(), rel=1e-4)


def _cheap_source():
    """A 1-block ViT with the 8 x 8 patch grid of vit_tiny_patch4_32: attention at negligible cost."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=2, embed_dim=12, depth=1,
                             num_heads=3, num_classes=0).requires_grad_(False).eval()


def _max_and_entropy(y):
    y = y.double()
    return y.amax(1).mean().item(), -(y * y.clamp_min(1e-300).log()).sum(1).mean().item()


def test_gumbel_sample_is_soft_at_temperature_one():
    """y is one soft Gumbel-softmax sample at tau = 1: its statistics match an independent Monte
    Carlo of softmax(log p + G), G = -log(-log U), and not a hard (one-hot) or other-tau sample."""
    p = _automae()                                  # the factory's masker, with its tau
    p.masker.source = _cheap_source()
    logits = torch.linspace(-2.0, 2.0, 64)
    p.masker.generator = _FixedLogits(logits)
    n = 16384
    torch.manual_seed(0)
    with torch.no_grad():
        y = p.masker.sample(torch.zeros(n, 3, 16, 16)).y
    assert y.shape == (n, 64)
    torch.testing.assert_close(y.sum(1), torch.ones(n))
    assert (y.amax(1) < 0.99).float().mean() > 0.9              # soft: hard=True gives one-hot rows
    u = torch.rand(n, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gumbel = -(-u.log()).log()
    log_p = logits.double().log_softmax(0)

    def reference(tau):
        return _max_and_entropy(((log_p + gumbel) / tau).softmax(1))

    got, want = _max_and_entropy(y), reference(1.0)
    # bounds = 5 standard errors of the difference of two 16384-sample means (about 0.0024, 0.008)
    tol = (0.012, 0.04)
    for tau in (0.9, 1.1):                          # the test resolves a 10 % change of tau
        assert all(abs(a - b) > 3 * t for a, b, t in zip(reference(tau), want, tol))
    assert got[0] == pytest.approx(want[0], abs=tol[0]), f"mean max(y) {got[0]:.4f}, tau=1: {want[0]:.4f}"
    assert got[1] == pytest.approx(want[1], abs=tol[1]), f"mean H(y) {got[1]:.4f}, tau=1: {want[1]:.4f}"


def test_loop_step_encoder_phase_sees_the_discriminator_after_its_update():
    """Phase order discriminator -> encoder, as the training loop runs `pretrainer.phases`: the
    MAE + generator loss is taken against the discriminator already stepped on this batch, and
    the discriminator's loss against the generator not yet stepped."""
    p = _automae()
    x = [torch.randn(2, 3, 32, 32)]
    start = copy.deepcopy(p)
    # a large D step: the spectrally normalised D scores these probability maps near 0 at init,
    # so a small step would barely move the generator term
    lr = {"discriminator": 5.0, "encoder": 0.5}
    order, losses, rng = loop_step(p, x, sgd_per_phase(p, lr))
    # the paper's order, by hand from the same start and the loop's random draws per phase
    ref = copy.deepcopy(start)
    d_loss = step_phase_by_hand(ref, x, "discriminator", lr["discriminator"], rng["discriminator"])
    encoder_after = phase_loss(ref, x, "encoder", rng["encoder"])
    step_phase_by_hand(ref, x, "encoder", lr["encoder"], rng["encoder"])
    encoder_before = phase_loss(start, x, "encoder", rng["encoder"])   # an encoder-first loop's view
    assert abs(encoder_after - encoder_before) > 0.01      # the D step shows in the generator term
    assert set(order) == {"discriminator", "encoder"}
    assert losses["encoder"] == pytest.approx(encoder_after, rel=1e-5), \
        f"encoder phase saw the discriminator before its update ({encoder_before:.6f}), phases {order}"
    assert losses["discriminator"] == pytest.approx(d_loss, rel=1e-6)
    assert_same_parameters(p, ref)


def test_encoder_phase_gradients_reach_the_generator_through_the_gate(monkeypatch):
    p = _automae(loss_g_factor=0.0)                       # only the reconstruction loss
    x = [torch.randn(2, 3, 32, 32)]
    p(x, phase="encoder").backward()
    gen = [q.grad for q in p.masker.generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in gen)
    assert sum(g.abs().sum() for g in gen) > 0
    assert all(q.grad is None for q in p.discriminator.parameters())
    assert all(q.grad is None for q in p.masker.source.parameters())
    assert all(q.requires_grad for q in p.discriminator.parameters())    # unfrozen afterwards
    # the same step with the gate removed: the masks alone carry no gradient
    p.zero_grad(set_to_none=True)
    forward = p.objective.forward
    monkeypatch.setattr(p.objective, "forward", lambda b, v, m, gate=None: forward(b, v, m))
    loss = p(x, phase="encoder")
    grads = torch.autograd.grad(loss, list(p.masker.generator.parameters()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)    # (0 x the GAN term still links them)


def test_encoder_phase_parameters_and_masker_round_trip():
    p = _automae()
    enc = {id(q) for q in p.parameters_of("encoder")}
    assert enc == {id(q) for m in (p.backbone, p.objective, p.masker.generator)
                   for q in m.parameters() if q.requires_grad}
    assert not enc & {id(q) for q in p.masker.source.parameters()}
    assert not enc & {id(q) for q in p.discriminator.parameters()}
    fresh = _automae()
    with torch.no_grad():
        for q in p.masker.parameters():
            q.add_(0.05)
    fresh.masker.load_state_dict(p.masker.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(9)
    a = p.masker.sample(x)
    torch.manual_seed(9)
    b = fresh.masker.sample(x)
    torch.testing.assert_close(a.y, b.y)
    assert torch.equal(a.hidden, b.hidden)


def test_14x14_grid_end_to_end_shapes():
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_patch16_224")
    p = AutoMAEPretrainer(backbone, MAE(backbone, decoder_depth=1),
                          AutoMAEMasker(create_backbone("vit_tiny_patch16_224")))
    assert p.masker.visible == 49 and p.discriminator.net[-2].kernel_size == (3, 3)
    x = [torch.randn(2, 3, 224, 224)]
    for phase in p.phases:
        loss = p(x, phase=phase)
        assert loss.shape == () and torch.isfinite(loss)
        loss.backward()
    assert p.masker(x[0]).shape == (2, 1, 14, 14)
