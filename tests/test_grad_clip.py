"""Gradient clipping in the loop (`grad_clip`, per phase): HPM's reference clips the gradient to
total norm 5.0 before each step (util/misc.py l256); the other references do not clip."""
import copy

import pytest
import torch

import zoo
from phase_probe import loop_step, sgd_per_phase
from train.recipe import Recipe, RecipeError


def _setup():
    torch.manual_seed(0)
    p = zoo.create_pretrainer("simclr_resnet18", proj_hidden_dim=32, proj_output_dim=16)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    ref = copy.deepcopy(p)                       # the raw gradient, by hand
    ref(views, phase="encoder").backward()
    grads = [q.grad.clone() for q in ref.parameters_of("encoder")]
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    return p, views, grads, norm


def _sgd_delta(p, views, grad_clip):
    before = [q.detach().clone() for q in p.parameters_of("encoder")]
    loop_step(p, views, sgd_per_phase(p, 1.0), grad_clip=grad_clip)     # SGD, lr 1: the step is -grad
    return [b - q.detach() for b, q in zip(before, p.parameters_of("encoder"))]


@pytest.mark.parametrize("fraction", [0.25, 2.0])
def test_grad_clip_scales_the_phase_gradient_to_the_max_norm(fraction):
    p, views, grads, norm = _setup()
    max_norm = norm * fraction
    delta = _sgd_delta(p, views, {"encoder": max_norm})
    scale = min(1.0, max_norm / norm)            # clipping only ever shrinks (none when under the norm)
    for d, g in zip(delta, grads):
        torch.testing.assert_close(d, g * scale, rtol=1e-4, atol=1e-7)


def test_no_grad_clip_leaves_the_gradient():
    p, views, grads, norm = _setup()
    for d, g in zip(_sgd_delta(p, views, {"encoder": 0.0}), grads):
        torch.testing.assert_close(d, g, rtol=1e-4, atol=1e-7)


def test_recipe_grad_clip_top_level_and_per_phase(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: adios_resnet18\ngrad_clip: 5.0\nphases: {masker: {grad_clip: 1.0}}\n")
    r = Recipe.load(path)
    assert (r.phase_grad_clip("encoder"), r.phase_grad_clip("masker")) == (5.0, 1.0)
    assert Recipe.load(path, ["phases={}"]).phase_grad_clip("masker") == 5.0   # inherits the top level
    assert Recipe.load(tmp_path / "r.yaml", ["grad_clip=0"]).phase_grad_clip("encoder") == 0.0
    with pytest.raises(RecipeError, match="grad_clip must be >= 0"):
        Recipe.load(path, ["grad_clip=-1"])
    with pytest.raises(RecipeError, match="phases.masker.grad_clip must be >= 0"):
        Recipe.load(path, ["phases.masker.grad_clip=-1"])
