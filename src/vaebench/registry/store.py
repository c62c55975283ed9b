"""Where run records live: one Parquet file (one row) per run.

Layout under the registry root (default ``registry.DEFAULT_REGISTRY``, ``./vaebench-results``;
any fsspec URL such as ``s3://bucket/prefix``: ``registry.location``)::

    <root>/runs/<run_id>.<attempt>.parquet   one record (one row), schema ``RECORD_SCHEMA``
    <root>/runs/<run_id>.parquet             a record written before attempts were kept
    <root>/runs/compacted/**.parquet         many records per file (``vaebench registry compact``)
    <root>/artifacts/<run_id>/...            checkpoints, plots (written by others)

The artifacts of a remote registry are written to and read from a local staging
directory and uploaded / downloaded whole files at a time (``registry.staging``);
:func:`artifact_dir`, :func:`partial_dir` and :func:`artifact_path` give local paths
for either kind, :func:`upload_artifacts` puts a remote run's files before its record.

Every attempt is kept: a rerun of the same spec writes a new record beside the old ones
(its ``attempt``, :func:`new_attempt`, is in the file name), nothing is overwritten; a
record's id is ``<run_id>.<attempt>``. Readers take the latest finished attempt of a run
(:func:`latest`), or all of them.

Records are written atomically: locally the row goes to a temporary file in the same
directory, ``.<run_id>.<pid>.<host>.<rand>.parquet.partial`` (the read glob
``*.parquet`` never sees it), the file is fsynced, then ``os.replace``-d onto its
final name; on object storage the object is put whole (it appears complete or not at
all). A reader therefore never sees half a record. A writer killed mid-write leaves its temporary file behind; the
writer's pid and host in the name tell whether it is dead (:func:`stale_temporaries`),
and :func:`check_writable` (run before a grid or a ``continue``) removes those.

Records are checked when read (:func:`record_problem`): one row, a valid ``run_id``
and ``status``, and every schema column it has of the schema's type.

Artifact paths are stored relative to the registry root
(``artifacts/<run_id>/model.safetensors``, :func:`artifact_refs`) and resolved under
``<root>/artifacts/<run_id>/`` only (:func:`artifact_path`), so a registry can be
moved or copied and a hand-edited path cannot point outside it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vaebench.registry import location, staging
from vaebench.registry.schema import DONE_STATUSES, RECORD_SCHEMA, SCHEMA_VERSION, STATUSES, schema_problem

__all__ = [
    "STALE_AFTER_SECONDS",
    "RegistryError",
    "RegistryWriteError",
    "artifact_dir",
    "artifact_path",
    "artifact_refs",
    "base_name",
    "check_writable",
    "is_compacted",
    "read_table",
    "table_rows",
    "this_host",
    "upload_artifacts",
    "compacted_files",
    "file_name",
    "fsync_dir",
    "latest",
    "new_attempt",
    "pid_dead",
    "read_attempts",
    "read_record",
    "record_problem",
    "record_to_dict",
    "partial_dir",
    "remove_artifacts",
    "remove_stale_temporaries",
    "row_problem",
    "run_files",
    "runs_dir",
    "stale_temporaries",
    "temporary_name",
    "write_record",
    "write_table",
]

_RUN_ID_RE = re.compile(r"[0-9a-f]{6,64}")
_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")
#: An attempt id (:func:`new_attempt`): UTC start second and 6 random hex digits.
_ATTEMPT_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
#: A one-record file's name: ``<run_id>.parquet`` (before attempts) or ``<run_id>.<attempt>.parquet``.
_FILE_RE = re.compile(r"(?P<run_id>[0-9a-f]{6,64})(?:\.(?P<attempt>[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}))?\.parquet")
#: Where ``vaebench registry compact`` puts its many-record files, under ``<root>/runs``.
COMPACTED = "compacted"
_TEMP_SUFFIX = ".partial"
#: A temporary file of a writer: a record (``.<run_id>.<pid>.<host>.<rand>.parquet.partial``)
#: a probe (``.probe.<pid>.<host>.<rand>.partial``) or a compacted part
#: (``.part.<pid>.<host>.<rand>.parquet.partial``); files of older versions have no host.
_TEMP_RE = re.compile(
    r"\.(?:[0-9a-f]{6,64}|probe|part)\.(?P<pid>[0-9]{1,10})(?:\.(?P<host>[A-Za-z0-9_.-]*))?"
    r"\.[0-9a-f]{8}(?:\.parquet)?\.partial"
)
#: A temporary file older than this is stale whoever wrote it (a record is written in
#: milliseconds; this covers writers on other hosts of a shared file system, whose pids
#: cannot be checked from here).
STALE_AFTER_SECONDS = 3600.0


class RegistryError(Exception):
    """A registry problem, with a one-line message fit to show a user."""


class RegistryWriteError(RegistryError):
    """The registry could not be written (full disk, file size limit, permissions): a
    storage failure, as opposed to a record that is invalid."""


# --------------------------------------------------------------------------- paths


def runs_dir(root: str | os.PathLike[str]) -> Path:
    """Return ``<root>/runs`` of a local registry (not created)."""
    return location.local_path(root) / "runs"


def new_attempt(now: _dt.datetime | None = None) -> str:
    """A new attempt id, ``YYYYMMDDTHHMMSSZ-xxxxxx``: the UTC time (``now``, default the
    present) and 6 random hex digits, so attempts sort by start and two machines never
    pick the same one."""
    now = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


def file_name(run_id: str, attempt: str | None) -> str:
    """The name of a one-record file: ``<run_id>.<attempt>.parquet`` (``<run_id>.parquet``
    for a record without an attempt)."""
    return f"{run_id}.{attempt}.parquet" if attempt else f"{run_id}.parquet"


def base_name(path: str | os.PathLike[str]) -> str:
    """The last component of a local path or a URL."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


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


def _artifacts_home(root: str | os.PathLike[str], run_id: str) -> Path:
    """The local directory of a run's artifacts: ``<root>/artifacts/<run_id>`` of a local
    registry, the staging directory of a remote one (``staging.run_dir``)."""
    if location.is_remote(root):
        return staging.run_dir(root, run_id)
    return location.local_path(root) / "artifacts" / run_id


def partial_dir(root: str | os.PathLike[str], run_id: str) -> Path:
    """``<root>/artifacts/<run_id>/partial``: the periodic checkpoint of a run in training
    (``--checkpoint-every``), removed once the run is recorded; not created here. For a
    remote registry the staging directory's (uploaded by ``staging.upload_partial``)."""
    _check_run_id(run_id)
    return _artifacts_home(root, run_id) / staging.PARTIAL


def artifact_dir(root: str | os.PathLike[str], run_id: str, attempt: str | None = None) -> Path:
    """Return ``<root>/artifacts/<run_id>`` (``<root>/artifacts/<run_id>/<attempt>`` for one
    attempt's checkpoint and figures: a rerun never overwrites an earlier attempt's files),
    creating it if needed. For a remote registry: the run's staging directory, emptied of
    files an earlier run left there (its periodic checkpoint kept), whose files
    :func:`upload_artifacts` puts to the bucket."""
    _check_run_id(run_id)
    path = _artifacts_home(root, run_id)
    if location.is_remote(root) and path.is_dir():
        _remove_entries(path, keep=(staging.PARTIAL,))
    if attempt is not None:
        path = path / _check_attempt(attempt)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryWriteError(f"cannot write to registry {root}: {_reason(exc)}") from exc
    return path


def is_attempt_id(text: Any) -> bool:
    """Whether ``text`` is an attempt id (``YYYYMMDDTHHMMSSZ-xxxxxx``, :func:`new_attempt`)."""
    return isinstance(text, str) and _ATTEMPT_RE.fullmatch(text) is not None


def _check_attempt(attempt: Any) -> str:
    """Validate an attempt id (:func:`new_attempt`) and return it."""
    if not isinstance(attempt, str) or not _ATTEMPT_RE.fullmatch(attempt):
        raise RegistryError(f"invalid attempt {attempt!r}: expected YYYYMMDDTHHMMSSZ-xxxxxx")
    return attempt


def upload_artifacts(root: str | os.PathLike[str], run_id: str) -> None:
    """Put the files a run wrote to its :func:`artifact_dir` to a remote registry (nothing to
    do for a local one); called before the run's record is written. Raises
    :class:`RegistryWriteError` (one line) when they cannot be put."""
    if not location.is_remote(root):
        return
    try:
        staging.upload_run(root, _check_run_id(run_id))
    except staging.StagingError as exc:
        raise RegistryWriteError(str(exc)) from exc


def artifact_refs(root: str | os.PathLike[str], run_id: str, paths: Mapping[str, str]) -> dict[str, str]:
    """``{key: path}`` of files a run wrote under ``<root>/artifacts/<run_id>/`` -> the same
    keys with the paths relative to ``root`` (``artifacts/<run_id>/model.safetensors``,
    POSIX separators), which is what a record stores. A path outside that directory is
    kept as given (it is never followed: :func:`artifact_path`)."""
    home = Path(os.path.abspath(_artifacts_home(root, _check_run_id(run_id))))
    out = {}
    for key, value in paths.items():
        full = Path(os.path.abspath(value))
        out[key] = (PurePath("artifacts", run_id) / full.relative_to(home)).as_posix() if full.is_relative_to(home) else str(value)
    return out


def artifact_path(root: str | os.PathLike[str], run_id: str, recorded: str | None) -> Path | None:
    """The file a record's artifact path ``recorded`` names, found under
    ``<root>/artifacts/<run_id>/`` only, or ``None`` when there is none there.

    Tried in order: ``recorded`` relative to ``root`` (what records store); the part of
    ``recorded`` after ``artifacts/<run_id>/`` (older records stored absolute or
    working-directory-relative paths: a moved or copied registry finds its own file);
    the file's name in the run's directory. Every candidate must resolve (symbolic links
    followed) inside ``<root>/artifacts/<run_id>/``, so a registry never reads or writes
    through a path that leads out of it.

    A remote registry's file is downloaded (``staging.fetch``: a checkpoint with the files
    beside it) into the staging directory, whose local path is returned.
    """
    if not recorded or not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        return None
    if location.is_remote(root):
        return _fetch_artifact(root, run_id, recorded)
    base = location.local_path(root)
    home = (base / "artifacts" / run_id).resolve()
    given = PurePath(recorded)
    candidates = [] if given.is_absolute() else [base / given]
    parts = given.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "artifacts" and parts[i + 1] == run_id and i + 2 < len(parts):
            candidates.append(home.joinpath(*parts[i + 2:]))
            break
    candidates.append(home / given.name)
    for candidate in candidates:
        try:
            source = candidate.resolve()
        except (OSError, RuntimeError):
            continue
        if source.is_relative_to(home) and source != home and source.is_file():
            return source
    return None


def _fetch_artifact(root: str | os.PathLike[str], run_id: str, recorded: str) -> Path | None:
    """:func:`artifact_path` of a remote registry: the same candidates, relative to
    ``<root>/artifacts/<run_id>/``, downloaded."""
    given = PurePath(recorded.replace("\\", "/"))
    parts = given.parts
    candidates = []
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "artifacts" and parts[i + 1] == run_id and i + 2 < len(parts):
            candidates.append(PurePath(*parts[i + 2:]).as_posix())
            break
    candidates.append(given.name)
    for relative in dict.fromkeys(candidates):
        found = staging.fetch(root, run_id, relative)
        if found is not None:
            return found
    return None


def remove_artifacts(root: str | os.PathLike[str], run_id: str, keep: Iterable[str] = (staging.PARTIAL,),
                     attempt: str | None = None) -> None:
    """Remove what ``<root>/artifacts/<run_id>/`` holds except the entries named in ``keep``
    (default: the periodic checkpoint a later run picks up), and the directory itself
    when nothing is kept: the artifacts of a run that has no record (best effort). With
    ``attempt``, only that attempt's folder: the run's other attempts keep theirs."""
    _check_run_id(run_id)
    if attempt is not None:
        _check_attempt(attempt)
        if location.is_remote(root):
            staging.remove_run(root, run_id, only=attempt)
            return
        shutil.rmtree(location.local_path(root) / "artifacts" / run_id / attempt, ignore_errors=True)
        try:
            (location.local_path(root) / "artifacts" / run_id).rmdir()
        except OSError:
            pass
        return
    if location.is_remote(root):
        staging.remove_run(root, run_id, keep)
        return
    home = location.local_path(root) / "artifacts" / run_id
    if not _remove_entries(home, keep):
        return
    try:
        home.rmdir()
    except OSError:
        pass


def _remove_entries(home: Path, keep: Iterable[str]) -> bool:
    """Remove what ``home`` holds except the entries named in ``keep``; ``False`` when it
    cannot be listed."""
    try:
        entries = list(home.iterdir())
    except OSError:
        return False
    kept = set(keep)
    for entry in entries:
        if entry.name in kept:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _remove_quietly(entry)
    return True


def this_host() -> str:
    """This host's name as it appears in temporary file names and claims (``[A-Za-z0-9_.-]``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64]


def _temp_name(stem: str, suffix: str = _TEMP_SUFFIX) -> str:
    """``.<stem>.<pid>.<host>.<rand><suffix>``: a writer's temporary file name."""
    return f".{stem}.{os.getpid()}.{this_host()}.{secrets.token_hex(4)}{suffix}"


def temporary_name(stem: str, suffix: str = ".parquet" + _TEMP_SUFFIX) -> str:
    """A writer's temporary file name in ``<root>/runs``, ``.<stem>.<pid>.<host>.<rand><suffix>``
    (``stem``: a run id, ``"probe"`` or ``"part"``), which the read glob never sees and
    :func:`stale_temporaries` recognises once its writer is dead."""
    return _temp_name(stem, suffix)


def pid_dead(pid: int) -> bool:
    """Whether no live process has ``pid`` on this host (a zombie counts as dead: it
    writes nothing more)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def process_start(pid: int) -> str:
    """When process ``pid`` of this host started (clock ticks since boot, ``/proc/<pid>/stat``'s
    22nd field) as text, so a pid taken again by a later process is told apart; ``""`` where
    it cannot be read (no such process, no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""




def stale_temporaries(root: str | os.PathLike[str], max_age: float = STALE_AFTER_SECONDS) -> list[Path]:
    """Temporary files in ``<root>/runs`` left by writers that died, sorted.

    A temporary file is stale when its writer's pid (in its name) is dead on this
    host, or when it is older than ``max_age`` seconds (whatever host wrote it, and
    for names of older versions, which carry no host). A live writer's file is never
    listed, so the result can be removed while other processes write records.
    """
    directory = runs_dir(root)
    if not directory.is_dir():
        return []
    host, now, stale = this_host(), time.time(), []
    for path in directory.glob(".*" + _TEMP_SUFFIX):
        match = _TEMP_RE.fullmatch(path.name)
        if match is None:
            continue
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue  # gone meanwhile: renamed by its writer or removed
        if age > max_age or (match["host"] == host and pid_dead(int(match["pid"]))):
            stale.append(path)
    return sorted(stale)


def remove_stale_temporaries(root: str | os.PathLike[str], max_age: float = STALE_AFTER_SECONDS) -> list[Path]:
    """Remove :func:`stale_temporaries` of ``root``; returns those removed."""
    removed = []
    for path in stale_temporaries(root, max_age):
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def check_writable(root: str | os.PathLike[str]) -> list[Path]:
    """Create ``<root>/runs`` if needed and prove a file can be created there; remove the
    temporary files of writers that died (:func:`remove_stale_temporaries`).

    Writes and removes a small probe file. Returns the stale temporary files removed.
    Raises :class:`RegistryWriteError` with a one-line message when the registry cannot
    be written (so the CLI can stop before training anything).
    """
    if location.is_remote(root):
        try:
            location.check_location(root, write=True)
        except location.LocationError as exc:
            raise RegistryWriteError(str(exc)) from exc
        return []
    directory = runs_dir(root)
    probe = directory / _temp_name("probe")
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
        raise RegistryWriteError(f"cannot write to registry {root}: {_reason(exc)}") from exc
    return remove_stale_temporaries(root)


def _remote_files(root: str | os.PathLike[str], sub: str) -> list[str]:
    """URLs of the ``.parquet`` files under ``<root>/runs/<sub>`` of a remote registry
    (``sub=""``: the one-record files directly in ``runs/``), sorted."""
    fs, path = location.filesystem(root)
    base = f"{path}/runs" + (f"/{sub}" if sub else "")
    try:
        found = fs.find(base) if sub else fs.ls(base, detail=False)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - the store's failure, in one line
        raise RegistryError(f"cannot read registry {location.display(root)}: {_reason(exc)}") from exc
    keep = [p for p in found if base_name(p).endswith(".parquet") and not base_name(p).startswith(".")]
    return sorted(fs.unstrip_protocol(p) for p in keep)


def run_files(root: str | os.PathLike[str]) -> list[Path | str]:
    """All record files, sorted: the one-record files ``<root>/runs/*.parquet`` and the
    compacted ones (:func:`compacted_files`); ``[]`` if none. Local files are paths,
    a remote registry's are URLs."""
    if location.is_remote(root):
        return _remote_files(root, "") + compacted_files(root)
    directory = runs_dir(root)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if p.is_file()) + compacted_files(root)


def compacted_files(root: str | os.PathLike[str]) -> list[Path | str]:
    """The many-record files ``vaebench registry compact`` wrote under
    ``<root>/runs/compacted/``, sorted."""
    if location.is_remote(root):
        return _remote_files(root, COMPACTED)
    directory = runs_dir(root) / COMPACTED
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*.parquet") if p.is_file() and not p.name.startswith("."))


def is_compacted(path: Path | str) -> bool:
    """Whether a record file is a compacted one (many records; not held to one row)."""
    return f"/runs/{COMPACTED}/" in os.fspath(path).replace(os.sep, "/")


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
    if row["attempt"] is None:
        row["attempt"] = new_attempt(row["started_at"] if isinstance(row["started_at"], _dt.datetime)
                                     and row["started_at"].tzinfo is not None else None)
    elif not isinstance(row["attempt"], str) or not _ATTEMPT_RE.fullmatch(row["attempt"]):
        raise RegistryError(f"invalid attempt {row['attempt']!r}: expected YYYYMMDDTHHMMSSZ-xxxxxx")
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


def fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename into it is itself durable."""
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


def write_record(root: str | os.PathLike[str], record: Mapping[str, Any]) -> Path | str:
    """Validate ``record`` and write it atomically to ``<root>/runs/<run_id>.<attempt>.parquet``.

    Keys must be ``RECORD_SCHEMA`` column names; missing ones are stored as
    null, ``schema_version`` defaults to ``SCHEMA_VERSION``, ``attempt`` to a
    :func:`new_attempt` of the record's ``started_at``. Maps are given as dicts,
    ``history`` as a list of dicts, timestamps as tz-aware datetimes. Nothing is
    overwritten: every attempt of a run is kept. Returns the path (a URL for a
    remote registry).

    Raises :class:`RegistryError` for a bad record or when the registry cannot
    be written (:class:`RegistryWriteError`; the temporary file is removed in that case).
    """
    row = _normalise(record)
    table = _to_table(row)
    return write_table(root, file_name(row["run_id"], row["attempt"]), table, row["run_id"])


@functools.lru_cache(maxsize=8)
def statistics_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The Parquet leaf columns (``metrics.key_value.value`` ...) written with min / max
    statistics: all but the ``environment`` map's. Its values include every installed
    package as one string (~3 KB), which statistics would store twice more (a record file
    34.9 against 29.0 KB), and no query prunes on them."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    leaves = pq.ParquetFile(io.BytesIO(buffer.getvalue())).schema
    return tuple(leaves.column(i).path for i in range(len(leaves))
                 if not leaves.column(i).path.startswith("environment."))


def write_table(root: str | os.PathLike[str], relative: str, table: pa.Table, stem: str) -> Path | str:
    """Write ``table`` whole, once, as ``<root>/runs/<relative>`` (a record file or a compacted
    part); return its path (a URL for a remote registry). Never overwrites: an existing file
    is a :class:`RegistryWriteError`.

    Locally through a temporary file in ``<root>/runs`` (``.<stem>.<pid>.<host>.<rand>.parquet.partial``:
    the read glob never sees it, :func:`stale_temporaries` finds it once its writer died),
    fsync, ``os.replace``, fsync of the directory; on object storage one conditional put
    (``"xb"``): an object appears whole or not at all. Raises :class:`RegistryWriteError`
    (one line, no credentials) when the registry cannot be written."""
    if location.is_remote(root):
        fs, path = location.filesystem(root)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, write_statistics=list(statistics_columns(table.schema)))
        target = f"{path}/runs/{relative}"
        try:
            with fs.open(target, "xb") as fh:
                fh.write(buffer.getvalue())
        except FileExistsError as exc:
            raise RegistryWriteError(f"cannot write to registry {location.display(root)}: {relative} exists") from exc
        except Exception as exc:  # noqa: BLE001 - a lost connection, denied access, ...
            raise RegistryWriteError(f"cannot write to registry {location.display(root)}: {_reason(exc)}") from exc
        return fs.unstrip_protocol(target)
    directory = runs_dir(root)
    final = directory.joinpath(*PurePath(relative).parts)
    tmp = directory / _temp_name(stem, ".parquet" + _TEMP_SUFFIX)
    if final.exists():  # names are unique: only a caller naming one twice gets here
        raise RegistryWriteError(f"cannot write to registry {root}: {relative} exists")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as fh:
            pq.write_table(table, fh, write_statistics=list(statistics_columns(table.schema)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:  # includes pyarrow's ArrowIOError
        _remove_quietly(tmp)
        raise RegistryWriteError(f"cannot write to registry {root}: {_reason(exc)}") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(final.parent)
    return final


def read_table(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    """Read a record file (a local path or a remote registry's URL) as an Arrow table."""
    if location.is_remote(path):
        fs, inner = location.filesystem(path)
        with fs.open(inner, "rb") as fh:
            return pq.read_table(fh, columns=columns)
    return pq.read_table(path, columns=columns)


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


def row_problem(run_id: Any, status: Any) -> str | None:
    """Why a record with this ``run_id`` and ``status`` is not a run, or ``None``."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        return "no run_id" if run_id is None else f"invalid run_id {str(run_id)[:80]!r}"
    if status not in STATUSES:
        return "no status" if status is None else f"invalid status {str(status)[:80]!r}"
    return None


def record_problem(table: pa.Table) -> str | None:
    """Why ``table`` (a record file's contents) is not a valid run record, or ``None``:
    one row, every schema column it has of a compatible type (``schema.schema_problem``),
    a valid ``run_id`` and ``status`` (:func:`row_problem`)."""
    if table.num_rows != 1:
        return f"expected one row, found {table.num_rows}"
    problem = schema_problem(table.schema)
    if problem is not None:
        return problem
    names = table.column_names
    return row_problem(
        table.column("run_id")[0].as_py() if "run_id" in names else None,
        table.column("status")[0].as_py() if "status" in names else None,
    )


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The records of a (many-row) record table as dicts, as :func:`record_to_dict` gives one."""
    return [record_to_dict(table.slice(i, 1)) for i in range(table.num_rows)]


def latest(records: Iterable[Mapping[str, Any]]) -> Any:
    """The attempt a reader takes of a run's records: the latest finished one (``ok`` or
    ``diverged``) where there is one, else the latest; latest by ``finished_at``, then
    ``attempt``. ``None`` for no records."""
    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        finished = r.get("finished_at")
        return (r.get("status") in DONE_STATUSES, finished is not None,
                finished or _dt.datetime.min.replace(tzinfo=_dt.timezone.utc), r.get("attempt") or "")
    return max(records, key=key, default=None)


def _split_ref(ref: Any) -> tuple[str, str | None]:
    """``"<prefix>"`` or ``"<run_id>.<attempt>"`` -> ``(prefix, attempt or None)``."""
    text = ref.strip() if isinstance(ref, str) else ""
    prefix, dot, attempt = text.partition(".")
    prefix, attempt = prefix.lower(), (attempt if dot else None)
    if not _PREFIX_RE.fullmatch(prefix):
        raise RegistryError(f"invalid run id {ref!r}: expected hex characters")
    if attempt is not None and not _ATTEMPT_RE.fullmatch(attempt):
        raise RegistryError(f"invalid attempt in {ref!r}: expected RUN.YYYYMMDDTHHMMSSZ-xxxxxx")
    return prefix, attempt


def _read_valid(path: Path | str) -> pa.Table:
    """A one-record file's table, checked (:func:`record_problem`); one-line errors."""
    try:
        table = read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise RegistryError(f"cannot read run record {path}: {_reason(exc)}") from exc
    problem = record_problem(table)
    if problem is not None:
        raise RegistryError(f"invalid run record {path}: {problem}")
    return table


def _files_starting(root: str | os.PathLike[str], prefix: str) -> list[Path | str]:
    """The one-record files ``<root>/runs/<prefix>*.parquet`` (``prefix``: checked hex), sorted:
    one listing narrowed by the name, not the whole registry's."""
    if location.is_remote(root):
        fs, path = location.filesystem(root)
        fs.invalidate_cache(f"{path}/runs")
        try:
            found = fs.glob(f"{path}/runs/{prefix}*.parquet")
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - the store's failure, in one line
            raise RegistryError(f"cannot read registry {location.display(root)}: {_reason(exc)}") from exc
        return sorted(fs.unstrip_protocol(p) for p in found)
    return sorted(p for p in runs_dir(root).glob(f"{prefix}*.parquet") if p.is_file())


def read_attempts(root: str | os.PathLike[str], run_id_or_prefix: str) -> list[dict[str, Any]]:
    """Every recorded attempt of one run (full id or unique prefix; ``RUN.ATTEMPT`` names one
    attempt), oldest first (by ``finished_at``, then ``attempt``); one record read twice
    (a one-record file and its compacted copy) counts once.

    Raises :class:`RegistryError` when nothing or more than one run matches, or
    when a file cannot be read or is not a valid record (:func:`record_problem`).
    """
    prefix, attempt = _split_ref(run_id_or_prefix)
    where = location.display(root)
    single = _files_starting(root, prefix)
    if attempt is not None:
        single = [p for p in single if base_name(p) == file_name(base_name(p).split(".", 1)[0], attempt)]
    records = [record_to_dict(_read_valid(p)) for p in single]
    compacted = compacted_files(root)
    if location.is_remote(root) and compacted:  # immutable parts: read from their local copies
        try:
            compacted = list(staging.record_copies(root, compacted, prune=False)[0].values())
        except staging.StagingError as exc:
            raise RegistryError(str(exc)) from exc
    for path in compacted:
        try:
            ids = read_table(path, columns=["run_id"]).column("run_id").to_pylist()
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise RegistryError(f"cannot read run records {path}: {_reason(exc)}") from exc
        rows = [i for i, run_id in enumerate(ids) if isinstance(run_id, str) and run_id.startswith(prefix)]
        if rows:
            table = read_table(path).take(rows)
            records += [r for r in table_rows(table) if row_problem(r["run_id"], r["status"]) is None
                        and (attempt is None or r.get("attempt") == attempt)]
    if any(r["run_id"] == prefix for r in records):  # a full run id beats the runs it prefixes
        records = [r for r in records if r["run_id"] == prefix]
    run_ids = sorted({r["run_id"] for r in records})
    if not run_ids:
        raise RegistryError(f"no run matches {run_id_or_prefix!r} in {where}")
    if len(run_ids) > 1:
        shown = ", ".join(run_ids[:5]) + (", ..." if len(run_ids) > 5 else "")
        raise RegistryError(
            f"{run_id_or_prefix!r} matches {len(run_ids)} runs ({shown}); give more characters"
        )
    unique: dict[Any, dict[str, Any]] = {}
    for record in records:
        unique.setdefault(record.get("attempt") or f"file:{id(record)}", record)
    oldest_first = sorted(unique.values(), key=lambda r: (
        r.get("finished_at") or _dt.datetime.min.replace(tzinfo=_dt.timezone.utc), r.get("attempt") or ""))
    return oldest_first


def read_record(root: str | os.PathLike[str], run_id_or_prefix: str) -> dict[str, Any]:
    """Read one run's record by full run id or unique prefix: its latest finished attempt
    (:func:`latest`); ``RUN.ATTEMPT`` reads that attempt.

    Raises :class:`RegistryError` when nothing or more than one run matches, or
    when the file cannot be read or is not a valid record (:func:`record_problem`).
    """
    return latest(read_attempts(root, run_id_or_prefix))
