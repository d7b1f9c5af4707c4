"""ADIOS and ADIOS-s: the occluder, its penalty, and the two adversarial phases."""
import math

import pytest
import torch

import zoo
from zoo.methods.adios import ADIOSOccluder, ADIOSPretrainer, choose_one

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
