"""ADIOS and ADIOS-s: the occluder, its penalty, and the two adversarial phases."""
import copy
import math

import pytest
import torch

import zoo
from zoo.methods.adios import ADIOSOccluder, ADIOSPretrainer, choose_one

from phase_probe import assert_same_parameters, loop_step, phase_loss, sgd_per_phase, step_phase_by_hand

IMG = 32


def _views(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, IMG, IMG, generator=g), torch.randn(b, 3, IMG, IMG, generator=g)]


def _const_masks(areas):
    """(B, N) area fractions -> masks (B, N, 4, 4) whose pixel mean is exactly that fraction."""
    a = torch.as_tensor(areas, dtype=torch.float32)
    return a[..., None, None].expand(*a.shape, 4, 4).clone()


# ---------------------------------------------------------------------------- occluder

@pytest.mark.parametrize("norm", ["gn", "in", "no"])
def test_masks_partition_every_pixel(norm):
    torch.manual_seed(0)
    occ = ADIOSOccluder(IMG, num_masks=5, mask_fbase=8, unet_norm=norm)
    m = occ(torch.randn(3, 3, IMG, IMG) * 3)
    assert m.shape == (3, 5, IMG, IMG)
    assert (m >= 0).all() and (m <= 1).all()
    torch.testing.assert_close(m.sum(1), torch.ones(3, IMG, IMG))


def _independent_unet_count(c, n_masks, num_blocks, img, norm="gn"):
    """Parameter count of the reference U-Net from its channel tables (src/utils/unet.py)."""
    tables = {  # num_blocks: (enc_in, enc_out, dec_in, dec_out), copied from the reference's lists
        4: ([3, c, 2 * c, 2 * c], [c, 2 * c, 2 * c, 2 * c], [4 * c, 4 * c, 4 * c, 2 * c], [2 * c, 2 * c, c, c]),
        5: ([3, c, c, 2 * c, 2 * c], [c, c, 2 * c, 2 * c, 2 * c], [4 * c, 4 * c, 4 * c, 2 * c, 2 * c],
            [2 * c, 2 * c, c, c, c]),
        6: ([3, c, c, c, 2 * c, 2 * c], [c, c, c, 2 * c, 2 * c, 2 * c],
            [4 * c, 4 * c, 4 * c, 2 * c, 2 * c, 2 * c], [2 * c, 2 * c, c, c, c, c]),
    }
    enc_in, enc_out, dec_in, dec_out = tables[num_blocks]
    block = (lambda i, o: 9 * i * o + 2 * o) if norm in ("gn", "in") else (lambda i, o: 9 * i * o + o)
    convs = sum(block(i, o) for i, o in zip(enc_in + dec_in, enc_out + dec_out))
    flat = 2 * c * (img // 2 ** (num_blocks - 1)) ** 2
    mlp = (flat * 128 + 128) + (128 * 128 + 128) + (128 * flat + flat)
    head = c * n_masks + n_masks
    return convs + mlp + head


def test_unet_parameter_count_matches_reference_plan():
    # hand-summed once for the 32 px default: 93,472 (enc) + 203,136 (dec) + 279,808 (MLP) + 198
    assert sum(p.numel() for p in ADIOSOccluder(32, 6, 32).parameters()) == 576_614
    for img, c, n, norm in [(32, 32, 6, "gn"), (96, 32, 6, "gn"), (96, 64, 6, "gn"), (96, 128, 6, "gn"),
                            (96, 32, 4, "in"), (96, 16, 6, "no"), (224, 8, 4, "gn"), (224, 32, 6, "gn")]:
        with torch.device("meta"):
            occ = ADIOSOccluder(img, n, c, unet_norm=norm)
        blocks = int(math.log2(img) - 1)
        assert occ.num_blocks == blocks
        assert sum(p.numel() for p in occ.parameters()) == _independent_unet_count(c, n, blocks, img, norm)


def test_occluder_errors_are_clear():
    with pytest.raises(ValueError, match="unet_norm"):
        ADIOSOccluder(32, unet_norm="bn")
    with pytest.raises(ValueError, match="GroupNorm"):
        ADIOSOccluder(32, mask_fbase=4)
    with pytest.raises(ValueError, match="img_size"):
        ADIOSOccluder(100)
    with pytest.raises(ValueError, match="img_size=64"):
        ADIOSOccluder(32)(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------------------- penalty

def test_penalty_against_hand_computation():
    occ = ADIOSOccluder(IMG, num_masks=2, mask_fbase=8, alpha_sparsity=1.0, alpha_entropy=0.5)
    masks = _const_masks([[0.25, 0.75], [0.5, 0.5]])
    # sparsity: per mask, mean over the batch of 1/sin(pi s): mask 0 (1/sin(pi/4) + 1)/2, mask 1 the same
    sparsity = 2 * (math.sqrt(2) + 1) / 2
    # entropy of softmax over masks of the area row, summed over images
    p = 1 / (1 + math.exp(0.5))
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p)) + math.log(2)
    assert occ.penalty(masks).item() == pytest.approx(sparsity + 0.5 * entropy, rel=1e-5)
    occ.alpha_sparsity, occ.alpha_entropy = 0.0, 1.0
    assert occ.penalty(masks).item() == pytest.approx(entropy, rel=1e-5)


def test_penalty_is_minimal_at_half_area_and_blows_up_at_the_ends():
    occ = ADIOSOccluder(IMG, num_masks=3, mask_fbase=8)
    areas = torch.linspace(0.01, 0.99, 99)
    pens = torch.stack([occ.penalty(_const_masks([[s] * 3])) for s in areas])
    assert areas[pens.argmin()].item() == pytest.approx(0.5, abs=1e-6)
    assert pens.min().item() == pytest.approx(3.0)            # one per mask at s = 0.5
    assert occ.penalty(_const_masks([[0.0] * 3])).item() > 1e9  # empty mask: ~1/1e-10
    # gradient descent on the area alone walks to 0.5 from either side
    for start in (0.05, 0.93):
        logit = torch.tensor(math.log(start / (1 - start)), requires_grad=True)
        opt = torch.optim.SGD([logit], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            occ.penalty(torch.sigmoid(logit).expand(1, 3, 4, 4)).backward()
            opt.step()
        assert torch.sigmoid(logit).item() == pytest.approx(0.5, abs=1e-3)


def test_choose_one_picks_the_indexed_mask():
    m = torch.rand(3, 4, 5, 5)
    idx = torch.tensor([2, 0, 3])
    out = choose_one(m, idx)
    assert out.shape == (3, 1, 5, 5)
    for b in range(3):
        assert torch.equal(out[b, 0], m[b, idx[b]])


# ---------------------------------------------------------------------------- phases

def _adios(objective="simclr", name="adios_resnet18", **kw):
    torch.manual_seed(0)
    kw.setdefault("num_masks", 3)
    return zoo.create_pretrainer(name, objective=objective, img_size=IMG, mask_fbase=8, **kw)


def _grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


class _Spy(torch.nn.Module):
    """Records the masks the pretrainer hands to the objective, then runs the real objective."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, backbone, views, masks=None):
        self.seen.append([None if m is None else m.detach().clone() for m in masks])
        return self.inner(backbone, views, masks)


def test_encoder_phase_trains_encoder_and_heads_only():
    p = _adios()
    views = _views()
    p(views, phase="encoder").backward()
    assert all(g is None for g in _grads(p.masker).values())          # occluder: no gradient at all
    # (not "non-zero": timm's ResNet zero-inits each block's last BN gamma, so the residual
    # branches get exactly zero gradient at step 0)
    assert all(g is not None for g in _grads(p.backbone).values())
    assert _grads(p.backbone)["conv1.weight"].abs().sum() > 0
    assert all(g is not None for g in _grads(p.objective.projector).values())
    assert {id(q) for q in p.parameters_of("masker")} == {id(q) for q in p.masker.parameters()}


@pytest.mark.parametrize("objective", ["simclr", "byol", "simsiam"])
def test_masker_phase_trains_occluder_only(objective):
    p = _adios(objective)
    flags = {n: q.requires_grad for n, q in p.named_parameters()}
    p(_views(), phase="masker").backward()
    assert all(g is None for g in _grads(p.backbone).values())
    assert all(g is None for g in _grads(p.objective).values())
    assert all(g is not None and torch.isfinite(g).all() for g in _grads(p.masker).values())
    assert flags == {n: q.requires_grad for n, q in p.named_parameters()}   # frozen() restored them


def test_phase_values_equal_independent_computation():
    p = _adios(alpha_sparsity=0.7, alpha_entropy=0.3)
    views = _views()
    with torch.no_grad():
        masks = p.masker(views[1])
        expected_obj = p.objective(p.backbone, views, [None, masks])
        expected_pen = 0.7 * (1 / (torch.sin(math.pi * masks.mean((-2, -1))) + 1e-10)).mean(0).sum() \
            + 0.3 * -(masks.mean((-2, -1)).softmax(1) * masks.mean((-2, -1)).log_softmax(1)).sum()
        enc = p(views, phase="encoder")
        mask_loss = p(views, phase="masker")
    torch.testing.assert_close(enc, expected_obj)
    torch.testing.assert_close(mask_loss, -expected_obj + expected_pen)


def test_masker_step_along_its_gradient_raises_the_objective():
    """Finite differences: the masker-phase gradient is the ascent direction of the objective."""
    p = _adios(alpha_sparsity=0.0).double()
    views = [v.double() for v in _views()]
    occ = list(p.masker.parameters())

    def objective():
        with torch.no_grad():
            return p.objective(p.backbone, views, [None, p.masker(views[1])]).item()

    before = objective()
    loss = p(views, phase="masker")                      # = -objective (no penalty)
    assert loss.item() == pytest.approx(-before, rel=1e-9)
    grads = torch.autograd.grad(loss, occ)
    sq = sum((g * g).sum() for g in grads).item()
    assert sq > 0
    eps = 1e-5 / math.sqrt(sq)                             # a step of norm 1e-5
    with torch.no_grad():
        for q, g in zip(occ, grads):
            q -= eps * g                                   # a descent step on the masker's loss
    gain = objective() - before
    assert gain > 0
    assert gain == pytest.approx(eps * sq, rel=0.02)       # first-order prediction


def test_loop_step_masker_phase_sees_the_encoder_after_its_update():
    """Phase order encoder -> masker, as the training loop runs `pretrainer.phases`: the masker's
    loss (and its step) is taken against the encoder already stepped on this batch, and the
    encoder's loss against the occluder not yet stepped."""
    p = _adios(alpha_sparsity=0.5)
    views = _views()
    start = copy.deepcopy(p)
    lr = 0.5
    order, losses, _ = loop_step(p, views, sgd_per_phase(p, lr))
    # the paper's order, by hand from the same start: encoder step, then the masker on top of it
    ref = copy.deepcopy(start)
    encoder_loss = step_phase_by_hand(ref, views, "encoder", lr)
    masker_after = phase_loss(ref, views, "masker")
    step_phase_by_hand(ref, views, "masker", lr)
    masker_before = phase_loss(start, views, "masker")    # what a masker-first loop would see
    assert abs(masker_after - masker_before) > 0.1          # the encoder's step shows in it
    assert set(order) == {"encoder", "masker"}
    assert losses["masker"] == pytest.approx(masker_after, rel=1e-5), \
        f"masker phase saw the encoder before its update ({masker_before:.6f}), phases {order}"
    assert losses["encoder"] == pytest.approx(encoder_loss, rel=1e-5)
    # and the whole step lands where the by-hand sequence does (BN buffers aside: train mode)
    assert_same_parameters(p, ref)


def test_simsiam_masks_both_views_with_one_pass_each():
    p = _adios("simsiam")
    p.objective = _Spy(p.objective)
    views = _views()
    with torch.no_grad():
        p(views, phase="encoder")
        full = [p.masker(v) for v in views]
    m0, m1 = p.objective.seen[0]
    torch.testing.assert_close(m0, full[0])
    torch.testing.assert_close(m1, full[1])
    with torch.no_grad():
        loss = p(views, phase="masker")
        obj = p.objective.inner(p.backbone, views, full)
    torch.testing.assert_close(loss, -obj + p.masker.penalty(torch.cat(full, 1)))


@pytest.mark.parametrize("objective", ["simclr", "simsiam"])
def test_adios_s_encodes_one_drawn_mask_per_image_with_independent_draws(objective):
    p = _adios(objective, name="adios_s_resnet18", num_masks=6)
    p.objective = _Spy(p.objective)
    views = _views(b=16)
    choices = []
    for phase in ("encoder", "masker", "encoder"):
        p(views, phase=phase)
        choices.append(p.last_choice.clone())
    with torch.no_grad():
        full = [p.masker(v) for v in views]
    for seen, choice in zip(p.objective.seen, choices):
        masked = [0, 1] if objective == "simsiam" else [1]
        for i in range(2):
            if i not in masked:
                assert seen[i] is None
                continue
            assert seen[i].shape == (16, 1, IMG, IMG)                   # K = 1 copy per image
            torch.testing.assert_close(seen[i], choose_one(full[i], choice))
    # independent uniform draws: two phases agreeing on 16 draws of 6 would be a 6**-16 event
    assert not torch.equal(choices[0], choices[1]) and not torch.equal(choices[1], choices[2])
    assert set(torch.cat(choices).tolist()) == set(range(6))


def test_adios_s_penalty_covers_all_masks():
    p = _adios(name="adios_s_resnet18", num_masks=4, alpha_sparsity=1.0)
    views = _views()
    with torch.no_grad():
        full = p.masker(views[1])
        torch.manual_seed(5)
        loss = p(views, phase="masker")
        torch.manual_seed(5)
        chosen = choose_one(full, torch.randint(4, (4,)))
        obj = p.objective(p.backbone, views, [None, chosen])
    torch.testing.assert_close(loss, -obj + p.masker.penalty(full))


def test_factory_errors_are_clear():
    with pytest.raises(ValueError, match="takes 96 px"):
        zoo.create_pretrainer("adios_vit_tiny_patch16_96", img_size=32)
    with pytest.raises(ValueError, match="no option temperature"):
        zoo.create_pretrainer("adios_resnet18", objective="byol", temperature=0.1)
    with pytest.raises(ValueError, match="objective one of"):
        zoo.create_pretrainer("adios_resnet18", objective="mae")
    with pytest.raises(ValueError, match="two views"):
        _adios()([torch.randn(2, 3, IMG, IMG)], phase="encoder")
    with pytest.raises(ValueError, match="no phase"):
        _adios()(_views(), phase="discriminator")


def test_masker_state_dict_round_trips_into_a_fresh_pretrainer():
    a, b = _adios("byol"), _adios("byol")
    with torch.no_grad():
        for q in a.masker.parameters():
            q.add_(0.1)
    b.masker.load_state_dict(a.masker.state_dict())
    x = _views()[1]
    torch.testing.assert_close(a.masker(x), b.masker(x))
