"""Summaries of the posterior and the likelihood: reconstruction, KL, active dimensions.

All are computed on the held-out evaluation set the runner encodes (default
10,000 observations), with the reductions of ``plugins/objectives.py``: nats per
image, KL summed over latent dimensions.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Mapping

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import float_option, read_options
from vaebench.plugins.specs import MetricResult

#: Burda et al. 2016 (Importance Weighted Autoencoders, §5.2): a unit is active
#: when the variance over the data of its posterior mean exceeds 0.01.
ACTIVE_THRESHOLD = 0.01


def kl_per_dim(means: np.ndarray, logvars: np.ndarray) -> np.ndarray:
    """Mean over examples of KL(q(z_d|x) || N(0, 1)), ``(D,)`` nats."""
    m = means.astype(np.float64)
    lv = logvars.astype(np.float64)
    return (0.5 * (m**2 + np.exp(lv) - lv - 1.0)).mean(axis=0)


def reconstruction(ctx: EvaluationContext) -> MetricResult:
    """Mean per-image reconstruction NLL (Bernoulli, decoded from the posterior mean)."""
    errors = np.asarray(ctx.recon_errors, dtype=np.float64)
    return MetricResult({"reconstruction": float(errors.mean())}, {"n": int(errors.size), "decoded_from": "posterior mean"})


def kl(ctx: EvaluationContext) -> MetricResult:
    """Total KL (sum over dimensions) averaged over examples, in nats."""
    per_dim = kl_per_dim(ctx.means, ctx.logvars)
    return MetricResult({"kl": float(per_dim.sum()), "kl.max_dim": float(per_dim.max())}, {"n": int(len(ctx.means))})


def active_dims_options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``active_dims``'s options (``MetricSpec.options``): ``threshold`` (0.01, >= 0)."""
    parsers = {"threshold": partial(float_option, low=0.0, high=math.inf, high_open=True)}
    return read_options(metric, given, parsers, {"threshold": ACTIVE_THRESHOLD})


def active_dims(ctx: EvaluationContext) -> MetricResult:
    """Number of latent dimensions whose posterior mean varies (Cov_x E[z_d|x] > 0.01)."""
    threshold = active_dims_options("active_dims", ctx.options_for("active_dims"))["threshold"]
    variances = np.asarray(ctx.means, dtype=np.float64).var(axis=0)
    return MetricResult(
        {"active_dims": float((variances > threshold).sum())},
        {"n": int(len(ctx.means)), "threshold": threshold, "definition": "Var_x(E[z_d|x]) > threshold (Burda et al. 2016)"},
    )
