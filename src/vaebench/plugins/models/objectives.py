"""The β-VAE family's objectives, written once for every backend.

Reductions (they decide what β means): the reconstruction term is the negative
log-likelihood *summed over pixels* (Bernoulli: binary cross-entropy with
logits), the KL term is KL(q(z|x) || N(0, I)) *summed over latent dimensions*;
both are then *averaged over the batch*. So β = 1 is the ELBO, and β, γ and the
capacity C are in nats per image.

The functions take and return any array type with ``+``, ``*`` and ``abs``
(torch tensors, jax arrays, floats), so the torch and JAX backends share them.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def capacity_at(step: int, c_max: float, ramp_steps: int) -> float:
    """Burgess et al. 2018 capacity schedule: C raised linearly from 0 to ``c_max``
    over ``ramp_steps`` optimisation steps, then held (nats)."""
    if ramp_steps <= 0:
        return float(c_max)
    return float(c_max) * min(1.0, step / ramp_steps)


def objective(model: str, recon: T, kl: T, hp: dict[str, Any], step: int) -> tuple[T, float | None]:
    """Total loss for ``model`` from batch-mean ``recon`` and ``kl`` (nats per image).

    Returns ``(loss, capacity)``; ``capacity`` is the current C for capacity
    models and ``None`` otherwise.

    - ``vae``: recon + KL (the negative ELBO).
    - ``beta_vae`` (Higgins et al. 2017): recon + β·KL.
    - ``beta_vae_capacity`` (Burgess et al. 2018, arXiv:1804.03599):
      recon + γ·|KL − C(step)|.
    """
    kind = hp.get("objective", model)
    if kind == "vae":
        return recon + kl, None
    if kind == "beta_vae":
        return recon + hp["beta"] * kl, None
    if kind == "beta_vae_capacity":
        c = capacity_at(step, hp["capacity"], hp["capacity_steps"])
        return recon + hp["gamma"] * abs(kl - c), c
    raise ValueError(f"no objective named {kind!r}")
