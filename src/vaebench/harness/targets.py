"""Targets: fail CI when a model misses its numbers (``vaebench check``).

A targets file is TOML with one ``[[target]]`` table per target::

    [[target]]
    name = "beta4 MIG"                 # optional
    select = { model = "beta_vae", beta = 4, dataset = "dsprites" }
    metric = "mig"
    aggregate = "mean"                 # or "median" (over seeds)
    min_runs = 3                       # default 1
    threshold = 0.3                    # absolute; mig is higher-is-better: passes when value >= 0.3
    max_regression = "5%"              # or an absolute number (0.02); needs --baseline
    alpha = 0.05                       # optional, the significance level

For each target the *current* runs are those matching ``select`` AND
``--runs``, the *baseline* runs those matching ``select`` AND ``--baseline``
(in ``--baseline-registry`` when given: a run id is a hash of the run's spec,
so re-running the same grid with new code replaces the old records; keep the
reference results in a registry of their own to compare like with like).
Current and baseline runs of one registry must not overlap.
Only ``status = 'ok'`` runs are aggregated; diverged and failed ones are
counted and shown.

Threshold: the direction comes from the metric plugin (``MetricSpec.direction``):
``higher`` passes when ``value >= threshold``, ``lower`` when ``value <=
threshold``; a metric with direction ``none`` cannot have a threshold (or a
max_regression): that is a usage error.

Regression: the worsening ``baseline − current`` (higher is better) or
``current − baseline`` (lower is better), of the aggregated values, counts only
when it exceeds ``max_regression`` (``"5%"``: 5 % of |baseline|) **and** is
significant across seeds by **Welch's t-test** (unequal variances,
``scipy.stats.ttest_ind(current, baseline, equal_var=False)``), one-sided in the
worse direction, at ``alpha`` (default 0.05). Exceeding without significance
gives the verdict ``"changed, not significant"``. Two sides whose values are
all identical have no variance: the difference then counts as significant.

Verdicts: ``"pass"``, ``"fail"``, ``"changed, not significant"`` and
``"error: ..."`` for missing data (fewer than ``min_runs`` ok runs with the
metric, an ok run without the metric, fewer than 2 runs on a side of the
t-test, current and baseline runs that overlap) and for *incomparable* runs (current and baseline ok runs together
span more than one dataset / dataset_variant / dataset_digest, or more than one
set of the metric's estimator settings, see :data:`ESTIMATOR_KEYS`).

Exit status of ``vaebench check`` (:func:`exit_code`): 0 when every target is
``pass`` or ``changed, not significant``; 1 when any is ``fail`` **or**
``error: ...`` (missing or incomparable data is not a pass: a gate that cannot
be evaluated must not go green); 2 for usage errors (bad TOML, unknown key or
metric, unknown select key, a threshold on a direction-``none`` metric), raised
here as :class:`TargetsError`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vaebench.plugins.manager import direction_of, metric_directions
from vaebench.registry.selection import Selection, check_prefixes, fetch_runs

__all__ = [
    "ALPHA",
    "ESTIMATOR_KEYS",
    "PASSING",
    "TEST_NAME",
    "Regression",
    "Target",
    "TargetResult",
    "TargetsError",
    "check_targets",
    "describe",
    "exit_code",
    "load_targets",
    "parse_targets",
    "tier",
    "welch_worse_p",
]

ALPHA = 0.05
TEST_NAME = "Welch's t-test (unequal variances), one-sided toward worse"
#: Verdicts that do not fail ``vaebench check``.
PASSING = ("pass", "changed, not significant")

TARGET_KEYS = ("name", "select", "metric", "aggregate", "min_runs", "threshold", "max_regression", "alpha")
AGGREGATES = ("mean", "median")

#: Scalar entries of a metric's recorded params (``metric_params[<metric>]``) that
#: define its estimator; runs whose values differ are incomparable. Per-run
#: outputs (matrices, seeds, convergence counts, library versions) are not compared;
#: neither are runs whose record lacks the metric's params. The evaluation set
#: (``metric_params["_eval"]``: n, eval_seed) is compared too.
ESTIMATOR_KEYS: tuple[str, ...] = (
    "version", "estimator", "variant", "profile", "definition", "decoded_from",
    "n", "n_train", "n_test", "train_fraction", "max_train", "max_samples", "bins", "threshold",
    "diff_quantile", "percentile_method", "num_train", "num_eval", "num_variance_estimate",
    "batch_size", "prune_rule", "prune_threshold", "classifier", "class_weight", "max_iter",
    "continuous_score", "standardise", "epsilon",
)

def tier(metric: str, value: float | None, tiers: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """The best tier ``value`` of ``metric`` reaches (``"excellent"``, ``"good"``), or None.

    Tiers come from the metric plugin (``MetricSpec.tiers``, best first) unless
    ``tiers`` maps metric -> ``{"direction": ..., "tiers": {name: bound}}``. None for a
    metric without tiers and for a missing or non-finite value.
    """
    if tiers is not None:
        spec = tiers.get(metric)
    else:
        from vaebench.plugins.manager import get_manager

        plugin = get_manager().specs["metrics"].get(metric)
        spec = {"direction": plugin.direction, "tiers": dict(plugin.tiers)} if plugin and plugin.tiers else None
    if spec is None or value is None or not math.isfinite(value):
        return None
    higher = spec.get("direction", "higher") == "higher"
    for name, bound in spec["tiers"].items():
        if (value > bound) if higher else (value < bound):
            return name
    return None


class TargetsError(ValueError):
    """A usage error in a targets file (one line); ``vaebench check`` exits 2."""


@dataclass(frozen=True)
class Regression:
    """A maximum regression: ``amount`` (absolute) or ``amount`` x |baseline| (``relative``)."""

    amount: float
    relative: bool
    text: str

    def allowed(self, baseline: float) -> float:
        return self.amount * abs(baseline) if self.relative else self.amount


def parse_regression(value: Any, where: str = "max_regression") -> Regression:
    """``"5%"`` -> 5 % of the baseline; ``0.02`` / ``"0.02"`` -> absolute."""
    text = str(value).strip()
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str) and text.endswith("%"):
            amount, relative = float(text[:-1]) / 100.0, True
        else:
            amount, relative = float(value), False
    except (TypeError, ValueError):
        raise TargetsError(f"{where}: expected a percentage like \"5%\" or a number, not {value!r}") from None
    if not math.isfinite(amount) or amount < 0:
        raise TargetsError(f"{where}: must be a finite number >= 0, not {value!r}")
    return Regression(amount, relative, text)


@dataclass(frozen=True)
class Target:
    name: str
    metric: str
    select: Selection
    direction: str
    aggregate: str = "mean"
    min_runs: int = 1
    threshold: float | None = None
    max_regression: Regression | None = None
    alpha: float = ALPHA


@dataclass
class TargetResult:
    """One target's outcome; :meth:`to_dict` is the ``--json`` row."""

    name: str
    metric: str
    direction: str
    aggregate: str
    verdict: str
    value: float | None = None
    n: int = 0
    n_diverged: int = 0
    n_failed: int = 0
    threshold: float | None = None
    max_regression: str | None = None
    baseline: float | None = None
    baseline_n: int | None = None
    regression: float | None = None
    regression_relative: float | None = None
    p_value: float | None = None
    test: str | None = None
    detail: str = ""
    tier: str | None = None
    run_ids: list[str] = field(default_factory=list)
    baseline_run_ids: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict in PASSING

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- loading


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TargetsError(f"{where}: expected a finite number, not {value!r}")
    return float(value)


def parse_targets(
    data: Mapping[str, Any],
    directions: Mapping[str, str] | None = None,
    source: str = "targets",
    baseline: bool = True,
) -> list[Target]:
    """Targets from a parsed TOML document; :class:`TargetsError` (one line) when bad.

    ``directions`` maps metric name -> direction (default: the installed metric
    plugins); a key like ``mig.gap.posX`` takes its head's direction.
    ``baseline`` says whether a baseline selection will be given: a target
    whose only check is ``max_regression`` is a usage error without one.
    """
    if directions is None:
        directions = metric_directions()
    extra = sorted(set(data) - {"target"})
    if extra:
        raise TargetsError(f"{source}: unknown top-level key {extra[0]!r} (expected [[target]] tables)")
    items = data.get("target")
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list) or not items:
        raise TargetsError(f"{source}: no [[target]] tables")
    targets: list[Target] = []
    for i, item in enumerate(items, 1):
        where = f"{source}: target {i}"
        if not isinstance(item, Mapping):
            raise TargetsError(f"{where}: expected a table")
        if isinstance(item.get("name"), str) and item["name"].strip():
            where = f"{source}: target {item['name']!r}"
        unknown = sorted(set(item) - set(TARGET_KEYS))
        if unknown:
            raise TargetsError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(TARGET_KEYS)})")
        metric = item.get("metric")
        if not isinstance(metric, str) or not metric.strip():
            raise TargetsError(f"{where}: 'metric' is required (a metric key, e.g. \"mig\")")
        metric = metric.strip()
        direction = direction_of(metric, directions)
        if direction is None:
            raise TargetsError(f"{where}: unknown metric {metric!r} (known: {', '.join(sorted(directions))})")
        if "select" not in item:
            raise TargetsError(f"{where}: 'select' is required, e.g. select = {{ model = \"beta_vae\", beta = 4 }}")
        try:
            select = Selection.from_mapping(item["select"])
        except ValueError as exc:
            raise TargetsError(f"{where}: select: {exc}") from None
        aggregate = item.get("aggregate", "mean")
        if aggregate not in AGGREGATES:
            raise TargetsError(f"{where}: aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
        min_runs = item.get("min_runs", 1)
        if isinstance(min_runs, bool) or not isinstance(min_runs, int) or min_runs < 1:
            raise TargetsError(f"{where}: min_runs must be an integer >= 1, not {min_runs!r}")
        threshold = _number(item["threshold"], f"{where}: threshold") if "threshold" in item else None
        regression = parse_regression(item["max_regression"], f"{where}: max_regression") if "max_regression" in item else None
        alpha = _number(item.get("alpha", ALPHA), f"{where}: alpha")
        if not 0 < alpha < 1:
            raise TargetsError(f"{where}: alpha must be in (0, 1), not {alpha!r}")
        if threshold is None and regression is None:
            raise TargetsError(f"{where}: give a threshold, a max_regression or both")
        if direction not in ("higher", "lower"):
            raise TargetsError(
                f"{where}: metric {metric!r} has direction {direction!r} (neither higher nor lower is better), "
                "so it cannot have a threshold or a max_regression"
            )
        if threshold is None and not baseline:
            raise TargetsError(f"{where}: only a max_regression is set; pass --baseline SELECTION to check it")
        name = str(item.get("name") or f"{metric} [{select}]")
        targets.append(Target(name, metric, select, direction, aggregate, min_runs, threshold, regression, alpha))
    return targets


def load_targets(
    path: str | os.PathLike[str], directions: Mapping[str, str] | None = None, baseline: bool = True
) -> list[Target]:
    """Read and parse a targets TOML file; :class:`TargetsError` (one line) when bad."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TargetsError(f"targets file {path} not found") from None
    except OSError as exc:
        raise TargetsError(f"cannot read targets file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetsError(f"targets file {path} is not valid TOML: {exc}") from None
    return parse_targets(data, directions, source=str(path), baseline=baseline)


# --------------------------------------------------------------------------- checking


def welch_worse_p(current: Sequence[float], baseline: Sequence[float], direction: str) -> float:
    """One-sided Welch's t-test p-value for "current is worse than baseline".

    ``scipy.stats.ttest_ind(current, baseline, equal_var=False, alternative=...)``
    with ``alternative="less"`` when higher is better, ``"greater"`` when lower
    is better. Needs at least 2 values per side. When neither side varies the
    test is undefined; the p-value is then 0 for a difference in the worse
    direction and 1 otherwise.
    """
    if len(current) < 2 or len(baseline) < 2:
        raise ValueError("Welch's t-test needs at least 2 values per side")
    if statistics.pvariance(current) == 0 and statistics.pvariance(baseline) == 0:
        diff = statistics.fmean(current) - statistics.fmean(baseline)
        worse = diff < 0 if direction == "higher" else diff > 0
        return 0.0 if worse else 1.0
    from scipy import stats

    alternative = "less" if direction == "higher" else "greater"
    return float(stats.ttest_ind(current, baseline, equal_var=False, alternative=alternative).pvalue)


def _estimator(record: dict[str, Any], metric: str) -> str | None:
    """The estimator settings behind ``metric`` in one run, as canonical JSON (None: unknown)."""
    settings = estimator_settings(record, metric)
    return None if settings is None else json.dumps(settings, sort_keys=True)


def estimator_settings(record: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    """The estimator settings behind ``metric`` in one run (a record, or a row with its
    ``metric_params`` JSON): the :data:`ESTIMATOR_KEYS` scalars of ``metric_params[metric]``,
    plus ``"_eval"`` (the evaluation set: n, eval_seed); ``None`` where the run recorded none."""
    raw = record.get("metric_params")
    if not raw:
        return None
    try:
        params = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(params, dict):
        return None
    mine = params.get(metric.split(".", 1)[0])
    if not isinstance(mine, dict) or "error" in mine:
        return None
    settings = {k: mine[k] for k in ESTIMATOR_KEYS if isinstance(mine.get(k), (str, int, float, bool))}
    evaluation = params.get("_eval")
    if isinstance(evaluation, dict):
        settings["_eval"] = {k: v for k, v in sorted(evaluation.items()) if isinstance(v, (str, int, float, bool))}
    return settings


def _incomparable(runs: Sequence[dict[str, Any]], metric: str) -> str | None:
    """Why these ok runs cannot be aggregated/compared together, or None."""
    for column in ("dataset", "dataset_variant", "dataset_digest"):
        values = sorted({str(r[column]) for r in runs})
        if len(values) > 1:
            shown = ", ".join(v[:16] for v in values[:4]) + (", ..." if len(values) > 4 else "")
            return f"incomparable runs: {column} differs ({shown})"
    settings = {s for r in runs if (s := _estimator(r, metric)) is not None}
    if len(settings) > 1:
        first, second = sorted(settings)[:2]
        a, b = json.loads(first), json.loads(second)
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"incomparable runs: {metric.split('.', 1)[0]} estimator settings differ ({', '.join(keys)})"
    return None


def _aggregate(values: Sequence[float], how: str) -> float:
    return statistics.median(values) if how == "median" else statistics.fmean(values)


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _side(runs: Sequence[dict[str, Any]], target: Target, label: str) -> tuple[list[float], str | None]:
    """``(finite values of ok runs, error or None)``: missing metric / too few runs."""
    ok = [r for r in runs if r["status"] == "ok"]
    values = [float(r["metrics"][target.metric]) for r in ok if _finite(r["metrics"].get(target.metric))]
    missing = [r["run_id"] for r in ok if not _finite(r["metrics"].get(target.metric))]
    others = len(runs) - len(ok)
    note = f" (+{others} diverged/failed)" if others else ""
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        return values, f"{label}metric {target.metric!r} missing or not finite in {len(missing)} of {len(ok)} ok runs ({shown})"
    if len(values) < target.min_runs:
        return values, f"{label}{len(values)} ok run(s) with {target.metric!r}{note}, min_runs is {target.min_runs}"
    return values, None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def check_target(
    con: Any,
    target: Target,
    runs: Selection | None = None,
    baseline: Selection | None = None,
    baseline_con: Any = None,
) -> TargetResult:
    """Check one target on connection ``con`` (table ``runs``); see the module docstring.

    ``baseline_con``: where the baseline runs live when not in ``con`` (another
    registry, e.g. the main branch's results); the same run ids are expected
    there, so the overlap check is skipped.
    """
    current_sel = target.select & (runs or Selection())
    current = fetch_runs(con, current_sel)
    result = TargetResult(
        name=target.name, metric=target.metric, direction=target.direction, aggregate=target.aggregate,
        verdict="pass", threshold=target.threshold,
        max_regression=target.max_regression.text if target.max_regression else None,
        n_diverged=sum(r["status"] == "diverged" for r in current),
        n_failed=sum(r["status"] == "failed" for r in current),
        run_ids=[r["run_id"] for r in current if r["status"] == "ok"],
    )
    base: list[dict[str, Any]] = []
    check_regression = target.max_regression is not None and baseline is not None
    if check_regression:
        base = fetch_runs(baseline_con if baseline_con is not None else con, target.select & baseline)
        result.baseline_run_ids = [r["run_id"] for r in base if r["status"] == "ok"]

    shared = [] if baseline_con is not None else sorted({r["run_id"] for r in current} & {r["run_id"] for r in base})
    values, problem = _side(current, target, "")
    result.n = len(values)
    if values:
        result.value = _aggregate(values, target.aggregate)
        result.tier = tier(target.metric, result.value)
    reason = _incomparable([r for r in current + base if r["status"] == "ok"], target.metric)
    if reason is None:
        reason = problem
    if reason is None and shared:
        reason = (f"current and baseline runs overlap ({len(shared)} run(s), e.g. {shared[0]}); "
                  "narrow --runs or --baseline so they are disjoint")
    if reason is None and check_regression:
        base_values, reason = _side(base, target, "baseline: ")
        result.baseline_n = len(base_values)
        if base_values:
            result.baseline = _aggregate(base_values, target.aggregate)
        if reason is None and (len(values) < 2 or len(base_values) < 2):
            reason = (f"{TEST_NAME.split(' (')[0]} needs at least 2 runs per side "
                      f"(current {len(values)}, baseline {len(base_values)})")
    if reason is not None:
        result.verdict = f"error: {reason}"
        result.detail = reason
        return result

    assert result.value is not None
    higher = target.direction == "higher"
    details: list[str] = []
    failed = False
    if target.threshold is not None:
        ok = result.value >= target.threshold if higher else result.value <= target.threshold
        sign = ">=" if higher else "<="
        details.append(f"{target.aggregate} {_fmt(result.value)} {'' if ok else 'not '}{sign} {_fmt(target.threshold)}")
        failed |= not ok
    changed = False
    if check_regression:
        assert target.max_regression is not None and result.baseline is not None
        worse_by = (result.baseline - result.value) if higher else (result.value - result.baseline)
        allowed = target.max_regression.allowed(result.baseline)
        result.regression = worse_by
        result.regression_relative = worse_by / abs(result.baseline) if result.baseline else None
        result.p_value = welch_worse_p(
            values, [float(r["metrics"][target.metric]) for r in base if r["status"] == "ok"], target.direction
        )
        result.test = f"{TEST_NAME}, alpha={target.alpha:g}"
        rel = ""
        if result.regression_relative is not None:
            rel = f" ({abs(result.regression_relative):.1%})"
        text = (f"{'worse' if worse_by > 0 else 'better'} by {_fmt(abs(worse_by))}{rel} vs baseline {_fmt(result.baseline)}, "
                f"max {target.max_regression.text}, Welch p={result.p_value:.3g}")
        if worse_by > allowed:
            if result.p_value < target.alpha:
                failed = True
                text = "regressed: " + text
            else:
                changed = True
                text = "not significant: " + text
        details.append(text)
    elif target.max_regression is not None:
        details.append("max_regression not checked (no --baseline)")
    result.detail = "; ".join(details)
    result.verdict = "fail" if failed else ("changed, not significant" if changed else "pass")
    return result


def check_targets(
    con: Any,
    targets: Sequence[Target],
    runs: Selection | None = None,
    baseline: Selection | None = None,
    baseline_con: Any = None,
) -> list[TargetResult]:
    """Check every target; ``runs`` / ``baseline`` narrow the current / baseline runs.

    ``baseline_con`` holds the baseline runs when they live in another registry
    (``baseline`` then defaults to every run there). Raises ``ValueError`` (one
    line) when a bare run id prefix in ``runs`` or ``baseline`` matches no run
    or several.
    """
    if baseline_con is not None and baseline is None:
        baseline = Selection()
    if runs is not None:
        check_prefixes(con, runs)
    if baseline is not None:
        check_prefixes(baseline_con if baseline_con is not None else con, baseline)
    return [check_target(con, t, runs, baseline, baseline_con) for t in targets]


def describe(result: TargetResult) -> dict[str, str]:
    """Plain-text cells of one result, as ``vaebench check`` and ``vaebench report`` show them:
    ``value`` (aggregate and tier), ``reference`` (threshold and/or baseline), ``runs`` (n and
    diverged / failed counts), ``detail`` (empty for an error: the verdict says it)."""
    value = "-" if result.value is None else f"{result.value:.4g} ({result.aggregate})" + (f" {result.tier}" if result.tier else "")
    ref: list[str] = []
    if result.threshold is not None:
        ref.append(f"{'≥' if result.direction == 'higher' else '≤'} {result.threshold:g}")
    if result.baseline is not None:
        ref.append(f"base {result.baseline:.4g} (n={result.baseline_n}), at most {result.max_regression} worse")
    runs = str(result.n) + "".join(
        f", {c} {k}" for k, c in (("diverged", result.n_diverged), ("failed", result.n_failed)) if c
    )
    detail = "" if result.verdict.startswith("error") else result.detail
    return {"value": value, "reference": "; ".join(ref) or "-", "runs": runs, "detail": detail}


def exit_code(results: Sequence[TargetResult]) -> int:
    """0 when every verdict is ``pass`` / ``changed, not significant``, else 1 (fail or error)."""
    return 0 if all(r.passed for r in results) else 1
