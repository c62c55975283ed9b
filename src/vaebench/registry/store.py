"""Where run records live: one Parquet file (one row) per run.

Layout under the registry root (default ``./vaebench-results``)::

    <root>/runs/<run_id>.parquet      the record, schema ``RECORD_SCHEMA``
    <root>/artifacts/<run_id>/...     checkpoints, plots (written by others)

Records are written atomically: the row goes to a temporary file in the same
directory whose name ends in ``.partial`` (so the read glob ``*.parquet`` never
sees it), the file is fsynced, then ``os.replace``-d onto its final name. A
reader therefore sees either the old record or the new one, never half of one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vaebench.registry.schema import RECORD_SCHEMA, SCHEMA_VERSION, STATUSES

__all__ = [
    "DEFAULT_ROOT",
    "RegistryError",
    "artifact_dir",
    "check_writable",
    "read_record",
    "record_to_dict",
    "run_files",
    "runs_dir",
    "write_record",
]

#: Default registry root, relative to the working directory.
DEFAULT_ROOT = Path("vaebench-results")

_RUN_ID_RE = re.compile(r"[0-9a-f]{6,64}")
_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")
_TEMP_SUFFIX = ".partial"


class RegistryError(Exception):
    """A registry problem, with a one-line message fit to show a user."""


# --------------------------------------------------------------------------- paths


def runs_dir(root: str | os.PathLike[str]) -> Path:
    """Return ``<root>/runs`` (not created)."""
    return Path(root) / "runs"


def _reason(exc: BaseException) -> str:
    """One-line description of an exception (``strerror`` for OS errors)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text = f"{text} ({exc.filename})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _check_run_id(run_id: Any) -> str:
    """Validate a full run id (6-64 lowercase hex characters) and return it."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise RegistryError(
            f"invalid run_id {run_id!r}: expected 6-64 lowercase hex characters"
        )
    return run_id


def partial_dir(root: str | os.PathLike[str], run_id: str) -> Path:
    """``<root>/artifacts/<run_id>/partial``: the periodic checkpoint of a run in training
    (``--checkpoint-every``), removed once the run is recorded; not created here."""
    _check_run_id(run_id)
    return Path(root) / "artifacts" / run_id / "partial"


def artifact_dir(root: str | os.PathLike[str], run_id: str) -> Path:
    """Return ``<root>/artifacts/<run_id>``, creating it if needed."""
    _check_run_id(run_id)
    path = Path(root) / "artifacts" / run_id
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot write to registry {root}: {_reason(exc)}") from exc
    return path


def check_writable(root: str | os.PathLike[str]) -> None:
    """Create ``<root>/runs`` if needed and prove a file can be created there.

    Writes and removes a small probe file. Raises :class:`RegistryError` with a
    one-line message when the registry cannot be written (so the CLI can stop
    before training anything).
    """
    directory = runs_dir(root)
    probe = directory / f".probe.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _remove_quietly(probe)
        raise RegistryError(f"cannot write to registry {root}: {_reason(exc)}") from exc


def run_files(root: str | os.PathLike[str]) -> list[Path]:
    """All record files (``<root>/runs/*.parquet``), sorted; ``[]`` if none."""
    directory = runs_dir(root)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if p.is_file())


# --------------------------------------------------------------------------- write


def _normalise(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check a record's keys and values; return a full row (missing -> None)."""
    if not isinstance(record, Mapping):
        raise RegistryError(f"a record must be a dict, not {type(record).__name__}")
    names = RECORD_SCHEMA.names
    unknown = [k for k in record if k not in names]
    if unknown:
        raise RegistryError(
            f"unknown record field {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    row: dict[str, Any] = {}
    for field in RECORD_SCHEMA:
        value = record.get(field.name)
        if value is None and field.name == "schema_version":
            value = SCHEMA_VERSION
        if value is None and not field.nullable:
            raise RegistryError(f"record field {field.name!r} is required")
        row[field.name] = value

    _check_run_id(row["run_id"])
    if row["status"] not in STATUSES:
        raise RegistryError(
            f"invalid status {row['status']!r}: choose from {', '.join(STATUSES)}"
        )
    for field in RECORD_SCHEMA:
        value = row[field.name]
        if (
            pa.types.is_timestamp(field.type)
            and isinstance(value, _dt.datetime)
            and value.tzinfo is None
        ):
            raise RegistryError(f"record field {field.name!r} must be timezone-aware")
    history = row["history"]
    if history is not None:
        allowed = {f.name for f in RECORD_SCHEMA.field("history").type.value_type}
        for entry in history:
            if not isinstance(entry, Mapping):
                raise RegistryError("record field 'history' must be a list of dicts")
            extra = sorted(set(entry) - allowed)
            if extra:
                raise RegistryError(
                    f"unknown history field {extra[0]!r}: choose from {', '.join(sorted(allowed))}"
                )
    return row


def _to_table(row: Mapping[str, Any]) -> pa.Table:
    """Build the one-row Arrow table for a normalised row."""
    arrays = []
    for field in RECORD_SCHEMA:
        value = row[field.name]
        if pa.types.is_map(field.type) and isinstance(value, Mapping):
            value = list(value.items())
        try:
            arrays.append(pa.array([value], type=field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise RegistryError(
                f"invalid value for record field {field.name!r} ({field.type}): {_reason(exc)}"
            ) from exc
    return pa.Table.from_arrays(arrays, schema=RECORD_SCHEMA)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so the rename itself is durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_record(root: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Validate ``record`` and write it atomically to ``<root>/runs/<run_id>.parquet``.

    Keys must be ``RECORD_SCHEMA`` column names; missing ones are stored as
    null, ``schema_version`` defaults to ``SCHEMA_VERSION``. Maps are given as
    dicts, ``history`` as a list of dicts, timestamps as tz-aware datetimes.
    An existing record with the same ``run_id`` is replaced. Returns the path.

    Raises :class:`RegistryError` for a bad record or when the registry cannot
    be written (the temporary file is removed in that case).
    """
    row = _normalise(record)
    table = _to_table(row)
    run_id = row["run_id"]
    directory = runs_dir(root)
    final = directory / f"{run_id}.parquet"
    tmp = directory / f".{run_id}.{os.getpid()}.{secrets.token_hex(4)}.parquet{_TEMP_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:  # includes pyarrow's ArrowIOError
        _remove_quietly(tmp)
        raise RegistryError(f"cannot write to registry {root}: {_reason(exc)}") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(directory)
    return final


# --------------------------------------------------------------------------- read


def record_to_dict(table: pa.Table) -> dict[str, Any]:
    """Convert a one-row record table to a record dict.

    Maps come back as dicts, ``history`` as a list of dicts, timestamps as
    tz-aware datetimes. Schema columns missing from an older file are ``None``;
    columns unknown to this version's schema are kept as they are.
    """
    if table.num_rows != 1:
        raise RegistryError(f"a run record has exactly one row, this one has {table.num_rows}")
    try:
        row = table.to_pylist(maps_as_pydicts="strict")[0]
    except TypeError:  # pragma: no cover - pyarrow without maps_as_pydicts
        row = table.to_pylist()[0]
        for field in table.schema:
            if pa.types.is_map(field.type) and row[field.name] is not None:
                row[field.name] = dict(row[field.name])
    out = {name: row.get(name) for name in RECORD_SCHEMA.names}
    out.update({k: v for k, v in row.items() if k not in out})
    return out


def _resolve(root: str | os.PathLike[str], run_id_or_prefix: str) -> Path:
    """Find the record file for a full run id or a unique prefix of one."""
    prefix = run_id_or_prefix.strip().lower() if isinstance(run_id_or_prefix, str) else ""
    if not _PREFIX_RE.fullmatch(prefix):
        raise RegistryError(f"invalid run id {run_id_or_prefix!r}: expected hex characters")
    exact = runs_dir(root) / f"{prefix}.parquet"
    if exact.is_file():
        return exact
    matches = [p for p in run_files(root) if p.stem.startswith(prefix)]
    if not matches:
        raise RegistryError(f"no run matches {run_id_or_prefix!r} in {root}")
    if len(matches) > 1:
        shown = ", ".join(p.stem for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise RegistryError(
            f"{run_id_or_prefix!r} matches {len(matches)} runs ({shown}); give more characters"
        )
    return matches[0]


def read_record(root: str | os.PathLike[str], run_id_or_prefix: str) -> dict[str, Any]:
    """Read one record by full run id or unique prefix.

    Raises :class:`RegistryError` when nothing or more than one run matches, or
    when the file cannot be read.
    """
    path = _resolve(root, run_id_or_prefix)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise RegistryError(f"cannot read run record {path}: {_reason(exc)}") from exc
    return record_to_dict(table)
