"""``vaebench data fetch``: download a dataset of :data:`~vaebench.plugins.datasets.catalog.SOURCES`,
check it, unpack it and record where it is.

Each file is downloaded with urllib to ``<name>.part`` beside its destination; a ``.part``
left by an interrupted download is resumed with an HTTP ``Range: bytes=N-`` request (a server
that answers 200 instead of 206 restarts it from byte 0). The finished file's checksum is
checked against the pinned sha256 (the published MD5 where no sha256 is published; a mismatch removes the file and raises :class:`FetchError`,
nothing kept), and its size where one is pinned. Then it is unpacked (``gunzip``, ``tar`` with
the ``data`` extraction filter, ``zip``) and the archive removed; a file already present with
its unpacked name is not downloaded again. Last, the index under the data root records the
folder (:func:`~vaebench.plugins.datasets.catalog.record`).

``base_url`` (``--url``, or ``$VAEBENCH_DATA_URL_<NAME>``) replaces each URL's directory: the
file is fetched from ``<base_url>/<basename of the URL>`` (a mirror, or a test's local server).
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vaebench.plugins.datasets.base import hash_files
from vaebench.plugins.datasets.catalog import SOURCES, URL_ENV_PREFIX, RemoteFile, Source, data_root, record, tree_size

__all__ = ["FetchError", "FetchResult", "fetch", "file_url"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class FetchError(RuntimeError):
    """A download failed or did not verify; the message is one line saying what happened."""


@dataclass
class FetchResult:
    """What :func:`fetch` did: the dataset's folder, its size in bytes, files downloaded /
    already present, and the files that had no pinned checksum (not verified)."""

    name: str
    path: Path
    bytes: int
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def file_url(source: Source, remote: RemoteFile, base_url: str | None = None) -> str:
    """The URL ``remote`` is fetched from: its own, or ``base_url`` (else
    ``$VAEBENCH_DATA_URL_<NAME>``) + ``/`` + its basename."""
    base = base_url or os.environ.get(URL_ENV_PREFIX + source.name.upper())
    if not base:
        return remote.url
    return base.rstrip("/") + "/" + remote.url.rsplit("/", 1)[-1]


def _unpacked_name(remote: RemoteFile) -> str | None:
    """The name a finished file has after unpacking (``None``: an archive, checked by folder)."""
    if remote.unpack == "none":
        return remote.filename
    if remote.unpack == "gunzip":
        return remote.filename
    return None


def _download(url: str, dest: Path, progress: Callable[[int, int | None], None] | None) -> None:
    """``url`` -> ``dest``, through ``dest.part``, resuming a partial ``.part`` with ``Range``."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vaebench-data-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already whole
            part.replace(dest)
            return
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:
            have = 0  # the server ignored Range: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out:
            got = have
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    if progress is not None:
                        progress(got, total)
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                raise FetchError(f"{url}: download interrupted after {got} bytes ({exc}); "
                                 f"run the same command again to resume") from None
    if total is not None and part.stat().st_size < total:
        raise FetchError(f"{url}: download stopped at {part.stat().st_size} of {total} bytes; "
                         "run the same command again to resume")
    part.replace(dest)


def _verify(remote: RemoteFile, path: Path, url: str) -> None:
    """Size and checksum (sha256, else the published MD5) of a finished download against the
    pinned ones; a mismatch removes it."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        path.unlink()
        raise FetchError(f"{remote.filename} from {url}: {size} bytes, expected {remote.size}; removed it")
    if remote.checksum is not None:
        algorithm, want = remote.checksum
        got = hash_files([path], algorithm=algorithm).hexdigest()
        if got != want:
            path.unlink()
            raise FetchError(f"{remote.filename} from {url}: {algorithm} {got} does not match the pinned "
                             f"{want}; removed it")


def _unpack(remote: RemoteFile, archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into ``folder`` as ``remote.unpack`` says; the archive is removed."""
    if remote.unpack == "gunzip":
        tmp = folder / (remote.filename + ".unpacking")
        try:
            with gzip.open(archive, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except (OSError, EOFError) as exc:
            tmp.unlink(missing_ok=True)
            raise FetchError(f"{archive.name}: not a whole gzip file ({exc})") from None
        tmp.replace(folder / remote.filename)
        archive.unlink()
        return
    staging = folder.with_name(folder.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if remote.unpack == "tar":
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        elif remote.unpack == "zip":
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    target = (staging / member).resolve()
                    if not str(target).startswith(str(staging.resolve()) + os.sep):
                        raise FetchError(f"{archive.name}: member {member!r} escapes the folder")
                zf.extractall(staging)
        else:
            raise FetchError(f"{remote.filename}: unknown unpack {remote.unpack!r}")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(f"{archive.name}: cannot unpack ({exc})") from None
    inner = staging / remote.keep if remote.keep else staging
    if not inner.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(f"{archive.name}: has no {remote.keep!r} folder")
    for item in inner.iterdir():
        os.replace(item, folder / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()


def fetch(name: str, to: str | os.PathLike[str] | None = None, base_url: str | None = None,
          progress: Callable[[str, int, int | None], None] | None = None,
          source: Source | None = None) -> FetchResult:
    """Download dataset ``name`` into ``<to or data root>/<folder>``, verify, unpack and record it.

    ``source``: the download to follow (default ``SOURCES[name]``; a plugin or a test can pass
    its own). ``progress(filename, bytes_so_far, total_or_None)`` is called as bytes arrive.
    Raises :class:`FetchError` (one line) on a failed or unverified download, ``KeyError`` for an
    unknown name."""
    source = source if source is not None else SOURCES[name]
    folder = Path(to).expanduser() / source.folder if to is not None else data_root() / source.folder
    folder.mkdir(parents=True, exist_ok=True)
    result = FetchResult(name, folder.resolve(), 0, unverified=source.unpinned)
    for remote in source.files:
        done = _unpacked_name(remote)
        if done is not None and (folder / done).is_file():
            result.present.append(done)
            continue
        if done is None and any(p for p in folder.iterdir() if not p.name.endswith((".part", ".unpacking"))
                                and p.name != remote.filename):
            result.present.append(remote.filename)
            continue
        url = file_url(source, remote, base_url)
        archive = folder / (remote.filename + ".gz" if remote.unpack == "gunzip" else remote.filename)
        report = (lambda got, total, _n=remote.filename: progress(_n, got, total)) if progress else None
        _download(url, archive, report)
        _verify(remote, archive, url)
        if remote.unpack != "none":
            _unpack(remote, archive, folder)
        result.downloaded.append(remote.filename)
    result.bytes = tree_size(folder)
    record(name, {"path": str(result.path), "bytes": result.bytes,
                  "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "unverified": result.unverified})
    return result
