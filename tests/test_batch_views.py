"""zoo.data.batch_views: each batched op against torchvision's per-image op, the draws' distributions,
determinism under the sample seed, and the training loop's augment_on=device path."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from zoo.data import batch_views as bv
from zoo.data.batch_views import BatchViews, ViewParams, collate_draws, crop_box
from zoo.data.views import PRESETS


def _rows(n: int, **cols) -> torch.Tensor:
    p = torch.zeros(n, bv.PARAMS)
    p[:, bv.ORDER:bv.ORDER + 4] = torch.arange(4).float()
    p[:, bv.BRIGHTNESS] = p[:, bv.CONTRAST] = p[:, bv.SATURATION] = 1.0
    for name, value in cols.items():
        p[:, getattr(bv, name.upper())] = torch.as_tensor(value, dtype=torch.float32)
    return p


def _images(n=6, size=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_full_image_crop_is_torchvision_bicubic_resize():
    x = _images(3, 20)
    p = _rows(3, top=0, left=0, height=20, width=20)
    ours = bv.resized_crop(x, p, 32)
    ref = TF.resize(x, [32, 32], interpolation=TF.InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_sub_crop_matches_torchvision_resized_crop_away_from_the_crop_edge():
    # torchvision crops then resizes (edge taps clamp to the crop); ours samples the whole image,
    # so compare the output pixels whose 4 x 4 taps all lie inside the crop.
    x = _images(4, 24)
    boxes = [(3, 5, 10, 14), (0, 0, 12, 12), (7, 2, 17, 9), (4, 4, 20, 20)]
    p = _rows(4, top=[b[0] for b in boxes], left=[b[1] for b in boxes],
              height=[b[2] for b in boxes], width=[b[3] for b in boxes])
    ours = bv.resized_crop(x, p, 32)
    for i, (t, l, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[i], t, l, h, w, [32, 32], interpolation=TF.InterpolationMode.BICUBIC,
                              antialias=False).clamp(0, 1)
        o = torch.arange(32) + 0.5
        sy, sx = o * h / 32 - 0.5, o * w / 32 - 0.5          # source index within the crop
        iy = (sy.floor() >= 1) & (sy.floor() + 2 <= h - 1)
        ix = (sx.floor() >= 1) & (sx.floor() + 2 <= w - 1)
        inside = iy[:, None] & ix[None, :]
        assert inside.sum() > 100
        torch.testing.assert_close(ours[i][:, inside], ref[:, inside], atol=1e-5, rtol=0)


def test_flip_flips_the_crop():
    x = _images(2, 20)
    p = _rows(2, top=2, left=3, height=11, width=15)
    flipped = bv.resized_crop(x, _rows(2, top=2, left=3, height=11, width=15, flip=1), 32)
    torch.testing.assert_close(flipped, bv.resized_crop(x, p, 32).flip(-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("strengths", [(0.8, 0.8, 0.8, 0.2), (0.4, 0.4, 0.0, 0.0)])
def test_color_jitter_is_torchvision_ops_in_each_images_order(strengths):
    n, g = 24, torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=g)
    rows = _rows(n)
    rng = random.Random(0)
    b, c, s, h = strengths
    for i in range(n):
        order = list(range(4))
        rng.shuffle(order)
        rows[i, bv.ORDER:bv.ORDER + 4] = torch.tensor(order, dtype=torch.float32)
        rows[i, bv.JITTER] = float(i % 5 != 0)               # some images not jittered
        rows[i, bv.BRIGHTNESS] = rng.uniform(1 - b, 1 + b) if b else 1
        rows[i, bv.CONTRAST] = rng.uniform(1 - c, 1 + c) if c else 1
        rows[i, bv.SATURATION] = rng.uniform(1 - s, 1 + s) if s else 1
        rows[i, bv.HUE] = rng.uniform(-h, h) if h else 0
    ours = bv.color_jitter(x, rows, strengths)
    ops = [lambda y, r: TF.adjust_brightness(y, r[bv.BRIGHTNESS].item()),
           lambda y, r: TF.adjust_contrast(y, r[bv.CONTRAST].item()),
           lambda y, r: TF.adjust_saturation(y, r[bv.SATURATION].item()),
           lambda y, r: TF.adjust_hue(y, r[bv.HUE].item())]
    for i in range(n):
        ref = x[i]
        if rows[i, bv.JITTER] > 0:
            for op in rows[i, bv.ORDER:bv.ORDER + 4].long().tolist():
                if strengths[op]:
                    ref = ops[op](ref, rows[i])
        torch.testing.assert_close(ours[i], ref, atol=2e-5, rtol=0)
    assert not torch.allclose(ours[1], x[1])                  # something happened


def test_hue_rotation_matches_torchvision_on_saturated_colours():
    x = torch.rand(8, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    shift = torch.linspace(-0.5, 0.5, 8)
    ours = bv.adjust_hue(x, shift)
    for i in range(8):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], shift[i].item()), atol=2e-5, rtol=0)


def test_gaussian_blur_per_image_sigma_matches_torchvision():
    x = _images(5, 32)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    on = torch.tensor([True, True, False, True, True])
    ours = bv.gaussian_blur(x, sigma, on, 13)
    for i in range(5):
        ref = TF.gaussian_blur(x[i], [13, 13], [sigma[i].item()] * 2) if on[i] else x[i]
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_whole_views_against_the_per_image_ops_with_the_same_draws():
    image = Image.fromarray((torch.rand(24, 24, 3, generator=torch.Generator().manual_seed(3)) * 255)
                            .to(torch.uint8).numpy())
    torch.manual_seed(4)
    draw = ViewParams("byol", 32)
    x, p = draw(image)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    views = BatchViews("byol", 32, mean, std)(x[None], p[None])
    spec = PRESETS["byol"]
    for v, branch in enumerate(spec.branches):
        r = p[v]
        t, l, h, w = (int(r[k]) for k in (bv.TOP, bv.LEFT, bv.HEIGHT, bv.WIDTH))
        y = bv.resized_crop(x[None].float() / 255, r[None], 32)[0]       # checked above
        if r[bv.JITTER] > 0:
            for op in r[bv.ORDER:bv.ORDER + 4].long().tolist():
                y = [lambda z: TF.adjust_brightness(z, r[bv.BRIGHTNESS].item()),
                     lambda z: TF.adjust_contrast(z, r[bv.CONTRAST].item()),
                     lambda z: TF.adjust_saturation(z, r[bv.SATURATION].item()),
                     lambda z: TF.adjust_hue(z, r[bv.HUE].item())][op](y)
        if r[bv.GRAY] > 0:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if r[bv.BLUR] > 0:
            y = TF.gaussian_blur(y, [13, 13], [r[bv.SIGMA].item()] * 2)
        if r[bv.SOLARIZE] > 0:
            y = TF.solarize(y, 128 / 255)
        torch.testing.assert_close(views[v][0], TF.normalize(y, mean, std), atol=1e-4, rtol=0)
        assert 0 < h <= 24 and 0 < w <= 24 and t + h <= 24 and l + w <= 24


def test_draws_follow_the_presets_probabilities_and_ranges():
    torch.manual_seed(0)
    draw = ViewParams("byol", 32)
    image = Image.new("RGB", (32, 32))
    p = torch.stack([draw(image)[1] for _ in range(3000)])          # (n, 2, PARAMS)
    for v, branch in enumerate(PRESETS["byol"].branches):
        r = p[:, v]
        for col, prob in ((bv.JITTER, branch.p_jitter), (bv.GRAY, branch.p_gray),
                          (bv.BLUR, branch.p_blur), (bv.SOLARIZE, branch.p_solarize), (bv.FLIP, 0.5)):
            assert abs(r[:, col].mean().item() - prob) < 4 * math.sqrt(prob * (1 - prob) / 3000) + 1e-9, (v, col)
        jit = r[r[:, bv.JITTER] > 0]
        b, c, s, h = branch.jitter
        assert jit[:, bv.BRIGHTNESS].min() >= 1 - b and jit[:, bv.BRIGHTNESS].max() <= 1 + b
        assert jit[:, bv.HUE].abs().max() <= h and jit[:, bv.HUE].abs().max() > 0.9 * h
        assert (jit[:, bv.ORDER:bv.ORDER + 4].sort(1).values == torch.arange(4)).all()   # a permutation
        assert len({tuple(o) for o in jit[:, bv.ORDER:bv.ORDER + 4].tolist()}) == 24       # all orders occur
        blurred = r[r[:, bv.BLUR] > 0, bv.SIGMA]
        assert blurred.min() >= 0.1 and blurred.max() <= 2.0
        area = r[:, bv.HEIGHT] * r[:, bv.WIDTH] / 32 ** 2
        assert 0.07 <= area.min() and area.max() <= 1.0       # the distribution: test_crop_sampler_...


def test_crop_sampler_is_torchvisions_algorithm():
    """Same distribution as RandomResizedCrop.get_params: compare the area and aspect quantiles."""
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    img = torch.zeros(3, 28, 40)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]).float()
    rng = random.Random(0)
    ours = torch.tensor([crop_box(rng, 28, 40, (0.08, 1.0)) for _ in range(4000)]).float()
    for stat in (lambda b: b[:, 2] * b[:, 3], lambda b: b[:, 3] / b[:, 2], lambda b: b[:, 0] + b[:, 2] / 2):
        q = torch.tensor([0.1, 0.5, 0.9])
        torch.testing.assert_close(stat(ours).quantile(q), stat(ref).quantile(q), rtol=0.08, atol=0.5)


def test_draws_are_a_function_of_the_seed_and_shared_crop_is_shared():
    image = Image.new("RGB", (32, 32))
    draw = ViewParams("extrema", 32)
    torch.manual_seed(7)
    a = draw(image)[1]
    torch.manual_seed(7)
    b = draw(image)[1]
    torch.manual_seed(8)
    c = draw(image)[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0, :bv.FLIP + 1], a[1, :bv.FLIP + 1])           # one crop + flip for both views
    x, p = ViewParams("extrema_spatial", 32)(image)
    v1, v2 = BatchViews("extrema_spatial", 32, (0.5,) * 3, (0.25,) * 3)(x[None], p[None])
    assert v1 is v2


def test_gray_fallback_and_jitter_override_reach_the_draws():
    draw = ViewParams("adios", 32, grayscale=True, jitter=(0.3, 0.2, 0.9, 0.4))
    assert draw.preset == "adios_gray"
    assert all(br.jitter == (0.3, 0.2, 0.0, 0.0) and br.p_gray == 0 for br in draw.spec.branches)


def test_mixed_image_sizes_are_a_clear_error():
    draw = ViewParams("mae", 32)
    batch = [(draw(Image.new("RGB", (32, 32))), 0), (draw(Image.new("RGB", (40, 32))), 1)]
    with pytest.raises(ValueError, match="augment_on=loader"):
        collate_draws(batch)
    assert collate_draws([None, batch[0]])[0][0].shape == (1, 3, 32, 32)    # unreadable ones still skipped


def test_training_with_device_views_is_deterministic(tmp_path):
    from train.pretrain import main
    args = ["--recipe", "recipes/simclr_resnet18.scenes.yaml", "max_steps=2", "batch_size=8",
            "limit_train=32", "augment_on=device", "num_workers=0", "log_every=1", "epochs=1"]
    a = main(args + [f"run_dir={tmp_path / 'a'}"])
    b = main(args + [f"run_dir={tmp_path / 'b'}"])
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
