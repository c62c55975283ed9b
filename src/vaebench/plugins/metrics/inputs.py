"""Validation of metric inputs and options, shared by every metric module.

One home for what the latent-only disentanglement metrics (``mig``, ``sap``,
``dci``, ``modularity``, ``irs``) and the sampler metrics (``beta_vae_metric``,
``factor_vae_metric``) all check the same way:

* arrays: :func:`check_codes` (real, finite ``(N, D)`` codes),
  :func:`as_integer_factors` (integer ``(N, K)`` factor indices),
  :func:`check_codes_and_factors` (both, same ``N``, plus factor names);
* rows: :func:`train_rows` (leading-rows train / test split),
  :func:`rows_for_profile` and :func:`context_rows` (the rows a ``profile`` /
  ``max_samples`` selects from an :class:`EvaluationContext`),
  :func:`require_factors`, :func:`varying_columns`;
* images: :func:`prior_and_real_images` (decoded prior samples and real images
  for the generator metrics: ``fd_domain``, ``fid_inception``, ...);
* options: the ``*_option`` parsers (each ``parser(metric, name, value)``, strings
  from the CLI accepted), :func:`read_options` (unknown names rejected, defaults
  filled in) and :func:`latent_only_parsers` (``profile`` / ``max_samples``).

Every error is a one-line ``ValueError`` that starts with the metric's name.
"""

from __future__ import annotations

import math
import weakref
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext

__all__ = [
    "prior_and_real_features",
    "no_options",
    "split_metric_options",
    "split_options",
    "DEFAULT_TRAIN_FRACTION",
    "FAST_MAX_SAMPLES",
    "PROFILES",
    "as_integer_factors",
    "check_codes",
    "check_codes_and_factors",
    "context_rows",
    "float_option",
    "int_option",
    "latent_only_parsers",
    "n_jobs_option",
    "optional_int_option",
    "prior_and_real_images",
    "prior_latent_dim",
    "profile_option",
    "read_options",
    "require_factors",
    "rows_for_profile",
    "sklearn_version",
    "train_rows",
    "varying_columns",
]

#: Leading fraction of the rows that trains the metrics with a train / test split
#: (``sap``, ``dci``, ``explicitness``): 2/3, so ``N = 15,000`` rows reproduce
#: disentanglement_lib's 10,000 training and 5,000 test samples.
DEFAULT_TRAIN_FRACTION = 2.0 / 3.0
#: Rows kept by the ``"fast"`` profile of the latent-only metrics (first rows).
FAST_MAX_SAMPLES = 5000
#: Names accepted by every metric's ``profile`` option.
PROFILES = ("reference", "fast")


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


def check_codes(
    latents: Any,
    metric: str,
    *,
    min_codes: int = 1,
    what: str = "latents",
    min_codes_reason: str | None = None,
) -> np.ndarray:
    """Validate a real ``(N, D)`` array of finite codes; return it as float64.

    ``min_codes_reason``, if given, is added in parentheses to the message for
    ``D < min_codes`` (e.g. why the metric needs two codes).
    """
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
        reason = f" ({min_codes_reason})" if min_codes_reason else ""
        raise ValueError(
            f"{metric}: need at least {min_codes} latent codes{reason}, got D={z.shape[1]}"
        )
    return z.astype(np.float64, copy=False)


def check_codes_and_factors(
    latents: Any,
    factors: Any,
    metric: str,
    *,
    min_codes: int = 1,
    min_codes_reason: str | None = None,
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
    z = check_codes(latents, metric, min_codes=min_codes, min_codes_reason=min_codes_reason)
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


def require_factors(ctx: EvaluationContext, metric: str) -> np.ndarray:
    """``ctx.factors`` as an array, or a ``ValueError`` for a dataset without factors."""
    if ctx.factors is None:
        raise ValueError(f"{metric}: needs ground-truth factors, but this dataset provides none")
    return np.asarray(ctx.factors)


def context_rows(
    ctx: EvaluationContext, metric: str, profile: str, max_samples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(means, factors)`` of the context, checked to match, cut to the profile's rows."""
    factors = require_factors(ctx, metric)
    means = np.asarray(ctx.means)
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


def no_options(metric: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The option checker (``MetricSpec.options``) of a metric that takes none: any is unknown."""
    return read_options(metric, options, {}, {})


def split_metric_options(
    ctx: EvaluationContext,
    metric: str,
    extra_parsers: Mapping[str, Callable[[str, str, Any], Any]] | None = None,
    extra_defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`split_options` of ``ctx.options_for(metric)``, ``train_fraction`` defaulting to
    ``ctx.train_fraction``."""
    return split_options(metric, ctx.options_for(metric), extra_parsers, extra_defaults, ctx.train_fraction)


def split_options(
    metric: str,
    options: Mapping[str, Any],
    extra_parsers: Mapping[str, Callable[[str, str, Any], Any]] | None = None,
    extra_defaults: Mapping[str, Any] | None = None,
    train_fraction: float | None = None,
) -> dict[str, Any]:
    """Options of a metric that fits classifiers on a train split (SAP, DCI, explicitness):
    ``train_fraction`` (default ``train_fraction`` or 2/3), ``n_jobs`` (-1), ``profile``
    and ``max_samples``, plus the metric's own ``extra_parsers`` / ``extra_defaults``.
    Also the option checker (``MetricSpec.options``) of SAP and explicitness."""
    parsers = {
        "train_fraction": partial(float_option, low=0.0, high=1.0, low_open=True, high_open=True),
        "n_jobs": n_jobs_option,
        **latent_only_parsers(metric),
        **(extra_parsers or {}),
    }
    defaults = {
        "train_fraction": train_fraction or DEFAULT_TRAIN_FRACTION,
        "n_jobs": -1,
        "profile": "reference",
        **(extra_defaults or {}),
    }
    return read_options(metric, options, parsers, defaults)


#: Latents decoded at once by :func:`prior_and_real_images`.
_DECODE_BATCH = 500


def prior_latent_dim(ctx: EvaluationContext, metric: str) -> int:
    """The latent size ``D`` of the model behind a generator context (checks ``decode`` / ``dataset``)."""
    if ctx.decode is None or ctx.dataset is None:
        raise ValueError(f"{metric}: needs a decoder and the dataset ('generator'), but the context has none")
    means = np.asarray(ctx.means)
    if means.ndim != 2 or means.shape[1] < 1:
        raise ValueError(f"{metric}: cannot tell the latent size from means of shape {means.shape}")
    return int(means.shape[1])


def prior_and_real_images(ctx: EvaluationContext, metric: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(generated, real)``: ``n`` images ``(n, H, W, C)`` in [0, 1] each.

    Generated: ``z ~ N(0, I_D)`` decoded by ``ctx.decode`` (the decoder's Bernoulli
    means, not binarised); real: ``ctx.dataset.sample`` (independent uniform
    factors). Both from ``np.random.SeedSequence(ctx.seed)``, one child stream each,
    so every metric of one run sees the same samples.
    """
    latent_dim = prior_latent_dim(ctx, metric)
    prior_seq, real_seq = np.random.SeedSequence(int(ctx.seed)).spawn(2)
    z = np.random.default_rng(prior_seq).standard_normal((n, latent_dim)).astype(np.float32)
    generated = np.concatenate(
        [np.asarray(ctx.decode(z[i : i + _DECODE_BATCH])) for i in range(0, n, _DECODE_BATCH)]
    )
    real, _ = ctx.dataset.sample(n, np.random.default_rng(real_seq))
    real = np.asarray(real)
    for what, x in (("decoded samples", generated), ("real images", real)):
        if x.ndim != 4 or x.shape[0] != n:
            raise ValueError(f"{metric}: {what} must have shape ({n}, H, W, C), got {x.shape}")
        if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(f"{metric}: {what} must be finite and lie in [0, 1]")
    return generated, real


#: The features of the last evaluation context, per (sample size, seed, network): the
#: Fréchet distance and KID of one network (fd_domain / kd_domain, fid_inception /
#: kid_inception) then decode and extract once per model.
_FEATURE_MEMO: dict[str, Any] = {}


def prior_and_real_features(
    ctx: EvaluationContext, metric: str, n: int, net: Any,
    check_generated: Callable[[np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(real features, generated features, latent size)`` of :func:`prior_and_real_images`
    through ``net`` (``net.features(images) -> (n, F)``, ``net.sha256`` its identity).

    ``check_generated`` may reject decoded samples the network cannot take. Memoised for
    the current context, so two metrics of one network share the work.
    """
    latent_dim = prior_latent_dim(ctx, metric)
    key = (n, int(ctx.seed), latent_dim, id(ctx.decode), id(ctx.dataset), net.sha256)
    ref = _FEATURE_MEMO.get("ctx")
    if ref is None or ref() is not ctx:
        _FEATURE_MEMO.clear()
        _FEATURE_MEMO.update(ctx=weakref.ref(ctx), values={})
    values = _FEATURE_MEMO["values"]
    if key not in values:
        generated, real = prior_and_real_images(ctx, metric, n)
        if check_generated is not None:
            check_generated(generated)
        values[key] = (net.features(real), net.features(generated))
    real_f, gen_f = values[key]
    return real_f, gen_f, latent_dim
