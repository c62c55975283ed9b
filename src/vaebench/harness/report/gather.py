"""The report's data: the selected runs, their headline metrics, the β trade-off series, the
leaderboard rows (``registry.query.rank``: ``vaebench leaderboard``'s numbers) and the
target verdicts, read once through a read-only connection."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaebench.harness.compare import CONFIG_COLUMNS, summarise_metric
from vaebench.registry.schema import DEFAULT_LIKELIHOOD
from vaebench.harness.metric_info import MetricInfo, metric_info
from vaebench.harness.output import fmt
from vaebench.registry import location
from vaebench.registry.selection import Selection, check_prefixes, fetch_runs, parse_selection

#: Record columns a report needs besides ``selection.RUN_COLUMNS``.
EXTRA_COLUMNS = ("spec_json", "error", "steps", "steps_done", "history", "artifacts", "metric_directions",
                 "metric_categories", "signals", "kl_per_dim")
#: The report's metric groups: ``MetricSpec.category`` -> title, in page order.
GROUP_TITLES = {"disentanglement": "Disentanglement", "reconstruction": "Reconstruction",
                "image_quality": "Image quality", "other": "Other"}
#: Leaderboard grouping columns shown (``config_id`` last); columns no row sets are dropped.
BOARD_COLUMNS = ("model", "dataset", "dataset_variant", "beta", "capacity", "gamma", "latent_dim", "config_id")
#: Spec fields that never separate two lines of the trade-off figure (a line is a config minus these).
LINE_IGNORES = ("seed", "beta", "dataset_path")
#: What a run id looks like; anything else is never used in a path.
RUN_ID = re.compile(r"[0-9a-f]{6,64}")


class ReportError(ValueError):
    """A usage problem (one line): no runs selected, an output path that is a file."""


@dataclass
class Gathered:
    """What the report shows, read from the registry before anything is written."""

    root: Path
    selection: Selection
    runs: list[dict[str, Any]]
    #: files left out as unreadable: ``(path, why)``
    skipped: list[tuple[Path, str]]
    #: ``(category, metric names)`` in :data:`GROUP_TITLES` order, empty groups left out
    groups: list[tuple[str, list[str]]]
    #: each metric's direction and category: its plugin's, else its records'
    info: MetricInfo
    #: the metric the leaderboard is ordered by (``None``: the runs have no metric)
    order: str | None
    board_columns: list[str]
    board: list[dict[str, Any]]
    #: ``targets.TargetResult`` verdicts; ``targets_file`` is ``None`` when no targets were given
    verdicts: list[Any] = field(default_factory=list)
    targets_file: str | None = None
    #: one line on the leaderboard's order (a reconstruction metric ranked within each likelihood), or ""
    board_note: str = ""
    #: the reference pack the ordering metric is set against (``--reference``), or ``None``
    reference: str | None = None
    #: ``harness.standings.top_two_seeds_needed`` of the ordering metric, or ``None``
    seeds_needed: dict[str, Any] | None = None

    @property
    def disentangle(self) -> list[str]:
        return [m for category, names in self.groups if category == "disentanglement" for m in names]

    @property
    def quality(self) -> list[str]:
        """Every headline metric that is not a disentanglement metric."""
        return [m for category, names in self.groups if category != "disentanglement" for m in names]

    @property
    def metrics(self) -> list[str]:
        return [m for _, names in self.groups for m in names]

    def direction(self, key: str) -> str:
        return self.info.direction(key)


def gather(
    registry: str | os.PathLike[str],
    selection: str | Mapping[str, Any] | Selection | None = None,
    targets: str | os.PathLike[str] | None = None,
    baseline: str | Mapping[str, Any] | Selection | None = None,
    metric: str | None = None,
    reference: str | None = None,
) -> Gathered:
    """Read what the report of ``selection`` shows (arguments as ``write_report``'s). Raises
    :class:`ReportError` / ``ValueError`` (no run selected, an ambiguous run id prefix, an
    unknown ``metric``), ``targets.TargetsError`` and ``store.RegistryError``, one line each."""
    from vaebench.harness import targets as tg
    from vaebench.harness.references import load_pack
    from vaebench.harness.standings import top_two_seeds_needed
    from vaebench.registry.readonly import open_readonly
    from vaebench.registry.store import RegistryError

    sel = parse_selection(selection)
    base_sel = parse_selection(baseline) if baseline is not None else None
    parsed = tg.load_targets(targets, baseline=base_sel is not None) if targets is not None else None
    pack = load_pack(reference) if reference is not None else None  # ReferenceError: a ValueError, one line
    root = registry if location.is_remote(registry) else location.local_path(registry)
    try:
        location.require(root)
    except location.LocationError as exc:
        raise RegistryError(str(exc)) from None
    con, skipped = open_readonly(root)
    try:
        check_prefixes(con, sel)
        if base_sel is not None:
            check_prefixes(con, base_sel)
        runs = fetch_runs(con, sel, extra=EXTRA_COLUMNS)
        if not runs:
            raise ReportError(f"selection {sel} matches no runs" if not sel.empty else f"registry {root} holds no runs")
        info = metric_info(runs)
        groups = headline_metrics(runs, info)
        metrics = [m for _, names in groups for m in names]
        if metric is not None and metric not in metrics:
            raise ReportError(f"--metric: {metric!r} is not among the selected runs' metrics "
                              f"({', '.join(metrics) or 'none'})")
        order = metric or (metrics[0] if metrics else None)
        mixed = sorted({str(r.get("likelihood") or DEFAULT_LIKELIHOOD) for r in runs
                        if r.get("status") == "ok" and order in (r.get("metrics") or {})})
        mixed = mixed if order is not None and info.category(order) == "reconstruction" and len(mixed) > 1 else []
        board_cols, board = leaderboard_rows(con, sel, metrics, order, info.direction, by_likelihood=bool(mixed),
                                             pack=pack)
        seeds = top_two_seeds_needed([{**{c: r[c] for c in board_cols}, "model": r["model"], "dataset": r["dataset"],
                                       **r["metrics"][order]} for r in board if order in r["metrics"]]) if order else None
        # the leaderboard's own words (api.leaderboard_result)
        board_note = (f"{order} is ranked within each likelihood ({', '.join(mixed)}): their negative "
                      f"log-likelihoods have different units") if mixed else ""
        verdicts = tg.check_targets(con, parsed, sel, base_sel) if parsed is not None else []
    finally:
        con.close()
    return Gathered(root=root, selection=sel, runs=runs, skipped=skipped, groups=groups, info=info,
                    order=order, board_columns=board_cols, board=board, verdicts=verdicts, board_note=board_note,
                    reference=reference, seeds_needed=seeds,
                    targets_file=None if parsed is None else str(targets))


def headline_metrics(runs: Sequence[Mapping[str, Any]], info: MetricInfo) -> list[tuple[str, list[str]]]:
    """``[(category, metric names), ...]``: the metric names the ok runs hold, grouped by
    category (``MetricSpec.category``: the installed plugin's, else the one the records carry)
    in :data:`GROUP_TITLES` order, installed metrics in plugin order, then the others.

    Dotted extras (``mig.gap.posX``) and keys that neither an installed plugin nor a record
    declares are left out.
    """
    present = {k for r in runs if r["status"] == "ok" for k in r["metrics"]}
    names = [name for name in info.categories if name in present]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(info.categories[name], []).append(name)
    order = [*GROUP_TITLES, *sorted(set(groups) - set(GROUP_TITLES))]
    return [(c, groups[c]) for c in order if c in groups]


def _line_key(run: Mapping[str, Any]) -> str:
    """The run's configuration minus seed and β, canonical JSON (one line of the trade-off)."""
    try:
        spec = json.loads(run.get("spec_json") or "")
    except ValueError:
        spec = None
    if not isinstance(spec, dict):
        spec = {c: run.get(c) for c in CONFIG_COLUMNS if c != "device"}
    return json.dumps({k: v for k, v in spec.items() if k not in LINE_IGNORES}, sort_keys=True, default=str)


def _labels(keys: Sequence[str]) -> dict[str, str]:
    """Line labels: the model, plus the fields that tell apart lines of the same model."""
    specs = {k: json.loads(k) for k in keys}
    out: dict[str, str] = {}
    for key, spec in specs.items():
        model = str(spec.get("model"))
        same = [s for s in specs.values() if s.get("model") == spec.get("model")]
        differ = sorted({f for s in same for f in set(s) | set(spec) if s.get(f) != spec.get(f)} - {"model"})
        extra = ", ".join(f"{f}={fmt(spec.get(f))}" for f in differ)
        out[key] = f"{model} ({extra})" if extra else model
    return out


def tradeoff_series(runs: Sequence[Mapping[str, Any]], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Line label -> points ``{"beta", "mean", "std", "n"}`` (β ascending) of ``metric``.

    Runs are grouped by configuration minus seed and β; mean / std / n are
    :func:`compare.summarise_metric` (ok runs, finite values, sample std).
    Only ok runs count; runs without β (or β ≤ 0, which a log axis cannot show) are left out.
    """
    groups: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for r in runs:
        beta = r.get("beta")
        if r["status"] != "ok":
            continue
        if beta is None or not math.isfinite(beta) or beta <= 0:
            continue
        groups.setdefault(_line_key(r), {}).setdefault(float(beta), []).append(r)
    labels = _labels(list(groups))
    out: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(groups, key=lambda k: labels[k]):
        points = []
        for beta in sorted(groups[key]):
            s = summarise_metric(groups[key][beta], metric)
            if s["mean"] is not None:
                points.append({"beta": beta, **s})
        if points:
            out[labels[key]] = points
    return out


def leaderboard_rows(con: Any, selection: Selection, metrics: Sequence[str], order_by: str | None,
           direction: Callable[[str], str], by_likelihood: bool = False,
           pack: Any = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Leaderboard rows over ``selection``: group columns, ``runs``, ``n_diverged`` and per metric
    ``{mean, std, n, tier}``; ordered as ``vaebench leaderboard --metric order_by`` orders them
    (with ``by_likelihood``: grouped by the model's likelihood first, each group in the metric's
    order, as the leaderboard ranks a reconstruction metric over several likelihoods). Each metric's
    entry carries ``ci95`` (``harness.standings.annotate``); with a reference ``pack``, each row
    ``reference``: where ``order_by``'s mean stands against it (or why it is refused)."""
    from vaebench.harness.standings import annotate
    from vaebench.harness.targets import tier
    from vaebench.registry.query import DEFAULT_BY, group_values, rank

    by = ("likelihood", *DEFAULT_BY) if by_likelihood else DEFAULT_BY
    first = order_by or (metrics[0] if metrics else "mig")
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for metric in dict.fromkeys([first, *metrics]):
        table = rank(con, metric, by, descending=direction(metric) != "lower", selection=selection)
        ranked = table.to_pylist()
        extras = annotate(ranked, group_values(con, metric, by, selection=selection), by, metric,
                          pack if metric == first else None)
        for row, extra in zip(ranked, extras):
            key = tuple(row[c] for c in by)
            entry = rows.setdefault(key, {**{c: row[c] for c in by}, "runs": len(row["seeds"]),
                                          "n_diverged": row["n_diverged"], "metrics": {}})
            entry["metrics"][metric] = {"mean": row["mean"], "std": row["std"], "n": row["n"],
                                        "tier": tier(metric, row["mean"]), "ci95": extra["ci95"]}
            if "reference" in extra:
                entry["reference"] = extra["reference"]
    # Unset columns only take width; so do the dataset columns when one dataset is reported (the header names it).
    columns = [c for c in BOARD_COLUMNS if any(r[c] is not None for r in rows.values())
               and not (c in ("dataset", "dataset_variant") and len({r[c] for r in rows.values()}) == 1)]
    ordered = list(rows.values())
    if by_likelihood:  # a stable sort: each likelihood's rows keep the metric's order
        columns.insert(0, "likelihood")
        ordered.sort(key=lambda r: str(r["likelihood"]))
    return columns, ordered


def capacity_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """config_id -> runs with a capacity and a history carrying C(step), seed order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: (str(r["config_id"]), r["seed"] if r["seed"] is not None else -1)):
        history = r.get("history") or []
        if r.get("capacity") is not None and any(h.get("capacity") is not None for h in history):
            out.setdefault(str(r["config_id"]), []).append(r)
    return out
