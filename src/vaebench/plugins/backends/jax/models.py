"""JAX (Flax NNX) implementations of the Gaussian-latent VAE family.

The JAX model protocol every model factory returns (third-party models too); an
``nnx.Module`` whose static attributes are hashable (they key the jit cache):

- ``encode(x) -> (mu, logvar)``: images ``(B, H, W, C)`` in [0, 1] -> ``(B, D)`` each;
- ``decode(z) -> logits``: ``(B, D)`` -> ``(B, H, W, C)`` pixel logits;
- ``terms(x, eps) -> (recon, kl, kl_per_dim)``: batch-mean reconstruction NLL and
  KL (nats per image) and the KL per dimension ``(D,)``, with the
  reparameterisation noise ``eps`` ``(B, D)`` given (pure, jit-able, differentiable);
- ``objective(recon, kl, step) -> (loss, capacity)``: the scalar to minimise from
  the batch means; ``step`` is a Python int (it may drive a schedule), so the
  backend evaluates it outside ``jit`` and chains its derivatives into the
  network's (see ``backend.py``);
- ``recon_errors(x, logits) -> (B,)``: per-image negative log-likelihood (nats);
- ``latent_dim``: D.

The loss is the torch backend's exactly: Bernoulli NLL summed over pixels, KL
summed over dimensions, both averaged over the batch, combined by the shared
:func:`vaebench.plugins.models.objectives.objective`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vaebench.plugins.backends.jax.nets import build_networks
from vaebench.plugins.models.objectives import objective


def gaussian_kl_per_dim(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and dimension, ``(B, D)`` nats."""
    return 0.5 * (mu**2 + jnp.exp(logvar) - logvar - 1.0)


def bernoulli_nll(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Element-wise binary cross-entropy with logits, in torch's stable form
    ``max(l, 0) - l·x + log(1 + exp(-|l|))`` (``F.binary_cross_entropy_with_logits``)."""
    return jnp.maximum(logits, 0.0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))


class GaussianVAE(nnx.Module):
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
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim = int(latent_dim)
        self.architecture = architecture
        self.objective_name = objective_name
        self.hp_items = tuple(sorted(hp.items()))  # hashable: part of the graph definition
        self.encoder, self.decoder = build_networks(architecture, self.image_shape, self.latent_dim, rngs)

    @property
    def hp(self) -> dict[str, Any]:
        return dict(self.hp_items)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(x)
        mu, logvar = jnp.split(h, 2, axis=-1)
        return mu, logvar

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def recon_errors(self, x: jax.Array, logits: jax.Array) -> jax.Array:
        """Bernoulli negative log-likelihood summed over pixels, ``(B,)`` nats."""
        return bernoulli_nll(x, logits).reshape(x.shape[0], -1).sum(axis=1)

    def terms(self, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mu, logvar = self.encode(x)
        z = mu + eps.astype(mu.dtype) * jnp.exp(0.5 * logvar)
        logits = self.decode(z)
        recon = self.recon_errors(x, logits.astype(jnp.float32)).mean()
        kl_per_dim = gaussian_kl_per_dim(mu.astype(jnp.float32), logvar.astype(jnp.float32)).mean(axis=0)
        return recon, kl_per_dim.sum(), kl_per_dim

    def objective(self, recon: Any, kl: Any, step: int) -> tuple[Any, float | None]:
        return objective(self.objective_name, recon, kl, self.hp, step)

    def loss_terms(self, x: jax.Array, step: int, eps: jax.Array | None = None, key: jax.Array | None = None) -> dict[str, Any]:
        """The torch model's ``loss_terms`` (eagerly): ``loss``, ``recon``, ``kl``,
        ``kl_per_dim``, ``capacity``. The noise is ``eps`` if given, else drawn from ``key``."""
        if eps is None:
            if key is None:
                raise ValueError("loss_terms needs eps or a PRNG key")
            eps = jax.random.normal(key, (x.shape[0], self.latent_dim), jnp.float32)
        recon, kl, kl_per_dim = self.terms(x, eps)
        loss, capacity = self.objective(recon, kl, step)
        return {"loss": loss, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim, "capacity": capacity}


def _hp(spec: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(spec, n) for n in names}


def _rngs(spec: Any) -> nnx.Rngs:
    return nnx.Rngs(params=int(spec.seed))


def build_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "vae", {}, rngs=_rngs(spec))


def build_beta_vae(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    if getattr(spec, "beta_schedule", None) is not None:
        # The jitted step takes β as a constant; a scheduled β would silently run constant.
        raise ValueError(f"β schedule {spec.beta_schedule!r} is not implemented in the JAX backend (use --backend torch)")
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", _hp(spec, ("beta",)), rngs=_rngs(spec))


def build_beta_vae_capacity(spec: Any, image_shape: tuple[int, int, int]) -> GaussianVAE:
    hp = _hp(spec, ("capacity", "gamma", "capacity_steps"))
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae_capacity", hp, rngs=_rngs(spec))


# -- weights from torch ----------------------------------------------------------


def _chw_to_hwc_rows(kernel: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Reorder a dense kernel's input rows from torch's ``(c, h, w)`` flattening to ``(h, w, c)``."""
    c, h, w = chw
    return kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)


def _chw_to_hwc_cols(kernel: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Reorder a dense kernel's output columns (or a bias) from ``(c, h, w)`` to ``(h, w, c)``."""
    c, h, w = chw
    lead = kernel.shape[:-1]
    return kernel.reshape(*lead, c, h, w).transpose(*range(len(lead)), -2, -1, -3).reshape(*lead, c * h * w)


def copy_torch_weights(torch_model: Any, jax_model: GaussianVAE) -> GaussianVAE:
    """Copy a torch :class:`~vaebench.plugins.backends.torch.models.GaussianVAE`'s
    weights into a JAX :class:`GaussianVAE` of the same architecture (in place;
    returns ``jax_model``), so both compute the same function:

    - dense: torch ``(out, in)`` -> kernel ``(in, out)``;
    - conv: OIHW -> HWIO;
    - transposed conv: torch ``(in, out, kH, kW)`` -> ``(kH, kW, out, in)``, the
      layout of ``nnx.ConvTranspose(..., transpose_kernel=True)`` (no manual flip:
      the layer flips it, as the gradient of a convolution does; see
      ``nets.ConvTranspose2x``);
    - the dense layer reading the conv stack (and the MLP's first layer, reading
      the image) gets its input rows reordered from NCHW to NHWC flattening; the
      dense layer feeding the deconv stack (and the MLP decoder's last layer) its
      output columns and bias.
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
    return jax_model


def _assign(layer: nnx.Module, kernel: np.ndarray, bias: np.ndarray) -> None:
    if layer.kernel.shape != kernel.shape or layer.bias.shape != bias.shape:
        raise ValueError(
            f"shape mismatch copying torch weights: kernel {kernel.shape} -> {layer.kernel.shape}, "
            f"bias {bias.shape} -> {layer.bias.shape}"
        )
    layer.kernel.set_value(jnp.asarray(np.ascontiguousarray(kernel)))
    layer.bias.set_value(jnp.asarray(np.ascontiguousarray(bias)))
