"""Seed noise made visible: a bootstrap confidence interval of a config's mean over its seeds,
and how many seeds per config it takes to tell two configs apart.

Both are what ``vaebench leaderboard`` and the report print next to a mean (``--json`` carries
them). Seed variance dominates in this field (Locatello et al. 2019), so a mean without them
invites reading noise as a difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CONFIDENCE", "ALPHA", "POWER", "RANDOM_STATE", "SeedsNeeded", "bootstrap_ci", "seeds_needed"]

#: The confidence level of :func:`bootstrap_ci`.
CONFIDENCE = 0.95
#: The bootstrap's fixed random state: the same values give the same interval on every run.
RANDOM_STATE = 0
#: Resamples of the bootstrap (scipy's default).
RESAMPLES = 9999
#: The two-sided significance level and the power of :func:`seeds_needed`'s t-test.
ALPHA = 0.05
POWER = 0.8
#: :func:`seeds_needed` gives up above this many seeds per config (``None``: more than that).
MAX_SEEDS = 100_000


def bootstrap_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A ``confidence`` (default 95 %) bootstrap interval ``(low, high)`` of the mean of
    ``values`` (one per seed, the metric's own unit), from ``scipy.stats.bootstrap`` with the
    percentile method, :data:`RESAMPLES` resamples and the fixed :data:`RANDOM_STATE` over the
    sorted values (so the output is reproducible and does not depend on their order). ``None`` for fewer than two values (no spread to resample);
    ``(v, v)`` when every value is ``v`` (the resampled means do not vary).

    The percentile method, not scipy's default BCa: BCa's jackknife acceleration is undefined
    for two or three identical-ish seeds, where this field's configs often are.
    """
    # sorted: the interval is a function of the values, not of the order they were read in
    data = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if len(data) < 2:
        return None
    if max(data) == min(data):
        return (data[0], data[0])
    import numpy as np
    from scipy import stats

    res = stats.bootstrap((np.asarray(data),), np.mean, confidence_level=confidence, n_resamples=RESAMPLES,
                          method="percentile", random_state=np.random.default_rng(RANDOM_STATE))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


@dataclass(frozen=True)
class SeedsNeeded:
    """How many seeds per config a two-sample t-test needs to tell two configs apart.

    ``seeds``: per config (``None``: more than :data:`MAX_SEEDS`, or the means are equal);
    ``effect``: Cohen's d, ``|mean_a - mean_b| / pooled sd`` (``None`` when undefined or
    infinite); ``why``: one line when ``seeds`` is ``None`` or ``effect`` is.
    """

    seeds: int | None
    effect: float | None
    alpha: float = ALPHA
    power: float = POWER
    why: str = ""


def _power(n: int, effect: float, alpha: float) -> float:
    """Power of a two-sided two-sample t-test (``n`` per group, equal variances) at Cohen's d
    ``effect``: ``P(|T| > t_crit)`` with ``T`` noncentral t, ``df = 2n - 2``, noncentrality
    ``effect * sqrt(n / 2)``."""
    from scipy import stats

    df = 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n / 2)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(mean_a: float, sd_a: float, mean_b: float, sd_b: float,
                 alpha: float = ALPHA, power: float = POWER) -> SeedsNeeded:
    """Seeds per config for a two-sided two-sample t-test at level ``alpha`` (default 0.05) to
    detect the observed mean difference with probability ``power`` (default 0.8).

    Formula: Cohen's d = ``|mean_a - mean_b| / s``, ``s = sqrt((sd_a² + sd_b²) / 2)`` (the pooled
    sd of two equal-size groups; the sds are the observed sample sds over seeds). ``n`` is the
    smallest ``n >= 2`` whose power under the **noncentral t** distribution (df ``2n - 2``,
    noncentrality ``d * sqrt(n/2)``, :func:`_power`) reaches ``power``; the search starts
    from the normal approximation ``n ≈ 2 (z_{1-α/2} + z_{power})² / d²`` (which is a lower
    bound: the t-test needs at least that many). d = 0.5 gives 64, d = 1 gives 17
    (Cohen's tables). Equal means: ``None`` (no number of seeds tells them apart); both sds 0
    and different means: 2.
    """
    from scipy import stats

    values = (mean_a, sd_a, mean_b, sd_b)
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return SeedsNeeded(None, None, alpha, power, "a mean or sd is missing (a config with fewer than 2 seeds)")
    diff = abs(float(mean_a) - float(mean_b))
    pooled = math.sqrt((float(sd_a) ** 2 + float(sd_b) ** 2) / 2)
    if diff == 0:
        return SeedsNeeded(None, 0.0, alpha, power, "the means are equal")
    if pooled == 0:  # no seed noise at all: the fewest seeds a t-test takes (d is infinite: None, JSON-safe)
        return SeedsNeeded(2, None, alpha, power, "the seeds' values do not vary")
    effect = diff / pooled
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil(2 * z * z / (effect * effect)))
    if n > MAX_SEEDS:
        return SeedsNeeded(None, effect, alpha, power, f"more than {MAX_SEEDS} seeds per config")
    while _power(n, effect, alpha) < power:
        n += 1
        if n > MAX_SEEDS:
            return SeedsNeeded(None, effect, alpha, power, f"more than {MAX_SEEDS} seeds per config")
    return SeedsNeeded(n, effect, alpha, power)
