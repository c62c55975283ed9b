"""Mutual Information Gap (MIG).

Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in
Variational Autoencoders", arXiv:1802.04942.

For each ground-truth factor ``v_k`` with entropy ``H(v_k)``, rank the latent codes
``z_d`` by their mutual information with it; the factor's gap is

    gap_k = (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k),

the lead of the most informative code over the runner-up, and
``MIG = mean_k gap_k``, in ``[0, 1]``.

Estimator: exactly disentanglement_lib's ``discrete_mig`` (Locatello et al. 2019,
"Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations", arXiv:1811.12359) with its study defaults:

* latents are the encoder means of ``N`` held-out samples (reference default
  ``N = 10,000``);
* each code is discretized into ``bins = 20`` equal-width bins over its own sample
  min..max (``np.digitize(x, np.histogram(x, 20)[1][:-1])``);
* mutual information is the plug-in discrete estimate, in nats, between each
  discretized code and the raw integer factor values
  (``sklearn.metrics.mutual_info_score``);
* each factor's gap between its top two codes is divided by the factor's plug-in
  entropy, and MIG is the mean over factors.

Consequences of this definition, worth knowing when reading a number:

* the discretized code takes at most ``bins`` values, so its information about a
  factor is at most ``log(bins)``; a factor with more values than bins (uniform,
  ``H = log(n_values) > log(bins)``) cannot reach a gap of 1, even for a code that
  is the factor itself (32 values, 20 bins: gap <= log 20 / log 32 ~= 0.86);
* the plug-in estimator is biased upwards by roughly
  ``(bins - 1)(n_values - 1) / (2N)`` nats per pair, also for independent codes,
  so MIG depends on ``N`` (and ``bins``): values are comparable only at equal
  ``N`` and ``bins``, which is why both are recorded with every value.

Departures from disentanglement_lib, neither of which changes a defined value: a
constant factor (entropy 0; its gap is 0/0) is left out of the mean and listed in
``excluded_factors`` instead of turning MIG into NaN, and inputs are validated.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.information import discretize, entropy, mutual_information_matrix
from vaebench.plugins.specs import MetricResult

__all__ = ["ESTIMATOR", "compute", "mutual_info_gap"]

ESTIMATOR = "plug-in discrete MI, equal-width bins (disentanglement_lib)"
DEFAULT_BINS = 20


def _check_bins(bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"mig: bins must be an integer >= 2, got {bins!r}")
    return int(bins)


def _as_integer_factors(factors: np.ndarray) -> np.ndarray:
    if np.issubdtype(factors.dtype, np.integer):
        return factors
    if factors.dtype == np.bool_:
        return factors.astype(np.int64)
    if np.issubdtype(factors.dtype, np.floating):
        finite = np.isfinite(factors)
        if finite.all() and np.array_equal(factors, np.round(factors)):
            return factors.astype(np.int64)
        raise ValueError(
            "mig: factors must be integer factor indices, got non-integer values "
            f"(dtype {factors.dtype})"
        )
    raise ValueError(f"mig: factors must be integer factor indices, got dtype {factors.dtype}")


def mutual_info_gap(
    latents: np.ndarray,
    factors: np.ndarray,
    bins: int = DEFAULT_BINS,
    factor_names: Sequence[str] | None = None,
) -> MetricResult:
    """Mutual Information Gap of ``latents`` with respect to ``factors``.

    Args:
        latents: ``(N, D)`` real codes (encoder means), finite, ``D >= 2``.
        factors: ``(N, K)`` integer factor indices of the same samples (a float
            array holding whole numbers is accepted).
        bins: equal-width bins per code (disentanglement_lib default 20).
        factor_names: ``K`` distinct names; default ``factor0 .. factor{K-1}``.

    Returns:
        ``MetricResult`` with values ``{"mig": mean gap, "mig.gap.<name>": gap}``
        (no gap entry for a constant factor) and params ``n``, ``bins``,
        ``estimator``, ``excluded_factors`` (names of constant factors),
        ``mi_matrix`` (``D x K`` nested list, nats, 6 decimals), ``factor_names``
        (the column order of ``mi_matrix``) and ``factor_entropy`` (``K`` plug-in
        entropies, nats, 6 decimals).

    Raises:
        ValueError: on malformed input (shapes, N mismatch, NaN/inf latents, D < 2,
            non-integer factors, bad names or bins) or when every factor is constant.
    """
    z = np.asarray(latents)
    v = np.asarray(factors)
    if z.ndim != 2:
        raise ValueError(f"mig: latents must be a 2-D (N, D) array, got shape {z.shape}")
    if v.ndim != 2:
        raise ValueError(f"mig: factors must be a 2-D (N, K) array, got shape {v.shape}")
    n, d_count = z.shape
    k_count = v.shape[1]
    if v.shape[0] != n:
        raise ValueError(
            f"mig: latents and factors must describe the same samples, got N={n} latents "
            f"and N={v.shape[0]} factor rows"
        )
    if n == 0:
        raise ValueError("mig: need at least one sample, got N=0")
    if k_count == 0:
        raise ValueError("mig: factors has no columns (K=0)")
    if not (np.issubdtype(z.dtype, np.integer) or np.issubdtype(z.dtype, np.floating)):
        raise ValueError(f"mig: latents must be real numbers, got dtype {z.dtype}")
    if not np.isfinite(z).all():
        bad = int(np.count_nonzero(~np.isfinite(z)))
        raise ValueError(f"mig: latents contain {bad} NaN/inf value(s); MIG needs finite codes")
    if d_count < 2:
        raise ValueError(
            f"mig: need at least 2 latent codes (the gap compares the top two), got D={d_count}"
        )
    v = _as_integer_factors(v)
    bins = _check_bins(bins)
    if factor_names is None:
        names = [f"factor{k}" for k in range(k_count)]
    else:
        names = [str(name) for name in factor_names]
        if len(names) != k_count:
            raise ValueError(f"mig: got {len(names)} factor names for K={k_count} factors")
        if len(set(names)) != k_count:
            raise ValueError(f"mig: factor names must be distinct, got {names}")

    codes = discretize(z, bins)
    mi = mutual_information_matrix(codes, v)  # (D, K)
    h = entropy(v)  # (K,)
    ranked = np.sort(mi, axis=0)
    lead = ranked[-1] - ranked[-2]

    defined = h > 0
    excluded = [names[k] for k in range(k_count) if not defined[k]]
    if not defined.any():
        raise ValueError(f"mig: every factor is constant in these {n} samples; no gap is defined")
    gaps = lead[defined] / h[defined]

    values: dict[str, float] = {"mig": float(np.mean(gaps))}
    for name, gap in zip((nm for nm, ok in zip(names, defined) if ok), gaps):
        values[f"mig.gap.{name}"] = float(gap)
    params: dict[str, Any] = {
        "n": int(n),
        "bins": bins,
        "estimator": ESTIMATOR,
        "excluded_factors": excluded,
        "mi_matrix": np.round(mi, 6).tolist(),
        "factor_names": names,
        "factor_entropy": np.round(h, 6).tolist(),
    }
    return MetricResult(values=values, params=params)


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: MIG of ``ctx.means`` against ``ctx.factors``.

    Reads option ``bins`` (default 20) from ``ctx.options_for("mig")``.
    """
    if ctx.factors is None:
        raise ValueError("mig: needs ground-truth factors, but this dataset provides none")
    options = ctx.options_for("mig")
    unknown = sorted(set(options) - {"bins"})
    if unknown:
        raise ValueError(f"mig: unknown option(s) {unknown}; known: ['bins']")
    bins = options.get("bins", DEFAULT_BINS)
    if isinstance(bins, str):
        try:
            bins = int(bins.strip())
        except ValueError:
            raise ValueError(f"mig: bins must be an integer >= 2, got {bins!r}") from None
    return mutual_info_gap(
        ctx.means, ctx.factors, bins=bins, factor_names=tuple(ctx.factor_names) or None
    )
