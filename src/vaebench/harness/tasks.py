"""A grid's points as tasks that train elsewhere: what a cluster executor sends, and what
its worker runs.

A remote executor (``slurm``, ``ray``, a plugin's) splits the planned specs into
:class:`PointsTask` s with :func:`split_tasks` (one per grid point, or one per vectorized
group), ships each as JSON (:meth:`PointsTask.to_json`: specs, execution options, metric
choices; nothing pickled but the call itself) and calls :func:`run_task` on the far
machine. There the task is a small local grid: the plugins found through entry points,
each point claimed right before it trains (``registry.claims``, so a requeued or duplicated
task never trains a point twice), picked up from its periodic checkpoint, and recorded into
the registry like any run (``pending.PendingRun``); it returns one line per point.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Sequence

from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.contract import GridJob
from vaebench.plugins.runspec import RunSpec

#: The :class:`ExecutionOptions` fields a task carries (the rest is set per run where it trains).
CARRIED = ("device", "amp", "compile", "threads", "eval_samples", "progress_every", "figures", "checkpoint_every",
           "device_grid", "fuse_steps")
#: How a task's points train together (``split_tasks``'s ``per``).
PER = ("point", "group")


@dataclass
class PointsTask:
    """One task: ``specs`` (one grid point, or a vectorized group's members) trained with
    ``strategy`` (``sequential`` or ``vectorized``) into ``registry``, under ``execution``
    (:data:`CARRIED` fields of ``ExecutionOptions``), scored with ``metric_names`` (``None``:
    the defaults) and ``metric_options``. ``resume``: ``--resume`` was given; ``since``: the
    grid's start (ISO 8601): a point another writer finished after it is not trained again
    (without ``resume``; with it, any finished point is not). ``writer``: who the points'
    claims name (e.g. ``slurm job 4242_3``); ``incarnation``: which run of the scheduler's
    task this is, ``{"task": "4242_3", "restart": 1}`` (``claims.Incarnation``; set where the
    task runs, by a scheduler that runs one run of a task at a time), ``None`` for none."""

    specs: list[RunSpec]
    registry: str
    execution: dict[str, Any]
    metric_names: list[str] | None = None
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy: str = "sequential"
    resume: bool = False
    since: str | None = None
    grid_id: str = ""
    writer: str = "vaebench task"
    incarnation: dict[str, Any] | None = None
    #: ``--log-to`` entries and ``--log-every``: the task logs its points itself.
    log_to: list[str] = field(default_factory=list)
    log_every: int = 0

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.specs]

    def to_json(self) -> str:
        """The task as one JSON document (specs as their canonical JSON)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "specs"}
        data["specs"] = [json.loads(s.to_json()) for s in self.specs]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PointsTask":
        data = json.loads(text)
        data["specs"] = [RunSpec.from_dict(s) for s in data["specs"]]
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


def split_tasks(specs: Sequence[RunSpec], job: GridJob, per: str = "point", writer: str = "vaebench task") -> list[PointsTask]:
    """``specs`` as tasks: one per point (``per="point"``), or one per vectorized group
    (``per="group"``: the points that can train as one program, ``strategies.vectorized_groups``;
    the rest one per point). Each carries ``job``'s registry, execution options, metrics and
    the grid's start, in grid order."""
    from vaebench.harness.strategies import vectorized_groups

    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(PER)}, got {per!r}")
    execution = {name: getattr(job.execution, name) for name in CARRIED}
    common = dict(registry=str(job.registry), execution=execution,
                  metric_names=list(job.metric_names) if job.metric_names else None,
                  metric_options={k: dict(v) for k, v in (job.metric_options or {}).items()},
                  resume=bool(job.resume), since=job.started_at.isoformat() if job.started_at else None,
                  grid_id=job.grid_id, writer=writer, log_to=list(job.log_to), log_every=int(job.log_every or 0))
    if per == "group":
        groups, alone = vectorized_groups(specs, job.manager)
        order = {s.run_id: i for i, s in enumerate(specs)}
        units = sorted([*groups, *([s] for s in alone)], key=lambda unit: order[unit[0].run_id])
    else:
        units = [[s] for s in specs]
    return [PointsTask(specs=list(unit), strategy="vectorized" if len(unit) > 1 else "sequential", **common)
            for unit in units]


def run_task(payload: str) -> str:
    """Run one :class:`PointsTask` (its JSON) here: the worker's entry point. Returns a JSON
    list with one ``{"run_id", "attempt", "status", "error"}`` per point recorded here (a
    point held or finished elsewhere is left out). Progress goes to stderr as plain lines."""
    from rich.console import Console

    from vaebench.harness.local_executor import LocalExecutor
    from vaebench.harness.loggers import close_reporter, logging_reporter
    from vaebench.harness.pending import PointClaims, dataset_loader
    from vaebench.harness.progress import RichReporter
    from vaebench.plugins.manager import get_manager
    from vaebench.registry.claims import Incarnation

    task = PointsTask.from_json(payload)
    manager = get_manager()
    execution = ExecutionOptions(**{k: v for k, v in task.execution.items() if k in CARRIED})
    reporter = RichReporter(Console(file=sys.stderr, force_terminal=False, width=160))
    reporter = logging_reporter(reporter, manager, task.log_to, task.registry, task.grid_id, task.log_every or None)
    since = datetime.fromisoformat(task.since) if task.since else None
    run = task.incarnation
    incarnation = Incarnation(str(run["task"]), int(run.get("restart") or 0)) if run else None
    claims = PointClaims(task.registry, reporter, task.resume, since=since, writer=task.writer,
                         incarnation=incarnation)
    job = GridJob(manager=manager, registry=task.registry, execution=execution, metric_names=task.metric_names,
                  metric_options=task.metric_options or None, strategy=task.strategy, resume=task.resume,
                  reporter=reporter, datasets=dataset_loader(manager), claims=claims, grid_id=task.grid_id, started_at=since)
    try:
        result = LocalExecutor().run(task.specs, job)
    finally:
        claims.release_all()
        close_reporter(reporter)
    return json.dumps([{"run_id": r["run_id"], "attempt": r.get("attempt"), "status": r.get("status"),
                        "error": r.get("error")} for r in result.records])


def task_records(registry: str, result: str, reporter: Any = None) -> list[dict[str, Any]]:
    """The records :func:`run_task`'s ``result`` (its JSON) names, read back from
    ``registry``, each shown through ``reporter.end_run`` when given; a record that cannot be
    read back is said through ``reporter.note`` and left out."""
    from vaebench.harness.messages import one_line
    from vaebench.registry import store

    out = []
    for line in json.loads(result):
        try:
            record = store.read_record(registry, f"{line['run_id']}.{line['attempt']}")
        except store.RegistryError as exc:
            if reporter is not None:
                reporter.note(f"{line['run_id']}: its record could not be read back ({one_line(exc)})")
            continue
        if reporter is not None:
            reporter.end_run(record)
        out.append(record)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vaebench.harness.tasks TASK.json``: run one task from a file (a scheduler
    without a Python API runs this); prints the result line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m vaebench.harness.tasks TASK.json\n")
        return 2
    with open(args[0], encoding="utf-8") as fh:
        print(run_task(fh.read()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
