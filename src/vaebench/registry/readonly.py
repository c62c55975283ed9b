"""A locked-down DuckDB connection over the registry, for SQL a user types.

:func:`open_readonly` reads every record (as :func:`query.open_runs` does,
skipping corrupt files) into an in-memory table ``runs`` and then locks the
connection::

    SET python_enable_replacements = false   -- no Python variables as tables
    SET autoinstall_known_extensions = false
    SET autoload_known_extensions = false
    SET temp_directory = ''                  -- never spill to disk
    SET enable_external_access = false       -- no file/URL reads or writes, no INSTALL/LOAD/ATTACH
    SET lock_configuration = true            -- and no SET can undo the above

The table is materialised first because with external access disabled DuckDB
refuses to read the Parquet files behind a ``read_parquet`` view as well
(duckdb 2.0: "Permission Error: Cannot access file ... file system operations
are disabled by configuration").

:func:`run_select` additionally accepts only a single statement that DuckDB's
own parser classifies as ``SELECT`` (which includes ``WITH``, ``VALUES``,
``FROM runs``, ``DESCRIBE``/``SUMMARIZE``), so nothing is created, changed or
dropped even in memory.
"""

from __future__ import annotations

import os
from typing import Any

import duckdb
import pyarrow as pa

from vaebench.registry.query import Skipped, _one_line, _to_arrow, open_runs
from vaebench.registry.store import RegistryError

__all__ = ["LOCK_SETTINGS", "check_select", "open_readonly", "run_select"]

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
    con.execute("DROP VIEW IF EXISTS _vaebench_run_files")
    con.execute("DROP TABLE IF EXISTS _vaebench_empty_runs")
    con.execute(f"ALTER TABLE {_DATA} RENAME TO runs")


def lock(con: duckdb.DuckDBPyConnection) -> None:
    """Apply :data:`LOCK_SETTINGS` (irreversible for this connection)."""
    for name, value in LOCK_SETTINGS:
        literal = ("true" if value else "false") if isinstance(value, bool) else "'" + str(value).replace("'", "''") + "'"
        con.execute(f"SET {name} = {literal}")


def open_readonly(root: str | os.PathLike[str]) -> tuple[duckdb.DuckDBPyConnection, Skipped]:
    """An in-memory connection with a table ``runs`` (every readable record), locked.

    Returns ``(connection, skipped files)``; the caller closes the connection.
    Raises :class:`RegistryError` when the registry cannot be read at all.
    """
    con, skipped = open_runs(root)
    try:
        _materialise(con)
    except duckdb.Error:
        # A file with a good footer but bad data only fails when scanned.
        con.close()
        con, skipped = open_runs(root, validate=True)
        try:
            _materialise(con)
        except duckdb.Error as exc:
            con.close()
            raise RegistryError(f"cannot query registry {root}: {_one_line(exc)}") from exc
    try:
        lock(con)
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
        raise ValueError(f"query does not parse: {_one_line(exc)}") from None
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


def run_select(root: str | os.PathLike[str], sql: str) -> tuple[pa.Table, Skipped]:
    """Run one read-only SELECT over the ``runs`` table of registry ``root``.

    Returns ``(result table, skipped files)``. Raises ``ValueError`` (one line)
    for anything but a single SELECT, or when DuckDB rejects the query
    (including every file, URL or extension access), and :class:`RegistryError`
    when the registry cannot be read.
    """
    check_select(sql)
    con, skipped = open_readonly(root)
    try:
        check_select(sql, con)
        try:
            table = _to_arrow(con.sql(sql))
        except duckdb.Error as exc:
            raise ValueError(_one_line(exc)) from None
    finally:
        con.close()
    return table, skipped
