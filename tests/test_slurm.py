"""The ``slurm`` executor on a REAL Slurm cluster (``.ci/slurm.sh`` starts one in CI): a grid
as one job array, a task preempted mid-training and requeued, options Slurm refuses.

Tests that submit skip with the reason where ``sbatch`` / ``sinfo`` do not answer (a laptop
without Slurm). The jobs run this interpreter with this process's environment (sbatch
exports it), so they import the same vaebench.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_vaebench, wait_until

#: Tiny but real: a 2-layer MLP β-VAE, a few dozen steps, 512 scored observations.
TINY = ["--model", "beta_vae", "--architecture", "mlp", "--batch-size", "16", "--eval-samples", "512",
        "--metrics", "kl", "--device", "cpu", "--threads", "1"]
#: Options every submission here uses: the CI cluster's partition, enough memory for torch.
SLURM = ["--executor", "slurm", "--partition", "debug", "--mem", "2G", "--time", "10"]
#: Generous bound for jobs on a 2-core machine shared with other work (seconds).
BOUND = 420


def cluster_problem() -> str | None:
    """Why no Slurm cluster answers here, or ``None``."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm's sbatch / sinfo are not on PATH (CI starts a cluster with .ci/slurm.sh)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer: {exc}"
    if done.returncode != 0 or "up" not in done.stdout:
        return f"no Slurm partition is up: {(done.stderr or done.stdout).strip()[:200]}"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'vaebench[slurm]')"
    return None


needs_cluster = pytest.mark.skipif(cluster_problem() is not None, reason=str(cluster_problem()))


def recorded(registry: Path) -> list[dict]:
    """Every record file's row (one per recorded run attempt)."""
    rows = []
    for path in sorted((registry / "runs").glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def submit(registry: Path, *args: str, tiny: list[str] = TINY) -> dict:
    done = run_vaebench("run", "--registry", str(registry), *SLURM, "--detach", "--json", *tiny, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cancel_leftovers(submitted: dict) -> None:
    """Cancel what a failed test left in the queue (nothing when it passed)."""
    ids = [t["job"] for t in submitted.get("tasks", [])]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@needs_cluster
def test_a_grid_runs_as_one_array_and_records_what_local_records(tmp_path):
    registry = tmp_path / "reg"
    grid = ["--betas", "1,4", "--seeds", "0,1", "--steps", "30"]
    # No --threads: each task trains with the CPUs Slurm grants it (1 by default), not the node's cores.
    submitted = submit(registry, *grid, tiny=[a for a in TINY if a not in ("--threads", "1")])
    try:
        tasks = submitted["tasks"]
        assert len(tasks) == 4 and len({t["job"].split("_")[0] for t in tasks}) == 1, tasks
        assert submitted["jobs"] == [tasks[0]["job"].split("_")[0]]
        planned = json.loads(run_vaebench("run", "--registry", str(registry), *TINY, *grid, "--dry-run",
                                          "--json").stdout)["runs"]
        assert [t["run_ids"] for t in tasks] == [[p["run_id"]] for p in planned]
        manifest = json.loads((registry / "grids" / f"{submitted['grid_id']}.json").read_text())
        assert manifest["executor"] == "slurm" and [t["job"] for t in manifest["tasks"]] == [t["job"] for t in tasks]

        wait_until(lambda: len(recorded(registry)) >= 4, BOUND, "4 records from the Slurm array")
        rows = recorded(registry)
        assert sorted(r["run_id"] for r in rows) == sorted(p["run_id"] for p in planned)  # each exactly once
        assert {r["status"] for r in rows} == {"ok"}, [(r["run_id"], r["error"]) for r in rows]

        # The same point trained here by the local executor: the same record, column for column.
        local = tmp_path / "local"
        done = run_vaebench("run", "--registry", str(local), *TINY, "--betas", "1", "--seeds", "0", "--steps", "30")
        assert done.returncode == 0, done.stderr
        (mine,) = recorded(local)
        theirs = next(r for r in rows if r["run_id"] == mine["run_id"])
        assert set(theirs) == set(mine) and theirs["threads"] == 1
        assert theirs["final_loss"] == mine["final_loss"] and theirs["history"] == mine["history"]

        # The executor's scheduler reads: every task ended, its log holds the worker's lines.
        from vaebench.harness.slurm_executor import slurm_executor
        from vaebench.plugins.contract import TaskRef

        executor = slurm_executor({"time": "10"})
        refs = [TaskRef(t["job"], t["run_ids"], t["log"]) for t in tasks]
        assert {s.state for s in executor.states(refs).values()} == {"ended"}
        assert f"ok       {tasks[0]['run_ids'][0]}" in executor.log_tail(refs[0], 40)
    finally:
        cancel_leftovers(submitted)


@needs_cluster
def test_a_preempted_task_is_requeued_and_continues_from_its_checkpoint(tmp_path):
    registry = tmp_path / "reg"
    submitted = submit(registry, "--betas", "4", "--seeds", "0", "--steps", "400", "--checkpoint-every", "40")
    try:
        (task,) = submitted["tasks"]
        (run_id,) = task["run_ids"]
        marker = registry / "artifacts" / run_id / "partial" / "training_state.json"
        wait_until(lambda: marker.exists() or recorded(registry), BOUND, "the task's first periodic checkpoint")
        assert not recorded(registry), "the run finished before its periodic checkpoint was seen"
        # submitit's preemption signal (SUBMITIT_PREEMPT_SIGNAL, default USR2), sent to the job
        # step where the worker runs, as Slurm does before preempting or at --signal_delay.
        subprocess.run(["scancel", "--signal=USR2", task["job"]], check=True, timeout=30)
        wait_until(lambda: len(recorded(registry)) >= 1, BOUND, "the requeued task's record")
        (row,) = recorded(registry)
        assert row["status"] == "ok" and row["steps_done"] == 400, row["error"]
        # The record's notes (kept in ``error`` for an ok run) say where training went on from.
        assert "picked up from its periodic checkpoint at step" in (row["error"] or ""), row["error"]
        log = Path(task["log"]).read_text()
        assert "claims released, requeueing" in log and "DUE TO JOB REQUEUE" in log, log[-2000:]
        assert len(list((registry / "runs").glob(f"{run_id}*.parquet"))) == 1
    finally:
        cancel_leftovers(submitted)


@needs_cluster
@pytest.mark.parametrize("option, says", [(["--partition", "nowhere"], "Invalid partition"),
                                          (["--mem", "10000G"], "node configuration is not available")])
def test_options_slurm_refuses_exit_2_before_anything_is_recorded(tmp_path, option, says):
    registry = tmp_path / "reg"
    done = run_vaebench("run", "--registry", str(registry), *SLURM, *option, *TINY, "--steps", "30", "--detach")
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (registry / "runs").exists() or not list((registry / "runs").iterdir())
    assert not (registry / "grids").exists() or not list((registry / "grids").iterdir())


def test_no_sbatch_on_path_exits_2_with_what_to_install(tmp_path):
    registry = tmp_path / "reg"
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_vaebench("run", "--registry", str(registry), *SLURM, *TINY, "--steps", "30",
                        env_extra={"PATH": str(empty)})
    assert done.returncode == 2, done.stderr
    assert "pip install 'vaebench[slurm]'" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (registry / "runs").exists()


@needs_cluster
def test_states_follow_a_task_from_running_to_cancelled_and_its_log_is_read(tmp_path):
    from vaebench.harness.slurm_executor import slurm_executor
    from vaebench.plugins.contract import TaskRef

    registry = tmp_path / "reg"
    submitted = submit(registry, "--betas", "4", "--seeds", "0", "--steps", "5000")
    try:
        executor = slurm_executor({"time": "10"})
        (task,) = [TaskRef(t["job"], t["run_ids"], t["log"]) for t in submitted["tasks"]]
        assert executor.states([task])[task.job].state in ("queued", "running")
        wait_until(lambda: "started " in executor.log_tail(task, 5), BOUND, "the task's start line")
        assert executor.states([task])[task.job].state == "running"
        assert executor.cancel([task]) == [task.job]
        wait_until(lambda: executor.states([task])[task.job].state == "failed", 60, "the cancelled state")
        assert executor.states([task])[task.job].reason.startswith("CANCELLED")
        assert not recorded(registry)  # a cancelled task records nothing itself (the watch does)
    finally:
        cancel_leftovers(submitted)


def test_time_limits_and_extra_sbatch_options_are_read_as_slurm_writes_them():
    from vaebench.harness.slurm_executor import minutes, sbatch_options, setup_lines

    assert [minutes(t) for t in (90, "90", "1:30", "1:30:00", "2-00", "1-00:00:01")] == [90, 90, 2, 90, 2880, 1441]
    for bad in ("", "soon", "1:xx", "0"):
        with pytest.raises(ValueError, match="time"):
            minutes(bad)
    assert sbatch_options("--exclusive --nice=10; --comment='a b'") == {"exclusive": True, "nice": "10",
                                                                         "comment": "a b"}
    with pytest.raises(ValueError, match="--NAME"):
        sbatch_options("-N 2")
    assert setup_lines("module load cuda; source env/bin/activate;") == ["module load cuda", "source env/bin/activate"]


@needs_cluster
def test_a_job_that_fails_leaves_a_failed_record_with_its_log_tail_through_the_attached_watch(tmp_path):
    """The job's interpreter fails before vaebench runs (a broken environment on the node):
    `run` (attached: it watches) records the point `failed` with Slurm's reason and the tail of
    the job's log, exits 1; `status` afterwards writes nothing more."""
    registry = tmp_path / "reg"
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ImportError: libcuda.so.1: cannot open shared object file' >&2\nexit 3\n")
    broken.chmod(0o755)
    done = run_vaebench("run", "--registry", str(registry), *SLURM, "--python", str(broken), *TINY,
                        "--betas", "4", "--steps", "30")
    try:
        assert done.returncode == 1, (done.stdout, done.stderr)
        (row,) = recorded(registry)
        assert row["status"] == "failed"
        assert "FAILED" in row["error"] and "libcuda.so.1" in row["error"], row["error"]
        shown = run_vaebench("status", "--registry", str(registry), "--json")
        assert shown.returncode == 0, shown.stderr
        state = json.loads(shown.stdout)
        assert [p["state"] for p in state["points"]] == ["recorded"] and not state["settled"]
        assert len(recorded(registry)) == 1
    finally:
        subprocess.run(["scancel", "--name", "submitit"], capture_output=True, timeout=30)


@needs_cluster
def test_status_and_cancel_of_a_submitted_grid(tmp_path):
    registry = tmp_path / "reg"
    submitted = submit(registry, "--betas", "1,4", "--steps", "5000")
    try:
        grid = submitted["grid_id"]

        def states() -> list[str]:
            shown = run_vaebench("status", grid, "--registry", str(registry), "--json")
            assert shown.returncode == 0, shown.stderr
            return [p["state"] for p in json.loads(shown.stdout)["points"]]

        assert set(states()) <= {"queued", "training"}
        wait_until(lambda: "training" in states(), BOUND, "a point in training")
        by_job = run_vaebench("status", submitted["tasks"][0]["job"].split("_")[0], "--registry", str(registry),
                              "--json")
        assert json.loads(by_job.stdout)["grid_id"] == grid
        done = run_vaebench("cancel", grid, "--registry", str(registry))
        assert done.returncode == 0, done.stderr
        assert all(t["job"] in done.stdout + done.stderr for t in submitted["tasks"]), done.stdout + done.stderr
        # Once Slurm has ended the tasks, status records each point failed (cancelled), once.
        wait_until(lambda: states() == ["recorded", "recorded"], BOUND, "the cancelled points settled")
        rows = recorded(registry)
        assert len(rows) == 2 and {r["status"] for r in rows} == {"failed"}
        assert all("CANCELLED" in r["error"] for r in rows), [r["error"] for r in rows]
    finally:
        cancel_leftovers(submitted)
