"""The β-VAE (Higgins) disentanglement metric.

Higgins, Matthey, Pal, Burgess, Glorot, Botvinick, Mohamed & Lerchner 2017,
"β-VAE: Learning Basic Visual Concepts with a Constrained Variational
Framework", ICLR 2017.

One *point* of the metric's data set: choose a factor ``k`` uniformly, draw
``batch_size`` pairs of factor vectors that agree on factor ``k`` (all other
factors independent), render and encode both halves of every pair, and take the
feature ``mean_pairs |z_1 - z_2|`` (``D`` values). In a disentangled code the
dimension of factor ``k`` barely differs, so a linear classifier can read ``k``
off the feature. The metric is that classifier's accuracy: ``beta_vae_metric``
on ``num_eval`` fresh points, ``beta_vae_metric.train`` on its ``num_train``
training points.

Estimator: disentanglement_lib's ``beta_vae.py`` (``compute_beta_vae_sklearn``;
Locatello et al. 2019, arXiv:1811.12359) with its study defaults:
``batch_size = 64``, ``num_train = 10,000``, ``num_eval = 5,000``; factor vectors
uniform over the factor grid (``dataset.sample_factors``); the classifier is
``LogisticRegression(random_state=seed)`` with the defaults of the scikit-learn
disentanglement_lib was written against (< 0.22): ``liblinear``, L2, ``C = 1``,
one-vs-rest, raw (unstandardised) features. Modern scikit-learn's default is a
multinomial ``lbfgs`` model and liblinear no longer does multi-class itself,
so this is ``OneVsRestClassifier(LogisticRegression(solver="liblinear"))``.

Implementation: all ``(num_points, batch_size, 2)`` factor vectors of a split are
drawn at once, then rendered and encoded in chunks of about ``encode_batch``
images (8,192 by default; ~128 MiB of 64x64 float32 images), so memory stays
bounded while the encoder sees large batches. The reference data sizes render
and encode ``15,000 x 64 x 2 = 1.92 M`` images; option ``profile="fast"``
shrinks them to ``num_train = 1,000``, ``num_eval = 500`` (192 k images), for
monitoring; explicit ``num_train`` / ``num_eval`` / ``batch_size`` override the
profile. Values are only comparable at equal sizes, which are recorded.

Departures from disentanglement_lib, none of which changes a defined value:
random numbers come from ``np.random.default_rng(seed)`` (a different stream
than disentanglement_lib's ``RandomState``); a factor with a single value (e.g.
the original dSprites' ``color``, which disentanglement_lib removes from the
dataset) is never chosen as the fixed factor, because fixing it fixes nothing
and its label could not be learned; inputs and the encoder's output are
validated. At least two factors with more than one value are needed.

Each grid image is encoded once per model (``sampler.CodeTable``; the FactorVAE
metric shares the table), so the reference sizes encode at most dSprites' 737,280
images, not 1.92 M; ``images_encoded`` is recorded.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import int_option, sklearn_version
from vaebench.plugins.metrics.modularity import LOGISTIC_PARAMS, logistic_ovr
from vaebench.plugins.metrics.sampler import (
    DEFAULT_ENCODE_BATCH,
    CodeTable,
    Encoder,
    chunked_reduce,
    code_table,
    fixable_factors,
    sample_factors,
    sampler_options,
)
from vaebench.plugins.specs import MetricResult

__all__ = ["PROFILES", "beta_vae_metric", "compute", "pair_features"]

PROFILES: dict[str, dict[str, int]] = {
    "reference": {"num_train": 10_000, "num_eval": 5_000, "batch_size": 64},
    "fast": {"num_train": 1_000, "num_eval": 500, "batch_size": 64},
}


# ============================================================ Higgins metric
def pair_features(
    table: CodeTable,
    num_points: int,
    batch_size: int,
    fixable: np.ndarray,
    k_count: int,
    rng: np.random.Generator,
    *,
    encode_batch: int = DEFAULT_ENCODE_BATCH,
    metric: str = "beta_vae_metric",
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` Higgins points: features ``(P, D)`` and fixed-factor labels ``(P,)``.

    Each point: a factor drawn uniformly from ``fixable``; ``batch_size`` pairs
    agreeing on it; feature = mean over pairs of ``|z_1 - z_2|``.
    """
    labels = fixable[rng.integers(fixable.size, size=num_points)]
    first = sample_factors(table.dataset, num_points * batch_size, k_count, rng, metric)
    second = sample_factors(table.dataset, num_points * batch_size, k_count, rng, metric)
    first = first.reshape(num_points, batch_size, k_count)
    second = second.reshape(num_points, batch_size, k_count)
    rows = np.arange(num_points)[:, None]
    second[rows, np.arange(batch_size)[None, :], labels[:, None]] = first[
        rows, np.arange(batch_size)[None, :], labels[:, None]
    ]
    # One group per point: its batch_size first halves followed by the second halves.
    groups = np.concatenate([first, second], axis=1)

    def mean_abs_diff(z: np.ndarray) -> np.ndarray:
        return np.mean(np.abs(z[:, :batch_size] - z[:, batch_size:]), axis=1)

    features = chunked_reduce(table, groups, mean_abs_diff, encode_batch, metric)
    return features, labels


def beta_vae_metric(
    dataset: Any,
    encode: Encoder,
    *,
    num_train: int = PROFILES["reference"]["num_train"],
    num_eval: int = PROFILES["reference"]["num_eval"],
    batch_size: int = PROFILES["reference"]["batch_size"],
    seed: int = 0,
    encode_batch: int = DEFAULT_ENCODE_BATCH,
    factor_sizes: tuple[int, ...] | None = None,
    table: CodeTable | None = None,
) -> MetricResult:
    """Higgins et al.'s metric of the encoder ``encode`` on ``dataset``.

    Args:
        dataset: has ``factor_sizes``, ``sample_factors(n, rng)`` and
            ``observations(factors)``.
        encode: images -> ``(M, D)`` posterior means.
        num_train / num_eval: points for fitting / scoring the classifier.
        batch_size: pairs averaged per point.
        seed: seeds the sampling and the classifier.
        encode_batch: about this many images per ``encode`` call.
        factor_sizes: override ``dataset.factor_sizes``.
        table: the :class:`~vaebench.plugins.metrics.sampler.CodeTable` to encode
            through (shared with other sampler metrics); default: a new one.

    Returns:
        ``MetricResult`` with values ``beta_vae_metric`` (eval accuracy) and
        ``beta_vae_metric.train``; params hold every size, the seed, classifier
        settings, ``fixable_factors``, ``not_converged``, ``sklearn_version`` and
        the code table's ``code_cache`` / ``images_requested`` / ``images_encoded``.
    """
    from sklearn.exceptions import ConvergenceWarning

    metric = "beta_vae_metric"
    num_train = int_option(metric, "num_train", num_train, minimum=1)
    num_eval = int_option(metric, "num_eval", num_eval, minimum=1)
    batch_size = int_option(metric, "batch_size", batch_size, minimum=1)
    encode_batch = int_option(metric, "encode_batch", encode_batch, minimum=1)
    seed = int_option(metric, "seed", seed, minimum=0)
    sizes = tuple(factor_sizes if factor_sizes is not None else dataset.factor_sizes)
    fixable = fixable_factors(sizes, metric)
    rng = np.random.default_rng(seed)
    if table is None:
        table = CodeTable(dataset, encode, sizes)
    counters = (table.images_requested, table.images_encoded)

    x_train, y_train = pair_features(
        table, num_train, batch_size, fixable, len(sizes), rng,
        encode_batch=encode_batch, metric=metric,
    )
    if np.unique(y_train).size < 2:
        raise ValueError(f"{metric}: num_train={num_train} points drew a single fixed factor")
    clf = logistic_ovr(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    train_accuracy = float(np.mean(clf.predict(x_train) == y_train))
    x_eval, y_eval = pair_features(
        table, num_eval, batch_size, fixable, len(sizes), rng,
        encode_batch=encode_batch, metric=metric,
    )
    eval_accuracy = float(np.mean(clf.predict(x_eval) == y_eval))
    not_converged = sum(
        1 for est in clf.estimators_ if int(np.max(est.n_iter_)) >= LOGISTIC_PARAMS["max_iter"]
    )
    params: dict[str, Any] = {
        "num_train": num_train,
        "num_eval": num_eval,
        "batch_size": batch_size,
        "encode_batch": encode_batch,
        "seed": seed,
        "rng": "numpy.random.default_rng(seed)",
        "factor_sizes": list(sizes),
        "fixable_factors": fixable.tolist(),
        "num_codes": int(x_train.shape[1]),
        "classifier": "sklearn.multiclass.OneVsRestClassifier(sklearn.linear_model.LogisticRegression)",
        "classifier_params": dict(LOGISTIC_PARAMS),
        "random_state": seed,
        "not_converged": int(not_converged),
        "sklearn_version": sklearn_version(),
        **table.stats_since(*counters),
    }
    values = {metric: eval_accuracy, f"{metric}.train": train_accuracy}
    return MetricResult(values=values, params=params)


def options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The metric's options (``MetricSpec.options``); see :func:`compute`."""
    return sampler_options(metric, given, PROFILES)


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``beta_vae_metric``: renders with ``ctx.dataset``, encodes with ``ctx.encode``.

    Options (``ctx.options_for("beta_vae_metric")``): ``profile`` (``"reference"``:
    10,000 / 5,000 points; ``"fast"``: 1,000 / 500), ``num_train``, ``num_eval``,
    ``batch_size`` (64), ``encode_batch`` (8,192). Seeded by ``ctx.seed``.
    """
    metric = "beta_vae_metric"
    opts = options(metric, ctx.options_for(metric))
    table = code_table(ctx, metric)
    result = beta_vae_metric(
        table.dataset,
        table.encode,
        num_train=opts["num_train"],
        num_eval=opts["num_eval"],
        batch_size=opts["batch_size"],
        seed=int(ctx.seed),
        encode_batch=opts["encode_batch"],
        factor_sizes=table.factor_sizes,
        table=table,
    )
    result.params["profile"] = opts["profile"]
    return result
