"""zoo/kernels.py: the CPU training kernels compute what the vanilla timm modules compute, and
they are the training loop's: installed for its steps, gone from what it exports.

The references are independent: `F.conv2d` on the same tensors (forward and every gradient) and
timm's own fused attention; eval mode must be bit-for-bit vanilla; "plain timm" is checked
module by module against a fresh timm model and by loading the export in a process without the zoo.
"""
from __future__ import annotations

import copy
import io
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import (fast_kernels, remove_fast_kernels, seen_taps, use_fast_attention, use_fast_conv,
                         use_fast_kernels)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                                  # train/ is not installed

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


def instance_patches(net: nn.Module) -> list[str]:
    """What makes `net` other than the plain timm module: per submodule, an instance attribute that
    shadows a method of its class (`forward`, `_conv_forward`), a zoo attribute, or any hook."""
    found = []
    for name, m in net.named_modules():
        found += [f"{name}.{k}" for k in m.__dict__ if callable(getattr(type(m), k, None)) or k.startswith("_zoo")]
        found += [f"{name}.{hooks}" for hooks in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks",
                                                  "_backward_pre_hooks") if getattr(m, hooks)]
    return found


def fused_attn_flags(net: nn.Module) -> list[bool]:
    return [m.fused_attn for m in net.modules() if hasattr(m, "fused_attn")]


def test_remove_fast_kernels_gives_back_the_vanilla_modules():
    torch.manual_seed(0)
    for arch, kw in (("resnet18", {}), ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4))):
        plain = timm.create_model(arch, num_classes=0, **kw).train()
        net = use_fast_kernels(copy.deepcopy(plain))
        twin = copy.deepcopy(net)                         # an EMA teacher copied after the install
        x = torch.randn(2, 3, 32, 32)
        net(x)                                            # the attention hook has set fused_attn
        assert instance_patches(net) and instance_patches(twin)          # the check sees the patches
        for m in (net, twin):
            remove_fast_kernels(m)
            assert instance_patches(m) == [], arch
            assert [sorted(a.__dict__) for a in m.modules()] == [sorted(a.__dict__) for a in plain.modules()]
            assert fused_attn_flags(m) == fused_attn_flags(plain)
            torch.manual_seed(1)
            out = m(x)
            torch.manual_seed(1)
            assert torch.equal(out, plain(x)), arch       # training mode: timm's own kernels again
        remove_fast_kernels(net)                          # and on a plain module: nothing to do
        assert instance_patches(net) == []


def test_fast_kernels_context_installs_and_removes_even_on_error():
    net = timm.create_model("resnet18", num_classes=0)
    with pytest.raises(RuntimeError):
        with fast_kernels(net):
            assert "_conv_forward" in net.layer4[0].conv1.__dict__
            raise RuntimeError("stop")
    assert instance_patches(net) == []


def test_model_classes_install_no_kernels():
    """The kernels are the loop's (train/pretrain.py, benchmarks/): neither a Pretrainer's forward
    nor zoo.create_model patches a module."""
    import zoo
    p = zoo.create_pretrainer("simclr_resnet18")
    p([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]).backward()
    assert instance_patches(p.backbone) == []
    assert instance_patches(zoo.create_model("simclr_resnet18")) == []


VANILLA_LOAD = """
import sys, timm, torch
from safetensors.torch import load_file
net = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
io = load_file(sys.argv[2])
assert torch.equal(net(io["x"]), io["y"]), "vanilla timm computes other features"
assert not any(m.startswith("zoo") for m in sys.modules), "the zoo was imported"
print(type(net).__name__)
"""


@pytest.mark.parametrize("recipe", ["simclr_resnet18.fmnist", "mae_vit_tiny_patch4_32.fmnist",
                                    "extrema_vit_tiny_patch4_32.fmnist"])
def test_loop_trains_with_the_kernels_and_exports_a_plain_timm_module(tmp_path, monkeypatch, recipe):
    """A few steps of train/pretrain.py: the steps run with the kernels installed; the exported
    backbone of the returned pretrainer is the plain timm module, and vanilla timm (a process
    without the zoo) loads it from a Hub-layout folder with the same features."""
    from timm.models._hub import save_for_hf
    from train import pretrain
    from zoo.registry import get_method

    seen = []

    def observed_step(accelerator, model, *args, **kwargs):
        seen.append(instance_patches(accelerator.unwrap_model(model).exported_backbone()))
        return real_step(accelerator, model, *args, **kwargs)
    real_step = pretrain.train_step
    monkeypatch.setattr(pretrain, "train_step", observed_step)
    pretrainer = pretrain.main(["--recipe", str(ROOT / "recipes" / f"{recipe}.yaml"), "data=scenes",
                                "data_args={length: 16}", "limit_train=0", "batch_size=8", "max_steps=2",
                                "num_workers=0", "ckpt_every=0", "log_every=1", f"run_dir={tmp_path / 'run'}"])
    assert len(seen) == 2 and all(seen), "the loop's steps ran without the CPU kernels"

    exported = pretrainer.exported_backbone()
    assert instance_patches(exported) == []
    entry = get_method(pretrainer_name := recipe.split(".")[0])
    vanilla = timm.create_model(entry.timm_arch, num_classes=0, **entry.model_args)
    assert fused_attn_flags(exported) == fused_attn_flags(vanilla), pretrainer_name
    assert [sorted(m.__dict__) for m in exported.modules()] == [sorted(m.__dict__) for m in vanilla.modules()]

    # the Hub layout, written by timm itself (safetensors wants the default memory format)
    folder = tmp_path / "hub"
    exported = exported.float().eval().to(memory_format=torch.contiguous_format)
    save_for_hf(exported, str(folder), model_args=entry.model_args, safe_serialization=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        safetensors.torch.save_file({"x": x, "y": exported(x).contiguous()}, str(tmp_path / "io.safetensors"))
    done = subprocess.run([sys.executable, "-c", VANILLA_LOAD, str(folder), str(tmp_path / "io.safetensors")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == type(vanilla).__name__


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
