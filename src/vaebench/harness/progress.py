"""Rich output for long work: a progress bar per run and a summary table."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vaebench.harness.plan import RunSpec


class RichReporter:
    """A progress bar per run in training (step, loss, KL, images/s; several at once
    when a strategy trains runs side by side), then a line with each run's outcome."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._specs: dict[str, RunSpec] = {}

    def start_run(self, spec: RunSpec, index: int, total: int) -> None:
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
        self._specs[spec.run_id] = spec
        self._tasks[spec.run_id] = self._progress.add_task(
            f"[bold]{index + 1}/{total}[/] {escape(spec.label())}", total=spec.steps, stats=""
        )

    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None:
        if self._progress is None or run_id not in self._tasks:
            return
        stats = (
            f"loss {values['loss']:.1f}  recon {values['recon']:.1f}  KL {values['kl']:.2f}  "
            f"{values['images_per_second']:.0f} img/s"
        )
        self._progress.update(self._tasks[run_id], completed=step, stats=stats)

    def phase(self, run_id: str, text: str) -> None:
        if self._progress is not None and run_id in self._tasks:
            self._progress.update(self._tasks[run_id], stats=text)

    def end_run(self, record: dict[str, Any]) -> None:
        run_id = record["run_id"]
        if self._progress is not None and run_id in self._tasks:
            self._progress.remove_task(self._tasks.pop(run_id))
            if not self._tasks:
                self._progress.stop()
                self._progress = None
        spec = self._specs.pop(run_id, None)
        status = record["status"]
        colour = {"ok": "green", "diverged": "yellow", "failed": "red"}.get(status, "white")
        label = spec.label() if spec else run_id
        metrics = record.get("metrics") or {}
        extra = "  ".join(f"{k} {metrics[k]:.3f}" for k in ("mig", "kl", "reconstruction") if k in metrics)
        ips = record.get("images_per_second")
        speed = f"  {ips:.0f} img/s" if ips else ""
        err = f"  ({escape(record['error'])})" if record.get("error") else ""
        self.console.print(f"[{colour}]{status:8}[/] {run_id}  {escape(label)}  {extra}{speed}{err}")

    def skipped(self, spec: RunSpec, status: str) -> None:
        self.console.print(f"[dim]skipped  {spec.run_id}  {spec.label()}  (already recorded: {status})[/]")


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
