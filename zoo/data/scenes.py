"""The embedded default dataset: synthetic scenes of overlapping shapes, drawn on the fly.

Nothing is downloaded and nothing is stored: scene `index` of split `split` with base `seed` is
drawn by a numpy Generator seeded with `SeedSequence([seed, split_code, index])`, so the same
(seed, split, index) always gives the same scene on every machine, and the train (split code 0)
and test (split code 1) streams are disjoint by construction: the test split is held out.

A scene (image_size x image_size RGB, default 32):
- a textured background: a colour gradient, stripes, a checkerboard or smooth blobs, at random
  orientation and frequency, between a random colour and a second one near it (texture, not
  edges that compete with the objects');
- 1-4 objects of one of the 8 shape classes of `CLASSES` (all of a scene's objects share its class),
  each with a random colour (the farthest of 8
  random candidates from the background's two colours and, for a distractor, from the main
  object's colour, so that shapes stay visible and do not merge), a fill (flat, shaded or
  striped), and aspect and rotation jitter. The first object is the *main* object: the largest
  (radius 0.22-0.40 of the image side, anywhere with at most a fifth of its radius out of frame),
  at the bottom; the others are distractors of 0.35-0.65 its radius drawn on top of it, 70 % of
  them overlapping it (a distractor that would hide more than 25 % of it is left out);
- Gaussian pixel noise over everything (sigma up to 10 on the 0-255 scale).

label = the class of the scene's objects. Why one class per scene: the views of the siamese methods
are random crops of 8-100 % of the image, and with distractors of other classes a crop often shows
mostly a distractor, so the two views of one scene (pulled together by the objective) carry
different classes and the label named only the main object's: ill-posed under the views. With one
class per scene every object in any crop carries the label; shapes, sizes, colours, fills, poses and
occlusion still vary per object. (Before 2026-12-02 distractors drew their own class; the
released scenes weights of round 1 were trained on those scenes.)

masks = one boolean mask per object of its *visible* pixels (occlusion-aware: a pixel belongs to
the topmost object covering it), used to score maskers against the objects (`zoo.evaluation.mask_score`). Edges are anti-aliased by drawing at twice the
resolution; a mask pixel is the object's when at least half of its 2x2 sub-pixels are.

Why this is hard for raw pixels: class is carried by shape alone, while colour, texture, position,
pose, background and distractors vary freely. Raw-pixel weighted kNN (the fixed protocol of
`zoo.evaluation`, 20 000 train / 2 000 test scenes at 32 px) gets 30.3 % at k = 20 and 26.1 % at
k = 200, chance being 12.5 %: `python train/knn.py raw-pixels --data scenes`; a supervised
ResNet-18 reaches 60 % after 5 short epochs and is still climbing.

Speed: about 2 700 scenes per CPU-second at 32 px and 1 200 at 64 px on this project's machine.

Example:
    >>> from zoo.data.scenes import SceneDataset, CLASSES
    >>> ds = SceneDataset("train", image_size=32)
    >>> image, label = ds[0]                      # PIL image, int in range(len(CLASSES))
    >>> scene = ds.scene(0)                       # image (32, 32, 3) uint8, label, masks (n, 32, 32)
    >>> scene.masks.shape[1:], scene.classes[0] == label
    ((32, 32), True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow")
SPLIT_CODES = {"train": 0, "test": 1}
DEFAULT_LENGTH = {"train": 20_000, "test": 2_000}
# The main object moves and scales a lot: a CNN does not mind, a raw-pixel template does
# (centre 0.35-0.65 and radius 0.28-0.40 gave raw-pixel kNN 34 % instead of 24 % on 8k scenes).
MAIN_RADIUS = (0.22, 0.40)   # main object's radius, fraction of the image side
MAIN_CENTRE = (0.25, 0.75)   # range of its centre coordinates, fraction of the image side
# Texture, occlusion and noise strengths. Measured (20k train / 2k test scenes, 32 px): with two
# independent background colours, occlusion up to 40 % and noise up to 20, a supervised ResNet-18
# reached 51 % after 6 short epochs; with these values 60 % after 5, raw-pixel kNN barely moving
# (28 -> 31 % on that set).
BG_CONTRAST = 60.0           # the background's second colour: first + U(-c, c) per channel
MAX_HIDDEN = 0.25            # distractors may hide at most this fraction of the main object
NOISE_MAX = 10.0             # pixel noise sigma ~ U(0, NOISE_MAX), 0-255 scale
SUPERSAMPLE = 2  # draw at 2x and average down: soft edges, and masks that follow them


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = _regular(2 * points, 1.0, -math.pi / 2)
    outer[1::2] *= inner
    return outer


_CROSS = np.array([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                   (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], dtype=float)
_ARROW = np.array([(-1, -0.28), (0.1, -0.28), (0.1, -0.75), (1, 0), (0.1, 0.75), (0.1, 0.28),
                   (-1, 0.28)], dtype=float)
_CIRCLE = _regular(32)
# Each shape: list of (polygon in unit coordinates, fill value); later polygons paint over earlier
# ones, so a 0-filled polygon cuts a hole (ring) or a bite (crescent).
SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_CIRCLE, 1)],
    "square": [(_regular(4, 1.0, math.pi / 4) * 0.95, 1)],
    "triangle": [(_regular(3, 1.1, -math.pi / 2) + (0, 0.15), 1)],
    "star": [(_star(), 1)],
    "cross": [(_CROSS, 1)],
    "ring": [(_CIRCLE, 1), (_CIRCLE * 0.55, 0)],
    "crescent": [(_CIRCLE, 1), (_CIRCLE * 0.85 + (0.5, 0), 0)],
    "arrow": [(_ARROW, 1)],
}
assert tuple(SHAPES) == CLASSES


@dataclass
class Scene:
    image: np.ndarray      # (H, W, 3) uint8
    label: int             # class of the main object
    masks: np.ndarray      # (n, H, W) bool, visible pixels of each object, main object first
    classes: list          # class index of each object


class _Grid:
    """Pixel-centre coordinates in [-1, 1], cached per size (the backgrounds are functions of them)."""
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def get(cls, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size not in cls.cache:
            t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
            cls.cache[size] = np.meshgrid(t, t)  # (x, y), each (size, size)
        return cls.cache[size]


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _pattern(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A (size, size) float map in [0, 1] that mixes two colours."""
    x, y = _Grid.get(size)
    theta = rng.uniform(0, math.pi)
    u = x * math.cos(theta) + y * math.sin(theta)
    if kind == "gradient":
        return (u + 1.5) / 3.0
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(math.pi * rng.uniform(1.5, 5) * u + rng.uniform(0, 2 * math.pi))
    if kind == "checker":
        v = -x * math.sin(theta) + y * math.cos(theta)
        f = rng.uniform(1.5, 4)
        return ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float32)
    # smooth blobs: a coarse random field upsampled bilinearly
    coarse = rng.integers(0, 256, (rng.integers(3, 6), rng.integers(3, 6)), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), np.float32) / 255


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list]:
    kind = ("gradient", "stripes", "checker", "blobs")[rng.integers(4)]
    t = _pattern(rng, size, kind)[..., None]
    c1 = _colour(rng)
    c2 = np.clip(c1 + rng.uniform(-BG_CONTRAST, BG_CONTRAST, 3), 0, 255).astype(np.float32)
    return c1 * (1 - t) + c2 * t, [c1, c2]                         # (size, size, 3), its colours


def _distinct_colour(rng: np.random.Generator, avoid: list, tries: int = 8) -> np.ndarray:
    """The candidate colour farthest from every colour in `avoid` (background, main object)."""
    candidates = rng.uniform(0, 255, (tries, 3)).astype(np.float32)
    dist = ((candidates[:, None] - np.asarray(avoid)[None]) ** 2).sum(-1).min(1)
    return candidates[int(np.argmax(dist))]


def _object_mask(cls: int, centre, radius: float, aspect: float, angle: float, size: int) -> np.ndarray:
    """Coverage in [0, 1] of one object, (size, size), drawn at SUPERSAMPLE x resolution."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    scale = np.array([radius * aspect, radius / aspect])
    for poly, value in SHAPES[CLASSES[cls]]:
        pts = ((poly * scale) @ rot.T + centre) * s
        draw.polygon(pts.ravel().tolist(), fill=255 * value)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float32) / 255  # box average


def render_scene(rng: np.random.Generator, size: int = 32) -> Scene:
    """Draw one scene with `rng` (module docstring for what is drawn)."""
    image, avoid = _background(rng, size)
    n_objects = int(rng.integers(1, 5))
    covers, classes = [], []
    main_area = None
    for i in range(n_objects):
        cls = int(rng.integers(len(CLASSES)))
        if i > 0:    # distractors share the main object's class: the label holds for any crop (below)
            cls = classes[0]
        if i == 0:   # the main object: the largest, mostly in frame
            radius = rng.uniform(*MAIN_RADIUS) * size
            lo, hi = max(MAIN_CENTRE[0] * size, 0.8 * radius), min(MAIN_CENTRE[1] * size, size - 0.8 * radius)
            centre = rng.uniform(lo, hi, 2)             # at most a fifth of its radius out of frame
        else:        # a smaller distractor, overlapping the main object 70 % of the time
            radius = rng.uniform(0.35, 0.65) * covers[0][1]
            if rng.random() < 0.7:
                r0, c0 = covers[0][1], covers[0][2]
                angle = rng.uniform(0, 2 * math.pi)
                centre = c0 + rng.uniform(0.5, 1.1) * r0 * np.array([math.cos(angle), math.sin(angle)])
            else:
                centre = rng.uniform(0.1, 0.9, 2) * size
        cover = _object_mask(cls, centre, radius, math.exp(rng.uniform(-0.2, 0.2)),
                             rng.uniform(0, 2 * math.pi), size)
        if i == 0:
            main_area = cover.sum()
        else:  # keep the main object mostly visible: it carries the label
            hidden = np.maximum.reduce([c for c, _, _ in covers[1:]] + [cover])
            if (covers[0][0] * (1 - hidden)).sum() < (1 - MAX_HIDDEN) * main_area:
                continue
        covers.append((cover, radius, centre))
        classes.append(cls)
        # colour: far from the background's colours, and a distractor's from the main object's,
        # so that the shapes stay visible and do not merge
        colour = _distinct_colour(rng, avoid)
        if i == 0:
            avoid = avoid + [colour]
        fill = rng.random()
        if fill < 0.6:          # flat
            paint = colour
        else:                   # shaded or striped: a second, darker or lighter tone
            t = _pattern(rng, size, "gradient" if fill < 0.8 else "stripes")[..., None]
            paint = colour * (0.65 + 0.7 * t)
        alpha = cover[..., None]
        image = image * (1 - alpha) + np.clip(paint, 0, 255) * alpha
    image = image + rng.uniform(0, NOISE_MAX) * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    # visible part of each object: covered (>= half) and not covered by any later object
    visible = []
    above = np.zeros((size, size), bool)
    for cover, _, _ in reversed(covers):
        mine = cover >= 0.5
        visible.append(mine & ~above)
        above |= mine
    masks = np.stack(visible[::-1])
    return Scene(image, classes[0], masks, classes)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLIT_CODES:
        raise ValueError(f"Unknown scenes split {split!r}; use one of {sorted(SPLIT_CODES)}.")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]))


class SceneDataset:
    """Map-style dataset of synthetic scenes: `ds[i] -> (transform(PIL image), label)`.

    split: "train" or "test" (held out: a disjoint seed stream); length: number of scenes
    (default 20 000 train, 2 000 test); seed: base seed of the whole dataset.
    `ds.scene(i)` gives the full `Scene` (image array, label, per-object visible masks).
    """

    classes = CLASSES
    num_classes = len(CLASSES)

    def __init__(self, split: str = "train", image_size: int = 32, length: int | None = None,
                 seed: int = 0, transform=None):
        if split not in SPLIT_CODES:
            raise ValueError(f"Unknown scenes split {split!r}; use one of {sorted(SPLIT_CODES)}.")
        if image_size < 16:
            raise ValueError(f"scenes need image_size >= 16, got {image_size}.")
        self.split, self.image_size, self.seed, self.transform = split, int(image_size), int(seed), transform
        self.length = DEFAULT_LENGTH[split] if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"scene index {index} out of range for {self.length} scenes")
        return render_scene(scene_rng(self.seed, self.split, index), self.image_size)

    def __getitem__(self, index: int):
        scene = self.scene(index)
        image = Image.fromarray(scene.image)
        return (self.transform(image) if self.transform else image), scene.label

    @property
    def targets(self) -> list[int]:
        return [self.scene(i).label for i in range(self.length)]
