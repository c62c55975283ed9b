"""Sharing between labs: ``vaebench registry merge OTHER`` and ``vaebench export``.

:func:`merge` copies the records of another registry (a path or any fsspec URL; its
one-record files and its compacted parts alike) into this one as one-record files
``<run_id>.<attempt>.parquet`` (``store.write_record``), keeping every attempt once: a
record whose ``(run_id, attempt)`` is here already is skipped. A record without an attempt
(written before attempts were kept) gets a deterministic one, :func:`derived_attempt` (its
``finished_at``, else ``started_at``, and a hash of run id and that time), the same on
every merge, so merging twice copies nothing the second time. With ``artifacts`` the files
of ``artifacts/<run_id>/`` of every run with a record there come too (``partial/``, a
periodic checkpoint of a run in training, never; a file here already is kept).

:func:`export_table` gives a flat table of the selected runs for pandas or R: one row per
record (latest attempt per run, or all), plain columns as they are, ``metrics`` spread into
``metric.<key>`` columns, the other maps and lists (``metric_params`` is text already) as
JSON text, and the per-step ``history`` and ``signals`` left out (``vaebench show --json``
has them). :func:`write_export` writes it as CSV, JSON lines or Parquet.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from vaebench.registry import location, staging
from vaebench.registry import ATTEMPTS
from vaebench.registry.query import open_runs, to_arrow
from vaebench.registry.scan import read_files, rows
from vaebench.registry.schema import RECORD_SCHEMA
from vaebench.registry.selection import Selection, check_prefixes
from vaebench.registry.store import RegistryError, write_record

__all__ = ["EXPORT_FORMATS", "LEFT_OUT", "derived_attempt", "export_table", "merge", "write_export"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
#: Formats :func:`write_export` writes.
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
#: Record columns an export leaves out (per-step series; ``vaebench show --json`` has them).
LEFT_OUT = ("history", "signals")


def derived_attempt(record: dict[str, Any]) -> str:
    """A deterministic attempt id for a record without one: the UTC second of its
    ``finished_at`` (else ``started_at``, else 1970) and 6 hex digits of a hash of the run id
    and that time: ``YYYYMMDDTHHMMSSZ-xxxxxx``, like ``store.new_attempt``."""
    stamp = record.get("finished_at") or record.get("started_at")
    when = stamp.astimezone(_dt.timezone.utc) if isinstance(stamp, _dt.datetime) else _EPOCH
    digest = hashlib.sha256(f"{record.get('run_id')}|{when.isoformat()}".encode()).hexdigest()[:6]
    return f"{when:%Y%m%dT%H%M%S}Z-{digest}"


def _present(root: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """``(run_id, attempt)`` of every record here (a derived attempt for one without)."""
    con, _ = open_runs(root, attempts="all")
    try:
        found = con.sql("SELECT run_id, attempt, finished_at, started_at FROM runs").fetchall()
    finally:
        con.close()
    return {(r, a or derived_attempt({"run_id": r, "finished_at": f, "started_at": s})) for r, a, f, s in found}


def merge(root: str | os.PathLike[str], other: str | os.PathLike[str], *, artifacts: bool = False,
          dry_run: bool = False) -> dict[str, Any]:
    """Copy the records (and with ``artifacts`` the artifacts) of registry ``other`` into
    ``root`` (module docstring). Returns counts: ``copied``, ``present`` (here already),
    ``left_out`` (``[{path, reason}]``: files there that are no valid record, records this
    version cannot write), ``artifact_files`` copied. Raises ``store.RegistryError`` when a
    record cannot be written here."""
    if location.display(root) == location.display(other):
        raise RegistryError("merge: OTHER is this registry")
    present = _present(root)
    copied = skipped = 0
    left_out: list[dict[str, str]] = []
    run_ids: set[str] = set()
    for read in read_files(other):
        if read.table is None or (read.problem is not None and not read.compacted):
            if not read.vanished:
                left_out.append({"path": str(read.path), "reason": read.problem or "unreadable"})
            continue
        for record in rows(read):
            if record.get("run_id") is None or record.get("status") is None:
                continue
            run_ids.add(record["run_id"])
            record = {k: v for k, v in record.items() if k in RECORD_SCHEMA.names}
            record["attempt"] = record.get("attempt") or derived_attempt(record)
            key = (record["run_id"], record["attempt"])
            if key in present:
                skipped += 1
                continue
            if not dry_run:
                try:
                    write_record(root, record)
                except RegistryError as exc:
                    if type(exc) is not RegistryError:  # a storage failure: stop
                        raise
                    left_out.append({"path": str(read.path), "reason": f"{key[0]}.{key[1]}: {exc}"})
                    continue
            present.add(key)
            copied += 1
    files = _copy_artifacts(root, other, sorted(run_ids), dry_run) if artifacts else 0
    return {"from": location.display(other), "into": location.display(root), "copied": copied,
            "present": skipped, "left_out": left_out, "artifact_files": files, "dry_run": dry_run}


def _copy_artifacts(root: str | os.PathLike[str], other: str | os.PathLike[str], run_ids: list[str],
                    dry_run: bool) -> int:
    """Copy ``artifacts/<run_id>/**`` (not ``partial/``) of ``other`` to ``root``, file by
    file, keeping files here; returns how many were (or would be) copied."""
    src_fs, src_base = location.filesystem(other)
    dst_fs, dst_base = location.filesystem(root)
    count = 0
    for run_id in run_ids:
        prefix = f"{src_base}/artifacts/{run_id}"
        try:
            found = src_fs.find(prefix)
        except FileNotFoundError:
            continue
        for path in found:
            rel = path[len(prefix):].lstrip("/")
            if not rel or rel.split("/", 1)[0] == staging.PARTIAL:
                continue
            target = f"{dst_base}/artifacts/{run_id}/{rel}"
            if dst_fs.exists(target):
                continue
            count += 1
            if dry_run:
                continue
            data = src_fs.cat_file(path)
            if location.is_remote(root):
                dst_fs.pipe_file(target, data)
            else:  # whole or not at all
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(f"{target}.{os.getpid()}.partial")
                tmp.write_bytes(data)
                os.replace(tmp, target)
    return count


# ------------------------------------------------------------------ export


def _flat(value: Any) -> Any:
    """A nested value as JSON text (non-finite floats as null); scalars as they are."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_finite(value), sort_keys=True, default=str)
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def export_table(root: str | os.PathLike[str], selection: Selection | None = None,
                 attempts: str = "latest") -> pa.Table:
    """The selected runs as a flat table (module docstring), ordered by run id and attempt.
    Raises ``ValueError`` for a run id prefix that matches no run or several."""
    selection = selection or Selection()
    con, _ = open_runs(root, attempts=attempts)
    try:
        check_prefixes(con, selection)
        where, params = selection.where()
        table = to_arrow(con.sql(f"SELECT * FROM runs WHERE {where} ORDER BY run_id, attempt", params=params))
    finally:
        con.close()
    table = table.drop_columns([c for c in LEFT_OUT if c in table.column_names])
    records = table.to_pylist(maps_as_pydicts="lossy")
    metric_keys = sorted({k for r in records for k in (r.get("metrics") or {})})
    out: dict[str, list[Any]] = {}
    for name in table.column_names:
        if name == "metrics":
            for key in metric_keys:
                out[f"metric.{key}"] = [(r.get("metrics") or {}).get(key) for r in records]
            continue
        field = table.schema.field(name)
        nested = pa.types.is_nested(field.type)
        out[name] = [_flat(r[name]) if nested else r[name] for r in records]
    types = {n: (pa.string() if pa.types.is_nested(table.schema.field(n).type) else table.schema.field(n).type)
             for n in table.column_names if n != "metrics"}
    fields = [pa.field(n, types.get(n, pa.float64())) for n in out]
    return pa.Table.from_pydict(out, schema=pa.schema(fields))


def write_export(table: pa.Table, out: Path, fmt: str) -> Path:
    """Write an :func:`export_table` to ``out`` as ``csv``, ``jsonl`` (one JSON object a line,
    non-finite numbers as null) or ``parquet``, whole (a temporary file renamed)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose from {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq  # noqa: PLC0415

            pq.write_table(table, tmp)
        elif fmt == "csv":
            import pyarrow.csv as pcsv  # noqa: PLC0415

            pcsv.write_csv(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(_finite(row), default=str, allow_nan=False) + "\n")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
