"""Checks on a trained model's held-out posterior, shared by every backend (numpy only).

Posterior collapse: the encoder ignores its input and q(z|x) ≈ p(z) for every
dimension. A run is flagged when its held-out posterior has no active dimension
(Var_x E[z_d|x] > 0.01, Burda et al. 2016: the ``active_dims`` metric's definition)
or a total KL below 0.01 nats per image (the ``kl`` metric's definition, summed
over dimensions). The ``posterior_collapsed`` metric
(``plugins/metrics/collapse.py``) records it for every run, whatever its backend;
:func:`posterior_collapse_note` gives the same finding as one line for a run's notes.
"""

from __future__ import annotations

import numpy as np

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
