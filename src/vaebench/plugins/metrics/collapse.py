"""Posterior collapse as a 0/1 metric (``posterior_collapsed``).

A run is flagged (1.0) when its held-out posterior has no active dimension
(Var_x E[z_d|x] > 0.01, the ``active_dims`` definition, Burda et al. 2016) or a
total KL below 0.01 nats per image (the ``kl`` definition): the encoder ignores
its input. The thresholds and the two numbers behind the flag are recorded in
``params``. The check itself is :func:`vaebench.plugins.models.diagnostics.posterior_collapse`
(numpy, shared by every backend).

For a model without a Gaussian posterior (VQ-VAE: log-variances 0, the means are
the pre-quantisation encoding) the KL clause is not a KL; the active-dimension
clause still flags an encoder whose output does not vary.

Very short runs are flagged too (after a few dozen steps no dimension is active
yet); read the flag together with ``steps``.
"""

from __future__ import annotations

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.models.diagnostics import ACTIVE_THRESHOLD, COLLAPSED_KL, posterior_collapse
from vaebench.plugins.specs import MetricResult


def compute(ctx: EvaluationContext) -> MetricResult:
    collapsed, active, kl = posterior_collapse(ctx.means, ctx.logvars)
    return MetricResult(
        {"posterior_collapsed": float(collapsed)},
        {
            "active_dims": active, "kl": kl, "active_threshold": ACTIVE_THRESHOLD, "kl_threshold": COLLAPSED_KL,
            "definition": "1 when no dimension has Var_x E[z_d|x] > 0.01 or total KL < 0.01 nats",
            "n": int(len(ctx.means)),
        },
    )
