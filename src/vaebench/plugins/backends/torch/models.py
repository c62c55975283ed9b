"""Torch implementations of the Gaussian-latent VAE family.

The torch model protocol every model factory returns (third-party models too):

- ``encode(x) -> (mu, logvar)``: images ``(B, C, H, W)`` in [0, 1] -> ``(B, D)`` each;
- ``decode(z) -> logits``: ``(B, D)`` -> ``(B, C, H, W)`` pixel logits;
- ``loss_terms(x, step) -> dict``: ``loss`` (scalar to minimise), ``recon`` and
  ``kl`` (batch means, nats per image), ``kl_per_dim`` ``(D,)`` and ``capacity``
  (float or ``None``);
- ``recon_errors(x, logits) -> (B,)``: per-image negative log-likelihood (nats);
- ``latent_dim``: D.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.plugins.backends.torch.nets import build_networks
from vaebench.plugins.models.objectives import objective


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and dimension, ``(B, D)`` nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


class GaussianVAE(nn.Module):
    """Encoder -> diagonal Gaussian posterior -> decoder with a Bernoulli likelihood.

    ``objective_name`` and ``hp`` select the loss from
    :func:`vaebench.plugins.models.objectives.objective`.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        architecture: str,
        objective_name: str,
        hp: dict[str, Any],
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.objective_name = objective_name
        self.hp = dict(hp)
        self.encoder, self.decoder = build_networks(architecture, image_shape, latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def recon_errors(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Bernoulli negative log-likelihood summed over pixels, ``(B,)`` nats."""
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def loss_terms(self, x: torch.Tensor, step: int) -> dict[str, Any]:
        logits, mu, logvar = self(x)
        recon = self.recon_errors(x, logits.float()).mean()
        kl_per_dim = gaussian_kl_per_dim(mu.float(), logvar.float()).mean(0)
        kl = kl_per_dim.sum()
        loss, capacity = objective(self.objective_name, recon, kl, self.hp, step)
        return {"loss": loss, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim, "capacity": capacity}


def _hp(spec: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(spec, n) for n in names}


def build_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "vae", {})


def build_beta_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", _hp(spec, ("beta",)))


def build_beta_vae_capacity(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    hp = _hp(spec, ("capacity", "gamma", "capacity_steps"))
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae_capacity", hp)
