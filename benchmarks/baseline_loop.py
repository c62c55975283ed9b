"""The baseline: a plain PyTorch β-VAE training loop, as a researcher writes it by hand.

Burgess et al. 64×64 conv β-VAE, batch 64, Adam (lr 5e-4), BCE-with-logits summed
over pixels, KL summed over dimensions, mean over the batch. Data: dSprites images
held in memory as a uint8 tensor, random batches by indexing. No tricks.

    python benchmarks/baseline_loop.py --steps 300

prints images/s. ``benchmarks/single_run.py`` runs this side by side with
``vaebench run`` and reports the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BetaVAE(nn.Module):
    def __init__(self, latent_dim: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 2 * latent_dim),
        )
        self.decoder_fc = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 512), nn.ReLU(),
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decoder_conv(self.decoder_fc(z).view(-1, 32, 4, 4))
        return logits, mu, logvar


def make_data(n: int = 20_000, seed: int = 0) -> torch.Tensor:
    """``n`` dSprites images as a uint8 tensor ``(n, 1, 64, 64)`` (pre-rendered once, like a loaded .npz)."""
    from vaebench.plugins.datasets.dsprites import ProceduralDSprites

    data = ProceduralDSprites()
    rng = np.random.default_rng(seed)
    images = data.observations_uint8(data.sample_factors(n, rng))
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def train(steps: int, beta: float = 4.0, batch_size: int = 64, seed: int = 0, data: torch.Tensor | None = None) -> float:
    """Train for ``steps`` and return images/s (data preparation excluded)."""
    torch.manual_seed(seed)
    data = make_data() if data is None else data
    model = BetaVAE()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch_size,))
        x = data[idx].float()
        logits, mu, logvar = model(x)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / batch_size
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum() / batch_size
        loss = recon + beta * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}  loss {loss.item():.1f}")
    return steps * batch_size / (time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(f"{train(args.steps):.0f} images/s")
