"""Query the registry with DuckDB.

:func:`open_runs` gives an in-memory DuckDB connection with a view ``runs``
over every record file. The view always has every ``RECORD_SCHEMA`` column
(an empty typed table is unioned in by name), plus any column a newer writer
added: files are read with ``union_by_name`` so a column present in only some
files is kept (NULL elsewhere) rather than silently dropped.

Records are checked, not trusted: a file that is not a valid record (corrupt, not one
row, no valid ``run_id`` or ``status``, a schema column of another type such as ``beta``
as text: ``store.record_problem``) is left out, and of several files holding the same
``run_id`` (a record copied under another name) only one is read, ``<run_id>.parquet``
where it is among them. What is left out is reported as ``(path, one-line reason)``.
The fast path reads only ``run_id`` and ``status`` of every file (DuckDB, in one scan) and
the column types of the union; when DuckDB refuses the set or a type is off, each file
is checked on its own with pyarrow.

User-given *values* (metric key, dataset, model) reach SQL only as bound
parameters. User-given *column names* (``by``) cannot be parameters, so they
are checked against ``GROUPABLE_COLUMNS`` and then quoted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from vaebench.registry import ATTEMPTS, staging
from vaebench.registry.location import display, filesystem, is_remote
from vaebench.registry.schema import (
    DEFAULT_LIKELIHOOD,
    DONE_STATUSES,
    GROUPABLE_COLUMNS,
    RECORD_SCHEMA,
    STATUSES,
    schema_problem,
)
from vaebench.registry.selection import Selection
from vaebench.registry.store import (
    COMPACTED,
    RegistryError,
    base_name,
    file_name,
    is_compacted,
    read_record,
    read_table,
    record_problem,
    row_problem,
    run_files,
)

__all__ = [
    "DEFAULT_BY",
    "LeaderboardResult",
    "group_values",
    "leaderboard",
    "metric_keys",
    "open_runs",
    "rank",
    "recorded_runs",
    "recorded_status",
    "show",
]

DEFAULT_BY: tuple[str, ...] = (
    "model",
    "dataset",
    "dataset_variant",
    "beta",
    "capacity",
    "gamma",
    "latent_dim",
    "config_id",
)

_EMPTY_TABLE = "_vaebench_empty_runs"
_FILES_VIEW = "_vaebench_run_files"

Skipped = list[tuple[Path | str, str]]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """First line of an exception message, whitespace-collapsed and truncated."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote_ident(name: str) -> str:
    """Quote an SQL identifier (names are validated before they get here)."""
    return '"' + name.replace('"', '""') + '"'


def to_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """Materialise a relation as an Arrow table (duckdb 1.x and 2.x).

    duckdb 2.0: ``DuckDBPyRelation.arrow()`` returns a RecordBatchReader, and
    the connection no longer has ``fetch_arrow_table``; ``to_arrow_table`` is
    the spelling that returns a Table on both (it exists on 1.4+).
    """
    to_table = getattr(rel, "to_arrow_table", None)
    if to_table is None:  # pragma: no cover - older duckdb
        to_table = rel.fetch_arrow_table
    return to_table()


#: A row that is a run: a run id and a status of the vocabulary (``store.row_problem`` in SQL).
_VALID = ("(run_id IS NOT NULL AND regexp_full_match(run_id, '[0-9a-f]{6,64}') AND status IN ("
          + ", ".join(f"'{s}'" for s in STATUSES) + "))")
#: The views and tables ``open_runs`` builds ``runs`` from (``readonly`` drops them).
SOURCE_VIEWS = (_FILES_VIEW, "_vaebench_attempts")


def _key(path: Path | str) -> str:
    """How DuckDB names a record file (its ``filename`` column): its absolute path (a remote
    registry's files are read from their local copies, ``staging.record_copies``)."""
    return os.path.abspath(path)


def _build_view(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str], bind: bool = True,
                attempts: str = "latest") -> None:
    """(Re)create the ``runs`` view over ``files``; raises duckdb.Error on a bad set
    (with ``bind``; without, the set is known to bind: the first query binds it).

    Rows that are no run (:data:`_VALID`) are left out (a compacted file's; a one-record
    file with one was left out before); a record read twice (its one-record file and its
    compacted copy, while ``registry compact`` works) is read once: one row per
    ``(run_id, attempt)``. With ``attempts="latest"`` the view holds each run's latest
    finished attempt (``store.latest``: ``ok`` / ``diverged`` first, then by
    ``finished_at``, then ``attempt``); with ``"all"`` every attempt.

    The file list goes through the relation API (``con.read_parquet(list)``)
    because DuckDB cannot bind a prepared parameter inside CREATE VIEW;
    DuckDB then writes the paths into the view's SQL as properly quoted string
    literals itself.
    """
    if attempts not in ATTEMPTS:
        raise ValueError(f"attempts must be one of {', '.join(ATTEMPTS)}, not {attempts!r}")
    con.sql("DROP VIEW IF EXISTS runs")
    for name in reversed(SOURCE_VIEWS):
        con.sql(f"DROP VIEW IF EXISTS {name}")
    if files:
        con.read_parquet([_key(p) for p in files], union_by_name=True, filename=True).create_view(
            _FILES_VIEW, replace=True)
        # One row per record id; a one-record file before a compacted copy.
        con.sql(
            f"CREATE VIEW _vaebench_attempts AS SELECT * EXCLUDE (filename) FROM ("
            f"SELECT * FROM {_EMPTY_TABLE} UNION ALL BY NAME SELECT * FROM {_FILES_VIEW}) WHERE {_VALID} "
            f"QUALIFY row_number() OVER (PARTITION BY run_id, attempt ORDER BY "
            f"contains(filename, '/runs/{COMPACTED}/'), filename) = 1"
        )
        latest = "" if attempts == "all" else (
            "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY status IN "
            f"({', '.join(repr(s) for s in DONE_STATUSES)}) DESC, finished_at DESC NULLS LAST, "
            "attempt DESC NULLS LAST) = 1"
        )
        # An older record has no likelihood: its model was Bernoulli (schema.DEFAULT_LIKELIHOOD).
        con.sql(
            f"CREATE VIEW runs AS SELECT * REPLACE (coalesce(likelihood, '{DEFAULT_LIKELIHOOD}') AS likelihood) "
            f"FROM _vaebench_attempts {latest}"
        )
        if bind:  # Binding is lazy for views: make DuckDB resolve the union now.
            con.sql("SELECT * FROM runs LIMIT 0").fetchall()
    else:
        con.sql(f"CREATE VIEW runs AS SELECT * FROM {_EMPTY_TABLE}")


def _pyarrow_check(path: Path | str) -> tuple[str | None, str | None, str | None]:
    """``(run_id, attempt, None)`` for a valid one-record file (a compacted file: ``(None,
    None, None)`` when its schema fits; its rows are checked by the view), ``(None, None,
    why not)`` otherwise."""
    try:
        table = read_table(path)
    except Exception as exc:  # noqa: BLE001 - any failure means "skip this file"
        return None, None, one_line(exc)
    if is_compacted(path):
        return None, None, schema_problem(table.schema)
    problem = record_problem(table)
    if problem is not None:
        return None, None, problem
    attempt = table.column("attempt")[0].as_py() if "attempt" in table.column_names else None
    return table.column("run_id")[0].as_py(), attempt, None


def _fast_check(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str]
                ) -> tuple[dict[Path | str, tuple[str | None, str | None]], Skipped] | None:
    """``({file: (run_id, attempt)} of the valid files, skipped)`` from one DuckDB scan of
    ``run_id``, ``status`` and ``attempt`` (a compacted file maps to ``(None, None)``; its
    rows that are no run are reported and left out by the view), or ``None`` when DuckDB
    refuses the set or a schema column's type in the union is not the schema's (some file
    has another type: check each file instead)."""
    if not files:
        return {}, []
    paths = {_key(p): p for p in files}
    try:
        rel = con.read_parquet(list(paths), union_by_name=True, filename=True)
        expected = dict(zip(con.table(_EMPTY_TABLE).columns, map(str, con.table(_EMPTY_TABLE).types)))
        have = dict(zip(rel.columns, map(str, rel.types)))
        if any(name in have and have[name] != typ for name, typ in expected.items()):
            return None
        cols = ", ".join(c if c in have else f"NULL AS {c}" for c in ("run_id", "status", "attempt"))
        rows = rel.select(f"filename, {cols}").aggregate(
            f"filename, count(*), count(*) FILTER (WHERE NOT {_VALID}), "
            f"first(run_id) FILTER (WHERE NOT {_VALID}), first(status) FILTER (WHERE NOT {_VALID}), "
            "first(run_id), first(attempt)", "filename").fetchall()
    except duckdb.Error:
        return None
    seen = {row[0]: row[1:] for row in rows}
    ids: dict[Path | str, tuple[str | None, str | None]] = {}
    skipped: Skipped = []
    for name, path in paths.items():
        n, bad, bad_id, bad_status, run_id, attempt = seen.get(name, (0, 0, None, None, None, None))
        if is_compacted(path):
            ids[path] = (None, None)
            if bad:
                skipped.append((path, f"{bad} of {n} rows left out: {row_problem(bad_id, bad_status)}"))
            continue
        problem = f"expected one row, found {n}" if n != 1 else (row_problem(bad_id, bad_status) if bad else None)
        if problem is None:
            ids[path] = (run_id, attempt)
        else:
            skipped.append((path, problem))
    return ids, skipped


def _dedupe(ids: dict[Path | str, tuple[str | None, str | None]]) -> tuple[list[Path | str], Skipped]:
    """One one-record file per record id (run id and attempt), sorted: the one named
    ``store.file_name(run_id, attempt)`` where it is among the files of that id, else the
    first by name; the others are skipped as duplicates. Compacted files are all kept
    (the view reads a record held twice once)."""
    by_id: dict[tuple[str, str | None], list[Path | str]] = {}
    kept: list[Path | str] = []
    for path in sorted(ids, key=str):
        run_id, attempt = ids[path]
        if run_id is None:
            kept.append(path)
        else:
            by_id.setdefault((run_id, attempt), []).append(path)
    skipped: Skipped = []
    for (run_id, attempt), paths in by_id.items():
        name = file_name(run_id, attempt)
        first = next((p for p in paths if base_name(p) == name), paths[0])
        kept.append(first)
        skipped += [(p, f"duplicate of {base_name(first)} (same run_id {run_id})") for p in paths if p != first]
    return sorted(kept, key=str), skipped


def _duckdb_problem(con: duckdb.DuckDBPyConnection, path: Path | str) -> str | None:
    """Why DuckDB cannot union ``path`` with the record schema, or None."""
    try:
        rel = con.read_parquet([_key(path)], union_by_name=True)
        rel.create_view("_vaebench_probe", replace=True)
        con.sql(
            f"SELECT * FROM {_EMPTY_TABLE} UNION ALL BY NAME SELECT * FROM _vaebench_probe"
        ).fetchall()
    except duckdb.Error as exc:
        return one_line(exc)
    finally:
        con.sql("DROP VIEW IF EXISTS _vaebench_probe")
    return None


def open_runs(
    root: str | os.PathLike[str], *, validate: bool = False, attempts: str = "latest"
) -> tuple[duckdb.DuckDBPyConnection, Skipped]:
    """Open an in-memory DuckDB connection with a view ``runs`` over all records.

    Returns ``(connection, skipped)`` where ``skipped`` lists the files left out
    as ``(path, one-line reason)``: files that are not valid records and
    duplicates of a record (see the module docstring). ``runs`` holds each run's latest
    finished attempt, or with ``attempts="all"`` every attempt (:func:`_build_view`).
    The fast path checks
    every file's ``run_id`` and ``status`` and the union's column types in one
    DuckDB scan; if DuckDB raises (a corrupt file among good ones), a type is
    off, or when ``validate`` is true, every file is read with pyarrow first
    (and, if DuckDB still refuses the set, probed with DuckDB one by one) and
    the view is built over the good files only. An empty registry gives an
    empty ``runs`` view with the ``RECORD_SCHEMA`` columns. The caller closes
    the connection.

    A file that vanishes between listing and reading (``vaebench registry compact``
    replaced it) is not left out: the files are listed again (up to :data:`LIST_AGAIN`
    times), so a reader during compaction sees every record exactly once. A file that
    vanishes after ``open_runs`` returns makes the first query raise ``duckdb.Error``;
    callers open again then (as :func:`leaderboard` does).
    """
    if attempts not in ATTEMPTS:
        raise ValueError(f"attempts must be one of {', '.join(ATTEMPTS)}, not {attempts!r}")
    for tries_left in range(LIST_AGAIN, -1, -1):
        files = run_files(root)
        if is_remote(root):
            # Read local copies of the (immutable) record files: fetched once, then at local
            # speed; messages name the URLs.
            try:
                copies, gone = staging.record_copies(root, files)
            except staging.StagingError as exc:
                raise RegistryError(str(exc)) from exc
            if gone and tries_left:
                _forget_listing(root)
                continue
            con, skipped = _open_runs_once(root, list(copies.values()), validate, attempts)
            urls = {str(path): url for url, path in copies.items()}
            return con, [(urls.get(str(path), path), why) for path, why in skipped]
        try:
            con, skipped = _open_runs_once(root, files, validate, attempts)
        except (RegistryError, duckdb.Error):  # duckdb: a file removed after its check, before the view read it
            if tries_left == 0 or all(_exists(path) for path in files):
                raise
            _forget_listing(root)
            continue
        vanished = [path for path, _ in skipped if not _exists(path)]
        if not vanished or tries_left == 0:
            return con, skipped
        # A file was removed between listing and reading (``registry compact`` replaced
        # it by a part written before): list again, and the record is read from the part.
        con.close()
        _forget_listing(root)
    raise AssertionError("unreachable")  # pragma: no cover


#: How often :func:`open_runs` lists the files again when one vanished meanwhile.
LIST_AGAIN = 10


def _exists(path: Path | str) -> bool:
    """Whether a listed record file is still there."""
    if is_remote(path):
        fs, inner = filesystem(path)
        fs.invalidate_cache(inner.rsplit("/", 1)[0])
        try:
            return bool(fs.exists(inner))
        except Exception:  # noqa: BLE001 - unknown: not known to have vanished
            return True
    return os.path.exists(path)


def _forget_listing(root: str | os.PathLike[str]) -> None:
    """Drop a remote filesystem's cached listings of ``root`` (fsspec caches them)."""
    if is_remote(root):
        fs, inner = filesystem(root)
        fs.invalidate_cache(f"{inner}/runs")


def _open_runs_once(
    root: str | os.PathLike[str], files: Sequence[Path | str], validate: bool, attempts: str
) -> tuple[duckdb.DuckDBPyConnection, Skipped]:
    """One reading of the listed ``files`` for :func:`open_runs`."""
    # No progress bar: DuckDB draws one on stdout for queries over ~2 s, which would
    # mix into `query --json` / leaderboard output.
    con = duckdb.connect(":memory:")
    try:
        try:
            con.execute("SET enable_progress_bar = false")
        except duckdb.InvalidInputException:
            # In a Jupyter kernel without ipywidgets DuckDB draws no bar and refuses the
            # setting (duckdb PR #6831); tests/test_notebook.py runs there.
            pass
        con.from_arrow(RECORD_SCHEMA.empty_table()).to_table(_EMPTY_TABLE)
        checked = None if validate else _fast_check(con, files)
        if checked is not None:
            ids, skipped = checked
            good, duplicates = _dedupe(ids)
            # These files bound (and scanned) together just now: the first query binds them.
            _build_view(con, good, bind=False, attempts=attempts)
            return con, sorted(skipped + duplicates, key=lambda item: str(item[0]))

        skipped = []
        ids = {}
        for path in files:
            run_id, attempt, problem = _pyarrow_check(path)
            if problem is None:
                ids[path] = (run_id, attempt)
            else:
                skipped.append((path, problem))
        good, duplicates = _dedupe(ids)
        skipped += duplicates
        try:
            _build_view(con, good, attempts=attempts)
        except duckdb.Error:
            still_good: list[Path | str] = []
            for path in good:
                problem = _duckdb_problem(con, path)
                if problem is None:
                    still_good.append(path)
                else:
                    skipped.append((path, problem))
            try:
                _build_view(con, still_good, attempts=attempts)
            except duckdb.Error as exc:
                raise RegistryError(
                    f"cannot query registry {display(root)}: {one_line(exc)}"
                ) from exc
        skipped.sort(key=lambda item: str(item[0]))
        return con, skipped
    except BaseException:
        con.close()
        raise


def recorded_metric_info(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """What the records of the ``runs`` view say of their metrics: ``{"metric_directions":
    {name: direction}, "metric_categories": {name: category}}`` (a record-like row for
    ``harness.metric_info.metric_info``; of conflicting values, the smallest)."""
    out: dict[str, dict[str, str]] = {}
    for column in ("metric_directions", "metric_categories"):
        rows = con.sql(
            f"SELECT e.key, min(e.value) FROM (SELECT unnest(map_entries({column})) AS e FROM runs) "
            "WHERE e.key IS NOT NULL GROUP BY e.key"
        ).fetchall()
        out[column] = {str(k): str(v) for k, v in rows if v is not None}
    return out


def metric_likelihoods(con: duckdb.DuckDBPyConnection, metric: str, dataset: str | None = None,
                       model: str | None = None) -> list[str]:
    """The distinct model likelihoods of the ok runs holding ``metric`` (and on ``dataset`` /
    of ``model`` where given), sorted."""
    rows = con.sql(
        "SELECT DISTINCT likelihood FROM runs WHERE status = 'ok' AND element_at(metrics, ?)[1] IS NOT NULL "
        "AND (CAST(? AS VARCHAR) IS NULL OR dataset = ?) AND (CAST(? AS VARCHAR) IS NULL OR model = ?) "
        "ORDER BY likelihood",
        params=[metric, dataset, dataset, model, model],
    ).fetchall()
    return [str(r[0]) for r in rows]


def metric_keys(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Distinct metric keys present in the ``runs`` view, sorted."""
    rows = con.sql(
        "SELECT DISTINCT k FROM (SELECT unnest(map_keys(metrics)) AS k FROM runs) "
        "WHERE k IS NOT NULL ORDER BY k"
    ).fetchall()
    return [r[0] for r in rows]


@dataclass
class LeaderboardResult:
    """A leaderboard: ``table`` (one row per group) and ``skipped`` bad files."""

    table: pa.Table
    skipped: Skipped = field(default_factory=list)
    #: the direction the metric was ranked by (its plugin's, else the records')
    direction: str = "higher"
    #: one line for the user (``reconstruction`` ranked within each likelihood), or ``""``
    note: str = ""
    #: per row of ``table`` (``harness.standings.annotate``): ``ci95`` and, with a reference, ``reference``
    annotations: list[dict[str, Any]] = field(default_factory=list)
    #: ``harness.standings.top_two_seeds_needed`` of the table, or ``None``
    seeds_needed: dict[str, Any] | None = None


def _check_by(by: Sequence[str] | str) -> list[str]:
    """Validate group-by column names against ``GROUPABLE_COLUMNS``."""
    if isinstance(by, str):
        by = (by,)
    out: list[str] = []
    for name in by:
        if not isinstance(name, str) or name not in GROUPABLE_COLUMNS:
            raise ValueError(
                f"unknown column {name!r}; choose from {', '.join(GROUPABLE_COLUMNS)}"
            )
        if name not in out:
            out.append(name)
    return out


def _leaderboard_sql(by: Sequence[str], descending: bool, where: str = "TRUE") -> str:
    """Build the leaderboard SQL. Only validated identifiers and a selection's
    WHERE fragment (``Selection.where``: quoted names, ``?`` for every value) are interpolated."""
    cols = [_quote_ident(c) for c in by]
    select_by = "".join(f"{c}, " for c in cols)
    group_by = f"GROUP BY {', '.join(cols)}" if cols else ""
    order = "DESC" if descending else "ASC"
    order_by = ", ".join([f"mean {order} NULLS LAST"] + [f"{c} ASC NULLS LAST" for c in cols])
    return f"""
        WITH r AS (
            SELECT {select_by}status, seed,
                   CASE WHEN status = 'ok' THEN element_at(metrics, ?)[1] END AS v
            FROM runs
            WHERE (CAST(? AS VARCHAR) IS NULL OR dataset = ?)
              AND (CAST(? AS VARCHAR) IS NULL OR model = ?)
              AND ({where})
        )
        SELECT {select_by}
               avg(v) FILTER (WHERE isfinite(v)) AS mean,
               stddev_samp(v) FILTER (WHERE isfinite(v)) AS std,
               count(v) FILTER (WHERE isfinite(v)) AS n,
               count(*) FILTER (WHERE status IN ('diverged', 'failed')) AS n_diverged,
               coalesce(list(seed ORDER BY seed) FILTER (WHERE seed IS NOT NULL),
                        []::BIGINT[]) AS seeds
        FROM r
        {group_by}
        HAVING count(*) > 0
        ORDER BY {order_by}
    """


def rank(
    con: duckdb.DuckDBPyConnection,
    metric: str = "mig",
    by: Sequence[str] = DEFAULT_BY,
    dataset: str | None = None,
    model: str | None = None,
    descending: bool = True,
    selection: Selection | None = None,
) -> pa.Table:
    """The leaderboard of the runs in table/view ``runs`` of an open connection.

    What :func:`leaderboard` computes (see there), with ``selection`` narrowing
    the runs further (its values are bound parameters). Raises ``ValueError``
    for a ``by`` column not in ``GROUPABLE_COLUMNS`` and ``duckdb.Error`` when
    the data cannot be scanned.
    """
    cols = _check_by(by)
    if not isinstance(metric, str):
        raise ValueError(f"metric must be a string, not {type(metric).__name__}")
    for name, value in (("dataset", dataset), ("model", model)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or None, not {type(value).__name__}")
    where, where_params = selection.where() if selection is not None else ("TRUE", [])
    sql = _leaderboard_sql(cols, descending, where)
    params: list[Any] = [metric, dataset, dataset, model, model, *where_params]
    return to_arrow(con.sql(sql, params=params))


def group_values(
    con: duckdb.DuckDBPyConnection,
    metric: str,
    by: Sequence[str] = DEFAULT_BY,
    dataset: str | None = None,
    model: str | None = None,
    selection: Selection | None = None,
) -> dict[tuple[Any, ...], list[tuple[float, str | None]]]:
    """The runs behind each :func:`rank` row: ``{(by values...): [(value, metric_params JSON),
    ...]}`` of the ok runs with a finite value of ``metric`` (the runs its ``mean``, ``std`` and
    ``n`` are over), ordered by seed. Same filters and validation as :func:`rank`."""
    cols = _check_by(by)
    where, where_params = selection.where() if selection is not None else ("TRUE", [])
    select_by = "".join(f"{_quote_ident(c)}, " for c in cols)
    sql = f"""
        SELECT {select_by}v, metric_params FROM (
            SELECT {select_by}seed, metric_params, element_at(metrics, ?)[1] AS v
            FROM runs
            WHERE status = 'ok'
              AND (CAST(? AS VARCHAR) IS NULL OR dataset = ?)
              AND (CAST(? AS VARCHAR) IS NULL OR model = ?)
              AND ({where})
        ) WHERE isfinite(v) ORDER BY seed NULLS LAST
    """
    out: dict[tuple[Any, ...], list[tuple[float, str | None]]] = {}
    for row in con.sql(sql, params=[metric, dataset, dataset, model, model, *where_params]).fetchall():
        out.setdefault(tuple(row[: len(cols)]), []).append((float(row[len(cols)]), row[len(cols) + 1]))
    return out


def leaderboard(
    root: str | os.PathLike[str],
    metric: str = "mig",
    by: Sequence[str] = DEFAULT_BY,
    dataset: str | None = None,
    model: str | None = None,
    descending: bool = True,
    attempts: str = "latest",
) -> LeaderboardResult:
    """Rank groups of runs by the mean of one metric.

    Columns: the ``by`` columns, ``mean``, ``std`` (sample std, ddof=1; NULL
    when fewer than two values), ``n`` (ok runs with a finite value of the
    metric), ``n_diverged`` (diverged or failed runs in the group) and
    ``seeds`` (sorted seeds of every run in the group, any status). Only
    ``status = 'ok'`` runs contribute to mean/std/n; a NaN/inf metric value
    counts as missing. A group whose runs all lack the metric still appears,
    with ``mean`` NULL and ``n`` 0, ranked last. Rows are ordered by ``mean``
    (descending unless ``descending=False``, NULLs last), then by the ``by``
    columns. ``dataset`` / ``model`` filter exactly. Each run counts once, with its latest
    finished attempt; ``attempts="all"`` counts every attempt.

    Raises ``ValueError`` for a ``by`` column not in ``GROUPABLE_COLUMNS``.
    """
    _check_by(by)
    con, skipped = open_runs(root, attempts=attempts)
    try:
        try:
            table = rank(con, metric, by, dataset, model, descending)
        except duckdb.Error:
            # A file whose footer is fine but whose data is not only fails when
            # scanned: validate every file and try once more.
            con.close()
            con, skipped = open_runs(root, validate=True, attempts=attempts)
            table = rank(con, metric, by, dataset, model, descending)
    finally:
        con.close()
    return LeaderboardResult(table=table, skipped=skipped)


def show(root: str | os.PathLike[str], run_id_or_prefix: str) -> dict[str, Any]:
    """The full record of one run (full id or unique prefix); see ``read_record``."""
    return read_record(root, run_id_or_prefix)


def recorded_runs(root: str | os.PathLike[str]) -> tuple[dict[str, str], Skipped]:
    """``(run_id -> status of every valid record, files left out)``.

    Used by ``vaebench run``: with ``--resume``, ``ok`` and ``diverged`` runs are done,
    ``failed`` ones are retried, and a run whose record file is left out (unreadable,
    invalid) is trained again, which the CLI says.
    """
    sql = "SELECT run_id, status FROM runs WHERE run_id IS NOT NULL ORDER BY run_id"
    con, skipped = open_runs(root)
    try:
        try:
            rows = con.sql(sql).fetchall()
        except duckdb.Error:
            con.close()
            con, skipped = open_runs(root, validate=True)
            rows = con.sql(sql).fetchall()
    finally:
        con.close()
    return {run_id: status for run_id, status in rows}, skipped


def recorded_status(root: str | os.PathLike[str]) -> dict[str, str]:
    """Map run_id -> status for every valid record (:func:`recorded_runs` without the
    files left out)."""
    return recorded_runs(root)[0]
