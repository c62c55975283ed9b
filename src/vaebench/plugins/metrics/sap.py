"""Separated Attribute Predictability (SAP).

Kumar, Sattigeri & Balakrishnan 2018, "Variational Inference of Disentangled
Latent Concepts from Unlabeled Observations", ICLR 2018, arXiv:1711.00848.

Build a ``D x K`` score matrix ``S[d, k]``: how well code ``z_d`` *alone* predicts
factor ``v_k``. A factor's gap is the lead of its best code over the runner-up,

    gap_k = S_(1)k - S_(2)k,

and ``SAP = mean_k gap_k``. Both variants of disentanglement_lib's ``sap_score.py``
(Locatello et al. 2019, arXiv:1811.12359) are computed, with its study defaults:

* ``sap`` (discrete factors, the study's setting ``continuous_factors=False``):
  ``S[d, k]`` is the test accuracy of a ``LinearSVC(C=0.01,
  class_weight="balanced")`` fitted on the single code ``z_d`` of the training
  rows to predict ``v_k`` (one-vs-rest over the factor's values, squared hinge,
  L2, intercept fitted *and* regularized as liblinear does). The ``D x K``
  independent fits run in parallel (joblib, option ``n_jobs``).
* ``sap.continuous`` (``continuous_factors=True``): ``S[d, k]`` is the squared
  Pearson correlation ``cov(z_d, v_k)^2 / (var(z_d) var(v_k))`` on the training
  rows (0 for a code with variance ``<= 1e-12``), the test rows unused.

Split: disentanglement_lib draws 10,000 training and 5,000 test samples; here
the first ``round(train_fraction * N)`` rows of the held-out set train and the
rest test, ``train_fraction = 2/3`` by default (so ``N = 15,000`` reproduces the
reference sizes; rows are i.i.d., so the first rows are a random subset).

Consequences worth knowing: ``C = 0.01`` is strong regularization and the SVC sees
one feature, so even a code equal to a factor with many values is not predicted
perfectly (one-vs-rest lines on one axis separate the extreme values best), and
because the intercept is regularized the discrete score depends on the codes'
offset and scale (the continuous one does not).

Departures from disentanglement_lib, none of which changes a defined value:

* ``LinearSVC`` is solved in the primal (``dual=False``, what scikit-learn's
  ``dual="auto"`` picks for these shapes); disentanglement_lib ran the then
  default dual solver, which minimises the same objective but often stops at its
  1,000-iteration limit on 10,000 one-feature rows. Fits still at ``max_iter``
  are counted in ``params["svc_not_converged"]``.
* a factor that is constant on the training rows (no classifier can be fitted,
  ``var(v_k) = 0``) is left out of both means and listed in ``excluded_factors``
  instead of raising / producing NaN;
* inputs are validated (one-line ``ValueError``; the shared checks of
  ``inputs.py``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import (
    DEFAULT_TRAIN_FRACTION,
    check_codes_and_factors,
    context_rows,
    float_option,
    n_jobs_option,
    sklearn_version,
    split_metric_options,
    train_rows,
    varying_columns,
)
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DEFAULT_C",
    "average_top_two_gap",
    "compute",
    "sap_score",
    "score_matrix_continuous",
    "score_matrix_discrete",
]

DEFAULT_C = 0.01
SVC_MAX_ITER = 1000


def score_matrix_continuous(latents: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``(D, K)`` squared Pearson correlations of every code with every factor.

    ``0`` for a code whose (``ddof=1``) variance is ``<= 1e-12``, as in
    disentanglement_lib; NaN for a constant factor (callers exclude those).
    """
    z = np.asarray(latents, dtype=np.float64)
    v = np.asarray(factors, dtype=np.float64)
    n = z.shape[0]
    zc = z - z.mean(axis=0)
    vc = v - v.mean(axis=0)
    ddof = 1 if n > 1 else 0
    cov = zc.T @ vc / (n - ddof)  # (D, K)
    var_z = np.einsum("nd,nd->d", zc, zc) / (n - ddof)
    var_v = np.einsum("nk,nk->k", vc, vc) / (n - ddof)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = cov**2 / (var_z[:, None] * var_v[None, :])
    scores[var_z <= 1e-12, :] = 0.0
    return scores


#: Seconds joblib's loky workers wait idle before they exit (joblib's default is 300).
#: They are not children that die with their parent: after ``kill -9`` of a grid they
#: would idle on for five minutes; a later SAP computation starts new ones (~1 s).
LOKY_IDLE_SECONDS = 5


def _fit_single_code_svc(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float
) -> tuple[float, bool]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    svc = LinearSVC(C=c, class_weight="balanced", dual=False, max_iter=SVC_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svc.fit(x_train[:, None], y_train)
    accuracy = float(np.mean(svc.predict(x_test[:, None]) == y_test))
    return accuracy, bool(np.max(svc.n_iter_) < SVC_MAX_ITER)


def score_matrix_discrete(
    train_latents: np.ndarray,
    train_factors: np.ndarray,
    test_latents: np.ndarray,
    test_factors: np.ndarray,
    *,
    c: float = DEFAULT_C,
    n_jobs: int = -1,
) -> tuple[np.ndarray, int]:
    """``(D, K)`` test accuracies of one-code ``LinearSVC``\\ s, and the count not converged.

    Every factor must take at least two values on the training rows.
    """
    from joblib import Parallel, delayed, parallel_config

    d_count = train_latents.shape[1]
    k_count = train_factors.shape[1]
    tasks = [(d, k) for d in range(d_count) for k in range(k_count)]
    with parallel_config(backend="loky", idle_worker_timeout=LOKY_IDLE_SECONDS):
        results = Parallel(n_jobs=n_jobs)(
            delayed(_fit_single_code_svc)(
                train_latents[:, d], train_factors[:, k], test_latents[:, d], test_factors[:, k], c
            )
            for d, k in tasks
        )
    scores = np.array([acc for acc, _ in results], dtype=np.float64).reshape(d_count, k_count)
    not_converged = sum(1 for _, converged in results if not converged)
    return scores, not_converged


def average_top_two_gap(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over columns of (largest - second largest) entry, and the per-column gaps."""
    ranked = np.sort(np.asarray(matrix, dtype=np.float64), axis=0)
    gaps = ranked[-1] - ranked[-2]
    return float(np.mean(gaps)), gaps


def sap_score(
    latents: np.ndarray,
    factors: np.ndarray,
    *,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    c: float = DEFAULT_C,
    n_jobs: int = -1,
    factor_names: Sequence[str] | None = None,
) -> MetricResult:
    """SAP, discrete and continuous, of ``latents`` with respect to ``factors``.

    Args:
        latents: ``(N, D)`` real codes (encoder means), finite, ``D >= 2``.
        factors: ``(N, K)`` integer factor indices of the same samples.
        train_fraction: leading fraction of rows used for fitting (the rest test).
        c: ``LinearSVC`` regularization (disentanglement_lib: 0.01).
        n_jobs: joblib workers for the ``D x K`` fits (-1: all cores).
        factor_names: ``K`` distinct names; default ``factor0 .. factor{K-1}``.

    Returns:
        ``MetricResult`` with values ``sap``, ``sap.continuous``, ``sap.gap.<name>``
        and ``sap.continuous.gap.<name>`` per used factor; params hold the split
        sizes, estimator settings, both score matrices (``D x used K``, 6
        decimals), ``excluded_factors`` and ``sklearn_version``.

    Raises:
        ValueError: on malformed input, ``D < 2``, a bad split, or when every
            factor is constant on the training rows.
    """
    metric = "sap"
    z, v, names = check_codes_and_factors(
        latents, factors, metric, min_codes=2, factor_names=factor_names
    )
    train_fraction = float_option(
        metric, "train_fraction", train_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )
    c = float_option(metric, "C", c, low=0.0, high=math.inf, low_open=True, high_open=True)
    n_jobs = n_jobs_option(metric, "n_jobs", n_jobs)
    n = z.shape[0]
    n_train = train_rows(n, train_fraction, metric)
    z_train, z_test = z[:n_train], z[n_train:]
    v_train, v_test = v[:n_train], v[n_train:]

    used = varying_columns(v_train)
    if not used.any():
        raise ValueError(
            f"{metric}: every factor is constant on the {n_train} training rows; no score is defined"
        )
    used_names = [name for name, ok in zip(names, used) if ok]
    excluded = [name for name, ok in zip(names, used) if not ok]

    discrete, not_converged = score_matrix_discrete(
        z_train, v_train[:, used], z_test, v_test[:, used], c=c, n_jobs=n_jobs
    )
    continuous = score_matrix_continuous(z_train, v_train[:, used])
    sap, gaps = average_top_two_gap(discrete)
    sap_cont, gaps_cont = average_top_two_gap(continuous)

    values: dict[str, float] = {"sap": sap, "sap.continuous": sap_cont}
    for name, gap in zip(used_names, gaps):
        values[f"sap.gap.{name}"] = float(gap)
    for name, gap in zip(used_names, gaps_cont):
        values[f"sap.continuous.gap.{name}"] = float(gap)
    params: dict[str, Any] = {
        "n": int(n),
        "n_train": int(n_train),
        "n_test": int(n - n_train),
        "train_fraction": train_fraction,
        "classifier": "sklearn.svm.LinearSVC",
        "C": c,
        "class_weight": "balanced",
        "dual": False,
        "max_iter": SVC_MAX_ITER,
        "svc_not_converged": int(not_converged),
        "continuous_score": "squared Pearson correlation on the training rows",
        "n_jobs": n_jobs,
        "factor_names": used_names,
        "excluded_factors": excluded,
        "score_matrix": np.round(discrete, 6).tolist(),
        "score_matrix_continuous": np.round(continuous, 6).tolist(),
        "sklearn_version": sklearn_version(),
    }
    return MetricResult(values=values, params=params)


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: SAP (both variants) of ``ctx.means`` against ``ctx.factors``.

    Options (``ctx.options_for("sap")``): ``train_fraction`` (2/3), ``n_jobs`` (-1),
    ``profile`` (``"reference"``: all rows; ``"fast"``: the first 5,000) and
    ``max_samples`` (cap on rows used; overrides the profile's).
    """
    metric = "sap"
    opts = split_metric_options(ctx, metric)
    means, factors = context_rows(ctx, metric, opts["profile"], opts["max_samples"])
    result = sap_score(
        means,
        factors,
        train_fraction=opts["train_fraction"],
        n_jobs=opts["n_jobs"],
        factor_names=tuple(ctx.factor_names) or None,
    )
    result.params.update(
        profile=opts["profile"], max_samples=opts["max_samples"], seed=int(ctx.seed)
    )
    return result
