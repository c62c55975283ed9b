"""Mean absolute correlation between active latent dimensions."""

import numpy as np

from vaebench.plugin import EvaluationContext, MetricResult


def latent_correlation(ctx: EvaluationContext) -> MetricResult:
    means = np.asarray(ctx.means, dtype=np.float64)
    active = means.var(axis=0) > 0.01
    if active.sum() < 2:
        return MetricResult({"latent_correlation": 0.0}, {"active": int(active.sum())})
    r = np.corrcoef(means[:, active], rowvar=False)
    off = r[~np.eye(len(r), dtype=bool)]
    return MetricResult({"latent_correlation": float(np.abs(off).mean())}, {"active": int(active.sum()), "n": len(means)})
