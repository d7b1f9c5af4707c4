"""lightly's side of the comparison: SimCLR, BYOL, SimSiam and MAE built from lightly's own public
modules, wired the way lightly's examples (`examples/pytorch/*.py`) wire them. Written here, not
copied; benchmark-only (lightly is the `bench` extra).

Pieces used: `lightly.loss.NTXentLoss`, `lightly.loss.NegativeCosineSimilarity`, the heads in
`lightly.models.modules` (`SimCLRProjectionHead`, `BYOLProjectionHead`, `BYOLPredictionHead`,
`SimSiamProjectionHead`, `SimSiamPredictionHead`), `lightly.models.utils` (`update_momentum`,
`deactivate_requires_grad`, `random_token_mask`, `set_at_index`, `get_at_index`, `patchify`,
`repeat_token`), `lightly.utils.scheduler.cosine_schedule`, and for MAE
`MaskedVisionTransformerTIMM` + `MAEDecoderTIMM`.

What is set to match the zoo's configuration (so that both sides compute the same thing; each is
a constructor argument lightly exposes, nothing is patched):
- head widths and SimCLR's temperature are the zoo's (the examples use smaller demo widths);
- SimCLR's projection head without BatchNorm (`batch_norm=False`), as ADIOS's SimCLR has none;
- MAE's decoder width/depth/heads are the zoo's, and the target is normalised per patch
  (MAE's `norm_pix_loss`, which the zoo uses and lightly's example leaves out: two lines below).
Known structural difference, harmless: the zoo's BYOL heads keep a bias in the Linear before
BatchNorm (as BYOL's own code does), lightly's drop it; in training mode BatchNorm subtracts the
batch mean, so the outputs are identical and the copied weights give the same loss.

Example:
    >>> import timm
    >>> from benchmarks.peer_lightly import build
    >>> net = timm.create_model("resnet18", num_classes=0)
    >>> model = build("simclr", net, dict(proj_hidden_dim=64, proj_output_dim=32, temperature=0.2))
    >>> import torch; x = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    >>> model.loss(x).shape
    torch.Size([])
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models import utils
from lightly.models.modules import (BYOLPredictionHead, BYOLProjectionHead, MAEDecoderTIMM,
                                    MaskedVisionTransformerTIMM, SimCLRProjectionHead,
                                    SimSiamPredictionHead, SimSiamProjectionHead)
from lightly.utils.scheduler import cosine_schedule

METHODS = ("simclr", "byol", "simsiam", "mae")


class SimCLR(nn.Module):
    """lightly's SimCLR example: backbone -> SimCLRProjectionHead, NTXentLoss on two views."""

    def __init__(self, backbone: nn.Module, num_features: int, proj_hidden_dim: int,
                 proj_output_dim: int, temperature: float):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(num_features, proj_hidden_dim, proj_output_dim,
                                                    batch_norm=False)
        self.criterion = NTXentLoss(temperature=temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def loss(self, views: Sequence[Tensor]) -> Tensor:
        x0, x1 = views
        return self.criterion(self(x0), self(x1))


class BYOL(nn.Module):
    """lightly's BYOL example: online backbone -> projection -> prediction; momentum copies of the
    backbone and projection (no grad), NegativeCosineSimilarity both ways, `update_momentum` with a
    cosine schedule before each step."""

    def __init__(self, backbone: nn.Module, num_features: int, proj_hidden_dim: int,
                 proj_output_dim: int, pred_hidden_dim: int, base_tau: float):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(num_features, proj_hidden_dim, proj_output_dim)
        self.prediction_head = BYOLPredictionHead(proj_output_dim, pred_hidden_dim, proj_output_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        utils.deactivate_requires_grad(self.backbone_momentum)
        utils.deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.base_tau = base_tau

    def forward(self, x: Tensor) -> Tensor:
        y = self.backbone(x).flatten(start_dim=1)
        return self.prediction_head(self.projection_head(y))

    def forward_momentum(self, x: Tensor) -> Tensor:
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()

    def momentum_update(self, progress: float) -> None:
        m = cosine_schedule(int(progress * 1000), 1000, self.base_tau, 1.0)
        utils.update_momentum(self.backbone, self.backbone_momentum, m=m)
        utils.update_momentum(self.projection_head, self.projection_head_momentum, m=m)

    def loss(self, views: Sequence[Tensor]) -> Tensor:
        x0, x1 = views
        p0, z0 = self(x0), self.forward_momentum(x0)
        p1, z1 = self(x1), self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class SimSiam(nn.Module):
    """lightly's SimSiam example: projection + prediction heads, stop-gradient on z,
    NegativeCosineSimilarity both ways."""

    def __init__(self, backbone: nn.Module, num_features: int, proj_hidden_dim: int,
                 proj_output_dim: int, pred_hidden_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(num_features, proj_hidden_dim, proj_output_dim)
        self.prediction_head = SimSiamPredictionHead(proj_output_dim, pred_hidden_dim, proj_output_dim)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.backbone(x).flatten(start_dim=1)
        z = self.projection_head(f)
        p = self.prediction_head(z)
        return z.detach(), p

    def loss(self, views: Sequence[Tensor]) -> Tensor:
        x0, x1 = views
        (z0, p0), (z1, p1) = self(x0), self(x1)
        return 0.5 * (self.criterion(z0, p1) + self.criterion(z1, p0))


class MAE(nn.Module):
    """lightly's MAE example: MaskedVisionTransformerTIMM encodes the kept tokens, MAEDecoderTIMM
    fills mask tokens back in and predicts the masked patches; MSE against the (per-patch
    normalised) pixels of the masked patches."""

    def __init__(self, vit: nn.Module, decoder_embed_dim: int, decoder_depth: int,
                 decoder_num_heads: int, mlp_ratio: float, mask_ratio: float, norm_pix_loss: bool):
        super().__init__()
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.patch_size = vit.patch_embed.patch_size[0]
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.backbone.sequence_length
        with warnings.catch_warnings():       # deprecated in 1.6 (removed in 1.7), still lightly's
            warnings.simplefilter("ignore")
            self.decoder = MAEDecoderTIMM(
                num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size,
                embed_dim=vit.embed_dim, decoder_embed_dim=decoder_embed_dim,
                decoder_depth=decoder_depth, decoder_num_heads=decoder_num_heads,
                mlp_ratio=mlp_ratio, proj_drop_rate=0.0, attn_drop_rate=0.0)
        self.criterion = nn.MSELoss()

    def forward_encoder(self, images: Tensor, idx_keep: Tensor) -> Tensor:
        return self.backbone.encode(images=images, idx_keep=idx_keep)

    def forward_decoder(self, x_encoded: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        batch_size = x_encoded.shape[0]
        x_decode = self.decoder.embed(x_encoded)
        x_masked = utils.repeat_token(self.decoder.mask_token, (batch_size, self.sequence_length))
        x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_decoded = self.decoder.decode(x_masked)
        return self.decoder.predict(utils.get_at_index(x_decoded, idx_mask))

    def loss(self, views: Sequence[Tensor], idx_keep: Tensor | None = None,
             idx_mask: Tensor | None = None) -> Tensor:
        """idx_keep / idx_mask index the sequence with the class token at 0 (lightly's
        convention); None draws them with `random_token_mask`, as the example does."""
        images = views[0]
        if idx_keep is None:
            idx_keep, idx_mask = utils.random_token_mask(
                size=(images.shape[0], self.sequence_length), mask_ratio=self.mask_ratio,
                device=images.device)
        x_encoded = self.forward_encoder(images, idx_keep)
        x_pred = self.forward_decoder(x_encoded, idx_keep, idx_mask)
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
        if self.norm_pix_loss:        # MAE's norm_pix_loss (not in lightly's example)
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return self.criterion(x_pred, target)


def build(method: str, backbone: nn.Module, dims: dict) -> nn.Module:
    """lightly's model for `method` around `backbone` (a timm model), with the zoo's `dims`."""
    nf = backbone.num_features
    if method == "simclr":
        return SimCLR(backbone, nf, dims["proj_hidden_dim"], dims["proj_output_dim"], dims["temperature"])
    if method == "byol":
        return BYOL(backbone, nf, dims["proj_hidden_dim"], dims["proj_output_dim"],
                    dims["pred_hidden_dim"], dims["base_tau"])
    if method == "simsiam":
        return SimSiam(backbone, nf, dims["proj_hidden_dim"], dims["proj_output_dim"], dims["pred_hidden_dim"])
    if method == "mae":
        return MAE(backbone, dims["decoder_embed_dim"], dims["decoder_depth"], dims["decoder_num_heads"],
                   dims["mlp_ratio"], dims["mask_ratio"], dims["norm_pix_loss"])
    raise ValueError(f"lightly peer has no method {method!r}; choose from {METHODS}")


def train_step(model: nn.Module, views: Sequence[Tensor], optimizer: torch.optim.Optimizer,
               precision: str, progress: float = 0.5) -> float:
    """One step as lightly's examples run it: momentum update first (BYOL), loss, backward, step."""
    from benchmarks.common import autocast
    if hasattr(model, "momentum_update"):
        model.momentum_update(progress)
    with autocast(precision, views[0].device.type):
        loss = model.loss(views)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())
