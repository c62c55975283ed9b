"""Faults and interruptions, as a user meets them: the real CLI in a subprocess, real
signals, real worker processes, found afterwards through /proc (issue 20).

Each test's budget is tiny (a few hundred steps of batch 8, 300 held-out observations).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG")

CLI = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
CHEAP = ["--batch-size", "8", "--eval-samples", "300", "--device", "cpu", "--metrics", "kl,mig"]


def start(*args: object, log: Path) -> subprocess.Popen:
    """``vaebench ARGS`` in its own session (so its descendants can be found), stderr to ``log``."""
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)


def vaebench(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def in_session(sid: int) -> list[str]:
    """``pid command`` of each live process of session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")[:120]
                found.append(f"{entry} {command!r}")
        except (OSError, ValueError, IndexError):
            pass
    return found


def stop_while_training(args: list, log: Path, signum: int, group: bool = False) -> subprocess.Popen:
    """``vaebench ARGS`` started, sent ``signum`` a second into training (to its whole
    process group if ``group``: Ctrl-C in a terminal), and waited for."""
    proc = start(*args, log=log)
    try:
        wait_until(lambda: "training" in log.read_text() or proc.poll() is not None, 120, "training to start")
        time.sleep(1.0)
        (os.killpg if group else os.kill)(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return proc


def partials(registry: Path) -> list[Path]:
    """The periodic checkpoints written so far (one per run in training)."""
    return sorted(registry.glob("artifacts/*/partial/training_state.json"))


def records(registry: Path) -> list[Path]:
    return sorted((registry / "runs").glob("*.parquet"))


def temporary_files(registry: Path) -> list[Path]:
    """Files or folders a writer meant to rename or remove (records, checkpoints)."""
    return [p for p in registry.rglob("*") if p.name.endswith((".partial", ".new", ".old")) or p.name.startswith(".")]


def gone(sid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running {timeout:.0f} s later: {left}"


def test_processes_grid_exits_soon_after_its_last_record(tmp_path):
    # SAP on 2 joblib jobs starts loky's reusable workers in each worker process; their
    # exit used to wait for loky's 300 s idle timeout.
    registry = tmp_path / "reg"
    proc = start("run", "--betas", "1,4", "--steps", "20", *CHEAP, "--metrics", "kl,sap",
                 "--metric-option", "sap.n_jobs=2", "--threads", "2", "--strategy", "processes",
                 "--registry", registry, log=tmp_path / "err")
    try:
        wait_until(lambda: len(records(registry)) == 2 or proc.poll() is not None, 300, "two records")
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (tmp_path / "err").read_text()
    gone(proc.pid, 5)


def test_three_runs_on_two_cores_train_side_by_side(tmp_path):
    result = vaebench("run", "--betas", "1,4,8", "--steps", "40", *CHEAP, "--threads", "2",
                      "--strategy", "processes", "--registry", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(r["concurrent_runs"], r["threads"]) for r in runs] == [(3, 1)] * 3
    assert max(r["started_at"] for r in runs) < min(r["finished_at"] for r in runs), "a run waited for a core"


def test_kill_9_ends_the_workers_and_resume_trains_each_point_once(tmp_path):
    registry = tmp_path / "reg"
    grid = ["run", "--betas", "1,4,8", "--steps", "300", *CHEAP, "--threads", "2", "--strategy", "processes",
            "--checkpoint-every", "20", "--registry", registry]
    proc = start(*grid, log=tmp_path / "err")
    try:
        wait_until(lambda: len(partials(registry)) >= 2, 120, "two runs in training")
        assert len(in_session(proc.pid)) >= 3  # the CLI, its workers (and a resource tracker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone(proc.pid)  # workers, their loky workers, resource trackers
    finally:
        proc.kill()
    assert len(records(registry)) < 3
    resumed = vaebench(*grid, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert len(records(registry)) == 3 and not partials(registry) and not temporary_files(registry)
    done = json.loads(resumed.stdout)
    assert all(r["status"] == "ok" for r in done)
    assert any("picked up from its periodic checkpoint" in (r["error"] or "") for r in done)


def test_kill_9_of_a_sequential_grid_leaves_no_idle_loky_workers(tmp_path):
    """SAP's joblib (loky) workers are not children that die with the CLI: after ``kill -9``
    they idled on for loky's 300 s; now for ``sap.LOKY_IDLE_SECONDS`` (+ loky's 30 s wait)."""
    from vaebench.plugins.metrics.sap import LOKY_IDLE_SECONDS

    registry = tmp_path / "reg"
    proc = start("run", "--betas", "1,4", "--steps", "100", "--batch-size", "8", "--eval-samples", "300",
                 "--device", "cpu", "--metrics", "sap", "--threads", "2", "--strategy", "sequential",
                 "--registry", registry, log=tmp_path / "err")
    try:
        wait_until(lambda: len(records(registry)) >= 1 or proc.poll() is not None, 120, "the first record")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        assert len(in_session(proc.pid)) >= 2, in_session(proc.pid)  # the CLI and SAP's loky workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # an idle worker then waits up to 30 s for its dead parent's exit lock (loky)
        gone(proc.pid, timeout=LOKY_IDLE_SECONDS + 30 + 15)
    finally:
        proc.kill()


@pytest.mark.parametrize(("strategy", "signum", "group"), [
    ("sequential", signal.SIGINT, False),
    ("processes", signal.SIGTERM, False),   # `kill`, Slurm, systemd: the CLI alone
    ("processes", signal.SIGINT, True),     # Ctrl-C in a terminal: the whole process group
    ("vectorized", signal.SIGTERM, False),
])
def test_a_stop_signal_ends_the_grid_cleanly_and_resume_finishes_it(tmp_path, strategy, signum, group):
    registry = tmp_path / "reg"
    grid = ["run", "--betas", "1,4", "--steps", "200", *CHEAP, "--threads", "2", "--strategy", strategy,
            "--checkpoint-every", "1000", "--registry", registry]
    # --checkpoint-every 1000 > --steps: only the stop writes a periodic checkpoint.
    proc = stop_while_training(grid, tmp_path / "err", signum, group)
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {signal.Signals(signum).name} during ") and "--resume" in last, err
    assert "Traceback" not in err
    gone(proc.pid, 5)
    assert not temporary_files(registry)
    stopped = partials(registry)
    assert stopped, "the run in training wrote no checkpoint when stopped"
    steps = [json.loads(p.read_text())["step"] for p in stopped]
    assert all(0 < s < 200 for s in steps), steps
    assert f"at step {steps[0]}" in last or len(steps) > 1
    resumed = vaebench(*grid, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert len(records(registry)) == 2 and not partials(registry) and not temporary_files(registry)
    picked = [r for r in json.loads(resumed.stdout) if "picked up from" in (r["error"] or "")]
    assert picked and all(r["steps_done"] == 200 and r["status"] == "ok" for r in picked)


def test_a_stop_signal_ends_continue_and_the_same_command_picks_up(tmp_path):
    first = vaebench("run", "--betas", "4", "--steps", "10", *CHEAP, "--threads", "1", "--registry", tmp_path,
                     "--json")
    assert first.returncode == 0, first.stderr
    parent = json.loads(first.stdout)[0]["run_id"]
    again = ["continue", parent, "--steps", "300", "--checkpoint-every", "1000", "--threads", "1", "--device", "cpu",
             "--eval-samples", "300", "--registry", tmp_path]
    proc = stop_while_training(again, tmp_path / "err", signal.SIGINT)
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT during" in err.strip().splitlines()[-1] and "same command" in err, err
    assert len(records(tmp_path)) == 1 and len(partials(tmp_path)) == 1 and not temporary_files(tmp_path)
    done = vaebench(*again, "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["steps_done"] == 310 and "picked up from its periodic checkpoint" in record["error"]
    assert len(records(tmp_path)) == 2 and not partials(tmp_path)
