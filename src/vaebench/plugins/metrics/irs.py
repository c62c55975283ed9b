"""Interventional Robustness Score (IRS).

Suter, Miladinović, Schölkopf & Bauer 2019, "Robustly Disentangled Causal
Mechanisms: Validating Deep Representations for Interventional Robustness",
ICML 2019, arXiv:1811.00007.

How much does a code move when the factors it is *not* about change? For factor
``k`` and each of its values ``g``, take the samples with ``v_k = g``; the
``diff_quantile`` quantile of ``|z_d - E[z_d | v_k = g]|`` over them is how far
code ``d`` still wanders with ``v_k`` held fixed. Averaged over the values of
``v_k`` and divided by code ``d``'s largest deviation from its mean over all
samples, ``max_dev_d``, this gives ``IRS[d, k] = 1 - that ratio``; a code's score
is its best factor's, ``max_k IRS[d, k]``, and ``irs`` is the mean of the code
scores weighted by ``max_dev_d``. A code that is a deterministic function of one
factor scores 1.

Estimator: exactly disentanglement_lib's ``irs.py`` (Locatello et al. 2019,
arXiv:1811.12359) with its study defaults: codes are the encoder means, *not*
discretized; the factors are discretized into ``factor_bins = 20`` equal-width
bins (``make_discretizer(ys)``, the same ``discretize`` as MIG; a factor with at
most 20 values keeps one group per value, a factor with more, e.g. dSprites'
32 positions, has neighbouring values merged); ``diff_quantile = 0.99`` via
``np.percentile(..., q=99)`` (linear interpolation); codes with zero variance are
dropped first (``irs.num_active_dims`` counts the rest) and if none is left IRS
is 0. disentanglement_lib uses 10,000 samples; here all ``N`` rows given.

Departures from disentanglement_lib:

* ``irs.num_active_dims`` is the *number* of non-constant codes;
  disentanglement_lib's ``np.sum(active_mus)`` reports the sum of those codes'
  values instead (a bug that does not touch ``irs``);
* a constant factor (one group holding every sample, so its "invariance" only
  measures the code's own spread) is left out of the ``max_k`` and listed in
  ``excluded_factors``; disentanglement_lib keeps it, which can raise ``irs``;
* inputs are validated (one-line ``ValueError``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.information import discretize
from vaebench.plugins.metrics.inputs import (
    check_codes_and_factors,
    context_rows,
    float_option,
    int_option,
    latent_only_parsers,
    read_options,
    sklearn_version,
    varying_columns,
)
from vaebench.plugins.specs import MetricResult

__all__ = ["compute", "irs", "irs_matrix"]

DEFAULT_DIFF_QUANTILE = 0.99
DEFAULT_FACTOR_BINS = 20


def irs_matrix(
    latents: np.ndarray, factor_labels: np.ndarray, diff_quantile: float = DEFAULT_DIFF_QUANTILE
) -> tuple[np.ndarray, np.ndarray]:
    """``(IRS matrix (D, K), max deviations (D,))`` for non-constant codes.

    ``latents`` ``(N, D)`` codes, every column with positive range; ``factor_labels``
    ``(N, K)`` integer group labels (discretized factors). disentanglement_lib's
    ``scalable_disentanglement_score``, one ``np.percentile`` per factor value
    over all codes at once.
    """
    z = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(factor_labels)
    max_deviations = np.max(np.abs(z - z.mean(axis=0)), axis=0)
    cum_deviations = np.zeros((z.shape[1], labels.shape[1]))
    for k in range(labels.shape[1]):
        order = np.argsort(labels[:, k], kind="stable")
        sorted_labels = labels[order, k]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        groups = np.split(z[order], starts[1:])
        for group in groups:
            diffs = np.abs(group - group.mean(axis=0))
            cum_deviations[:, k] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum_deviations[:, k] /= len(groups)
    return 1.0 - cum_deviations / max_deviations[:, None], max_deviations


def irs(
    latents: np.ndarray,
    factors: np.ndarray,
    *,
    diff_quantile: float = DEFAULT_DIFF_QUANTILE,
    factor_bins: int = DEFAULT_FACTOR_BINS,
    factor_names: Sequence[str] | None = None,
) -> MetricResult:
    """IRS of ``latents`` with respect to ``factors``.

    Returns:
        ``MetricResult`` with values ``irs`` and ``irs.num_active_dims``; params
        ``n``, ``diff_quantile``, ``factor_bins``, ``active_dims`` (indices),
        ``irs_matrix`` (active ``D x used K``, 6 decimals), ``irs_per_code``,
        ``parents`` (best factor name per active code), ``max_deviations``,
        ``factor_names``, ``excluded_factors``, ``sklearn_version``.

    Raises:
        ValueError: on malformed input or when every factor is constant.
    """
    metric = "irs"
    z, v, names = check_codes_and_factors(latents, factors, metric, factor_names=factor_names)
    diff_quantile = float_option(
        metric, "diff_quantile", diff_quantile, low=0.0, high=1.0, low_open=True
    )
    factor_bins = int_option(metric, "factor_bins", factor_bins, minimum=2)
    used = varying_columns(v)
    if not used.any():
        raise ValueError(f"{metric}: every factor is constant in these {z.shape[0]} samples")
    used_names = [name for name, ok in zip(names, used) if ok]
    excluded = [name for name, ok in zip(names, used) if not ok]

    # "variance > 0", decided exactly: a float mean of equal values can leave a
    # variance of ~1e-34 behind.
    active = varying_columns(z)
    params: dict[str, Any] = {
        "n": int(z.shape[0]),
        "diff_quantile": diff_quantile,
        "factor_bins": factor_bins,
        "percentile_method": "linear",
        "active_dims": np.flatnonzero(active).tolist(),
        "factor_names": used_names,
        "excluded_factors": excluded,
    }
    if not active.any():
        params.update(irs_matrix=[], irs_per_code=[], parents=[], max_deviations=[])
        params["sklearn_version"] = sklearn_version()
        return MetricResult(values={metric: 0.0, f"{metric}.num_active_dims": 0.0}, params=params)

    groups = discretize(v[:, used], factor_bins)
    matrix, max_dev = irs_matrix(z[:, active], groups, diff_quantile)
    per_code = matrix.max(axis=1)
    score = float(np.average(per_code, weights=max_dev))
    params.update(
        irs_matrix=np.round(matrix, 6).tolist(),
        irs_per_code=np.round(per_code, 6).tolist(),
        parents=[used_names[k] for k in matrix.argmax(axis=1)],
        max_deviations=np.round(max_dev, 6).tolist(),
        sklearn_version=sklearn_version(),
    )
    values = {metric: score, f"{metric}.num_active_dims": float(np.count_nonzero(active))}
    return MetricResult(values=values, params=params)


def options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """IRS's options (``MetricSpec.options``); see :func:`compute`."""
    parsers = {
        "diff_quantile": partial(float_option, low=0.0, high=1.0, low_open=True),
        "factor_bins": partial(int_option, minimum=2),
        **latent_only_parsers(metric),
    }
    defaults = {"diff_quantile": DEFAULT_DIFF_QUANTILE, "factor_bins": DEFAULT_FACTOR_BINS, "profile": "reference"}
    return read_options(metric, given, parsers, defaults)


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``irs``.

    Options (``ctx.options_for("irs")``): ``diff_quantile`` (0.99), ``factor_bins``
    (20), ``profile`` (``"reference"``: all rows; ``"fast"``: the first 5,000) and
    ``max_samples``.
    """
    metric = "irs"
    opts = options(metric, ctx.options_for(metric))
    means, factors = context_rows(ctx, metric, opts["profile"], opts["max_samples"])
    result = irs(
        means,
        factors,
        diff_quantile=opts["diff_quantile"],
        factor_bins=opts["factor_bins"],
        factor_names=tuple(ctx.factor_names) or None,
    )
    result.params.update(
        profile=opts["profile"], max_samples=opts["max_samples"], seed=int(ctx.seed)
    )
    return result
