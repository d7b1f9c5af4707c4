"""The registry is the test matrix (timm's tests/test_models.py): every registered name, every
objective it accepts, every phase, forward and backward on small inputs (batch 2, the arch's own
image size; widths never shrink), and paper-size configurations' parameter counts on the meta
device against numbers computed here from the papers' layer tables.

Checked per (name, objective): the loss of every phase is a finite scalar; after its backward,
exactly the parameters of `parameters_of(phase)` hold a gradient (no other parameter gets one);
`update(progress)` runs; `exported_backbone()` has exactly the state-dict keys and shapes of
`timm.create_model(entry.timm_arch, num_classes=0, **entry.model_args)` and, after the
training-mode steps, carries no hook or instance patch (the CPU kernels are the loop's, not the model's).

The matrix reads the method facts from the registry entry (`num_views`, `takes_img_size`), never
a method name or class: a one-view method that is not MAE steps here too (`OneViewSimCLR`).

The 224-px ViT-S/B pairs are marked slow except the default objective's encoder phase, so the
default run still builds and steps every name.
"""
import contextlib
import inspect
import warnings

import pytest
import timm
import torch

import zoo
from zoo.backbones import create_backbone, is_vit
from zoo.maskers import RandomMasker
from zoo.objectives import create_objective
from zoo.pretrainer import Pretrainer
from zoo.registry import METHODS, register_method

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


def image_size(entry):
    """The arch's own input size (a ViT's), else the CPU-scale CNN input; no model is built."""
    with torch.device("meta"):
        net = create_backbone(entry.arch)
    return net.patch_embed.img_size[0] if is_vit(net) else CNN_SIZE


def _build(name, objective):
    entry = METHODS[name]
    kwargs = {"img_size": image_size(entry)} if entry.takes_img_size else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # AutoMAE's random attention source warns (tests only)
        return zoo.create_pretrainer(name, objective=objective, **kwargs)


def _views(entry):
    size = image_size(entry)
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, 3, size, size, generator=g) for _ in range(entry.num_views)]


@pytest.mark.parametrize("name,objective,scope", list(_cases()))
def test_every_name_every_objective_every_phase(name, objective, scope):
    step_every_phase(name, objective, scope)


def step_every_phase(name, objective, scope="all"):
    torch.manual_seed(0)
    entry = METHODS[name]
    p = _build(name, objective)
    p.train()
    views = _views(entry)
    assert p.phases == entry.phases and p.num_views == entry.num_views
    assert p.masked_views == entry.masked_views(objective) or p.masker is None
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
    exported = p.exported_backbone()
    got = {k: tuple(v.shape) for k, v in exported.state_dict().items()}
    assert got == want
    # after training-mode steps: the plain timm module, no kernel patches (those are the loop's)
    assert not instance_patches(exported), instance_patches(exported)[:5]


def instance_patches(net):
    """Hooks, or instance attributes shadowing a method of the module's class (`_conv_forward`)."""
    found = []
    for name, m in net.named_modules():
        found += [f"{name}.{k}" for k in vars(m) if callable(getattr(type(m), k, None))]
        found += [f"{name}.{h}" for h in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks",
                                          "_backward_pre_hooks") if getattr(m, h)]
    return found


# ------------------------------------------------------------- a method the matrix has not seen

class OneViewSimCLR(Pretrainer):
    """One view per step, not MAE: SimCLR between the view and a random-patch-masked copy of it
    (the second "view" is made inside). Refuses two views, so the matrix must read `num_views`."""

    num_views, masked_views = 1, (0,)

    def forward(self, views, phase="encoder"):
        if phase != "encoder":
            raise self.no_phase(phase)
        if len(views) != 1:
            raise ValueError(f"OneViewSimCLR takes one view, got {len(views)}")
        with torch.no_grad():
            hidden = self.masker(views[0])
        return self.objective(self.backbone, [views[0], views[0]], [None, hidden])


@contextlib.contextmanager
def one_view_method():
    """Register `oneview_resnet18` (takes an img_size too, unused but declared); removed on exit."""
    @register_method("oneview", archs=("resnet18", "vit_tiny_patch4_32"), pretrainer=OneViewSimCLR,
                     base="simclr", masked_views=(0,), takes_img_size=True)
    def oneview(arch, img_size=None, **objective_args):
        backbone = create_backbone(arch)
        objective = create_objective("simclr", backbone, **objective_args)
        return OneViewSimCLR(backbone, objective, RandomMasker(4 if is_vit(backbone) else 8, 0.5))
    try:
        yield ("oneview_resnet18", "oneview_vit_tiny_patch4_32")
    finally:
        for name in ("oneview_resnet18", "oneview_vit_tiny_patch4_32"):
            METHODS.pop(name, None)


def test_a_one_view_method_that_is_not_mae_steps_in_the_matrix():
    with one_view_method() as names:
        for name in names:
            entry = METHODS[name]
            assert entry.num_views == 1 and entry.masked_views() == (0,) and entry.takes_img_size
            step_every_phase(name, None)
        with pytest.raises(ValueError, match="takes one view"):     # the facts are what it needs
            zoo.create_pretrainer(names[0], img_size=CNN_SIZE)(_views(METHODS["simclr_resnet18"]))


def test_method_facts_on_the_entry_match_the_built_pretrainer():
    for name in ("simclr_resnet18", "randmask_resnet18", "mae_vit_tiny_patch4_32",
                 "automae_vit_tiny_patch4_32", "adios_resnet18", "extrema_vit_tiny_patch4_32"):
        entry = METHODS[name]
        for objective in entry.objectives or (None,):
            p = _build(name, objective)
            assert entry.phases == p.phases and entry.phase_modules == p.phase_modules
            assert entry.num_views == p.num_views
            assert entry.masked_views(objective) == (p.masked_views if p.masker is not None else ())
            for phase in p.phases:                  # the declared modules are what each phase steps
                declared = [q for n in entry.phase_modules[phase] for q in p.get_submodule(n).parameters()
                            if q.requires_grad]
                assert [id(q) for q in p.parameters_of(phase)] == [id(q) for q in declared]
    assert METHODS["adios_resnet18"].masked_views("simsiam") == (0, 1)
    assert METHODS["adios_resnet18"].masked_views() == (1,)                   # SimCLR, the default
    assert METHODS["simclr_resnet18"].masked_views() == ()
    with pytest.raises(ValueError, match="takes no objective"):
        METHODS["simclr_resnet18"].masked_views("byol")
    with pytest.raises(ValueError, match="takes objective one of"):
        METHODS["adios_resnet18"].masked_views("mae")
    assert METHODS["adios_resnet18"].takes_img_size and METHODS["adios_s_vit_tiny_patch4_32"].takes_img_size
    assert not any(METHODS[n].takes_img_size for n in ("simclr_resnet18", "randmask_resnet18",
                                                       "mae_vit_tiny_patch4_32", "automae_vit_tiny_patch4_32"))


def test_entry_arguments_are_the_factory_keywords_and_the_objective_knobs():
    adios = METHODS["adios_resnet18"]
    assert {"num_masks", "img_size", "temperature", "pred_hidden_dim", "simsiam_terms"} <= set(adios.arguments)
    assert adios.arguments["temperature"] is None             # None: the chosen objective's default
    simclr = METHODS["simclr_resnet18"].arguments
    assert simclr == {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2}
    assert METHODS["byol_resnet18"].arguments["base_tau"] == 0.99
    # the factory's signature lists the same keywords (train/recipe.py reads it), no **kwargs
    params = inspect.signature(adios.factory).parameters
    assert set(params) - {"arch", "objective"} == set(adios.arguments)
    assert all(q.kind != q.VAR_KEYWORD for q in params.values())
    # an unknown keyword is named, with the close ones and the valid ones
    with pytest.raises(ValueError, match=r"adios_resnet18 has no argument 'num_mask'\. Did you mean 'num_masks'"):
        zoo.create_pretrainer("adios_resnet18", num_mask=3)
    with pytest.raises(ValueError, match=r"simclr_resnet18 has no argument 'temperatur'.*Valid: .*temperature"):
        zoo.create_pretrainer("simclr_resnet18", temperatur=0.1)
    # a knob of another base objective than the chosen one
    with pytest.raises(ValueError, match="objective 'byol' has no option temperature"):
        zoo.create_pretrainer("adios_resnet18", objective="byol", img_size=32, temperature=0.1)


def test_knobs_reach_the_objective_with_the_defaults_unchanged():
    p = zoo.create_pretrainer("simclr_resnet18", temperature=0.5)
    assert p.objective.temperature == 0.5 and p.objective.projector[0].out_features == 2048
    p = zoo.create_pretrainer("randmask_resnet18", objective="byol", pred_hidden_dim=64, base_tau=None)
    assert p.objective.predictor[0].out_features == 64 and p.objective.base_tau == 0.99
    p = zoo.create_pretrainer("adios_resnet18", objective="simsiam", img_size=32, mask_fbase=8,
                              simsiam_terms=["mask", "both"])
    assert p.objective.terms == ("mask", "both") and p.masked_views == (0, 1)
    assert zoo.create_pretrainer("simsiam_resnet18").objective.predictor[0].out_features == 512


def test_a_factory_with_unknown_kwargs_or_a_missing_phase_module_is_refused_at_registration():
    with pytest.raises(TypeError, match="base objective's knobs"):
        register_method("zzbad", archs=("resnet18",))(lambda arch, **kw: None)
    with pytest.raises(TypeError, match="no img_size"):
        register_method("zzbad", archs=("resnet18",), takes_img_size=True)(lambda arch: None)
    with pytest.raises(TypeError, match="phase_modules"):
        type("TwoPhase", (Pretrainer,), {"phases": ("encoder", "masker")})
    assert not [n for n in METHODS if n.startswith("zzbad")]
    p = zoo.create_pretrainer("adios_resnet18", img_size=32, mask_fbase=8)
    with pytest.raises(ValueError, match="no phase 'maskr'.*Did you mean 'masker'"):
        p.parameters_of("maskr")


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
