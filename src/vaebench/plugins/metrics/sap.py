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
* inputs are validated (one-line ``ValueError``).

This module also holds the small validation / option helpers that the other
latent-only disentanglement metrics (``dci``, ``modularity``, ``irs``) share.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DEFAULT_C",
    "DEFAULT_TRAIN_FRACTION",
    "average_top_two_gap",
    "compute",
    "sap_score",
    "score_matrix_continuous",
    "score_matrix_discrete",
]

DEFAULT_C = 0.01
DEFAULT_TRAIN_FRACTION = 2.0 / 3.0
SVC_MAX_ITER = 1000
#: Rows kept by the ``"fast"`` profile of the latent-only metrics (first rows).
FAST_MAX_SAMPLES = 5000
PROFILES = ("reference", "fast")


# ============================================================ shared helpers
def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def as_integer_factors(factors: np.ndarray, metric: str) -> np.ndarray:
    """Integer ``(N, K)`` factor indices; whole-valued floats and bools accepted."""
    if np.issubdtype(factors.dtype, np.integer):
        return factors.astype(np.int64, copy=False)
    if factors.dtype == np.bool_:
        return factors.astype(np.int64)
    if np.issubdtype(factors.dtype, np.floating):
        if np.isfinite(factors).all() and np.array_equal(factors, np.round(factors)):
            return factors.astype(np.int64)
        raise ValueError(
            f"{metric}: factors must be integer factor indices, got non-integer values "
            f"(dtype {factors.dtype})"
        )
    raise ValueError(f"{metric}: factors must be integer factor indices, got dtype {factors.dtype}")


def check_codes(latents: Any, metric: str, *, min_codes: int = 1, what: str = "latents") -> np.ndarray:
    """Validate a real ``(N, D)`` array of finite codes; return it as float64."""
    z = np.asarray(latents)
    if z.ndim != 2:
        raise ValueError(f"{metric}: {what} must be a 2-D (N, D) array, got shape {z.shape}")
    if z.shape[0] == 0:
        raise ValueError(f"{metric}: need at least one sample, got N=0")
    if z.dtype == np.bool_ or not (
        np.issubdtype(z.dtype, np.integer) or np.issubdtype(z.dtype, np.floating)
    ):
        raise ValueError(f"{metric}: {what} must be real numbers, got dtype {z.dtype}")
    if not np.isfinite(z).all():
        bad = int(np.count_nonzero(~np.isfinite(z)))
        raise ValueError(f"{metric}: {what} contain {bad} NaN/inf value(s); codes must be finite")
    if z.shape[1] < min_codes:
        raise ValueError(f"{metric}: need at least {min_codes} latent codes, got D={z.shape[1]}")
    return z.astype(np.float64, copy=False)


def check_codes_and_factors(
    latents: Any,
    factors: Any,
    metric: str,
    *,
    min_codes: int = 1,
    factor_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate ``(N, D)`` codes against ``(N, K)`` factors of the same samples.

    Returns ``(latents float64, factors int64, K factor names)``.
    """
    v = np.asarray(factors)
    if np.asarray(latents).ndim != 2:
        raise ValueError(
            f"{metric}: latents must be a 2-D (N, D) array, got shape {np.asarray(latents).shape}"
        )
    if v.ndim != 2:
        raise ValueError(f"{metric}: factors must be a 2-D (N, K) array, got shape {v.shape}")
    n = np.asarray(latents).shape[0]
    if v.shape[0] != n:
        raise ValueError(
            f"{metric}: latents and factors must describe the same samples, got N={n} latents "
            f"and N={v.shape[0]} factor rows"
        )
    z = check_codes(latents, metric, min_codes=min_codes)
    if v.shape[1] == 0:
        raise ValueError(f"{metric}: factors has no columns (K=0)")
    v = as_integer_factors(v, metric)
    k_count = v.shape[1]
    if factor_names is None:
        names = [f"factor{k}" for k in range(k_count)]
    else:
        names = [str(name) for name in factor_names]
        if len(names) != k_count:
            raise ValueError(f"{metric}: got {len(names)} factor names for K={k_count} factors")
        if len(set(names)) != k_count:
            raise ValueError(f"{metric}: factor names must be distinct, got {names}")
    return z, v, names


def varying_columns(values: np.ndarray) -> np.ndarray:
    """``(C,)`` bool: which columns of an ``(N, C)`` array take more than one value."""
    return np.any(values != values[:1], axis=0)


def train_rows(n: int, train_fraction: float, metric: str) -> int:
    """Number of leading rows that train: ``round(train_fraction * n)``, both splits non-empty."""
    n_train = int(round(train_fraction * n))
    if n_train < 2 or n - n_train < 1:
        raise ValueError(
            f"{metric}: train_fraction={train_fraction} of N={n} rows leaves {n_train} training "
            f"and {n - n_train} test rows; need >= 2 and >= 1"
        )
    return n_train


def rows_for_profile(n: int, profile: str, max_samples: int | None) -> int:
    """Rows a latent-only metric uses: all, or the first ``max_samples`` (``"fast"``: 5,000)."""
    if max_samples is None and profile == "fast":
        max_samples = FAST_MAX_SAMPLES
    return n if max_samples is None else min(n, max_samples)


def int_option(metric: str, name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{metric}: {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{metric}: {name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{metric}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def n_jobs_option(metric: str, name: str, value: Any) -> int:
    value = int_option(metric, name, value)
    if value == 0:
        raise ValueError(f"{metric}: n_jobs must be a non-zero integer (-1: all cores), got 0")
    return value


def optional_int_option(metric: str, name: str, value: Any, *, minimum: int) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "all")):
        return None
    return int_option(metric, name, value, minimum=minimum)


def float_option(
    metric: str,
    name: str,
    value: Any,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{metric}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{metric}: {name} must be a number, got {value!r}")
    value = float(value)
    ok = math.isfinite(value) or (high == math.inf and value == math.inf and not high_open)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{metric}: {name} must lie in {interval}, got {value!r}")
    return value


def profile_option(metric: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in PROFILES:
        raise ValueError(f"{metric}: {name} must be one of {list(PROFILES)}, got {value!r}")
    return value.strip().lower()


def read_options(
    metric: str,
    options: Mapping[str, Any],
    parsers: Mapping[str, Callable[[str, str, Any], Any]],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """Check option names and values: ``parsers[name](metric, name, value)``.

    Every option in ``defaults`` is returned (defaults are not re-validated);
    options without a default (``None`` allowed) come back as given or ``None``.
    """
    unknown = sorted(set(options) - set(parsers))
    if unknown:
        raise ValueError(f"{metric}: unknown option(s) {unknown}; known: {sorted(parsers)}")
    out = {name: defaults.get(name) for name in parsers}
    for name, value in options.items():
        out[name] = parsers[name](metric, name, value)
    return out


def latent_only_parsers(metric: str) -> dict[str, Callable[[str, str, Any], Any]]:
    """Options every latent-only metric accepts: ``profile`` and ``max_samples``."""
    return {
        "profile": profile_option,
        "max_samples": partial(optional_int_option, minimum=2),
    }


def context_rows(
    ctx: EvaluationContext, metric: str, profile: str, max_samples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(means, factors)`` of the context, checked to match, cut to the profile's rows."""
    if ctx.factors is None:
        raise ValueError(f"{metric}: needs ground-truth factors, but this dataset provides none")
    means = np.asarray(ctx.means)
    factors = np.asarray(ctx.factors)
    if means.ndim != 2:
        raise ValueError(f"{metric}: latents must be a 2-D (N, D) array, got shape {means.shape}")
    if factors.ndim != 2:
        raise ValueError(f"{metric}: factors must be a 2-D (N, K) array, got shape {factors.shape}")
    if factors.shape[0] != means.shape[0]:
        raise ValueError(
            f"{metric}: latents and factors must describe the same samples, got "
            f"N={means.shape[0]} latents and N={factors.shape[0]} factor rows"
        )
    rows = rows_for_profile(means.shape[0], profile, max_samples)
    return means[:rows], factors[:rows]


# ============================================================ SAP
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
    from joblib import Parallel, delayed

    d_count = train_latents.shape[1]
    k_count = train_factors.shape[1]
    tasks = [(d, k) for d in range(d_count) for k in range(k_count)]
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
    parsers = {
        "train_fraction": partial(
            float_option, low=0.0, high=1.0, low_open=True, high_open=True
        ),
        "n_jobs": n_jobs_option,
        **latent_only_parsers(metric),
    }
    opts = read_options(
        metric,
        ctx.options_for(metric),
        parsers,
        {"train_fraction": DEFAULT_TRAIN_FRACTION, "n_jobs": -1, "profile": "reference"},
    )
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
