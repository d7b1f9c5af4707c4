"""The one objective-arguments list (zoo.objectives.OBJECTIVE_ARGS) and the split of the old
objectives module: every declared knob is a constructor keyword, the defaults are the papers'
values the factories used to spell out, and the moved helpers are the same objects."""
import pytest
from torch import nn

import zoo.layers
import zoo.losses
import zoo.objectives as objectives
from zoo.objectives import OBJECTIVE_ARGS, OBJECTIVES, create_objective, objective_args


class Tiny(nn.Sequential):
    num_features = 6

    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(3 * 4 * 4, 6))


def test_defaults_are_the_ones_the_factories_spelled_out():
    assert objective_args("simclr") == {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2}
    assert objective_args("byol") == {"proj_hidden_dim": 4096, "proj_output_dim": 256,
                                      "pred_hidden_dim": 4096, "base_tau": 0.99}
    assert objective_args("simsiam") == {"proj_hidden_dim": 2048, "proj_output_dim": 2048,
                                         "pred_hidden_dim": 512, "simsiam_terms": ("mask",)}
    assert set(OBJECTIVE_ARGS) == set(OBJECTIVES)


def test_every_knob_reaches_its_constructor():
    net = Tiny()
    values = {"proj_hidden_dim": 8, "proj_output_dim": 4, "pred_hidden_dim": 6, "temperature": 0.3,
              "base_tau": 0.9, "simsiam_terms": ["mask", "no_mask"]}
    for name, knobs in OBJECTIVE_ARGS.items():
        obj = create_objective(name, net, **{k: values[k] for k in knobs})
        assert obj.projector[0].out_features == 8, name
        last = obj.projector[-1]                   # SimSiam's ends in BN(affine=False)
        assert (last.num_features if name == "simsiam" else last.out_features) == 4, name
        if "pred_hidden_dim" in knobs:
            assert obj.predictor[0].out_features == 6, name
    assert create_objective("simclr", net, temperature=0.3).temperature == 0.3
    assert create_objective("byol", net, base_tau=0.9).base_tau == 0.9
    assert create_objective("simsiam", net, simsiam_terms=["mask", "no_mask"]).terms == ("mask", "no_mask")


def test_none_keeps_the_objective_default():
    obj = create_objective("byol", Tiny(), temperature=None, pred_hidden_dim=None)
    assert obj.predictor[0].out_features == 4096


def test_unknown_knob_is_named_with_close_and_valid_ones():
    with pytest.raises(ValueError, match=r"no option temprature;.*Did you mean temperature\?.*its options: "
                                         r"proj_hidden_dim, proj_output_dim, temperature"):
        create_objective("simclr", Tiny(), temprature=0.1)
    with pytest.raises(ValueError, match=r"Unknown objective 'byl'\. Did you mean byol\? Known: simclr, byol, simsiam"):
        objective_args("byl")


def test_the_split_keeps_the_old_import_paths():
    for name in ("nt_xent", "byol_loss", "neg_cosine"):
        assert getattr(objectives, name) is getattr(zoo.losses, name)
    for name in ("mlp", "ema_", "cosine_momentum", "sincos_pos_embed", "fix_sincos_pos_embed_", "xavier_init_"):
        assert getattr(objectives, name) is getattr(zoo.layers, name)
