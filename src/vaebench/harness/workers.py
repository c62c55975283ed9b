"""The worker processes of the ``processes`` strategy: how many, and how they start, live and end.

The parent hands each worker one run at a time over a pipe; the worker trains, scores and
records it and reports back over the same pipe (start, progress, phase, end). A worker ends

- when the parent says so (no runs left), after ending the reusable joblib (loky)
  workers its metrics started, which would otherwise idle for loky's 300 s timeout while
  the worker's exit waits to join them (issue 20, item 1);
- when the parent dies, ``kill -9`` included: the kernel sends it SIGTERM
  (``PR_SET_PDEATHSIG``), and a thread watching the parent's pid does the same where that
  is unavailable; it never trains on beside a ``--resume`` started next;
- on SIGINT / SIGTERM (from the terminal, or forwarded by the parent): the run in
  training stops at the end of its step, writing its periodic checkpoint if those are on
  (``backends/interrupt.py``), and the worker reports the stop and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from vaebench.plugins.backends import interrupt

#: Environment variable: the number of worker processes, instead of :func:`plan_workers`'s
#: choice (e.g. fewer, to save memory; ``benchmarks/grid.py`` uses it for the old layout).
WORKERS_ENV = "VAEBENCH_WORKERS"

#: Seconds a worker has after a stop signal to finish its step, checkpoint and exit
#: before it is killed.
STOP_GRACE_SECONDS = 30.0

PR_SET_PDEATHSIG = 1


def forced_workers() -> int | None:
    """The worker count :data:`WORKERS_ENV` forces, or ``None`` when it is unset or empty; a
    value that is no whole number ≥ 1 is a one-line ``ValueError`` (checked before a grid
    trains: ``api.check_run_options``)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{WORKERS_ENV}={text!r}: expected a whole number of worker processes >= 1")
    return int(text)


def plan_workers(runs: int, cores: int) -> tuple[int, list[int]]:
    """``(workers, threads of each run in grid order)`` for ``runs`` runs on ``cores`` threads.

    Fewer runs than cores: one worker per run, the cores shared out (3 runs on 4 cores:
    2, 1, 1 threads). More: every run has one thread (one single-threaded run per core
    trains faster than one run on two, ``benchmarks/RESULTS.md``), and the number of
    workers, from ``cores`` to ``2 × cores``, is the one that ends equal runs soonest, so
    no core idles while the last runs train: 3 runs on 2 cores train side by side in 3
    workers (1.5 run-lengths) instead of two, then one alone (2 run-lengths). The split
    is fixed before training: a run's thread count never changes mid-run, because the
    weights depend on it (torch's CPU kernels reduce in a thread-dependent order), so a
    run stays reproducible from its record's ``threads``.
    """
    runs, cores = max(1, runs), max(1, cores)
    forced = forced_workers()
    if forced:
        workers = max(1, min(runs, forced))
        return workers, [max(1, cores // workers)] * runs
    if runs <= cores:
        return runs, [cores // runs + (1 if i < cores % runs else 0) for i in range(runs)]

    def makespan(workers: int) -> float:
        """Run-lengths until the last of ``runs`` equal single-thread runs ends."""
        waves, left = divmod(runs, workers)
        return waves * max(workers, cores) / cores + (max(left, cores) / cores if left else 0.0)

    workers = min(range(cores, min(runs, 2 * cores) + 1), key=lambda w: (makespan(w), w))
    return workers, [1] * runs


# ------------------------------------------------------------------ in the worker


def die_with_parent(parent_pid: int) -> None:
    """Have this process get SIGTERM when ``parent_pid`` (its parent) dies, however it dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="vaebench-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent_pid: int) -> None:
    """The fallback of ``PR_SET_PDEATHSIG``: once the parent is gone, SIGTERM this process;
    if it has not ended :data:`STOP_GRACE_SECONDS` later, end its children and it."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_SECONDS)
    _kill_children()
    os._exit(1)


def _kill_children() -> None:
    """SIGKILL this process's children (loky workers, resource trackers), from ``/proc``."""
    me = os.getpid()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid == me:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def end_loky_workers() -> None:
    """End joblib's reusable loky executor now, if this process started one: its idle
    workers would otherwise stay for loky's 300 s timeout, and a process's exit joins them."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def worker_main(conn: Any, parent_pid: int) -> None:
    """A worker's life: runs from ``conn`` until ``None``, a stop signal or the parent's end."""
    die_with_parent(parent_pid)
    interrupt.install()
    _Worker(conn).serve()


class _Worker:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.datasets: dict[tuple[str, str | None], Any] = {}

    def send(self, *message: Any, last: bool = False) -> None:
        """A message to the parent, whole (a stop signal waits; raised after it unless this is
        the ``last`` message); nothing if the parent is gone."""
        try:
            with interrupt.deferred(raise_on_exit=not last):
                self.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass

    def serve(self) -> None:
        run_id = None
        try:
            while True:
                try:
                    task = self.conn.recv()
                except (EOFError, OSError):
                    break
                if task is None:
                    break
                run_id = task[0].run_id
                try:
                    outcome: tuple = ("end", run_id, self.run(*task))
                except interrupt.Interrupted:
                    raise
                except Exception as exc:  # noqa: BLE001 - the parent records the run as failed
                    from vaebench.harness.messages import debug_traceback, one_line

                    debug_traceback(f"run {run_id} failed in a worker")
                    outcome = ("error", run_id, one_line(exc))
                run_id = None
                self.send(*outcome)
        except interrupt.Interrupted as exc:
            self.send("interrupted", run_id, exc.signum, last=True)
        finally:
            try:
                end_loky_workers()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass

    def run(self, spec: Any, registry: str, execution: Any, metric_names: Any, metric_options: Any,
            workers: int) -> dict[str, Any]:
        from vaebench.harness.pending import run_one
        from vaebench.plugins.manager import get_manager

        manager = get_manager()
        key = (spec.dataset, spec.dataset_path)
        if key not in self.datasets:
            self.datasets[key] = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
        self.send("start", spec.run_id)
        return run_one(spec, manager, registry, execution, metric_names, _PipeReporter(self), self.datasets[key],
                       metric_options, strategy="processes", concurrent_runs=workers)


class _PipeReporter:
    """A worker's reporter: progress goes to the parent, which owns the terminal; the
    record goes back once ``run_one`` returns."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    def start_run(self, spec: Any, index: int, total: int) -> None: ...

    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None:
        self._worker.send("progress", run_id, step, values)

    def phase(self, run_id: str, text: str) -> None:
        self._worker.send("phase", run_id, text)

    def end_run(self, record: dict[str, Any]) -> None: ...

    def skipped(self, spec: Any, status: str) -> None: ...


# ------------------------------------------------------------------ in the parent


class Pool:
    """``count`` spawned workers (started lazily, replaced when one dies) and what each runs.

    :meth:`events` yields ``(worker, message)``; a worker that died yields
    ``(worker, ("died", run_id or None, exit code))``.
    """

    def __init__(self, count: int) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self.count = count
        self.workers: list[_Handle] = []

    def idle(self) -> list["_Handle"]:
        """Workers ready for a run, starting new ones up to ``count``."""
        while len(self.workers) < self.count:
            self.workers.append(_Handle(self._context))
        return [w for w in self.workers if w.run_id is None]

    def events(self, timeout: float) -> list[tuple["_Handle", tuple]]:
        from multiprocessing.connection import wait

        by_conn = {w.conn: w for w in self.workers}
        by_sentinel = {w.process.sentinel: w for w in self.workers}
        out: list[tuple[_Handle, tuple]] = []
        ready = wait([*by_conn, *by_sentinel], timeout)
        for item in ready:
            if item in by_conn:
                worker = by_conn[item]
                while worker.alive_conn and worker.conn.poll():
                    try:
                        out.append((worker, worker.conn.recv()))
                    except (EOFError, OSError):
                        worker.alive_conn = False
        for item in ready:
            if item in by_sentinel:
                worker = by_sentinel[item]
                while worker.alive_conn and worker.conn.poll():  # what it sent before it ended
                    try:
                        out.append((worker, worker.conn.recv()))
                    except (EOFError, OSError):
                        worker.alive_conn = False
                worker.process.join()
                self.workers.remove(worker)
                worker.conn.close()
                out.append((worker, ("died", worker.run_id, worker.process.exitcode)))
        return out

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every live worker."""
        for worker in self.workers:
            if worker.process.is_alive():
                try:
                    os.kill(worker.process.pid, signum)
                except ProcessLookupError:
                    pass

    def close(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Tell idle workers to end, wait up to ``grace`` seconds for all, kill the rest."""
        for worker in self.workers:
            if worker.run_id is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers.clear()


class _Handle:
    """One worker process, its end of the pipe and the run it trains (``None``: idle)."""

    def __init__(self, context: Any) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(child_end, os.getpid()), daemon=False,
                                       name="vaebench-worker")
        self.process.start()
        child_end.close()
        self.conn = parent_end
        self.alive_conn = True
        self.run_id: str | None = None

    def give(self, task: tuple) -> None:
        self.run_id = task[0].run_id
        self.conn.send(task)

