"""Watching a submitted grid from the registry (``harness/watch.py``, ``vaebench status`` /
``cancel``, the watch after ``vaebench run``), scheduler-independent.

The executor here is real, not a mock: ``procs`` submits each ``PointsTask`` as a detached
process ``python -m vaebench.harness.tasks TASK.json`` (under ``sh``, which writes its exit
code), reads ``states`` from the pid and that exit code, cancels by killing the process
group, and its log is the file the task's output goes to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until
from vaebench import api
from vaebench.harness.tasks import split_tasks
from vaebench.plugin import ExecutorResult, ExecutorSpec, GridJob, TaskRef, TaskState
from vaebench.plugins import manager as manager_module
from vaebench.registry import claims, grids, store
from vaebench.testing import SpecsPlugin, plugin_manager

HERE = Path(__file__).resolve().parent
CHEAP = ["--model", "beta_vae", "--architecture", "mlp", "--batch-size", "16", "--eval-samples", "512",
         "--metrics", "mig", "--device", "cpu", "--threads", "1"]
#: A point that trains far longer than any test waits: killed, cancelled or detached from.
LONG = "100000"
#: ``sh -c`` script: run the task, then write its exit code beside it.
SCRIPT = '"$0" -m vaebench.harness.tasks "$1"; echo $? > "$2"'


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class ProcessExecutor:
    """Each task a detached process on this machine; job id = its pid."""

    detaches = True
    remote = True

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def run(self, specs, job: GridJob) -> ExecutorResult:
        base = Path(job.registry) / "proc-tasks"
        base.mkdir(parents=True, exist_ok=True)
        refs = []
        for i, task in enumerate(split_tasks(specs, job, writer="procs task")):
            stem = base / f"{job.grid_id}-{i}"
            stem.with_suffix(".json").write_text(task.to_json())
            with open(stem.with_suffix(".log"), "wb") as log:
                proc = subprocess.Popen(["sh", "-c", SCRIPT, sys.executable, str(stem.with_suffix(".json")),
                                         str(stem.with_suffix(".rc"))], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            refs.append(TaskRef(job=str(proc.pid), run_ids=task.run_ids, log=str(stem.with_suffix(".log"))))
        return ExecutorResult(strategy="sequential", jobs=[r.job for r in refs], tasks=refs)

    def states(self, tasks) -> dict[str, TaskState]:
        out = {}
        for t in tasks:
            stem = Path(t.log).with_suffix("")
            rc, cancelled = stem.with_suffix(".rc"), stem.with_suffix(".cancelled")
            if rc.exists() and rc.read_text().strip():
                code = int(rc.read_text())
                killed = f" ({signal.Signals(code - 128).name})" if code > 128 else ""
                out[t.job] = TaskState("ended") if code == 0 else TaskState("failed", f"exit {code}{killed}")
            elif cancelled.exists():
                out[t.job] = TaskState("failed", "cancelled")
            else:
                out[t.job] = TaskState("running" if alive(int(t.job)) else "ended")
        return out

    def cancel(self, tasks) -> list[str]:
        for t in tasks:
            Path(t.log).with_suffix(".cancelled").touch()
            try:
                os.killpg(int(t.job), signal.SIGKILL)
            except ProcessLookupError:
                pass
        return [t.job for t in tasks]


PROCS = ExecutorSpec(name="procs", description="Each task a detached local process (tests).", executor=ProcessExecutor)


def procs_manager():
    return plugin_manager(SpecsPlugin(executors=[PROCS]))


@pytest.fixture
def procs(monkeypatch):
    """The process-wide manager holding ``procs``; every task process killed at the end."""
    m = procs_manager()
    monkeypatch.setattr(manager_module, "_MANAGER", m)
    yield m
    while _task_pids:  # this test's task processes, each killed once (a later test's pid may reuse the number)
        try:
            os.killpg(_task_pids.pop(), signal.SIGKILL)
        except ProcessLookupError:
            pass


_task_pids: list[int] = []


def submitted(registry: Path) -> grids.GridManifest:
    manifest = grids.find_grids(str(registry))[-1]
    _task_pids.extend(int(t.job) for t in manifest.tasks)
    return manifest


def state_of(registry: Path, manager) -> Any:
    return api.status(None, str(registry), manager=manager, settle=False)


LAUNCH = ("import sys; sys.path.insert(0, {here!r}); import test_watch; from vaebench.plugins import manager as m; "
          "m._MANAGER = test_watch.procs_manager(); from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; "
          "main()")


def vaebench_process(*args: str) -> subprocess.Popen:
    """``vaebench ARGS`` in a fresh interpreter whose plugin manager holds ``procs``."""
    return subprocess.Popen([sys.executable, "-c", LAUNCH.format(here=str(HERE)), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# ~15 s: two 40-step points, each its own process
def test_status_of_a_running_then_finished_grid(cli, procs, tmp_path):
    reg = tmp_path / "reg"
    out = cli("run", *CHEAP, "--steps", "40", "--seeds", "0,1", "--executor", "procs", "--detach", "--registry", reg)
    assert out.exit_code == 0, out.output
    manifest = submitted(reg)
    assert f"vaebench status {manifest.grid_id}" in out.output
    assert set(manifest.specs) == set(manifest.run_ids) and len(manifest.run_ids) == 2

    manifest_jobs = [t.job for t in manifest.tasks]
    now = cli("status", "--json", "--registry", reg)
    assert now.exit_code == 0, now.output
    shape = json.loads(now.stdout)
    assert shape["grid_id"] == manifest.grid_id and shape["executor"] == "procs"
    assert [p["run_id"] for p in shape["points"]] == manifest.run_ids
    assert {p["state"] for p in shape["points"]} <= {"queued", "training", "recorded"}
    assert all(p["steps"] == 40 and p["job"] in manifest_jobs for p in shape["points"])

    wait_until(lambda: state_of(reg, procs).done, 240, "both points recorded")
    done = cli("status", manifest.grid_id[:12], "--registry", reg)
    assert done.exit_code == 0, done.output
    assert done.output.count("recorded: ok") == 2 and "2 recorded" in done.output
    by_job = cli("status", manifest.tasks[0].job, "--json", "--registry", reg)
    assert json.loads(by_job.stdout)["done"] is True
    watched = cli("status", "--watch", "--json", "--registry", reg)  # done already: one read, exit 0
    assert watched.exit_code == 0 and json.loads(watched.stdout)["counts"]["recorded"] == 2


# ~25 s: a 20-step point, a long one killed once it has a checkpoint, then its resubmission cancelled
def test_a_killed_task_is_settled_once_and_resume_resubmits_only_it(cli, procs, tmp_path):
    reg = tmp_path / "reg"
    args = [*CHEAP, "--steps", f"20,{LONG}", "--checkpoint-every", "20", "--executor", "procs", "--registry", reg]
    assert cli("run", *args, "--detach").exit_code == 0
    manifest = submitted(reg)
    short, long = manifest.run_ids
    wait_until(lambda: (p := state_of(reg, procs).points[1]).state == "training" and p.step, 240,
               "the long point training with a checkpoint")
    info = claims.holder(str(reg), long)
    os.kill(info.pid, signal.SIGKILL)  # the task's python dies mid-training
    rc = Path(manifest.task_of(long).log).with_suffix(".rc")
    wait_until(lambda: rc.exists() and rc.read_text().strip(), 60, "the task's exit code")

    first = cli("status", "--json", "--registry", reg)
    assert first.exit_code == 0, first.output
    point = json.loads(first.stdout)["points"][1]
    assert point["state"] == "recorded" and point["status"] == "failed", point
    assert "exit 137 (SIGKILL)" in point["reason"] and "log tail:" in point["reason"]
    assert json.loads(first.stdout)["settled"] == [long]
    second = cli("status", "--json", "--registry", reg)
    assert json.loads(second.stdout)["settled"] == []
    attempts = store.read_attempts(str(reg), long)
    assert [a["status"] for a in attempts] == ["failed"] and "SIGKILL" in attempts[0]["error"]

    wait_until(lambda: state_of(reg, procs).points[0].state == "recorded", 240, "the short point recorded")
    again = cli("run", *args, "--resume", "--detach")
    assert again.exit_code == 0, again.output
    resubmitted = submitted(reg)
    assert resubmitted.grid_id != manifest.grid_id and resubmitted.run_ids == [long]

    job = resubmitted.tasks[0].job
    wait_until(lambda: state_of(reg, procs).points[0].state == "training", 240, "the resubmitted point training")
    cancelled = cli("cancel", "--registry", reg)
    assert cancelled.exit_code == 0 and f"cancelled 1 task(s) of procs: {job}" in cancelled.output
    wait_until(lambda: not alive(int(job)), 30, "the cancelled task gone")
    after = json.loads(cli("status", "--json", "--registry", reg).stdout)["points"][0]
    assert after["status"] == "failed" and "cancelled" in after["reason"]
    nothing = cli("cancel", resubmitted.grid_id, "--registry", reg)
    assert nothing.exit_code == 0 and "nothing to cancel" in nothing.output


# < 1 s: nothing trains
def test_no_grid_and_an_executor_that_cannot_cancel_are_one_line_exit_2(cli, procs, tmp_path):
    reg = tmp_path / "reg"
    for command in ("status", "cancel"):
        out = cli(command, "--registry", reg)
        assert out.exit_code == 2 and "no grid submitted" in out.output and len(out.output.strip().splitlines()) == 1
    grids.write_manifest(str(reg), grids.GridManifest(grid_id="20261204T000000Z-abcdef", executor="local", options={},
                                                      submitted_at=datetime.now(timezone.utc),
                                                      tasks=[TaskRef(job="1", run_ids=["ab" * 8])]))
    out = cli("cancel", "--registry", reg)
    assert out.exit_code == 2 and "cannot cancel" in out.output
    assert cli("status", "nosuchgrid", "--registry", reg).exit_code == 2


# ~15 s: one 20-step point, the CLI in its own interpreter
def test_run_watches_its_submitted_grid_until_recorded(tmp_path):
    reg = tmp_path / "reg"
    proc = vaebench_process("run", *CHEAP, "--steps", "20", "--executor", "procs", "--registry", str(reg))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    manifest = grids.find_grids(str(reg))[-1]
    assert f"vaebench status {manifest.grid_id}" in stderr
    assert "1 run(s)" in stdout and manifest.run_ids[0][:6] in stdout
    assert [a["status"] for a in store.read_attempts(str(reg), manifest.run_ids[0])] == ["ok"]


# ~10 s: the CLI is sent SIGINT while its task trains; the task goes on until cancelled
def test_ctrl_c_detaches_and_leaves_the_tasks_running(tmp_path):
    reg = tmp_path / "reg"
    proc = vaebench_process("run", *CHEAP, "--steps", LONG, "--executor", "procs", "--registry", str(reg))
    try:
        wait_until(lambda: grids.find_grids(str(reg)), 240, "the grid submitted")
        manifest = grids.find_grids(str(reg))[-1]
        job = int(manifest.tasks[0].job)
        _task_pids.append(job)
        wait_until(lambda: claims.holder(str(reg), manifest.run_ids[0]) is not None, 240, "the task training")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert f"vaebench status {manifest.grid_id}" in stderr and f"vaebench cancel {manifest.grid_id}" in stderr
        assert alive(job)
        _, jobs = api.cancel(manifest.grid_id, str(reg), manager=procs_manager())
        assert jobs == [str(job)]
        wait_until(lambda: not alive(job), 30, "the cancelled task gone")
    finally:
        if proc.poll() is None:
            proc.kill()


# < 1 s: a remote registry's checkpoint step is read from its marker, nothing downloaded
def test_the_step_of_a_remote_checkpoint_is_read_from_its_marker(tmp_path):
    from vaebench.harness.resumption import checkpoint_step
    from vaebench.registry import staging

    run_id, registry = "cd" * 8, f"memory://watch-{os.getpid()}"
    assert checkpoint_step(registry, run_id) is None
    partial = tmp_path / run_id / "partial"
    partial.mkdir(parents=True)
    (partial / "training_state.json").write_text('{"step": 40}')
    staging.upload_partial(registry, str(partial), 40)
    assert checkpoint_step(registry, run_id) == 40
    assert not staging.run_dir(registry, run_id).joinpath("partial").exists()


# ~6 s: two watchers at once (processes) find the same lost point; one failed record
def test_two_watchers_settle_a_lost_point_once(tmp_path):
    reg = tmp_path / "reg"
    (spec,) = api.plan_grid("beta_vae", architectures="mlp", steps=[20], batch_size=[16])
    log = reg / "proc-tasks" / "t-0.log"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\nMemoryError: out of memory\n")
    log.with_suffix(".rc").write_text("1\n")
    grids.write_manifest(str(reg), grids.GridManifest(
        grid_id="20261204T000000Z-abcdef", executor="procs", options={}, submitted_at=datetime.now(timezone.utc),
        tasks=[TaskRef(job="999999999", run_ids=[spec.run_id], log=str(log))],
        specs={spec.run_id: json.loads(spec.to_json())}))
    watchers = [vaebench_process("status", "--json", "--registry", str(reg)) for _ in range(2)]
    shapes = []
    for proc in watchers:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        shapes.append(json.loads(stdout))
    assert sorted(len(s["settled"]) for s in shapes) == [0, 1]
    (attempt,) = store.read_attempts(str(reg), spec.run_id)
    assert attempt["status"] == "failed" and attempt["spec_json"] == spec.to_json()
    assert attempt["error"] == ("task failed: exit 1 (job 999999999); log tail: Traceback (most recent call last): "
                                "| MemoryError: out of memory")
    settler, other = sorted(shapes, key=lambda s: -len(s["settled"]))
    assert settler["points"][0]["state"] == "recorded" and settler["points"][0]["status"] == "failed"
    # the other found it recorded already, or saw it lost while the first held its claim
    assert other["points"][0]["status"] == "failed" or "being recorded by" in other["points"][0]["reason"]


def test_the_status_table_keeps_the_end_of_a_long_log_tail():
    """A failed point's reason in the table: its cause and the END of the log tail (the
    traceback's last line), not the tail's first lines cut at 160 characters."""
    from vaebench.harness.watch import short_reason

    reason = ("task failed: OUT_OF_MEMORY (job 7_1); log tail: "
              + " | ".join(f"line {i} of the job's log" for i in range(30)) + " | RuntimeError: boom")
    short = short_reason(reason)
    assert len(short) == 160 and short.startswith("task failed: OUT_OF_MEMORY (job 7_1); log tail: ...")
    assert short.endswith("| RuntimeError: boom")
    assert short_reason("short") == "short"
