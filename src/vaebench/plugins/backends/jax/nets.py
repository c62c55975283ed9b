"""Encoder/decoder networks in Flax NNX, channels-last (NHWC).

The same architectures as ``vaebench.plugins.backends.torch.nets`` (see there
for the references), layer for layer:

``conv``: four 4×4 stride-2 convolutions, padding 1, 32 channels
(64→32→16→8→4), dense 512→256→256→2·D; the decoder mirrors it: dense
D→256→256→512, reshape to 4×4×32, four 4×4 stride-2 transposed convolutions
(4→8→16→32→64, exactly ``torch.nn.ConvTranspose2d(k=4, s=2, p=1)``, computed
in sub-pixel form for speed: :class:`ConvTranspose2x`), the last one to C
channels of pixel logits.

``mlp``: 1200-1200 ReLU encoder, 1200-1200-1200 tanh decoder.

Initialisation follows torch's defaults (``U(±1/sqrt(fan_in))`` for weights and
biases, with torch's fan-in for transposed convolutions: ``out_channels·k·k``),
so the two backends start from the same distribution, not Flax's LeCun-normal.

Layout: the dense layer after the conv stack sees the NHWC flattening
``(h, w, c)``, torch's sees ``(c, h, w)``; ``models.copy_torch_weights``
permutes those rows/columns when weights are copied across.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

#: torch's default weight init (kaiming_uniform with a = sqrt(5)) is U(±1/sqrt(fan_in)).
_torch_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int) -> Any:
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, kernel_init=_torch_kernel_init, bias_init=_torch_bias_init(n_in), rngs=rngs)


def _conv(c_in: int, c_out: int, rngs: nnx.Rngs) -> nnx.Conv:
    """torch ``Conv2d(c_in, c_out, 4, 2, 1)``."""
    return nnx.Conv(
        c_in, c_out, (4, 4), (2, 2), padding=((1, 1), (1, 1)),
        kernel_init=_torch_kernel_init, bias_init=_torch_bias_init(c_in * 16), rngs=rngs,
    )


# Sub-pixel form of ConvTranspose2d(k=4, s=2, p=1): output pixel (2m + r) reads input
# pixels m - 1, m, m + 1 (offset index d = 0, 1, 2) through kernel tap TAPS[r][d]
# (4 = no tap). From torch's definition Y = 2y - 1 + k: r = 0 uses k = 3 at y = m - 1
# and k = 1 at y = m; r = 1 uses k = 2 at y = m and k = 0 at y = m + 1.
_TAPS = np.array([[3, 1, 4], [4, 2, 0]])


class ConvTranspose2x(nnx.Module):
    """torch ``ConvTranspose2d(c_in, c_out, 4, 2, 1)``: output exactly 2× the input size.

    Parameters as ``nnx.ConvTranspose(c_in, c_out, (4, 4), (2, 2), padding=((2, 2), (2, 2)),
    transpose_kernel=True)``: ``kernel`` ``(4, 4, c_out, c_in)`` (torch's weight
    ``(c_in, c_out, kH, kW)`` transposed ``(2, 3, 1, 0)``, no flip) and ``bias``
    ``(c_out,)``; ``impl="lax"`` computes exactly that layer (``lax.conv_transpose``).

    The default ``impl="subpixel"`` computes the same function as one stride-1 3×3
    convolution to ``4·c_out`` channels (the four output phases) followed by a
    depth-to-space shuffle: the same result to float rounding (tested against
    ``nnx.ConvTranspose`` and torch), but its gradients are ordinary stride-1
    convolution gradients, whereas XLA:CPU computes the kernel gradient of an
    input-dilated convolution (what ``conv_transpose`` is) on a slow path:
    forward + backward of one 16→32 layer at batch 16 took 144 ms with
    ``lax.conv_transpose`` and 17 ms in sub-pixel form (forward alone: ~3 ms).
    """

    def __init__(self, c_in: int, c_out: int, rngs: nnx.Rngs, impl: str = "subpixel") -> None:
        if impl not in ("subpixel", "lax"):
            raise ValueError(f"unknown ConvTranspose2x impl {impl!r}")
        self.c_in, self.c_out, self.impl = c_in, c_out, impl
        self.dtype: Any = None  # compute dtype (bf16 AMP); parameters stay float32
        # torch's fan-in for a transposed conv is weight.size(1)·k·k = c_out·16: the
        # variance-scaling fan-in of a (4, 4, c_out, c_in) kernel.
        self.kernel = nnx.Param(_torch_kernel_init(rngs.params(), (4, 4, c_out, c_in), jnp.float32))
        self.bias = nnx.Param(_torch_bias_init(c_out * 16)(rngs.params(), (c_out,), jnp.float32))

    def subpixel_kernel(self) -> jax.Array:
        """The ``(3, 3, c_in, 4·c_out)`` stride-1 kernel, channels ordered ``(ry, rx, c_out)``."""
        k = jnp.pad(self.kernel[...], ((0, 1), (0, 1), (0, 0), (0, 0)))  # tap 4 = zeros
        taps = jnp.asarray(_TAPS)
        g = k[taps[:, :, None, None], taps[None, None, :, :]]  # (ry, dy, rx, dx, c_out, c_in)
        return g.transpose(1, 3, 5, 0, 2, 4).reshape(3, 3, self.c_in, 4 * self.c_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(B, H, W, c_in)`` -> ``(B, 2H, 2W, c_out)``."""
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        dn = ("NHWC", "HWIO", "NHWC")
        b, h, w, _ = x.shape
        if self.impl == "lax":
            y = jax.lax.conv_transpose(
                x, self.kernel[...].astype(dtype), (2, 2), ((2, 2), (2, 2)), dimension_numbers=dn, transpose_kernel=True
            )
        else:
            y = jax.lax.conv_general_dilated(
                x, self.subpixel_kernel().astype(dtype), (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn
            )
            y = y.reshape(b, h, w, 2, 2, self.c_out).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.c_out)
        return y + self.bias[...].astype(dtype)


def _deconv(c_in: int, c_out: int, rngs: nnx.Rngs) -> ConvTranspose2x:
    """torch ``ConvTranspose2d(c_in, c_out, 4, 2, 1)`` (see :class:`ConvTranspose2x`)."""
    return ConvTranspose2x(c_in, c_out, rngs)


class ConvEncoder(nnx.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, rngs: nnx.Rngs,
                 out_dim: int | None = None, cond_dim: int = 0) -> None:
        self.cond_dim = cond_dim
        h, w, c = image_shape
        if (h, w) != (64, 64):
            raise ValueError(f"the conv architecture expects 64x64 images, got {h}x{w}; use --architecture mlp")
        self.conv1 = _conv(c, 32, rngs)
        self.conv2 = _conv(32, 32, rngs)
        self.conv3 = _conv(32, 32, rngs)
        self.conv4 = _conv(32, 32, rngs)
        self.fc1 = _linear(32 * 4 * 4 + cond_dim, 256, rngs)
        self.fc2 = _linear(256, 256, rngs)
        self.fc3 = _linear(256, out_dim or 2 * latent_dim, rngs)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        """``x`` ``(B, 64, 64, C)`` (and ``cond`` ``(B, cond_dim)``) -> ``(B, 2D)``."""
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = nnx.relu(conv(x))
        x = x.reshape(x.shape[0], -1)  # NHWC flattening: (h, w, c)
        if self.cond_dim:
            x = jnp.concatenate([x, cond.astype(x.dtype)], axis=1)
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.fc3(x)


class ConvDecoder(nnx.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, rngs: nnx.Rngs) -> None:
        c = image_shape[2]
        self.fc1 = _linear(latent_dim, 256, rngs)
        self.fc2 = _linear(256, 256, rngs)
        self.fc3 = _linear(256, 32 * 4 * 4, rngs)
        self.deconv1 = _deconv(32, 32, rngs)
        self.deconv2 = _deconv(32, 32, rngs)
        self.deconv3 = _deconv(32, 32, rngs)
        self.deconv4 = _deconv(32, c, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        """``z`` ``(B, D)`` -> pixel logits ``(B, 64, 64, C)``."""
        h = nnx.relu(self.fc1(z))
        h = nnx.relu(self.fc2(h))
        h = nnx.relu(self.fc3(h)).reshape(-1, 4, 4, 32)
        for deconv in (self.deconv1, self.deconv2, self.deconv3):
            h = nnx.relu(deconv(h))
        return self.deconv4(h)


class MLPEncoder(nnx.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, rngs: nnx.Rngs,
                 out_dim: int | None = None, cond_dim: int = 0) -> None:
        self.cond_dim = cond_dim
        self.fc1 = _linear(math.prod(image_shape) + cond_dim, 1200, rngs)
        self.fc2 = _linear(1200, 1200, rngs)
        self.fc3 = _linear(1200, out_dim or 2 * latent_dim, rngs)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        if self.cond_dim:
            x = jnp.concatenate([x, cond.astype(x.dtype)], axis=1)
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.fc3(x)


class MLPDecoder(nnx.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, rngs: nnx.Rngs) -> None:
        self.shape = tuple(image_shape)
        self.fc1 = _linear(latent_dim, 1200, rngs)
        self.fc2 = _linear(1200, 1200, rngs)
        self.fc3 = _linear(1200, 1200, rngs)
        self.fc4 = _linear(1200, math.prod(image_shape), rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = jnp.tanh(self.fc1(z))
        h = jnp.tanh(self.fc2(h))
        h = jnp.tanh(self.fc3(h))
        return self.fc4(h).reshape(-1, *self.shape)


ARCHITECTURES = {"conv": (ConvEncoder, ConvDecoder), "mlp": (MLPEncoder, MLPDecoder)}


def build_networks(
    architecture: str, image_shape: tuple[int, int, int], latent_dim: int, rngs: nnx.Rngs,
    *, encoder_out: int | None = None, cond_dim: int = 0,
) -> tuple[nnx.Module, nnx.Module]:
    """Encoder ``x -> (B, encoder_out or 2·latent_dim)`` and decoder
    ``(B, latent_dim + cond_dim) -> logits``; ``cond_dim`` > 0 makes both conditional
    (as ``torch.nets.build_networks``: the condition joins the encoder's first dense layer's input)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (available: {', '.join(ARCHITECTURES)})")
    enc, dec = ARCHITECTURES[architecture]
    shape = tuple(image_shape)
    return (
        enc(shape, latent_dim, rngs, out_dim=encoder_out, cond_dim=cond_dim),
        dec(shape, latent_dim + cond_dim, rngs),
    )
