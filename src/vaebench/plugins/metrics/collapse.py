"""Posterior collapse as a 0/1 metric (``posterior_collapsed``).

A run is flagged (1.0) when its held-out posterior has no active dimension
(Var_x E[z_d|x] > 0.01, the ``active_dims`` definition, Burda et al. 2016) or a
total KL below 0.01 nats per image (the ``kl`` definition): the encoder ignores
its input. The thresholds and the two numbers behind the flag are recorded in
``params``. The check itself is :func:`posterior_collapse` (numpy, shared by every
backend); :func:`posterior_collapse_note` gives the same finding as one line for a run's
notes (the harness adds it to every run's record, whatever the metric selection).

For a model without a Gaussian posterior (VQ-VAE: log-variances 0, the means are
the pre-quantisation encoding) the KL clause is not a KL; the active-dimension
clause still flags an encoder whose output does not vary.

Very short runs are flagged too (after a few dozen steps no dimension is active
yet); read the flag together with ``steps``.
"""

from __future__ import annotations

import numpy as np

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.specs import MetricResult

#: Burda et al. 2016: a unit is active when Var_x(E[z_d|x]) exceeds this.
ACTIVE_THRESHOLD = 0.01
#: Total KL (nats per image) below which the posterior is taken as collapsed.
COLLAPSED_KL = 0.01


def posterior_collapse(means: np.ndarray, logvars: np.ndarray) -> tuple[bool, int, float]:
    """``(collapsed, active dimensions, total KL in nats)`` of a held-out posterior ``(N, D)``."""
    m = np.asarray(means, dtype=np.float64)
    lv = np.asarray(logvars, dtype=np.float64)
    active = int((m.var(axis=0) > ACTIVE_THRESHOLD).sum()) if len(m) else 0
    kl = float((0.5 * (m**2 + np.exp(lv) - lv - 1.0)).mean(axis=0).sum()) if len(m) else 0.0
    return (active == 0 or kl < COLLAPSED_KL), active, kl


def posterior_collapse_note(means: np.ndarray, logvars: np.ndarray) -> str | None:
    """One line for the run's record when the posterior collapsed, else ``None``."""
    collapsed, active, kl = posterior_collapse(means, logvars)
    if not collapsed:
        return None
    return f"posterior collapse: {active} active dimensions, KL {kl:.3g} nats on the held-out set"


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
