"""Results commands, over recorded runs: ``vaebench leaderboard``, ``show``, ``query``,
``compare``, ``check``, ``report``.

``register(app, names)`` adds them to a Typer app (``vaebench.harness.cli`` calls it).
Exit codes as everywhere: 0 ok, 1 a check failed (``check``: a target failed or
could not be evaluated), 2 bad usage or input (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any, Optional

import typer
from rich.markup import escape

from vaebench import api
from vaebench.harness.output import (
    ARROWS,
    DIRECTION_TEXT,
    DEFAULT_REGISTRY,
    REGISTRY_HELP,
    console,
    err_console,
    fail,
    fmt,
    manager,
    names,
    print_json,
)

__all__ = ["check", "compare", "leaderboard", "query", "register", "report", "show"]

#: Every results command, in the order ``vaebench --help`` lists them.
COMMANDS = ("leaderboard", "show", "query", "compare", "check", "report")

ATTEMPTS_HELP = ("Which records of a run count: its latest finished attempt (latest) or every attempt "
                 "of it (all: reruns, other machines).")

SELECTION_HELP = (
    "key=value pairs (model, dataset, beta, seed, status, ...; comma-separated, ANDed) "
    "or run ids / unique prefixes, e.g. 'model=beta_vae,beta=4' or '3fa2c1'."
)


def _warn_skipped(skipped: list[tuple[Path, str]]) -> None:
    for path, reason in skipped:
        err_console.print(f"[yellow]warning:[/] skipped record file {escape(f'{path}: {reason}')}", highlight=False)


def _warn(warnings: list[str]) -> None:
    for line in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


# ---------------------------------------------------------------- leaderboard
def leaderboard(
    metric: str = typer.Option("mig", "--metric", help="Metric key to rank by (see `vaebench list metrics`)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    model: Optional[str] = typer.Option(None, "--model", help="Only runs of this model."),
    by: Optional[str] = typer.Option(None, "--by", help="Columns to group by, e.g. model,beta. \\[default: the run config minus seed]"),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    attempts: str = typer.Option("latest", "--attempts", help=ATTEMPTS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
    reference: Optional[str] = typer.Option(None, "--reference", help="A reference pack (vaebench list references): each row's mean against the published values of the same model/dataset/setting."),
) -> None:
    """Rank runs by a metric, aggregated over seeds (mean, std, n, a 95% bootstrap interval), with DuckDB;
    the seeds per config that tell the top two apart; with --reference, where each row stands."""
    plugins = manager()
    try:
        result = api.leaderboard_result(registry, metric, names(by) if by else None, dataset, model, manager=plugins,
                                        attempts=attempts, reference=reference)
    except ValueError as exc:
        fail(str(exc))
    direction = result.direction
    if result.note:
        err_console.print(f"note: {escape(result.note)}", highlight=False)
    for path, reason in result.skipped:
        err_console.print(f"[yellow]warning:[/] skipped record file {escape(f'{path}: {reason}')}", highlight=False)
    rows = result.table.to_pylist()
    from rich.table import Table

    from vaebench.harness.targets import tier

    if plugins.specs["metrics"].get(metric) is not None and plugins.metric(metric).tiers:
        for row in rows:
            row["tier"] = tier(metric, row["mean"])
    from vaebench.harness.standings import CI_LABEL, describe_seeds_needed

    pair = (result.seeds_needed or {}).get("rows") or []
    for i, (row, extra) in enumerate(zip(rows, result.annotations)):
        row.update(extra)
        if as_json:  # the top two rows carry the seeds needed to tell them apart
            row["seeds_needed"] = result.seeds_needed if i in pair else None
    if as_json:
        print_json(rows)
        return
    if not rows:
        filters = [f"--{k} {v}" for k, v in (("dataset", dataset), ("model", model)) if v]
        err_console.print(f"no recorded run matches {' '.join(filters)}" if filters else "no runs recorded yet")
        return
    arrow = DIRECTION_TEXT[direction] if direction in ARROWS else ""
    table = Table(title=f"leaderboard: {metric} {arrow}")
    # Columns that no run sets (e.g. capacity in a β grid) only take width from people.
    cols = [c for c in rows[0]
            if c in ("mean", "std", "n") or (c not in ("ci95", "reference") and any(r[c] is not None for r in rows))]
    headers = {"dataset_variant": "variant", "latent_dim": "D", "n_diverged": "diverged", "capacity": "C", "config_id": "config"}
    for col in cols:
        left = col in ("model", "dataset", "dataset_variant", "backend", "architecture")
        table.add_column(headers.get(col, col), justify="left" if left else "right", overflow="fold")
        if col == "std":
            table.add_column(CI_LABEL, justify="right")
    if reference is not None:
        table.add_column(f"vs {reference}", justify="left", overflow="fold")
    for row in rows:
        cells = []
        for c in cols:
            cells.append(fmt(row[c]))
            if c == "std":
                cells.append(f"{fmt(row['ci95'][0])}–{fmt(row['ci95'][1])}" if row.get("ci95") else "-")
        if reference is not None:
            cells.append(escape(row["reference"]["text"]))
        table.add_row(*cells)
    console.print(table)
    line = describe_seeds_needed(result.seeds_needed)
    if line:
        console.print(escape(line), highlight=False)


# ---------------------------------------------------------------- show
def show(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id or a unique prefix of one; RUN.ATTEMPT for one attempt."),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON (its attempts under \"attempts\")."),
) -> None:
    """Print one run's record (its latest finished attempt) and the list of its attempts.

    Every rerun of a spec (--force, new code, another machine) is kept as an attempt;
    `vaebench show 3fa2c1.20261204T201500Z-9c1a2b` prints that one.
    """
    from rich.table import Table

    from vaebench.registry.store import RegistryError

    try:
        record = api.show(run_id, registry, with_attempts=True)
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    summary = record.pop("attempts")
    if as_json:
        print_json(record | {"attempts": summary})
        return
    table = Table(title=f"run {record['run_id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in record.items():
        if key in ("metrics", "history", "signals", "metric_params", "spec_json", "environment", "kl_per_dim", "artifacts",
                   "provenance"):
            continue
        if key == "error" and value and record.get("status") == "ok":
            # An ok run's notes (a metric that failed or was refused, posterior collapse): one row each.
            for note in str(value).split("; "):
                table.add_row("note", note)
            continue
        table.add_row(key, fmt(value))
    for key, value in sorted((record.get("metrics") or {}).items()):
        table.add_row(f"metrics.{key}", fmt(value))
    if record.get("kl_per_dim"):
        table.add_row("kl_per_dim", " ".join(f"{v:.2f}" for v in record["kl_per_dim"]))
    last: dict[str, tuple[int, float]] = {}
    for point in record.get("signals") or []:
        last[point["name"]] = (point["step"], point["value"])
    for name, (step, value) in sorted(last.items()):
        table.add_row(f"signal.{name}", f"{fmt(value)} (step {step})")
    for key, value in sorted((record.get("provenance") or {}).items()):
        table.add_row(f"provenance.{key}", value)
    env = dict(record.get("environment") or {})
    packages = env.pop("packages", None)  # every installed package: a count here, the list in --json
    digest = env.pop("packages_sha256", None)
    for key, value in sorted(env.items()):
        table.add_row(f"env.{key}", escape(value))
    if packages is not None:
        count = len([p for p in packages.split(";") if p])
        table.add_row("env.packages", f"{count} installed (sha256 {digest}; --json lists them)")
    for key, value in sorted((record.get("artifacts") or {}).items()):
        table.add_row(f"artifact.{key}", value)
    console.print(table)
    if len(summary) > 1:
        listing = Table(title=f"{len(summary)} attempts (oldest first; * shown above)")
        for col in ("", "attempt", "status", "finished", "git revision", "vaebench"):
            listing.add_column(col)
        for row in summary:
            listing.add_row("*" if row["shown"] else "", row["attempt"] or "(before attempts)", row["status"],
                            fmt(row["finished_at"]), (row["git_revision"] or "")[:12], row["vaebench"] or "")
        console.print(listing)


# ---------------------------------------------------------------- query
def query(
    sql: str = typer.Argument(..., metavar="SQL", help="One SELECT statement over the table `runs`."),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="Stop the query after this many seconds. \\[default: 60]"),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", metavar="SIZE", help="Most memory the query may use, e.g. 512MB, 4GB (DuckDB's own default is 80% of RAM). \\[default: 2GB]"),
) -> None:
    """Run read-only SQL (DuckDB) over the runs table: one row per run, every record column.

    Only a single SELECT is accepted, and it runs on a locked connection that
    cannot read, write or attach files, or install extensions. Metrics are a
    map: element_at(metrics, 'mig')[1], or metrics['mig']. A query that runs past
    --timeout or needs more than --memory-limit is stopped (exit 2), as is one
    interrupted by Ctrl-C (exit 130).
    """
    from vaebench.registry.store import RegistryError

    try:
        result = api.query(sql, registry, timeout=timeout, memory_limit=memory_limit)
    except (ValueError, RegistryError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("query interrupted (Ctrl-C); nothing was printed", 130)
    _warn_skipped(result.skipped)
    table = result.table
    rows = table.to_pylist(maps_as_pydicts="lossy")
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    out = Table(title=f"{len(rows)} row(s)")
    for col in table.column_names:
        out.add_column(escape(col), overflow="fold")
    for row in rows:
        out.add_row(*[_cell(v) for v in row.values()])
    console.print(out)


def _cell(value: Any) -> str:
    """A table cell, markup-escaped (record values are data, not Rich markup)."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={fmt(v)}" for k, v in value.items()) or "{}"
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        text = f"({len(value)} items)"
    else:
        text = fmt(value)
    return escape(text)


# ---------------------------------------------------------------- compare
def compare(
    a: str = typer.Argument(..., metavar="A", help="The reference runs: " + SELECTION_HELP),
    b: str = typer.Argument(..., metavar="B", help="The runs compared with A (same syntax)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Metric keys to show, comma-separated. [default: all]"),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compare two runs or two groups of runs: config side by side, metric means and B − A.

    Config rows that differ are highlighted. Metrics are means over the ok runs
    of each side (n shown); the delta B − A is green when B is better by the
    metric's declared direction, red when worse, plain for direction "none".
    """
    from vaebench.registry.store import RegistryError

    try:
        compared = api.compare(a, b, names(metrics) if metrics else None, registry)
    except (ValueError, RegistryError) as exc:
        _warn(getattr(exc, "__notes__", []))  # the registry's warnings, before the error
        fail(str(exc))
    _warn(compared.warnings)
    result = compared.comparison
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    def runs_cell(side: dict[str, Any]) -> str:
        text = f"{side['n_ok']} ok"
        for k in ("diverged", "failed"):
            if side[f"n_{k}"]:
                text += f", {side[f'n_{k}']} {k}"
        return text

    table = Table(title=escape(f"A: {result['a']['selection']}   vs   B: {result['b']['selection']}"))
    table.add_column("", style="bold")
    table.add_column("A", justify="right", overflow="fold")
    table.add_column("B", justify="right", overflow="fold")
    table.add_column("Δ B − A", justify="right")
    table.add_column("seeds needed", justify="right")
    table.add_row("runs", runs_cell(result["a"]), runs_cell(result["b"]), "", "")
    for row in result["config"]:
        style = "bold yellow" if row["differs"] else "dim"
        table.add_row(row["column"], _cell(row["a"]), _cell(row["b"]), "≠" if row["differs"] else "", "", style=style)
    table.add_section()
    for row in result["metrics"]:
        def side(s: dict[str, Any]) -> str:
            return "-" if s["mean"] is None else f"{fmt(s['mean'])} (n={s['n']})"

        delta = "-" if row["delta"] is None else f"{row['delta']:+.4g}"
        if row.get("note"):
            delta = escape(row["note"])
        color = {"better": "green", "worse": "red"}.get(row["better"] or "")
        table.add_row(
            escape(row["metric"]) + (f" {ARROWS[row['direction']]}" if row["direction"] in ARROWS else ""), side(row["a"]), side(row["b"]),
            f"[{color}]{delta}[/]" if color else delta,
            "-" if row.get("seeds_needed") is None or row.get("note") else str(row["seeds_needed"]),
        )
    console.print(table)
    err_console.print("seeds needed: per side, for a two-sample t-test (α 0.05, power 0.8) to tell the two means "
                      "apart at the observed seed sds", highlight=False)


# ---------------------------------------------------------------- check
def check(
    targets: Path = typer.Option(..., "--targets", help="TOML file of \\[\\[target]] tables (see --help)."),
    runs: Optional[str] = typer.Option(None, "--runs", help="Current runs, ANDed with each target's select: " + SELECTION_HELP),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline runs for max_regression (same syntax)."),
    baseline_registry: Optional[str] = typer.Option(
        None, "--baseline-registry", help="Registry holding the baseline runs (e.g. main's results). [default: --registry]"
    ),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    allow_unreadable: bool = typer.Option(
        False, "--allow-unreadable", help="Pass even when record files were left out (unreadable, invalid or duplicate)."
    ),
    attempts: str = typer.Option("latest", "--attempts", help=ATTEMPTS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per target."),
) -> None:
    """Check runs against targets; exit 1 when any target fails (for CI).

    Each target selects runs (ok runs aggregate; diverged/failed are counted),
    aggregates a metric over seeds (mean or median) and checks an absolute
    threshold in the metric's declared direction and/or a max_regression
    against the --baseline runs. A regression counts only when it exceeds
    max_regression AND is significant by Welch's t-test (one-sided toward
    worse, alpha 0.05); otherwise the verdict is "changed, not significant".

    Exit 0: every target passes (or changed, not significant). Exit 1: a target
    fails, or cannot be evaluated ("error: ..." — too few runs, metric missing,
    incomparable datasets or estimator settings: never a silent pass), or a
    record file was left out (unreadable, invalid, duplicate), so the verdicts
    may miss runs; --allow-unreadable checks the rest and lets them pass.
    Exit 2: usage errors (bad TOML, unknown metric or select key).
    """
    from vaebench.harness import targets as tg
    from vaebench.registry.store import RegistryError

    try:
        checked = api.check(targets, runs, baseline, baseline_registry=baseline_registry, registry=registry,
                            attempts=attempts)
    except (ValueError, RegistryError) as exc:
        _warn(getattr(exc, "__notes__", []))  # the registry's warnings, before the error
        fail(str(exc))
    _warn(checked.warnings)
    results, left_out = checked.results, checked.left_out
    code = checked.exit_code(allow_unreadable)
    if as_json:
        print_json([r.to_dict() for r in results])
        _say_left_out(left_out, allow_unreadable)
        raise typer.Exit(code)
    from rich.table import Table

    current = checked.runs
    table = Table(title=escape(f"targets: {targets.name}" + (f"  (runs: {current})" if not current.empty else "")))
    for col, justify in (("target", "left"), ("metric", "left"), ("value", "right"),
                         ("threshold / baseline", "right"), ("verdict", "left"), ("n runs", "right"), ("detail", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in results:
        arrow = f" {ARROWS[r.direction]}" if r.direction in ARROWS else ""
        cells = tg.describe(r)
        color = "green" if r.verdict == "pass" else "yellow" if r.passed else "red"
        table.add_row(escape(r.name), escape(r.metric) + arrow, escape(cells["value"]), escape(cells["reference"]),
                      f"[{color}]{escape(r.verdict)}[/]", cells["runs"], escape(cells["detail"]))
    console.print(table)
    if any(r.p_value is not None for r in results):
        err_console.print(f"regressions: {tg.TEST_NAME}; they count only when larger than max_regression and p < alpha")
    bad = sum(not r.passed for r in results)
    if bad:
        err_console.print(f"[red]{bad} of {len(results)} target(s) not met[/]")
    _say_left_out(left_out, allow_unreadable)
    raise typer.Exit(code)


def _say_left_out(left_out: list[tuple[Path, str]], allowed: bool) -> None:
    if not left_out:
        return
    if allowed:
        err_console.print(f"{len(left_out)} record file(s) left out (listed above); checked without them "
                          "(--allow-unreadable)", highlight=False)
    else:
        err_console.print(f"[red]{len(left_out)} record file(s) left out[/] (listed above): the verdicts may miss "
                          "runs, so the check fails; --allow-unreadable checks without them", highlight=False)


# ---------------------------------------------------------------- report
def report(
    selection: Optional[str] = typer.Argument(None, metavar="SELECTION", help="The runs to report on: " + SELECTION_HELP + " [default: every run]"),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write index.html, report.md and figures/ into (created)."),
    targets: Optional[Path] = typer.Option(None, "--targets", help="Targets TOML (as for `vaebench check`) whose verdicts to show."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline runs for the targets' max_regression (same syntax)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric ordering the leaderboard. \\[default: the first disentanglement metric]"),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print what was written (paths, run counts, target verdicts) as JSON."),
    reference: Optional[str] = typer.Option(None, "--reference", help="A reference pack (vaebench list references) to set the leaderboard's means against."),
) -> None:
    """Write a report on the selected runs: DIR/index.html, DIR/report.md and DIR/figures/.

    The page shows the β trade-off (disentanglement and reconstruction / image
    quality metrics against β, log axis, mean ± std over seeds, one line per
    model), the capacity curves of capacity runs (KL vs the target C), the
    leaderboard with tiers, target verdicts (with --targets), every run's
    status with diverged and failed runs listed, each run's traversal grid, and
    what the metrics see: per run and per config the MI matrix behind MIG, DCI's
    importance matrix, the per-factor MIG gaps and the KL per latent dimension over
    training, plus the Spearman correlation between metrics across the runs.
    It is self-contained: figures are files under DIR/figures/, linked
    relatively; no scripts, no network. Copy DIR anywhere.

    Exit 0 when the report is written, even if targets are missed (use
    `vaebench check` to gate CI). Exit 2: no run selected, a bad targets file
    or selection, an unusable --out.
    """
    from vaebench.registry.store import RegistryError

    try:
        result = api.report_result(selection, out, registry, targets, baseline, metric, reference)
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    _warn_skipped(result.skipped)
    if as_json:
        print_json(result.to_dict())
        return
    c = result.counts
    console.print(f"wrote {escape(str(result.html))} and {escape(str(result.markdown))} "
                  f"({c['total']} runs: {c['ok']} ok, {c['diverged']} diverged, {c['failed']} failed; "
                  f"{len(result.figures)} figure files)", highlight=False)
    if result.targets:
        met = sum(t.passed for t in result.targets)
        color = "green" if met == len(result.targets) else "red"
        console.print(f"targets: [{color}]{met} of {len(result.targets)} met[/] (shown in the report; "
                      "`vaebench check` sets the exit status)", highlight=False)
    for note in result.notes:
        err_console.print(f"note: {escape(note)}", highlight=False)


def register(app: typer.Typer, commands: Sequence[str] = COMMANDS) -> None:
    """Add the results commands named in ``commands`` to ``app``, in that order (``vaebench --help``
    lists commands in the order they were added)."""
    for name in commands:
        epilog, function = _COMMANDS[name]
        app.command(name, epilog=epilog)(function)


#: name -> (the help's examples, the command)
_COMMANDS: dict[str, tuple[str, Any]] = {
    "leaderboard": (
        "Examples:\n\n  vaebench leaderboard\n\n  vaebench leaderboard --metric reconstruction --by model,beta --json",
        leaderboard,
    ),
    "show": ("Example:\n\n  vaebench show 3fa2c1", show),
    "query": (
        "Examples:\n\n"
        "  vaebench query \"SELECT model, count(*) AS n FROM runs GROUP BY model\"\n\n"
        "  vaebench query \"SELECT run_id, beta, metrics['mig'] AS mig FROM runs WHERE status = 'ok' ORDER BY mig DESC\" --json",
        query,
    ),
    "compare": (
        "Examples:\n\n"
        "  vaebench compare 3fa2c1 9b0e44\n\n"
        "  vaebench compare model=beta_vae,beta=1 model=beta_vae,beta=4 --metrics mig,reconstruction",
        compare,
    ),
    "check": (
        "Example targets.toml:\n\n"
        "  \\[\\[target]]\n\n"
        "  name = \"beta4 MIG\"\n\n"
        "  select = { model = \"beta_vae\", beta = 4, dataset = \"dsprites\" }\n\n"
        "  metric = \"mig\"            # aggregate = \"mean\" | \"median\"; min_runs = 3\n\n"
        "  threshold = 0.3           # mig is higher-is-better: passes when >= 0.3\n\n"
        "  max_regression = \"5%\"     # or 0.02; checked against --baseline\n\n"
        "Examples:\n\n"
        "  vaebench check --targets targets.toml\n\n"
        "  vaebench check --targets targets.toml --runs steps=3000 --baseline steps=1500 --json\n\n"
        "  vaebench check --targets targets.toml --baseline-registry main-results",
        check,
    ),
    "report": (
        "Examples:\n\n"
        "  vaebench report --out report/\n\n"
        "  vaebench report model=beta_vae,dataset=dsprites --out report/ --targets targets.toml\n\n"
        "  vaebench report model=beta_vae_capacity --out cap-report/ --json",
        report,
    ),
}
