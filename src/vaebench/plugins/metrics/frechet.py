"""Distances between two sets of image features: Fréchet distance and KID.

Fréchet distance: Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter 2017,
"GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS, arXiv:1706.08500 (FID when the features are
Inception-v3 pool3 features; here any features). The squared 2-Wasserstein
distance between Gaussians fitted to the two feature sets::

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2).

Estimator choices:

* the statistics are the sample mean and the unbiased sample covariance
  (``ddof = 1``, as pytorch-fid / clean-fid: ``np.cov(rowvar=False)``);
* everything is float64; ``tr((S1 S2)^1/2)`` is computed as the sum of the square
  roots of the eigenvalues of the symmetric PSD matrix ``S1^1/2 S2 S1^1/2``
  (same spectrum as ``S1 S2``), with ``S1^1/2`` from ``np.linalg.eigh``; tiny
  negative eigenvalues from rounding are clipped to 0 in both decompositions.
  Unlike ``scipy.linalg.sqrtm(S1 @ S2)`` this never returns complex parts and
  stays stable for rank-deficient covariances (``N <= d``), so no ``eps * I``
  offset is added;
* the result is clipped at 0 (rounding can leave ``-1e-12`` for equal sets).

The plug-in estimate is biased upwards by roughly ``tr``-terms of order
``d / N``: two independent samples of one distribution do not give 0, values
are comparable only at equal sample sizes (recorded with every value).

Kernel Inception Distance: Bińkowski, Sutherland, Arbel & Gretton 2018,
"Demystifying MMD GANs", ICLR, arXiv:1801.01401. The unbiased estimate of the
squared MMD with the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged
over ``subsets`` random subsets of ``m = min(subset_size, N1, N2)`` rows drawn
without replacement from each set (defaults 100 and 1,000, as torchmetrics and
clean-fid), reported as the mean and the population standard deviation
(``ddof = 0``, torchmetrics) over the subsets. Per subset::

    MMD^2_u = sum_{i != j} (k(x_i, x_j) + k(y_i, y_j)) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.

Unbiased: its expectation is 0 for equal distributions, so single subsets can be
negative. Subset indices come from ``np.random.default_rng(seed)``
(:func:`kid_subset_indices`). Computation is vectorized and float64; when the
sets are not much larger than a subset (the usual case) the kernel matrices of
the whole sets are built once and each subset's sums are read off with
indicator vectors, instead of building ``3 x subsets`` subset matrices (same
values up to rounding, ~15x faster at 2 x 2,000 rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "KID_DEGREE",
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "feature_statistics",
    "frechet_distance",
    "kernel_inception_distance",
    "kid_subset_indices",
    "polynomial_mmd2",
]

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_DEGREE = 3
#: Kernel-matrix entries per batched chunk of subsets (three matrices of this size, float64).
_KID_CHUNK_ENTRIES = 2_000_000


def _features(f: Any, what: str, *, min_rows: int = 1) -> np.ndarray:
    x = np.asarray(f)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, d) feature array, got shape {x.shape}")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{what} must be real numbers, got dtype {x.dtype}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{what} need at least {min_rows} rows, got N={x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError(f"{what} have no columns (d=0)")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN/inf values")
    return x.astype(np.float64, copy=False)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu (d,), sigma (d, d))`` float64: sample mean and unbiased covariance of ``(N, d)`` rows, N >= 2."""
    x = _features(features, "feature_statistics: features", min_rows=2)
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64; module docstring)."""
    m1 = np.asarray(mu1, dtype=np.float64)
    m2 = np.asarray(mu2, dtype=np.float64)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"frechet_distance: means must be 1-D of equal length, got {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: covariances must be ({d}, {d}), got {s1.shape} and {s2.shape}"
        )
    for what, arr in (("mu1", m1), ("sigma1", s1), ("mu2", m2), ("sigma2", s2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"frechet_distance: {what} contains NaN/inf values")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def kid_subset_indices(
    n1: int, n2: int, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(subsets, m)`` into each set, ``m = min(subset_size, n1, n2)``, without replacement.

    Drawn from ``np.random.default_rng(seed)``: per subset one permutation of
    ``n1`` (first ``m`` kept), then one of ``n2``.
    """
    m = min(int(subset_size), int(n1), int(n2))
    rng = np.random.default_rng(seed)
    idx1 = np.empty((int(subsets), m), dtype=np.int64)
    idx2 = np.empty((int(subsets), m), dtype=np.int64)
    for s in range(int(subsets)):
        idx1[s] = rng.permutation(n1)[:m]
        idx2[s] = rng.permutation(n2)[:m]
    return idx1, idx2


def _poly(dot: np.ndarray, d: int, degree: int) -> np.ndarray:
    """``(dot / d + 1) ** degree`` in place (integer degree by repeated products)."""
    dot /= d
    dot += 1.0
    base = dot.copy() if degree > 1 else dot
    for _ in range(degree - 1):
        dot *= base
    return dot


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = KID_DEGREE) -> np.ndarray:
    """Unbiased MMD² with ``k(a, b) = (a.b / d + 1)^degree`` for batches ``(S, m, d)`` -> ``(S,)``.

    Plain float64 arrays, ``m >= 2``; no validation (see :func:`kernel_inception_distance`).
    """
    s, m, d = x.shape
    sums = {}
    for name, a, b in (("xx", x, x), ("yy", y, y), ("xy", x, y)):
        sums[name] = _poly(np.matmul(a, b.transpose(0, 2, 1)), d, degree).sum(axis=(1, 2))
    diag_xx = _poly(np.einsum("smd,smd->sm", x, x), d, degree).sum(axis=1)
    diag_yy = _poly(np.einsum("smd,smd->sm", y, y), d, degree).sum(axis=1)
    within = sums["xx"] - diag_xx + sums["yy"] - diag_yy
    return within / (m * (m - 1)) - 2.0 * sums["xy"] / (m * m)


def _subset_kernel_sums(
    a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, degree: int
) -> np.ndarray:
    """``(S,)``: for each subset ``s``, the sum of ``k(a_i, b_j)`` over ``i in ia[s]``, ``j in ib[s]``.

    From the full kernel matrix, built in row blocks: ``sum = 1_s^T K 1_s`` with 0/1
    indicator rows (``(B_a K) * B_b``, summed per row).
    """
    d = a.shape[1]
    subsets = ia.shape[0]
    rows = np.arange(subsets)[:, None]
    ind_a = np.zeros((subsets, a.shape[0]))
    ind_a[rows, ia] = 1.0
    ind_b = np.zeros((subsets, b.shape[0]))
    ind_b[rows, ib] = 1.0
    out = np.zeros(subsets)
    step = max(1, _KID_CHUNK_ENTRIES // b.shape[0])
    for start in range(0, a.shape[0], step):
        stop = min(start + step, a.shape[0])
        block = _poly(a[start:stop] @ b.T, d, degree)
        out += np.einsum("sn,sn->s", ind_a[:, start:stop] @ block, ind_b)
    return out


def _mmd2_from_full_kernels(
    x: np.ndarray, y: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, degree: int
) -> np.ndarray:
    """Same values as :func:`polynomial_mmd2` on ``x[idx1]``, ``y[idx2]``, via the full kernels."""
    m = idx1.shape[1]
    d = x.shape[1]
    diag_x = _poly(np.einsum("nd,nd->n", x, x), d, degree)[idx1].sum(axis=1)
    diag_y = _poly(np.einsum("nd,nd->n", y, y), d, degree)[idx2].sum(axis=1)
    within = _subset_kernel_sums(x, x, idx1, idx1, degree) - diag_x
    within += _subset_kernel_sums(y, y, idx2, idx2, degree) - diag_y
    cross = _subset_kernel_sums(x, y, idx1, idx2, degree)
    return within / (m * (m - 1)) - 2.0 * cross / (m * m)


def kernel_inception_distance(
    f1: Any,
    f2: Any,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    degree: int = KID_DEGREE,
    seed: int = 0,
    *,
    method: str = "auto",
) -> tuple[float, float]:
    """KID between feature sets ``(N1, d)`` and ``(N2, d)``: ``(mean, std)`` of MMD² over subsets.

    Subsets of ``m = min(subset_size, N1, N2)`` rows each (:func:`kid_subset_indices`
    with ``seed``); ``std`` is the population standard deviation over subsets.

    ``method`` only changes the cost, not the value (beyond float rounding):
    ``"subsets"`` builds the three ``m x m`` kernel matrices of every subset
    (``~3 S m^2 d`` multiply-adds); ``"full"`` builds the kernel matrices of the
    whole sets once and sums each subset's block with indicator vectors
    (``~(N1^2 + N2^2 + N1 N2)(d + S)``: far cheaper when ``N`` is close to ``m``,
    e.g. the default 100 subsets of 1,000 out of 2,000); ``"auto"`` picks the
    cheaper.
    """
    x = _features(f1, "kernel_inception_distance: f1", min_rows=2)
    y = _features(f2, "kernel_inception_distance: f2", min_rows=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"kernel_inception_distance: feature dimensions differ: {x.shape[1]} vs {y.shape[1]}"
        )
    for name, value, low in (("subsets", subsets, 1), ("subset_size", subset_size, 2), ("degree", degree, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"kernel_inception_distance: {name} must be an integer >= {low}, got {value!r}")
    if method not in ("auto", "subsets", "full"):
        raise ValueError(f"kernel_inception_distance: method must be 'auto', 'subsets' or 'full', got {method!r}")
    subsets, degree = int(subsets), int(degree)
    idx1, idx2 = kid_subset_indices(x.shape[0], y.shape[0], subsets, subset_size, seed)
    m = idx1.shape[1]
    n1, n2, d = x.shape[0], y.shape[0], x.shape[1]
    if method == "auto":
        full_cost = (n1 * n1 + n2 * n2 + n1 * n2) * (d + subsets)
        method = "full" if full_cost < 3 * subsets * m * m * d else "subsets"
    if method == "full":
        values = _mmd2_from_full_kernels(x, y, idx1, idx2, degree)
    else:
        values = np.empty(subsets, dtype=np.float64)
        per_chunk = max(1, _KID_CHUNK_ENTRIES // (m * m))
        for start in range(0, subsets, per_chunk):
            stop = min(start + per_chunk, subsets)
            values[start:stop] = polynomial_mmd2(x[idx1[start:stop]], y[idx2[start:stop]], degree)
    return float(values.mean()), float(values.std())
