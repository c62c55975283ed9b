"""Experiment trackers beside the progress reporter (``--log-to NAME[:TARGET]``).

:func:`check_log_to` checks the entries before anything trains (an unknown logger or a
missing package is a one-line ``ValueError``); :class:`LoggingReporter` wraps the
reporter a grid runs with (``runner.run_grid``, ``runner.continue_run``,
``tasks.run_task``) and forwards ``start_run`` / ``progress`` / ``end_run`` to the loggers
besides it, so no strategy knows about loggers.

The loggers run on one background thread, fed by a queue: training never waits for
a tracker (a slow server, a full disk). A logger whose call raises is said once, in one
line, and dropped for the rest of the grid. Live values go out every ``log_every`` steps
(:data:`LOG_EVERY` by default) at the progress reports' steps, and at each run's last
report. :meth:`LoggingReporter.close` waits (at most :data:`CLOSE_SECONDS`) for the
queue to drain and closes the loggers.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any, Mapping, Sequence

from vaebench.harness.messages import debug_traceback, one_line
from vaebench.harness.pending import SilentReporter
from vaebench.plugins.contract import LoggerContext
from vaebench.plugins.runspec import RunSpec
from vaebench.registry import location, store

#: Steps between live values sent to a logger unless told (``--log-every``). Values go at
#: the progress reports' steps (every ``ExecutionOptions.progress_every``, default 10), so
#: the interval is the first report at least this many steps after the last one sent.
LOG_EVERY = 50
#: Seconds :meth:`LoggingReporter.close` waits for the loggers to finish their queue.
CLOSE_SECONDS = 120.0


def parse_log_to(entry: str) -> tuple[str, str | None]:
    """``"NAME[:TARGET]"`` -> ``(NAME, TARGET or None)``."""
    name, colon, target = str(entry).partition(":")
    return name.strip(), (target if colon and target else None)


def check_log_to(entries: Sequence[str] | None, manager: Any, log_every: int | None = None) -> list[str]:
    """``entries`` (``--log-to``, a config's ``log_to``) checked before anything trains: each
    names a registered logger (``vaebench list loggers``) whose factory imports here (its
    package installed); ``log_every`` a whole number ≥ 1 or ``None``. Returns the entries as
    a list. Raises a one-line ``ValueError``."""
    if log_every is not None and (isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1):
        raise ValueError(f"--log-every: expected a whole number of steps ≥ 1, got {log_every!r}")
    out = []
    for entry in entries or ():
        name, _ = parse_log_to(entry)
        if name not in manager.specs["loggers"]:
            known = ", ".join(sorted(manager.specs["loggers"])) or "none"
            raise ValueError(f"--log-to: unknown logger {name!r} (available: {known})")
        spec = manager.logger(name)
        try:
            spec.factory()
        except ImportError as exc:
            hint = f" ({spec.install})" if spec.install else ""
            raise ValueError(f"--log-to {name}: not installed: {one_line(exc)}{hint}") from None
        out.append(str(entry))
    return out


def local_artifacts(registry: str, record: Mapping[str, Any]) -> dict[str, str]:
    """The files of ``record``'s ``artifacts`` on this machine (key -> path), images and
    checkpoint alike; empty for a remote registry (nothing is downloaded for a logger)."""
    if location.is_remote(registry):
        return {}
    out = {}
    for key, ref in (record.get("artifacts") or {}).items():
        try:
            path = store.artifact_path(registry, record["run_id"], ref)
        except Exception:  # noqa: BLE001 - a logger never fails the run
            path = None
        if path is not None:
            out[key] = str(path)
    return out


class LoggingReporter:
    """A reporter that forwards to ``inner`` (the progress reporter) and to the loggers of
    ``log_to`` (checked by :func:`check_log_to`), made lazily on the logging thread.

    Only runs started through this reporter are logged: a remote executor's records read
    back here (``tasks.task_records``) were logged where they trained."""

    def __init__(self, inner: Any, manager: Any, log_to: Sequence[str], registry: str, grid_id: str,
                 log_every: int | None = None) -> None:
        self.inner = inner
        self.registry = str(registry)
        self.every = int(log_every or LOG_EVERY)
        self._entries = [(parse_log_to(e), manager.logger(parse_log_to(e)[0])) for e in log_to]
        self._grid_id = grid_id
        self._loggers: list[tuple[str, Any, LoggerContext]] | None = None
        self._started: set[str] = set()
        self._last: dict[str, int] = {}
        self._unsent: dict[str, tuple[int, dict[str, float]]] = {}  # a run's latest report not sent yet
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="vaebench-loggers", daemon=True)
        self._thread.start()

    # the Reporter protocol -------------------------------------------------------------

    def start_run(self, spec: RunSpec, index: int, total: int) -> None:
        self.inner.start_run(spec, index, total)
        self._started.add(spec.run_id)
        self._last.pop(spec.run_id, None)
        self._unsent.pop(spec.run_id, None)
        self._queue.put(("start_run", (spec,)))

    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None:
        self.inner.progress(run_id, step, values)
        last = self._last.get(run_id)
        if run_id not in self._started:
            return
        if last is None or step - last >= self.every:
            self._last[run_id] = step
            self._unsent.pop(run_id, None)
            self._queue.put(("log", (run_id, int(step), dict(values))))
        else:
            self._unsent[run_id] = (int(step), dict(values))

    def phase(self, run_id: str, text: str) -> None:
        self.inner.phase(run_id, text)

    def end_run(self, record: dict[str, Any]) -> None:
        self.inner.end_run(record)
        if record.get("run_id") in self._started:
            self._started.discard(record["run_id"])
            unsent = self._unsent.pop(record["run_id"], None)
            if unsent is not None:  # the run's last report, off the interval: sent too
                self._queue.put(("log", (record["run_id"], *unsent)))
            self._queue.put(("end_run", (dict(record),)))

    def skipped(self, spec: RunSpec, status: str) -> None:
        self.inner.skipped(spec, status)

    def note(self, text: str) -> None:
        note = getattr(self.inner, "note", None)
        if note is not None and not isinstance(self.inner, SilentReporter):  # a warning is never silent
            note(text)
        else:
            sys.stderr.write(text + "\n")

    def __getattr__(self, name: str) -> Any:  # anything else a reporter offers (finish, ...)
        return getattr(self.inner, name)

    # the logging thread ----------------------------------------------------------------

    def close(self) -> None:
        """Wait for the queued calls (at most :data:`CLOSE_SECONDS`), then close every logger."""
        self._queue.put(None)
        self._thread.join(CLOSE_SECONDS)
        if self._thread.is_alive():
            self.note(f"warning: loggers still busy after {CLOSE_SECONDS:.0f} s; not waiting for them")

    def _drop(self, name: str, exc: BaseException) -> None:
        debug_traceback(f"logger {name}")
        self.note(f"warning: logger {name} failed ({one_line(exc)}); not logging to it for the rest of this grid")
        self._loggers = [entry for entry in self._loggers or [] if entry[0] != name]

    def _make(self) -> list[tuple[str, Any, LoggerContext]]:
        made = []
        for (name, target), spec in self._entries:
            context = LoggerContext(target=target, grid_id=self._grid_id, registry=self.registry)
            try:
                made.append((name, spec.factory()(context), context))
            except Exception as exc:  # noqa: BLE001 - a logger never fails the run
                debug_traceback(f"logger {name}")
                self.note(f"warning: logger {name} failed ({one_line(exc)}); not logging to it for the rest of this grid")
        return made

    def _call(self, method: str, args: tuple[Any, ...]) -> None:
        for name, logger, context in list(self._loggers or []):
            try:
                if method == "start_run":
                    logger.start_run(args[0], context)
                elif method == "end_run":
                    logger.end_run(args[0], local_artifacts(self.registry, args[0]))
                else:
                    getattr(logger, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a logger never fails the run
                self._drop(name, exc)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self._loggers is None:
                self._loggers = self._make()
            self._call(*item)
        if self._loggers is not None:
            self._call("close", ())


def logging_reporter(inner: Any, manager: Any, log_to: Sequence[str] | None, registry: str, grid_id: str,
                     log_every: int | None = None) -> Any:
    """``inner`` wrapped in a :class:`LoggingReporter` when ``log_to`` names loggers, else ``inner``."""
    if not log_to:
        return inner
    return LoggingReporter(inner, manager, log_to, registry, grid_id, log_every)


def close_reporter(reporter: Any) -> None:
    """Close ``reporter``'s loggers when it is a :class:`LoggingReporter`."""
    if isinstance(reporter, LoggingReporter):
        reporter.close()
