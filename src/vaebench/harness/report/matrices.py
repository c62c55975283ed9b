"""The data behind the report's "what the metrics see" figures, read from the records (never
recomputed): per run and averaged per configuration the MI matrix MIG computed, DCI's
importance matrix, MIG's per-factor gaps and the KL per latent dimension; and the Spearman
correlation between metrics across the selection (Locatello et al. 2019, arXiv:1811.12359,
the figure comparing metrics).

Sources in a record:

- ``metric_params["mig"]``: ``mi_matrix`` (``D x K`` nested list, nats), ``factor_names``
  (its columns), ``factor_entropy`` (``K`` nats); the gaps are the record's metrics
  ``mig.gap.<factor>`` (a constant factor has none);
- ``metric_params["dci"]`` (else ``["dci_fast"]``): ``importance_matrix`` (``D x K'``) over
  ``factor_names`` (the ``K'`` factors that varied on its training rows);
- the KL per latent dimension over training: the record's ``signals`` named
  ``kl.dim<d>`` (:data:`KL_DIM_SIGNAL`, nats per image, one per history point), where the model
  reported them; else the final ``kl_per_dim`` column (one value per dimension, nats).

``metric_params`` is JSON text and read with :func:`json.loads` only; an entry that is not the
expected shape is left out (with a reason), never guessed at.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaebench.plugins.backends import loop

__all__ = ["KL_DIM_SIGNAL", "Correlation", "Explained", "explain_configs", "explain_run", "metric_correlation"]

#: Signal names carrying the KL of one latent dimension: ``kl.dim0``, ``kl.dim1``, ...
#: (the training loop's :data:`~vaebench.plugins.backends.loop.KL_DIM_SIGNAL`)
KL_DIM_SIGNAL = re.compile(re.escape(loop.KL_DIM_SIGNAL).replace(r"\{\}", r"(\d+)"))
#: DCI variants, preferred first: the reference one, else the fast proxy.
DCI_KEYS = ("dci", "dci_fast")


@dataclass
class Explained:
    """What explains one run's (or one configuration's mean) disentanglement scores.

    Every matrix is ``codes x factors`` (row ``d``: latent dimension ``z<d>``); ``None``:
    not recorded. ``n``: how many runs were averaged (1 for a run)."""

    label: str
    n: int = 1
    mi: list[list[float]] | None = None
    mi_factors: list[str] = field(default_factory=list)
    factor_entropy: list[float] | None = None
    #: factor -> MIG gap (``(I(z_(1); v) - I(z_(2); v)) / H(v)``), in ``mi_factors`` order
    gaps: dict[str, float] = field(default_factory=dict)
    importance: list[list[float]] | None = None
    importance_factors: list[str] = field(default_factory=list)
    #: ``dci`` or ``dci_fast``: which metric's importance matrix
    importance_metric: str | None = None
    #: KL over training: ``steps`` and per dimension its values at those steps (nats)
    kl_steps: list[int] = field(default_factory=list)
    kl_over_training: list[list[float]] | None = None
    #: the final KL per dimension (nats), when no per-step values were recorded
    kl_final: list[float] | None = None

    @property
    def empty(self) -> bool:
        return self.mi is None and self.importance is None and not self.gaps and \
            self.kl_over_training is None and self.kl_final is None

    def to_dict(self) -> dict[str, Any]:
        """The figure's data as JSON (``matrices.json`` beside it)."""
        return {"label": self.label, "n": self.n,
                "mig": None if self.mi is None else {"mi_matrix": self.mi, "factor_names": self.mi_factors,
                                                     "factor_entropy": self.factor_entropy, "gaps": self.gaps},
                "dci": None if self.importance is None else {"metric": self.importance_metric,
                                                             "importance_matrix": self.importance,
                                                             "factor_names": self.importance_factors},
                "kl_per_dim": {"steps": self.kl_steps, "over_training": self.kl_over_training,
                               "final": self.kl_final}}


def params_of(run: Mapping[str, Any]) -> dict[str, Any]:
    """The record's ``metric_params`` as a dict (``{}`` when unset or not a JSON object)."""
    text = run.get("metric_params")
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _matrix(value: Any, columns: int) -> list[list[float]] | None:
    """``value`` as a rectangular ``rows x columns`` list of finite floats, else ``None``."""
    if not isinstance(value, list) or not value:
        return None
    try:
        rows = [[float(x) for x in row] for row in value]
    except (TypeError, ValueError):
        return None
    if any(len(row) != columns for row in rows) or not all(math.isfinite(x) for row in rows for x in row):
        return None
    return rows


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def explain_run(run: Mapping[str, Any], label: str) -> Explained:
    """:class:`Explained` of one record (a dict as ``selection.fetch_runs`` returns, with
    ``metric_params``, ``metrics``, ``signals`` and ``kl_per_dim``)."""
    params = params_of(run)
    out = Explained(label=label)
    mig = params.get("mig")
    if isinstance(mig, dict):
        factors = _names(mig.get("factor_names"))
        out.mi = _matrix(mig.get("mi_matrix"), len(factors)) if factors else None
        if out.mi is not None:
            out.mi_factors = factors
            entropy = mig.get("factor_entropy")
            out.factor_entropy = [float(h) for h in entropy] if isinstance(entropy, list) else None
    metrics = run.get("metrics") or {}
    names = out.mi_factors or sorted(k[len("mig.gap."):] for k in metrics if k.startswith("mig.gap."))
    out.gaps = {f: float(metrics[f"mig.gap.{f}"]) for f in names if f"mig.gap.{f}" in metrics}
    for key in DCI_KEYS:
        dci = params.get(key)
        if isinstance(dci, dict):
            factors = _names(dci.get("factor_names"))
            matrix = _matrix(dci.get("importance_matrix"), len(factors)) if factors else None
            if matrix is not None:
                out.importance, out.importance_factors, out.importance_metric = matrix, factors, key
                break
    by_dim: dict[int, dict[int, float]] = {}
    for s in run.get("signals") or []:
        m = KL_DIM_SIGNAL.fullmatch(str(s.get("name")))
        if m and s.get("value") is not None:
            by_dim.setdefault(int(m.group(1)), {})[int(s["step"])] = float(s["value"])
    if by_dim:
        steps = sorted({st for values in by_dim.values() for st in values})
        dims = range(max(by_dim) + 1)
        out.kl_steps = steps
        out.kl_over_training = [[by_dim.get(d, {}).get(st, math.nan) for st in steps] for d in dims]
    final = run.get("kl_per_dim")
    if final:
        out.kl_final = [float(x) for x in final]
    return out


def _mean(matrices: Sequence[list[list[float]]]) -> list[list[float]]:
    return [[math.fsum(m[i][j] for m in matrices) / len(matrices) for j in range(len(matrices[0][0]))]
            for i in range(len(matrices[0]))]


def average(items: Sequence[Explained], label: str) -> Explained:
    """The element-wise mean of ``items`` (one configuration's seeds). A matrix is averaged
    over the runs that have it with the first one's shape and factor names (others are left
    out of that mean); ``n`` is the number of runs with an MI matrix, else of ``items``."""
    out = Explained(label=label, n=len(items))
    mi = [e for e in items if e.mi is not None]
    if mi:
        same = [e for e in mi if e.mi_factors == mi[0].mi_factors and len(e.mi) == len(mi[0].mi)]
        out.mi, out.mi_factors, out.n = _mean([e.mi for e in same]), mi[0].mi_factors, len(same)
        ent = [e.factor_entropy for e in same if e.factor_entropy is not None]
        out.factor_entropy = [math.fsum(col) / len(ent) for col in zip(*ent)] if ent else None
    gap_names = list(dict.fromkeys(f for e in items for f in e.gaps))
    out.gaps = {f: math.fsum(e.gaps[f] for e in items if f in e.gaps) / sum(f in e.gaps for e in items)
                for f in gap_names}
    imp = [e for e in items if e.importance is not None]
    if imp:
        same = [e for e in imp if e.importance_factors == imp[0].importance_factors
                and len(e.importance) == len(imp[0].importance) and e.importance_metric == imp[0].importance_metric]
        out.importance, out.importance_factors = _mean([e.importance for e in same]), imp[0].importance_factors
        out.importance_metric = imp[0].importance_metric
    kl = [e for e in items if e.kl_over_training is not None]
    if kl and all(e.kl_steps == kl[0].kl_steps and len(e.kl_over_training) == len(kl[0].kl_over_training) for e in kl):
        out.kl_steps, out.kl_over_training = kl[0].kl_steps, _mean([e.kl_over_training for e in kl])
    final = [e.kl_final for e in items if e.kl_final is not None]
    if final and all(len(f) == len(final[0]) for f in final):
        out.kl_final = [math.fsum(col) / len(final) for col in zip(*final)]
    return out


def explain_configs(runs: Sequence[Mapping[str, Any]], label: Any) -> list[tuple[str, Explained]]:
    """``[(config_id, mean Explained)]`` over the ok runs of each configuration with something
    to show, in ``runs``' order; ``label(run)`` names a configuration by its first run."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        if r.get("status") == "ok":
            groups.setdefault(str(r["config_id"]), []).append(r)
    out = []
    for config, members in groups.items():
        mean = average([explain_run(r, "") for r in members], f"{label(members[0])} · config {config}")
        if not mean.empty:
            out.append((config, mean))
    return out


@dataclass
class Correlation:
    """Spearman's rank correlation between metrics over the selected ok runs.

    ``rho[i][j]``: between ``metrics[i]`` and ``metrics[j]`` over the runs with both finite
    (``n[i][j]`` of them; ``None`` where fewer than 3 or either is constant there);
    ``left_out``: metric -> why it is not in the panel."""

    metrics: list[str]
    rho: list[list[float | None]]
    n: list[list[int]]
    left_out: dict[str, str]


def metric_correlation(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> Correlation:
    """:class:`Correlation` of ``metrics`` (headline metrics) over the ok runs of ``runs``,
    ``scipy.stats.spearmanr`` per pair. A metric with finite values in fewer than 3 runs, or
    the same value in all of them, is left out (and said why)."""
    from scipy.stats import spearmanr

    ok = [r for r in runs if r.get("status") == "ok"]

    def value(r: Mapping[str, Any], m: str) -> float | None:
        v = (r.get("metrics") or {}).get(m)
        return float(v) if v is not None and math.isfinite(v) else None

    kept, left_out = [], {}
    for m in metrics:
        values = [v for r in ok if (v := value(r, m)) is not None]
        if len(values) < 3:
            left_out[m] = f"{len(values)} run{'s' if len(values) != 1 else ''} with a value (3 needed)"
        elif len(set(values)) == 1:
            left_out[m] = f"the same value in all {len(values)} runs"
        else:
            kept.append(m)
    rho: list[list[float | None]] = [[None] * len(kept) for _ in kept]
    n = [[0] * len(kept) for _ in kept]
    for i, a in enumerate(kept):
        for j, b in enumerate(kept):
            pairs = [(x, y) for r in ok if (x := value(r, a)) is not None and (y := value(r, b)) is not None]
            n[i][j] = len(pairs)
            xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
            if len(pairs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
                rho[i][j] = float(spearmanr(xs, ys).statistic)
    return Correlation(metrics=kept, rho=rho, n=n, left_out=left_out)
