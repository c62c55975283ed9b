"""The built-in ``ray`` executor: one Ray task per grid point (or vectorized group).

``--executor ray`` connects to a Ray cluster (``--ray-address auto | HOST:PORT``; empty:
a fresh local cluster started by ``ray.init`` with this machine's CPUs) and submits one
Ray task per :class:`~vaebench.harness.tasks.PointsTask` (``--per point | group``), each
asking for ``--num-cpus`` / ``--num-gpus``. A task calls
:func:`vaebench.harness.tasks.run_task` with the task's JSON (only JSON crosses: no
pickled specs), and its worker writes the records straight into the registry (which every
node must reach), claiming each point right before it trains.

The driver waits (``detaches = False``): Ray tasks belong to the driver that submitted
them and die with it; a grid that outlives its driver would need Ray's job submission API
(a job with its own driver), which this executor does not use. Its tasks are handed to
``GridJob.submitted`` once submitted: the grid's manifest names this process as their
driver, so ``vaebench status`` elsewhere reads the grid from the registry while it runs, and
``vaebench cancel`` stops the driver (``harness.watch.stop_driver``). As each task ends, its
points' records are read back from the registry and shown. A task whose worker died
(killed, out of memory, node lost) leaves each of its points without a record of this grid
a ``failed`` record saying so (``--resume`` trains them again); ``--max-retries`` lets Ray
retry such a task first (the retry picks the point up from its periodic checkpoint).
Ctrl-C or SIGTERM cancels the tasks and shuts down a cluster started here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
from datetime import datetime
from typing import Any, Mapping, Sequence

from vaebench.harness.messages import one_line
from vaebench.harness.pending import PendingRun, recorded_since
from vaebench.harness.tasks import PER, PointsTask, run_task, split_tasks, task_records
from vaebench.plugins.backends import interrupt
from vaebench.plugins.contract import ExecutorResult, GridJob, TaskRef, TaskState
from vaebench.plugins.runspec import RunSpec
from vaebench.registry import claims

#: Seconds a dead worker's claim is waited for before its points are recorded ``failed``
#: (:func:`vaebench.registry.claims.wait_free`); one on another host stays held until its
#: lease runs out, and its points are left to ``--resume``.
DEATH_SECONDS = 60.0

#: What the ``ray`` executor's factory says when Ray is not importable.
INSTALL = "pip install 'vaebench[ray]'"

def import_ray() -> Any:
    """The ``ray`` module, or a one-line ``ValueError`` saying what to install."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"Ray is not installed; install it with: {INSTALL}") from None
    return ray


class RayExecutor:
    """Runs a grid's points as Ray tasks and waits for them (see the module)."""

    detaches = False
    remote = True

    def __init__(self, ray: Any, options: Mapping[str, Any]) -> None:
        self.ray = ray
        self.address = str(options.get("ray_address") or "").strip()
        self.num_cpus = float(options.get("num_cpus", 1.0))
        self.num_gpus = float(options.get("num_gpus", 0.0))
        self.per = str(options.get("per", "point"))
        self.max_retries = int(options.get("max_retries", 0))
        self.refs: dict[str, Any] = {}  # task id hex -> ObjectRef, while this driver knows them
        self.started_here = False

    # ------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        """``ray.init`` (once): the given address, or a fresh local cluster with this
        machine's CPUs; quiet logs, no dashboard. The grid's own stop signals stay in place."""
        ray = self.ray
        if ray.is_initialized():
            return
        previous = signal.getsignal(signal.SIGTERM)
        kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
        if self.address:
            ray.init(address=self.address, **kwargs)
        else:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
        self.started_here = True
        if previous is not None:  # ray.init makes SIGTERM a sys.exit; vaebench's handler stops a grid cleanly
            signal.signal(signal.SIGTERM, previous)

    def shutdown(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_here = False

    # ------------------------------------------------------------- the contract

    def check(self, specs: Sequence[RunSpec]) -> None:
        """Options Ray would refuse, and a ``--ray-address`` nobody answers at, as one line
        (before anything is written)."""
        check_options(self.num_cpus, self.num_gpus, self.per, self.max_retries)
        probe_address(self.address)

    def run(self, specs: Sequence[RunSpec], job: GridJob) -> ExecutorResult:
        """Submit one Ray task per point (or group) of ``specs``, wait for all, and return
        the records they wrote (read back from the registry), plus a ``failed`` one for
        each point of a task whose worker died. The tasks' ids are ``jobs``."""
        self.check(specs)
        tasks = split_tasks(specs, job, per=self.per, writer="ray task")
        strategy = "vectorized" if any(t.strategy == "vectorized" for t in tasks) else "sequential"
        if not tasks:
            return ExecutorResult(records=[], strategy=strategy)
        ray = self.ray
        self.connect()
        remote = ray.remote(run_task).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                              max_retries=self.max_retries, retry_exceptions=False)
        records: list[dict[str, Any]] = []
        refs: dict[Any, PointsTask] = {}
        ids: dict[Any, str] = {}
        try:
            for task in tasks:
                ref = remote.remote(task.to_json())
                refs[ref] = task
                ids[ref] = ref.task_id().hex()
                self.refs[ids[ref]] = ref
            if job.submitted is not None:  # the manifest: status sees the grid while it runs
                job.submitted([TaskRef(job=ids[ref], run_ids=task.run_ids, log=None) for ref, task in refs.items()])
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in done:
                    records += self.collect(ref, refs[ref], job)
        except BaseException as exc:
            self.cancel_refs(list(refs))
            self.shutdown()
            signum = interrupt.received()
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, interrupt.Interrupted) and signum:
                # ray.wait turns the stop signal's exception into a bare KeyboardInterrupt
                raise interrupt.Interrupted(signum) from None
            raise
        self.shutdown()
        refs_out = [TaskRef(job=ids[ref], run_ids=task.run_ids, log=None) for ref, task in refs.items()]
        return ExecutorResult(records=records, strategy=strategy, jobs=[t.job for t in refs_out], tasks=refs_out)

    def collect(self, ref: Any, task: PointsTask, job: GridJob) -> list[dict[str, Any]]:
        """The records a finished task wrote, each shown through ``job.reporter``; for a task
        whose worker died, a ``failed`` record for each point it left unrecorded."""
        ray = self.ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # run_task itself raised (it records run failures)
            return self.worker_died(task, job, f"the Ray task failed: {one_line(exc)}")
        except (ray.exceptions.RayError, ValueError) as exc:  # worker crashed, node lost, cancelled
            return self.worker_died(task, job, f"the Ray worker died: {one_line(exc)}")
        return task_records(job.registry, result, job.reporter)

    def worker_died(self, task: PointsTask, job: GridJob, reason: str) -> list[dict[str, Any]]:
        """Each of ``task``'s points that has no record since the grid started, recorded as
        ``failed`` with ``reason`` (claimed first, so no other writer records it at once); a record the
        task wrote before it died is returned as it is."""
        since = datetime.fromisoformat(task.since) if task.since else None
        out = []
        for spec in task.specs:
            written = recorded_since(job.registry, spec.run_id, since)
            if written is not None:
                job.reporter.end_run(written)
                out.append(written)
                continue
            claims.wait_free(job.registry, spec.run_id, timeout=DEATH_SECONDS)
            if job.claims.take(spec) is None:
                continue
            try:
                out.append(pending_run(spec, job, task.strategy).fail(job.registry, reason, job.reporter))
            finally:
                job.claims.release(spec.run_id)
        return out

    def states(self, tasks: Sequence[TaskRef]) -> dict[str, TaskState]:
        """Each task's state as far as this driver still knows it: ``ended`` / ``failed``
        once its result is in, else ``running`` (Ray does not tell a queued task from a
        running one here); ``unknown`` for a task this driver never held or has let go."""
        ray = self.ray
        out = {t.job: TaskState("unknown") for t in tasks}
        if not ray.is_initialized():
            return out
        for t in tasks:
            ref = self.refs.get(t.job)
            if ref is None:
                continue
            done, _ = ray.wait([ref], timeout=0)
            if not done:
                out[t.job] = TaskState("running")
                continue
            try:
                ray.get(ref, timeout=0)
                out[t.job] = TaskState("ended")
            except ray.exceptions.RayError as exc:
                out[t.job] = TaskState("failed", type(exc).__name__)
        return out

    def cancel(self, tasks: Sequence[TaskRef]) -> list[str]:
        """Cancel (force) each of ``tasks`` this driver still holds; returns their ids."""
        held = [t.job for t in tasks if t.job in self.refs]
        self.cancel_refs([self.refs[j] for j in held])
        return held

    def cancel_refs(self, refs: Sequence[Any]) -> None:
        for ref in refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished already, or the cluster is gone
                pass


def check_options(num_cpus: float, num_gpus: float, per: str, max_retries: int) -> None:
    """One-line ``ValueError`` for options Ray would refuse."""
    if not num_cpus > 0:
        raise ValueError(f"--num-cpus must be > 0 (each Ray task needs a CPU), got {num_cpus:g}")
    if num_gpus < 0:
        raise ValueError(f"--num-gpus must be >= 0, got {num_gpus:g}")
    if per not in PER:
        raise ValueError(f"--per must be one of {', '.join(PER)}, got {per!r}")
    if max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0, got {max_retries}")


#: Seconds a ``--ray-address HOST:PORT`` has to accept a connection (``ray.init`` itself
#: retries for minutes).
PROBE_SECONDS = 5.0


def probe_address(address: str, timeout: float = PROBE_SECONDS) -> None:
    """A one-line ``ValueError`` when nothing accepts a TCP connection at ``address``'s
    ``HOST:PORT`` (``ray://`` too) within ``timeout`` seconds; nothing for ``""``, ``auto``
    and ``local`` (Ray finds or starts those itself, failing at once)."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"--ray-address {address}: no Ray cluster answers there "
                         f"({type(exc).__name__}: {exc.strerror or exc})") from None


def pending_run(spec: RunSpec, job: GridJob, strategy: str) -> PendingRun:
    """A :class:`PendingRun` of ``spec`` on this machine, to record how it ended elsewhere
    (a device this machine lacks is recorded as ``cpu``)."""
    try:
        return PendingRun(spec, job.manager, job.execution, job.metric_names, job.datasets(spec), strategy)
    except ValueError:
        execution = dataclasses.replace(job.execution, device="cpu")
        return PendingRun(spec, job.manager, execution, job.metric_names, job.datasets(spec), strategy)


def ray_executor(options: Mapping[str, Any]) -> RayExecutor:
    """The ``ray`` executor's factory: a one-line ``ValueError`` when Ray is not installed
    or an option is out of range."""
    ray = import_ray()
    executor = RayExecutor(ray, options)
    executor.check([])
    return executor
