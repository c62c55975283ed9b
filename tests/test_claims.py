"""Claims (issue 23): a grid point is trained by one writer at a time. Real files, real
processes, real signals, and a real (loopback) S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vaebench.registry import claims, location, store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CLI = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
GRID = ["run", "--betas", "1,2,4,8", "--steps", "20", "--batch-size", "8", "--eval-samples", "300",
        "--device", "cpu", "--metrics", "kl", "--architecture", "mlp", "--threads", "1"]
RID = "ab" * 8


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "claims" / RID).glob("*.json")) if (root / "claims" / RID).exists() else []


# ------------------------------------------------------------------ unit


def test_acquire_renew_release(tmp_path: Path) -> None:
    claim = claims.acquire(tmp_path, RID, writer="test")
    assert claim is not None and claim.generation == 1
    assert claims.acquire(tmp_path, RID) is None  # held live by this very process
    info = claims.holder(tmp_path, RID)
    assert info.who == f"{store.this_host()}:{os.getpid()}" and info.writer == "test" and info.live()
    before = info.renewed
    time.sleep(0.01)
    assert claim.renew() and claims.holder(tmp_path, RID).renewed > before
    claim.release()
    assert claims.holder(tmp_path, RID) is None and not (tmp_path / "claims").exists()
    again = claims.acquire(tmp_path, RID)
    assert again is not None
    again.release()


def test_a_dead_writers_claim_is_taken_over_at_once(tmp_path: Path) -> None:
    claim = claims.acquire(tmp_path, RID)
    doc = json.loads(claim.document())
    doc.update(pid=_dead_pid(), pids=[])
    doc["pids"] = [doc["pid"]]
    (tmp_path / "claims" / RID / "1.json").write_text(json.dumps(doc))
    assert claims.holder(tmp_path, RID).stale()
    assert [c.run_id for c in claims.stale_claims(tmp_path)] == [RID]
    taken = claims.acquire(tmp_path, RID)
    assert taken is not None and taken.generation == 2 and _files(tmp_path) == ["2.json"]
    # The old holder (this process, pretending) learns it lost the point and leaves it be.
    assert not claim.renew() and claim.lost_to.generation == 2
    claim.release()
    assert _files(tmp_path) == ["2.json"]
    taken.release()


def test_a_claim_whose_worker_lives_is_not_stale(tmp_path: Path) -> None:
    """The processes strategy names the worker: dead parent, live worker -> still held."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim = claims.acquire(tmp_path, RID)
        doc = json.loads(claim.document())
        doc["pids"] = [_dead_pid(), worker.pid]
        (tmp_path / "claims" / RID / "1.json").write_text(json.dumps(doc))
        assert not claims.holder(tmp_path, RID).stale() and claims.acquire(tmp_path, RID) is None
    finally:
        worker.kill()
        worker.wait()
    assert claims.holder(tmp_path, RID).stale()


def test_wait_free_waits_for_a_killed_writer_to_be_gone(tmp_path: Path) -> None:
    """A scheduler reports a killed worker before its process is gone: wait_free waits for
    the claim to go stale (and gives up, False, on one whose writer lives)."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    claim = claims.acquire(tmp_path, RID)
    doc = json.loads(claim.document())
    doc.update(pid=worker.pid, pids=[worker.pid])
    (tmp_path / "claims" / RID / "1.json").write_text(json.dumps(doc))
    try:
        assert not claims.wait_free(tmp_path, RID, timeout=0.3)
        threading.Timer(0.5, worker.kill).start()
        assert claims.wait_free(tmp_path, RID, timeout=30)
        assert claims.acquire(tmp_path, RID) is not None
    finally:
        worker.kill()
        worker.wait()
    assert claims.wait_free(tmp_path / "elsewhere", RID, timeout=0)  # no claim at all


def test_lease_expiry_and_the_keeper(tmp_path: Path) -> None:
    kept = claims.acquire(tmp_path, RID, lease=0.5)
    claims.KEEPER.keep(kept)
    try:
        time.sleep(1.2)  # renewed every 0.1 s meanwhile
        assert claims.acquire(tmp_path, RID) is None
    finally:
        claims.KEEPER.drop(kept)
    time.sleep(1.0)  # not renewed for twice the lease
    assert claims.holder(tmp_path, RID).stale()
    assert [c.run_id for c in claims.remove_stale(tmp_path)] == [RID]
    assert claims.holder(tmp_path, RID) is None and claims.stale_claims(tmp_path) == []


def test_racing_takers_of_a_stale_claim_exactly_one_wins(tmp_path: Path) -> None:
    """Threads in this process and processes beside it, all at once, 5 rounds."""
    code = ("import sys, time; from vaebench.registry import claims; t = float(sys.argv[2]);"
            "time.sleep(max(0, t - time.time())); c = claims.acquire(sys.argv[1], '" + RID + "', lease=60);"
            "print(c.generation if c else 0, flush=True); sys.stdin.read()")  # alive until every taker tried
    for _ in range(5):
        stale = claims.acquire(tmp_path, RID, lease=0.01)
        time.sleep(0.05)
        at = time.time() + 1.5
        # A taker process stays alive until all have tried: a winner that exited would leave a
        # claim of a dead pid, which a late taker may rightly take over (stale on this host).
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(at)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(3)]
        won: list[int] = []

        def take() -> None:
            time.sleep(max(0, at - time.time()))
            c = claims.acquire(tmp_path, RID, lease=60)
            won.append(c.generation if c else 0)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won += [int(p.stdout.readline()) for p in procs]
        for p in procs:
            p.communicate(timeout=60)
        assert sorted(won)[:-1] == [0] * 6 and sorted(won)[-1] == stale.generation + 1, won
        (tmp_path / "claims" / RID / f"{stale.generation + 1}.json").unlink()  # end it for the next round
        stale.release()


# ------------------------------------------------------------------ real runs


def _start(registry: Path, *extra: str, log: Path, grid: list[str] = GRID) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-c", CLI, *grid, "--registry", str(registry), *extra],
                                stdout=subprocess.DEVNULL, stderr=err, text=True)


def _attempts(registry: Path) -> dict[str, list[str]]:
    from vaebench.registry.query import open_runs

    con, _ = open_runs(str(registry), attempts="all")
    rows = con.execute("select run_id, status from runs").fetchall()
    out: dict[str, list[str]] = {}
    for run_id, status in rows:
        out.setdefault(run_id, []).append(status)
    return out


def test_two_grids_started_together_train_each_point_once(tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    a = _start(registry, "--strategy", "sequential", log=tmp_path / "a.log")
    b = _start(registry, "--strategy", "sequential", log=tmp_path / "b.log")
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    found = _attempts(registry)
    assert len(found) == 4 and all(v == ["ok"] for v in found.values()), found
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    said = logs.count("is being trained by") + logs.count("already recorded")
    assert said >= 1 and not (registry / "claims").exists(), logs


def test_kill_9_mid_training_then_resume_takes_the_point_over(tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    log = tmp_path / "first.log"
    grid = [*GRID[:2], "1,4", *GRID[3:4], "200", *GRID[5:]]  # 2 points, 200 steps
    first = _start(registry, "--strategy", "sequential", log=log, grid=grid)
    deadline = time.monotonic() + 120
    while not list((registry / "claims").glob("*/*.json")):
        assert time.monotonic() < deadline and first.poll() is None, log.read_text()
        time.sleep(0.05)
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (held,) = claims.claims_of(registry)
    assert held.pid == first.pid and held.stale() and held.run_id not in _attempts(registry)
    second = subprocess.run([sys.executable, "-c", CLI, *grid, "--registry", str(registry),
                             "--resume", "--strategy", "sequential"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "is being trained by" not in second.stderr, second.stderr
    found = _attempts(registry)
    assert len(found) == 2 and all(v == ["ok"] for v in found.values()), found
    assert claims.claims_of(registry) == []


def test_processes_strategy_claims_through_the_parent(tmp_path: Path) -> None:
    """A point claimed by another live writer is skipped with one line, counted in the
    summary, exit 0; the rest train in worker processes."""
    registry = tmp_path / "reg"
    from vaebench.plugins.runspec import RunSpec

    spec = RunSpec(model="beta_vae", beta=2.0, steps=20, batch_size=8, architecture="mlp")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from vaebench.registry import claims;"
                               f"c = claims.acquire(sys.argv[1], '{spec.run_id}'); print('held', flush=True);"
                               "time.sleep(120)", str(registry)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = subprocess.run([sys.executable, "-c", CLI, *GRID, "--registry", str(registry), "--threads", "2",
                              "--strategy", "processes"], capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 0, res.stderr
    assert f"{spec.run_id} is being trained by {store.this_host()}:{holder.pid}; skipped" in res.stderr
    assert "1 run(s) being trained by another writer, skipped" in res.stderr
    found = _attempts(registry)
    assert len(found) == 3 and spec.run_id not in found


# ------------------------------------------------------------------ S3


@pytest.fixture()
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                           AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{host}:{port}").items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="lab")
    location.clear_cache()
    s3fs.S3FileSystem.clear_instance_cache()
    yield "s3://lab/reg"
    location.clear_cache()
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_claims_on_object_storage(s3: str) -> None:
    import s3fs

    claim = claims.acquire(s3, RID, lease=60)
    assert claim is not None and claims.acquire(s3, RID) is None
    # A second filesystem instance (another machine, as far as the store can tell) sees it.
    location.clear_cache()
    s3fs.S3FileSystem.clear_instance_cache()
    assert claims.acquire(s3, RID) is None and claims.holder(s3, RID).generation == 1
    fs, path = location.filesystem(s3)
    with pytest.raises(FileExistsError):
        with fs.open(f"{path}/claims/{RID}/1.json", "xb") as fh:
            fh.write(b"{}")
    assert claim.renew()
    claim.release()
    assert claims.holder(s3, RID) is None
    stale = claims.acquire(s3, RID, lease=0.01)
    time.sleep(0.05)
    taken = claims.acquire(s3, RID, lease=60)
    assert taken is not None and taken.generation == 2 and not stale.renew()
    assert [c.generation for c in claims.claims_of(s3)] == [2]
    taken.release()


# ------------------------------------------------------------------ a requeued Slurm task

#: A host name that is not this one: the claim's pid cannot be checked from here.
ELSEWHERE = "node-elsewhere-7"


def _claim_from_elsewhere(root: Path, run_id: str = RID, task: str | None = None, restart: int | None = None) -> None:
    """Leave ``run_id`` claimed live as a writer on another host leaves it when its node
    dies: renewed just now, its pid not checkable here, ``task`` / ``restart`` as given
    (none: a claim file written before incarnations were recorded)."""
    assert store.this_host() != ELSEWHERE
    claim = claims.acquire(root, run_id, writer=f"slurm job {task}" if task else "vaebench run")
    assert claim is not None and claim.generation == 1
    doc = json.loads(claim.document())
    doc.update(host=ELSEWHERE, pid=4242, pids=[4242])
    doc.pop("task", None)
    doc.pop("restart", None)
    if task is not None:
        doc.update(task=task, restart=restart)
    (root / "claims" / run_id / "1.json").write_text(json.dumps(doc))
    info = claims.holder(root, run_id)
    assert info.host == ELSEWHERE and info.live()


def test_a_requeued_slurm_task_takes_over_its_earlier_incarnations_live_claim(tmp_path: Path) -> None:
    _claim_from_elsewhere(tmp_path, task="77_1", restart=0)
    assert claims.holder(tmp_path, RID).incarnation == claims.Incarnation("77_1", 0)
    taken = claims.acquire(tmp_path, RID, writer="slurm job 77_1", incarnation=claims.Incarnation("77_1", 1))
    assert taken is not None and taken.generation == 2 and _files(tmp_path) == ["2.json"]
    info = claims.holder(tmp_path, RID)
    assert info.host == store.this_host() and info.incarnation == claims.Incarnation("77_1", 1) and info.live()
    # The new incarnation's claim is live to everyone, itself included.
    assert claims.acquire(tmp_path, RID, incarnation=claims.Incarnation("77_1", 1)) is None
    assert claims.acquire(tmp_path, RID) is None
    taken.release()
    assert claims.holder(tmp_path, RID) is None


@pytest.mark.parametrize("held, taker", [
    (("77_1", 0), ("77_2", 1)),  # another array task
    (("77_1", 0), ("77_1", 0)),  # the same incarnation
    (("77_1", 0), None),  # a plain writer (vaebench run)
    (("77_1", 2), ("77_1", 1)),  # a later incarnation holds it
    (None, ("77_1", 1)),  # a claim file without an incarnation (written by an older vaebench)
], ids=["other-task", "same-restart", "plain-writer", "later-holder", "old-claim-file"])
def test_a_live_claim_of_another_incarnation_is_not_taken_over(tmp_path: Path, held, taker) -> None:
    task, restart = held or (None, None)
    _claim_from_elsewhere(tmp_path, task=task, restart=restart)
    assert claims.holder(tmp_path, RID).incarnation == (claims.Incarnation(*held) if held else None)
    identity = claims.Incarnation(*taker) if taker else None
    assert claims.acquire(tmp_path, RID, writer="test", incarnation=identity) is None
    assert _files(tmp_path) == ["1.json"] and claims.holder(tmp_path, RID).host == ELSEWHERE


def test_slurm_task_requeued_onto_another_node_trains_the_point_its_dead_run_claimed(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """End to end through the array task's callable: array task 77_1, restart 1, finds the
    live claim its first run (restart 0) left on another node, takes it and records the point."""
    from vaebench import api
    from vaebench.harness.slurm_executor import SlurmTask
    from vaebench.harness.tasks import PointsTask

    (spec,) = api.plan_grid("beta_vae", architectures="mlp", steps=[20], batch_size=[16])
    _claim_from_elsewhere(tmp_path, spec.run_id, task="77_1", restart=0)
    task = PointsTask(specs=[spec], registry=str(tmp_path), metric_names=["kl"], writer="slurm job",
                      execution={"device": "cpu", "threads": 1, "eval_samples": 512, "figures": False})
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    result = json.loads(SlurmTask()(task.to_json()))
    assert [(r["run_id"], r["status"]) for r in result] == [(spec.run_id, "ok")]
    assert store.read_record(str(tmp_path), f"{spec.run_id}.{result[0]['attempt']}")["status"] == "ok"
    assert claims.holder(tmp_path, spec.run_id) is None  # released once recorded


def test_a_slurm_runs_incarnation_is_read_from_its_environment() -> None:
    from vaebench.harness.slurm_executor import incarnation

    assert incarnation({}) is None
    assert incarnation({"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1"}) == \
        {"task": "77_1", "restart": 0}
    assert incarnation({"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1",
                        "SLURM_RESTART_COUNT": "2"}) == {"task": "77_1", "restart": 2}
    assert incarnation({"SLURM_JOB_ID": "80", "SLURM_RESTART_COUNT": "1"}) == {"task": "80", "restart": 1}
