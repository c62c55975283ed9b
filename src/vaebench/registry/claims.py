"""Claims: a grid point is trained by one writer at a time, whoever else shares the registry.

Layout under the registry root (a local path or any fsspec URL, ``registry.location``)::

    <root>/claims/<run_id>/<generation>.json

A claim file holds JSON: ``host``, ``pid``, ``pids`` (every process of the writer that
works on the point: the parent that holds the claim and, in the ``processes`` strategy,
the worker training it), ``started`` and ``renewed`` (UTC, ISO 8601), ``lease_seconds``,
``writer`` (what took it, e.g. ``vaebench run``), and for a writer that is one run of a
scheduler's task (:class:`Incarnation`) ``task`` and ``restart`` (e.g. ``"4242_3"``, ``1``);
a file without them (an older vaebench's, any plain writer's) reads as no incarnation.
The *current* claim of a point is its highest generation; a point without a claim file
is free.

- **Acquire** (:func:`acquire`): read the highest generation ``g`` (0 when there is none);
  when it is held live by another writer, give up (``None``), unless the caller's
  incarnation supersedes it (below); otherwise create
  generation ``g + 1`` *exclusively*: locally the file is written whole under a temporary
  name and ``os.link``-ed onto its name (atomic, fails when the name exists, also on NFS);
  on object storage it is a conditional put (fsspec mode ``"xb"``, ``If-None-Match: *``).
  Of several writers taking the same point at once exactly one creates ``g + 1``; the
  others find it live and give up. The winner removes the lower generations, and gives
  up again should a higher generation already exist (a claim removed meanwhile by
  :func:`remove_stale`).
- **Renew** (:meth:`Claim.renew`): rewrite the own generation with a new ``renewed`` time
  (locally temporary file + ``os.replace``; remotely a plain put), after checking that no
  higher generation exists: if one does, the claim was taken over (the lease ran out while
  this process stalled) and is *lost* (:attr:`Claim.lost_to`); it is never taken back.
  :class:`ClaimKeeper` (one per process, :data:`KEEPER`) renews every claim the process
  holds every ``lease / 5`` seconds from a daemon thread.
- **Release** (:meth:`Claim.release`): remove the own generation (and any lower one), and
  the point's folder when it is empty; a claim taken over is left to its new holder.
- **Stale**: a claim whose last renewal (the later of its ``renewed`` time
  and, locally, the file's mtime) is older than its ``lease_seconds``, or whose writer is
  on this host and every one of its ``pids`` is dead (a zombie counts as dead). So a
  writer killed with ``kill -9`` leaves a point that the next ``--resume`` on its host
  takes at once, and one on another host after the lease (default
  :data:`LEASE_SECONDS`). A claim file that cannot be read is stale once its file is
  older than the default lease.
- **Superseded** (:meth:`Incarnation.supersedes`): a scheduler that runs at most one run
  of a task at a time (Slurm requeues an array task as its next ``SLURM_RESTART_COUNT``)
  makes a live claim written by the same task with a lower restart count a leftover of
  an earlier run that died without releasing it (a node failure, ``kill -9``): the later
  run, acquiring with its :class:`Incarnation`, takes it over at once, through the same
  exclusive ``g + 1`` as a stale claim, wherever the earlier run's host was. Nobody else
  sees such a claim as stale (verify and gc leave it to its lease).

:func:`claims_of`, :func:`stale_claims` and :func:`remove_stale` serve ``vaebench registry
verify`` and ``gc``. ``remove_stale`` takes each stale claim over and then releases it,
rather than deleting it: a writer taking the same point meanwhile finds it held (and
skips it) instead of both of them winning, one at generation ``g + 1`` and one at 1.

Exactly one writer holds a point at a time as long as each holder renews within its
lease. A holder that stalls past its lease (a suspended process, a lost connection)
may be taken over while it still trains; it learns so at its next renewal
(:attr:`Claim.lost_to`), and the harness says so in one line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaebench.registry import location, store

__all__ = [
    "LEASE_SECONDS",
    "KEEPER",
    "Claim",
    "ClaimInfo",
    "ClaimKeeper",
    "Incarnation",
    "acquire",
    "claims_dir",
    "claims_of",
    "holder",
    "remove_stale",
    "stale_claims",
    "wait_free",
]

_RUN_ID_RE = re.compile(r"[0-9a-f]{6,64}")

#: Seconds a claim lives past its last renewal; renewed every fifth of it.
LEASE_SECONDS = 300.0


@dataclass(frozen=True)
class Incarnation:
    """Which run of a scheduler's task a writer is: ``task`` names the task (Slurm's
    ``ARRAYJOB_TASK``, e.g. ``"4242_3"``), ``restart`` counts the times it was requeued
    (0 for its first run). Only for a scheduler that runs at most one run of a task at a
    time: that is what makes an earlier run's claim a leftover."""

    task: str
    restart: int = 0

    def supersedes(self, other: "Incarnation | None") -> bool:
        """Whether ``other`` (a claim's incarnation) is an earlier run of the same task, so
        its claim is a leftover this run may take over while it still looks live."""
        return other is not None and other.task == self.task and other.restart < self.restart


@dataclass(frozen=True)
class ClaimInfo:
    """One claim file as read: the point, its generation and the JSON's fields.

    ``renewed`` is the last renewal (UTC, the later of the JSON's time and the file's
    mtime where that is known); ``lease_seconds`` the lease it was taken with;
    ``incarnation`` the scheduler task's run that wrote it (``None``: a plain writer, or a
    claim file without one)."""

    run_id: str
    generation: int
    host: str | None
    pid: int | None
    pids: tuple[int, ...]
    started: _dt.datetime | None
    renewed: _dt.datetime | None
    lease_seconds: float
    writer: str
    location: str
    incarnation: Incarnation | None = None

    @property
    def who(self) -> str:
        """``host:pid`` of the writer (``unknown`` for an unreadable claim)."""
        return f"{self.host}:{self.pid}" if self.host else "unknown"

    def stale(self, now: float | None = None) -> bool:
        """Whether the claim may be taken over: its lease ran out since its last renewal,
        or its writer is on this host and every one of its processes is dead."""
        now = time.time() if now is None else now
        if self.renewed is None or now - self.renewed.timestamp() > self.lease_seconds:
            return True
        pids = self.pids or ((self.pid,) if self.pid else ())
        return self.host == store.this_host() and bool(pids) and all(store.pid_dead(p) for p in pids)

    def live(self, now: float | None = None) -> bool:
        """Whether the claim holds its point now (not stale)."""
        return not self.stale(now)


# --------------------------------------------------------------------------- storage


def claims_dir(root: str | os.PathLike[str], run_id: str | None = None) -> str:
    """``<root>/claims`` (or ``<root>/claims/<run_id>``): a local path, or the path within
    the remote registry's filesystem (``location.filesystem``)."""
    if location.is_remote(root):
        base = location.filesystem(root)[1] + "/claims"
    else:
        base = str(location.local_path(root) / "claims")
    return base if run_id is None else f"{base}/{run_id}"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _parse_time(text: Any) -> _dt.datetime | None:
    try:
        value = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)


def _generations(root: str | os.PathLike[str], run_id: str) -> list[int]:
    """The generations present for ``run_id``, ascending."""
    directory = claims_dir(root, run_id)
    if location.is_remote(root):
        fs = location.filesystem(root)[0]
        try:
            names = [store.base_name(p) for p in fs.ls(directory, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
    else:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
    found = []
    for name in names:
        stem, dot, ext = name.partition(".")
        if dot and ext == "json" and stem.isdigit():
            found.append(int(stem))
    return sorted(found)


def _path(root: str | os.PathLike[str], run_id: str, generation: int) -> str:
    return f"{claims_dir(root, run_id)}/{generation}.json"


def _read(root: str | os.PathLike[str], run_id: str, generation: int) -> ClaimInfo | None:
    """The claim file of ``generation`` (``None`` when it is gone); an unreadable one is
    read as a claim of unknown writer, renewed at its file's mtime (remote: never)."""
    path = _path(root, run_id, generation)
    mtime: float | None = None
    try:
        if location.is_remote(root):
            data = location.filesystem(root)[0].cat_file(path)
        else:
            with open(path, "rb") as fh:
                data = fh.read()
                mtime = os.fstat(fh.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except ValueError:
        doc = {}
    renewed = _parse_time(doc.get("renewed")) if doc.get("renewed") else None
    if mtime is not None:
        at_mtime = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc)
        renewed = max(renewed, at_mtime) if renewed is not None else at_mtime
    pid = doc.get("pid") if isinstance(doc.get("pid"), int) else None
    pids = tuple(p for p in doc.get("pids") or () if isinstance(p, int))
    try:
        lease = float(doc.get("lease_seconds", LEASE_SECONDS))
    except (TypeError, ValueError):
        lease = LEASE_SECONDS
    task, restart = doc.get("task"), doc.get("restart")
    incarnation = (Incarnation(task, restart) if isinstance(task, str) and isinstance(restart, int)
                   and not isinstance(restart, bool) else None)
    return ClaimInfo(
        run_id=run_id, generation=generation, host=doc.get("host") if isinstance(doc.get("host"), str) else None,
        pid=pid, pids=pids, started=_parse_time(doc["started"]) if doc.get("started") else None, renewed=renewed,
        lease_seconds=lease, writer=str(doc.get("writer") or ""), location=path, incarnation=incarnation,
    )


def _create(root: str | os.PathLike[str], run_id: str, generation: int, data: bytes) -> bool:
    """Create the claim file of ``generation`` whole, exclusively; ``False`` when it exists."""
    path = _path(root, run_id, generation)
    if location.is_remote(root):
        fs = location.filesystem(root)[0]
        try:
            with fs.open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True
    directory = Path(claims_dir(root, run_id))
    tmp = directory / f".{generation}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        for tries in range(100):  # a releasing writer may remove the empty folder meanwhile
            directory.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "xb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                break
            except FileNotFoundError:
                if tries == 99:
                    raise
        try:
            os.link(tmp, path)  # atomic and exclusive, the file whole from the start
        except FileExistsError:
            return False
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _rewrite(root: str | os.PathLike[str], run_id: str, generation: int, data: bytes) -> None:
    """Replace the claim file of ``generation`` whole (its writer's own file)."""
    location.write_whole(root, _path(root, run_id, generation), data, fsync=False)


def _remove(root: str | os.PathLike[str], run_id: str, generation: int) -> None:
    path = _path(root, run_id, generation)
    try:
        if location.is_remote(root):
            location.filesystem(root)[0].rm_file(path)
        else:
            os.unlink(path)
    except (FileNotFoundError, OSError):
        pass


def _remove_empty(root: str | os.PathLike[str], run_id: str) -> None:
    """Remove ``claims/<run_id>`` and ``claims`` of a local registry when empty (object
    storage has no folders)."""
    if location.is_remote(root):
        return
    for directory in (claims_dir(root, run_id), claims_dir(root)):
        try:
            os.rmdir(directory)
        except OSError:
            return


# --------------------------------------------------------------------------- claims


def holder(root: str | os.PathLike[str], run_id: str) -> ClaimInfo | None:
    """The current (highest-generation) claim of ``run_id``, or ``None`` when it has none.

    A generation is removed only once a higher one exists, so a file gone between the
    listing and the read means a newer claim: the listing is read again."""
    while True:
        generations = _generations(root, run_id)
        if not generations:
            return None
        info = _read(root, run_id, generations[-1])
        if info is not None:
            return info


@dataclass
class Claim:
    """A claim this process holds on ``run_id`` (generation ``generation``).

    ``lost_to``: the claim that took it over (``None`` while it is held), set by
    :meth:`renew`. ``incarnation``: the scheduler task's run this process is, written into
    the claim file (``task``, ``restart``) so that a later run may take it over."""

    root: str
    run_id: str
    generation: int
    lease_seconds: float
    writer: str
    started: _dt.datetime
    pids: list[int] = field(default_factory=list)
    lost_to: ClaimInfo | None = None
    released: bool = False
    incarnation: Incarnation | None = None

    def document(self) -> bytes:
        """The claim file's JSON, renewed now."""
        doc: dict[str, Any] = {
            "run_id": self.run_id, "generation": self.generation, "host": store.this_host(), "pid": os.getpid(),
            "pids": [os.getpid(), *self.pids], "started": self.started.isoformat(), "renewed": _now().isoformat(),
            "lease_seconds": self.lease_seconds, "writer": self.writer,
        }
        if self.incarnation is not None:
            doc.update(task=self.incarnation.task, restart=self.incarnation.restart)
        return json.dumps(doc).encode()

    def renew(self, pids: list[int] | None = None) -> bool:
        """Renew the lease (and, given ``pids``, name the processes working on the point
        besides this one: a worker). ``False`` when the claim is lost: a higher generation
        exists (then :attr:`lost_to` says whose) or it was released."""
        if self.released:
            return False
        if self.lost_to is not None:
            return False
        if pids is not None:
            self.pids = list(pids)
        current = holder(self.root, self.run_id)
        if current is not None and current.generation > self.generation:
            self.lost_to = current
            return False
        _rewrite(self.root, self.run_id, self.generation, self.document())
        return True

    def release(self) -> None:
        """Give the point up (its record is written, or the run stopped): remove this
        generation and any lower one, unless a higher one took it over. Idempotent; best
        effort (a claim that cannot be removed runs out with its lease)."""
        if self.released:
            return
        self.released = True
        KEEPER.drop(self)
        try:
            current = holder(self.root, self.run_id)
            if current is not None and current.generation > self.generation:
                self.lost_to = self.lost_to or current
                return
            for generation in _generations(self.root, self.run_id):
                if generation <= self.generation:
                    _remove(self.root, self.run_id, generation)
            _remove_empty(self.root, self.run_id)
        except Exception:  # noqa: BLE001 - the lease ends it
            pass

    @property
    def who(self) -> str:
        return f"{store.this_host()}:{os.getpid()}"


def acquire(root: str | os.PathLike[str], run_id: str, lease: float = LEASE_SECONDS,
            writer: str = "vaebench", incarnation: Incarnation | None = None) -> Claim | None:
    """Claim ``run_id`` in the registry ``root`` for this process, for ``lease`` seconds
    past each renewal; ``None`` when another writer holds it live (:func:`holder` says
    who). Of writers acquiring the same point at once, exactly one gets it.

    ``incarnation``: the scheduler task's run this process is (recorded in the claim); a
    live claim of an earlier run of the same task (:meth:`Incarnation.supersedes`) is taken
    over like a stale one.

    The claim is not renewed by itself: hand it to :data:`KEEPER` (``KEEPER.keep``)."""
    if not _RUN_ID_RE.fullmatch(str(run_id)):
        raise ValueError(f"invalid run_id {run_id!r}: expected 6-64 lowercase hex characters")
    while True:
        current = holder(root, run_id)
        if (current is not None and current.live()
                and not (incarnation is not None and incarnation.supersedes(current.incarnation))):
            return None
        generation = (current.generation if current is not None else 0) + 1
        claim = Claim(str(root), run_id, generation, float(lease), writer, _now(), incarnation=incarnation)
        if not _create(root, run_id, generation, claim.document()):
            continue  # another writer created it first: look again (it is live, unless it already died)
        present = _generations(root, run_id)
        if present and present[-1] > generation:  # started over beside a takeover: not ours
            _remove(root, run_id, generation)
            return None
        for lower in present:
            if lower < generation:
                _remove(root, run_id, lower)
        return claim


# --------------------------------------------------------------------------- renewal


class ClaimKeeper:
    """Renews the claims it keeps from one daemon thread, every fifth of the shortest
    lease. A claim found lost has :attr:`Claim.lost_to` set and is dropped."""

    def __init__(self) -> None:
        self._claims: dict[int, Claim] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, claim: Claim) -> None:
        """Renew ``claim`` until it is dropped or released."""
        with self._lock:
            self._claims[id(claim)] = claim
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="vaebench-claims", daemon=True)
                self._thread.start()
        self._wake.set()

    def drop(self, claim: Claim) -> None:
        """Stop renewing ``claim``."""
        with self._lock:
            self._claims.pop(id(claim), None)

    def held(self) -> list[Claim]:
        """The claims kept now."""
        with self._lock:
            return list(self._claims.values())

    def _run(self) -> None:
        while True:
            claims = self.held()
            interval = min((c.lease_seconds for c in claims), default=LEASE_SECONDS) / 5
            self._wake.wait(max(0.05, interval))
            self._wake.clear()
            for claim in self.held():
                try:
                    if not claim.renew():
                        self.drop(claim)
                except Exception:  # noqa: BLE001 - a lost connection: tried again next time
                    pass


#: The keeper of this process's claims.
KEEPER = ClaimKeeper()


# --------------------------------------------------------------------------- care


def claims_of(root: str | os.PathLike[str]) -> list[ClaimInfo]:
    """Every point's current claim in the registry, by run id."""
    base = claims_dir(root)
    if location.is_remote(root):
        fs = location.filesystem(root)[0]
        try:
            run_ids = [store.base_name(p) for p in fs.ls(base, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
    else:
        try:
            run_ids = os.listdir(base)
        except FileNotFoundError:
            return []
    out = []
    for run_id in sorted(r for r in run_ids if not r.startswith(".")):
        info = holder(root, run_id)
        if info is not None:
            out.append(info)
    return out


def wait_free(root: str | os.PathLike[str], run_id: str, timeout: float, interval: float = 0.2) -> bool:
    """Wait up to ``timeout`` seconds for ``run_id``'s claim to be released or to go stale;
    whether it did. A scheduler learns that a worker on this host was killed when the
    kernel closes the worker's sockets, a moment before its process is gone (on a loaded
    machine, seconds): until then its claim is live, so a caller about to record that
    worker's point first waits here."""
    deadline = time.monotonic() + timeout
    while True:
        info = holder(root, run_id)
        if info is None or info.stale():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stale_claims(root: str | os.PathLike[str]) -> list[ClaimInfo]:
    """The current claims that are stale (:meth:`ClaimInfo.stale`): a writer died or
    stopped renewing without releasing its point. ``vaebench registry verify`` reports them."""
    now = time.time()
    return [info for info in claims_of(root) if info.stale(now)]


def remove_stale(root: str | os.PathLike[str]) -> list[ClaimInfo]:
    """End the stale claims of ``root`` (``vaebench registry gc``): each is taken over and
    then released, so its point is free; returns those ended. A point a writer takes
    meanwhile is left to it."""
    ended = []
    for info in stale_claims(root):
        claim = acquire(root, info.run_id, writer="vaebench registry gc")
        if claim is not None:
            claim.release()
            ended.append(info)
    return ended
