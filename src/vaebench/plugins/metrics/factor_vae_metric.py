"""The FactorVAE disentanglement metric.

Kim & Mnih 2018, "Disentangling by Factorising", ICML 2018, arXiv:1802.05983.

First each code's global variance is estimated from ``num_variance_estimate``
random observations, and codes whose standard deviation is below
``prune_threshold`` (collapsed to a constant) are pruned. One *point*: choose a
factor ``k`` uniformly, draw ``batch_size`` factor vectors that share one value
of factor ``k`` (others independent), encode them, and divide each active code's
variance over the batch by its global variance; the code with the smallest
ratio casts a vote ``(code, k)``. The classifier is a majority vote: each code
predicts the factor it received most training votes for. The metric is its
accuracy: ``factor_vae_metric`` on ``num_eval`` fresh points,
``factor_vae_metric.train`` on the ``num_train`` training points; and
``factor_vae_metric.num_active_dims`` is the number of codes that survived pruning.

Estimator: disentanglement_lib's ``factor_vae.py`` (Locatello et al. 2019,
arXiv:1811.12359) with its study defaults: ``batch_size = 64``,
``num_train = 10,000``, ``num_eval = 5,000``, ``num_variance_estimate = 10,000``,
``prune_threshold = 0.05``; variances with ``ddof = 1`` (global and per batch);
codes with global std ``< prune_threshold`` (collapsed to the prior) are pruned;
the fixed factor takes the batch's first row's value; the argmin is over the
active codes of ``local_var / global_var``; ties in the majority vote go to the
lowest factor index (``np.argmax``); a code without training votes predicts
factor 0; if no code is active both accuracies are 0.

``prune_threshold = 0.05`` is the reference study default: disentanglement_lib's
``_prune_dims(variances, threshold=0.)`` is gin-configurable, and the study's
``config/unsupervised_study_v1/metric_configs/factor_vae_metric.gin`` (and the
bindings of its tests and benchmarks) sets ``prune_dims.threshold = 0.05``; the
function's own default ``0`` (keep every code) is what a call without that
configuration gets, available here as ``prune_threshold=0``.

Departures from disentanglement_lib, stated because they can change a value:

* a code with *zero* global variance is pruned whatever ``prune_threshold`` is
  (with ``prune_threshold=0`` disentanglement_lib would keep it, divide 0 by 0,
  and ``np.argmin`` would pick that NaN code every time; at 0.05 it is pruned
  there too);
* ``num_active_dims`` is the number of codes kept; disentanglement_lib reports
  ``len(active_dims)`` of a boolean mask, i.e. always ``D``;
* votes are recorded against the code's own index (disentanglement_lib records
  the index within the active codes; accuracy is the same, the vote table's
  columns are not);
* random numbers come from ``np.random.default_rng(seed)``; a factor with a
  single value is never chosen as the fixed factor; the encoder's output is
  validated. At least two factors with more than one value are needed.

Implementation and cost: as for ``beta_vae_metric`` (same module helpers), all
factor vectors of a split are drawn at once and rendered / encoded in chunks of
about ``encode_batch`` images: the reference sizes encode ``10,000 + 15,000 x 64
= 970 k`` images; ``profile="fast"`` uses ``num_train = 1,000``, ``num_eval =
500``, ``num_variance_estimate = 2,000`` (98 k images). Explicit options override
the profile; values are comparable only at equal sizes (recorded). Images are
encoded through the context's code table (``sampler.CodeTable``, shared with the
β-VAE metric), so a grid image is encoded once per model.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import float_option, int_option, sklearn_version
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

__all__ = ["PROFILES", "compute", "factor_vae_metric", "fixed_factor_votes", "majority_vote"]

PROFILES: dict[str, dict[str, int]] = {
    "reference": {
        "num_train": 10_000,
        "num_eval": 5_000,
        "batch_size": 64,
        "num_variance_estimate": 10_000,
    },
    "fast": {"num_train": 1_000, "num_eval": 500, "batch_size": 64, "num_variance_estimate": 2_000},
}
DEFAULT_PRUNE_THRESHOLD = 0.05


def fixed_factor_votes(
    table: CodeTable,
    num_points: int,
    batch_size: int,
    fixable: np.ndarray,
    k_count: int,
    global_variances: np.ndarray,
    active: np.ndarray,
    rng: np.random.Generator,
    *,
    encode_batch: int = DEFAULT_ENCODE_BATCH,
    metric: str = "factor_vae_metric",
) -> np.ndarray:
    """``(K, D)`` vote counts of ``num_points`` fixed-factor batches."""
    labels = fixable[rng.integers(fixable.size, size=num_points)]
    factors = sample_factors(table.dataset, num_points * batch_size, k_count, rng, metric)
    factors = factors.reshape(num_points, batch_size, k_count)
    rows = np.arange(num_points)
    factors[rows, :, labels] = factors[rows, 0, labels][:, None]
    active_idx = np.flatnonzero(active)
    scale = global_variances[active_idx]

    def argmin_dim(z: np.ndarray) -> np.ndarray:
        local = np.var(z[:, :, active_idx], axis=1, ddof=1)
        return active_idx[np.argmin(local / scale, axis=1)]

    dims = chunked_reduce(table, factors, argmin_dim, encode_batch, metric)
    votes = np.zeros((k_count, global_variances.size), dtype=np.int64)
    np.add.at(votes, (labels, dims), 1)
    return votes


def majority_vote(train_votes: np.ndarray) -> np.ndarray:
    """``(D,)`` factor predicted by each code: its most common training vote (ties: lowest)."""
    return np.argmax(train_votes, axis=0)


def _accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / votes.sum())


def factor_vae_metric(
    dataset: Any,
    encode: Encoder,
    *,
    num_train: int = PROFILES["reference"]["num_train"],
    num_eval: int = PROFILES["reference"]["num_eval"],
    batch_size: int = PROFILES["reference"]["batch_size"],
    num_variance_estimate: int = PROFILES["reference"]["num_variance_estimate"],
    prune_threshold: float = DEFAULT_PRUNE_THRESHOLD,
    seed: int = 0,
    encode_batch: int = DEFAULT_ENCODE_BATCH,
    factor_sizes: tuple[int, ...] | None = None,
    table: CodeTable | None = None,
) -> MetricResult:
    """Kim & Mnih's metric of the encoder ``encode`` on ``dataset``.

    Args:
        dataset: has ``factor_sizes``, ``sample_factors(n, rng)`` and
            ``observations(factors)``.
        encode: images -> ``(M, D)`` posterior means.
        num_train / num_eval: points (batches) for the vote table / scoring.
        batch_size: observations per point (>= 2: variances use ``ddof=1``).
        num_variance_estimate: observations for the global variances (>= 2).
        prune_threshold: codes with global std below it are pruned (the study's
            ``prune_dims.threshold = 0.05``; ``0`` keeps every code of nonzero variance).
        seed: seeds the sampling.
        encode_batch: about this many images per ``encode`` call.
        factor_sizes: override ``dataset.factor_sizes``.
        table: the :class:`~vaebench.plugins.metrics.sampler.CodeTable` to encode
            through (shared with other sampler metrics); default: a new one.

    Returns:
        ``MetricResult`` with values ``factor_vae_metric`` (eval accuracy),
        ``factor_vae_metric.train`` and ``factor_vae_metric.num_active_dims``;
        params hold every size, the seed, ``global_std``, ``active_dims``, the
        training vote table, the classifier (factor name per code) and the code
        table's ``code_cache`` / ``images_requested`` / ``images_encoded``.
    """
    metric = "factor_vae_metric"
    num_train = int_option(metric, "num_train", num_train, minimum=1)
    num_eval = int_option(metric, "num_eval", num_eval, minimum=1)
    batch_size = int_option(metric, "batch_size", batch_size, minimum=2)
    num_variance_estimate = int_option(
        metric, "num_variance_estimate", num_variance_estimate, minimum=2
    )
    prune_threshold = float_option(metric, "prune_threshold", prune_threshold, low=0.0, high=np.inf)
    encode_batch = int_option(metric, "encode_batch", encode_batch, minimum=1)
    seed = int_option(metric, "seed", seed, minimum=0)
    sizes = tuple(factor_sizes if factor_sizes is not None else dataset.factor_sizes)
    k_count = len(sizes)
    fixable = fixable_factors(sizes, metric)
    rng = np.random.default_rng(seed)
    if table is None:
        table = CodeTable(dataset, encode, sizes)
    counters = (table.images_requested, table.images_encoded)

    pool = sample_factors(dataset, num_variance_estimate, k_count, rng, metric)
    codes = chunked_reduce(
        table, pool[:, None, :], lambda z: z[:, 0], encode_batch, metric
    )
    global_variances = np.var(codes, axis=0, ddof=1)
    global_std = np.sqrt(global_variances)
    active = (global_std >= prune_threshold) & (global_variances > 0)
    params: dict[str, Any] = {
        "num_train": num_train,
        "num_eval": num_eval,
        "batch_size": batch_size,
        "num_variance_estimate": num_variance_estimate,
        "prune_threshold": prune_threshold,
        "prune_rule": "keep codes with global std >= prune_threshold and variance > 0",
        "encode_batch": encode_batch,
        "seed": seed,
        "rng": "numpy.random.default_rng(seed)",
        "factor_sizes": list(sizes),
        "fixable_factors": fixable.tolist(),
        "num_codes": int(codes.shape[1]),
        "global_std": np.round(global_std, 6).tolist(),
        "active_dims": np.flatnonzero(active).tolist(),
        "sklearn_version": sklearn_version(),
    }
    if not active.any():
        params.update(train_votes=[], classifier=[], **table.stats_since(*counters))
        values = {metric: 0.0, f"{metric}.train": 0.0, f"{metric}.num_active_dims": 0.0}
        return MetricResult(values=values, params=params)

    common = dict(encode_batch=encode_batch, metric=metric)
    train_votes = fixed_factor_votes(
        table, num_train, batch_size, fixable, k_count, global_variances, active, rng,
        **common,
    )
    classifier = majority_vote(train_votes)
    eval_votes = fixed_factor_votes(
        table, num_eval, batch_size, fixable, k_count, global_variances, active, rng,
        **common,
    )
    params.update(
        **table.stats_since(*counters),
        train_votes=train_votes.tolist(),
        classifier=[int(k) for k in classifier],
    )
    values = {
        metric: _accuracy(eval_votes, classifier),
        f"{metric}.train": _accuracy(train_votes, classifier),
        f"{metric}.num_active_dims": float(np.count_nonzero(active)),
    }
    return MetricResult(values=values, params=params)


def options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The metric's options (``MetricSpec.options``); see :func:`compute`."""
    prune = (partial(float_option, low=0.0, high=np.inf), DEFAULT_PRUNE_THRESHOLD)
    return sampler_options(metric, given, PROFILES, extra={"prune_threshold": prune})


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``factor_vae_metric``: renders with ``ctx.dataset``, encodes with ``ctx.encode``.

    Options (``ctx.options_for("factor_vae_metric")``): ``profile``
    (``"reference"``: 10,000 / 5,000 points, 10,000 for the variances; ``"fast"``:
    1,000 / 500 / 2,000), ``num_train``, ``num_eval``, ``num_variance_estimate``,
    ``batch_size`` (64), ``prune_threshold`` (0.05), ``encode_batch`` (8,192).
    Seeded by ``ctx.seed``.
    """
    metric = "factor_vae_metric"
    opts = options(metric, ctx.options_for(metric))
    table = code_table(ctx, metric)
    result = factor_vae_metric(
        table.dataset,
        table.encode,
        num_train=opts["num_train"],
        num_eval=opts["num_eval"],
        batch_size=opts["batch_size"],
        num_variance_estimate=opts["num_variance_estimate"],
        prune_threshold=opts["prune_threshold"],
        seed=int(ctx.seed),
        encode_batch=opts["encode_batch"],
        factor_sizes=table.factor_sizes,
        table=table,
    )
    result.params["profile"] = opts["profile"]
    if ctx.factor_names and len(ctx.factor_names) == len(table.factor_sizes):
        result.params["factor_names"] = list(ctx.factor_names)
    return result
