"""The view presets of `zoo.data.views`, applied to a whole batch on the training device.

Per-image augmentation (PIL / per-image tensor ops in DataLoader workers) cost as much CPU time
as the whole SimCLR ResNet-18 step at 32 px on the project's 2-core machine (0.46 s against
0.48 s per batch of 256, measured by `python benchmarks/step_time.py`). Here the work is split:

- in the DataLoader (per sample, under the sample's own seed, so resume stays step-exact):
  `ViewParams` turns a PIL image into its uint8 tensor and a small table of the random draws
  of every view: crop box, flip, jitter on/off, factors and order, grayscale, blur sigma,
  solarise. Drawing is a few scalars per image;
- on the device (per batch): `BatchViews` applies the draws to the batch with a handful of
  batched ops: crop + resize + flip as one `grid_sample` per view, colour jitter in each image's
  own random order, grayscale, a per-image Gaussian blur as one grouped convolution,
  solarisation, normalisation.

The distributions are the presets' (the same crop sampler, jitter ranges and order permutation,
probabilities, blur sigma and kernel size). Deviations from the per-image path, and why:
- bicubic resampling is torch's cubic convolution (a = -0.75, `grid_sample`) where PIL uses
  a = -0.5, and the taps at a crop's edge read the pixels just outside the crop (PIL's crop then
  resize clamps to the crop); no antialiasing, so it is meant for data stored at about the
  training size, where a crop is upsampled (Fashion-MNIST, the scenes, STL10 at 96 px);
- everything runs in float32; the per-image path rounds to uint8 after each PIL op;
- images of one batch must share one size (they are stacked before the views are drawn).

Example:
    >>> import torch
    >>> from PIL import Image
    >>> from zoo.data.batch_views import ViewParams, BatchViews
    >>> draw = ViewParams("simclr", 32)
    >>> image, params = draw(Image.new("RGB", (32, 32)))
    >>> image.dtype, params.shape                       # (views, PARAMS)
    (torch.uint8, torch.Size([2, 18]))
    >>> views = BatchViews("simclr", 32, mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> v1, v2 = views(image[None], params[None])
    >>> v1.shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from zoo.data.views import blur_kernel_size, preset_spec

# Columns of one view's parameter row.
TOP, LEFT, HEIGHT, WIDTH, FLIP, JITTER, ORDER = 0, 1, 2, 3, 4, 5, 6   # ORDER: 4 columns, 6-9
BRIGHTNESS, CONTRAST, SATURATION, HUE, GRAY, BLUR, SIGMA, SOLARIZE = range(10, 18)
PARAMS = 18
RATIO = (3 / 4, 4 / 3)                       # RandomResizedCrop's default aspect range
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)        # ITU-R 601-2, as torchvision


def crop_box(rng: random.Random, height: int, width: int, scale, ratio=RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's RandomResizedCrop sampler (10 tries, then a centre crop
    of the clamped aspect), drawn from a Python RNG (a torch call per number costs ~5 us)."""
    area, log_ratio = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ViewParams:
    """PIL image -> (uint8 image (C, H, W), draws (views, PARAMS)); runs in the DataLoader.

    One number from the global torch RNG (which `train.sampling.SeededSamples` seeds per sample)
    seeds a Python RNG that draws the rest.
    """

    def __init__(self, preset: str, image_size: int, grayscale: bool = False, jitter: tuple | None = None):
        self.preset, self.spec = preset_spec(preset, grayscale, jitter)
        self.image_size = int(image_size)

    def __call__(self, image) -> tuple[Tensor, Tensor]:
        x = TF.pil_to_tensor(image)                       # (C, H, W) uint8
        rng = random.Random(int(torch.randint(2 ** 62, (1,)).item()))
        rows, crop = [], None
        for branch in self.spec.branches:
            if crop is None or not self.spec.shared_crop:
                crop = [*crop_box(rng, x.shape[1], x.shape[2], self.spec.scale), float(rng.random() < 0.5)]
            row = [0.0] * PARAMS
            row[TOP:FLIP + 1] = crop
            row[ORDER:ORDER + 4] = range(4)
            row[BRIGHTNESS] = row[CONTRAST] = row[SATURATION] = 1.0
            if branch.p_jitter > 0 and rng.random() < branch.p_jitter:
                b, c, s, h = branch.jitter
                order = list(range(4))
                rng.shuffle(order)                        # ColorJitter's random op order
                row[JITTER], row[ORDER:ORDER + 4] = 1.0, order
                row[BRIGHTNESS] = rng.uniform(max(0.0, 1 - b), 1 + b) if b else 1.0
                row[CONTRAST] = rng.uniform(max(0.0, 1 - c), 1 + c) if c else 1.0
                row[SATURATION] = rng.uniform(max(0.0, 1 - s), 1 + s) if s else 1.0
                row[HUE] = rng.uniform(-h, h) if h else 0.0
            row[GRAY] = float(branch.p_gray > 0 and rng.random() < branch.p_gray)
            if branch.p_blur > 0 and rng.random() < branch.p_blur:
                row[BLUR], row[SIGMA] = 1.0, rng.uniform(0.1, 2.0)
            row[SOLARIZE] = float(branch.p_solarize > 0 and rng.random() < branch.p_solarize)
            rows.append(row)
        return x, torch.tensor(rows, dtype=torch.float32)


def collate_draws(batch: list):
    """`collate_skip_bad` for `ViewParams` samples, with a clear error for mixed image sizes."""
    from zoo.data.sources import collate_skip_bad
    sizes = sorted({tuple(b[0][0].shape) for b in batch if b is not None})
    if len(sizes) > 1:
        raise ValueError(f"augment_on=device stacks a batch's images before making the views, but this "
                         f"batch mixes image sizes {sizes[:4]}: use augment_on=loader for such data, "
                         "or store the images at one size")
    return collate_skip_bad(batch)


class BatchViews(torch.nn.Module):
    """(uint8 images (B, C, H, W), draws (B, views, PARAMS)) -> list of normalised views (B, C, S, S).

    Runs on whatever device the images are on; no parameters, no RNG.
    """

    def __init__(self, preset: str, image_size: int, mean, std, grayscale: bool = False,
                 jitter: tuple | None = None):
        super().__init__()
        self.preset, self.spec = preset_spec(preset, grayscale, jitter)
        self.image_size = int(image_size)
        self.kernel_size = blur_kernel_size(self.image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor, params: Tensor) -> list[Tensor]:
        x = images.float() / 255
        params = params.to(x.device, torch.float32)
        out = []
        for v, branch in enumerate(self.spec.branches):
            if v and self.spec.same_tensor:
                out.append(out[0])
                continue
            p = params[:, v]
            y = resized_crop(x, p, self.image_size)
            if branch.p_jitter > 0:
                y = color_jitter(y, p, branch.jitter)
            if branch.p_gray > 0:
                y = torch.where(p[:, GRAY, None, None, None] > 0, grayscale(y).expand_as(y), y)
            if branch.p_blur > 0:
                y = gaussian_blur(y, p[:, SIGMA], p[:, BLUR] > 0, self.kernel_size)
            if branch.p_solarize > 0:
                hit = (p[:, SOLARIZE, None, None, None] > 0) & (y >= 128 / 255)
                y = torch.where(hit, 1 - y, y)
            out.append((y - self.mean) / self.std)
        return out


# -------------------------------------------------------------------------------------------------
# The batched ops; each is checked against torchvision's per-image op in tests/test_batch_views.py

def resized_crop(x: Tensor, p: Tensor, size: int) -> Tensor:
    """Crop box (top, left, h, w) of each image resized to size x size (bicubic), then flipped."""
    B, _, H, W = x.shape
    o = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / size      # (2o + 1) / S
    # output pixel o -> input pixel index top + (o + 0.5) * h / S - 0.5, in grid_sample's
    # align_corners=False coordinates: (2 * index + 1) / H - 1
    gy = (2 * p[:, TOP, None] + o * p[:, HEIGHT, None]) / H - 1                  # (B, S)
    gx = (2 * p[:, LEFT, None] + o * p[:, WIDTH, None]) / W - 1
    gx = torch.where(p[:, FLIP, None] > 0, gx.flip(-1), gx)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)   # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp_(0, 1)


def grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    return (ratio[:, None, None, None] * x + (1 - ratio[:, None, None, None]) * other).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate each image's hue by `shift` (B,) of a turn, through HSV as torchvision does."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2 + rc - bc, 4 + gc - rc))
    h = torch.where(delta > 0, (h / 6) % 1, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h = (h + shift[:, None, None]) % 1
    i = torch.floor(h * 6)
    f = h * 6 - i
    v = maxc
    pp, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = torch.stack([torch.stack(c, 1) for c in
                           ((v, t, pp), (q, v, pp), (pp, v, t), (pp, q, v), (t, pp, v), (v, pp, q))], 0)
    return choices.gather(0, i[None, :, None].expand(1, -1, 3, -1, -1)).squeeze(0)


def color_jitter(x: Tensor, p: Tensor, strengths: tuple) -> Tensor:
    """ColorJitter with each image's own factors and op order; images with JITTER = 0 unchanged.

    Brightness, contrast and saturation are all `blend(y, other, ratio)` (other = black, the mean
    gray level, the gray image), so each of the 4 positions of the order is one blend for the
    whole batch, each image with its own op's ratio and other (ratio 1: unchanged).
    """
    b, c, s, h = strengths
    on = p[:, JITTER] > 0
    ones = torch.ones_like(p[:, 0])
    y = x
    for position in range(4):
        which = torch.where(on, p[:, ORDER + position], torch.full_like(ones, -1))
        ratio = ones
        for op, column, strength in ((0, BRIGHTNESS, b), (1, CONTRAST, c), (2, SATURATION, s)):
            if strength:
                ratio = torch.where(which == op, p[:, column], ratio)
        if c or s:
            gray = grayscale(y)
            other = torch.where((which == 2)[:, None, None, None], gray,
                                torch.where((which == 1)[:, None, None, None],
                                            gray.mean((2, 3), keepdim=True), torch.zeros_like(gray)))
        else:
            other = torch.zeros_like(y[:, :1])
        y = _blend(y, other, ratio)
        if h:
            y = torch.where((which == 3)[:, None, None, None], adjust_hue(y, p[:, HUE]), y)
    return y


def gaussian_blur(x: Tensor, sigma: Tensor, on: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with each image's sigma (reflect padding, torchvision's kernel)."""
    B, C, H, W = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp_min(1e-6)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)                                                # (B, k)
    delta = torch.zeros_like(k)
    delta[:, kernel_size // 2] = 1
    k = torch.where(on[:, None], k, delta).repeat_interleave(C, 0)                # (B*C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)
    return y.reshape(B, C, H, W)

