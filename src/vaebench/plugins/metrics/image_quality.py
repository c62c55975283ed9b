"""Full-reference image quality of reconstructions: SSIM and PSNR.

SSIM: Wang, Bovik, Sheikh & Simoncelli 2004, "Image Quality Assessment: From
Error Visibility to Structural Similarity", IEEE TIP 13(4):600-612.

For two images ``x, y`` and a local window ``w``, with local means ``mu``,
variances ``s^2`` and covariance ``s_xy`` (all weighted by ``w``)::

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (K1 L)^2,  C2 = (K2 L)^2,

averaged over window positions. Estimator: the paper's settings, which are
exactly scikit-image's ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)`` (the reference most
papers match):

* an ``11 x 11`` Gaussian window, ``sigma = 1.5`` (normalised, separable; the
  taps of ``scipy.ndimage.gaussian_filter`` with ``truncate=3.5``);
* ``K1 = 0.01``, ``K2 = 0.03``, data range ``L = 1`` (images in [0, 1]);
* population (biased) local variances and covariance (``use_sample_covariance=False``);
* the SSIM map is averaged over the window positions fully inside the image
  (the ``(H - 10) x (W - 10)`` 'valid' region: scikit-image filters the whole
  image and crops ``(11 - 1) // 2 = 5`` pixels from each side before averaging),
  then over channels: one value per image;
* computed in float64 with NumPy (no padding, so no boundary mode is involved).

Not torchmetrics' default, which averages the map over a reflect-padded
image (boundary windows included) and therefore differs from the reference.

PSNR: ``10 log10(L^2 / MSE)`` in dB with ``L = 1``, the MSE taken per image over
all pixels and channels (not pooled over the batch). An image identical to its
reference has ``MSE = 0`` and an infinite PSNR; per-image values are capped at
``PSNR_MAX_DB = 100`` dB (``MSE <= 1e-10``, an RMS error of 1e-5) so that one
perfect reconstruction cannot make the mean infinite. The cap is recorded with
the value, with the number of images it applied to.

Both metrics are computed per image on the first ``n`` held-out images
(option ``n``, default 1,000) and their reconstructions (the decoder's Bernoulli
means for the posterior means), then averaged over the images.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import int_option, read_options
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DEFAULT_N",
    "K1",
    "K2",
    "PSNR_MAX_DB",
    "SIGMA",
    "WINDOW",
    "compute_psnr",
    "compute_ssim",
    "gaussian_window",
    "psnr",
    "ssim",
]

WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03
DATA_RANGE = 1.0
PSNR_MAX_DB = 100.0
DEFAULT_N = 1000
#: Pixels (planes x H x W) filtered at once: keeps the float64 working set (5 statistics
#: plus filter buffers, ~3 MB) in cache, ~3x faster than large batches.
_CHUNK_PIXELS = 1 << 16
_REDUCTION = "per image (mean over channels), then averaged over images"


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps ``(size,)`` float64, centred (scipy.ndimage's taps)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _check_pair(a: Any, b: Any, metric: str, *, min_side: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(N, H, W, C)`` image arrays of equal shape, finite, in [0, 1]; as given (not copied)."""
    x = np.asarray(a)
    y = np.asarray(b)
    for what, arr in (("images", x), ("reconstructions", y)):
        if arr.ndim != 4:
            raise ValueError(f"{metric}: {what} must be a 4-D (N, H, W, C) array, got shape {arr.shape}")
        if arr.dtype == np.bool_ or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise ValueError(f"{metric}: {what} must be real numbers, got dtype {arr.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"{metric}: images and reconstructions differ in shape: {x.shape} vs {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{metric}: need at least one image, got N=0")
    if min(x.shape[1], x.shape[2]) < min_side:
        raise ValueError(
            f"{metric}: images of {x.shape[1]}x{x.shape[2]} are smaller than the {min_side}x{min_side} window"
        )
    for what, arr in (("images", x), ("reconstructions", y)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{metric}: {what} contain NaN/inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{metric}: {what} must lie in [0, 1] (data range 1), got [{lo:g}, {hi:g}]")
    return x, y


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation of ``(..., H, W)`` with ``g`` on both axes, 'valid' region only."""
    r = g.size
    h = x.shape[-2] - r + 1
    w = x.shape[-1] - r + 1
    rows = np.multiply(x[..., 0:h, :], g[0])
    tmp = np.empty_like(rows)
    for k in range(1, r):
        rows += np.multiply(x[..., k : k + h, :], g[k], out=tmp)
    out = np.multiply(rows[..., 0:w], g[0])
    tmp = tmp[..., 0:w]
    for k in range(1, r):
        out += np.multiply(rows[..., k : k + w], g[k], out=tmp)
    return out


def _ssim_planes(x: np.ndarray, y: np.ndarray, g: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """Mean SSIM of each ``(P, H, W)`` float64 plane pair -> ``(P,)``."""
    stats = _filter_valid(np.stack([x, y, x * x, y * y, x * y]), g)  # (5, P, H', W')
    mx, my, mxx, myy, mxy = stats
    vx = mxx - mx * mx
    vy = myy - my * my
    vxy = mxy - mx * my
    num = (2.0 * mx * my + c1) * (2.0 * vxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return (num / den).mean(axis=(-2, -1))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM ``(N,)`` float64 of two ``(N, H, W, C)`` image batches in [0, 1].

    Wang et al. 2004 settings (module docstring): 11x11 Gaussian window,
    sigma 1.5, K1 0.01, K2 0.03, data range 1, population covariance, mean over
    the valid windows, then over channels. Symmetric; ``ssim(x, x) == 1``.
    Images must be at least 11x11.
    """
    x, y = _check_pair(a, b, "ssim", min_side=WINDOW)
    n, h, w, c = x.shape
    g = gaussian_window(WINDOW, SIGMA)
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    # Channels-first planes: (N * C, H, W), image-major so plane i belongs to image i // C.
    xp = np.moveaxis(x, -1, 1).reshape(n * c, h, w)
    yp = np.moveaxis(y, -1, 1).reshape(n * c, h, w)
    per_plane = np.empty(n * c, dtype=np.float64)
    chunk = max(1, _CHUNK_PIXELS // (h * w))
    for start in range(0, n * c, chunk):
        stop = min(start + chunk, n * c)
        per_plane[start:stop] = _ssim_planes(
            xp[start:stop].astype(np.float64), yp[start:stop].astype(np.float64), g, c1, c2
        )
    return per_plane.reshape(n, c).mean(axis=1)


def psnr(a: np.ndarray, b: np.ndarray, max_db: float | None = PSNR_MAX_DB) -> np.ndarray:
    """Per-image PSNR ``(N,)`` in dB (data range 1) of two ``(N, H, W, C)`` batches in [0, 1].

    ``10 log10(1 / MSE)``, the MSE per image over pixels and channels, float64.
    Values are capped at ``max_db`` (default 100 dB; identical images give exactly
    ``max_db``); ``max_db=None`` leaves identical images at ``inf``.
    """
    x, y = _check_pair(a, b, "psnr")
    diff = x.astype(np.float64) - y.astype(np.float64)
    mse = np.mean(diff * diff, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(DATA_RANGE**2 / mse)
    if max_db is not None:
        out = np.minimum(out, float(max_db))
    return out


def options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """SSIM's and PSNR's options (``MetricSpec.options``): ``n`` (1,000, >= 1)."""
    return read_options(metric, given, {"n": partial(int_option, minimum=1)}, {"n": DEFAULT_N})


def _reconstruction_pair(ctx: EvaluationContext, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    if ctx.images is None or ctx.reconstructions is None:
        raise ValueError(
            f"{metric}: needs held-out images and their reconstructions ('reconstructions'), "
            "but the evaluation context has none"
        )
    opts = options(metric, ctx.options_for(metric))
    images = np.asarray(ctx.images)
    recons = np.asarray(ctx.reconstructions)
    n = opts["n"]
    if images.ndim >= 1 and recons.ndim >= 1:
        images, recons = images[:n], recons[:n]
    return images, recons, n


def compute_ssim(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: mean per-image SSIM of the first ``n`` reconstructions (option ``n``, 1,000)."""
    metric = "ssim"
    images, recons, requested = _reconstruction_pair(ctx, metric)
    values = ssim(images, recons)
    params: dict[str, Any] = {
        "n": int(values.shape[0]),
        "n_requested": requested,
        "window": WINDOW,
        "window_type": "gaussian",
        "sigma": SIGMA,
        "K1": K1,
        "K2": K2,
        "data_range": DATA_RANGE,
        "covariance": "population",
        "region": "valid (windows fully inside the image)",
        "reduction": _REDUCTION,
        "std": round(float(values.std()), 6),
        "reference": "Wang et al. 2004 = skimage structural_similarity(gaussian_weights=True, "
        "sigma=1.5, use_sample_covariance=False, data_range=1)",
    }
    return MetricResult(values={metric: float(values.mean())}, params=params)


def compute_psnr(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: mean per-image PSNR (dB, capped at 100) of the first ``n`` reconstructions."""
    metric = "psnr"
    images, recons, requested = _reconstruction_pair(ctx, metric)
    values = psnr(images, recons, max_db=PSNR_MAX_DB)
    params: dict[str, Any] = {
        "n": int(values.shape[0]),
        "n_requested": requested,
        "data_range": DATA_RANGE,
        "unit": "dB",
        "max_db": PSNR_MAX_DB,
        "n_capped": int(np.count_nonzero(values >= PSNR_MAX_DB)),
        "mse": "per image over pixels and channels",
        "reduction": _REDUCTION.replace(" (mean over channels)", ""),
        "std": round(float(values.std()), 6),
    }
    return MetricResult(values={metric: float(values.mean())}, params=params)
