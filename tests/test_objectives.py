"""Base objectives against independent computations: hand cases, lightly's losses, explicit loops."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

import nt_xent_worker
import zoo.backbones as bb
from zoo.layers import cosine_momentum, ema_, sincos_pos_embed
from zoo.losses import byol_loss, neg_cosine, nt_xent
from zoo.objectives import BYOL, MAE, SimCLR, SimSiam, create_objective

NCS = NegativeCosineSimilarity()


class Tiny(nn.Sequential):
    """A stand-in backbone: flatten + linear (no BatchNorm), 6 features."""
    num_features = 6

    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(3 * 4 * 4, 6))


def _views(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 4, 4, generator=g), torch.randn(b, 3, 4, 4, generator=g)]


def _soft_masks(b=5, k=3, seed=1):
    return torch.rand(b, k, 4, 4, generator=torch.Generator().manual_seed(seed))


def _hide(x, m):
    """Copy k of x hidden by mask k: (B, C, H, W), (B, H, W) -> x * (1 - m)."""
    return x * (1 - m[:, None])


# ------------------------------------------------------------------------------- NT-Xent

def _nt_xent_loop(z1, z2, t):
    """NT-Xent written out anchor by anchor (SimCLR eq. 1), mean over the 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n, B = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        pos = (i + B) % n
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / den)
    return total / n


def test_nt_xent_hand_case():
    # two orthogonal pairs: each anchor's positive is itself (cos 1), the others are orthogonal
    # (cos 0) or opposite... here: z1 = e1, e2; z2 = e1, e2 -> for anchor e1: pos e1 (cos 1),
    # negatives e2 (0) and e2 (0): loss = -log(e^{1/t} / (e^{1/t} + 2))
    t = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert nt_xent(z1, z1.clone(), t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.2, 1.0])
def test_nt_xent_matches_loop_and_lightly(t):
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g) * 3
    ours = nt_xent(z1, z2, t)
    assert ours.item() == pytest.approx(_nt_xent_loop(z1, z2, t), rel=1e-5)
    torch.testing.assert_close(ours, NTXentLoss(temperature=t)(z1, z2))
    # adversarial: swapping the pairing must change the loss
    assert nt_xent(z1, z2.roll(1, 0), t).item() != pytest.approx(ours.item(), rel=1e-3)


def test_nt_xent_gathers_negatives_across_processes(tmp_path):
    world = 2
    torch.multiprocessing.spawn(nt_xent_worker.run, args=(world, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=world)
    res = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(world)]
    full = res[0]["full"]
    # every process sees all 2 * world * B negatives: the mean of the local losses is the full loss
    torch.testing.assert_close(sum(r["local"] for r in res) / world, full)
    for r in res:
        # gradient-carrying gather: each process's z gets the gradient of every process's loss,
        # i.e. world x the full-batch gradient (DDP's averaging divides by world again)
        torch.testing.assert_close(r["g1"], world * r["f1"])
        torch.testing.assert_close(r["g2"], world * r["f2"])


# ------------------------------------------------------------------ BYOL / SimSiam losses

def test_byol_and_negcos_losses_match_lightly_and_stop_gradient():
    g = torch.Generator().manual_seed(4)
    p, z = torch.randn(7, 5, generator=g, requires_grad=True), torch.randn(7, 5, generator=g, requires_grad=True)
    torch.testing.assert_close(byol_loss(p, z).mean(), 2 + 2 * NCS(p, z))
    torch.testing.assert_close(neg_cosine(p, z).mean(), NCS(p, z))
    # ||p/|p| - z/|z|||^2 = 2 - 2 cos (ExtreMA's form)
    torch.testing.assert_close(byol_loss(p, z), ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1))
    assert byol_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item() == pytest.approx(2.0)
    assert neg_cosine(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]])).item() == pytest.approx(-1.0)
    (byol_loss(p, z).sum() + neg_cosine(p, z).sum()).backward()
    assert z.grad is None and p.grad.abs().sum() > 0             # sg(z): no gradient to the target


# ------------------------------------------------------------------ objectives, wired

def _proj(obj, backbone, x):
    return obj.projector(backbone(x))


def test_simclr_adios_wiring_sums_nt_xent_over_masks():
    torch.manual_seed(0)
    net, (x1, x2), m = Tiny(), _views(), _soft_masks()
    obj = SimCLR(net, proj_hidden_dim=16, proj_output_dim=8, temperature=0.2)
    z1 = _proj(obj, net, x1)
    expected = sum(NTXentLoss(temperature=0.2)(z1, _proj(obj, net, _hide(x2, m[:, k]))) for k in range(3))
    torch.testing.assert_close(obj(net, [x1, x2], [None, m]), expected)
    torch.testing.assert_close(obj(net, [x1, x2]), NTXentLoss(temperature=0.2)(z1, _proj(obj, net, x2)))
    # the SimCLR head: Linear(F, 2048) - ReLU - Linear(2048, 256) by default
    kinds = [type(l) for l in SimCLR(net).projector]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear] and SimCLR(net).projector[2].out_features == 256
    assert SimCLR(net).temperature == 0.2


def test_byol_adios_wiring_masked_view_feeds_both_branches():
    torch.manual_seed(0)
    net, (x1, x2), m = Tiny(), _views(), _soft_masks()
    obj = BYOL(net, proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=12).eval()  # BN: running stats
    with torch.no_grad():                                       # make teacher != student
        for p in list(obj.teacher.parameters()) + list(obj.teacher_projector.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    online = lambda x: obj.predictor(obj.projector(net(x)))
    target = lambda x: obj.teacher_projector(obj.teacher(x))
    expected = 0.0
    for k in range(3):
        x2m = _hide(x2, m[:, k])
        expected = expected + (2 + 2 * NCS(online(x1), target(x2m))) + (2 + 2 * NCS(online(x2m), target(x1)))
    torch.testing.assert_close(obj(net, [x1, x2], [None, m]), expected)
    plain = (2 + 2 * NCS(online(x1), target(x2))) + (2 + 2 * NCS(online(x2), target(x1)))
    torch.testing.assert_close(obj(net, [x1, x2]), plain)


def test_byol_teacher_gets_no_gradient_and_follows_the_ema():
    torch.manual_seed(0)
    net, views = Tiny(), _views()
    obj = BYOL(net, proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=12, base_tau=0.99)
    obj(net, views, [None, _soft_masks()]).backward()
    assert all(p.grad is None for p in list(obj.teacher.parameters()) + list(obj.teacher_projector.parameters()))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.sub_(p.grad)                                      # a "step"
    ref_backbone, ref_proj = copy.deepcopy(obj.teacher), copy.deepcopy(obj.teacher_projector)
    obj.update(net, progress=0.25)
    tau = 1 - 0.01 * (math.cos(math.pi * 0.25) + 1) / 2
    assert obj.tau == pytest.approx(tau)
    update_momentum(net, ref_backbone, tau)                     # lightly's EMA as the peer
    update_momentum(obj.projector, ref_proj, tau)
    for a, b in zip(list(obj.teacher.parameters()) + list(obj.teacher_projector.parameters()),
                    list(ref_backbone.parameters()) + list(ref_proj.parameters())):
        torch.testing.assert_close(a, b)


def test_cosine_momentum_schedule_matches_lightly():
    n = 11
    for step in range(n):
        assert cosine_momentum(step / (n - 1), 0.99) == pytest.approx(cosine_schedule(step, n, 0.99, 1.0))
    assert cosine_momentum(0.0, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(0.5, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(1.0, 0.99) == 1.0 and cosine_momentum(2.0, 0.99) == 1.0


def test_ema_formula_and_shape_check():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ema_(a, b, 0.9)
    torch.testing.assert_close(a.weight, 0.9 * wa + 0.1 * wb)
    with pytest.raises(ValueError, match="shape"):
        ema_(nn.Linear(3, 2), nn.Linear(2, 3), 0.9)


@pytest.mark.parametrize("terms", [("mask",), ("mask", "symmetry"), ("mask", "no_mask"),
                                   ("both",), ("mask", "symmetry", "no_mask", "both")])
def test_simsiam_term_sets(terms):
    torch.manual_seed(0)
    net, (x1, x2) = Tiny(), _views()
    m1, m2 = _soft_masks(seed=1), _soft_masks(seed=2)
    obj = SimSiam(net, proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=4, terms=terms).eval()
    z = lambda x: obj.projector(net(x))
    p = lambda x: obj.predictor(z(x))
    expected = 0.0
    for k in range(3):
        a, b = _hide(x1, m1[:, k]), _hide(x2, m2[:, k])
        sets = {"mask": [NCS(p(a), z(x2)), NCS(p(b), z(x1))],
                "symmetry": [NCS(p(x2), z(a)), NCS(p(x1), z(b))],
                "no_mask": [NCS(p(x1), z(x2)), NCS(p(x2), z(x1))],
                "both": [NCS(p(a), z(b)), NCS(p(b), z(a))]}
        chosen = [v for t in terms for v in sets[t]]
        expected = expected + sum(chosen) / len(chosen)
    torch.testing.assert_close(obj(net, [x1, x2], [m1, m2]), expected)


def test_simsiam_plain_is_the_symmetric_mean_and_stops_gradient():
    torch.manual_seed(0)
    net, (x1, x2) = Tiny(), _views()
    obj = SimSiam(net, proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=4).eval()
    z1, z2 = obj.projector(net(x1)), obj.projector(net(x2))
    p1, p2 = obj.predictor(z1), obj.predictor(z2)
    torch.testing.assert_close(obj(net, [x1, x2]), 0.5 * NCS(p1, z2) + 0.5 * NCS(p2, z1))

    def grads(detach):
        net.zero_grad()
        z1, z2 = obj.projector(net(x1)), obj.projector(net(x2))
        t1, t2 = (z1.detach(), z2.detach()) if detach else (z1, z2)
        (0.5 * NCS(obj.predictor(z1), t2) + 0.5 * NCS(obj.predictor(z2), t1)).backward()
        return [p.grad.clone() for p in net.parameters()]

    net.zero_grad()
    obj(net, [x1, x2]).backward()
    ours = [p.grad.clone() for p in net.parameters()]
    for a, b in zip(ours, grads(detach=True)):
        torch.testing.assert_close(a, b)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(ours, grads(detach=False)))
    # SimSiam's heads: 3-layer BN projector ending in BN(affine=False), 512-wide predictor
    full = SimSiam(net)
    assert isinstance(full.projector[-1], nn.BatchNorm1d) and not full.projector[-1].affine
    assert full.predictor[0].out_features == 512 and full.projector[-2].out_features == 2048


def test_simsiam_rejects_unknown_terms():
    with pytest.raises(ValueError, match="terms"):
        SimSiam(Tiny(), terms=("mask", "symetry"))


def test_copies_must_agree_and_views_are_two():
    net, views = Tiny(), _views()
    obj = SimCLR(net, 16, 8)
    with pytest.raises(ValueError, match="copies"):
        obj(net, views, [_soft_masks(k=2), _soft_masks(k=3)])
    with pytest.raises(ValueError, match="two views"):
        obj(net, views[:1])
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        obj(net, views, [None, torch.rand(5, 4, 4)])


def test_create_objective_options_and_errors():
    net = Tiny()
    assert isinstance(create_objective("simclr", net, temperature=0.5), SimCLR)
    assert create_objective("byol", net, pred_hidden_dim=8192).predictor[0].out_features == 8192
    assert create_objective("simsiam", net, simsiam_terms=["mask", "both"]).terms == ("mask", "both")
    with pytest.raises(ValueError, match="Did you mean simclr"):
        create_objective("simclrr", net)
    with pytest.raises(ValueError, match="no option temperature"):
        create_objective("byol", net, temperature=0.1)


def test_paper_size_heads_on_meta():
    with torch.device("meta"):
        net = bb.create_backbone("resnet18")
        byol, simsiam = BYOL(net, pred_hidden_dim=8192), SimSiam(net)
    count = lambda m: sum(p.numel() for p in m.parameters())
    lin = lambda i, o, bias=True: i * o + (o if bias else 0)
    assert count(byol.projector) == lin(512, 4096) + 2 * 4096 + lin(4096, 256)
    assert count(byol.predictor) == lin(256, 8192) + 2 * 8192 + lin(8192, 256)
    assert count(byol.teacher) == count(net) == 11_176_512
    assert count(simsiam.projector) == (lin(512, 2048, False) + 2 * 2048 + lin(2048, 2048, False)
                                        + 2 * 2048 + lin(2048, 2048, False))
    assert count(simsiam.predictor) == lin(2048, 512, False) + 2 * 512 + lin(512, 2048)


# ----------------------------------------------------------------------------------- MAE

def _mae_sincos(grid, dim):
    """MAE's get_2d_sincos_pos_embed, written out in numpy (x = column first, then y)."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gh, gw = np.meshgrid(np.arange(grid[0], dtype=np.float64), np.arange(grid[1], dtype=np.float64),
                         indexing="ij")
    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


@pytest.mark.parametrize("grid,dim", [((8, 8), 192), ((14, 14), 512), ((3, 5), 16)])
def test_sincos_table_is_maes(grid, dim):
    torch.testing.assert_close(sincos_pos_embed(grid, dim), torch.from_numpy(_mae_sincos(grid, dim)).float(),
                               atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def vit_mae():
    torch.manual_seed(0)
    vit = bb.create_backbone("vit_tiny_patch4_32")
    return vit, MAE(vit, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def _mae_mask(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(b, 64, generator=g).argsort(1)[:, :16]
    hidden = torch.ones(b, 64, dtype=torch.bool).scatter_(1, keep, False)
    return hidden.view(b, 1, 8, 8)


def _loss_by_patch(x, pred, hidden, norm_pix):
    """Independent MAE loss: loop over images and hidden patches, patch pixels in (row, col, ch)."""
    total, n = 0.0, 0
    p = 4
    for b in range(x.shape[0]):
        for i in range(8):
            for j in range(8):
                if not hidden[b, 0, i, j]:
                    continue
                t = x[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].permute(1, 2, 0).reshape(-1).double()
                if norm_pix:
                    t = (t - t.mean()) / (t.var(unbiased=True) + 1e-6) ** 0.5
                total += float(((pred[b, i * 8 + j].double() - t) ** 2).mean())
                n += 1
    return total / n


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_on_hidden_patches_only(norm_pix, monkeypatch, vit_mae):
    vit, mae = vit_mae
    monkeypatch.setattr(mae, "norm_pix_loss", norm_pix)
    x = torch.randn(2, 3, 32, 32) * 2 + 1
    hidden = _mae_mask()
    pred = torch.randn(2, 64, 48)
    monkeypatch.setattr(mae, "decode", lambda latent, ids_keep, num_prefix: pred)
    loss = mae(vit, [x], [hidden])
    assert loss.item() == pytest.approx(_loss_by_patch(x, pred, hidden, norm_pix), rel=1e-5)
    # predictions of visible patches do not count; hidden ones do
    visible = ~hidden.flatten(1)
    pred2 = pred.clone()
    pred2[visible] += 5
    monkeypatch.setattr(mae, "decode", lambda latent, ids_keep, num_prefix: pred2)
    assert mae(vit, [x], [hidden]).item() == pytest.approx(loss.item(), rel=1e-6)
    pred2[~visible] += 1
    assert mae(vit, [x], [hidden]).item() != pytest.approx(loss.item(), rel=1e-3)


def test_mae_encoder_sees_only_visible_tokens(monkeypatch, vit_mae):
    vit, mae = vit_mae
    x, hidden = torch.randn(2, 3, 32, 32), _mae_mask()
    seen = []
    hook = vit.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    captured = []
    decode = mae.decode
    monkeypatch.setattr(mae, "decode", lambda *a: captured.append(decode(*a)) or captured[-1])
    mae(vit, [x], [hidden])
    hook.remove()
    assert seen[0] == (2, 1 + 16, 192)                        # CLS + 16 visible tokens, no mask tokens
    cells = hidden.repeat_interleave(4, -1).repeat_interleave(4, -2)[:, 0]   # (B, 32, 32)
    x2 = torch.where(cells[:, None], torch.randn_like(x) * 9, x)             # change hidden pixels only
    mae(vit, [x2], [hidden])
    torch.testing.assert_close(captured[0], captured[1])      # the prediction cannot see them


def test_mae_gate_path_and_init(vit_mae):
    vit, mae = vit_mae
    x, hidden = torch.randn(2, 3, 32, 32), _mae_mask()
    gate = torch.full((2, 64), 0.7, requires_grad=True)
    plain = mae(vit, [x], [hidden])
    gated = mae(vit, [x], [hidden], gate=gate)
    torch.testing.assert_close(gated, plain)                   # values unchanged ...
    gated.backward()
    assert gate.grad.abs().sum() > 0                           # ... but the gate gets a gradient
    assert gate.grad[~hidden.flatten(1)].abs().sum() > 0 and gate.grad[hidden.flatten(1)].abs().sum() == 0
    # MAE's encoder: fixed sin-cos positions (CLS row zero), frozen
    assert not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed[0, 1:], torch.from_numpy(_mae_sincos((8, 8), 192)).float(),
                               atol=1e-5, rtol=0)
    assert vit.pos_embed[0, 0].abs().sum() == 0
    with pytest.raises(ValueError, match="bool"):
        mae(vit, [x], [hidden.float()])
    with pytest.raises(ValueError, match="ViT"):
        MAE(bb.create_backbone("resnet18"))


def test_mae_paper_decoder_size_on_meta():
    with torch.device("meta"):
        vit = bb.create_backbone("vit_base_patch16_224")
        mae = MAE(vit)
    d, e = 512, 768
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = (e * d + d) + d + 8 * block + 2 * d + (d * 16 * 16 * 3 + 16 * 16 * 3)
    assert sum(p.numel() for p in mae.parameters()) == expected
    assert len(mae.decoder_blocks) == 8 and mae.decoder_blocks[0].attn.num_heads == 16
