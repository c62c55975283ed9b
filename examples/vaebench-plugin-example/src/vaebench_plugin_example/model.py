"""A β-VAE with a Gaussian likelihood, built on vaebench's torch model."""

import torch

from vaebench.plugins.backends.torch.models import GaussianVAE


class MSEBetaVAE(GaussianVAE):
    def recon_errors(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """½·squared error summed over pixels (Gaussian NLL with σ = 1, up to a constant), ``(B,)``."""
        return 0.5 * (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)


def build(spec, image_shape):
    return MSEBetaVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", {"beta": spec.beta})
