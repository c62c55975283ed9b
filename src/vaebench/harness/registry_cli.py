"""``vaebench registry compact | verify | info | gc | merge`` and ``vaebench export``: care of a
registry and sharing it (``vaebench.registry.compaction``, ``.maintenance``, ``.sharing``).

``register(app)`` adds them to a Typer app (``vaebench.harness.cli`` calls it). Exit codes:
0 ok, 1 ``verify`` found a problem, 2 bad usage or input (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from vaebench.harness.output import DEFAULT_REGISTRY, REGISTRY_HELP, console, err_console, fail, print_json

__all__ = ["register", "registry_app"]

registry_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode="rich",
    help="Care of a registry (a path or URL such as s3://bucket/prefix): compact, verify, info, gc, merge.",
    epilog="Examples:\n\n  vaebench registry info\n\n  vaebench registry compact --registry s3://lab/vaebench\n\n"
    "  vaebench registry verify --json\n\n  vaebench registry merge ../other-lab-results --artifacts",
)


def _check(registry: str, *, must_exist: bool = True) -> None:
    """One-line exit 2 for a registry that cannot be used (before anything is read)."""
    from vaebench.registry import location

    try:
        location.filesystem(registry)
        location.check_location(registry)
    except location.LocationError as exc:
        fail(str(exc))
    if must_exist and not location.is_remote(registry) and not (location.local_path(registry) / "runs").is_dir():
        fail(f"registry {registry} has no runs/ (run `vaebench run` first or pass --registry)")


def _paths(items: list[Any], limit: int = 20) -> None:
    for item in items[:limit]:
        console.print(f"  {escape(str(item))}", highlight=False)
    if len(items) > limit:
        console.print(f"  ... and {len(items) - limit} more", highlight=False)


@registry_app.command("compact", epilog="Examples:\n\n  vaebench registry compact\n\n"
                      "  vaebench registry compact --dry-run --json\n\n  vaebench registry compact --registry s3://lab/vaebench")
def compact(
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be written and removed; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    """Rewrite the one-record files (and earlier parts) into one Parquet file per dataset and model,
    runs/compacted/dataset=D/model=M/part-*.parquet, keeping every attempt.

    Safe while others read or write: each part is written whole before the files it replaces
    are removed, so a reader sees every record exactly once; records written meanwhile wait for
    the next compaction. Invalid files, and partitions holding two different copies of one
    record, are left as they are (see `vaebench registry verify`)."""
    from vaebench.registry.compaction import compact as run_compact
    from vaebench.registry.store import RegistryError

    _check(registry)
    try:
        result = run_compact(registry, dry_run=dry_run)
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_dict())
        return
    verb = "would write" if dry_run else "wrote"
    console.print(f"{verb} {len(result.written)} part(s) holding {result.records} record(s) in "
                  f"{result.partitions} partition(s); {'would remove' if dry_run else 'removed'} "
                  f"{len(result.removed)} file(s)", highlight=False)
    for path, reason in result.left:
        err_console.print(f"[yellow]left as it is:[/] {escape(f'{path}: {reason}')}", highlight=False)
    for ref in result.conflicts:
        err_console.print(f"[yellow]conflict:[/] {escape(ref)} is held twice with different content", highlight=False)


@registry_app.command("verify", epilog="Examples:\n\n  vaebench registry verify\n\n"
                      "  vaebench registry verify --json --registry s3://lab/vaebench")
def verify(
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    older_than: float = typer.Option(3600.0, "--older-than", metavar="SECONDS", help="Artifacts without a record count as orphaned only after this long without a write."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Read every file; report corrupt or invalid files, duplicate records (one run_id.attempt held
    twice with different content), missing artifacts, orphaned artifacts, stale temporary files
    and stale claims. Exit 1 when anything is wrong, 0 when clean.

    Notes that are no problem: identical copies of a record (a compaction in progress or
    interrupted), periodic checkpoints of runs without a record (resumable), artifacts of a
    claimed run (in training) or written recently."""
    from vaebench.registry.maintenance import verify as run_verify

    if older_than < 0:
        fail("--older-than: expected seconds >= 0")
    _check(registry)
    report = run_verify(registry, min_age=older_than)
    if as_json:
        print_json(report.to_dict())
    else:
        for f in report.findings:
            color = "red" if f.problem else "dim"
            console.print(f"[{color}]{f.kind}[/] {escape(f.path)}: {escape(f.detail)}", highlight=False)
        summary = f"{report.files} file(s), {report.records} record(s): "
        summary += "ok" if report.ok else f"[red]{len(report.problems)} problem(s)[/]"
        console.print(summary, highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@registry_app.command("info", epilog="Examples:\n\n  vaebench registry info\n\n  vaebench registry info --json")
def info(
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Counts and sizes: records (run_id.attempt), runs, status (latest attempt and all attempts),
    runs per dataset and model, files (one-record, compacted), bytes of records and artifacts."""
    from rich.table import Table

    from vaebench.registry.maintenance import info as run_info
    from vaebench.registry.store import RegistryError

    _check(registry)
    try:
        data = run_info(registry)
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print_json(data)
        return
    table = Table(title=f"registry {escape(data['registry'])}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("records (attempts)", str(data["records"]))
    table.add_row("runs", str(data["runs"]))
    for status, n in data["latest_by_status"].items():
        table.add_row(f"runs {status} (latest attempt)", str(n))
    for key, n in data["files"].items():
        table.add_row(f"files: {key.replace('_', '-')}", str(n))
    for key, n in data["bytes"].items():
        table.add_row(f"bytes: {key}", f"{n:,}")
    console.print(table)
    groups = Table(title="by dataset and model")
    for col in ("dataset", "model", "runs", "records"):
        groups.add_column(col, justify="right" if col in ("runs", "records") else "left")
    for g in data["by_dataset_model"]:
        groups.add_row(escape(str(g["dataset"])), escape(str(g["model"])), str(g["runs"]), str(g["records"]))
    console.print(groups)


@registry_app.command("gc", epilog="Examples:\n\n  vaebench registry gc --dry-run\n\n  vaebench registry gc --json")
def gc(
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    older_than: float = typer.Option(3600.0, "--older-than", metavar="SECONDS", help="Artifacts without a record are removed only after this long without a write."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Remove what `registry verify` calls orphaned or stale: temporary files of writers that died,
    stale claims, and artifacts of runs without a record or a live claim (a partial/ checkpoint
    is kept: --resume continues from it). Prints each path, then removes it (no prompt:
    --dry-run first to look)."""
    from vaebench.registry.maintenance import gc as run_gc, verify as run_verify

    if older_than < 0:
        fail("--older-than: expected seconds >= 0")
    _check(registry)
    report = run_verify(registry, min_age=older_than)
    targets = run_gc(registry, report, dry_run=True)
    if not as_json:
        for path in targets:
            console.print(f"{'would remove' if dry_run else 'removing'} {escape(path)}", highlight=False)
    done = targets if dry_run else run_gc(registry, report)
    if as_json:
        print_json({"dry_run": dry_run, "removed": [] if dry_run else done, "would_remove": targets if dry_run else []})
    elif not targets:
        console.print("nothing to remove")


@registry_app.command("merge", epilog="Examples:\n\n  vaebench registry merge ../other-lab/vaebench-results\n\n"
                      "  vaebench registry merge s3://other-lab/vaebench --artifacts --registry ./vaebench-results")
def merge(
    other: str = typer.Argument(..., metavar="OTHER", help="The registry to copy from: a path or URL."),
    artifacts: bool = typer.Option(False, "--artifacts", help="Copy artifacts/<run_id>/ too (checkpoints, figures; not partial/)."),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be copied; copy nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print counts as JSON."),
) -> None:
    """Copy another registry's records in, every attempt once (one already here is skipped; a
    record without an attempt gets one derived from its finish time, so a second merge copies
    nothing). The records become one-record files here."""
    from vaebench.registry.sharing import merge as run_merge
    from vaebench.registry.store import RegistryError, check_writable

    _check(other)
    _check(registry, must_exist=False)
    try:
        if not dry_run:
            check_writable(registry)
        result = run_merge(registry, other, artifacts=artifacts, dry_run=dry_run)
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print_json(result)
        return
    for item in result["left_out"]:
        err_console.print(f"[yellow]left out:[/] {escape(item['path'])}: {escape(item['reason'])}", highlight=False)
    verb = "would copy" if dry_run else "copied"
    text = f"{verb} {result['copied']} record(s) from {result['from']} ({result['present']} here already)"
    if artifacts:
        text += f", {result['artifact_files']} artifact file(s)"
    console.print(escape(text), highlight=False)


def export(
    selection: Optional[str] = typer.Argument(None, metavar="SELECTION", help="The runs to export: key=value pairs or run id prefixes, e.g. 'model=beta_vae,beta=4'. \\[default: every run]"),
    fmt: str = typer.Option(..., "--format", help="csv | jsonl | parquet"),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write (replaced whole)."),
    attempts: str = typer.Option("latest", "--attempts", help="latest: each run's latest finished attempt; all: every attempt."),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print what was written (path, rows, columns) as JSON."),
) -> None:
    """Write the selected runs as one flat table (csv, jsonl, parquet) for pandas or R.

    One row per record, every plain column, each metric as a column metric.<key>, the other
    maps and lists as JSON text; the per-step history and signals are left out (`vaebench
    show RUN --json` has them)."""
    from vaebench.registry.selection import Selection
    from vaebench.registry import ATTEMPTS
    from vaebench.registry.sharing import EXPORT_FORMATS, export_table, write_export
    from vaebench.registry.store import RegistryError

    if fmt not in EXPORT_FORMATS:
        fail(f"--format: choose from {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if attempts not in ATTEMPTS:
        fail(f"--attempts: choose from {', '.join(ATTEMPTS)}, not {attempts!r}")
    try:
        sel = Selection.parse(selection)
    except ValueError as exc:
        fail(f"SELECTION: {exc}")
    if not out.parent.is_dir():
        fail(f"--out: directory {out.parent} does not exist")
    _check(registry)
    try:
        table = export_table(registry, sel, attempts)
        write_export(table, out, fmt)
    except (ValueError, RegistryError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror or exc}")
    if as_json:
        print_json({"path": str(out), "rows": table.num_rows, "columns": table.column_names})
    else:
        console.print(escape(f"wrote {out}: {table.num_rows} row(s), {table.num_columns} column(s)"), highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``vaebench registry ...`` and ``vaebench export`` to ``app``."""
    app.add_typer(registry_app, name="registry")
    app.command("export", epilog="Examples:\n\n  vaebench export --format csv --out runs.csv\n\n"
                "  vaebench export model=beta_vae,dataset=dsprites --format parquet --out runs.parquet --attempts all\n\n"
                "  pandas: pd.read_csv('runs.csv')   R: read.csv('runs.csv')")(export)
