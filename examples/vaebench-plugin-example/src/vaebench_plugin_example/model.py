"""A β-VAE with a Gaussian decoder: the ``TorchModel`` protocol of ``vaebench.plugin``."""

import math

import torch
from torch import nn

from vaebench.plugin import RunSpec, TorchModel, scheduled_beta


class GaussianDecoderVAE(nn.Module):
    """MLP encoder / decoder (any image shape; ``--architecture`` is not read).

    ``encode``: images ``(B, C, H, W)`` in [0, 1] -> ``(mu, logvar)`` ``(B, D)``;
    ``decode``: ``(B, D)`` -> logits ``(B, C, H, W)`` (the mean image is their sigmoid);
    reconstruction: the Gaussian NLL with standard deviation ``sigma``, nats per image.
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, spec: RunSpec, sigma: float) -> None:
        super().__init__()
        height, width, channels = image_shape
        pixels = height * width * channels
        self.latent_dim = latent_dim
        self.spec = spec  # the run: β and its schedule, read at each step in loss_terms
        self.sigma = sigma
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 256), nn.ReLU(), nn.Linear(256, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, pixels),
                                     nn.Unflatten(1, (channels, height, width)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def recon_errors(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood summed over pixels, ``(B,)`` nats."""
        squared = ((torch.sigmoid(logits) - x) / self.sigma).pow(2)
        per_pixel = 0.5 * squared + math.log(self.sigma) + 0.5 * math.log(2 * math.pi)
        return per_pixel.flatten(1).sum(1)

    def loss_terms(self, x: torch.Tensor, step: int) -> dict:
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = self.recon_errors(x, self.decode(z)).mean()
        kl_per_dim = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).mean(0)
        kl = kl_per_dim.sum()
        beta = scheduled_beta(self.spec, step)  # β at this step, under --beta-schedule (vaebench's rule)
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim, "capacity": None}


def build(spec: RunSpec, image_shape: tuple[int, int, int]) -> TorchModel:
    """The factory ``ModelSpec.backends["torch"]`` names: the run (for β) and the model's own σ."""
    return GaussianDecoderVAE(image_shape, spec.latent_dim, spec, float(spec.hyperparameter("sigma")))
