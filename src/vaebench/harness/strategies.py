"""How a grid's runs share the machine.

- ``sequential``: one run after another in this process, each with all the threads.
- ``processes``: worker processes (spawned, so no state is inherited) train and score
  runs side by side, the CPU threads split between them; each worker writes its own
  records. On a 2-core CPU one single-threaded worker per core beats one process with
  two threads, because these small convolutions scale poorly across threads
  (``benchmarks/RESULTS.md``).
- ``vectorized``: grid points that differ only in β, C, γ, schedules or seed train as
  one program with stacked parameters (the backend's ``train_group``; torch:
  ``torch.func`` + ``vmap``; JAX: ``jax.vmap`` in one jitted step), then are scored and
  recorded one by one. Worth it on a GPU, where one small model leaves the device idle;
  slower than sequential on a CPU.
- ``auto``: vectorized on a GPU, processes on a CPU when two or more runs have two or
  more threads (``--threads``, default: the cores) to share, sequential otherwise.

Every strategy ends each run in :meth:`pending.PendingRun.finish`, so records are the same
whichever trained them, except the ``strategy`` and ``concurrent_runs`` columns.
"""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from typing import Any, Sequence

from vaebench.harness import resumption
from vaebench.harness.environment import cpu_cores
from vaebench.harness.messages import debug_traceback, one_line
from vaebench.harness.pending import PendingRun, PointClaims, run_one
from vaebench.plugins.contract import capability
from vaebench.plugins.backends import get_backend
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.manager import PluginManager, get_manager
from vaebench.plugins.runspec import RunSpec

STRATEGIES = ("auto", "sequential", "processes", "vectorized")


def choose_strategy(
    strategy: str, specs: Sequence[RunSpec], execution: ExecutionOptions, manager: PluginManager
) -> str:
    """The strategy to use for ``specs``: ``strategy`` itself, or what ``auto`` means here."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (use one of: {', '.join(STRATEGIES)})")
    if strategy != "auto":
        if strategy == "processes" and manager is not get_manager():
            raise ValueError("--strategy processes needs plugins installed as packages: worker processes "
                             "find plugins through entry points, not through a plugin manager built in this process")
        return strategy
    if len(specs) < 2:
        return "sequential"
    device = get_backend(specs[0].backend, manager).resolve_device(execution.device).device
    if device != "cpu":
        return "vectorized" if vectorized_groups(specs, manager)[0] else "sequential"
    if (execution.threads or cpu_cores()) >= 2 and manager is get_manager():
        return "processes"
    return "sequential"


def vectorized_groups(
    specs: Sequence[RunSpec], manager: PluginManager | None = None
) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """``(groups of ≥ 2 specs that can train together, the specs left to train alone)``.

    A group shares the backend and the backend's ``group_key(spec)`` (``None``: the spec
    trains alone); order within a group follows ``specs``.
    """
    by_key: dict[tuple, list[RunSpec]] = {}
    alone: list[RunSpec] = []
    for spec in specs:
        backend = get_backend(spec.backend, manager)
        key = backend.group_key(spec) if capability(backend, "supports_vectorized") else None
        if key is None:
            alone.append(spec)
            continue
        by_key.setdefault((spec.backend, key), []).append(spec)
    groups = []
    for members in by_key.values():
        if len(members) >= 2:
            groups.append(members)
        else:
            alone.extend(members)
    return groups, alone


# ------------------------------------------------------------------ sequential


def run_sequential(specs, manager, registry, execution, metric_names, reporter, metric_options, datasets,  # noqa: ANN001
                   claims: PointClaims | None = None, claimed: bool = False):
    """One run after another; each point claimed right before it trains (``claims``; a
    point it gives ``None`` for is left out) unless ``claimed`` (the caller holds them),
    and released once recorded."""
    records = []
    for index, spec in enumerate(specs):
        if claims is not None and not claimed and claims.take(spec) is None:
            continue
        try:
            reporter.start_run(spec, index, len(specs))
            dataset = datasets(spec)
            records.append(run_one(spec, manager, registry, execution, metric_names, reporter, dataset, metric_options))
        finally:
            if claims is not None:
                claims.release(spec.run_id)
    return records


# ------------------------------------------------------------------ vectorized


def _split_by_pickup_step(
    groups: list[list[RunSpec]], alone: list[RunSpec], registry: str, manager: PluginManager | None
) -> tuple[list[tuple[list[RunSpec], list[Any] | None]], list[RunSpec]]:
    """Each group with its members' periodic checkpoint points (``None`` for a backend that
    cannot pick a group up: it starts over), and the specs to train alone
    (``resumption.split_by_pickup_step``)."""
    kept: list[tuple[list[RunSpec], list[Any] | None]] = []
    alone = list(alone)
    for group in groups:
        if not capability(get_backend(group[0].backend, manager), "supports_group_resume"):
            kept.append((group, None))
            continue
        picked, more_alone = resumption.split_by_pickup_step([group], registry)
        kept.extend(picked)
        alone.extend(more_alone)
    return kept, alone


def run_vectorized(specs, manager, registry, execution, metric_names, reporter, metric_options, datasets,  # noqa: ANN001
                   claims: PointClaims | None = None):
    """Each group trained as one program, then each member scored and recorded; runs that
    cannot be grouped train one after another. A group's members are claimed right before
    it trains (``claims``), and only then are their periodic checkpoints looked at; a
    member held elsewhere leaves the group (a group of one trains alone)."""
    found, alone = vectorized_groups(specs, manager)
    records = []
    index = 0
    for found_group in found:
        members = [s for s in found_group if claims is None or claims.take(s) is not None]
        try:
            index = _train_groups(members, manager, registry, execution, metric_names, reporter, metric_options,
                                  datasets, records, index, len(specs))
        finally:
            if claims is not None:
                for spec in members:
                    claims.release(spec.run_id)
    records.extend(
        run_sequential(alone, manager, registry, execution, metric_names, _Offset(reporter, index, len(specs)),
                       metric_options, datasets, claims)
    )
    return records


def _train_groups(members, manager, registry, execution, metric_names, reporter, metric_options,  # noqa: ANN001
                  datasets, records: list, index: int, total: int) -> int:
    """Train the claimed ``members`` of one group (split by their pick-up steps; a member
    left alone trains alone), appending their records; returns the next run number."""
    if len(members) >= 2:
        groups, alone = _split_by_pickup_step([members], [], registry, manager)
    else:
        groups, alone = [], list(members)
    for group, points in groups:
        runs = []
        for spec in group:
            reporter.start_run(spec, index, total)
            index += 1
            runs.append(PendingRun(spec, manager, execution, metric_names, datasets(spec), "vectorized", len(group)))
        execution.notes.clear()
        callbacks = [lambda step, values, rid=s.run_id: reporter.progress(rid, step, values) for s in group]
        backend = get_backend(group[0].backend, manager)
        kwargs = {} if points is None else resumption.group_checkpoints(execution, registry, group, points)
        try:
            trained = backend.train_group(group, runs[0].dataset, execution, callbacks, **kwargs)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - the group's runs are recorded as failed, the grid goes on
            debug_traceback(f"runs {', '.join(s.run_id for s in group)} failed in training (one group)")
            records.extend(run.fail(registry, one_line(exc), reporter) for run in runs)
            continue
        group_notes = list(execution.notes)
        for run, model in zip(runs, trained):
            execution.notes.clear()
            records.append(run.finish(model, registry, reporter, metric_options, notes=group_notes))
    records.extend(
        run_sequential(alone, manager, registry, execution, metric_names, _Offset(reporter, index, total),
                       metric_options, datasets)
    )
    return index + len(alone)


class _Offset:
    """A reporter whose run numbers continue a count started elsewhere."""

    def __init__(self, reporter: Any, offset: int, total: int) -> None:
        self._reporter, self._offset, self._total = reporter, offset, total

    def start_run(self, spec: RunSpec, index: int, total: int) -> None:
        self._reporter.start_run(spec, self._offset + index, self._total)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)


# ------------------------------------------------------------------ processes


def run_processes(specs, manager, registry, execution, metric_names, reporter, metric_options, datasets,  # noqa: ANN001
                  claims: PointClaims | None = None):
    """Runs in spawned worker processes (``harness/workers.py``), side by side; how many
    and with how many threads each: :func:`workers.plan_workers`.

    This process claims each point right before it hands it to a worker (``claims``; the
    claim names the worker's pid too, so it stays live while either lives) and releases it
    once the run is recorded; a worker dies with this process (``PR_SET_PDEATHSIG``).

    Workers report over their pipes (start, progress, phase, end: in order per run); this
    process shows them, since the terminal is its own. On a stop signal the workers get
    it too, their runs stop at a step's end (periodic checkpoint written, if asked), no
    further run starts, and :class:`interrupt.Interrupted` goes on up once they ended.
    """
    from vaebench.harness.workers import STOP_GRACE_SECONDS, Pool, plan_workers
    from vaebench.plugins.backends import interrupt

    cores = execution.threads or cpu_cores()
    count, threads = plan_workers(len(specs), cores)
    todo = [(spec, registry, replace(execution, threads=n, notes=[]), metric_names, metric_options, count)
            for spec, n in zip(specs, threads)]
    todo.reverse()  # popped from the end: grid order
    by_id = {spec.run_id: (index, spec) for index, spec in enumerate(specs)}
    records: dict[str, dict[str, Any]] = {}
    pool = Pool(count)

    def failed(run_id: str, error: str) -> None:
        spec = by_id[run_id][1]
        run = PendingRun(spec, manager, execution, metric_names, datasets(spec), "processes", count)
        records[run_id] = run.fail(registry, error, reporter)

    def ended(run_id: str | None) -> None:
        if claims is not None and run_id is not None:
            claims.release(run_id)

    def show(worker: Any, message: tuple) -> None:
        kind, run_id = message[0], message[1]
        if kind == "start":
            index, spec = by_id[run_id]
            reporter.start_run(spec, index, len(specs))
        elif kind == "progress":
            reporter.progress(run_id, message[2], message[3])
        elif kind == "phase":
            reporter.phase(run_id, message[2])
        elif kind == "end":
            worker.run_id = None
            records[run_id] = message[2]
            reporter.end_run(message[2])
            ended(run_id)
        elif kind == "error":
            worker.run_id = None
            failed(run_id, message[2])
            ended(run_id)
        elif kind == "interrupted":  # a signal to the worker: to the whole job (Slurm) reaches this process too
            worker.run_id = None
            time.sleep(0.5)
            interrupt.check()
            if run_id is not None:  # the worker alone was stopped: its run fails, the grid goes on
                failed(run_id, f"worker process stopped by {signal.Signals(message[2]).name}")
                ended(run_id)
        elif kind == "died" and run_id is not None and run_id not in records and interrupt.received() is None:
            failed(run_id, f"worker process died (exit code {message[2]})")  # out of memory, killed, ...
            ended(run_id)

    def next_task() -> tuple | None:
        """The next point to hand out, claimed; ``None`` when none is left."""
        while todo:
            task = todo.pop()
            if claims is None or claims.take(task[0]) is not None:
                return task
        return None

    try:
        while todo or any(w.run_id is not None for w in pool.workers):
            for worker in pool.idle() if todo else []:
                task = next_task()
                if task is not None:
                    worker.give(task)
                    if claims is not None:
                        claims.working(task[0].run_id, [worker.process.pid])
            for worker, message in pool.events(timeout=0.5):
                show(worker, message)
    except interrupt.Interrupted as exc:
        # Workers of the same terminal had Ctrl-C too; a `kill` reached this process alone.
        pool.signal(exc.signum)
        since = interrupt.count()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        with interrupt.deferred(raise_on_exit=False):
            while pool.workers and time.monotonic() < deadline and interrupt.count() == since:
                for worker, message in pool.events(timeout=0.2):
                    if message[0] in ("end", "phase", "progress", "start"):
                        show(worker, message)
        raise
    finally:
        pool.close()
        if claims is not None:
            claims.release_all()
    return [records[spec.run_id] for spec in specs if spec.run_id in records]
