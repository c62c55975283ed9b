"""``vaebench registry compact``: the one-record files (and earlier parts) rewritten into a few
large Parquet files, one per dataset and model::

    <root>/runs/compacted/dataset=<d>/model=<m>/part-<attempt-like id><rand>.parquet

Every column stays in the file (``dataset`` and ``model`` too; the directory names are
only sanitised copies for paths, ``_null_`` for a missing value). Every attempt is kept;
a record without an attempt (an older file) keeps ``attempt`` null.

Atomic for readers: each new part is written whole first (locally to a temporary file in
``<root>/runs``, fsynced, then ``os.replace``-d into place; on object storage put whole
with a conditional put, ``"xb"``), and only once every part is in place are the files it
replaced removed. A reader lists the one-record files before the parts, so it finds a
record in its old file, its new part, or both (read once: ``query`` dedupes by
``(run_id, attempt)``); a file removed between listing and reading makes
``query.open_runs`` list again. Records a writer adds during compaction are not touched.

Nothing is lost: a file that is not a valid record (or a part with a row that is no run)
is left where it is; a partition holding two *different* records of one
``(run_id, attempt)`` is not rewritten (``registry verify`` names them); two identical
copies become one.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from vaebench.registry import location
from vaebench.registry.scan import FileRead, conform, content, read_files, remove_file
from vaebench.registry.store import COMPACTED, new_attempt, table_rows, write_table

__all__ = ["CompactResult", "compact", "partition_path"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def _safe(value: Any) -> str:
    """A partition value as a path component: ``[A-Za-z0-9_.+-]``, at most 100 characters,
    never ``.``/``..``; ``_null_`` for a missing value."""
    if value is None:
        return "_null_"
    text = _UNSAFE.sub("_", str(value))[:100]
    return text if text.strip(".") else "_" + text


def partition_path(dataset: Any, model: Any) -> str:
    """``dataset=<d>/model=<m>`` (sanitised) under ``runs/compacted``."""
    return f"dataset={_safe(dataset)}/model={_safe(model)}"


@dataclass
class CompactResult:
    """What a compaction did (or, with ``dry_run``, would do). Paths are local paths or URLs."""

    records: int = 0
    partitions: int = 0
    written: list[Path | str] = field(default_factory=list)
    removed: list[Path | str] = field(default_factory=list)
    #: ``(path, reason)`` of files left where they are (invalid, or in a conflicting partition).
    left: list[tuple[Path | str, str]] = field(default_factory=list)
    #: ``"run_id.attempt"`` held twice with different content (their partition is not rewritten).
    conflicts: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "partitions": self.partitions, "dry_run": self.dry_run,
                "written": [str(p) for p in self.written], "removed": [str(p) for p in self.removed],
                "left": [{"path": str(p), "reason": r} for p, r in self.left], "conflicts": self.conflicts}


def _partition_of(read: FileRead) -> list[str]:
    table = read.table
    assert table is not None
    names = table.column_names
    datasets = table.column("dataset").to_pylist() if "dataset" in names else [None] * table.num_rows
    models = table.column("model").to_pylist() if "model" in names else [None] * table.num_rows
    return [partition_path(d, m) for d, m in zip(datasets, models)]


def _write_part(root: str | os.PathLike[str], partition: str, table: pa.Table) -> Path | str:
    """Write ``table`` as a new part of ``partition`` whole; return its path or URL."""
    name = f"part-{new_attempt()}{secrets.token_hex(2)}.parquet"
    return write_table(root, f"{COMPACTED}/{partition}/{name}", table, "part")


def _combine(pieces: list[pa.Table]) -> pa.Table:
    """Concatenate record tables of possibly different schemas (same schema first: cheap)."""
    by_schema: dict[pa.Schema, list[pa.Table]] = {}
    for piece in pieces:
        by_schema.setdefault(piece.schema, []).append(piece)
    conformed = [conform(pa.concat_tables(group)) for group in by_schema.values()]
    return pa.concat_tables(conformed, promote_options="permissive")


def compact(root: str | os.PathLike[str], *, dry_run: bool = False) -> CompactResult:
    """Compact the registry at ``root`` (a path or URL); see the module docstring.

    A partition already held by exactly one part (and nothing else) is left as it is, so
    a second compaction with nothing new writes nothing. Raises
    ``store.RegistryWriteError`` when a part cannot be written (nothing is removed then).
    """
    result = CompactResult(dry_run=dry_run)
    reads = read_files(root)
    # The order readers prefer a record's copies in: one-record files, then by name.
    usable = sorted((r for r in reads if r.usable), key=lambda r: (r.compacted, str(r.path)))
    for read in reads:
        if not read.usable and not read.vanished:
            result.left.append((read.path, read.problem or "unreadable"))
    # partition -> key -> [(read, row index)]
    sources: dict[str, dict[tuple[str, Any], list[tuple[FileRead, int]]]] = {}
    file_partitions: dict[int, set[str]] = {}
    for read in usable:
        parts = _partition_of(read)
        file_partitions[id(read)] = set(parts)
        for i, (key, part) in enumerate(zip(read.keys(), parts)):
            sources.setdefault(part, {}).setdefault(key, []).append((read, i))

    blocked: set[str] = set()
    for part, keys in sources.items():
        for key, copies in keys.items():
            if len(copies) > 1:
                seen = {content(table_rows(r.table.slice(i, 1))[0]) for r, i in copies}  # type: ignore[union-attr]
                if len(seen) > 1:
                    blocked.add(part)
                    result.conflicts.append(f"{key[0]}.{key[1]}" if key[1] else key[0])
    result.conflicts.sort()

    todo: dict[str, list[pa.Table]] = {}
    replaced: dict[int, FileRead] = {}
    for part, keys in sorted(sources.items()):
        if part in blocked:
            continue
        files = {id(r): r for copies in keys.values() for r, _ in copies}
        only = next(iter(files.values())) if len(files) == 1 else None
        if (only is not None and only.compacted and file_partitions[id(only)] == {part}
                and all(len(c) == 1 for c in keys.values())):
            continue  # already one part, alone
        # The first copy of each record, as readers take it; rows taken per file in one go.
        take: dict[int, list[int]] = {}
        for copies in keys.values():
            read, i = copies[0]
            take.setdefault(id(read), []).append(i)
        pieces = [files[fid].table.take(sorted(idx)) for fid, idx in take.items()]  # type: ignore[union-attr]
        table = _combine(pieces)
        table = table.sort_by([("run_id", "ascending"), ("attempt", "ascending")])
        todo[part] = [table]
        result.records += table.num_rows
        replaced.update(files)
    # A file with rows in a partition that is not rewritten stays (its rows there must not go).
    by_id = {id(r): r for r in usable}
    for fid in sorted((f for f, parts in file_partitions.items() if parts & blocked), key=lambda f: str(by_id[f].path)):
        replaced.pop(fid, None)
        result.left.append((by_id[fid].path, "holds records of a partition with conflicting copies"))
    result.partitions = len(todo)
    if dry_run:
        result.written = [f"{location.join(root, 'runs', COMPACTED, part)}/part-*.parquet" for part in todo]
        result.removed = sorted((r.path for r in replaced.values()), key=str)
        return result
    for part, (table,) in todo.items():
        result.written.append(_write_part(root, part, table))
    # Every new part is in place: the files they replaced can go.
    for read in sorted(replaced.values(), key=lambda r: str(r.path)):
        if remove_file(read.path):
            result.removed.append(read.path)
    return result
