"""zoo/kernels.py: the CPU training kernels compute what the vanilla timm modules compute.

The references are independent: `F.conv2d` on the same tensors (forward and every gradient) and
timm's own fused attention; eval mode must be bit-for-bit vanilla.
"""
from __future__ import annotations

import copy
import io
import itertools

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import seen_taps, use_fast_attention, use_fast_conv, use_fast_kernels

SHAPES = [(H, W, k, s, p) for H, W, k, s, p in itertools.product((1, 2, 3), (1, 2), (1, 3, 7), (1, 2, 4), (0, 1, 3))
          if H + 2 * p >= k and W + 2 * p >= k]


def _conv_and_reference(H, W, k, s, p, bias, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(5, 4, k, stride=s, padding=p, bias=bias).train()
    x = torch.randn(3, 5, H, W, requires_grad=True)
    return conv, x


@pytest.mark.parametrize("H,W,k,s,p", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_f_conv2d_forward_and_gradients(H, W, k, s, p, bias):
    conv, x = _conv_and_reference(H, W, k, s, p, bias)
    ref_w = conv.weight.detach().clone().requires_grad_()
    ref_b = conv.bias.detach().clone().requires_grad_() if bias else None
    ref_x = x.detach().clone().requires_grad_()
    expected = F.conv2d(ref_x, ref_w, ref_b, stride=s, padding=p)

    got = use_fast_conv(conv)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv.weight.grad, ref_w.grad, rtol=1e-5, atol=1e-6)
    if bias:
        torch.testing.assert_close(conv.bias.grad, ref_b.grad, rtol=1e-5, atol=1e-6)
    # the matmul ran iff the output is 1 x 1 and some tap sees the input (else: bias over padding)
    assert (seen_taps(conv, x.shape) is not None) == (expected.shape[-2:] == (1, 1) and p < k)


def test_seen_taps_by_hand():
    conv3 = nn.Conv2d(1, 1, 3, padding=1)
    assert seen_taps(conv3, (1, 1)) == (slice(1, 2), slice(1, 2))           # centre tap only
    conv3s2 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    assert seen_taps(conv3s2, (2, 2)) == (slice(1, 3), slice(1, 3))         # ResNet stage-4 entry
    down = nn.Conv2d(1, 1, 1, stride=2)
    assert seen_taps(down, (2, 2)) == (slice(0, 1), slice(0, 1))            # reads input (0, 0) only
    assert seen_taps(conv3, (2, 2)) is None and seen_taps(conv3s2, (3, 3)) is None


@pytest.mark.parametrize("H,k,s,p", [(1, 3, 1, 1), (2, 3, 2, 1), (2, 1, 2, 0)])     # ResNet stage-4 shapes
def test_conv_under_bf16_autocast_and_channels_last(H, k, s, p):
    conv, x = _conv_and_reference(H, H, k, s, p, True)
    conv, x = conv.to(memory_format=torch.channels_last), x.detach().contiguous(memory_format=torch.channels_last)
    fast = use_fast_conv(copy.deepcopy(conv))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = conv(x)
        got = fast(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
    # two uses of the weight (two views), as in a siamese step: the gradients add up
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (conv(x).float().square().sum() + conv(2 * x).float().sum()).backward()
        (fast(x).float().square().sum() + fast(2 * x).float().sum()).backward()
    for ours, ref in ((fast.weight, conv.weight), (fast.bias, conv.bias)):
        assert ours.grad.dtype == ref.grad.dtype == torch.float32
        torch.testing.assert_close(ours.grad, ref.grad, rtol=2e-2, atol=2e-2 * ref.grad.abs().max().item())
    # the weight's gradient comes in the weight's own (channels_last) layout: no copy to fix it up
    assert fast.weight.grad.stride() == fast.weight.stride() != conv.weight.new_empty(conv.weight.shape).stride()


def test_eval_mode_and_larger_maps_are_vanilla_bit_for_bit():
    torch.manual_seed(0)
    plain = timm.create_model("resnet18", num_classes=0)
    fast = use_fast_kernels(copy.deepcopy(plain))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), fast.eval()(x))           # eval: the convolution itself
        big = torch.randn(2, 3, 64, 64)
        stem_plain, stem_fast = plain.train().conv1(big), fast.train().conv1(big)
        assert torch.equal(stem_plain, stem_fast)                     # 32 x 32 output: untouched


def test_resnet18_at_32px_trains_the_same_and_uses_the_matmul_in_stage_4():
    torch.manual_seed(0)
    plain = timm.create_model("resnet18", num_classes=0).train()
    fast = use_fast_kernels(copy.deepcopy(plain))
    calls = []
    for name, m in fast.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name) if seen_taps(mod, inp[0].shape) else None)
    x = torch.randn(4, 3, 32, 32)
    a, b = plain(x), fast(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item(), msg=name)
    assert sorted(calls) == ["layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0",
                             "layer4.1.conv1", "layer4.1.conv2"]
    # the BN running statistics moved the same way
    torch.testing.assert_close(fast.layer4[1].bn2.running_var, plain.layer4[1].bn2.running_var)


def test_installed_conv_survives_deepcopy_pickling_and_state_dict():
    conv = use_fast_conv(nn.Conv2d(4, 3, 3, padding=1)).train()
    twin = copy.deepcopy(conv)
    assert twin._conv_forward.args[0] is twin                          # bound to the copy (EMA teachers)
    with torch.no_grad():
        twin.weight.add_(1.0)
    x = torch.randn(2, 4, 1, 1)
    assert not torch.allclose(twin(x), conv(x))
    torch.save(conv, io.BytesIO())                                     # a user's torch.save(model) still pickles
    # weights travel as safetensors (never a pickle load): into a fresh module, same outputs
    loaded = use_fast_conv(nn.Conv2d(4, 3, 3, padding=1)).train()
    loaded.load_state_dict(safetensors.torch.load(safetensors.torch.save(conv.state_dict())))
    assert torch.equal(loaded(x), conv(x))
    assert list(conv.state_dict()) == ["weight", "bias"] and type(conv) is nn.Conv2d
    assert use_fast_conv(conv)._conv_forward is conv._conv_forward      # idempotent


def test_pretrainer_installs_the_kernels_and_exports_plain_timm():
    import zoo
    p = zoo.create_pretrainer("simclr_resnet18")
    assert "_conv_forward" not in p.backbone.layer4[0].conv1.__dict__
    p([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]).backward()
    assert "_conv_forward" in p.backbone.layer4[0].conv1.__dict__
    exported = p.exported_backbone()
    assert all(type(m) in (nn.Conv2d,) for m in exported.modules() if isinstance(m, nn.Conv2d))


def test_attention_plain_path_in_training_on_cpu_matches_fused():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=0).train()
    fast = use_fast_attention(copy.deepcopy(vit))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fast(x), vit(x), rtol=1e-4, atol=1e-5)
    assert fast.blocks[0].attn.fused_attn is False and vit.blocks[0].attn.fused_attn is True
    with torch.no_grad():
        assert torch.equal(fast.eval()(x), vit.eval()(x))
    assert fast.blocks[0].attn.fused_attn is True
