"""zoo.evaluation against independent computations: kNN, linear probe, mask score."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.evaluation import (block_masks_like, extract_features, knn_classify, knn_predict,
                            linear_probe, mask_cover, mask_ious, mask_score, random_masks_like,
                            score_masker)

# ------------------------------------------------------------------------------------------- kNN


def brute_force_knn(train_f, train_y, test_f, k, T, C):
    """numpy, one test sample at a time: cosine, neighbours by (-sim, index), exp(sim / T) votes."""
    tr = train_f / np.linalg.norm(train_f, axis=1, keepdims=True)
    te = test_f / np.linalg.norm(test_f, axis=1, keepdims=True)
    preds = []
    for q in te:
        sim = tr @ q
        order = sorted(range(len(tr)), key=lambda i: (-sim[i], i))[:k]
        votes = np.zeros(C)
        for i in order:
            votes[train_y[i]] += math.exp(sim[i] / T)
        preds.append(int(np.argmax(votes)))              # numpy: first max on ties
    return np.array(preds)


@pytest.mark.parametrize("T", [0.1, 0.5])
def test_knn_matches_brute_force(T):
    rng = np.random.default_rng(0)
    train_f, test_f = rng.normal(size=(40, 6)), rng.normal(size=(15, 6))
    train_y, test_y = rng.integers(0, 4, 40), rng.integers(0, 4, 15)
    ks = (1, 3, 7, 20, 40)
    preds = knn_predict(torch.tensor(train_f), torch.tensor(train_y), torch.tensor(test_f), k=ks, T=T,
                        num_classes=4, batch_size=4)
    for k in ks:
        expected = brute_force_knn(train_f, train_y, test_f, k, T, 4)
        assert preds[k].tolist() == expected.tolist(), k
    acc = knn_classify(torch.tensor(train_f), torch.tensor(train_y), torch.tensor(test_f),
                       torch.tensor(test_y), k=ks, T=T, num_classes=4)
    for k in ks:
        assert acc[f"knn_top1_k{k}"] == pytest.approx(100 * np.mean(
            brute_force_knn(train_f, train_y, test_f, k, T, 4) == test_y))


def test_knn_weights_by_hand():
    """Test point (1, 0). Train: a (1, 0) class 0 at sim 1; b, c at sims 0.6 and 0.8, class 1.
    T = 0.1: e^10 = 22026 > e^6 + e^8 = 3384 -> class 0. T = 1: e^1 = 2.72 < e^0.6 + e^0.8 = 4.05
    -> class 1. Unweighted majority would say class 1 for both."""
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, k=3, T=0.1)[3].item() == 0
    assert knn_predict(train, labels, test, k=3, T=1.0)[3].item() == 1


def test_knn_ties():
    test = torch.tensor([[1.0, 0.0]])
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])       # two identical directions
    # neighbour tie at the k boundary: train order decides
    assert knn_predict(same, torch.tensor([0, 1, 2]), test, k=1)[1].item() == 0
    assert knn_predict(same, torch.tensor([1, 0, 2]), test, k=1)[1].item() == 1
    # vote tie (equal weights, two classes): the lowest class wins
    assert knn_predict(same, torch.tensor([1, 0, 2]), test, k=2)[2].item() == 0
    assert knn_predict(same, torch.tensor([2, 1, 0]), test, k=2)[2].item() == 1


def test_knn_k_larger_than_train_set_and_scale_invariance():
    rng = np.random.default_rng(1)
    tr, te = torch.tensor(rng.normal(size=(10, 4))), torch.tensor(rng.normal(size=(5, 4)))
    y, ty = torch.tensor(rng.integers(0, 3, 10)), torch.tensor(rng.integers(0, 3, 5))
    big = knn_classify(tr, y, te, ty, k=(10, 200))
    assert big["knn_top1_k200"] == big["knn_top1_k10"]
    assert knn_classify(tr * 7.5, y, te * 0.1, ty, k=(10, 200)) == big       # cosine
    with pytest.raises(ValueError, match="labels"):
        knn_predict(tr, y[:5], te)


def test_knn_low_temperature_does_not_overflow():
    rng = np.random.default_rng(2)
    tr, y = torch.tensor(rng.normal(size=(30, 5))), torch.tensor(rng.integers(0, 3, 30))
    te = tr[:10] + 0.01
    # T = 0.001: exp(sim / T) overflows float32; the shifted weights do not, and give the 1-NN
    assert knn_predict(tr, y, te, k=5, T=1e-3)[5].tolist() == y[:10].tolist()


# ---------------------------------------------------------------------------------- linear probe

def test_linear_probe_separates_separable_data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 4
    y = torch.arange(300) % 3
    f = centres[y] + torch.randn(300, 16, generator=g)
    out = linear_probe(f[:240], y[:240], f[240:], y[240:], epochs=20)
    assert out["linear_top1"] == 100.0 and out["linear_train_top1"] == 100.0


def test_linear_probe_is_linear():
    """XOR is not linearly separable: a linear probe cannot exceed ~75 % on it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (400, 2), generator=g).float()
    y = (x[:, 0] != x[:, 1]).long()
    f = x * 2 - 1 + 0.05 * torch.randn(400, 2, generator=g)
    out = linear_probe(f[:300], y[:300], f[300:], y[300:], epochs=20)
    assert out["linear_top1"] < 80.0


def test_linear_probe_schedule_and_result_by_hand(monkeypatch):
    """Per step: lr 0.1 * (1 + cos(pi t / T)) / 2 (t = 0 .. T-1), and the result of the protocol
    written out by hand: standardise, zero init, seed-0 shuffles, SGD with momentum 0.9."""
    g = torch.Generator().manual_seed(5)
    n, d, C, epochs, bs = 300, 6, 3, 4, 256
    f, y = torch.randn(n, d, generator=g), torch.randint(0, C, (n,), generator=g)
    tf, ty = torch.randn(3000, d, generator=g), torch.randint(0, C, (3000,), generator=g)
    lrs, step = [], torch.optim.SGD.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)
    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    out = linear_probe(f, y, tf, ty, epochs=epochs, batch_size=bs)
    T = epochs * math.ceil(n / bs)
    assert lrs == [0.1 * 0.5 * (1 + math.cos(math.pi * t / T)) for t in range(T)]

    mu, sd = f.mean(0), f.std(0)
    w, b = torch.zeros(C, d, requires_grad=True), torch.zeros(C, requires_grad=True)
    bufs, shuffle, t = [None, None], torch.Generator().manual_seed(0), 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=shuffle)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            loss = F.cross_entropy((f[idx] - mu) / sd @ w.T + b, y[idx])
            grads = torch.autograd.grad(loss, (w, b))
            with torch.no_grad():
                for i, (p, gr) in enumerate(zip((w, b), grads)):
                    bufs[i] = gr.clone() if bufs[i] is None else 0.9 * bufs[i] + gr
                    p -= lrs[t] * bufs[i]
            t += 1
    with torch.no_grad():
        top1 = [100.0 * float((((x - mu) / sd @ w.T + b).argmax(1) == t).float().mean())
                for x, t in ((tf, ty), (f, y))]
    assert [out["linear_top1"], out["linear_train_top1"]] == pytest.approx(top1)


def test_linear_probe_is_deterministic():
    g = torch.Generator().manual_seed(3)
    f, y = torch.randn(100, 8, generator=g), torch.randint(0, 4, (100,), generator=g)
    assert linear_probe(f, y, f, y, epochs=3) == linear_probe(f, y, f, y, epochs=3)


# -------------------------------------------------------------------------------------- features

def test_extract_features_eval_mode_no_grad_and_restores_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.Dropout(0.9))
    model.train()
    data = [(torch.randn(3, 2, 2), i % 3) for i in range(10)] + [None]   # one unreadable sample
    f1, y = extract_features(model, data, batch_size=4)
    f2, _ = extract_features(model, data, batch_size=3)
    assert f1.shape == (10, 4) and not f1.requires_grad
    assert torch.allclose(f1, f2, atol=1e-6)                       # dropout off: eval mode
    assert y.tolist() == [i % 3 for i in range(10)] and model.training
    fb, _ = extract_features(model, data, bf16=True)
    assert fb.dtype == torch.float32 and torch.allclose(fb, f1, atol=0.1)


# ------------------------------------------------------------------------------------ mask score

def _gt():
    g = torch.zeros(2, 4, 4, dtype=torch.bool)
    g[0, :2, :2] = True          # object 0: top-left 2 x 2
    g[1, 2:, :] = True           # object 1: bottom half
    return g


def test_mask_score_perfect_and_disjoint():
    gt = _gt()
    perfect = gt[None].float()                                   # K = 2 masks = the objects
    assert mask_score(perfect, [gt]) == 1.0
    disjoint = torch.zeros(1, 1, 4, 4)
    disjoint[0, 0, :2, 2:] = 1                                   # top-right: touches neither
    assert mask_score(disjoint, [gt]) == 0.0


def test_mask_score_partial_overlap_by_hand():
    gt = _gt()
    m = torch.zeros(1, 2, 4, 4)
    m[0, 0, :2, :] = 0.9         # top half: object 0 IoU 4/8, object 1 IoU 0
    m[0, 1, 1:, :] = 0.5         # rows 1-3 (at the threshold: on): object 1 IoU 8/12, object 0 2/14
    ious = mask_ious(m, [gt])
    assert ious.tolist() == pytest.approx([4 / 8, 8 / 12])
    assert mask_score(m, [gt]) == pytest.approx((0.5 + 2 / 3) / 2)
    m[0, 1] *= 0.98              # 0.49: below the threshold, mask 1 is empty
    assert mask_ious(m, [gt]).tolist() == pytest.approx([0.5, 0.0])


def test_mask_score_patch_masks_padding_and_batches():
    gt = _gt()
    patch = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    patch[0, 0, 1, :] = True                                     # bottom half on a 2 x 2 grid
    padded = torch.cat([gt, torch.zeros(1, 4, 4, dtype=torch.bool)])   # an empty padding object
    assert mask_ious(patch, padded[None]).tolist() == pytest.approx([0.0, 1.0])
    two = torch.stack([gt[None].float()[0], torch.zeros(2, 4, 4)])     # image 2: masks empty
    assert mask_score(two, [gt, gt]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="images"):
        mask_score(two, [gt])


def test_baselines_keep_k_and_area():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, 4, 32, 32)
    masks[:, 0, :16] = 1                     # half
    masks[:, 1, 16:, :8] = 1                 # an eighth
    masks[:, 2, 16:, 8:] = 1                 # three eighths
    rnd = random_masks_like(masks, (32, 32), grid=8, generator=g)
    blk = block_masks_like(masks, (32, 32), generator=g)
    area = masks.flatten(2).sum(2)
    assert rnd.shape == blk.shape == (3, 4, 32, 32)
    assert torch.equal(rnd.flatten(2).sum(2).float(), area)      # whole cells: exact here
    assert ((blk.flatten(2).sum(2).float() - area).abs() <= 0.15 * area + 32).all()
    assert not blk[:, 3].any() and not rnd[:, 3].any()           # empty slot stays empty


def test_score_masker_on_scenes():
    class Halves(torch.nn.Module):
        def forward(self, x):
            m = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            m[:, 0, :, : x.shape[-1] // 2] = 1
            m[:, 1] = 1 - m[:, 0]
            return m
    r = score_masker(Halves(), image_size=32, n=24, batch_size=10)
    assert r["mask_k"] == 2 and r["mask_area"] == pytest.approx(0.5) and r["mask_images"] == 24
    for key in ("mask_score", "mask_score_random", "mask_score_block",
                "mask_cover", "mask_cover_random", "mask_cover_block"):
        assert 0.0 < r[key] < 1.0
    assert r["mask_cover"] >= 0.5            # two halves: one of them hides at least half of any scene
    assert score_masker(Halves(), n=24, batch_size=10) == r                  # seeded, repeatable


def test_mask_cover_by_hand():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2, :2] = True                          # object 0: 4 pixels, top left
    gt[1, 3, :] = True                            # object 1: 4 pixels, bottom row; union 8
    m = torch.zeros(1, 3, 4, 4)
    m[0, 0, :2, :] = 1                            # hides object 0 whole: 4 / 8
    m[0, 1, 2:, :3] = 1                           # hides 3 of object 1: 3 / 8
    m[0, 2] = 0.4                                 # below the threshold: hides nothing
    assert mask_cover(m, [gt]).tolist() == pytest.approx([4 / 8])
    m[0, 1, 1:, :] = 1                            # rows 1-3: object 0's row 1 (2) + object 1 (4)
    assert mask_cover(m, [gt]).tolist() == pytest.approx([6 / 8])
    m[0, 2] = 1                                   # the whole image: every object hidden
    assert mask_cover(m, [gt]).tolist() == pytest.approx([1.0])
    none = torch.zeros(1, 4, 4, dtype=torch.bool)              # an image without objects: skipped
    assert mask_cover(torch.cat([m, m]), [gt, none]).tolist() == pytest.approx([1.0])
    with pytest.raises(ValueError, match="images"):
        mask_cover(m, [gt, gt])
