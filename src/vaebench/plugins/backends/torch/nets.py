"""Encoder/decoder networks in plain torch (no torchvision).

``conv``: the 64×64 architecture of Burgess et al. 2018 (Understanding
disentangling in β-VAE, appendix A.1): four 4×4 stride-2 convolutions with 32
channels (64→32→16→8→4), two 256-unit dense layers, a linear layer to
``2·D`` (means and log-variances); the decoder mirrors it with transposed
convolutions and outputs pixel logits.

``mlp``: the fully connected architecture of Locatello et al. 2019
(disentanglement_lib ``fc_encoder``/``fc_decoder``): 1200-1200 ReLU units.

Options the model zoo uses (defaults leave the networks, and their state-dict
keys, exactly as above): an encoder's ``out_dim`` (default ``2·D``; VQ-VAE asks
for the continuous encoding's width) and ``cond_dim``, the width of a condition
vector (cvae's one-hot label) concatenated to the flattened conv features (conv)
or to the flattened image (mlp) before the first dense layer. A conditional
decoder is built with ``latent_dim = D + cond_dim`` and fed ``[z, label]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvEncoder(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, out_dim: int | None = None, cond_dim: int = 0
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        h, w, c = image_shape
        if (h, w) != (64, 64):
            raise ValueError(f"the conv architecture expects 64x64 images, got {h}x{w}; use --architecture mlp")
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        )
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4 + cond_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, out_dim or 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C, 64, 64)`` (and ``cond`` ``(B, cond_dim)``) -> ``(B, 2D)``."""
        if not self.cond_dim:
            return self.dense(self.convs(x))
        h = torch.cat([self.convs(x).flatten(1), cond.to(x.dtype)], dim=1)
        return self.dense[1:](h)


class ConvDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        c = image_shape[2]
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 32 * 4 * 4), nn.ReLU(),
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, c, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, D)`` -> pixel logits ``(B, C, 64, 64)``."""
        return self.deconvs(self.dense(z).view(-1, 32, 4, 4))


class MLPEncoder(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, out_dim: int | None = None, cond_dim: int = 0
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(image_shape) + cond_dim, 1200), nn.ReLU(),
            nn.Linear(1200, 1200), nn.ReLU(), nn.Linear(1200, out_dim or 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not self.cond_dim:
            return self.net(x)
        return self.net[1:](torch.cat([x.flatten(1), cond.to(x.dtype)], dim=1))


class MLPDecoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        h, w, c = image_shape
        self.shape = (c, h, w)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 1200), nn.Tanh(), nn.Linear(1200, 1200), nn.Tanh(),
            nn.Linear(1200, 1200), nn.Tanh(), nn.Linear(1200, h * w * c),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


ARCHITECTURES = {"conv": (ConvEncoder, ConvDecoder), "mlp": (MLPEncoder, MLPDecoder)}


def build_networks(
    architecture: str,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    *,
    encoder_out: int | None = None,
    cond_dim: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """Encoder ``x -> (B, encoder_out or 2·latent_dim)`` and decoder
    ``(B, latent_dim + cond_dim) -> logits``; ``cond_dim`` > 0 makes both conditional."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (available: {', '.join(ARCHITECTURES)})")
    enc, dec = ARCHITECTURES[architecture]
    return (
        enc(image_shape, latent_dim, out_dim=encoder_out, cond_dim=cond_dim),
        dec(image_shape, latent_dim + cond_dim),
    )
