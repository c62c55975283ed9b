"""A submitted grid's manifest: which scheduler tasks train which points.

An executor that submits (``slurm``, ``ray``) returns its tasks (``contract.TaskRef``);
``runner.run_grid`` writes them here, ``<registry>/grids/<grid_id>.json``, once, whole
(a temporary file renamed; one PUT on object storage). ``vaebench status`` and ``vaebench
cancel`` read it from any machine that sees the registry: with the records, the claims and
the periodic checkpoints it is the grid's whole state. JSON, never pickle.

Fields: ``grid_id`` (``YYYYMMDDTHHMMSSZ-xxxxxx``, as an attempt id), ``executor`` and its
``options`` (as checked: names the scheduler reads, no credentials), ``submitted_at`` (ISO
8601, UTC), ``host``, ``run_ids`` (the grid's points submitted, in grid order) and
``tasks``: ``[{"job", "run_ids", "log"}]`` and ``specs``: each submitted point's spec as its
canonical JSON object (``RunSpec.to_json``), by run id, so a watcher on any machine can
write the ``failed`` record of a point whose task died (``harness.watch.settle``);
``driver``: ``host:pid:start`` of the process the tasks die with, for an executor that does
not detach (``ray``: its driver; ``""`` for ``slurm``), which :func:`driver_state` reads.
It is written as soon as the tasks are submitted (``GridJob.submitted``), so a grid is seen
while it runs, and again when the executor returns.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

from vaebench.registry import location, store

GRIDS = "grids"


@dataclass
class TaskRef:
    """One scheduler task an executor submitted: its ``job`` id as the scheduler names it
    (Slurm: ``ARRAYJOB_TASK``, e.g. ``4242_3``), the ``run_ids`` it trains (one grid point,
    or one vectorized group) and ``log``: where its output goes (a path on a file system the
    submitting machine sees, or ``None``). Part of the executor contract
    (``plugins/contract.py``, ``vaebench.plugin``); defined here, where the manifest keeps it."""

    job: str
    run_ids: list[str]
    log: str | None = None


@dataclass
class GridManifest:
    grid_id: str
    executor: str
    options: dict[str, Any]
    submitted_at: datetime
    tasks: list[TaskRef]
    host: str = field(default_factory=socket.gethostname)
    #: run id -> the point's spec as a JSON object (``RunSpec.to_json``); may lack points
    #: (a manifest written before it was kept)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``host:pid:start`` of the process the grid's tasks die with (:func:`this_process`), or
    #: ``""`` where they outlive the submitting process
    driver: str = ""

    @property
    def run_ids(self) -> list[str]:
        return [run_id for task in self.tasks for run_id in task.run_ids]

    def task_of(self, run_id: str) -> TaskRef | None:
        return next((t for t in self.tasks if run_id in t.run_ids), None)

    def to_json(self) -> str:
        return json.dumps({
            "grid_id": self.grid_id, "executor": self.executor, "options": self.options,
            "submitted_at": self.submitted_at.isoformat(), "host": self.host, "run_ids": self.run_ids,
            "tasks": [{"job": t.job, "run_ids": list(t.run_ids), "log": t.log} for t in self.tasks],
            "specs": self.specs, "driver": self.driver,
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GridManifest":
        data = json.loads(text)
        return cls(grid_id=str(data["grid_id"]), executor=str(data["executor"]), options=dict(data.get("options") or {}),
                   submitted_at=datetime.fromisoformat(data["submitted_at"]), host=str(data.get("host") or ""),
                   tasks=[TaskRef(job=str(t["job"]), run_ids=[str(r) for r in t["run_ids"]], log=t.get("log"))
                          for t in data.get("tasks") or []],
                   specs={str(k): dict(v) for k, v in (data.get("specs") or {}).items()},
                   driver=str(data.get("driver") or ""))


def this_process() -> str:
    """``host:pid:start`` of this process (:func:`vaebench.registry.store.process_start`)."""
    return f"{store.this_host()}:{os.getpid()}:{store.process_start(os.getpid())}"


def driver_parts(manifest: GridManifest) -> tuple[str, int | None, str]:
    """``(host, pid, start)`` of the manifest's ``driver`` (:func:`this_process`'s form);
    pid ``None`` where it is not a number."""
    host, _, rest = manifest.driver.partition(":")
    pid_text, _, start = rest.partition(":")
    return host, int(pid_text) if pid_text.isdigit() else None, start


def driver_who(manifest: GridManifest) -> str:
    """``host:pid`` of the process a grid's tasks die with (the manifest's ``driver``)."""
    host, pid, _ = driver_parts(manifest)
    return f"{host}:{pid}"


def driver_state(manifest: GridManifest) -> str:
    """Whether the process ``manifest``'s tasks die with is still there: ``""`` (none named),
    ``"alive"``, ``"gone"`` (on this host: no such process, or its pid is a later process's
    now) or ``"elsewhere"`` (on another host: cannot be told from here)."""
    if not manifest.driver:
        return ""
    host, pid, start = driver_parts(manifest)
    if host != store.this_host():
        return "elsewhere"
    if pid is None or store.pid_dead(pid) or (start and store.process_start(pid) != start):
        return "gone"
    return "alive"


def grids_dir(root: str | os.PathLike[str]) -> str:
    return location.join(root, GRIDS)


def write_manifest(root: str | os.PathLike[str], manifest: GridManifest) -> str:
    """Write ``manifest`` whole as ``<root>/grids/<grid_id>.json``; returns its path."""
    path = location.join(grids_dir(root), f"{manifest.grid_id}.json")
    if not location.is_remote(root):
        os.makedirs(grids_dir(root), exist_ok=True)
    location.write_whole(root, path, manifest.to_json().encode())
    return path


def read_manifests(root: str | os.PathLike[str]) -> list[GridManifest]:
    """Every grid manifest of the registry, oldest first (a file that cannot be read as one
    is left out)."""
    fs, base = location.filesystem(root)
    try:
        names = sorted(p for p in fs.ls(f"{base}/{GRIDS}", detail=False) if str(p).endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            out.append(GridManifest.from_json(fs.cat_file(name).decode()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda m: (m.submitted_at, m.grid_id))


def find_grids(root: str | os.PathLike[str], term: str | None = None) -> list[GridManifest]:
    """The grids ``term`` names: ``None`` / ``""``: the latest; a grid id or a unique prefix
    of one; a scheduler job id (``4242`` or ``4242_3``: the grids with that job); a run id
    prefix (hex: the grids that submitted that run). Oldest first; may be empty."""
    manifests = read_manifests(root)
    if not term:
        return manifests[-1:]
    by_id = [m for m in manifests if m.grid_id.startswith(term)]
    if by_id:
        return by_id
    by_job = [m for m in manifests if any(t.job == term or t.job.split("_")[0] == term for t in m.tasks)]
    if by_job:
        return by_job
    return [m for m in manifests if any(r.startswith(term) for r in m.run_ids)]

