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

This module also holds the sampling / encoding helpers the FactorVAE metric shares.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import int_option, profile_option, read_options, sklearn_version
from vaebench.plugins.metrics.modularity import LOGISTIC_PARAMS, logistic_ovr
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DEFAULT_ENCODE_BATCH",
    "PROFILES",
    "Encoder",
    "beta_vae_metric",
    "chunked_reduce",
    "compute",
    "encode_factors",
    "fixable_factors",
    "pair_features",
    "sample_factors",
    "sampler_from_context",
    "sampler_options",
]

PROFILES: dict[str, dict[str, int]] = {
    "reference": {"num_train": 10_000, "num_eval": 5_000, "batch_size": 64},
    "fast": {"num_train": 1_000, "num_eval": 500, "batch_size": 64},
}
DEFAULT_ENCODE_BATCH = 8192

Encoder = Callable[[np.ndarray], np.ndarray]


# ============================================================ shared sampler helpers
def sampler_from_context(ctx: EvaluationContext, metric: str) -> tuple[Any, Encoder, tuple[int, ...]]:
    """``(dataset, encode, factor_sizes)`` of a context, or a one-line ``ValueError``."""
    if ctx.dataset is None or not hasattr(ctx.dataset, "sample_factors") or not hasattr(
        ctx.dataset, "observations"
    ):
        raise ValueError(f"{metric}: needs a dataset that renders observations for chosen factors")
    if ctx.encode is None:
        raise ValueError(f"{metric}: needs an encode function (images -> posterior means)")
    sizes = tuple(getattr(ctx.dataset, "factor_sizes", ()) or ctx.factor_sizes)
    return ctx.dataset, ctx.encode, sizes


def fixable_factors(factor_sizes: tuple[int, ...], metric: str) -> np.ndarray:
    """Indices of the factors with more than one value (the ones that can be "fixed")."""
    sizes = np.asarray(factor_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"{metric}: dataset has no factor sizes")
    fixable = np.flatnonzero(sizes > 1)
    if fixable.size < 2:
        raise ValueError(
            f"{metric}: need at least 2 factors with more than one value, got sizes {sizes.tolist()}"
        )
    return fixable


def sample_factors(dataset: Any, n: int, k_count: int, rng: np.random.Generator, metric: str) -> np.ndarray:
    """``dataset.sample_factors(n, rng)`` checked to be ``(n, K)`` integers."""
    f = np.asarray(dataset.sample_factors(n, rng))
    if f.shape != (n, k_count) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(
            f"{metric}: dataset.sample_factors({n}) returned {f.dtype} array of shape {f.shape}, "
            f"expected integer ({n}, {k_count})"
        )
    return f


def encode_factors(
    dataset: Any, encode: Encoder, factors: np.ndarray, metric: str
) -> np.ndarray:
    """Render ``(M, K)`` factor rows and encode them: ``(M, D)`` float64 means, validated."""
    z = np.asarray(encode(dataset.observations(factors)))
    if z.ndim != 2 or z.shape[0] != factors.shape[0]:
        raise ValueError(
            f"{metric}: encode returned shape {z.shape} for {factors.shape[0]} images, "
            "expected (M, D)"
        )
    if not np.isfinite(z).all():
        bad = int(np.count_nonzero(~np.isfinite(z)))
        raise ValueError(f"{metric}: encoder produced {bad} NaN/inf value(s)")
    return z.astype(np.float64, copy=False)


def chunked_reduce(
    dataset: Any,
    encode: Encoder,
    factors: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray],
    encode_batch: int,
    metric: str,
) -> np.ndarray:
    """Encode ``(P, G, K)`` groups of factor rows chunk by chunk and reduce each group.

    ``reduce`` maps codes ``(p, G, D)`` of ``p`` groups to ``(p, ...)``; chunks hold
    ``max(1, encode_batch // G)`` groups. Returns the concatenated reductions.
    """
    p_count, group, k_count = factors.shape
    per_chunk = max(1, encode_batch // group)
    out = []
    d_count = None
    for start in range(0, p_count, per_chunk):
        chunk = factors[start : start + per_chunk]
        z = encode_factors(dataset, encode, chunk.reshape(-1, k_count), metric)
        if d_count is None:
            d_count = z.shape[1]
        elif z.shape[1] != d_count:
            raise ValueError(f"{metric}: encode returned {z.shape[1]} codes, earlier {d_count}")
        out.append(reduce(z.reshape(chunk.shape[0], group, -1)))
    return np.concatenate(out, axis=0)


def sampler_options(
    metric: str,
    options: Mapping[str, Any],
    profiles: Mapping[str, Mapping[str, int]],
    extra: Mapping[str, tuple[Callable[[str, str, Any], Any], Any]] | None = None,
) -> dict[str, Any]:
    """Options of a sampler metric: ``profile`` picks the size defaults, explicit ones win."""
    extra = dict(extra or {})
    parsers: dict[str, Callable[[str, str, Any], Any]] = {
        "profile": profile_option,
        "encode_batch": partial(int_option, minimum=1),
        **{name: partial(int_option, minimum=2 if name == "batch_size" else 1)
           for name in profiles["reference"]},
        **{name: parser for name, (parser, _) in extra.items()},
    }
    profile = profile_option(metric, "profile", options.get("profile", "reference"))
    defaults = {
        "profile": profile,
        "encode_batch": DEFAULT_ENCODE_BATCH,
        **profiles[profile],
        **{name: default for name, (_, default) in extra.items()},
    }
    return read_options(metric, options, parsers, defaults)


# ============================================================ Higgins metric
def pair_features(
    dataset: Any,
    encode: Encoder,
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
    first = sample_factors(dataset, num_points * batch_size, k_count, rng, metric)
    second = sample_factors(dataset, num_points * batch_size, k_count, rng, metric)
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

    features = chunked_reduce(dataset, encode, groups, mean_abs_diff, encode_batch, metric)
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

    Returns:
        ``MetricResult`` with values ``beta_vae_metric`` (eval accuracy) and
        ``beta_vae_metric.train``; params hold every size, the seed, classifier
        settings, ``fixable_factors``, ``not_converged`` and ``sklearn_version``.
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

    x_train, y_train = pair_features(
        dataset, encode, num_train, batch_size, fixable, len(sizes), rng,
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
        dataset, encode, num_eval, batch_size, fixable, len(sizes), rng,
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
    }
    values = {metric: eval_accuracy, f"{metric}.train": train_accuracy}
    return MetricResult(values=values, params=params)


def compute(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point ``beta_vae_metric``: renders with ``ctx.dataset``, encodes with ``ctx.encode``.

    Options (``ctx.options_for("beta_vae_metric")``): ``profile`` (``"reference"``:
    10,000 / 5,000 points; ``"fast"``: 1,000 / 500), ``num_train``, ``num_eval``,
    ``batch_size`` (64), ``encode_batch`` (8,192). Seeded by ``ctx.seed``.
    """
    metric = "beta_vae_metric"
    opts = sampler_options(metric, ctx.options_for(metric), PROFILES)
    dataset, encode, sizes = sampler_from_context(ctx, metric)
    result = beta_vae_metric(
        dataset,
        encode,
        num_train=opts["num_train"],
        num_eval=opts["num_eval"],
        batch_size=opts["batch_size"],
        seed=int(ctx.seed),
        encode_batch=opts["encode_batch"],
        factor_sizes=sizes,
    )
    result.params["profile"] = opts["profile"]
    return result
