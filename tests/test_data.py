"""zoo.data: scenes, Fashion-MNIST IDX files, image folders with corrupt files, view presets."""
from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from zoo.data import (DATASETS, DataMissingError, UnreadableImageError, build_dataset,
                      collate_skip_bad, eval_transform, num_classes, two_views)
from zoo.data.scenes import CLASSES, SceneDataset
from zoo.data.sources import FMNIST_ROOT, FashionMNIST, read_idx
from zoo.evaluation import knn_classify

# --------------------------------------------------------------------------------------- scenes


def test_scenes_deterministic_per_seed():
    a, b = SceneDataset("train", seed=0), SceneDataset("train", seed=0)
    for i in (0, 7, 19_999):
        sa, sb = a.scene(i), b.scene(i)
        assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.masks, sb.masks)
        assert sa.label == sb.label and sa.classes == sb.classes
    other = SceneDataset("train", seed=1)
    assert not np.array_equal(a.scene(0).image, other.scene(0).image)


def test_scenes_train_and_test_are_disjoint():
    digest = lambda s: hashlib.sha1(s.image.tobytes()).hexdigest()  # noqa: E731
    train = {digest(SceneDataset("train").scene(i)) for i in range(300)}
    test = {digest(SceneDataset("test").scene(i)) for i in range(300)}
    assert len(train) == 300 and len(test) == 300  # no repeats within a split either
    assert not train & test


def test_scenes_labels_masks_and_classes():
    ds = SceneDataset("train", image_size=32)
    seen, n_objects, largest = set(), set(), 0
    for i in range(300):
        s = ds.scene(i)
        assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
        assert 0 <= s.label < len(CLASSES) == ds.num_classes == num_classes("scenes")
        assert s.label == s.classes[0]                      # label = the main object
        assert set(s.classes) == {s.label}                  # one class per scene: the label holds in any crop
        assert s.masks.shape == (len(s.classes), 32, 32) and s.masks.dtype == bool
        assert 1 <= len(s.classes) <= 4
        # visible parts are occlusion-aware: no pixel belongs to two objects
        assert s.masks.sum(0).max() <= 1
        areas = s.masks.reshape(len(s.masks), -1).sum(1)
        assert areas[0] >= 0.04 * 32 * 32                 # the main object is well visible
        largest += bool(areas[0] == areas.max())
        seen.add(s.label)
        n_objects.add(len(s.classes))
    assert len(seen) >= 6 and n_objects == {1, 2, 3, 4}
    assert largest >= 0.95 * 300                          # ... and nearly always the largest
    image, label = ds[3]
    assert isinstance(image, Image.Image) and image.size == (32, 32) and label == ds.scene(3).label


def test_scene_masks_follow_the_drawn_objects():
    """Colour edges of the image lie on mask boundaries: adjacent pixels that the masks assign to
    different objects (or object / background) differ much more than pixels of one region. A mask
    shifted by even one pixel against the image loses most of that contrast."""
    ds = SceneDataset("train", image_size=64)
    across, within, shifted = [], [], []
    for i in range(60):
        s = ds.scene(i)
        region = np.zeros((64, 64), int)                   # 0 = background, j + 1 = object j
        for j, m in enumerate(s.masks):
            region[m] = j + 1
        img = s.image.astype(float)
        diff = np.abs(img[:, 1:] - img[:, :-1]).sum(-1)    # horizontal neighbours
        boundary = region[:, 1:] != region[:, :-1]
        across.append(diff[boundary].mean())
        within.append(diff[~boundary].mean())
        moved = np.roll(region, 1, axis=0)
        shifted.append(diff[moved[:, 1:] != moved[:, :-1]].mean())
    assert np.mean(across) > 2.0 * np.mean(within)      # measured: ~4.3
    assert np.mean(across) > 1.3 * np.mean(shifted)     # measured: ~1.6


def test_scenes_raw_pixel_knn_is_far_below_perfect():
    stats = DATASETS["scenes"]
    tf = eval_transform(32, stats["mean"], stats["std"])
    train = SceneDataset("train", length=1500, transform=tf)
    test = SceneDataset("test", length=300, transform=tf)
    tr = torch.stack([train[i][0].flatten() for i in range(len(train))])
    te = torch.stack([test[i][0].flatten() for i in range(len(test))])
    tr_y = torch.tensor([train.scene(i).label for i in range(len(train))])
    te_y = torch.tensor([test.scene(i).label for i in range(len(test))])
    acc = knn_classify(tr, tr_y, te, te_y, k=(20,))["knn_top1_k20"]
    assert acc < 50.0                  # 8 classes, chance 12.5 %; full protocol: ~31 % (report)


def test_scenes_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SceneDataset("val")
    with pytest.raises(IndexError):
        SceneDataset("test", length=5).scene(5)
    with pytest.raises(ValueError, match="Did you mean scenes"):
        build_dataset("scene")


# -------------------------------------------------------------------------------- Fashion-MNIST

def _write_idx(path: Path, array: np.ndarray, code: int = 0x08, compress: bool = True) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def tiny_fmnist(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 3, 3, 7], np.uint8)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


def test_idx_parser_on_a_written_file(tiny_fmnist, tmp_path):
    root, images, labels = tiny_fmnist
    assert np.array_equal(read_idx(root / "train-images-idx3-ubyte.gz"), images)
    assert np.array_equal(read_idx(root / "train-labels-idx1-ubyte.gz"), labels)
    # other dtypes, big-endian, uncompressed
    ints = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    _write_idx(tmp_path / "ints.idx", ints, code=0x0C, compress=False)
    assert np.array_equal(read_idx(tmp_path / "ints.idx"), ints)


def test_idx_parser_rejects_corrupt_files(tiny_fmnist, tmp_path):
    root, images, _ = tiny_fmnist
    raw = gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match="cut.gz.*truncated"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01" + raw[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "broken.gz").write_bytes((root / "train-images-idx3-ubyte.gz").read_bytes()[:50])
    with pytest.raises(ValueError, match="broken.gz"):
        read_idx(tmp_path / "broken.gz")


def test_fashion_mnist_dataset_from_idx_folder(tiny_fmnist):
    root, images, labels = tiny_fmnist
    ds = build_dataset("fashion_mnist", "test", root=root, image_size=32)
    assert len(ds) == 5 and ds.num_classes == 10
    image, label = ds[0]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 9
    a = np.asarray(image)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()   # gray -> 3 channels
    padded = FashionMNIST("test", root, image_size=32, fit="pad")
    p = np.asarray(padded[1][0])[..., 0]
    assert np.array_equal(p[2:30, 2:30], images[1]) and p[:2].sum() == 0       # lossless, centred
    x, y = build_dataset("fashion_mnist", "train", root=root, image_size=32,
                         transform=eval_transform(32, (0.5,) * 3, (0.5,) * 3))[4]
    assert x.shape == (3, 32, 32) and y == 7


def test_fashion_mnist_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")            # never try the network
    with pytest.raises(DataMissingError, match="apt-get install -y dataset-fashion-mnist"):
        build_dataset("fashion_mnist", root=tmp_path)
    with pytest.raises(DataMissingError, match=str(tmp_path)):
        FashionMNIST("train", tmp_path, source="local")


@pytest.mark.skipif(not Path(FMNIST_ROOT, "t10k-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_files():
    test = FashionMNIST("test")
    assert len(test) == 10_000 and test.images.shape == (10_000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert FashionMNIST("train").labels.shape == (60_000,)


# ------------------------------------------------------------------- image folders, corrupt files

@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                root / "train" / cls / f"{i}.png")
    (root / "train" / "dog" / "9.png").write_bytes(b"this is not a png")     # unreadable
    return root


def test_imagefolder_skips_counts_and_reports_unreadable(folder, tmp_path):
    ds = build_dataset("imagefolder", "train", root=folder, cache_dir=tmp_path / "cache",
                       transform=eval_transform(16, (0.5,) * 3, (0.5,) * 3))
    assert len(ds) == 7 and ds.num_classes == 2
    seen = []
    for batch in DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad):
        x, y = batch
        assert x.shape[1:] == (3, 16, 16)
        seen += y.tolist()
    assert sorted(seen) == [0, 0, 0, 1, 1, 1]
    assert ds.skipped.count == 1 and "9.png" in ds.skipped.report()


def test_skip_count_crosses_worker_processes(folder, tmp_path):
    ds = build_dataset("imagefolder", "train", root=folder, cache_dir=tmp_path / "cache",
                       transform=eval_transform(16, (0.5,) * 3, (0.5,) * 3))
    n = sum(len(b[1]) for b in DataLoader(ds, batch_size=2, num_workers=1,
                                           collate_fn=collate_skip_bad) if b is not None)
    assert n == 6 and ds.skipped.count == 1 and any("9.png" in p for p in ds.skipped.paths)


def test_imagefolder_strict_raises_with_the_path(folder, tmp_path):
    ds = build_dataset("imagefolder", "train", root=folder, cache_dir=tmp_path / "cache", strict=True)
    with pytest.raises(UnreadableImageError, match=r"dog[/\\]9\.png"):
        [ds[i] for i in range(len(ds))]


def test_truncated_image_is_unreadable(folder, tmp_path):
    good = folder / "train" / "cat" / "0.png"
    (folder / "train" / "cat" / "cut.png").write_bytes(good.read_bytes()[:60])   # header only
    ds = build_dataset("imagefolder", "train", root=folder, cache_dir=tmp_path / "cache")
    assert sum(ds[i] is None for i in range(len(ds))) == 2 and ds.skipped.count == 2


def test_collate_of_an_all_bad_batch_is_none():
    assert collate_skip_bad([None, None]) is None


def test_hf_dataset_streamed(folder, tmp_path):
    ds = build_dataset(f"hf:{folder}", "train", streaming=True, cache_dir=tmp_path / "cache")
    assert isinstance(ds, torch.utils.data.IterableDataset) and ds.num_classes == 2
    items = list(ds)
    assert sum(x is None for x in items) == 1 and ds.skipped.count == 1
    assert all(isinstance(x[0], Image.Image) for x in items if x is not None)


def test_missing_image_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataMissingError, match="not a folder"):
        build_dataset("imagefolder", root=tmp_path / "nope")


# ---------------------------------------------------------------------------------------- views

def _noise_image(gray=False, size=48):
    a = np.random.default_rng(0).integers(0, 256, (size, size, 1 if gray else 3), dtype=np.uint8)
    return Image.fromarray(np.repeat(a, 3, 2) if gray else a)


@pytest.mark.parametrize("preset", ["simclr", "adios", "byol", "extrema", "mae"])
def test_views_shapes_and_difference(preset):
    torch.manual_seed(0)
    views = two_views(preset, 32, DATASETS["scenes"]["mean"], DATASETS["scenes"]["std"])
    out = views(_noise_image())
    assert len(out) == (1 if preset == "mae" else 2)
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in out)
    if len(out) == 2:
        assert not torch.equal(out[0], out[1])


def test_extrema_views_share_the_crop_simclr_views_do_not():
    """On a noise image, a shared crop leaves the views highly correlated (brightness / contrast
    are monotone); independent crops decorrelate them."""
    def corr(preset):
        torch.manual_seed(0)
        views = two_views(preset, 32, (0.5,) * 3, (0.25,) * 3, grayscale=True)
        cs = []
        for _ in range(10):
            a, b = views(_noise_image(gray=True))
            cs.append(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
        return torch.stack(cs)
    assert corr("extrema").min() > 0.8
    assert corr("simclr").mean() < 0.5
    a, b = two_views("extrema_spatial", 32, (0.5,) * 3, (0.25,) * 3)(_noise_image())
    assert torch.equal(a, b)


def test_grayscale_fallback_is_named_and_stays_gray():
    views = two_views("simclr", 32, (0.5,) * 3, (0.25,) * 3, grayscale=True)
    assert views.preset == "simclr_gray"
    assert all(b.jitter[2:] == (0.0, 0.0) and b.p_gray == 0 for b in views.spec.branches)
    for v in views(_noise_image(gray=True)):
        assert torch.allclose(v[0], v[1]) and torch.allclose(v[1], v[2])
    assert two_views("extrema", 32, (0.5,) * 3, (0.25,) * 3, grayscale=True).preset == "extrema_gray"
    with pytest.raises(ValueError, match="Did you mean simclr"):
        two_views("simclar", 32, (0.5,) * 3, (0.25,) * 3)


def test_eval_transform_is_deterministic():
    tf = eval_transform(32, (0.5,) * 3, (0.25,) * 3)
    image = _noise_image(size=40)
    a, b = tf(image), tf(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
