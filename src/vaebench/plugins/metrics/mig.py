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
``excluded_factors`` instead of turning MIG into NaN, and inputs are validated
(the shared checks of ``inputs.py``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.information import discretize, entropy, mutual_information_matrix
from vaebench.plugins.metrics.inputs import (
    check_codes_and_factors,
    int_option,
    read_options,
    require_factors,
)
from vaebench.plugins.specs import MetricResult

__all__ = ["DEFAULT_BINS", "ESTIMATOR", "compute", "mutual_info_gap"]

ESTIMATOR = "plug-in discrete MI, equal-width bins (disentanglement_lib)"
DEFAULT_BINS = 20


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
    metric = "mig"
    _, v, names = check_codes_and_factors(
        latents,
        factors,
        metric,
        min_codes=2,
        min_codes_reason="the gap compares the top two",
        factor_names=factor_names,
    )
    bins = int_option(metric, "bins", bins, minimum=2)
    # Discretize the codes as given, not the float64 copy the check returns: the
    # bin edges are computed in the codes' own floating dtype (as np.histogram
    # does in disentanglement_lib), so float32 codes must stay float32.
    z = np.asarray(latents)
    n = z.shape[0]
    k_count = v.shape[1]

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


def options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """MIG's options (``MetricSpec.options``): ``bins`` (default 20, >= 2)."""
    return read_options(metric, given, {"bins": partial(int_option, minimum=2)}, {"bins": DEFAULT_BINS})


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: MIG of ``ctx.means`` against ``ctx.factors``.

    Reads option ``bins`` (default 20) from ``ctx.options_for("mig")``.
    """
    metric = "mig"
    factors = require_factors(ctx, metric)
    opts = options(metric, ctx.options_for(metric))
    return mutual_info_gap(
        ctx.means, factors, bins=opts["bins"], factor_names=tuple(ctx.factor_names) or None
    )
