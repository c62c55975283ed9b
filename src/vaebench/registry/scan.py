"""Every record file of a registry read once: what ``registry compact``, ``verify``, ``info``
and ``merge`` (``registry.compaction``, ``registry.maintenance``, ``registry.sharing``) stand on.

:func:`read_files` reads the files ``store.run_files`` lists (one-record files and
compacted parts; a local path or a remote URL) with a few threads and says, per file,
whether it is usable: a one-record file must be a valid record (``store.record_problem``),
a compacted part must have the record schema's column types and only valid rows
(``store.row_problem``). A file that vanished between listing and reading (a compaction
replaced it) is marked ``vanished``, not corrupt.

A record's identity is ``(run_id, attempt)`` (:func:`record_key`; ``attempt`` is ``None``
for a record written before attempts were kept). Two copies of one record are compared
by :func:`content`: their values as canonical JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from vaebench.registry import location
from vaebench.registry.query import one_line
from vaebench.registry.schema import RECORD_SCHEMA, schema_problem
from vaebench.registry.store import is_compacted, read_table, record_problem, row_problem, run_files, table_rows

__all__ = ["FileRead", "conform", "content", "exists", "file_size", "read_files", "record_key", "remove_file", "rows"]

#: Threads reading files (object storage answers one request at a time per connection).
READ_THREADS = 8


@dataclass
class FileRead:
    """One record file as read: ``table`` (``None`` when unreadable), ``problem`` (why the
    file, or some row of a compacted part, is not usable; ``None`` when it is),
    ``vanished`` (gone between listing and reading), ``size`` in bytes."""

    path: Path | str
    compacted: bool
    table: pa.Table | None
    problem: str | None
    vanished: bool = False
    size: int = 0

    @property
    def usable(self) -> bool:
        return self.table is not None and self.problem is None

    def keys(self) -> list[tuple[str, str | None]]:
        """``(run_id, attempt)`` of each row (valid rows only matter: a usable file)."""
        if self.table is None:
            return []
        ids = self.table.column("run_id").to_pylist() if "run_id" in self.table.column_names else []
        attempts = (self.table.column("attempt").to_pylist() if "attempt" in self.table.column_names
                    else [None] * len(ids))
        return list(zip(ids, attempts))


def record_key(record: Any) -> tuple[str, str | None]:
    """A record's identity: ``(run_id, attempt)`` (``attempt`` ``None`` for an older record)."""
    return record.get("run_id"), record.get("attempt")


def exists(path: Path | str) -> bool:
    """Whether a record file (local path or URL) exists now."""
    if location.is_remote(path):
        fs, inner = location.filesystem(path)
        try:
            return bool(fs.exists(inner))
        except Exception:  # noqa: BLE001 - unknown: treat as there
            return True
    return os.path.exists(path)


def file_size(path: Path | str) -> int:
    """Size of a file in bytes (0 when it cannot be read)."""
    try:
        if location.is_remote(path):
            fs, inner = location.filesystem(path)
            return int(fs.size(inner) or 0)
        return os.stat(path).st_size
    except Exception:  # noqa: BLE001
        return 0


def remove_file(path: Path | str) -> bool:
    """Remove a file (local or remote); ``False`` when it was already gone."""
    try:
        if location.is_remote(path):
            fs, inner = location.filesystem(path)
            fs.rm_file(inner)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _read_one(path: Path | str) -> FileRead:
    compacted = is_compacted(path)
    try:
        table = read_table(path)
    except FileNotFoundError:
        return FileRead(path, compacted, None, "vanished (removed after it was listed)", vanished=True)
    except Exception as exc:  # noqa: BLE001 - any failure: the file is corrupt or unreadable
        if not exists(path):
            return FileRead(path, compacted, None, "vanished (removed after it was listed)", vanished=True)
        return FileRead(path, compacted, None, f"unreadable: {one_line(exc)}", size=file_size(path))
    size = file_size(path)
    if not compacted:
        return FileRead(path, False, table, record_problem(table), size=size)
    problem = schema_problem(table.schema)
    if problem is None:
        names = table.column_names
        ids = table.column("run_id").to_pylist() if "run_id" in names else [None] * table.num_rows
        statuses = table.column("status").to_pylist() if "status" in names else [None] * table.num_rows
        bad = [(i, row_problem(r, s)) for i, (r, s) in enumerate(zip(ids, statuses)) if row_problem(r, s)]
        if bad:
            problem = f"{len(bad)} of {table.num_rows} rows are no run (row {bad[0][0]}: {bad[0][1]})"
    return FileRead(path, True, table, problem, size=size)


def read_files(root: str | os.PathLike[str], files: Sequence[Path | str] | None = None) -> list[FileRead]:
    """Read every record file of ``root`` (or the ``files`` given), in listing order."""
    files = run_files(root) if files is None else list(files)
    if len(files) < 4:
        return [_read_one(p) for p in files]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(_read_one, files))


def rows(read: FileRead) -> Iterator[dict[str, Any]]:
    """The records of a read file as dicts (``store.table_rows``)."""
    if read.table is not None:
        yield from table_rows(read.table)


def content(record: dict[str, Any]) -> str:
    """A record's values as canonical JSON: two copies of one record are the same record
    exactly when these are equal (NaN equals NaN here; map order does not matter)."""
    return json.dumps(record, sort_keys=True, default=str)


def conform(table: pa.Table) -> pa.Table:
    """``table`` with every ``RECORD_SCHEMA`` column, of the schema's type (missing ones
    null), followed by the columns the schema does not know, as they are: so tables of
    older and newer writers concatenate."""
    n = table.num_rows
    arrays, fields = [], []
    for field in RECORD_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            arrays.append(column if column.type == field.type else column.cast(field.type))
        else:
            arrays.append(pa.nulls(n, type=field.type))
        fields.append(field)
    for name in table.column_names:
        if name not in RECORD_SCHEMA.names:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
