"""A submitted grid's state, read from the registry and the scheduler: ``vaebench status``,
``vaebench cancel`` and the watch after ``vaebench run --executor slurm``.

Each point of a grid's manifest (``registry.grids``) is in one of :data:`POINT_STATES`:

- ``recorded``: its latest attempt finished at or after the grid's ``submitted_at`` (``ok``,
  ``diverged`` or ``failed``, with the record's error);
- ``training``: a live claim holds it (``registry.claims``), with the step of its periodic
  checkpoint when there is one (``resumption.checkpoint_step``: read, never downloaded);
- ``lost``: its task left the scheduler or failed there (the executor's ``states``:
  :data:`LOST_TASK_STATES`) while the point has neither a record nor a live claim;
- ``queued``: anything else (its task waits, or starts).

A grid whose tasks die with their driver (``ray``; the manifest's ``driver``) is read from the
registry alone while that driver may live (its executor's states are the driver's own); once
the driver is gone (``grids.driver_state``), each point without a record or a live claim is
``lost``.

:func:`settle` writes each lost point's ``failed`` record, once: it takes the point's claim
first (two watchers never both write it), looks for a record again, and records the
scheduler's reason and the last lines of the task's log through ``pending.PendingRun.fail``,
the one way a run ends. Nothing here trains; the executor is built from the manifest
(``manager.executor(name).build(options)``), so any machine that sees the registry watches.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from vaebench.harness import resumption
from vaebench.harness.messages import one_line
from vaebench.harness.pending import PendingRun, SilentReporter, recorded_since
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.contract import TaskRef, TaskState, capability
from vaebench.plugins.runspec import RunSpec
from vaebench.registry import claims, grids, store
from vaebench.registry.grids import GridManifest

#: A grid point's state in :func:`grid_state`.
POINT_STATES = ("recorded", "training", "queued", "lost")
#: Task states (``contract.TASK_STATES``) after which a point without a record or a live
#: claim will not be recorded by its task.
LOST_TASK_STATES = ("ended", "failed", "unknown")
#: Lines of a lost task's log kept in its points' failed records.
LOG_LINES = 10
#: Who a watcher's claim names while it writes a lost point's record.
WRITER = "vaebench status"


@dataclass
class PointState:
    """One grid point as :func:`grid_state` reads it: ``state`` one of :data:`POINT_STATES`;
    ``status`` the record's (``ok`` / ``diverged`` / ``failed``) when recorded; ``step`` the
    periodic checkpoint's step while training (``None``: none yet) of ``steps``; ``job`` the
    scheduler task that trains it; ``reason``: the record's error, the claim's holder, or the
    scheduler's word. ``record``: the recorded attempt (not in :meth:`to_json`)."""

    run_id: str
    label: str
    state: str
    status: str | None = None
    step: int | None = None
    steps: int | None = None
    job: str | None = None
    reason: str = ""
    record: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "label": self.label, "state": self.state, "status": self.status,
                "step": self.step, "steps": self.steps, "job": self.job, "reason": self.reason}


@dataclass
class GridState:
    """A grid's manifest and its points' states, in grid order; ``settled``: the run ids whose
    failed record :func:`settle` wrote this time."""

    manifest: GridManifest
    points: list[PointState]
    settled: list[str] = field(default_factory=list)
    #: Why the scheduler's task states could not be read here (``""``: they were): no point
    #: is called lost without them.
    scheduler_note: str = ""

    @property
    def done(self) -> bool:
        """Every point is recorded."""
        return all(p.state == "recorded" for p in self.points)

    def count(self, state: str) -> int:
        return sum(1 for p in self.points if p.state == state)

    def records(self) -> list[dict[str, Any]]:
        """The recorded points' records, in grid order."""
        return [p.record for p in self.points if p.record is not None]

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {"grid_id": m.grid_id, "executor": m.executor, "submitted_at": m.submitted_at.isoformat(),
                "host": m.host, "done": self.done, "counts": {s: self.count(s) for s in POINT_STATES},
                "points": [p.to_json() for p in self.points], "settled": list(self.settled),
                "jobs": [t.job for t in m.tasks], "scheduler_note": self.scheduler_note}


def build_executor(manifest: GridManifest, manager: Any) -> Any:
    """The executor ``manifest`` was submitted with, built from its recorded options (a
    one-line ``ValueError`` / ``UnknownSpecError`` when it cannot be built here)."""
    return manager.executor(manifest.executor).build(manifest.options)


def task_states(executor: Any, tasks: Sequence[TaskRef]) -> tuple[dict[str, TaskState], str]:
    """``(the executor's states of tasks by job id, "")``, or ``({}, why)`` when it cannot
    tell (the scheduler cannot be reached now); ``({}, "")`` for an executor without states."""
    if executor is None:
        return {}, ""
    try:
        return dict(capability(executor, "states")(list(tasks)) or {}), ""
    except Exception as exc:  # noqa: BLE001 - a scheduler that cannot answer now: states unknown, nothing lost
        return {}, f"the scheduler's task states could not be read ({one_line(exc)})"


def latest_since(registry: str, run_id: str, manifest: GridManifest) -> dict[str, Any] | None:
    """``run_id``'s latest attempt finished at or after the grid's submission, or ``None``."""
    return recorded_since(registry, run_id, manifest.submitted_at)


def spec_of(manifest: GridManifest, run_id: str) -> RunSpec | None:
    data = manifest.specs.get(run_id)
    return RunSpec.from_dict(dict(data)) if data else None


def point_state(registry: str, manifest: GridManifest, run_id: str, states: dict[str, TaskState]) -> PointState:
    """One point's :class:`PointState` (see the module)."""
    spec = spec_of(manifest, run_id)
    task = manifest.task_of(run_id)
    point = PointState(run_id=run_id, label=spec.label() if spec else "", state="queued",
                       steps=spec.steps if spec else None, job=task.job if task else None)
    info = claims.holder(registry, run_id)
    if info is not None and info.live() and info.writer == WRITER:  # a watcher settles it now
        point.state, point.reason = "lost", f"being recorded by {WRITER} ({info.who})"
        return point
    if info is not None and info.live():
        point.state, point.reason = "training", info.who
        point.step = resumption.checkpoint_step(registry, run_id)
        return point
    record = latest_since(registry, run_id, manifest)
    if record is not None:
        point.state, point.status, point.record = "recorded", record.get("status"), record
        point.reason = record.get("error") or ""
        point.step = record.get("steps_done")
        return point
    told = states.get(task.job) if task else None
    if told is not None and told.state in LOST_TASK_STATES:
        point.state = "lost"
        point.reason = f"task {told.state}" + (f": {told.reason}" if told.reason else "")
    elif told is not None:
        point.reason = told.state if not told.reason else f"{told.state}: {told.reason}"
    return point


def grid_state(registry: str, manifest: GridManifest, manager: Any, executor: Any = None) -> GridState:
    """Each of ``manifest``'s points' state now (``executor``: the one built from the
    manifest, :func:`build_executor`; built here when ``None``; one that cannot be built
    here answers no task states, so nothing is lost)."""
    note, driver = "", grids.driver_state(manifest)
    if driver in ("alive", "elsewhere") and manifest.driver != grids.this_process():
        states, why = {}, f"its tasks are held by the grid's driver ({grids.driver_who(manifest)}): points read from the registry"
    elif driver == "gone":
        states, why = {t.job: TaskState("unknown", "the grid's driver ended") for t in manifest.tasks}, ""
    else:  # the scheduler's own word (the executor built only here: its package may be slow to import)
        if executor is None:
            try:
                executor = build_executor(manifest, manager)
            except Exception as exc:  # noqa: BLE001 - e.g. the scheduler's package not installed here
                note = f"the {manifest.executor} executor cannot be built here ({one_line(exc)}): task states unknown"
        states, why = task_states(executor, manifest.tasks)
    return GridState(manifest, [point_state(registry, manifest, r, states) for r in manifest.run_ids],
                     scheduler_note=note or why)


def stop_driver(manifest: GridManifest) -> bool:
    """Stop the process a grid's tasks die with (the manifest's ``driver``), as its own Ctrl-C
    would: SIGTERM, on which it cancels its tasks and records what they finished. ``False``
    when it is gone already; a one-line ``ValueError`` when it runs on another host."""
    state = grids.driver_state(manifest)
    _, pid, _ = grids.driver_parts(manifest)
    if state == "elsewhere":
        raise ValueError(f"grid {manifest.grid_id}'s tasks are held by its {manifest.executor} driver on "
                         f"{grids.driver_who(manifest)}: stop that process there (Ctrl-C, or kill -TERM {pid})")
    if state != "alive" or pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def failure_text(point: PointState, tail: str) -> str:
    """A lost point's record error: the scheduler's reason and the task log's last lines,
    on one line (``" | "`` between lines)."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    text = f"{point.reason} (job {point.job})" if point.job else point.reason
    return f"{text}; log tail: {' | '.join(lines)}" if lines else f"{text}; no log to read"


def settle(registry: str, state: GridState, manager: Any, executor: Any = None,
           lines: int = LOG_LINES) -> GridState:
    """Write a ``failed`` record for each ``lost`` point of ``state`` (its claim taken first;
    a point recorded or claimed meanwhile is left alone); the points written are marked
    ``recorded`` and listed in ``state.settled``. Returns ``state``."""
    lost = [p for p in state.points if p.state == "lost"]
    if not lost:
        return state
    if executor is None:
        executor = build_executor(state.manifest, manager)
    datasets: dict[tuple[str, str | None], Any] = {}
    for point in lost:
        spec = spec_of(state.manifest, point.run_id)
        if spec is None:
            point.reason += "; its spec is not in the grid's manifest: not settled"
            continue
        claim = claims.acquire(registry, point.run_id, writer=WRITER)
        if claim is None:  # another watcher writes it now (or its task came back)
            if "being recorded by" not in point.reason:
                info = claims.holder(registry, point.run_id)
                point.reason += f"; being recorded by {info.who if info is not None else 'another writer'}"
            continue
        try:
            found = latest_since(registry, point.run_id, state.manifest)
            if found is not None:
                point.state, point.status, point.record = "recorded", found.get("status"), found
                point.reason = found.get("error") or ""
                continue
            task = state.manifest.task_of(point.run_id)
            tail = capability(executor, "log_tail")(task, lines) if task is not None else ""
            key = (spec.dataset, spec.dataset_path)
            if key not in datasets:
                datasets[key] = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
            try:
                run = PendingRun(spec, manager, ExecutionOptions(device="cpu"), dataset=datasets[key])
                record = run.fail(registry, failure_text(point, tail), SilentReporter())
            except Exception as exc:  # noqa: BLE001 - said in the table; the next watch tries again
                point.reason += f"; not settled ({one_line(exc)})"
                continue
        finally:
            claim.release()
        point.state, point.status, point.record, point.reason = "recorded", record["status"], record, record["error"]
        state.settled.append(point.run_id)
    return state


def watch(registry: str, manifest: GridManifest, manager: Any, every: float = 3.0,
          show: Callable[[GridState], None] | None = None, once: bool = False) -> GridState:
    """Read (and settle) the grid's state every ``every`` seconds, handing each to ``show``,
    until every point is recorded (or once, with ``once``); returns the last state."""
    try:
        executor = build_executor(manifest, manager)
    except Exception:  # noqa: BLE001 - no task states here: the registry alone tells
        executor = None
    while True:
        state = grid_state(registry, manifest, manager, executor)
        if executor is not None:
            settle(registry, state, manager, executor)
        if show is not None:
            show(state)
        if once or state.done:
            return state
        time.sleep(every)


def cancellable(state: GridState) -> list[TaskRef]:
    """The grid's tasks that may still train: some point not recorded, and the scheduler
    does not say the task ended or failed."""
    open_jobs = {p.job for p in state.points if p.state in ("training", "queued")}
    return [t for t in state.manifest.tasks if t.job in open_jobs]


def short_reason(reason: str, width: int = 160) -> str:
    """``reason`` in at most ``width`` characters for the table: a failure's cause and the
    END of its log tail (where the traceback's last line is), the middle elided."""
    if len(reason) <= width:
        return reason
    head, sep, tail = reason.partition("; log tail: ")
    if sep and len(head) + len(sep) + 20 < width:
        keep = width - len(head) - len(sep) - 3
        return f"{head}{sep}...{tail[-keep:]}"
    return reason[:width - 3] + "..."


def state_table(state: GridState) -> Any:
    """A rich table of ``state``: run id, label, state, step/steps, job, reason."""
    from rich.markup import escape
    from rich.table import Table

    m = state.manifest
    counts = ", ".join(f"{state.count(s)} {s}" for s in POINT_STATES if state.count(s))
    table = Table(title=f"grid {m.grid_id} · {m.executor} · {counts}", title_justify="left",
                  caption=escape(state.scheduler_note) or None, caption_justify="left")
    for col in ("run", "label", "state", "step", "job", "reason"):
        table.add_column(col, overflow="fold")
    colour = {"ok": "green", "diverged": "yellow", "failed": "red"}
    for p in state.points:
        shown = p.state if p.status is None else f"{p.state}: {p.status}"
        style = colour.get(p.status or "", "red" if p.state == "lost" else "")
        step = f"{'-' if p.step is None else p.step}/{'-' if p.steps is None else p.steps}"
        reason = short_reason(p.reason)
        table.add_row(p.run_id, escape(p.label), f"[{style}]{shown}[/]" if style else shown, step,
                      escape(p.job or "-"), escape(reason))
    return table
