"""Modularity and explicitness.

Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings With the F-Statistic
Loss", NeurIPS 2018, arXiv:1802.05312.

Two metrics, registered separately (they need different rows and answer
different questions):

* ``modularity``: is each code about at most one factor? With ``m[d, k]`` the
  mutual information between code ``d`` and factor ``k``, ``theta_d = max_k m[d, k]``,

      delta_d = sum_{k != argmax} m[d, k]^2 / (theta_d^2 (K - 1)),

  a code scores ``1 - delta_d`` (0 when it carries no information, ``theta_d = 0``),
  and ``modularity`` is the mean over codes, in ``[0, 1]``.
* ``explicitness``: can every factor value be read off the codes linearly? Per
  factor a one-vs-rest logistic regression on all (standardised) codes; its
  macro-averaged one-vs-rest ROC AUC over the factor's values on the test rows
  (``explicitness``) and training rows (``explicitness.train``), averaged over
  factors; 0.5 is chance.

Estimators: disentanglement_lib's ``modularity_explicitness.py`` (Locatello et al.
2019, arXiv:1811.12359) with its study defaults:

* the MI matrix is the plug-in estimate between codes discretized into
  ``bins = 20`` equal-width bins and the raw factor values (the helpers of
  ``information.py``, identical to disentanglement_lib's ``make_discretizer`` +
  ``discrete_mutual_info``), computed here on *all* ``N`` rows given
  (disentanglement_lib: its 10,000 training samples);
* codes are standardised with the training rows' mean and (``ddof=0``) standard
  deviation; the classifier is disentanglement_lib's ``LogisticRegression()``
  with the defaults of the scikit-learn it was written against (< 0.22):
  ``liblinear``, L2, ``C = 1``, ``tol = 1e-4``, ``max_iter = 100``, one-vs-rest
  (``predict_proba`` = per-class sigmoids normalised to sum 1). Modern
  scikit-learn's default is a multinomial ``lbfgs`` model and liblinear no longer
  does multi-class itself, so this is spelled out as
  ``OneVsRestClassifier(LogisticRegression(solver="liblinear"))``;
* the AUC is ``roc_auc_score`` of the one-hot labels against the predicted
  probabilities (macro average over values); split: the first
  ``round(train_fraction * N)`` rows train, the rest test, ``train_fraction = 2/3``
  (disentanglement_lib: 10,000 / 5,000).

Departures from disentanglement_lib, none of which changes a defined value:

* a constant factor is left out (``excluded_factors``): its MI column is 0 but it
  would still count in ``K - 1`` and inflate every code's modularity, and no
  classifier can be fitted to it;
* a constant code is standardised with a standard deviation of 1 instead of
  producing NaN;
* a factor value missing from one split (only one class in that one-vs-rest
  column, AUC undefined; disentanglement_lib raises) is left out of that split's
  macro average and counted in ``params["auc_columns_skipped"]``;
* inputs are validated. Both need at least two non-constant factors.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.information import discretize, mutual_information_matrix
from vaebench.plugins.metrics.inputs import (
    DEFAULT_TRAIN_FRACTION,
    check_codes_and_factors,
    context_rows,
    float_option,
    int_option,
    latent_only_parsers,
    n_jobs_option,
    read_options,
    sklearn_version,
    split_metric_options,
    train_rows,
    varying_columns,
)
from vaebench.plugins.specs import MetricResult

__all__ = [
    "LOGISTIC_PARAMS",
    "compute_explicitness",
    "compute_modularity",
    "explicitness",
    "explicitness_per_factor",
    "logistic_ovr",
    "modularity",
    "modularity_from_mi",
]

DEFAULT_BINS = 20
LOGISTIC_PARAMS: dict[str, Any] = {
    "solver": "liblinear",
    "penalty": "l2",
    "C": 1.0,
    "tol": 1e-4,
    "max_iter": 100,
    "fit_intercept": True,
    "intercept_scaling": 1.0,
    "multiclass": "one-vs-rest",
}


def _split_names(
    names: list[str], used: np.ndarray, metric: str, rows: int
) -> tuple[list[str], list[str]]:
    used_names = [name for name, ok in zip(names, used) if ok]
    excluded = [name for name, ok in zip(names, used) if not ok]
    if len(used_names) < 2:
        raise ValueError(
            f"{metric}: need at least 2 factors that vary on the {rows} rows used, "
            f"got {len(used_names)} (constant: {excluded})"
        )
    return used_names, excluded


# ============================================================ modularity
def modularity_from_mi(mutual_information: np.ndarray) -> tuple[float, np.ndarray]:
    """Modularity of a ``(D, K)`` MI matrix, ``K >= 2``: ``(mean, (D,) per-code scores)``.

    Equal to disentanglement_lib's ``modularity`` (a code with no information scores 0).
    """
    mi = np.asarray(mutual_information, dtype=np.float64)
    if mi.ndim != 2 or mi.shape[1] < 2 or mi.shape[0] < 1:
        raise ValueError(f"modularity: need a (D, K) MI matrix with K >= 2, got shape {mi.shape}")
    squared = mi**2
    top = squared.max(axis=1)
    numerator = squared.sum(axis=1) - top
    denominator = top * (squared.shape[1] - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_code = 1.0 - numerator / denominator
    per_code[top == 0.0] = 0.0
    return float(np.mean(per_code)), per_code


def modularity(
    latents: np.ndarray,
    factors: np.ndarray,
    *,
    bins: int = DEFAULT_BINS,
    factor_names: Sequence[str] | None = None,
) -> MetricResult:
    """Modularity of ``latents`` with respect to ``factors`` (all rows).

    Returns:
        ``MetricResult`` with value ``modularity`` and params ``n``, ``bins``,
        ``mi_matrix`` (``D x used K``, nats, 6 decimals), ``modularity_per_code``,
        ``factor_names``, ``excluded_factors``.

    Raises:
        ValueError: on malformed input or fewer than two non-constant factors.
    """
    metric = "modularity"
    z, v, names = check_codes_and_factors(latents, factors, metric, factor_names=factor_names)
    bins = int_option(metric, "bins", bins, minimum=2)
    used_names, excluded = _split_names(names, varying_columns(v), metric, z.shape[0])
    # Discretize the codes as given (as mig.py does), not the float64 copy: the bin
    # edges are computed in the codes' own floating dtype, as np.histogram does in
    # disentanglement_lib; float64 edges put the odd float32 value in another bin.
    mi = mutual_information_matrix(discretize(np.asarray(latents), bins), v[:, varying_columns(v)])
    score, per_code = modularity_from_mi(mi)
    params: dict[str, Any] = {
        "n": int(z.shape[0]),
        "bins": bins,
        "estimator": "plug-in discrete MI, equal-width bins (disentanglement_lib)",
        "factor_names": used_names,
        "excluded_factors": excluded,
        "mi_matrix": np.round(mi, 6).tolist(),
        "modularity_per_code": np.round(per_code, 6).tolist(),
        "sklearn_version": sklearn_version(),
    }
    return MetricResult(values={metric: score}, params=params)


# ============================================================ explicitness
def logistic_ovr(random_state: int) -> Any:
    """disentanglement_lib's ``LogisticRegression()`` as of scikit-learn < 0.22 (liblinear, OvR)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    base = LogisticRegression(
        solver="liblinear",
        C=LOGISTIC_PARAMS["C"],
        tol=LOGISTIC_PARAMS["tol"],
        max_iter=LOGISTIC_PARAMS["max_iter"],
        fit_intercept=True,
        intercept_scaling=LOGISTIC_PARAMS["intercept_scaling"],
        random_state=random_state,
    )
    return OneVsRestClassifier(base)


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> tuple[float, int]:
    """Mean one-vs-rest ROC AUC over the classes with both labels present; columns skipped."""
    from sklearn.metrics import roc_auc_score

    onehot = y[:, None] == classes[None, :]
    aucs = []
    for j in range(classes.size):
        positives = int(onehot[:, j].sum())
        if 0 < positives < y.size:
            aucs.append(roc_auc_score(onehot[:, j], proba[:, j]))
    skipped = classes.size - len(aucs)
    return (float(np.mean(aucs)) if aucs else float("nan")), skipped


def explicitness_per_factor(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    random_state: int = 0,
) -> tuple[float, float, int, bool]:
    """One factor: ``(train AUC, test AUC, AUC columns skipped, converged)``.

    ``x_*`` are standardised codes ``(n, D)``; ``y_train`` has >= 2 values.
    """
    from sklearn.exceptions import ConvergenceWarning

    clf = logistic_ovr(random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    classes = clf.classes_
    auc_train, skip_train = _macro_auc(y_train, clf.predict_proba(x_train), classes)
    auc_test, skip_test = _macro_auc(y_test, clf.predict_proba(x_test), classes)
    converged = all(
        int(np.max(est.n_iter_)) < LOGISTIC_PARAMS["max_iter"] for est in clf.estimators_
    )
    return auc_train, auc_test, skip_train + skip_test, converged


def explicitness(
    latents: np.ndarray,
    factors: np.ndarray,
    *,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    random_state: int = 0,
    n_jobs: int = -1,
    factor_names: Sequence[str] | None = None,
) -> MetricResult:
    """Explicitness of ``latents`` with respect to ``factors``.

    Returns:
        ``MetricResult`` with values ``explicitness`` (test AUC) and
        ``explicitness.train``; params hold split sizes, classifier settings,
        per-factor AUCs, ``excluded_factors``, ``auc_columns_skipped``,
        ``not_converged`` and ``sklearn_version``.

    Raises:
        ValueError: on malformed input, a bad split, or fewer than two factors
            varying on the training rows.
    """
    from joblib import Parallel, delayed

    metric = "explicitness"
    z, v, names = check_codes_and_factors(latents, factors, metric, factor_names=factor_names)
    train_fraction = float_option(
        metric, "train_fraction", train_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )
    n_jobs = n_jobs_option(metric, "n_jobs", n_jobs)
    random_state = int_option(metric, "random_state", random_state, minimum=0)
    n = z.shape[0]
    n_train = train_rows(n, train_fraction, metric)
    z_train, z_test = z[:n_train], z[n_train:]
    v_train, v_test = v[:n_train], v[n_train:]
    used = varying_columns(v_train)
    used_names, excluded = _split_names(names, used, metric, n_train)

    mean = z_train.mean(axis=0)
    std = z_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train = (z_train - mean) / std
    x_test = (z_test - mean) / std

    results = Parallel(n_jobs=n_jobs)(
        delayed(explicitness_per_factor)(x_train, v_train[:, k], x_test, v_test[:, k], random_state)
        for k in np.flatnonzero(used)
    )
    auc_train = np.array([r[0] for r in results])
    auc_test = np.array([r[1] for r in results])
    values = {
        metric: float(np.nanmean(auc_test)) if np.isfinite(auc_test).any() else float("nan"),
        f"{metric}.train": float(np.nanmean(auc_train)),
    }
    params: dict[str, Any] = {
        "n": int(n),
        "n_train": int(n_train),
        "n_test": int(n - n_train),
        "train_fraction": train_fraction,
        "standardise": "train mean / std (ddof=0); std 0 -> 1",
        "classifier": "sklearn.multiclass.OneVsRestClassifier(sklearn.linear_model.LogisticRegression)",
        "classifier_params": dict(LOGISTIC_PARAMS),
        "random_state": random_state,
        "auc": "sklearn.metrics.roc_auc_score, one-vs-rest, macro over values",
        "n_jobs": n_jobs,
        "factor_names": used_names,
        "excluded_factors": excluded,
        "auc_train_per_factor": np.round(auc_train, 6).tolist(),
        "auc_test_per_factor": np.round(auc_test, 6).tolist(),
        "auc_columns_skipped": int(sum(r[2] for r in results)),
        "not_converged": int(sum(1 for r in results if not r[3])),
        "sklearn_version": sklearn_version(),
    }
    return MetricResult(values=values, params=params)


# ============================================================ plugin entry points
def modularity_options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Modularity's options (``MetricSpec.options``): ``bins``, ``profile``, ``max_samples``."""
    parsers = {"bins": partial(int_option, minimum=2), **latent_only_parsers(metric)}
    return read_options(metric, given, parsers, {"bins": DEFAULT_BINS, "profile": "reference"})


def compute_modularity(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``modularity`` (all rows of the held-out set).

    Options (``ctx.options_for("modularity")``): ``bins`` (20), ``profile``
    (``"reference"``: all rows; ``"fast"``: the first 5,000) and ``max_samples``.
    """
    metric = "modularity"
    opts = modularity_options(metric, ctx.options_for(metric))
    means, factors = context_rows(ctx, metric, opts["profile"], opts["max_samples"])
    result = modularity(
        means, factors, bins=opts["bins"], factor_names=tuple(ctx.factor_names) or None
    )
    result.params.update(
        profile=opts["profile"], max_samples=opts["max_samples"], seed=int(ctx.seed)
    )
    return result


def compute_explicitness(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``explicitness``.

    Options (``ctx.options_for("explicitness")``): ``train_fraction`` (2/3),
    ``n_jobs`` (-1), ``profile`` and ``max_samples``; ``random_state`` is
    ``ctx.seed``.
    """
    metric = "explicitness"
    opts = split_metric_options(ctx, metric)
    means, factors = context_rows(ctx, metric, opts["profile"], opts["max_samples"])
    result = explicitness(
        means,
        factors,
        train_fraction=opts["train_fraction"],
        random_state=int(ctx.seed),
        n_jobs=opts["n_jobs"],
        factor_names=tuple(ctx.factor_names) or None,
    )
    result.params.update(
        profile=opts["profile"], max_samples=opts["max_samples"], seed=int(ctx.seed)
    )
    return result
