"""Mean absolute correlation between the posterior means' dimensions."""

import numpy as np

from vaebench.plugin import EvaluationContext, MetricResult


def compute(ctx: EvaluationContext) -> MetricResult:
    """``ctx.means`` ``(N, D)`` -> ``plugin_example_correlation`` (mean |r| over pairs of dimensions, 0 when
    fewer than two vary) and ``plugin_example_correlation.max`` (the largest |r|)."""
    means = np.asarray(ctx.means, dtype=np.float64)
    varying = means.std(axis=0) > 1e-8
    if varying.sum() < 2:
        return MetricResult({"plugin_example_correlation": 0.0, "plugin_example_correlation.max": 0.0}, {"varying": int(varying.sum())})
    r = np.abs(np.corrcoef(means[:, varying], rowvar=False))
    off = r[~np.eye(len(r), dtype=bool)]
    return MetricResult({"plugin_example_correlation": float(off.mean()), "plugin_example_correlation.max": float(off.max())},
                        {"varying": int(varying.sum()), "n": len(means)})
