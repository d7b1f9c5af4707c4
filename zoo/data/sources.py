"""Real-image sources: Fashion-MNIST (local IDX files or the Hub), any image folder, any Hub dataset.

Every dataset here yields `(transform(PIL RGB image), label)`.

- `FashionMNIST`: the four IDX files (gzip or raw) of a local folder, default
  `/usr/share/datasets/fashion-mnist/` (Debian: `apt-get install -y dataset-fashion-mnist`), read
  with numpy (`read_idx`); or, with `source="hub"` (or "auto" when the folder is missing), the Hub
  copy `zalando-datasets/fashion_mnist` through `datasets` (needs internet once). Grayscale 28 px is
  replicated to 3 channels and brought to `image_size` by bilinear resizing (`fit="resize"`, the
  default) or by centred black padding (`fit="pad"`, lossless for sizes >= 28).
- `HFImages`: `imagefolder` (`datasets.load_dataset("imagefolder", data_dir=root)`, offline) and
  `hf:<id>` (`datasets.load_dataset(id)`). A Hub dataset is streamed (`streaming=True`, an
  `IterableDataset`: no full download, order = shard order with a shuffle buffer, no `len`) when
  asked or, with `streaming="auto"`, when the Hub's metadata says it is larger than
  `stream_above_gb` (default 2 GB). A streamed dataset shards itself over DataLoader workers;
  for several processes call `datasets.distributed.split_dataset_by_node` on `ds.hf` first.
  Raw images are returned at their own size: the transform crops / resizes.

Unreadable images (`HFImages` decodes images itself): with `strict=False` (default) the sample
comes back as None, `collate_skip_bad` drops it from the batch, and `dataset.skipped` (a `SkipLog`
shared with DataLoader worker processes) counts it and keeps the first paths for the end-of-run
report; with `strict=True` an `UnreadableImageError` naming the path stops the run.

Example:
    >>> from torch.utils.data import DataLoader
    >>> from zoo.data.sources import FashionMNIST, collate_skip_bad
    >>> ds = FashionMNIST("test", image_size=32)                       # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=256, collate_fn=collate_skip_bad)  # doctest: +SKIP
    >>> ds.skipped.report()                                            # doctest: +SKIP
    'no unreadable images'
"""
from __future__ import annotations

import gzip
import io
import math
import multiprocessing as mp
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset
from torch.utils.data import default_collate

FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FMNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataMissingError(FileNotFoundError):
    """A dataset is not where it was looked for; the message says what to install or pass."""


class UnreadableImageError(RuntimeError):
    """An image could not be decoded (raised with strict=True; the message names the path)."""


# ---------------------------------------------------------------------------------------------
# Unreadable images: skipped, counted across worker processes, reported at the end.

class SkipLog:
    """Counts samples skipped as unreadable, across DataLoader worker processes.

    The count and the first few paths live in shared memory, so the training loop (main process)
    reads what the workers recorded: `log.count`, `log.paths`, `log.report()`.
    """

    def __init__(self, keep_bytes: int = 4096):
        self._count = mp.Value("q", 0)
        self._paths = mp.Array("c", keep_bytes)

    def record(self, path: str, error: BaseException | str) -> None:
        with self._count.get_lock():
            self._count.value += 1
            entry = f"{path}: {error}".replace("\n", " ")[:300].encode(errors="replace") + b"\n"
            used = len(self._paths.value)
            if used + len(entry) < len(self._paths):
                self._paths[used:used + len(entry)] = entry

    @property
    def count(self) -> int:
        return int(self._count.value)

    @property
    def paths(self) -> list[str]:
        return [p for p in self._paths.value.decode(errors="replace").split("\n") if p]

    def report(self) -> str:
        if self.count == 0:
            return "no unreadable images"
        shown = self.paths
        more = f" (first {len(shown)} listed)" if len(shown) < self.count else ""
        return f"{self.count} unreadable image(s) skipped{more}:\n  " + "\n  ".join(shown)


def collate_skip_bad(batch: list):
    """default_collate without the samples that came back as None (unreadable images).

    Returns None when every sample of the batch was unreadable: skip that step.
    """
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


def decode_image(value, strict: bool, log: SkipLog) -> Image.Image | None:
    """A `datasets` image cell ({"bytes", "path"}, a PIL image or a path) -> RGB PIL image or None."""
    path = "<bytes>"
    try:
        if isinstance(value, Image.Image):
            image = value
        else:
            if isinstance(value, dict):
                path = value.get("path") or "<bytes>"
                data = value.get("bytes")
                src = io.BytesIO(data) if data is not None else value.get("path")
            else:
                path = src = str(value)
            image = Image.open(src)
            image.load()  # decode now: a truncated file fails here, not later in a transform
        return image.convert("RGB")
    except Exception as e:  # noqa: BLE001  PIL raises OSError, SyntaxError, ValueError, ...
        if strict:
            raise UnreadableImageError(f"Cannot read image {path}: {type(e).__name__}: {e}") from e
        log.record(path, f"{type(e).__name__}: {e}")
        return None


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST

# Written here rather than torchvision.datasets.mnist.read_image_file / read_label_file: measured
# with torchvision 0.29, their reader opens the path with plain open(), so it cannot read the
# .gz files Debian's dataset-fashion-mnist installs (a bare AssertionError on the gzip magic);
# through a gunzipped temp file it is slower (1.04 s vs 0.62 s for the train images), and a bad
# file gives a bare AssertionError (gone under python -O) or a RuntimeError from a reshape
# instead of naming the file and what is wrong with it (tests/test_data.py checks the messages).
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array, checking its size.

    Format: 2 zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
    dimension, then the data (big-endian).
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read IDX file ({type(e).__name__}: {e}); "
                         "the file is corrupt or truncated, reinstall or re-download it.") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {data[:4].hex() or 'missing'}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(data)} bytes).")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX data has {len(data) - header} bytes, the header {dims} "
                         f"says {expected}; the file is truncated or corrupt.")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.exists():
            return candidate
    return None


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None, source: str = "auto"):
    """(images (N, 28, 28) uint8, labels (N,) int64) of a Fashion-MNIST split."""
    if split not in FMNIST_FILES:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; use 'train' or 'test'.")
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"Unknown Fashion-MNIST source {source!r}; use 'auto', 'local' or 'hub'.")
    root = Path(root or FMNIST_ROOT)
    files = [_find(root, name) for name in FMNIST_FILES[split]]
    if source != "hub" and all(files):
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{root}: Fashion-MNIST files disagree: images {images.shape}, "
                             f"labels {labels.shape}.")
        return images, labels.astype(np.int64)
    missing = [f"{root / n}.gz" for n, f in zip(FMNIST_FILES[split], files) if f is None]
    help_ = (f"Fashion-MNIST {split} files not found: {', '.join(missing)}. Install them with "
             "`apt-get update && apt-get install -y dataset-fashion-mnist` (Debian), or pass "
             "root=<folder holding the IDX files>, or use source='hub' with internet access "
             f"(Hub dataset {FMNIST_HUB_ID}).")
    if source == "local" or os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no"):
        raise DataMissingError(help_)
    try:
        import datasets
        hub = datasets.load_dataset(FMNIST_HUB_ID, split=split)
    except Exception as e:  # noqa: BLE001  offline, not cached, ...
        raise DataMissingError(f"{help_} The Hub copy failed too: {type(e).__name__}: {e}") from e
    images = np.stack([np.asarray(im, np.uint8) for im in hub["image"]])
    return images, np.asarray(hub["label"], np.int64)


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as 3-channel PIL images of `image_size`: `ds[i] -> (transform(image), label)`.

    Example:
        >>> ds = FashionMNIST("train", image_size=32)   # doctest: +SKIP
        >>> ds[0][0].size, ds[0][1], len(ds)            # doctest: +SKIP
        ((32, 32), 9, 60000)
    """

    classes = FMNIST_CLASSES
    num_classes = 10

    def __init__(self, split: str = "train", root=None, image_size: int = 32, transform=None,
                 fit: str = "resize", source: str = "auto"):
        if fit not in ("resize", "pad"):
            raise ValueError(f"Unknown fit {fit!r}; use 'resize' or 'pad'.")
        if fit == "pad" and image_size < 28:
            raise ValueError(f"fit='pad' needs image_size >= 28, got {image_size}; use fit='resize'.")
        self.images, self.labels = load_fashion_mnist(split, root, source)
        self.image_size, self.transform, self.fit = int(image_size), transform, fit
        self.skipped = SkipLog(keep_bytes=16)  # IDX arrays cannot hold an unreadable image

    def __len__(self) -> int:
        return len(self.images)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def image(self, index: int) -> Image.Image:
        image, s = Image.fromarray(self.images[index], "L"), self.image_size
        if image.size != (s, s):
            if self.fit == "pad":  # centred on black, the images' own background
                canvas = Image.new("L", (s, s), 0)
                canvas.paste(image, ((s - image.width) // 2, (s - image.height) // 2))
                image = canvas
            else:
                image = image.resize((s, s), Image.BILINEAR)
        return image.convert("RGB")

    def __getitem__(self, index: int):
        image = self.image(index)
        return (self.transform(image) if self.transform else image), int(self.labels[index])


# ---------------------------------------------------------------------------------------------
# imagefolder and Hub datasets through `datasets`

def _columns(features, image_key, label_key):
    import datasets
    if image_key is None:
        image_key = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if label_key is None:
        label_key = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)),
                         next((k for k in ("label", "labels", "fine_label") if k in features), None))
    if image_key not in features:
        raise ValueError(f"No image column found (columns: {list(features)}); pass image_key=.")
    if label_key not in features:
        raise ValueError(f"No label column found (columns: {list(features)}); pass label_key=.")
    return image_key, label_key


class HFImages(torch.utils.data.Dataset):
    """A map-style `datasets.Dataset` of images and labels, decoded here (unreadable -> skipped)."""

    def __init__(self, hf, transform=None, strict: bool = False, image_key=None, label_key=None,
                 name: str = ""):
        import datasets
        self.image_key, self.label_key = _columns(hf.features, image_key, label_key)
        self.hf = hf.cast_column(self.image_key, datasets.Image(decode=False))
        label = hf.features[self.label_key]
        self.classes = tuple(label.names) if isinstance(label, datasets.ClassLabel) else None
        self.num_classes = len(self.classes) if self.classes else None
        self.transform, self.strict, self.name = transform, strict, name
        self.skipped = SkipLog()

    def __len__(self) -> int:
        return len(self.hf)

    @property
    def targets(self) -> list[int]:
        return list(self.hf[self.label_key])

    def __getitem__(self, index: int):
        row = self.hf[index]
        image = decode_image(row[self.image_key], self.strict, self.skipped)
        if image is None:
            return None
        return (self.transform(image) if self.transform else image), int(row[self.label_key])


class HFImagesStream(IterableDataset):
    """A streamed (`datasets.IterableDataset`) image dataset: no length, shards over workers."""

    def __init__(self, hf, transform=None, strict: bool = False, image_key=None, label_key=None,
                 name: str = ""):
        import datasets
        features = hf.features
        if features is None:
            raise ValueError(f"{name}: the streamed dataset does not declare its features; "
                             "pass image_key= and label_key=.")
        self.image_key, self.label_key = _columns(features, image_key, label_key)
        self.hf = hf.cast_column(self.image_key, datasets.Image(decode=False))
        label = features[self.label_key]
        self.classes = tuple(label.names) if isinstance(label, datasets.ClassLabel) else None
        self.num_classes = len(self.classes) if self.classes else None
        self.transform, self.strict, self.name = transform, strict, name
        self.skipped = SkipLog()

    def __iter__(self):
        for row in self.hf:  # datasets splits the shards over DataLoader workers itself
            image = decode_image(row[self.image_key], self.strict, self.skipped)
            if image is None:
                yield None
                continue
            yield (self.transform(image) if self.transform else image), int(row[self.label_key])


def _available_splits(error: Exception) -> str:
    return str(error).split("Available splits:")[-1].strip() if "Available splits" in str(error) else ""


def image_folder(root, split: str = "train", transform=None, strict: bool = False,
                 cache_dir=None, **kw) -> HFImages:
    """`datasets.load_dataset("imagefolder", data_dir=root)` (class = sub-folder name), offline."""
    import datasets
    if root is None or not Path(root).is_dir():
        raise DataMissingError(f"imagefolder needs root=<a folder of class sub-folders>; "
                               f"{root!r} is not a folder.")
    try:
        hf = datasets.load_dataset("imagefolder", data_dir=str(root), split=split, cache_dir=cache_dir)
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"imagefolder {root}: no split {split!r}. {_available_splits(e)}") from e
        raise
    return HFImages(hf, transform, strict, name=f"imagefolder:{root}", **kw)


def hub_dataset(hf_id: str, split: str = "train", transform=None, strict: bool = False,
                streaming: bool | str = "auto", stream_above_gb: float = 2.0, cache_dir=None,
                revision=None, **kw):
    """Any `datasets` id (Hub or local path): map-style, or streamed when large (module docstring)."""
    import datasets
    if streaming == "auto":
        try:
            info = datasets.load_dataset_builder(hf_id, revision=revision, cache_dir=cache_dir).info
            size = max(info.dataset_size or 0, info.download_size or 0)
        except Exception:  # noqa: BLE001  no metadata: the load below gives the real error
            size = 0
        streaming = size > stream_above_gb * 1e9
    try:
        hf = datasets.load_dataset(hf_id, split=split, streaming=bool(streaming),
                                   cache_dir=cache_dir, revision=revision)
    except Exception as e:  # noqa: BLE001
        raise DataMissingError(f"Cannot load dataset {hf_id!r} split {split!r} with `datasets` "
                               f"({type(e).__name__}: {e}). A Hub id needs internet access or a "
                               "local cache; a local folder needs its data files.") from e
    cls = HFImagesStream if streaming else HFImages
    return cls(hf, transform, strict, name=f"hf:{hf_id}", **kw)
