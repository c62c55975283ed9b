"""Rich output for long work: a progress bar per run and a summary table.

On a terminal each run in training has a live bar. Where the console is not a
terminal (``nohup ... > log``, a Slurm or CI log) a live bar draws nothing, so the
reporter prints a plain line instead: at every tenth of a run's steps, and at least
every :data:`PLAIN_LINE_SECONDS` while it trains — a two-hour run's log shows it moving.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vaebench.plugins.runspec import RunSpec

PLAIN_LINE_SECONDS = 300.0
"""Longest gap between two plain progress lines of one run (non-terminal consoles)."""


def record_label(record: dict[str, Any]) -> str:
    """The label of the spec ``record`` holds (``spec_json``; a run another process started,
    e.g. a cluster task), else its run id."""
    try:
        return RunSpec.from_dict(json.loads(record["spec_json"])).label()
    except (KeyError, TypeError, ValueError):
        return str(record.get("run_id", ""))


class RichReporter:
    """A progress bar per run in training (step, loss, KL, images/s; several at once
    when a strategy trains runs side by side), then a line with each run's outcome."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self._live = console.is_terminal
        self._clock = clock
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._specs: dict[str, RunSpec] = {}
        self._plain: dict[str, tuple[int, float, float]] = {}  # run id -> (last tenth, last line, start)
        # run id -> (step, time) of its first progress report: the rate (and so the time
        # left) is measured from there, because a run picked up from a periodic checkpoint
        # or continued from a parent starts at a step the reporter is not told.
        self._first: dict[str, tuple[int, float]] = {}
        self._numbers: dict[str, str] = {}

    def start_run(self, spec: RunSpec, index: int, total: int) -> None:
        self._specs[spec.run_id] = spec
        self._numbers[spec.run_id] = f"{index + 1}/{total}"
        if not self._live:
            now = self._clock()
            self._plain[spec.run_id] = (0, now, now)
            self.console.print(f"started  {spec.run_id}  {self._numbers[spec.run_id]} {escape(spec.label())}  "
                               f"{spec.steps} steps", highlight=False)
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        self._tasks[spec.run_id] = self._progress.add_task(
            f"[bold]{index + 1}/{total}[/] {escape(spec.label())}", total=spec.steps,
            completed=spec.start_step or 0, stats=""
        )

    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None:
        stats = (
            f"loss {values['loss']:.1f}  recon {values['recon']:.1f}  KL {values['kl']:.2f}  "
            f"{values['images_per_second']:.0f} img/s"
        )
        first = run_id not in self._first
        if first:
            self._first[run_id] = (step, self._clock())
        if not self._live:
            self._plain_line(run_id, step, stats)
        elif self._progress is not None and run_id in self._tasks:
            if first:  # restart the bar's speed estimate at the step the run really began
                self._progress.reset(self._tasks[run_id], completed=step, stats=stats)
            else:
                self._progress.update(self._tasks[run_id], completed=step, stats=stats)

    def _plain_line(self, run_id: str, step: int, stats: str) -> None:
        if run_id not in self._plain:
            return
        spec = self._specs[run_id]
        last_tenth, last_time, start = self._plain[run_id]
        tenth = step * 10 // max(1, spec.steps)
        now = self._clock()
        if tenth <= last_tenth and now - last_time < PLAIN_LINE_SECONDS:
            return
        self._plain[run_id] = (max(tenth, last_tenth), now, start)
        elapsed = now - start
        first_step, first_time = self._first[run_id]  # set by progress() before this call
        rate = (step - first_step) / (now - first_time) if step > first_step and now > first_time else 0.0
        remaining = (spec.steps - step) / rate if rate > 0 else 0.0
        self.console.print(
            f"training {run_id}  {self._numbers[run_id]}  step {step}/{spec.steps}  {stats}  "
            f"elapsed {_duration(elapsed)}  left ≈ {_duration(remaining)}",
            highlight=False,
        )

    def phase(self, run_id: str, text: str) -> None:
        if not self._live:
            if run_id in self._plain:
                self.console.print(f"{escape(text):8} {run_id}  {self._numbers[run_id]}", highlight=False)
        elif self._progress is not None and run_id in self._tasks:
            self._progress.update(self._tasks[run_id], stats=text)

    def end_run(self, record: dict[str, Any]) -> None:
        run_id = record["run_id"]
        if self._progress is not None and run_id in self._tasks:
            self._progress.remove_task(self._tasks.pop(run_id))
            if not self._tasks:
                self._progress.stop()
                self._progress = None
        spec = self._specs.pop(run_id, None)
        self._plain.pop(run_id, None)
        self._numbers.pop(run_id, None)
        status = record["status"]
        colour = {"ok": "green", "diverged": "yellow", "failed": "red"}.get(status, "white")
        label = spec.label() if spec else record_label(record)
        metrics = record.get("metrics") or {}
        extra = "  ".join(f"{k} {metrics[k]:.3f}" for k in ("mig", "kl", "reconstruction") if k in metrics)
        ips = record.get("images_per_second")
        speed = f"  {ips:.0f} img/s" if ips else ""
        err = f"  ({escape(record['error'])})" if record.get("error") else ""
        self.console.print(f"[{colour}]{status:8}[/] {run_id}  {escape(label)}  {extra}{speed}{err}")

    def stop(self) -> list[RunSpec]:
        """End the progress display (the grid was interrupted); returns the runs started and
        not ended, in the order they started."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()
        return list(self._specs.values())

    def skipped(self, spec: RunSpec, status: str) -> None:
        self.console.print(f"[dim]skipped  {spec.run_id}  {spec.label()}  (already recorded: {status})[/]")

    def note(self, text: str) -> None:
        """A one-line message (a point another writer trains, a claim taken over)."""
        self.console.print(text, markup=False, highlight=False)


def _duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _status(record: dict[str, Any]) -> str:
    """The status, flagged when the run's posterior collapsed (metric or evaluation note)."""
    collapsed = (record.get("metrics") or {}).get("posterior_collapsed") == 1.0 or "posterior collapse" in (
        record.get("error") or ""
    )
    return f"{record['status']}, collapsed" if collapsed else record["status"]


def summary_table(records: Sequence[dict[str, Any]], title: str = "runs") -> Table:
    table = Table(title=title)
    for col in ("run", "model", "β", "C", "seed", "status", "recon", "KL", "MIG", "img/s", "train s"):
        table.add_column(col, justify="right" if col not in ("run", "model", "status") else "left")
    for r in records:
        m = r.get("metrics") or {}

        def num(v: Any, fmt: str = ".3f") -> str:
            return "-" if v is None else format(v, fmt)

        table.add_row(
            r["run_id"][:10], r["model"], num(r.get("beta"), "g"), num(r.get("capacity"), "g"), str(r["seed"]),
            _status(r), num(m.get("reconstruction"), ".1f"), num(m.get("kl"), ".2f"), num(m.get("mig")),
            num(r.get("images_per_second"), ".0f"), num(r.get("train_seconds"), ".1f"),
        )
    return table
