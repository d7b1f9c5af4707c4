"""Augmentation presets per paper (torchvision transforms v2), their grayscale fallbacks, eval.

`two_views(preset, image_size, mean, std)` returns a callable PIL image -> list of view tensors
(2 views for the siamese methods, 1 for MAE / AutoMAE); `eval_transform` resizes and normalises.

- `simclr`, `adios` (2 views): RandomResizedCrop(0.08-1) + flip, independent per view;
  ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2, blur p 0.5 on both views.
- `byol` (2 views): crops as simclr; ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2;
  blur p 1.0 / 0.1 and solarize p 0 / 0.2 (view 1 / view 2).
- `mae` (1 view): RandomResizedCrop(0.2-1) + flip, nothing else.
- `extrema` (2 views): ONE RandomResizedCrop(0.2-1) + flip shared by both views, then an
  independent ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 and grayscale p 0.2 per view; no blur.
- `extrema_spatial` (2 views): the shared crop only; both views are the same tensor (ExtreMA's
  `--aug-spatial`, masking being the only difference between the branches).

Sources: ADIOS `pretrain_dataloader.py` defaults (jitter 0.8/0.8/0.8/0.2, blur p 0.5, no solarise;
some ADIOS scripts override the jitter, pass `jitter=`), BYOL / solo-learn asymmetric pipeline, MAE
and AutoMAE `main_pretrain.py`, ExtreMA `lib/augment.py` (FAITHFULNESS.md). Crops are bicubic as in
the references. Blur: sigma U(0.1, 2) as the references' PIL blur (radius = sigma), kernel 13 px
(covers 3 sigma), shrunk to the image for tiny images.

Grayscale fallbacks (`grayscale=True`, for data that was 1-channel, such as Fashion-MNIST; named
`<preset>_gray`): on an image with R = G = B, saturation jitter, hue jitter and RandomGrayscale are
identities, so the fallback drops them and says so; brightness and contrast jitter, blur and
solarisation still change a gray image and are kept. So `simclr_gray` = crop + flip +
brightness/contrast jitter p 0.8 + blur p 0.5; `extrema_gray` = shared crop + flip + independent
brightness/contrast per view; `mae_gray` = `mae`.

Example:
    >>> from PIL import Image
    >>> from zoo.data.views import two_views, eval_transform
    >>> views = two_views("simclr", 32, mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> v1, v2 = views(Image.new("RGB", (40, 40)))
    >>> v1.shape, views.preset
    (torch.Size([3, 32, 32]), 'simclr')
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchvision.transforms import v2

from zoo.suggest import did_you_mean

BICUBIC = v2.InterpolationMode.BICUBIC


@dataclass(frozen=True)
class Branch:
    """One view's pipeline after the crop: probabilities and strengths."""
    jitter: tuple = (0.0, 0.0, 0.0, 0.0)   # brightness, contrast, saturation, hue
    p_jitter: float = 0.0
    p_gray: float = 0.0
    p_blur: float = 0.0
    p_solarize: float = 0.0


@dataclass(frozen=True)
class Preset:
    branches: tuple            # one Branch per view
    scale: tuple = (0.08, 1.0)  # RandomResizedCrop area range
    shared_crop: bool = False  # ExtreMA: one crop + flip for both views
    same_tensor: bool = False  # ExtreMA --aug-spatial: view 2 is view 1


_SIMCLR = Branch((0.8, 0.8, 0.8, 0.2), 0.8, 0.2, 0.5, 0.0)
_BYOL1 = Branch((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 1.0, 0.0)
_BYOL2 = Branch((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 0.1, 0.2)
_EXTREMA = Branch((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 0.0, 0.0)
_PLAIN = Branch()

PRESETS: dict[str, Preset] = {
    "simclr": Preset((_SIMCLR, _SIMCLR)),
    "adios": Preset((_SIMCLR, _SIMCLR)),
    "byol": Preset((_BYOL1, _BYOL2)),
    "mae": Preset((_PLAIN,), scale=(0.2, 1.0)),
    "extrema": Preset((_EXTREMA, _EXTREMA), scale=(0.2, 1.0), shared_crop=True),
    "extrema_spatial": Preset((_PLAIN, _PLAIN), scale=(0.2, 1.0), shared_crop=True, same_tensor=True),
}


def _gray(branch: Branch) -> Branch:
    b, c, _, _ = branch.jitter  # saturation and hue are identities on R = G = B
    return replace(branch, jitter=(b, c, 0.0, 0.0), p_jitter=branch.p_jitter if (b or c) else 0.0,
                   p_gray=0.0)


for _name, _p in list(PRESETS.items()):
    PRESETS[f"{_name}_gray"] = replace(_p, branches=tuple(_gray(b) for b in _p.branches))


def resolve_preset(preset: str, grayscale: bool = False) -> str:
    """The preset actually used: `<preset>_gray` for 1-channel-origin data."""
    base = preset.removesuffix("_gray")
    if base not in PRESETS:
        hint = did_you_mean(preset, [p for p in PRESETS if not p.endswith("_gray")], cutoff=0.6)
        raise ValueError(f"Unknown view preset {preset!r}.{hint} Known: "
                         f"{', '.join(p for p in PRESETS if not p.endswith('_gray'))} "
                         "(each with a _gray fallback).")
    return f"{base}_gray" if grayscale or preset.endswith("_gray") else base


def blur_kernel_size(image_size: int) -> int:
    """13 px (covers 3 sigma of the largest sigma, 2), odd and at most the image for tiny images."""
    return max(min(13, image_size - (1 - image_size % 2)), 3)


def _blur(image_size: int) -> v2.GaussianBlur:
    return v2.GaussianBlur(kernel_size=blur_kernel_size(image_size), sigma=(0.1, 2.0))


def _colour(branch: Branch, image_size: int, mean, std) -> v2.Compose:
    ops = []
    if branch.p_jitter > 0:  # on the PIL image: twice as fast as on a tensor at these sizes
        ops.append(v2.RandomApply([v2.ColorJitter(*branch.jitter)], p=branch.p_jitter))
    ops.append(v2.ToImage())                              # uint8 tensor from here on
    if branch.p_gray > 0:
        ops.append(v2.RandomGrayscale(p=branch.p_gray))
    if branch.p_blur > 0:
        ops.append(v2.RandomApply([_blur(image_size)], p=branch.p_blur))
    if branch.p_solarize > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=branch.p_solarize))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def _spatial(image_size: int, scale) -> v2.Compose:
    return v2.Compose([v2.RandomResizedCrop(image_size, scale=scale, interpolation=BICUBIC, antialias=True),
                       v2.RandomHorizontalFlip()])


def preset_spec(preset: str, grayscale: bool = False, jitter: tuple | None = None) -> tuple[str, Preset]:
    """(resolved preset name, its Preset with the jitter strengths overridden when given)."""
    name = resolve_preset(preset, grayscale)
    spec = PRESETS[name]
    if jitter is not None:  # per-script override of the jitter strengths
        b = tuple(jitter) if not name.endswith("_gray") else (*tuple(jitter)[:2], 0.0, 0.0)
        spec = replace(spec, branches=tuple(replace(br, jitter=b) for br in spec.branches))
    return name, spec


class Views:
    """PIL image -> list of augmented view tensors (C, H, W); `.preset` names what is applied."""

    def __init__(self, preset: str, image_size: int, mean, std, grayscale: bool = False,
                 jitter: tuple | None = None):
        self.preset, spec = preset_spec(preset, grayscale, jitter)
        self.spec = spec
        self.spatial = _spatial(image_size, spec.scale)
        self.colour = [_colour(b, image_size, mean, std) for b in spec.branches]

    def __call__(self, image) -> list[torch.Tensor]:
        if self.spec.shared_crop:
            crop = self.spatial(image)
            if self.spec.same_tensor:
                view = self.colour[0](crop)
                return [view, view]
            return [colour(crop) for colour in self.colour]
        return [colour(self.spatial(image)) for colour in self.colour]

    def __repr__(self) -> str:
        return f"Views({self.preset!r}, {self.spec})"


def two_views(preset: str, image_size: int, mean, std, grayscale: bool = False,
              jitter: tuple | None = None) -> Views:
    """The augmentation of a paper as a PIL -> [view, ...] callable (module docstring).

    grayscale=True picks the named `<preset>_gray` fallback; jitter overrides the ColorJitter
    strengths (brightness, contrast, saturation, hue).
    """
    return Views(preset, image_size, mean, std, grayscale, jitter)


def eval_transform(image_size: int, mean, std) -> v2.Compose:
    """No augmentation: resize the short side, centre crop (a no-op on square images), normalise."""
    return v2.Compose([v2.Resize(image_size, interpolation=BICUBIC, antialias=True),
                       v2.CenterCrop(image_size), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def finetune_transform(image_size: int, mean, std) -> v2.Compose:
    """Fine-tuning's training augmentation, fixed in advance: RandomResizedCrop(0.2-1) + flip."""
    return v2.Compose([_spatial(image_size, (0.2, 1.0)), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
