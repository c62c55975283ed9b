"""A β-VAE with a Gaussian likelihood: a torch model written against vaebench's
``TorchModel`` protocol (its own small convolutional networks, nothing of vaebench's)."""

import torch
from torch import nn

from vaebench.plugin import RunSpec, TorchModel


class MSEBetaVAE(nn.Module):
    """Two strided convolutions and a dense layer each way; images ``(B, C, H, W)`` with H
    and W divisible by 4. Reconstruction term: ½·squared error summed over pixels (the
    Gaussian NLL with σ = 1, up to a constant); KL to N(0, I) weighted by ``beta``."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, beta: float) -> None:
        super().__init__()
        height, width, channels = image_shape
        if height % 4 or width % 4:
            raise ValueError(f"mse_beta_vae needs image sides divisible by 4, got {height} x {width}")
        cells = 64 * (height // 4) * (width // 4)
        self.latent_dim = latent_dim
        self.beta = beta
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(cells, 256), nn.ReLU(), nn.Linear(256, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, cells), nn.ReLU(),
            nn.Unflatten(1, (64, height // 4, width // 4)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, channels, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` in [0, 1] -> ``(mu, logvar)``, ``(B, D)`` each."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` -> pixel logits ``(B, C, H, W)`` (the mean image is their sigmoid)."""
        return self.decoder(z)

    def recon_errors(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """½·squared error summed over pixels, ``(B,)``."""
        return 0.5 * (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)

    def loss_terms(self, x: torch.Tensor, step: int) -> dict:
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = self.recon_errors(x, self.decode(z)).mean()
        kl_per_dim = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).mean(0)
        kl = kl_per_dim.sum()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim, "capacity": None}


def build(spec: RunSpec, image_shape: tuple[int, int, int]) -> TorchModel:
    if spec.architecture != "conv":
        raise ValueError(f"mse_beta_vae has only the conv architecture, not {spec.architecture!r}")
    return MSEBetaVAE(image_shape, spec.latent_dim, float(spec.beta))
