"""A locked-down DuckDB connection over the registry, for SQL a user types.

:func:`open_readonly` reads every record (as :func:`query.open_runs` does,
skipping corrupt files) into an in-memory table ``runs`` and then locks the
connection::

    SET memory_limit = ?                     -- when given (run_select: 2 GB by default)
    SET python_enable_replacements = false   -- no Python variables as tables
    SET autoinstall_known_extensions = false
    SET autoload_known_extensions = false
    SET temp_directory = ''                  -- never spill to disk
    SET enable_external_access = false       -- no file/URL reads or writes, no INSTALL/LOAD/ATTACH
    SET lock_configuration = true            -- and no SET can undo the above

The memory limit has to be set before the lock: afterwards no SET is accepted.

The table is materialised first because with external access disabled DuckDB
refuses to read the Parquet files behind a ``read_parquet`` view as well
(duckdb 2.0: "Permission Error: Cannot access file ... file system operations
are disabled by configuration").

:func:`run_select` additionally accepts only a single statement that DuckDB's
own parser classifies as ``SELECT`` (which includes ``WITH``, ``VALUES``,
``FROM runs``, ``DESCRIBE``/``SUMMARIZE``), so nothing is created, changed or
dropped even in memory. It runs the statement in a worker thread under a time limit
(:data:`DEFAULT_TIMEOUT` seconds) and the memory limit (:data:`DEFAULT_MEMORY_LIMIT`);
past either, or on Ctrl-C in the calling thread, the query is stopped with DuckDB's
``connection.interrupt()`` and nothing is returned.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import duckdb
import pyarrow as pa

from vaebench.registry.query import SOURCE_VIEWS, Skipped, one_line, open_runs, to_arrow
from vaebench.registry.store import RegistryError

__all__ = [
    "DEFAULT_MEMORY_LIMIT", "DEFAULT_TIMEOUT", "LOCK_SETTINGS", "QueryLimitError", "check_select", "check_timeout",
    "open_readonly",
    "parse_size", "run_select",
]

#: Seconds a query may run (``vaebench query --timeout``).
DEFAULT_TIMEOUT = 60.0
#: Memory a query may use (``vaebench query --memory-limit``); DuckDB's own default is 80% of RAM.
DEFAULT_MEMORY_LIMIT = "2GB"


class QueryLimitError(ValueError):
    """A query stopped at its time or memory limit; ``limit`` is ``"timeout"`` or ``"memory"``."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"2GB"`` / ``"512MiB"`` / ``"1.5gb"`` / ``1000000`` -> bytes (> 0, decimal or binary
    units as DuckDB reads them); a one-line ``ValueError`` otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size")
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.fullmatch(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{text!r} is not a size (e.g. 2GB, 512MB, 1GiB)")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{text!r} is not a size above zero")
    return size

#: Applied in this order; ``lock_configuration`` must come last.
LOCK_SETTINGS: tuple[tuple[str, Any], ...] = (
    ("python_enable_replacements", False),
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("temp_directory", ""),
    ("enable_external_access", False),
    ("lock_configuration", True),
)

_DATA = "_vaebench_runs_data"


def _materialise(con: duckdb.DuckDBPyConnection) -> None:
    """Replace the ``runs`` view (over files) with a table holding the same rows."""
    con.execute(f"DROP TABLE IF EXISTS {_DATA}")
    con.execute(f"CREATE TABLE {_DATA} AS SELECT * FROM runs")
    con.execute("DROP VIEW runs")
    for name in SOURCE_VIEWS:
        con.execute(f"DROP VIEW IF EXISTS {name}")
    con.execute("DROP TABLE IF EXISTS _vaebench_empty_runs")
    con.execute(f"ALTER TABLE {_DATA} RENAME TO runs")


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` when it is ``None`` or a finite number of seconds above zero; ``ValueError`` otherwise."""
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                                    and 0 < timeout < float("inf")):
        raise ValueError(f"{timeout!r} is not a number of seconds above zero")
    return timeout


def lock(con: duckdb.DuckDBPyConnection, memory_limit: str | int | None = None) -> None:
    """Set ``memory_limit`` (bytes, or a size :func:`parse_size` reads; ``None``: DuckDB's
    default) and apply :data:`LOCK_SETTINGS` (irreversible for this connection)."""
    if memory_limit is not None:
        con.execute("SET memory_limit = ?", [f"{parse_size(memory_limit)}B"])
    for name, value in LOCK_SETTINGS:
        literal = ("true" if value else "false") if isinstance(value, bool) else "'" + str(value).replace("'", "''") + "'"
        con.execute(f"SET {name} = {literal}")


def open_readonly(
    root: str | os.PathLike[str], memory_limit: str | int | None = None, attempts: str = "latest",
) -> tuple[duckdb.DuckDBPyConnection, Skipped]:
    """An in-memory connection with a table ``runs`` (every readable record: each run's latest
    finished attempt, or with ``attempts="all"`` every attempt), locked, with
    ``memory_limit`` (see :func:`lock`) for the queries that follow.

    Returns ``(connection, skipped files)``; the caller closes the connection.
    Raises :class:`RegistryError` when the registry cannot be read at all.
    """
    con, skipped = open_runs(root, attempts=attempts)
    try:
        _materialise(con)
    except duckdb.Error:
        # A file with a good footer but bad data only fails when scanned.
        con.close()
        con, skipped = open_runs(root, validate=True, attempts=attempts)
        try:
            _materialise(con)
        except duckdb.Error as exc:
            con.close()
            raise RegistryError(f"cannot query registry {root}: {one_line(exc)}") from exc
    try:
        lock(con, memory_limit)
    except BaseException:
        con.close()
        raise
    return con, skipped


def check_select(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """Return ``sql`` when it is exactly one SELECT statement; ``ValueError`` (one line) otherwise."""
    if not isinstance(sql, str) or not sql.strip():
        raise ValueError("empty query: give one SELECT statement, e.g. \"SELECT model, count(*) FROM runs GROUP BY model\"")
    parser = con if con is not None else duckdb.connect(":memory:")
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValueError(f"query does not parse: {one_line(exc)}") from None
    finally:
        if con is None:
            parser.close()
    if len(statements) != 1:
        raise ValueError(f"give exactly one SELECT statement (found {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise ValueError(f"only SELECT queries are allowed (this is a {name} statement); the registry is read-only here")
    return sql


def run_select(
    root: str | os.PathLike[str],
    sql: str,
    timeout: float | None = DEFAULT_TIMEOUT,
    memory_limit: str | int | None = DEFAULT_MEMORY_LIMIT,
) -> tuple[pa.Table, Skipped]:
    """Run one read-only SELECT over the ``runs`` table of registry ``root``.

    ``timeout``: seconds the query may run (``None``: no limit); ``memory_limit``: bytes or
    a size such as ``"2GB"`` (``None``: DuckDB's default, 80% of RAM). Returns ``(result
    table, skipped files)``. Raises ``ValueError`` (one line) for anything but a single
    SELECT, or when DuckDB rejects the query (including every file, URL or extension
    access); :class:`QueryLimitError` (a ``ValueError``) when it runs past either limit;
    :class:`RegistryError` when the registry cannot be read. A ``KeyboardInterrupt`` in the
    calling thread stops the query and is raised again.
    """
    check_select(sql)
    check_timeout(timeout)
    limit = parse_size(memory_limit) if memory_limit is not None else None
    con, skipped = open_readonly(root, limit)
    try:
        check_select(sql, con)
        table = _run_bounded(con, sql, timeout, None if memory_limit is None else str(memory_limit))
    finally:
        con.close()
    return table, skipped


def _run_bounded(con: duckdb.DuckDBPyConnection, sql: str, timeout: float | None, limit: str | None) -> pa.Table:
    """``sql``'s result, computed in a worker thread while this one waits at most ``timeout``
    seconds; on timeout or ``KeyboardInterrupt`` the query is interrupted and awaited.
    ``limit``: the connection's memory limit as the user gave it (for the message)."""
    out: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C cannot be waited on again (3.11)

    def work() -> None:
        try:
            out["table"] = to_arrow(con.sql(sql))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            out["error"] = exc
        finally:
            done.set()

    def stop() -> None:
        """Interrupt the query and wait for the worker to let go of the connection. The
        interrupt is repeated until it does: one that lands before DuckDB starts executing
        (the worker still binding the query, say, on a loaded machine) is lost."""
        while True:
            con.interrupt()
            try:
                if done.wait(0.1):
                    return
            except KeyboardInterrupt:  # a second Ctrl-C: it is being stopped already
                continue

    threading.Thread(target=work, name="vaebench-query", daemon=True).start()
    try:
        finished = done.wait(timeout)
    except BaseException:  # KeyboardInterrupt: stop the query before the connection closes
        stop()
        raise
    if not finished:
        stop()
        if "table" not in out:  # (unless it finished in the meantime)
            raise QueryLimitError(f"query stopped after {timeout:g} s, its time limit", "timeout")
    error = out.get("error")
    if isinstance(error, duckdb.OutOfMemoryException):
        raise QueryLimitError(f"query stopped: it needs more memory than its limit of {limit or 'DuckDB default'} "
                              f"({one_line(error)})", "memory")
    if isinstance(error, duckdb.Error):
        raise ValueError(one_line(error)) from None
    if error is not None:
        raise error
    return out["table"]
