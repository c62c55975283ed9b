"""Torch implementations of the VAE family and the model zoo.

The torch model protocol every model factory returns (third-party models too); as a
type, ``contract.TorchModel`` (its optional members' defaults: ``contract.capability``).
Required:

- ``encode(x) -> (mu, logvar)``: images ``(B, C, H, W)`` in [0, 1] -> ``(B, D)`` each;
- ``decode(z) -> logits``: ``(B, D)`` -> ``(B, C, H, W)`` pixel logits;
- ``loss_terms(x, step) -> dict``: ``loss`` (scalar to minimise), ``recon`` and
  ``kl`` (batch means, nats per image), ``kl_per_dim`` ``(D,)`` and ``capacity``
  (float or ``None``);
- ``recon_errors(x, logits) -> (B,)``: per-image negative log-likelihood (nats);
- ``latent_dim``: D (the width of what ``encode`` returns and ``decode`` takes).

Optional (a model without them is trained and evaluated exactly as before):

- ``needs_factors = True``: the model reads the dataset's factors. The training
  loop then calls ``loss_terms(x, step, factors=f)`` with ``f`` the batch's factor
  indices ``(B, K)`` int64 (what ``dataset.sample`` returned), and evaluation calls
  ``encode(x, factors=f)`` / ``decode(z, factors=f)``. Without factors (a numpy
  ``encode(images)`` from a metric, a figure), the model must still work:
  ``infer_factors(x) -> (B, K)`` supplies the factor columns it reads (cvae: the
  label with the highest ELBO), and ``decode(z)`` without factors uses a fixed
  default condition (cvae: the uniform mixture of labels).
- ``loss_terms`` may also return ``signals`` (``{name: scalar}``: training signals
  recorded at every history point, e.g. ``beta``, ``tc``, ``perplexity``) and
  ``aux_losses`` (``{name: scalar}``), one per optimizer of
  ``auxiliary_optimizers()``.
- ``auxiliary_optimizers() -> {name: torch.optim.Optimizer}``: optimizers the model
  owns over some of its own parameters (FactorVAE's discriminator: Adam, lr 1e-4,
  betas (0.5, 0.9)). The backend leaves those parameters out of the main Adam
  and, every step: backward of ``loss``, main step; then for each name zero that
  optimizer's gradients, backward of ``aux_losses[name]``, its step. An auxiliary
  loss must be computed on detached inputs so that it reaches only its own
  parameters; the order makes the main step see the auxiliary parameters as they
  were when ``loss`` was computed.
- ``notes() -> list[str]``: one-line warnings the backend adds to the run's
  record after training (VQ-VAE: codebook collapse).
- ``gaussian_posterior = False``: ``encode`` returns no Gaussian posterior
  (VQ-VAE); the posterior-collapse check is skipped.

A factory is ``factory(spec, image_shape)``; one that also takes a keyword
``dataset`` is given the ``FactorDataset`` (cvae needs the number of labels,
β-TCVAE the dataset size).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.plugins.backends.torch.nets import build_networks
from vaebench.plugins.objectives import (
    beta_hyperparameters,
    spec_values,
    VQ_COLLAPSE_FRACTION,
    VQ_EMA_DECAY,
    VQ_EMA_EPSILON,
    VQ_USAGE_WINDOW,
    beta_at,
    cvae_condition,
    dip_regulariser,
    factor_vae_loss,
    objective,
    tcvae_loss,
    vq_vae_loss,
)

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and dimension, ``(B, D)`` nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) elementwise (broadcasting), nats."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


class GaussianVAE(nn.Module):
    """Encoder -> diagonal Gaussian posterior -> decoder with a Bernoulli likelihood.

    ``objective_name`` and ``hp`` select the loss from
    :func:`vaebench.plugins.objectives.objective`.
    """

    needs_factors = False
    gaussian_posterior = True

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        architecture: str,
        objective_name: str,
        hp: dict[str, Any],
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.objective_name = objective_name
        self.hp = dict(hp)
        self.encoder, self.decoder = build_networks(architecture, image_shape, latent_dim, cond_dim=cond_dim)

    def encode(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z)

    def recon_errors(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Bernoulli negative log-likelihood summed over pixels, ``(B,)`` nats."""
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    def forward(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, mu, logvar)``, decoded from one reparameterised sample z ~ q(z|x)."""
        logits, mu, logvar, _ = self.forward_with_sample(x, factors)
        return logits, mu, logvar

    def forward_with_sample(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(logits, mu, logvar, z)``: :meth:`forward` and the sample z it decoded."""
        mu, logvar = self.encode(x, factors)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, factors), mu, logvar, z

    def _gaussian_terms(self, x: torch.Tensor, factors: torch.Tensor | None = None, with_z: bool = False) -> dict[str, Any]:
        if with_z:
            logits, mu, logvar, z = self.forward_with_sample(x, factors)
        else:  # through forward(), as before the model zoo (a subclass may override it)
            (logits, mu, logvar), z = (self(x) if factors is None else self(x, factors)), None
        recon = self.recon_errors(x, logits.float()).mean()
        kl_per_dim = gaussian_kl_per_dim(mu.float(), logvar.float()).mean(0)
        return {
            "recon": recon, "kl": kl_per_dim.sum(), "kl_per_dim": kl_per_dim,
            "mu": mu.float(), "logvar": logvar.float(), "z": None if z is None else z.float(),
        }

    def beta_signal(self, step: int) -> dict[str, float]:
        """β at this step, as a signal, when it follows a schedule (constant β is in the spec)."""
        if "beta" in self.hp and self.hp.get("beta_schedule") not in (None, "constant"):
            return {"beta": beta_at(step, self.hp)}
        return {}

    def loss_terms(self, x: torch.Tensor, step: int, factors: torch.Tensor | None = None) -> dict[str, Any]:
        t = self._gaussian_terms(x, factors)
        loss, capacity = objective(self.objective_name, t["recon"], t["kl"], self.hp, step)
        out = {"loss": loss, "recon": t["recon"], "kl": t["kl"], "kl_per_dim": t["kl_per_dim"], "capacity": capacity}
        signals = self.beta_signal(step)
        if signals:
            out["signals"] = signals
        return out


# --------------------------------------------------------------------------- cvae


class ConditionalVAE(GaussianVAE):
    """Conditional VAE (Sohn et al. 2015): q(z|x, y) and p(x|z, y), y the one-hot of one
    dataset factor (``condition``); p(z) = N(0, I) independent of y. Loss: recon + β·KL.

    Without labels, ``infer_factors`` picks for each image the label whose ELBO
    (decoded from the posterior mean) is highest, and ``decode`` uses the uniform
    mixture 1/K of the labels.
    """

    needs_factors = True

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        architecture: str,
        hp: dict[str, Any],
        factor_index: int,
        num_classes: int,
        num_factors: int,
    ) -> None:
        super().__init__(image_shape, latent_dim, architecture, "cvae", hp, cond_dim=num_classes)
        self.factor_index = factor_index
        self.num_classes = num_classes
        self.num_factors = num_factors

    def condition(self, factors: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
        """One-hot labels ``(B, K)`` from factor rows, or the uniform 1/K without them."""
        if factors is None:
            return torch.full((batch, self.num_classes), 1.0 / self.num_classes, device=like.device, dtype=torch.float32)
        labels = factors[:, self.factor_index].to(like.device).long()
        return F.one_hot(labels, self.num_classes).float()

    def _encode_c(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, c).chunk(2, dim=1)
        return mu, logvar

    def _decode_c(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, c.to(z.dtype)], dim=1))

    @torch.no_grad()
    def infer_factors(self, x: torch.Tensor) -> torch.Tensor:
        """Factor rows ``(B, K)`` whose condition column is argmax_y ELBO(x, y) (the rest 0)."""
        scores = []
        for k in range(self.num_classes):
            c = F.one_hot(torch.full((x.shape[0],), k, device=x.device, dtype=torch.long), self.num_classes).float()
            mu, logvar = self._encode_c(x, c)
            logits = self._decode_c(mu, c).float()
            kl = gaussian_kl_per_dim(mu.float(), logvar.float()).sum(1)
            scores.append(-(self.recon_errors(x.float(), logits) + kl))
        labels = torch.stack(scores, dim=1).argmax(dim=1)
        rows = torch.zeros(x.shape[0], self.num_factors, dtype=torch.long, device=x.device)
        rows[:, self.factor_index] = labels
        return rows

    def encode(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if factors is None:
            factors = self.infer_factors(x)
        return self._encode_c(x, self.condition(factors, x.shape[0], x))

    def decode(self, z: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
        return self._decode_c(z, self.condition(factors, z.shape[0], z))

    def forward_with_sample(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if factors is None:
            factors = self.infer_factors(x)
        c = self.condition(factors, x.shape[0], x)
        mu, logvar = self._encode_c(x, c)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self._decode_c(z, c), mu, logvar, z


# --------------------------------------------------------------------------- β-TCVAE


def mws_log_densities(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch weighted sampling (Chen et al. 2018, §C.1) estimates of ``log q(z_i)``
    and ``Σ_d log q(z_id)`` for each sample ``z_i`` of a batch ``(M, D)``.

    q(z) = (1/N) Σ_n q(z|n) over the N training points is estimated from the batch
    by importance weights: the sample's own point weighs 1/N, each of the M − 1
    other points, uniform draws from the rest of the data, (N − 1) / (N·(M − 1)).
    The weights sum to 1, so the estimate of q(z) is unbiased. (Chen et al.'s code
    gives every pair the weight 1/(N·M); the gradient differs only in the weight of
    the self term, but their TC value is shifted by up to (D − 1)·log N: about
    +120 nats at D = 10 on dSprites for a factorised posterior, whose TC is 0.)
    With N = M this is the batch's own empirical mixture.
    """
    m = z.shape[0]
    n = max(int(dataset_size), 1)
    # log q(z_i,d | x_j, d): (M, M, D), row i = sample, column j = data point
    log_q = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])
    if m == 1:
        log_w = torch.zeros(1, 1, device=z.device, dtype=z.dtype)
    else:
        other = math.log(n - 1) - math.log(n) - math.log(m - 1) if n > 1 else -math.inf
        log_w = torch.full((m, m), other, device=z.device, dtype=z.dtype)
        log_w.fill_diagonal_(-math.log(n))
    log_qz = torch.logsumexp(log_q.sum(2) + log_w, dim=1)
    log_prod_qzd = torch.logsumexp(log_q + log_w[:, :, None], dim=1).sum(1)
    return log_qz, log_prod_qzd


def tc_decomposition(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int
) -> dict[str, torch.Tensor]:
    """Batch means of the KL decomposition (Chen et al. 2018, eq. 2), by MWS:
    ``mi`` = E[log q(z|x) − log q(z)], ``tc`` = E[log q(z) − Σ_d log q(z_d)],
    ``dwkl`` = E[Σ_d log q(z_d) − log p(z)]."""
    log_qz_x = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    log_qz, log_prod = mws_log_densities(z, mu, logvar, dataset_size)
    return {
        "mi": (log_qz_x - log_qz).mean(),
        "tc": (log_qz - log_prod).mean(),
        "dwkl": (log_prod - log_pz).mean(),
    }


class BetaTCVAE(GaussianVAE):
    """β-TCVAE (Chen et al. 2018): recon + MI + β·TC + dim-wise KL, the three terms by
    minibatch weighted sampling with N = the dataset's size (dSprites: 737,280)."""

    def __init__(self, image_shape, latent_dim, architecture, hp, dataset_size: int) -> None:  # noqa: ANN001
        super().__init__(image_shape, latent_dim, architecture, "beta_tcvae", hp)
        self.dataset_size = int(dataset_size)

    def loss_terms(self, x: torch.Tensor, step: int, factors: torch.Tensor | None = None) -> dict[str, Any]:
        t = self._gaussian_terms(x, with_z=True)
        parts = tc_decomposition(t["z"], t["mu"], t["logvar"], self.dataset_size)
        beta = beta_at(step, self.hp)
        loss = tcvae_loss(t["recon"], parts["mi"], parts["tc"], parts["dwkl"], beta)
        return {
            "loss": loss, "recon": t["recon"], "kl": t["kl"], "kl_per_dim": t["kl_per_dim"], "capacity": None,
            "signals": {"beta": beta, **parts},
        }


# --------------------------------------------------------------------------- FactorVAE


class Discriminator(nn.Module):
    """Kim & Mnih 2018 (appendix): an MLP of 6 hidden layers of 1000 units, LeakyReLU
    0.2, and 2 logits (class 0: a sample of q(z); class 1: a dimension-permuted one)."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        mods.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Kim & Mnih 2018, Algorithm 1: each dimension permuted independently across the
    batch: samples of Π_d q(z_d)."""
    b = z.shape[0]
    return torch.stack([z[torch.randperm(b, device=z.device), d] for d in range(z.shape[1])], dim=1)


class FactorVAE(GaussianVAE):
    """FactorVAE (Kim & Mnih 2018): recon + KL + γ·TC, TC ≈ E[logit_0(z) − logit_1(z)]
    (density-ratio trick). The discriminator is trained by its own Adam (lr 1e-4,
    betas (0.5, 0.9)) on the batch's z (class 0) against its dimension-permuted copy
    (class 1), both detached, as in disentanglement_lib."""

    DISCRIMINATOR_LR = 1e-4
    DISCRIMINATOR_BETAS = (0.5, 0.9)

    def __init__(self, image_shape, latent_dim, architecture, hp) -> None:  # noqa: ANN001
        super().__init__(image_shape, latent_dim, architecture, "factor_vae", hp)
        self.discriminator = Discriminator(latent_dim)

    def auxiliary_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=self.DISCRIMINATOR_LR, betas=self.DISCRIMINATOR_BETAS
            )
        }

    def discriminator_loss(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cross-entropy, accuracy)`` of the discriminator on ``z`` vs ``permute_dims(z)``."""
        z = z.detach()
        logits = self.discriminator(torch.cat([z, permute_dims(z)])).float()
        target = torch.cat([torch.zeros(len(z), dtype=torch.long), torch.ones(len(z), dtype=torch.long)])
        target = target.to(logits.device)
        loss = F.cross_entropy(logits, target)  # = ½(CE on q(z) + CE on the permuted)
        accuracy = (logits.argmax(1) == target).float().mean()
        return loss, accuracy

    def loss_terms(self, x: torch.Tensor, step: int, factors: torch.Tensor | None = None) -> dict[str, Any]:
        t = self._gaussian_terms(x, with_z=True)
        logits = self.discriminator(t["z"]).float()
        tc = (logits[:, 0] - logits[:, 1]).mean()
        loss = factor_vae_loss(t["recon"], t["kl"], tc, self.hp["gamma"])
        d_loss, d_acc = self.discriminator_loss(t["z"])
        return {
            "loss": loss, "recon": t["recon"], "kl": t["kl"], "kl_per_dim": t["kl_per_dim"], "capacity": None,
            "aux_losses": {"discriminator": d_loss},
            "signals": {"tc": tc, "disc_loss": d_loss, "disc_accuracy": d_acc},
        }


# --------------------------------------------------------------------------- DIP-VAE


def covariance(mu: torch.Tensor) -> torch.Tensor:
    """Cov over the batch, E[μμᵀ] − E[μ]E[μ]ᵀ (normalised by M, as disentanglement_lib)."""
    mean = mu.mean(0)
    return mu.T @ mu / mu.shape[0] - mean[:, None] * mean[None, :]


class DIPVAE(GaussianVAE):
    """DIP-VAE (Kumar et al. 2018): recon + KL + λ_od·Σ_{i≠j} C_ij² + λ_d·Σ_i (C_ii − 1)²,
    C = Cov[μ(x)] (type i) or Cov[μ(x)] + E[diag σ²(x)] (type ii), over the batch."""

    def __init__(self, image_shape, latent_dim, architecture, hp) -> None:  # noqa: ANN001
        super().__init__(image_shape, latent_dim, architecture, "dip_vae", hp)
        if hp["dip_type"] not in ("i", "ii"):
            raise ValueError(f"dip_type must be 'i' or 'ii', got {hp['dip_type']!r}")

    def loss_terms(self, x: torch.Tensor, step: int, factors: torch.Tensor | None = None) -> dict[str, Any]:
        t = self._gaussian_terms(x, with_z=True)
        extra = t["logvar"].exp().mean(0) if self.hp["dip_type"] == "ii" else None
        reg = dip_regulariser(covariance(t["mu"]), self.hp["lambda_od"], self.hp["lambda_d"], extra)
        loss = t["recon"] + t["kl"] + reg
        return {
            "loss": loss, "recon": t["recon"], "kl": t["kl"], "kl_per_dim": t["kl_per_dim"], "capacity": None,
            "signals": {"dip_reg": reg},
        }


# --------------------------------------------------------------------------- VQ-VAE

USAGE_WINDOW, COLLAPSE_FRACTION = VQ_USAGE_WINDOW, VQ_COLLAPSE_FRACTION
EMA_DECAY, EMA_EPSILON = VQ_EMA_DECAY, VQ_EMA_EPSILON


class VQVAE(nn.Module):
    """VQ-VAE (van den Oord et al. 2017) with ``latent_dim`` slots, each a
    ``codebook_dim``-vector quantised to the nearest of ``codebook_size`` shared codes.

    The encoder gives z_e ``(B, slots·codebook_dim)``; each slot is replaced by its
    nearest code e (z_q), the decoder reads z_q, and gradients pass z_q -> z_e
    unchanged (straight-through). Loss: recon + ‖sg[z_e] − e‖² + β·‖z_e − sg[e]‖².
    With ``codebook_update = "ema"`` the codes are exponential moving averages (decay
    0.99, Laplace-smoothed counts) of the encodings assigned to them, and the codebook
    term is dropped. With ``dead_code_steps`` = n > 0, a code no encoding chose for n
    steps is reset to a random encoding of the current batch.

    For the metrics, ``encode`` returns the **pre-quantisation encoding z_e**
    (flattened, width ``slots·codebook_dim``) as the "means" and zeros as the
    log-variances: z_e is continuous (no ties for the binned or regression
    metrics) and determines z_q; ``decode(z)`` quantises ``z`` first, so
    ``decode(encode(x))`` is the model's reconstruction. There is no Gaussian
    posterior: the record's ``kl`` / ``kl_per_dim`` (computed from these zeros)
    are 0.5·E[z_e²], not a KL, and the objective has no KL term (the paper's is the
    constant log K per slot); the training history's ``kl`` is 0.
    """

    needs_factors = False
    gaussian_posterior = False

    def __init__(self, image_shape, slots: int, architecture: str, hp: dict[str, Any]) -> None:  # noqa: ANN001
        super().__init__()
        self.hp = dict(hp)
        self.slots = slots
        self.codebook_size = int(hp["codebook_size"])
        self.code_dim = int(hp["codebook_dim"])
        self.commitment = float(hp["commitment"])
        self.ema = hp.get("codebook_update", "loss") == "ema"
        if hp.get("codebook_update", "loss") not in ("loss", "ema"):
            raise ValueError(f"codebook_update must be 'loss' or 'ema', got {hp['codebook_update']!r}")
        self.dead_code_steps = int(hp.get("dead_code_steps") or 0)
        self.latent_dim = slots * self.code_dim
        self.encoder, self.decoder = build_networks(
            architecture, image_shape, self.latent_dim, encoder_out=self.latent_dim
        )
        k = self.codebook_size
        init = torch.empty(k, self.code_dim).uniform_(-1.0 / k, 1.0 / k)
        if self.ema:
            self.register_buffer("codebook", init)
            # A pseudo-count of 1 per code: an unused code keeps its initial value
            # instead of being divided by a vanishing count.
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("last_used", torch.zeros(k, dtype=torch.long))
        self.register_buffer("codes_reset", torch.zeros((), dtype=torch.long))
        self._recent: deque[torch.Tensor] = deque(maxlen=USAGE_WINDOW)

    # -- quantisation ---------------------------------------------------------
    def quantise(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_e`` ``(B, slots, code_dim)`` -> ``(z_q, code indices (B·slots,))``."""
        flat = z_e.reshape(-1, self.code_dim)
        with torch.no_grad():
            cb = self.codebook.detach()
            dist = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ cb.T + cb.pow(2).sum(1)[None, :]
            idx = dist.argmin(1)
        z_q = F.embedding(idx, self.codebook).view_as(z_e)
        return z_q, idx

    @torch.no_grad()
    def _reset_dead_codes(self, flat: torch.Tensor, step: int) -> None:
        dead = torch.nonzero(step - self.last_used > self.dead_code_steps).flatten()
        if dead.numel() == 0:
            return
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        new = flat[pick].to(self.codebook.dtype)
        self.codebook.data[dead] = new
        if self.ema:
            self.ema_sum[dead] = new
            self.ema_count[dead] = 1.0
        self.last_used[dead] = step
        self.codes_reset += dead.numel()

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat.to(self.ema_sum.dtype))
        self.ema_count.mul_(EMA_DECAY).add_(counts, alpha=1.0 - EMA_DECAY)
        self.ema_sum.mul_(EMA_DECAY).add_(sums, alpha=1.0 - EMA_DECAY)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + EMA_EPSILON) / (n + self.codebook_size * EMA_EPSILON) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    def code_usage(self) -> float:
        """Fraction of the codes chosen at least once in the last ``USAGE_WINDOW`` training steps."""
        if not self._recent:
            return math.nan
        return float((torch.stack(list(self._recent)).sum(0) > 0).float().mean())

    # -- the protocol ---------------------------------------------------------
    def encode(self, x: torch.Tensor, factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z_e = self.encoder(x)
        return z_e, torch.zeros_like(z_e)

    def decode(self, z: torch.Tensor, factors: torch.Tensor | None = None) -> torch.Tensor:
        z_q, _ = self.quantise(z.float().view(-1, self.slots, self.code_dim))
        return self.decoder(z_q.flatten(1))

    def recon_errors(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    def loss_terms(self, x: torch.Tensor, step: int, factors: torch.Tensor | None = None) -> dict[str, Any]:
        z_e = self.encoder(x).float().view(-1, self.slots, self.code_dim)
        flat = z_e.reshape(-1, self.code_dim)
        if self.training and self.dead_code_steps > 0:
            self._reset_dead_codes(flat.detach(), step)
        z_q, idx = self.quantise(z_e)
        commitment = (z_e - z_q.detach()).pow(2).sum((1, 2)).mean()
        if self.ema:
            codebook_term = torch.zeros((), device=x.device)
        else:
            codebook_term = (z_e.detach() - z_q).pow(2).sum((1, 2)).mean()
        z_st = z_e + (z_q - z_e).detach()  # straight-through estimator
        logits = self.decoder(z_st.flatten(1))
        recon = self.recon_errors(x, logits.float()).mean()
        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        if self.training:
            with torch.no_grad():
                self.last_used[counts > 0] = step
                if self.ema:
                    self._ema_update(flat.detach(), idx, counts)
                self._recent.append(counts.detach())
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        loss = vq_vae_loss(recon, codebook_term, commitment, self.commitment)
        kl_per_dim = torch.zeros(self.latent_dim, device=x.device)
        signals = {
            "perplexity": perplexity, "code_usage": self.code_usage() if self.training else float((counts > 0).float().mean()),
            "commitment": commitment, "codebook": codebook_term, "codes_reset": float(self.codes_reset),
        }
        return {
            "loss": loss, "recon": recon, "kl": kl_per_dim.sum(), "kl_per_dim": kl_per_dim, "capacity": None,
            "signals": signals,
        }

    def notes(self) -> list[str]:
        usage = self.code_usage()
        if math.isfinite(usage) and usage < COLLAPSE_FRACTION:
            used = int(round(usage * self.codebook_size))
            return [
                f"codebook collapse: {used} of {self.codebook_size} codes ({usage:.0%}) used in the last "
                f"{len(self._recent)} training steps"
            ]
        return []


# --------------------------------------------------------------------------- factories


def build_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "vae", {})


def build_beta_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", beta_hyperparameters(spec))


def build_beta_vae_capacity(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    hp = spec_values(spec, ("capacity", "gamma", "capacity_steps"))
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae_capacity", hp)


def _need_dataset(dataset: Any, model: str) -> Any:
    if dataset is None:
        raise ValueError(f"{model} needs the dataset to be built (factory(spec, image_shape, dataset=...))")
    return dataset


def build_cvae(spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> ConditionalVAE:
    index, num_classes, num_factors = cvae_condition(spec, dataset)
    return ConditionalVAE(
        image_shape, spec.latent_dim, spec.architecture, beta_hyperparameters(spec),
        factor_index=index, num_classes=num_classes, num_factors=num_factors,
    )


def dataset_size(dataset: Any) -> int:
    """Number of training points: ``len(dataset)`` for a finite set of images (MNIST),
    else the number of factor combinations (dSprites: 737,280)."""
    try:
        return int(len(dataset))
    except TypeError:
        return int(math.prod(dataset.factor_sizes))


def build_beta_tcvae(spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> BetaTCVAE:
    dataset = _need_dataset(dataset, "beta_tcvae")
    return BetaTCVAE(image_shape, spec.latent_dim, spec.architecture, beta_hyperparameters(spec), dataset_size(dataset))


def build_factor_vae(spec: Any, image_shape: tuple[int, int, int]) -> FactorVAE:
    return FactorVAE(image_shape, spec.latent_dim, spec.architecture, spec_values(spec, ("gamma",)))


def build_dip_vae(spec: Any, image_shape: tuple[int, int, int]) -> DIPVAE:
    return DIPVAE(image_shape, spec.latent_dim, spec.architecture, spec_values(spec, ("dip_type", "lambda_od", "lambda_d")))


def build_vq_vae(spec: Any, image_shape: tuple[int, int, int]) -> VQVAE:
    hp = spec_values(spec, ("codebook_size", "codebook_dim", "commitment", "codebook_update", "dead_code_steps"))
    return VQVAE(image_shape, spec.latent_dim, spec.architecture, hp)
