"""JAX (Flax NNX) implementations of the VAE family and the model zoo (cvae, vq_vae).

The JAX model protocol every model factory returns (third-party models too; as a type,
``contract.JaxModel``); an ``nnx.Module`` whose static attributes are hashable (they key
the jit cache):

- ``encode(x, factors=None) -> (mu, logvar)``: images ``(B, H, W, C)`` in [0, 1] ->
  ``(B, D)`` each;
- ``decode(z, factors=None) -> logits``: ``(B, D)`` -> ``(B, H, W, C)`` pixel logits;
- ``loss_terms(x, step, key=None, factors=None, eps=None) -> dict``: ``loss`` (the
  scalar to minimise), ``recon`` and ``kl`` (batch means, nats per image),
  ``kl_per_dim`` ``(D,)``, ``capacity`` (array scalar or ``None``) and ``signals``
  (``{name: scalar}``, may be empty). **Traceable**: the backend calls it inside the
  jitted training step with ``step`` a traced ``int32`` and ``key`` the step's PRNG
  key (Gaussian models draw their noise from it unless ``eps`` ``(B, D)`` is given).
  It may update non-``Param`` variables in place (VQ-VAE's EMA codebook); the
  backend carries them from step to step;
- ``recon_errors(x, logits) -> (B,)``: per-image negative log-likelihood (nats);
- ``latent_dim``: D.

Optional, as in the torch protocol (``backends/torch/models.py``):
``needs_factors = True`` (``loss_terms``, ``encode`` and ``decode`` take the batch's
factor rows ``(B, K)`` int; ``encode`` without them infers them); ``gaussian_posterior
= False``; ``before_step(x, step, key, factors)``, traced before the gradient step and
free to change any variable, parameters included (VQ-VAE's dead-code reset);
``notes() -> list[str]`` (read on the host after training).

The losses are the torch backend's exactly: Bernoulli NLL summed over pixels, KL
summed over dimensions, both averaged over the batch, combined by the shared
:mod:`vaebench.plugins.objectives` (``objective``, ``beta_at``,
``vq_vae_loss``), whose schedules are traceable.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vaebench.plugins.backends.jax.nets import build_networks
from vaebench.plugins.objectives import (
    beta_hyperparameters,
    spec_values,
    VQ_COLLAPSE_FRACTION as COLLAPSE_FRACTION,
    VQ_EMA_DECAY as EMA_DECAY,
    VQ_EMA_EPSILON as EMA_EPSILON,
    VQ_USAGE_WINDOW as USAGE_WINDOW,
    beta_at,
    cvae_condition,
    objective,
    vq_vae_loss,
)


def gaussian_kl_per_dim(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and dimension, ``(B, D)`` nats."""
    return 0.5 * (mu**2 + jnp.exp(logvar) - logvar - 1.0)


def bernoulli_nll(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Element-wise binary cross-entropy with logits, in torch's stable form
    ``max(l, 0) - l·x + log(1 + exp(-|l|))`` (``F.binary_cross_entropy_with_logits``)."""
    return jnp.maximum(logits, 0.0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def _recon_errors(x: jax.Array, logits: jax.Array) -> jax.Array:
    return bernoulli_nll(x, logits).reshape(x.shape[0], -1).sum(axis=1)


class GaussianVAE(nnx.Module):
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
        *,
        rngs: nnx.Rngs,
        cond_dim: int = 0,
    ) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim = int(latent_dim)
        self.architecture = architecture
        self.objective_name = objective_name
        self.hp_items = tuple(sorted(hp.items()))  # hashable: part of the graph definition
        self.encoder, self.decoder = build_networks(
            architecture, self.image_shape, self.latent_dim, rngs, cond_dim=cond_dim
        )

    @property
    def hp(self) -> dict[str, Any]:
        return dict(self.hp_items)

    def encode(self, x: jax.Array, factors: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(x)
        mu, logvar = jnp.split(h, 2, axis=-1)
        return mu, logvar

    def decode(self, z: jax.Array, factors: jax.Array | None = None) -> jax.Array:
        return self.decoder(z)

    def recon_errors(self, x: jax.Array, logits: jax.Array) -> jax.Array:
        """Bernoulli negative log-likelihood summed over pixels, ``(B,)`` nats."""
        return _recon_errors(x, logits)

    def _posterior_and_logits(self, x: jax.Array, eps: jax.Array, factors: jax.Array | None) -> tuple[jax.Array, ...]:
        mu, logvar = self.encode(x, factors)
        z = mu + eps.astype(mu.dtype) * jnp.exp(0.5 * logvar)
        return mu, logvar, self.decode(z, factors)

    def terms(self, x: jax.Array, eps: jax.Array, factors: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(recon, kl, kl_per_dim)``: batch means (nats per image) for the noise ``eps`` ``(B, D)``."""
        mu, logvar, logits = self._posterior_and_logits(x, eps, factors)
        recon = self.recon_errors(x, logits.astype(jnp.float32)).mean()
        kl_per_dim = gaussian_kl_per_dim(mu.astype(jnp.float32), logvar.astype(jnp.float32)).mean(axis=0)
        return recon, kl_per_dim.sum(), kl_per_dim

    def noise(self, key: jax.Array, batch: int) -> jax.Array:
        """The reparameterisation noise of one step: ``normal(key, (batch, D))`` float32."""
        return jax.random.normal(key, (batch, self.latent_dim), jnp.float32)

    def objective(self, recon: Any, kl: Any, step: Any) -> tuple[Any, Any, dict[str, Any]]:
        """``(loss, capacity, signals)`` of this model's objective (:func:`gaussian_objective`)."""
        return gaussian_objective(self.objective_name, self.hp, recon, kl, step)

    def loss_terms(
        self, x: jax.Array, step: Any, key: jax.Array | None = None, factors: jax.Array | None = None,
        eps: jax.Array | None = None,
    ) -> dict[str, Any]:
        """``loss``, ``recon``, ``kl``, ``kl_per_dim``, ``capacity``, ``signals`` (traceable).
        The noise is ``eps`` if given, else :meth:`noise` of ``key``."""
        if eps is None:
            if key is None:
                raise ValueError("loss_terms needs eps or a PRNG key")
            eps = self.noise(key, x.shape[0])
        recon, kl, kl_per_dim = self.terms(x, eps, factors)
        loss, capacity, signals = self.objective(recon, kl, step)
        return {"loss": loss, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim, "capacity": capacity,
                "signals": signals}


def gaussian_objective(
    objective_name: str, hp: dict[str, Any], recon: Any, kl: Any, step: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """``(loss, capacity or None, signals)`` of a Gaussian model from its batch-mean ``recon``
    and ``kl`` (nats per image): the shared ``objective``, and as signal the scheduled β
    (only a scheduled one, as the torch model). Traceable in ``step``; ``hp`` is static.
    Used by :meth:`GaussianVAE.loss_terms` and, per member, by the vectorized group step."""
    loss, capacity = objective(objective_name, recon, kl, hp, step)
    signals = {}
    if "beta" in hp and hp.get("beta_schedule") not in (None, "constant"):
        signals["beta"] = beta_at(step, hp)
    return loss, capacity, signals


# --------------------------------------------------------------------------- cvae


class ConditionalVAE(GaussianVAE):
    """Conditional VAE (Sohn et al. 2015), the torch ``ConditionalVAE`` layer for layer:
    q(z|x, y) and p(x|z, y), y the one-hot of factor column ``factor_index``
    (``num_classes`` values) joined to the encoder's first dense layer's input and to
    the decoder's input ``[z, y]``. Loss: recon + β(step)·KL.

    Without factors, ``encode`` takes for each image the label whose ELBO (decoded from
    the posterior mean) is highest (:meth:`infer_factors`) and ``decode`` the uniform 1/K.
    """

    needs_factors = True

    def __init__(self, image_shape, latent_dim, architecture, hp, *, factor_index: int,  # noqa: ANN001
                 num_classes: int, num_factors: int, rngs: nnx.Rngs) -> None:
        super().__init__(image_shape, latent_dim, architecture, "cvae", hp, rngs=rngs, cond_dim=num_classes)
        self.factor_index = int(factor_index)
        self.num_classes = int(num_classes)
        self.num_factors = int(num_factors)

    def condition(self, factors: jax.Array | None, batch: int) -> jax.Array:
        """One-hot labels ``(B, K)`` from factor rows, or the uniform 1/K without them."""
        if factors is None:
            return jnp.full((batch, self.num_classes), 1.0 / self.num_classes, jnp.float32)
        return jax.nn.one_hot(factors[:, self.factor_index], self.num_classes, dtype=jnp.float32)

    def _encode_c(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        mu, logvar = jnp.split(self.encoder(x, c), 2, axis=-1)
        return mu, logvar

    def _decode_c(self, z: jax.Array, c: jax.Array) -> jax.Array:
        return self.decoder(jnp.concatenate([z, c.astype(z.dtype)], axis=1))

    def infer_factors(self, x: jax.Array) -> jax.Array:
        """Factor rows ``(B, K)`` int32 whose condition column is argmax_y ELBO(x, y), the rest 0.
        The K labels are scored one after another (``lax.map``): memory of one batch, one compiled body."""

        def negative_elbo(k: jax.Array) -> jax.Array:
            c = jax.nn.one_hot(jnp.full((x.shape[0],), k), self.num_classes, dtype=jnp.float32)
            mu, logvar = self._encode_c(x, c)
            logits = self._decode_c(mu, c).astype(jnp.float32)
            kl = gaussian_kl_per_dim(mu.astype(jnp.float32), logvar.astype(jnp.float32)).sum(1)
            return self.recon_errors(x.astype(jnp.float32), logits) + kl

        scores = jax.lax.map(negative_elbo, jnp.arange(self.num_classes))  # (K, B)
        labels = jnp.argmin(scores, axis=0).astype(jnp.int32)
        return jnp.zeros((x.shape[0], self.num_factors), jnp.int32).at[:, self.factor_index].set(labels)

    def encode(self, x: jax.Array, factors: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        if factors is None:
            factors = self.infer_factors(x)
        return self._encode_c(x, self.condition(factors, x.shape[0]))

    def decode(self, z: jax.Array, factors: jax.Array | None = None) -> jax.Array:
        return self._decode_c(z, self.condition(factors, z.shape[0]))


# --------------------------------------------------------------------------- VQ-VAE

class CodebookState(nnx.Variable):
    """VQ-VAE state that is not trained by the gradient: the EMA codebook and its
    statistics, the step each code was last chosen, the code-usage window."""


class VQVAE(nnx.Module):
    """VQ-VAE (van den Oord et al. 2017), the torch ``VQVAE`` in JAX: ``slots`` slots of
    ``codebook_dim`` quantised to the nearest of ``codebook_size`` shared codes,
    straight-through; loss recon + ‖sg[z_e] − e‖² + β·‖z_e − sg[e]‖² (the codebook term
    is 0 under ``codebook_update = "ema"``: codes are EMAs, decay 0.99, of their
    assigned encodings, Laplace-smoothed counts). ``dead_code_steps`` = n > 0: a code
    no encoding chose for n steps is reset to a random encoding of the batch
    (:meth:`before_step`).

    ``encode`` returns the pre-quantisation encoding z_e ``(B, slots·codebook_dim)`` and
    zeros; ``decode`` quantises. The code-usage window (the codes chosen in each of the
    last 50 training steps) is a ``(50, K)`` ring buffer on the device, so the whole
    step stays one XLA program.
    """

    needs_factors = False
    gaussian_posterior = False

    def __init__(self, image_shape, slots: int, architecture: str, hp: dict[str, Any], *,  # noqa: ANN001
                 rngs: nnx.Rngs) -> None:
        update = hp.get("codebook_update") or "loss"
        if update not in ("loss", "ema"):
            raise ValueError(f"codebook_update must be 'loss' or 'ema', got {update!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.architecture = architecture
        self.slots = int(slots)
        self.codebook_size = k = int(hp["codebook_size"])
        self.code_dim = int(hp["codebook_dim"])
        self.commitment = float(hp["commitment"])
        self.ema = update == "ema"
        self.dead_code_steps = int(hp.get("dead_code_steps") or 0)
        self.latent_dim = self.slots * self.code_dim
        self.encoder, self.decoder = build_networks(
            architecture, self.image_shape, self.latent_dim, rngs, encoder_out=self.latent_dim
        )
        init = jax.random.uniform(rngs.params(), (k, self.code_dim), jnp.float32, -1.0 / k, 1.0 / k)
        if self.ema:
            self.codebook = CodebookState(init)
            self.ema_count = CodebookState(jnp.ones((k,), jnp.float32))  # pseudo-count 1 per code
            self.ema_sum = CodebookState(jnp.array(init))  # its own buffer (the step donates both)
        else:
            self.codebook = nnx.Param(init)
        self.last_used = CodebookState(jnp.zeros((k,), jnp.int32))
        self.codes_reset = CodebookState(jnp.zeros((), jnp.int32))
        self.recent = CodebookState(jnp.zeros((USAGE_WINDOW, k), jnp.float32))
        self.steps_seen = CodebookState(jnp.zeros((), jnp.int32))

    # -- quantisation ---------------------------------------------------------
    def quantise(self, z_e: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z_e`` ``(B, slots, code_dim)`` -> ``(z_q, code indices (B·slots,))``; the
        gradient reaches the codebook through z_q, never through the distances."""
        flat = jax.lax.stop_gradient(z_e.reshape(-1, self.code_dim))
        cb = self.codebook[...]
        scb = jax.lax.stop_gradient(cb)
        dist = (flat**2).sum(1, keepdims=True) - 2.0 * flat @ scb.T + (scb**2).sum(1)[None, :]
        idx = jnp.argmin(dist, axis=1)
        return cb[idx].reshape(z_e.shape), idx

    def _encode_slots(self, x: jax.Array) -> jax.Array:
        return self.encoder(x).astype(jnp.float32).reshape(-1, self.slots, self.code_dim)

    def before_step(self, x: jax.Array, step: Any, key: jax.Array, factors: jax.Array | None = None) -> None:
        """Dead-code reset (``dead_code_steps`` > 0): every code unused for more than n steps
        becomes an encoding of this batch drawn uniformly (its EMA statistics restart at
        that encoding, count 1)."""
        if self.dead_code_steps <= 0:
            return
        flat = jax.lax.stop_gradient(self._encode_slots(x).reshape(-1, self.code_dim))
        dead = (step - self.last_used[...]) > self.dead_code_steps
        pick = jax.random.randint(jax.random.fold_in(key, 1), (self.codebook_size,), 0, flat.shape[0])
        new = flat[pick]
        self.codebook[...] = jnp.where(dead[:, None], new, self.codebook[...])
        if self.ema:
            self.ema_sum[...] = jnp.where(dead[:, None], new, self.ema_sum[...])
            self.ema_count[...] = jnp.where(dead, 1.0, self.ema_count[...])
        self.last_used[...] = jnp.where(dead, step, self.last_used[...]).astype(jnp.int32)
        self.codes_reset[...] = self.codes_reset[...] + dead.sum().astype(jnp.int32)

    def _ema_update(self, flat: jax.Array, idx: jax.Array, counts: jax.Array) -> None:
        sums = jnp.zeros_like(self.ema_sum[...]).at[idx].add(flat)
        count = self.ema_count[...] * EMA_DECAY + counts * (1.0 - EMA_DECAY)
        total = self.ema_sum[...] * EMA_DECAY + sums * (1.0 - EMA_DECAY)
        n = count.sum()
        smoothed = (count + EMA_EPSILON) / (n + self.codebook_size * EMA_EPSILON) * n
        self.ema_count[...], self.ema_sum[...] = count, total
        self.codebook[...] = total / smoothed[:, None]

    def _usage(self, recent: jax.Array, seen: jax.Array) -> jax.Array:
        used = (recent.sum(0) > 0).astype(jnp.float32).mean()
        return jnp.where(seen > 0, used, jnp.nan)

    def code_usage(self) -> float:
        """Fraction of the codes chosen at least once in the last ``USAGE_WINDOW`` training steps."""
        return float(self._usage(self.recent[...], self.steps_seen[...]))

    # -- the protocol ---------------------------------------------------------
    def encode(self, x: jax.Array, factors: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        z_e = self.encoder(x)
        return z_e, jnp.zeros_like(z_e)

    def decode(self, z: jax.Array, factors: jax.Array | None = None) -> jax.Array:
        z_q, _ = self.quantise(z.astype(jnp.float32).reshape(-1, self.slots, self.code_dim))
        return self.decoder(z_q.reshape(z_q.shape[0], -1))

    def recon_errors(self, x: jax.Array, logits: jax.Array) -> jax.Array:
        return _recon_errors(x, logits)

    def loss_terms(
        self, x: jax.Array, step: Any, key: jax.Array | None = None, factors: jax.Array | None = None,
        eps: jax.Array | None = None,
    ) -> dict[str, Any]:
        """The torch ``VQVAE.loss_terms`` in training mode: also records the codes chosen
        (last use, usage window) and, under EMA, updates the codebook."""
        z_e = self._encode_slots(x)
        z_q, idx = self.quantise(z_e)
        commitment = ((z_e - jax.lax.stop_gradient(z_q)) ** 2).sum((1, 2)).mean()
        if self.ema:
            codebook_term = jnp.zeros((), jnp.float32)
        else:
            codebook_term = ((jax.lax.stop_gradient(z_e) - z_q) ** 2).sum((1, 2)).mean()
        z_st = z_e + jax.lax.stop_gradient(z_q - z_e)  # straight-through estimator
        logits = self.decoder(z_st.reshape(z_st.shape[0], -1))
        recon = self.recon_errors(x, logits.astype(jnp.float32)).mean()
        counts = jnp.zeros((self.codebook_size,), jnp.float32).at[idx].add(1.0)
        self.last_used[...] = jnp.where(counts > 0, step, self.last_used[...]).astype(jnp.int32)
        if self.ema:
            self._ema_update(jax.lax.stop_gradient(z_e.reshape(-1, self.code_dim)), idx, counts)
        seen = self.steps_seen[...]
        self.recent[...] = self.recent[...].at[seen % USAGE_WINDOW].set(counts)
        self.steps_seen[...] = seen + 1
        p = counts / counts.sum()
        perplexity = jnp.exp(-(p * jnp.log(jnp.maximum(p, 1e-12))).sum())
        loss = vq_vae_loss(recon, codebook_term, commitment, self.commitment)
        kl_per_dim = jnp.zeros((self.latent_dim,), jnp.float32)
        signals = {
            "perplexity": perplexity, "code_usage": self._usage(self.recent[...], seen + 1),
            "commitment": commitment, "codebook": codebook_term,
            "codes_reset": self.codes_reset[...].astype(jnp.float32),
        }
        return {"loss": loss, "recon": recon, "kl": kl_per_dim.sum(), "kl_per_dim": kl_per_dim, "capacity": None,
                "signals": signals}

    def notes(self) -> list[str]:
        usage = self.code_usage()
        if math.isfinite(usage) and usage < COLLAPSE_FRACTION:
            used = int(round(usage * self.codebook_size))
            window = min(int(self.steps_seen[...]), USAGE_WINDOW)
            return [
                f"codebook collapse: {used} of {self.codebook_size} codes ({usage:.0%}) used in the last "
                f"{window} training steps"
            ]
        return []


# --------------------------------------------------------------------------- factories


def _rngs(spec: Any) -> nnx.Rngs:
    return nnx.Rngs(params=int(spec.seed))


def build_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "vae", {}, rngs=_rngs(spec))


def build_beta_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", beta_hyperparameters(spec), rngs=_rngs(spec))


def build_beta_vae_capacity(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    hp = spec_values(spec, ("capacity", "gamma", "capacity_steps"))
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae_capacity", hp, rngs=_rngs(spec))


def build_cvae(spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> ConditionalVAE:
    index, num_classes, num_factors = cvae_condition(spec, dataset)
    return ConditionalVAE(
        image_shape, spec.latent_dim, spec.architecture, beta_hyperparameters(spec),
        factor_index=index, num_classes=num_classes, num_factors=num_factors, rngs=_rngs(spec),
    )


def build_vq_vae(spec: Any, image_shape: tuple[int, int, int]) -> VQVAE:
    hp = spec_values(spec, ("codebook_size", "codebook_dim", "commitment", "codebook_update", "dead_code_steps"))
    return VQVAE(image_shape, spec.latent_dim, spec.architecture, hp, rngs=_rngs(spec))


# -- weights from torch ----------------------------------------------------------


def _chw_to_hwc_rows(kernel: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Reorder a dense kernel's first ``c·h·w`` input rows from torch's ``(c, h, w)``
    flattening to ``(h, w, c)``; rows after them (a condition vector) stay in place."""
    c, h, w = chw
    n = c * h * w
    head = kernel[:n].reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(n, -1)
    return np.concatenate([head, kernel[n:]], axis=0)


def _chw_to_hwc_cols(kernel: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Reorder a dense kernel's output columns (or a bias) from ``(c, h, w)`` to ``(h, w, c)``."""
    c, h, w = chw
    lead = kernel.shape[:-1]
    return kernel.reshape(*lead, c, h, w).transpose(*range(len(lead)), -2, -1, -3).reshape(*lead, c * h * w)


def copy_torch_weights(torch_model: Any, jax_model: Any) -> Any:
    """Copy a torch model's weights (``GaussianVAE``, ``ConditionalVAE``, ``VQVAE`` of
    ``backends/torch/models.py``) into the JAX model of the same kind and architecture
    (in place; returns ``jax_model``), so both compute the same function:

    - dense: torch ``(out, in)`` -> kernel ``(in, out)``;
    - conv: OIHW -> HWIO;
    - transposed conv: torch ``(in, out, kH, kW)`` -> ``(kH, kW, out, in)``, the
      layout of ``nnx.ConvTranspose(..., transpose_kernel=True)`` (no manual flip:
      the layer flips it, as the gradient of a convolution does; see
      ``nets.ConvTranspose2x``);
    - the dense layer reading the conv stack (and the MLP's first layer, reading
      the image) gets its input rows reordered from NCHW to NHWC flattening; the
      dense layer feeding the deconv stack (and the MLP decoder's last layer) its
      output columns and bias; a condition's rows (cvae) follow the image's unchanged;
    - VQ-VAE: the codebook, and its EMA statistics, last-use steps and reset count.
    """
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in torch_model.state_dict().items()}
    c, h, w = jax_model.image_shape[2], jax_model.image_shape[0], jax_model.image_shape[1]

    def dense(layer: nnx.Linear, name: str, rows: tuple[int, int, int] | None = None,
              cols: tuple[int, int, int] | None = None) -> None:
        kernel, bias = sd[f"{name}.weight"].T, sd[f"{name}.bias"]
        if rows is not None:
            kernel = _chw_to_hwc_rows(kernel, rows)
        if cols is not None:
            kernel, bias = _chw_to_hwc_cols(kernel, cols), _chw_to_hwc_cols(bias, cols)
        _assign(layer, kernel, bias)

    def conv(layer: nnx.Module, name: str) -> None:
        # OIHW (conv) and (in, out, kH, kW) (transposed conv) both go to (kH, kW, dim1, dim0).
        _assign(layer, sd[f"{name}.weight"].transpose(2, 3, 1, 0), sd[f"{name}.bias"])

    enc, dec = jax_model.encoder, jax_model.decoder
    if jax_model.architecture == "conv":
        for i, layer in enumerate((enc.conv1, enc.conv2, enc.conv3, enc.conv4)):
            conv(layer, f"encoder.convs.{2 * i}")
        dense(enc.fc1, "encoder.dense.1", rows=(32, 4, 4))
        dense(enc.fc2, "encoder.dense.3")
        dense(enc.fc3, "encoder.dense.5")
        dense(dec.fc1, "decoder.dense.0")
        dense(dec.fc2, "decoder.dense.2")
        dense(dec.fc3, "decoder.dense.4", cols=(32, 4, 4))
        for i, layer in enumerate((dec.deconv1, dec.deconv2, dec.deconv3, dec.deconv4)):
            conv(layer, f"decoder.deconvs.{2 * i}")
    elif jax_model.architecture == "mlp":
        dense(enc.fc1, "encoder.net.1", rows=(c, h, w))
        dense(enc.fc2, "encoder.net.3")
        dense(enc.fc3, "encoder.net.5")
        dense(dec.fc1, "decoder.net.0")
        dense(dec.fc2, "decoder.net.2")
        dense(dec.fc3, "decoder.net.4")
        dense(dec.fc4, "decoder.net.6", cols=(c, h, w))
    else:
        raise ValueError(f"no torch weight mapping for architecture {jax_model.architecture!r}")
    for name in ("codebook", "ema_count", "ema_sum", "last_used", "codes_reset"):
        if name in sd:
            variable = getattr(jax_model, name)
            value = sd[name].astype(variable[...].dtype)
            if value.shape != variable[...].shape:
                raise ValueError(f"shape mismatch copying torch {name}: {value.shape} -> {variable[...].shape}")
            variable[...] = jnp.asarray(value)
    return jax_model


def _assign(layer: nnx.Module, kernel: np.ndarray, bias: np.ndarray) -> None:
    if layer.kernel.shape != kernel.shape or layer.bias.shape != bias.shape:
        raise ValueError(
            f"shape mismatch copying torch weights: kernel {kernel.shape} -> {layer.kernel.shape}, "
            f"bias {bias.shape} -> {layer.bias.shape}"
        )
    layer.kernel.set_value(jnp.asarray(np.ascontiguousarray(kernel)))
    layer.bias.set_value(jnp.asarray(np.ascontiguousarray(bias)))
