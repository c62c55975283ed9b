"""DCI: Disentanglement, Completeness and Informativeness.

Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of
Disentangled Representations", ICLR 2018.

One regressor per factor predicts ``v_k`` from all codes; its feature importances
fill column ``k`` of a ``D x K`` importance matrix ``R`` (``R[d, k] >= 0``).

* disentanglement: code ``d``'s importances normalised over factors,
  ``P[d, k] = R[d, k] / sum_k R[d, k]``, give ``D_d = 1 - H_K(P[d, :])`` (entropy
  with log base ``K``); ``dci = sum_d rho_d D_d`` with ``rho_d = sum_k R[d, k] /
  sum R`` (codes that matter little count little);
* completeness: factor ``k``'s importances normalised over codes give
  ``C_k = 1 - H_D(R[:, k] / sum_d R[d, k])``; ``dci.completeness = sum_k w_k C_k``
  with ``w_k = sum_d R[d, k] / sum R``. Gradient-boosting importances sum to 1 per
  factor, so ``w_k = 1/K`` and this is the plain mean over factors;
* informativeness: the regressors' accuracies, averaged over factors, on the
  training rows (``dci.informativeness_train``) and the test rows
  (``dci.informativeness_test``). disentanglement_lib names them
  ``informativeness_train`` / ``_test`` and computes them as *accuracies*
  (variables called ``train_loss`` / ``err`` notwithstanding): higher is better.

Estimator: exactly disentanglement_lib's ``dci.py`` (Locatello et al. 2019,
arXiv:1811.12359) with its study defaults: per factor one
``sklearn.ensemble.GradientBoostingClassifier()`` with default settings (100
stages of depth-3 trees, learning rate 0.1, no row subsampling) fitted on all
codes of the training rows; ``R[:, k] = |feature_importances_|``; entropies as
``scipy.stats.entropy(R + 1e-11, base=...)`` (the ``1e-11`` keeps an all-zero row
or column defined: uniform, score 0); if ``R`` is all zero the weights are
uniform. disentanglement_lib draws 10,000 training and 5,000 test samples; here
the first ``round(train_fraction * N)`` rows train and the rest test,
``train_fraction = 2/3`` (``N = 15,000`` reproduces the reference sizes).

Cost: gradient boosting fits one tree per class per stage, so a factor with ``C``
values costs ``100 C`` trees (on 10,000 x 10 rows, one core: ~10 s for ``C = 3``,
~80 s for ``C = 32``). The trees of one stage depend only on the previous
stage, so each fit grows them on ``n_jobs`` threads (default: all cores;
``gbt.py``, scikit-learn's model tree for tree), and the factors are fitted one
after another (see :func:`importance_gbt` for why not one factor per core).

``dci_fast`` (registered under its own name so that it is never ranked beside
``dci``, keys ``dci_fast``, ``dci_fast.completeness``, ...) is a cheaper proxy for
monitoring during training: the same gradient-boosting classifier but with
``n_estimators = 25`` stages, fitted on at most the first ``max_train = 2,000``
training rows (test accuracy still on all test rows); ~12 s instead of ~165 s in
the setting above. Its numbers are not comparable with ``dci``'s.

Departures from disentanglement_lib, none of which changes a defined value:
``random_state`` is the run's seed (disentanglement_lib passes none; with
default settings it only breaks ties between equally good splits); a factor that
is constant on the training rows (no classifier can be fitted) is left out and
listed in ``excluded_factors``; inputs are validated. ``D >= 2`` and at least
two non-constant factors are required, since the entropies use log base ``D``
and ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from vaebench.plugins.metrics import gbt as gbt_module
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.gbt import fit_gradient_boosting
from vaebench.plugins.metrics.inputs import (
    DEFAULT_TRAIN_FRACTION,
    check_codes_and_factors,
    context_rows,
    float_option,
    int_option,
    n_jobs_option,
    sklearn_version,
    split_options,
    train_rows,
    varying_columns,
)
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DCIScores",
    "compute",
    "compute_fast",
    "dci",
    "dci_from_importance",
    "importance_gbt",
]

#: disentanglement_lib's smoothing of the importances before taking entropies.
EPSILON = 1e-11
FAST_N_ESTIMATORS = 25
FAST_MAX_TRAIN = 2000


@dataclass(frozen=True)
class DCIScores:
    """Disentanglement and completeness of an importance matrix, with their parts."""

    disentanglement: float
    completeness: float
    #: ``(D,)`` ``1 - H_K`` of each code's importances over factors.
    per_code: np.ndarray
    #: ``(K,)`` ``1 - H_D`` of each factor's importances over codes.
    per_factor: np.ndarray
    #: ``(D,)`` relative importance of each code (weights of the disentanglement mean).
    code_weights: np.ndarray
    #: ``(K,)`` relative importance of each factor (weights of the completeness mean).
    factor_weights: np.ndarray


def _normalised_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """``scipy.stats.entropy(p, base=base, axis=axis)``: normalise, ``-sum p log p / log base``."""
    p = p / p.sum(axis=axis, keepdims=True)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> DCIScores:
    """Disentanglement and completeness from a ``(D, K)`` importance matrix.

    The one place the DCI entropy math lives; ``dci`` and ``dci_fast`` both call
    it. Equal to disentanglement_lib's ``disentanglement`` / ``completeness``.

    Raises:
        ValueError: for a non-2-D matrix, ``D < 2`` or ``K < 2``, negative or
            non-finite entries.
    """
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"dci: importance must be a 2-D (D, K) matrix, got shape {r.shape}")
    d_count, k_count = r.shape
    if d_count < 2 or k_count < 2:
        raise ValueError(
            f"dci: need D >= 2 codes and K >= 2 factors (entropies use log base D and K), "
            f"got D={d_count}, K={k_count}"
        )
    if not np.isfinite(r).all() or (r < 0).any():
        raise ValueError("dci: importances must be finite and non-negative")
    smoothed = r + EPSILON
    per_code = 1.0 - _normalised_entropy(smoothed, axis=1, base=k_count)
    per_factor = 1.0 - _normalised_entropy(smoothed, axis=0, base=d_count)
    weights = r if r.sum() > 0 else np.ones_like(r)
    code_weights = weights.sum(axis=1) / weights.sum()
    factor_weights = weights.sum(axis=0) / weights.sum()
    return DCIScores(
        disentanglement=float(np.sum(per_code * code_weights)),
        completeness=float(np.sum(per_factor * factor_weights)),
        per_code=per_code,
        per_factor=per_factor,
        code_weights=code_weights,
        factor_weights=factor_weights,
    )


def _gbt_params(n_estimators: int | None, random_state: int) -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingClassifier

    params = GradientBoostingClassifier().get_params()
    if n_estimators is not None:
        params["n_estimators"] = n_estimators
    params["random_state"] = random_state
    return params


def _fit_factor(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    params: dict[str, Any],
    threads: int,
) -> tuple[np.ndarray, float, float]:
    model = fit_gradient_boosting(x_train, y_train, params, threads=threads)
    importance = np.abs(model.feature_importances_)
    acc_train = float(np.mean(model.predict(x_train) == y_train))
    acc_test = float(np.mean(model.predict(x_test) == y_test))
    return importance, acc_train, acc_test


def importance_gbt(
    train_latents: np.ndarray,
    train_factors: np.ndarray,
    test_latents: np.ndarray,
    test_factors: np.ndarray,
    *,
    n_estimators: int | None = None,
    random_state: int = 0,
    n_jobs: int = -1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit one ``GradientBoostingClassifier`` per factor, ``n_jobs`` cores each.

    Returns ``(importance (D, K), train accuracy (K,), test accuracy (K,),
    classifier params)``. Every factor must vary on the training rows.
    ``n_estimators=None`` keeps scikit-learn's default (100).

    The factors are fitted one after another, each stage's per-class trees on
    ``n_jobs`` threads (``gbt.fit_gradient_boosting``; the model is scikit-learn's,
    tree for tree). Splitting the cores *within* a fit rather than across factors
    keeps them busy to the end: dSprites' factors cost 3, 6, 40, 32 and 32 trees
    per stage, so one factor per core leaves a core idle for ~30% of the time
    (makespan 14.3 of 24.9 units on 2 cores), while threading within each fit
    approaches 24.9 / 2. Without the threaded stage (an unknown scikit-learn) the
    factors are fitted in parallel processes, largest first.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    params = _gbt_params(n_estimators, random_state)
    k_count = train_factors.shape[1]
    cores = effective_n_jobs(n_jobs)
    if gbt_module.AVAILABLE or cores == 1:
        results = [
            _fit_factor(
                train_latents, train_factors[:, k], test_latents, test_factors[:, k], params, cores
            )
            for k in range(k_count)
        ]
    else:  # pragma: no cover - only with a scikit-learn whose private stage API changed
        order = sorted(range(k_count), key=lambda k: -len(np.unique(train_factors[:, k])))
        fitted = Parallel(n_jobs=n_jobs)(
            delayed(_fit_factor)(
                train_latents, train_factors[:, k], test_latents, test_factors[:, k], params, 1
            )
            for k in order
        )
        results = [fitted[order.index(k)] for k in range(k_count)]
    importance = np.stack([imp for imp, _, _ in results], axis=1)
    acc_train = np.array([a for _, a, _ in results], dtype=np.float64)
    acc_test = np.array([a for _, _, a in results], dtype=np.float64)
    return importance, acc_train, acc_test, params


def dci(
    latents: np.ndarray,
    factors: np.ndarray,
    *,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    random_state: int = 0,
    n_jobs: int = -1,
    factor_names: Sequence[str] | None = None,
    fast: bool = False,
    n_estimators: int | None = None,
    max_train: int | None = None,
) -> MetricResult:
    """DCI of ``latents`` with respect to ``factors``.

    Args:
        latents: ``(N, D)`` real codes (encoder means), finite, ``D >= 2``.
        factors: ``(N, K)`` integer factor indices of the same samples.
        train_fraction: leading fraction of rows used for fitting (the rest test).
        random_state: seed of the gradient-boosting classifiers.
        n_jobs: cores for the fits (-1: all): threads growing each stage's trees.
        factor_names: ``K`` distinct names; default ``factor0 .. factor{K-1}``.
        fast: the ``dci_fast`` variant (keys prefixed ``dci_fast``); its defaults
            are ``n_estimators=25`` and ``max_train=2000``.
        n_estimators: boosting stages (reference: scikit-learn's default, 100).
        max_train: fit on at most this many leading training rows (reference: all).

    Returns:
        ``MetricResult`` with values ``<name>`` (disentanglement),
        ``<name>.completeness``, ``<name>.informativeness_train`` and
        ``<name>.informativeness_test`` (mean accuracies); params hold split sizes,
        classifier settings, the importance matrix, per-code / per-factor scores,
        per-factor accuracies, ``excluded_factors`` and ``sklearn_version``.

    Raises:
        ValueError: on malformed input, ``D < 2``, a bad split, or fewer than two
            factors varying on the training rows.
    """
    metric = "dci_fast" if fast else "dci"
    z, v, names = check_codes_and_factors(
        latents, factors, metric, min_codes=2, factor_names=factor_names
    )
    train_fraction = float_option(
        metric, "train_fraction", train_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )
    n_jobs = n_jobs_option(metric, "n_jobs", n_jobs)
    random_state = int_option(metric, "random_state", random_state, minimum=0)
    if fast:
        n_estimators = FAST_N_ESTIMATORS if n_estimators is None else n_estimators
        max_train = FAST_MAX_TRAIN if max_train is None else max_train
    if n_estimators is not None:
        n_estimators = int_option(metric, "n_estimators", n_estimators, minimum=1)
    if max_train is not None:
        max_train = int_option(metric, "max_train", max_train, minimum=2)

    n = z.shape[0]
    n_train = train_rows(n, train_fraction, metric)
    n_fit = n_train if max_train is None else min(n_train, max_train)
    z_fit, v_fit = z[:n_fit], v[:n_fit]
    z_test, v_test = z[n_train:], v[n_train:]

    used = varying_columns(v_fit)
    used_names = [name for name, ok in zip(names, used) if ok]
    excluded = [name for name, ok in zip(names, used) if not ok]
    if len(used_names) < 2:
        raise ValueError(
            f"{metric}: need at least 2 factors that vary on the {n_fit} training rows, "
            f"got {len(used_names)} (constant: {excluded})"
        )

    importance, acc_train, acc_test, gbt = importance_gbt(
        z_fit,
        v_fit[:, used],
        z_test,
        v_test[:, used],
        n_estimators=n_estimators,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    scores = dci_from_importance(importance)

    values = {
        metric: scores.disentanglement,
        f"{metric}.completeness": scores.completeness,
        f"{metric}.informativeness_train": float(np.mean(acc_train)),
        f"{metric}.informativeness_test": float(np.mean(acc_test)),
    }
    params: dict[str, Any] = {
        "variant": "fast" if fast else "reference",
        "n": int(n),
        "n_train": int(n_fit),
        "n_test": int(n - n_train),
        "train_fraction": train_fraction,
        "max_train": max_train,
        "classifier": "sklearn.ensemble.GradientBoostingClassifier",
        "classifier_params": {k: _jsonable(val) for k, val in sorted(gbt.items())},
        "random_state": random_state,
        "epsilon": EPSILON,
        "n_jobs": n_jobs,
        "factor_names": used_names,
        "excluded_factors": excluded,
        "importance_matrix": np.round(importance, 6).tolist(),
        "disentanglement_per_code": np.round(scores.per_code, 6).tolist(),
        "code_importance": np.round(scores.code_weights, 6).tolist(),
        "completeness_per_factor": np.round(scores.per_factor, 6).tolist(),
        "accuracy_train_per_factor": np.round(acc_train, 6).tolist(),
        "accuracy_test_per_factor": np.round(acc_test, 6).tolist(),
        "sklearn_version": sklearn_version(),
    }
    return MetricResult(values=values, params=params)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def options(metric: str, given: Mapping[str, Any], train_fraction: float | None = None) -> dict[str, Any]:
    """The options of ``dci`` / ``dci_fast`` (``MetricSpec.options``); see :func:`compute`, :func:`compute_fast`."""
    if metric != "dci_fast":
        return split_options(metric, given, train_fraction=train_fraction)
    extra = {"n_estimators": partial(int_option, minimum=1), "max_train": partial(int_option, minimum=2)}
    return split_options(metric, given, extra, {"n_estimators": FAST_N_ESTIMATORS, "max_train": FAST_MAX_TRAIN},
                         train_fraction)


def _compute(ctx: EvaluationContext, fast: bool) -> MetricResult:
    metric = "dci_fast" if fast else "dci"
    opts = options(metric, ctx.options_for(metric), ctx.train_fraction)
    means, factors = context_rows(ctx, metric, opts["profile"], opts["max_samples"])
    result = dci(
        means,
        factors,
        train_fraction=opts["train_fraction"],
        random_state=int(ctx.seed),
        n_jobs=opts["n_jobs"],
        factor_names=tuple(ctx.factor_names) or None,
        fast=fast,
        n_estimators=opts.get("n_estimators"),
        max_train=opts.get("max_train"),
    )
    result.params.update(
        profile=opts["profile"], max_samples=opts["max_samples"], seed=int(ctx.seed)
    )
    return result


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``dci``: reference DCI of ``ctx.means`` against ``ctx.factors``.

    Options (``ctx.options_for("dci")``): ``train_fraction`` (2/3), ``n_jobs`` (-1),
    ``profile`` (``"reference"``: all rows; ``"fast"``: the first 5,000) and
    ``max_samples``. The classifiers' ``random_state`` is ``ctx.seed``.
    """
    return _compute(ctx, fast=False)


def compute_fast(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``dci_fast``: the cheap proxy (25 stages, <= 2,000 fit rows).

    Options (``ctx.options_for("dci_fast")``): those of ``dci`` plus
    ``n_estimators`` (25) and ``max_train`` (2,000).
    """
    return _compute(ctx, fast=True)
