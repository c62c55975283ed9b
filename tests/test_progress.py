"""Progress where the console is not a terminal (nohup, Slurm and CI logs)."""

from __future__ import annotations

import io
import re

from rich.console import Console
from typer.testing import CliRunner

from vaebench.harness.cli import app
from vaebench.plugins.runspec import RunSpec
from vaebench.harness.progress import PLAIN_LINE_SECONDS, RichReporter

VALUES = {"loss": 80.5, "recon": 70.25, "kl": 8.5, "images_per_second": 600.0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line.strip()]


def test_plain_lines_at_each_tenth_and_after_a_long_silence():
    buffer, clock = io.StringIO(), Clock()
    reporter = RichReporter(Console(file=buffer, force_terminal=False, width=200), clock=clock)
    spec = RunSpec(model="beta_vae", beta=4.0, steps=1000)
    reporter.start_run(spec, 0, 2)
    for step in range(10, 1001, 10):  # progress every 10 steps, 1 s apart
        clock.now += 1.0
        reporter.progress(spec.run_id, step, VALUES)
    training = [line for line in _lines(buffer) if line.startswith("training")]
    assert [int(re.search(r"step (\d+)/1000", line).group(1)) for line in training] == list(range(100, 1001, 100))
    first = training[0]
    assert spec.run_id in first and "1/2" in first
    assert "loss 80.5" in first and "recon 70.2" in first and "KL 8.50" in first and "600 img/s" in first
    # 10 s elapsed at step 100 of 1000: 90 s left.
    assert "elapsed 10s" in first and "left ≈ 1m30s" in first

    # A slow run: no new tenth, but a line once PLAIN_LINE_SECONDS have passed.
    slow = RunSpec(model="beta_vae", beta=1.0, steps=100_000)
    reporter.start_run(slow, 1, 2)
    before = len(_lines(buffer))
    clock.now += PLAIN_LINE_SECONDS - 1
    reporter.progress(slow.run_id, 50, VALUES)
    assert len(_lines(buffer)) == before
    clock.now += 2
    reporter.progress(slow.run_id, 60, VALUES)
    # The rate is measured from the first report (step 50 at 299 s): 10 steps in 2 s, so
    # 99,940 steps take 19,988 s ≈ 5 h 33 min; the 299 s of start-up do not count.
    assert "step 60/100000" in _lines(buffer)[-1] and "elapsed 5m01s  left ≈ 5h33m" in _lines(buffer)[-1]

    reporter.phase(slow.run_id, "evaluating")
    assert _lines(buffer)[-1].startswith("evaluating") and slow.run_id in _lines(buffer)[-1]


def test_time_left_of_a_run_picked_up_midway_counts_only_the_steps_it_trains():
    """A run picked up from its periodic checkpoint at step 600 reports from there: the
    600 steps trained before the interruption are not part of this process's rate."""
    buffer, clock = io.StringIO(), Clock()
    reporter = RichReporter(Console(file=buffer, force_terminal=False, width=200), clock=clock)
    spec = RunSpec(model="beta_vae", beta=4.0, steps=1000)
    reporter.start_run(spec, 0, 1)
    clock.now += 5.0  # loading the partial checkpoint, first steps
    reporter.progress(spec.run_id, 610, VALUES)
    for step in range(620, 701, 10):
        clock.now += 1.0
        reporter.progress(spec.run_id, step, VALUES)
    line = [x for x in _lines(buffer) if "step 700/1000" in x][0]
    # 90 steps in 9 s since step 610: 10 steps/s, 300 steps left = 30 s (the elapsed/step
    # ratio over the whole process, 14 s for 700 steps, would say 6 s).
    assert "elapsed 14s  left ≈ 30s" in line, line


def test_a_terminal_gets_the_live_bar_and_no_plain_lines():
    buffer = io.StringIO()
    reporter = RichReporter(Console(file=buffer, force_terminal=True, width=200))
    spec = RunSpec(model="beta_vae", beta=4.0, steps=100)
    reporter.start_run(spec, 0, 1)
    for step in range(10, 101, 10):
        reporter.progress(spec.run_id, step, VALUES)
    assert "training " not in buffer.getvalue() and "started " not in buffer.getvalue()
    reporter.end_run({"run_id": spec.run_id, "status": "ok", "metrics": {}})


def test_a_grid_in_worker_processes_logs_its_progress(tmp_path):
    """The processes strategy forwards worker progress to the parent, which writes the log lines."""
    result = CliRunner().invoke(
        app,
        ["run", "--betas", "1,4", "--steps", "20", "--batch-size", "8", "--eval-samples", "200", "--metrics", "mig",
         "--device", "cpu", "--threads", "2", "--strategy", "processes", "--registry", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    log = result.stderr
    for beta in ("1", "4"):
        assert re.search(rf"started .*beta={beta} .* 20 steps", log), log
    assert len(re.findall(r"^training .* step 20/20 ", log, flags=re.M)) == 2, log
    assert len(re.findall(r"^evaluating ", log, flags=re.M)) == 2, log
