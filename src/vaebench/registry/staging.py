"""Artifacts of a remote registry (``s3://...``): a local staging directory, uploads and
downloads.

Backends write files to local paths only. For a remote registry the run's artifacts are
written to its *staging directory* on this machine (:func:`run_dir`)::

    $VAEBENCH_CACHE_DIR/registries/<key>/artifacts/<run_id>/     (default ~/.cache/vaebench)

where ``<key>`` is the first 16 hex digits of the SHA-256 of the registry's display URL
(:func:`cache_root`), then uploaded to ``<root>/artifacts/<run_id>/`` under the same
relative names, so a record's artifact paths (``artifacts/<run_id>/model.safetensors``)
mean the same file in both. Readers download what they need into the same staging
directory (:func:`fetch`; a checkpoint comes with the files beside it).

Order: a run's artifacts are uploaded (:func:`upload_run`) before its record is put, so a
record never names an artifact that is not in the bucket.

A periodic checkpoint (``--checkpoint-every``) is written locally to ``<staging>/partial``
and uploaded after each write (:func:`upload_partial`). Object storage has no rename, so
the upload is versioned by step and published by a marker written last::

    <root>/artifacts/<run_id>/partial/step-<N>/...   the checkpoint's files at step N
    <root>/artifacts/<run_id>/partial/COMPLETE       {"step": N, "files": {name: size}}

The marker is one object put whole; it names a step whose every file was already put,
and older ``step-*`` prefixes are removed only after it. A reader (:func:`fetch_partial`)
trusts only the marker: it downloads the files it lists and checks each one's size, so a
checkpoint half-uploaded (a writer killed or cut off mid-upload) is never read. The
partial is removed once the run is recorded (:func:`remove_partial`).

Errors are :class:`StagingError`, one line without credentials (``location.reason``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from vaebench.registry import location

__all__ = [
    "CACHE_ENV",
    "MARKER",
    "PARTIAL",
    "StagingError",
    "cache_root",
    "fetch",
    "fetch_partial",
    "record_copies",
    "remove_partial",
    "remove_run",
    "run_dir",
    "upload_partial",
    "upload_run",
]

#: The environment variable naming the cache directory (default ``~/.cache/vaebench``).
CACHE_ENV = "VAEBENCH_CACHE_DIR"
#: The periodic checkpoint's entry in a run's artifact directory.
PARTIAL = "partial"
#: The object that publishes a periodic checkpoint (written last).
MARKER = "COMPLETE"
#: Files a checkpoint's reader needs beside its weights (not the figures).
_CHECKPOINT_SUFFIXES = (".safetensors", ".json")


class StagingError(Exception):
    """An artifact could not be uploaded to or downloaded from a remote registry (one line)."""


def cache_root(root: str | os.PathLike[str]) -> Path:
    """``$VAEBENCH_CACHE_DIR/registries/<sha256 of the display URL>[:16]`` (default cache
    directory ``~/.cache/vaebench``): this machine's staging area of remote registry ``root``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "vaebench")
    key = hashlib.sha256(location.display(root).rstrip("/").encode()).hexdigest()[:16]
    return Path(base) / "registries" / key


def run_dir(root: str | os.PathLike[str], run_id: str) -> Path:
    """``<cache_root>/artifacts/<run_id>``: where a run's artifacts are staged (not created)."""
    return cache_root(root) / "artifacts" / run_id


def _remote(root: str | os.PathLike[str], run_id: str) -> tuple[Any, str]:
    """``(fs, <root path>/artifacts/<run_id>)``."""
    fs, path = location.filesystem(root)
    return fs, f"{path}/artifacts/{run_id}"


def _fail(what: str, root: str | os.PathLike[str], exc: BaseException) -> StagingError:
    return StagingError(f"{what} registry {location.display(root)}: {location.reason(exc)}")


def _local_files(directory: Path, skip: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """``(relative POSIX name, path)`` of every file under ``directory`` (recursively),
    leaving out top-level entries whose names start with one in ``skip``."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if not path.is_file() or any(rel.parts[0].startswith(s) for s in skip):
            continue
        out.append((rel.as_posix(), path))
    return out


def upload_run(root: str | os.PathLike[str], run_id: str) -> list[str]:
    """Put every file of the run's staging directory (not its periodic checkpoint) to
    ``<root>/artifacts/<run_id>/``; returns the names put. Raises :class:`StagingError`."""
    fs, base = _remote(root, run_id)
    names = []
    try:
        for rel, path in _local_files(run_dir(root, run_id), skip=(PARTIAL,)):
            fs.put_file(str(path), f"{base}/{rel}")
            names.append(rel)
    except Exception as exc:  # noqa: BLE001 - a lost connection, denied access, ...
        raise _fail("artifacts not uploaded to", root, exc) from exc
    return names


def _download(fs: Any, remote: str, local: Path) -> None:
    """Get ``remote`` to ``local`` through a temporary file beside it (never half a file)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.get")
    try:
        fs.get_file(remote, str(tmp))
        os.replace(tmp, local)
    finally:
        if tmp.exists():
            tmp.unlink()


def fetch(root: str | os.PathLike[str], run_id: str, relative: str) -> Path | None:
    """Download ``<root>/artifacts/<run_id>/<relative>`` into the staging directory and
    return its local path, or ``None`` when the bucket has no such file (or cannot be read).
    A checkpoint's weights (``.safetensors``) come with the ``.safetensors`` / ``.json``
    files beside them (config, training state), which loading it needs."""
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..") for p in parts) or parts[0].startswith(PARTIAL):
        return None
    fs, base = _remote(root, run_id)
    home = run_dir(root, run_id)
    remote = f"{base}/{relative}"
    try:
        fs.invalidate_cache(base)
        if not fs.isfile(remote):
            return None
        wanted = [relative]
        if relative.endswith(".safetensors"):
            folder = str(PurePosixPath(relative).parent)
            prefix = "" if folder == "." else folder + "/"
            for entry in fs.ls(f"{base}/{prefix}".rstrip("/"), detail=True):
                name = prefix + entry["name"].rstrip("/").rsplit("/", 1)[-1]
                if entry.get("type") == "file" and name.endswith(_CHECKPOINT_SUFFIXES) and name not in wanted:
                    wanted.append(name)
        for name in wanted:
            _download(fs, f"{base}/{name}", home.joinpath(*PurePosixPath(name).parts))
    except Exception:  # noqa: BLE001 - unreadable: the caller says the file is missing
        return None
    return home.joinpath(*parts)


def upload_partial(root: str | os.PathLike[str], directory: str, step: int) -> None:
    """Publish the periodic checkpoint just written to ``directory``
    (``<staging>/artifacts/<run_id>/partial``) at ``step``: its files to
    ``partial/step-<step>/``, then the marker ``partial/COMPLETE`` naming the step and each
    file's size, then the older steps removed. Raises :class:`StagingError`."""
    local = Path(directory)
    run_id = local.parent.name
    fs, base = _remote(root, run_id)
    partial = f"{base}/{PARTIAL}"
    files = _local_files(local)
    try:
        for rel, path in files:
            fs.put_file(str(path), f"{partial}/step-{step}/{rel}")
        marker = {"step": int(step), "files": {rel: path.stat().st_size for rel, path in files}}
        fs.pipe_file(f"{partial}/{MARKER}", json.dumps(marker).encode())
        fs.invalidate_cache(partial)
        for entry in fs.ls(partial, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("step-") and name != f"step-{step}":
                fs.rm(entry, recursive=True)
    except Exception as exc:  # noqa: BLE001
        raise _fail(f"periodic checkpoint of run {run_id} at step {step} not uploaded to", root, exc) from exc


def fetch_partial(root: str | os.PathLike[str], run_id: str) -> Path | None:
    """Download the run's published periodic checkpoint (the step its marker names) into
    ``<staging>/partial`` and return that directory; ``None`` (and no local partial) when
    the bucket has none, or a complete one cannot be read (a file missing or of another
    size than the marker says)."""
    fs, base = _remote(root, run_id)
    partial = f"{base}/{PARTIAL}"
    final = run_dir(root, run_id) / PARTIAL
    tmp = final.with_name(f"{PARTIAL}.get.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        marker = json.loads(fs.cat_file(f"{partial}/{MARKER}"))
        step, files = int(marker["step"]), dict(marker["files"])
        for rel, size in files.items():
            parts = PurePosixPath(rel).parts
            if not parts or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"bad file name {rel!r} in the marker")
            target = tmp.joinpath(*parts)
            _download(fs, f"{partial}/step-{step}/{rel}", target)
            if target.stat().st_size != int(size):
                raise ValueError(f"{rel} has {target.stat().st_size} bytes, the marker says {size}")
    except Exception:  # noqa: BLE001 - no complete checkpoint: the run starts over
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        return None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def partial_step(root: str | os.PathLike[str], run_id: str) -> int | None:
    """The step of the run's published periodic checkpoint, read from its marker alone
    (nothing downloaded, nothing local touched); ``None`` when there is none to read."""
    fs, base = _remote(root, run_id)
    try:
        return int(json.loads(fs.cat_file(f"{base}/{PARTIAL}/{MARKER}"))["step"])
    except Exception:  # noqa: BLE001 - no complete checkpoint published (yet)
        return None


def remove_partial(root: str | os.PathLike[str], run_id: str) -> None:
    """Remove the run's periodic checkpoint from the bucket and the staging directory (best effort)."""
    fs, base = _remote(root, run_id)
    try:
        fs.rm(f"{base}/{PARTIAL}", recursive=True)
    except Exception:  # noqa: BLE001 - none there, or unreachable: verify/gc see what is left
        pass
    for name in (PARTIAL, PARTIAL + ".new", PARTIAL + ".old"):
        shutil.rmtree(run_dir(root, run_id) / name, ignore_errors=True)


def remove_run(root: str | os.PathLike[str], run_id: str, keep: Iterable[str] = (PARTIAL,),
               only: str | None = None) -> None:
    """Remove the run's artifacts except the top-level entries in ``keep`` from the bucket
    and the staging directory (best effort); with ``only``, just that top-level entry (one
    attempt's folder)."""
    kept = set(keep)
    fs, base = _remote(root, run_id)
    try:
        fs.invalidate_cache(base)
        entries = fs.ls(base, detail=False)
    except Exception:  # noqa: BLE001
        entries = []
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name in kept if only is None else name != only:
            continue
        try:
            fs.rm(entry, recursive=True)
        except Exception:  # noqa: BLE001
            pass
    home = run_dir(root, run_id)
    if home.is_dir():
        for entry in home.iterdir():
            if only is not None and entry.name != only:
                continue
            if only is None and (entry.name in kept or any(entry.name.startswith(k + ".") for k in kept)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


# --------------------------------------------------------------------------- record copies


#: A local copy of a record file no listing names any more (compacted away) is removed once
#: it is this old (seconds): a reader in another process may still be reading it.
COPY_KEPT_SECONDS = 600.0


def record_copies(root: str | os.PathLike[str], urls: Iterable[str],
                  prune: bool = True) -> tuple[dict[str, Path], list[str]]:
    """Local copies of a remote registry's record files, for DuckDB to read at local speed:
    ``({url: local path}, urls that vanished)``.

    Record files are immutable: a one-record file is put once under a unique name
    (``<run_id>.<attempt>.parquet``, a conditional put) and so is a compacted part
    (``part-<unique>.parquet``); files are only ever added or removed. So a copy, once
    downloaded whole (a temporary file, then ``os.replace``), is that file for good and is
    never fetched again: ``<cache_root>/records/runs/...`` mirrors ``<root>/runs/...``
    (names kept: readers go by them). Missing copies are fetched concurrently. A URL whose
    object is gone (compaction removed it after the listing) is returned in the second list
    (the caller lists again). With ``prune`` (``urls`` is the whole listing), copies it does
    not name are removed once :data:`COPY_KEPT_SECONDS` old. Raises :class:`StagingError` (one line) when the store
    cannot be read."""
    fs, base = location.filesystem(root)
    home = cache_root(root) / "records"
    prefix = fs.unstrip_protocol(base).rstrip("/") + "/"
    wanted: dict[str, Path] = {}
    for url in urls:
        rel = PurePosixPath(url[len(prefix):] if url.startswith(prefix) else url.rsplit("/", 1)[-1])
        if any(p in ("", ".", "..") for p in rel.parts):
            continue
        wanted[url] = home.joinpath(*rel.parts)
    missing = [url for url, path in wanted.items() if not path.is_file()]
    vanished: list[str] = []
    if missing:
        tmp_dir = home / f".get.{os.getpid()}.{os.urandom(4).hex()}"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            temps = [str(tmp_dir / f"{i}.parquet") for i in range(len(missing))]

            def get(pair: tuple[str, str]) -> None:
                try:
                    fs.get_file(fs._strip_protocol(pair[0]), pair[1])
                except FileNotFoundError:
                    pass  # gone since the listing: told apart below

            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            try:
                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(get, zip(missing, temps)))
            except Exception as exc:  # noqa: BLE001 - a lost connection, denied access, ...
                raise _fail("records not read from", root, exc) from exc
            for url, temp in zip(missing, temps):
                if not os.path.isfile(temp):
                    vanished.append(url)
                    continue
                wanted[url].parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, wanted[url])
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    if prune:
        _drop_old_copies(home, set(wanted.values()))
    return {url: path for url, path in wanted.items() if url not in vanished}, vanished


def _drop_old_copies(home: Path, keep: set[Path]) -> None:
    """Remove copies under ``home`` that no listing names and that are older than
    :data:`COPY_KEPT_SECONDS` (best effort)."""
    import time  # noqa: PLC0415

    now = time.time()
    for path in home.rglob("*.parquet"):
        try:
            if path not in keep and now - path.stat().st_mtime > COPY_KEPT_SECONDS:
                path.unlink()
        except OSError:
            continue
