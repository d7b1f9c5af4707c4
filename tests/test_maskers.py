"""Fixed patch maskers: exact counts, block shape, ExtreMA's disjoint subsets, reproducibility."""
import pytest
import torch

from zoo.maskers import BlockMasker, MultiMasker, RandomMasker, kept_count


def _images(b=4, size=32):
    return torch.zeros(b, 3, size, size)


@pytest.mark.parametrize("size,patch,ratio,hidden", [(32, 4, 0.75, 48), (224, 16, 0.75, 147),
                                                     (96, 16, 0.75, 27), (32, 4, 0.5, 32),
                                                     (32, 8, 0.9, 15), (224, 16, 0.8, 157)])
def test_random_masker_hides_exactly_the_mae_count(size, patch, ratio, hidden):
    masks = RandomMasker(patch, ratio, num_masks=3)(_images(5, size))
    g = size // patch
    assert masks.dtype == torch.bool and masks.shape == (5, 3, g, g)
    assert (masks.sum((-2, -1)) == hidden).all()
    assert hidden == g * g - int(g * g * (1 - ratio))


def test_random_masker_is_uniform_and_copies_differ():
    torch.manual_seed(0)
    masks = RandomMasker(4, 0.75, num_masks=2)(_images(1000))           # (1000, 2, 8, 8)
    freq = masks.float().mean((0, 1))
    assert (freq - 0.75).abs().max() < 0.05                              # every cell ~75 % hidden
    assert (masks[:, 0] != masks[:, 1]).any((-2, -1)).float().mean() > 0.99


def _boundary_per_cell(masks):
    """Hidden-visible 4-neighbour pairs inside the grid per hidden cell (blocks: a short boundary)."""
    m = masks.flatten(0, 1).float()                                     # (N, h, w)
    edges = (m[:, 1:] != m[:, :-1]).sum() + (m[:, :, 1:] != m[:, :, :-1]).sum()
    return float(edges / m.sum())


@pytest.mark.parametrize("size,patch,ratio", [(32, 4, 0.3), (224, 16, 0.4), (96, 16, 0.3),
                                              (32, 4, 0.6), (64, 4, 0.3)])
def test_block_masker_exact_count_and_contiguous(size, patch, ratio):
    torch.manual_seed(1)
    masks = BlockMasker(patch, ratio, num_masks=2)(_images(100, size))
    g = size // patch
    target = g * g - kept_count(g * g, ratio)
    assert target >= ratio * g * g                                      # "at least" the ratio
    assert masks.dtype == torch.bool and masks.shape == (100, 2, g, g)
    assert (masks.sum((-2, -1)) == target).all()
    # blocks: a much shorter hidden/visible boundary than random cells of the same count
    blocks = _boundary_per_cell(masks)
    rand = _boundary_per_cell(RandomMasker(patch, ratio, num_masks=2)(_images(100, size)))
    assert blocks < 0.6 * rand, (blocks, rand)


def test_block_masker_blocks_are_rectangles_when_one_fits():
    # one block of the whole target: min = max = target cells, so the mask is one rectangle (or a
    # top-up when no rectangle of that area fits the draw)
    torch.manual_seed(2)
    masks = BlockMasker(4, 0.25, min_block_patches=16, max_block_patches=16, min_aspect=1.0)(_images(20))
    for m in masks[:, 0]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert m.sum() == 16
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == 16   # a 4 x 4 square


def test_multi_masker_disjoint_subsets_of_the_right_size():
    torch.manual_seed(0)
    for size, patch, ratio, k, v in [(224, 16, 0.8, 5, 39), (224, 16, 0.9, 8, 19), (32, 4, 0.8, 5, 12)]:
        masks = MultiMasker(patch, ratio, k)(_images(6, size))
        g = size // patch
        assert masks.dtype == torch.bool and masks.shape == (6, k, g, g)
        visible = ~masks
        assert (visible.sum((-2, -1)) == v).all()
        assert visible.sum(1).max() == 1                                # no cell visible twice
        assert (visible.sum((1, 2, 3)) == k * v).all()
    loose = MultiMasker(4, 0.8, 5, disjoint=False)(_images(50))
    assert ((~loose).sum((-2, -1)) == 12).all()
    assert (~loose).sum(1).max() > 1                                    # independent draws overlap


def test_multi_masker_refuses_impossible_disjoint_sets():
    with pytest.raises(ValueError, match="disjoint"):
        MultiMasker(4, 0.5, 3)(_images())                               # 3 x 32 > 64 cells


@pytest.mark.parametrize("masker", [RandomMasker(4, 0.75, 2), BlockMasker(4, 0.3, 2), MultiMasker(4, 0.8, 5),
                                    MultiMasker(4, 0.8, 5, disjoint=False)], ids=repr)
def test_reproducible_from_torch_rng(masker):
    torch.manual_seed(7)
    a = masker(_images(8))
    torch.manual_seed(7)
    b = masker(_images(8))
    state = torch.get_rng_state()                                       # as a resumed run restores it
    c = masker(_images(8))
    torch.set_rng_state(state)
    d = masker(_images(8))
    assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)
    assert a.device == _images().device
    assert masker.penalty(a).item() == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        RandomMasker(5, 0.75)(_images())
    with pytest.raises(ValueError, match="mask_ratio"):
        RandomMasker(4, 1.0)
    with pytest.raises(ValueError, match="no visible"):
        RandomMasker(16, 0.9)(_images(2, 32))                           # 4 cells, none kept
    with pytest.raises(ValueError, match="min_aspect"):
        BlockMasker(4, 0.3, min_aspect=2.0)


def test_adios_unet_depth_from_num_blocks_as_the_simsiam_scripts_set_it():
    import torch
    import zoo
    from zoo.methods.adios import ADIOSOccluder
    default = ADIOSOccluder(96, num_masks=6, mask_fbase=16)
    four = ADIOSOccluder(96, num_masks=6, mask_fbase=16, num_blocks=4)
    assert (default.num_blocks, default.featuremap_size) == (5, 6)           # log2(96) - 1, 96 / 2^4
    assert (four.num_blocks, four.featuremap_size, len(four.down), len(four.up)) == (4, 12, 4, 4)
    assert four.mlp[1].in_features == 2 * 16 * 12 * 12                       # bottleneck over the 12 x 12 map
    assert four.mlp[5].out_features == 2 * 16 * 12 * 12
    # channels of the reference's 4-block table (src/utils/unet.py), c = 16, now at 96 px
    c = 16
    convs = lambda blocks: [(b[0].in_channels, b[0].out_channels) for b in blocks]   # noqa: E731
    assert convs(four.down) == list(zip([3, c, 2 * c, 2 * c], [c, 2 * c, 2 * c, 2 * c]))
    assert convs(four.up) == list(zip([4 * c, 4 * c, 4 * c, 2 * c], [2 * c, 2 * c, c, c]))
    m = four(torch.randn(2, 3, 96, 96))
    assert m.shape == (2, 6, 96, 96) and torch.allclose(m.sum(1), torch.ones(2, 96, 96), atol=1e-5)
    with pytest.raises(ValueError, match="num_blocks"):
        ADIOSOccluder(96, num_blocks=7)                                      # 96 is not divisible by 2^6
    p = zoo.create_pretrainer("adios_resnet18", objective="simsiam", img_size=96, num_blocks=4, mask_fbase=8)
    assert p.masker.num_blocks == 4
    p = zoo.create_pretrainer("adios_s_resnet18", objective="simsiam", img_size=96, num_blocks=4, mask_fbase=8)
    assert p.masker.num_blocks == 4 and p.masker.featuremap_size == 12
