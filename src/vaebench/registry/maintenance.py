"""Care of a registry: ``vaebench registry verify``, ``info`` and ``gc`` (a path or any fsspec URL).

:func:`verify` reads every record file and reports, as :class:`Finding` s:

problems (``verify`` exits 1)
    ``corrupt`` (a file that cannot be read), ``invalid`` (not a valid record, or a part
    with rows that are no run), ``duplicate`` (one ``(run_id, attempt)`` held twice with
    *different* content), ``missing_artifact`` (a record's artifact that is not there),
    ``orphaned_artifacts`` (``artifacts/<run_id>/`` with files but no record of that run,
    or an attempt's folder ``artifacts/<run_id>/<attempt>/`` that no record of the run
    holds or points to (a rerun killed before its record), each with no live claim on the
    run and nothing written in it for ``min_age`` seconds),
    ``stale_temporary`` (a writer's temporary file whose writer died:
    ``store.stale_temporaries``) and ``stale_claim`` (``claims.ClaimInfo.stale``).
notes (harmless)
    ``copy`` (one record held twice with the same content: a compaction in progress,
    or one interrupted between writing its part and removing what it replaced; the next
    ``compact`` removes it), ``resumable`` (only a periodic checkpoint, ``partial/``, of
    a run without a record: the next ``--resume`` continues it), ``claimed`` (artifacts of
    a run a live claim holds: in training), ``recent`` (artifacts without a record,
    written less than ``min_age`` seconds ago: maybe a run finishing now).

:func:`gc` removes what verify calls orphaned or stale; :func:`info` counts.

Claims (``<root>/claims/<run_id>/<generation>.json``) belong to ``registry.claims``: its
notion of live and stale is the one used here, and ``gc`` ends a stale claim through it
(taken over, then released), never by deleting the file under a writer.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vaebench.registry import claims, location
from vaebench.registry.query import open_runs
from vaebench.registry.scan import FileRead, content, file_size, read_files, record_key, remove_file, rows
from vaebench.registry.store import (
    STALE_AFTER_SECONDS,
    artifact_path,
    is_attempt_id,
    is_compacted,
    remove_artifacts,
    run_files,
    stale_temporaries,
)

__all__ = ["PROBLEMS", "Finding", "VerifyReport", "gc", "info", "verify"]

#: The kinds of finding that make ``verify`` fail.
PROBLEMS = ("corrupt", "invalid", "duplicate", "missing_artifact", "orphaned_artifacts", "stale_temporary",
            "stale_claim")


@dataclass(frozen=True)
class Finding:
    """One thing verify found: its ``kind`` (:data:`PROBLEMS` or a note), the file or
    directory (a path or URL) and a one-line ``detail``."""

    kind: str
    path: str
    detail: str

    @property
    def problem(self) -> bool:
        return self.kind in PROBLEMS


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``run_ids`` with a record; ``orphans``,
    ``orphan_attempts`` and ``stale`` are what :func:`gc` removes (run ids of orphaned
    artifact directories; ``run_id/attempt`` of orphaned attempt folders; temporary files
    and stale claims)."""

    root: str
    files: int = 0
    records: int = 0
    findings: list[Finding] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    #: ``<run_id>/<attempt>`` of orphaned attempt folders of runs that have a record
    orphan_attempts: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.root, "ok": self.ok, "files": self.files, "records": self.records,
                "problems": [asdict(f) for f in self.problems],
                "notes": [asdict(f) for f in self.findings if not f.problem]}


def _claim_location(root: str | os.PathLike[str], path: str) -> str:
    """A claim file's path as verify shows it: a URL for a remote registry."""
    return location.filesystem(root)[0].unstrip_protocol(path) if location.is_remote(root) else path


# ------------------------------------------------------------------ listing helpers


def _files_under(root: str | os.PathLike[str], sub: str) -> list[tuple[str, int, float]]:
    """``(path relative to <root>/<sub>, size in bytes, mtime in seconds)`` of every file under it."""
    out = []
    if location.is_remote(root):
        fs, base = location.filesystem(root)
        prefix = f"{base}/{sub}"
        try:
            found = fs.find(prefix, detail=True)
        except FileNotFoundError:
            return []
        for path, info_ in found.items():
            modified = info_.get("LastModified") or info_.get("mtime") or info_.get("created") or 0
            stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
            out.append((path[len(prefix):].lstrip("/"), int(info_.get("size") or 0), stamp))
        return out
    base = location.local_path(root) / sub
    for directory, _, names in os.walk(base):
        for name in names:
            path = Path(directory) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            out.append((path.relative_to(base).as_posix(), st.st_size, st.st_mtime))
    return out


def _artifact_missing(root: str | os.PathLike[str], run_id: str, recorded: str) -> bool:
    """Whether a record's artifact path names no file of the registry (``store.artifact_path``
    locally; on object storage the recorded path relative to the root must exist)."""
    if not location.is_remote(root):
        return artifact_path(root, run_id, recorded) is None
    fs, base = location.filesystem(root)
    if not recorded.startswith(f"artifacts/{run_id}/"):
        return True
    try:
        return not fs.exists(f"{base}/{recorded}")
    except Exception:  # noqa: BLE001
        return True


# ------------------------------------------------------------------ verify


def verify(
    root: str | os.PathLike[str],
    *,
    min_age: float = STALE_AFTER_SECONDS,
    reads: list[FileRead] | None = None,
) -> VerifyReport:
    """Read every record file of ``root`` and report what is wrong (module docstring).

    ``min_age``: seconds without a write before artifacts without a record count as
    orphaned. ``reads``: the
    files already read (:func:`scan.read_files`), else they are read here.
    """
    shown = location.display(root)
    report = VerifyReport(root=shown)
    reads = read_files(root) if reads is None else reads
    report.files = len(reads)
    copies: dict[tuple[str, Any], list[tuple[str, str]]] = {}
    run_ids: set[str] = set()
    kept: dict[str, set[str]] = {}  # run id -> the attempt folders its records hold or point to
    for read in reads:
        if read.vanished:
            continue
        if read.table is None:
            report.findings.append(Finding("corrupt", str(read.path), read.problem or "unreadable"))
            continue
        if read.problem is not None:
            report.findings.append(Finding("invalid", str(read.path), read.problem))
            if not read.compacted:
                continue
        for record in rows(read):
            if record.get("run_id") is None or not isinstance(record.get("status"), str):
                continue
            key = record_key(record)
            run_ids.add(key[0])
            folders = kept.setdefault(key[0], set())
            folders.add(str(key[1]))
            for recorded in (record.get("artifacts") or {}).values():
                parts = str(recorded or "").split("/")
                if len(parts) > 3 and parts[:2] == ["artifacts", key[0]]:
                    folders.add(parts[2])
            first = key not in copies
            copies.setdefault(key, []).append((str(read.path), content(record)))
            if first:
                for name, recorded in sorted((record.get("artifacts") or {}).items()):
                    if recorded and _artifact_missing(root, key[0], recorded):
                        report.findings.append(Finding(
                            "missing_artifact", str(read.path),
                            f"{_ref(key)}: artifact {name!r} ({recorded}) is not in the registry"))
    report.records = len(copies)
    for key, held in sorted(copies.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if len(held) < 2:
            continue
        paths = ", ".join(p for p, _ in held)
        if len({c for _, c in held}) == 1:
            report.findings.append(Finding("copy", held[1][0], f"{_ref(key)} held {len(held)} times, identical "
                                           f"({paths}); the next `registry compact` keeps one"))
        else:
            report.findings.append(Finding("duplicate", held[1][0], f"{_ref(key)} held {len(held)} times with "
                                           f"different content ({paths})"))
    _check_artifacts(root, report, kept, min_age)
    for path in ([] if location.is_remote(root) else stale_temporaries(root)):
        report.findings.append(Finding("stale_temporary", str(path), "temporary file of a writer that died"))
        report.stale.append(str(path))
    return report


def _ref(key: tuple[str, Any]) -> str:
    return f"{key[0]}.{key[1]}" if key[1] else key[0]


def _check_artifacts(root: str | os.PathLike[str], report: VerifyReport, kept: dict[str, set[str]], min_age: float
) -> None:
    now = time.time()
    current = claims.claims_of(root)  # read once: split into stale and live
    for info in (c for c in current if c.stale(now)):
        path = _claim_location(root, info.location)
        report.findings.append(Finding("stale_claim", path, "claim past its lease (its worker stopped renewing it)"))
        report.stale.append(path)
    claimed = {info.run_id for info in current if not info.stale(now)}
    by_run: dict[str, list[tuple[str, int, float]]] = {}  # one listing of artifacts/, by run
    for rel, size, mtime in _files_under(root, "artifacts"):
        run_id, _, inner = rel.partition("/")
        if inner:
            by_run.setdefault(run_id, []).append((inner, size, mtime))
    for run_id, files in sorted(by_run.items()):
        if run_id in kept:
            _check_attempt_folders(root, report, run_id, files, kept[run_id], run_id in claimed, now, min_age)
            continue
        where = location.join(root, "artifacts", run_id)
        other = [f for f in files if not f[0].startswith("partial/")]
        if run_id in claimed:
            report.findings.append(Finding("claimed", where, "no record yet; a live claim holds the run (in training)"))
        elif not other:
            if files:
                report.findings.append(Finding("resumable", where, "periodic checkpoint of a run without a record: "
                                               "the next --resume continues it"))
        elif now - max(m for _, _, m in files) < min_age:
            report.findings.append(Finding("recent", where, f"no record, written in the last {min_age:g} s "
                                           "(maybe a run finishing now)"))
        else:
            report.findings.append(Finding("orphaned_artifacts", where, f"{len(other)} file(s) of run {run_id}, "
                                           "which has no record and no live claim"))
            report.orphans.append(run_id)


def _check_attempt_folders(root: str | os.PathLike[str], report: VerifyReport, run_id: str,
                           files: list[tuple[str, int, float]], kept: set[str], claimed: bool, now: float,
                           min_age: float) -> None:
    """Findings for the attempt folders of a run that has a record (``files``: its files,
    relative to ``artifacts/<run_id>``): one no record holds or points to is orphaned,
    unless a live claim holds the run or it was written lately."""
    by_folder: dict[str, list[tuple[str, int, float]]] = {}
    for rel, size, mtime in files:
        folder = rel.split("/", 1)[0]
        if is_attempt_id(folder) and folder not in kept:
            by_folder.setdefault(folder, []).append((rel, size, mtime))
    for folder, files in sorted(by_folder.items()):
        where = location.join(root, "artifacts", run_id, folder)
        if claimed:
            report.findings.append(Finding("claimed", where, "an attempt without a record yet; a live claim holds "
                                           "the run (in training)"))
        elif now - max(m for _, _, m in files) < min_age:
            report.findings.append(Finding("recent", where, f"an attempt without a record, written in the last "
                                           f"{min_age:g} s (maybe a run finishing now)"))
        else:
            report.findings.append(Finding("orphaned_artifacts", where, f"{len(files)} file(s) of attempt {folder} of "
                                           f"run {run_id}, which no record holds, and no live claim"))
            report.orphan_attempts.append(f"{run_id}/{folder}")


# ------------------------------------------------------------------ gc


def gc(root: str | os.PathLike[str], report: VerifyReport, *, dry_run: bool = False) -> list[str]:
    """Remove what ``report`` (:func:`verify` of ``root``) calls orphaned or stale: stale
    temporary files and claims, and the files of orphaned artifact directories (a
    ``partial/`` checkpoint in one is kept: a later run resumes from it). Returns what was
    (with ``dry_run``: would be) removed, as paths or URLs."""
    targets = [*report.stale, *(location.join(root, "artifacts", r) for r in report.orphans),
               *(location.join(root, "artifacts", *a.split("/")) for a in report.orphan_attempts)]
    if dry_run:
        return targets
    done = []
    stale_claim_files = {f.path for f in report.findings if f.kind == "stale_claim"}
    if stale_claim_files:
        # taken over, then released: a writer taking such a point meanwhile keeps it
        done += [_claim_location(root, info.location) for info in claims.remove_stale(root)]
    for path in report.stale:
        if path in stale_claim_files:
            continue
        if remove_file(path):
            done.append(path)
    for run_id in report.orphans:
        if location.is_remote(root):
            fs, base = location.filesystem(root)
            for rel, _, _ in _files_under(root, f"artifacts/{run_id}"):
                if not rel.startswith("partial/"):
                    fs.rm_file(f"{base}/artifacts/{run_id}/{rel}")
        else:
            remove_artifacts(root, run_id)
        done.append(location.join(root, "artifacts", run_id))
    fs, base = location.filesystem(root)
    for attempt in report.orphan_attempts:
        fs.rm(f"{base}/artifacts/{attempt}", recursive=True)
        done.append(location.join(root, "artifacts", *attempt.split("/")))
    return done


# ------------------------------------------------------------------ info


def info(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts and sizes of a registry: ``files`` (one-record, compacted, unusable),
    ``records`` (distinct ``(run_id, attempt)``), ``runs`` (distinct run ids),
    ``latest_by_status`` (each run's latest attempt), ``attempts_by_status``,
    ``by_dataset_model`` (runs and records per dataset and model), ``bytes`` (records,
    artifacts)."""
    files = run_files(root)
    compacted = [p for p in files if is_compacted(p)]
    con, skipped = open_runs(root, attempts="all")
    try:
        (records, runs), = con.sql("SELECT count(*), count(DISTINCT run_id) FROM runs").fetchall()
        attempts = dict(con.sql("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall())
        groups = con.sql("SELECT dataset, model, count(DISTINCT run_id), count(*) FROM runs "
                         "GROUP BY dataset, model ORDER BY dataset NULLS LAST, model NULLS LAST").fetchall()
    finally:
        con.close()
    con, _ = open_runs(root)
    try:
        latest = dict(con.sql("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall())
    finally:
        con.close()
    return {
        "registry": location.display(root),
        "records": records, "runs": runs,
        "latest_by_status": latest, "attempts_by_status": attempts,
        "by_dataset_model": [{"dataset": d, "model": m, "runs": n, "records": k} for d, m, n, k in groups],
        "files": {"one_record": len(files) - len(compacted), "compacted": len(compacted), "left_out": len(skipped)},
        "bytes": {"records": sum(file_size(p) for p in files),
                  "artifacts": sum(size for _, size, _ in _files_under(root, "artifacts"))},
    }
