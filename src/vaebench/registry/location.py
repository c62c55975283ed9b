"""Where a registry lives: a local path or any fsspec URL (``s3://bucket/prefix``,
``gs://...``, ``file:///...``, ``memory://...``).

A registry root is passed around as the string (or path) the user gave. This module is
the one place that turns it into a filesystem: :func:`filesystem` gives the fsspec
filesystem and the root's path within it (cached per URL), :func:`is_remote` says
whether the fast local code (``os``, ``O_EXCL``, ``os.replace``) or fsspec serves it,
:func:`display` gives the URL without any credentials for messages and records, and
:func:`check_location` proves, before anything trains, that the registry can be reached
(and written), raising one-line :class:`~vaebench.registry.store.RegistryError`-style
errors (:class:`LocationError`).

Credentials are never part of the URL vaebench keeps: they come from the usual places
of each filesystem (for S3: the environment, ``~/.aws``, an instance role; an
S3-compatible server such as MinIO or moto through ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3``, or vaebench's ``VAEBENCH_S3_ENDPOINT_URL``). A URL with
``user:password@`` in it is refused, so a secret never reaches a record or a log.

Object storage has no rename: a record is put whole (an object appears complete or not
at all), and claims use a conditional put (``If-None-Match: *``, fsspec's ``"xb"`` mode).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LocationError",
    "S3_ENDPOINT_ENV",
    "check_location",
    "display",
    "filesystem",
    "is_remote",
    "join",
    "reason",
    "require",
    "scheme",
    "write_whole",
]

#: vaebench's own setting of an S3-compatible endpoint (the CLI's ``--s3-endpoint-url``).
S3_ENDPOINT_ENV = "VAEBENCH_S3_ENDPOINT_URL"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Install hints for the filesystems of optional packages (the fsspec protocol -> extra).
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "az": "azure"}


class LocationError(ValueError):
    """A registry URL that cannot be used (unknown scheme, missing package, no such bucket,
    no access, read-only), with a one-line message free of credentials."""


def scheme(root: str | os.PathLike[str]) -> str:
    """The URL scheme of ``root`` (``"s3"``, ``"file"``, ...); ``"file"`` for a plain path."""
    match = _SCHEME_RE.match(os.fspath(root)) if isinstance(root, str) else None
    return match.group(1).lower() if match else "file"


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is served by fsspec rather than the local file system (any URL
    other than ``file://``)."""
    return scheme(root) != "file"


def local_path(root: str | os.PathLike[str]) -> Path:
    """The local directory of a plain path or ``file://`` URL."""
    text = os.fspath(root)
    if isinstance(text, str) and text.lower().startswith("file://"):
        text = text[len("file://"):]
    return Path(text)


def display(root: str | os.PathLike[str]) -> str:
    """``root`` as messages and records show it: a URL without ``user:password@``."""
    text = os.fspath(root)
    if not isinstance(text, str):
        return repr(text)
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", text)


#: botocore's limits on an S3 request (seconds; attempts in all), so a server that accepts a
#: connection and then never answers fails the command instead of holding it for good
#: (botocore's own read timeout is 60 s, retried; s3fs retries again on top). A 50 MB
#: multipart chunk is sent before the read timeout starts.
S3_CONFIG = {"connect_timeout": 10, "read_timeout": 30, "retries": {"max_attempts": 2, "mode": "standard"}}
#: s3fs's own retries of a request that timed out (its default: 5, each after botocore's).
S3_RETRIES = 1


def _storage_options(protocol: str) -> dict[str, Any]:
    """Options for the filesystem of ``protocol`` taken from vaebench's environment
    (credentials are left to the filesystem's own lookup), with bounded waits for S3
    (:data:`S3_CONFIG`)."""
    if protocol in ("s3", "s3a"):
        options: dict[str, Any] = {"config_kwargs": dict(S3_CONFIG)}
        endpoint = os.environ.get(S3_ENDPOINT_ENV)
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        return options
    return {}


@functools.lru_cache(maxsize=32)
def _open(url: str, endpoint: str | None) -> tuple[Any, str]:
    import fsspec  # noqa: PLC0415 - fsspec only for remote registries

    protocol = scheme(url)
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = _EXTRAS.get(protocol)
        hint = f"; install it with: pip install 'vaebench[{extra}]'" if extra else ""
        raise LocationError(f"registry {display(url)}: the {protocol}:// filesystem is not installed{hint}") from exc
    except ValueError as exc:
        raise LocationError(f"registry {display(url)}: unknown URL scheme {protocol!r}") from exc
    fs = cls(**_storage_options(protocol))
    if protocol in ("s3", "s3a") and hasattr(fs, "retries"):
        fs.retries = S3_RETRIES  # s3fs's own retries (an attribute, not a constructor option)
    path = cls._strip_protocol(url).rstrip("/")
    return fs, path


def filesystem(root: str | os.PathLike[str]) -> tuple[Any, str]:
    """``(fsspec filesystem, the root's path within it)`` for a registry URL (cached per
    URL and endpoint). Raises :class:`LocationError` for an unknown scheme, a filesystem
    whose package is not installed (with its install hint) or a URL carrying credentials."""
    text = os.fspath(root)
    if not isinstance(text, str):
        raise LocationError(f"registry {text!r}: expected a path or URL")
    if display(text) != text:
        raise LocationError(
            f"registry {display(text)}: credentials in the URL are refused; use the "
            "environment or ~/.aws (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)"
        )
    if not is_remote(text):
        import fsspec.implementations.local as local  # noqa: PLC0415

        return local.LocalFileSystem(), str(local_path(text).absolute())
    return _open(text, os.environ.get(S3_ENDPOINT_ENV))


def join(root: str | os.PathLike[str], *parts: str) -> str:
    """``root`` and ``parts`` joined with ``/`` (a URL stays a URL)."""
    text = os.fspath(root).rstrip("/") if is_remote(root) else str(local_path(root))
    return "/".join([text, *parts])


def write_whole(root: str | os.PathLike[str], path: str, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` as the file ``path`` under the registry ``root``, replacing it whole: a
    reader sees the old file or the new one, never part of one. Locally a temporary file in
    the same folder (``fsync``-ed when asked) renamed over ``path``; on object storage one
    put. The folder must exist locally."""
    if is_remote(root):
        filesystem(root)[0].pipe_file(path, data)
        return
    import secrets  # noqa: PLC0415

    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/.{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def reason(exc: BaseException) -> str:
    """One line of an exception of a filesystem call, without credentials (for messages)."""
    if isinstance(exc, PermissionError):
        return "access denied (check the credentials and the bucket's policy)"
    if isinstance(exc, FileNotFoundError):
        return "no such bucket or path"
    text = " ".join((str(exc) or type(exc).__name__).split())
    return re.sub(r"(?i)(secret|token|key|signature|credential)[^ ]*=[^ &]+", r"\1=***", text)[:300]


def check_location(root: str | os.PathLike[str], *, write: bool = False) -> None:
    """Prove a remote registry can be reached (its bucket exists and can be listed) and,
    with ``write``, written (a probe object is put and removed). A local registry is checked
    by ``store.check_writable``; nothing is done here for one. Raises :class:`LocationError`
    with a one-line message (no credentials) otherwise."""
    if not is_remote(root):
        return
    fs, path = filesystem(root)
    bucket = path.split("/", 1)[0]
    try:
        fs.invalidate_cache(bucket)
        fs.ls(bucket, detail=False)  # no bucket: FileNotFoundError; wrong credentials: PermissionError
        fs.ls(path, detail=False) if fs.exists(path) else None
    except FileNotFoundError as exc:
        raise LocationError(f"registry {display(root)}: bucket {bucket!r} does not exist") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of the store is the user's to see
        raise LocationError(f"registry {display(root)}: cannot read: {reason(exc)}") from exc
    if write:
        import secrets  # noqa: PLC0415

        probe = f"{path}/.probe-{secrets.token_hex(6)}"
        try:
            fs.pipe_file(probe, b"probe")
            fs.rm_file(probe)
        except Exception as exc:  # noqa: BLE001
            raise LocationError(f"registry {display(root)}: cannot write: {reason(exc)}") from exc


def require(root: str | os.PathLike[str]) -> None:
    """Prove a registry to be read exists: a local directory, or a remote one whose bucket
    can be listed (:func:`check_location`). Raises :class:`LocationError` (one line)."""
    if is_remote(root):
        check_location(root)
    elif not local_path(root).is_dir():
        raise LocationError(f"registry {display(root)} does not exist (run `vaebench run` first or pass --registry)")


def clear_cache() -> None:
    """Forget the cached filesystems (tests that change the environment's endpoint)."""
    _open.cache_clear()

