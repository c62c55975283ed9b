"""Compare two selections of runs: config side by side, metric means and B − A.

Metric means are over ``status = 'ok'`` runs with a finite value (as the
leaderboard does); ``n`` counts those runs. ``better`` reads the metric's
declared direction (``MetricSpec.direction``): ``"better"`` / ``"worse"`` /
``"same"``, or None for direction ``"none"`` or when either side has no value. A metric
whose plugin is not installed reads the direction its records carry. A ``reconstruction``
metric of runs with different model likelihoods is not compared (``delta`` None, ``note``
names the likelihoods): the negative log-likelihoods have different units. ``seeds_needed``:
the seeds per side a two-sample t-test (α 0.05, power 0.8) needs to tell the two means apart
at the observed seed sds (``seed_noise.seeds_needed``; None under 2 seeds a side or equal means).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from vaebench.harness.seed_noise import seeds_needed
from vaebench.registry.selection import Selection, check_prefixes, fetch_runs

__all__ = ["CONFIG_COLUMNS", "compare", "summarise_metric"]

#: Config rows of a comparison, in display order.
CONFIG_COLUMNS: tuple[str, ...] = (
    "model", "likelihood", "backend", "dataset", "dataset_variant", "dataset_digest", "architecture",
    "beta", "capacity", "gamma", "capacity_steps", "latent_dim", "steps", "batch_size", "lr",
    "device", "seed",
)


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summarise_metric(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of metric ``key`` over the ok runs (finite values only)."""
    values = _finite([r["metrics"].get(key) for r in runs if r["status"] == "ok"])
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def _distinct(runs: Sequence[dict[str, Any]], column: str) -> list[Any]:
    seen = {r[column] for r in runs if r[column] is not None}
    return sorted(seen, key=lambda v: (str(type(v)), v))


def _judge(delta: float | None, direction: str) -> str | None:
    if delta is None or direction not in ("higher", "lower"):
        return None
    if delta == 0:
        return "same"
    return "better" if (delta > 0) == (direction == "higher") else "worse"


def compare(
    con: Any,
    a: Selection,
    b: Selection,
    metrics: Sequence[str] | None = None,
    direction: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Compare the runs of selection ``a`` with those of ``b`` on connection ``con`` (table ``runs``).

    Returns ``{"a": side, "b": side, "config": [...], "metrics": [...]}``, where a
    side is ``{"selection", "run_ids", "n_ok", "n_diverged", "n_failed"}``, a config
    row ``{"column", "a", "b", "differs"}`` (values: the distinct values, one
    value unwrapped; columns unset on both sides are left out) and a metric row
    ``{"metric", "direction", "a": {mean, std, n}, "b": {...}, "delta", "better"}``
    with ``delta = mean(B) − mean(A)``. ``metrics`` limits the rows (default:
    every key an ok run has). Raises ``ValueError`` (one line) when a side
    matches no run or a bare run id prefix is ambiguous.
    """
    from vaebench.harness.metric_info import likelihood, metric_info

    sides: dict[str, list[dict[str, Any]]] = {}
    for label, sel in (("A", a), ("B", b)):
        check_prefixes(con, sel)
        sides[label] = fetch_runs(con, sel, extra=("metric_directions", "metric_categories"))
        if not sides[label]:
            raise ValueError(f"{label} ({sel}) matches no runs")
    runs_a, runs_b = sides["A"], sides["B"]
    info = metric_info(runs_a + runs_b)
    if direction is None:
        direction = info.direction

    def side(sel: Selection, runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "selection": str(sel),
            "run_ids": [r["run_id"] for r in runs],
            "n_ok": sum(r["status"] == "ok" for r in runs),
            "n_diverged": sum(r["status"] == "diverged" for r in runs),
            "n_failed": sum(r["status"] == "failed" for r in runs),
        }

    config = []
    for column in CONFIG_COLUMNS:
        va, vb = _distinct(runs_a, column), _distinct(runs_b, column)
        if not va and not vb:
            continue
        config.append({
            "column": column,
            "a": va[0] if len(va) == 1 else (va or None),
            "b": vb[0] if len(vb) == 1 else (vb or None),
            "differs": va != vb,
        })

    if metrics is None:
        keys = sorted({k for r in runs_a + runs_b if r["status"] == "ok" for k in r["metrics"]})
    else:
        keys = list(dict.fromkeys(metrics))
    rows = []
    for key in keys:
        sa, sb = summarise_metric(runs_a, key), summarise_metric(runs_b, key)
        delta = sb["mean"] - sa["mean"] if sa["mean"] is not None and sb["mean"] is not None else None
        d = direction(key)
        row = {"metric": key, "direction": d, "a": sa, "b": sb, "delta": delta, "better": _judge(delta, d),
               "seeds_needed": seeds_needed(sa["mean"], sa["std"], sb["mean"], sb["std"]).seeds}
        if info.category(key) == "reconstruction":
            kinds = sorted({likelihood(r) for r in runs_a + runs_b if r["status"] == "ok" and key in r["metrics"]})
            if len(kinds) > 1:
                row.update(delta=None, better=None,
                           note=f"not compared: likelihoods differ ({', '.join(kinds)}), the units differ")
        rows.append(row)
    return {"a": side(a, runs_a), "b": side(b, runs_b), "config": config, "metrics": rows}
