"""The registry is the test matrix (timm's tests/test_models.py): every registered name, every
objective it accepts, every phase, forward and backward on small inputs (batch 2, the arch's own
image size; widths never shrink), and paper-size configurations' parameter counts on the meta
device against numbers computed here from the papers' layer tables.

Checked per (name, objective): the loss of every phase is a finite scalar; after its backward,
exactly the parameters of `parameters_of(phase)` hold a gradient (no other parameter gets one);
`update(progress)` runs; `exported_backbone()` has exactly the state-dict keys and shapes of
`timm.create_model(entry.timm_arch, num_classes=0, **entry.model_args)`.

The 224-px ViT-S/B pairs are marked slow except the default objective's encoder phase, so the
default run still builds and steps every name.
"""
import warnings

import pytest
import timm
import torch

import zoo
from zoo.backbones import is_vit
from zoo.objectives import MAE
from zoo.registry import METHODS

CNN_SIZE = 32            # ResNets have no size of their own: the CPU-scale input
BATCH = 2


def _cases():
    """(name, objective, phase-scope) for every registered pair; heavy ones split by phase."""
    for name in sorted(METHODS):
        entry = METHODS[name]
        heavy = entry.arch.endswith("_224")
        for objective in entry.objectives or (None,):
            default = objective == entry.default_objective
            if heavy:
                marks = () if default else (pytest.mark.slow,)
                yield pytest.param(name, objective, "first", id=f"{name}-{objective}-first", marks=marks)
                yield pytest.param(name, objective, "rest", id=f"{name}-{objective}-rest",
                                   marks=(pytest.mark.slow,))
            else:
                yield pytest.param(name, objective, "all", id=f"{name}-{objective}")


def _build(name, objective, device=None):
    entry = METHODS[name]
    kwargs = {}
    if entry.method in ("adios", "adios_s") and not entry.arch.startswith("vit"):
        kwargs["img_size"] = CNN_SIZE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # AutoMAE's random attention source warns (tests only)
        if device is None:
            return zoo.create_pretrainer(name, objective=objective, **kwargs)
        with torch.device(device):
            return zoo.create_pretrainer(name, objective=objective, **kwargs)


def _views(p):
    size = p.backbone.patch_embed.img_size[0] if is_vit(p.backbone) else CNN_SIZE
    n = 1 if isinstance(p.objective, MAE) else 2
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, 3, size, size, generator=g) for _ in range(n)]


@pytest.mark.parametrize("name,objective,scope", list(_cases()))
def test_every_name_every_objective_every_phase(name, objective, scope):
    torch.manual_seed(0)
    p = _build(name, objective)
    p.train()
    views = _views(p)
    phases = {"all": p.phases, "first": p.phases[:1], "rest": p.phases[1:]}[scope]
    names = {id(q): n for n, q in p.named_parameters()}
    for phase in phases:
        p.zero_grad(set_to_none=True)
        loss = p(views, phase=phase)
        assert loss.shape == () and torch.isfinite(loss), (phase, loss)
        loss.backward()
        expected = {id(q) for q in p.parameters_of(phase)}
        assert expected, f"{name}: phase {phase} steps no parameter"
        got = {id(q) for q in p.parameters() if q.grad is not None}
        assert not got - expected, f"{phase}: gradient outside the phase: {sorted(names[i] for i in got - expected)[:5]}"
        assert not expected - got, f"{phase}: no gradient reached {sorted(names[i] for i in expected - got)[:5]}"
        assert all(torch.isfinite(q.grad).all() for q in p.parameters() if q.grad is not None)
    p.update(0.5)
    if scope != "rest":
        _check_export(name, p)


def _check_export(name, p):
    entry = METHODS[name]
    with torch.device("meta"):
        plain = timm.create_model(entry.timm_arch, num_classes=0, **entry.model_args)
    want = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in p.exported_backbone().state_dict().items()}
    assert got == want


def test_matrix_covers_the_design_names():
    methods = {e.method for e in METHODS.values()}
    assert {"simclr", "byol", "simsiam", "mae", "randmask", "blockmask", "adios", "adios_s",
            "automae", "extrema"} <= methods
    assert METHODS["adios_resnet18"].objectives == ("simclr", "byol", "simsiam")
    assert METHODS["adios_resnet18"].default_objective == "simclr"
    assert not METHODS["adios_resnet18"].ours and METHODS["adios_vit_small_patch16_224"].ours
    assert not METHODS["automae_vit_base_patch16_224"].ours and METHODS["automae_vit_tiny_patch4_32"].ours


# ---------------------------------------------------------------------------- paper-size counts
# Independent counts from the papers' layer tables (no zoo code involved).

RESNET18 = 11_689_512 - (512 * 1000 + 1000)      # torchvision's resnet18 minus its ImageNet head
RESNET50 = 25_557_032 - (2048 * 1000 + 1000)


def vit(d, depth, patch, img, cls=True):
    """Headless timm ViT: patch conv, [CLS], positions, depth x (LN, qkv, proj, LN, MLP 4d), LN."""
    tokens = (img // patch) ** 2 + (1 if cls else 0)
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    return (3 * patch * patch * d + d) + (d if cls else 0) + tokens * d + depth * block + 2 * d


def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def unet(c, n_masks, img, blocks):
    """The ADIOS reference U-Net (GroupNorm): channel tables of src/utils/unet.py."""
    tables = {
        5: ([3, c, c, 2 * c, 2 * c], [c, c, 2 * c, 2 * c, 2 * c], [4 * c, 4 * c, 4 * c, 2 * c, 2 * c],
            [2 * c, 2 * c, c, c, c]),
        6: ([3, c, c, c, 2 * c, 2 * c], [c, c, c, 2 * c, 2 * c, 2 * c],
            [4 * c, 4 * c, 4 * c, 2 * c, 2 * c, 2 * c], [2 * c, 2 * c, c, c, c, c]),
    }
    ei, eo, di, do = tables[blocks]
    convs = sum(9 * i * o + 2 * o for i, o in zip(ei + di, eo + do))
    flat = 2 * c * (img // 2 ** (blocks - 1)) ** 2
    return convs + linear(flat, 128) + linear(128, 128) + linear(128, flat) + linear(c, n_masks)


def mae_decoder(d_enc, d, depth, patch):
    block = 12 * d * d + 13 * d
    return linear(d_enc, d) + d + depth * block + 2 * d + linear(d, patch * patch * 3)


def _count(module, trainable=False):
    return sum(q.numel() for q in module.parameters() if q.requires_grad or not trainable)


def test_vit_formula_matches_known_counts():
    # timm / the ViT paper: ViT-B/16 86,567,656 with its 1000-class head; ViT-Ti/16 5,717,416
    assert vit(768, 12, 16, 224) + linear(768, 1000) == 86_567_656
    assert vit(192, 12, 16, 224) + linear(192, 1000) == 5_717_416
    # MAE ViT-B/16 (facebookresearch/mae): 111,907,840 including the fixed decoder positions
    assert vit(768, 12, 16, 224) + mae_decoder(768, 512, 8, 16) + 197 * 512 == 111_907_840


def test_paper_size_adios_resnet18_simclr_stl10_fbase128():
    # STL10 ResNet-18 SimCLR script: 96 px, N 6, fbase 128, projector 2048 -> 256
    p = _build_meta("adios_resnet18", "simclr", img_size=96, mask_fbase=128, num_masks=6)
    assert _count(p.backbone) == RESNET18
    assert _count(p.masker) == unet(128, 6, 96, 5)
    assert _count(p.objective) == linear(512, 2048) + linear(2048, 256)
    assert _count(p) == RESNET18 + unet(128, 6, 96, 5) + linear(512, 2048) + linear(2048, 256)


def test_paper_size_adios_resnet18_byol_stl10_fbase64():
    # STL10 ResNet-18 BYOL script: fbase 64, projector 4096 -> 256 with BN, predictor hidden 8192
    p = _build_meta("adios_resnet18", "byol", img_size=96, mask_fbase=64, num_masks=6,
                    pred_hidden_dim=8192)
    proj = linear(512, 4096) + 2 * 4096 + linear(4096, 256)
    pred = linear(256, 8192) + 2 * 8192 + linear(8192, 256)
    assert _count(p.masker) == unet(64, 6, 96, 5)
    assert _count(p) == 2 * (RESNET18 + proj) + pred + unet(64, 6, 96, 5)     # online + EMA teacher
    assert _count(p, trainable=True) == RESNET18 + proj + pred + unet(64, 6, 96, 5)


def test_paper_size_adios_s_resnet18_224_and_vit_tiny_96():
    p = _build_meta("adios_s_resnet18", "byol", img_size=224, mask_fbase=32, num_masks=6)
    assert _count(p.masker) == unet(32, 6, 224, 6)
    p = _build_meta("adios_vit_tiny_patch16_96", "byol", mask_fbase=8, num_masks=6)
    assert _count(p.backbone) == vit(192, 12, 16, 96)
    assert _count(p.masker) == unet(8, 6, 96, 5)


def test_paper_size_mae_and_automae_vit_base():
    mae = _build_meta("mae_vit_base_patch16_224")
    dec = mae_decoder(768, 512, 8, 16)
    assert _count(mae) == vit(768, 12, 16, 224) + dec
    assert _count(mae, trainable=True) == vit(768, 12, 16, 224) - 197 * 768 + dec   # fixed sin-cos
    p = _build_meta("automae_vit_base_patch16_224")
    generator = (12 * 6 * 9 + 6) + (6 * 1 * 9 + 1)            # Conv3x3 12 -> 6 -> 1, with bias
    discriminator = 16 * 1 * 16 + 32 * 16 * 16 + 1 * 32 * 9   # SN convs k4, k4, k3, no bias
    assert _count(p.masker.generator) == generator
    assert _count(p.discriminator) == discriminator
    assert _count(p.masker.source) == vit(768, 12, 16, 224)   # the frozen attention source
    assert _count(p) == 2 * vit(768, 12, 16, 224) + dec + generator + discriminator
    trainable = sum(q.numel() for q in p.parameters_of("encoder"))
    assert trainable == vit(768, 12, 16, 224) - 197 * 768 + dec + generator
    assert sum(q.numel() for q in p.parameters_of("discriminator")) == discriminator


def test_paper_size_extrema_vit_base():
    p = _build_meta("extrema_vit_base_patch16_224")
    d = 768
    encoder = vit(d, 12, 16, 224, cls=False)
    ca_block = 2 * d + 4 * linear(d, d) + d + 2 * d + linear(d, 4 * d) + linear(4 * d, d) + d   # CaiT
    pool = 2 * ca_block + d                                                   # 2 blocks + CLS
    proj = linear(d, 4096) + 2 * 4096 + linear(4096, 4096) + 2 * 4096 + linear(4096, 256)
    pred = linear(256, 4096) + 2 * 4096 + linear(4096, 256)
    assert _count(p.backbone) == encoder
    assert _count(p) == 2 * (encoder + pool + proj) + pred                   # student + EMA teacher
    assert _count(p, trainable=True) == encoder - 196 * d + pool + proj + pred   # fixed sin-cos


def _build_meta(name, objective=None, **kwargs):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return zoo.create_pretrainer(name, objective=objective, **kwargs)
