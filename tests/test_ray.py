"""The ``ray`` executor on a real local Ray cluster (``ray.init`` of a fresh one in the
driver: ``vaebench run --executor ray`` in a fresh interpreter). Skipped where Ray is not
installed (``pip install 'vaebench[ray]'``). Costs on 2 shared cores: the 4-point grid
~29 s (a local grid for comparison included), the killed worker and ``--resume`` ~41 s,
``status`` and ``cancel`` of a running grid from other processes ~15 s, bad options and an
unreachable address < 2 s, Ray made unimportable ~3 s."""

from __future__ import annotations

import json
import os
import tempfile
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'vaebench[ray]')")

from conftest import run_vaebench, wait_until  # noqa: E402

from vaebench.registry import claims, store  # noqa: E402

GRID = ["run", "--model", "beta_vae", "--betas", "1,4", "--seeds", "0,1", "--architecture", "mlp",
        "--batch-size", "16", "--eval-samples", "512", "--metrics", "mig", "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def one_ray_test_at_a_time():
    """The tests here count the machine's Ray processes: under pytest-xdist two of them at
    once would see each other's cluster, so they take turns (an exclusive file lock)."""
    import fcntl

    with open(os.path.join(tempfile.gettempdir(), "vaebench-ray-tests.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ray_processes() -> set[int]:
    """Pids of the processes on this machine that belong to a Ray cluster (raylet, GCS,
    workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        if any(word in cmd for word in ("raylet", "gcs_server", "ray::", "default_worker.py", "ray/_private/",
                                        "ray/dashboard", "ray/autoscaler")):
            found.add(int(entry))
    return found


def attempts(registry: Path, run_id: str) -> list[dict]:
    try:
        return store.read_attempts(str(registry), run_id)
    except store.RegistryError:
        return []


def test_a_grid_on_ray_records_what_a_local_grid_records(tmp_path):
    local = run_vaebench(*GRID, "--steps", "30", "--registry", str(tmp_path / "local"), "--json")
    assert local.returncode == 0, local.stderr
    on_ray = run_vaebench(*GRID, "--steps", "30", "--registry", str(tmp_path / "ray"), "--json", "--executor", "ray")
    assert on_ray.returncode == 0, on_ray.stderr
    expected = {r["run_id"]: r for r in json.loads(local.stdout)}
    got = json.loads(on_ray.stdout)
    assert len(expected) == 4 and sorted(r["run_id"] for r in got) == sorted(expected)
    for record in got:
        assert record["status"] == "ok", record["error"]
        assert record["final_loss"] == pytest.approx(expected[record["run_id"]]["final_loss"], rel=1e-5)
        assert [a["status"] for a in attempts(tmp_path / "ray", record["run_id"])] == ["ok"]
    manifests = list((tmp_path / "ray" / "grids").glob("*.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["executor"] == "ray"


def test_a_killed_ray_worker_leaves_a_failed_record_and_resume_finishes_the_grid(tmp_path):
    registry = tmp_path / "reg"
    before = ray_processes()
    args = [*GRID, "--steps", "100", "--checkpoint-every", "20", "--registry", str(registry), "--executor", "ray"]
    code = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
    driver = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        held: list = []

        def a_worker_trains() -> bool:
            held[:] = [c for c in claims.claims_of(str(registry)) if c.pid and c.pid != driver.pid]
            return bool(held) or driver.poll() is not None

        wait_until(a_worker_trains, 240, "a Ray worker to claim a point")
        assert held, driver.communicate()[1][-2000:]
        victim = held[0]
        os.kill(victim.pid, signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode in (0, 1), err[-2000:]
    killed = attempts(registry, victim.run_id)
    assert all(a["status"] != "ok" for a in killed)
    assert any("Ray worker died" in (a["error"] or "") for a in killed), (victim, killed, err[-3000:])
    # Nothing of that cluster is left running once the driver has shut it down.
    wait_until(lambda: not (ray_processes() - before), 60, "the Ray cluster's processes to exit")

    resumed = run_vaebench(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_ids = {p.name.split(".")[0] for p in (registry / "runs").glob("*.parquet")}
    assert len(run_ids) == 4
    for run_id in run_ids:
        statuses = [a["status"] for a in attempts(registry, run_id)]
        assert statuses.count("ok") == 1 and statuses[-1] == "ok", (run_id, statuses)
    wait_until(lambda: not (ray_processes() - before), 60, "the Ray cluster's processes to exit")


@pytest.mark.parametrize("flag, value, says", [("--num-cpus", "0", "--num-cpus must be > 0"),
                                               ("--per", "xyz", "--per must be one of point, group")])
def test_bad_ray_options_are_one_line_and_exit_2(cli, tmp_path, flag, value, says):
    before = ray_processes()
    result = cli(*GRID, "--steps", "30", "--registry", str(tmp_path / "reg"), "--executor", "ray", flag, value)
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.output
    assert not (tmp_path / "reg" / "runs").exists() or not list((tmp_path / "reg" / "runs").iterdir())
    assert not (ray_processes() - before)


def test_status_sees_a_running_ray_grid_and_cancel_stops_its_driver(tmp_path):
    """From another process while the grid trains: ``status`` shows its points (from the
    manifest written at submission; before, only once the whole grid had ended) with none
    called lost, and ``cancel`` stops the driver (SIGTERM, as its Ctrl-C), which cancels its
    tasks and stops the cluster it started; then ``status`` records each unfinished point."""
    registry = tmp_path / "reg"
    before = ray_processes()
    code = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
    driver = subprocess.Popen([sys.executable, "-c", code, *GRID, "--steps", "2000", "--registry", str(registry),
                               "--executor", "ray"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: bool(claims.claims_of(str(registry))) or driver.poll() is not None, 240,
                   "a Ray worker to claim a point")
        workers = {c.pid for c in claims.claims_of(str(registry))}
        during = run_vaebench("status", "--registry", str(registry), "--json")
        assert during.returncode == 0, during.stderr
        states = [p["state"] for p in json.loads(during.stdout)["points"]]
        assert len(states) == 4 and "training" in states and "lost" not in states, during.stdout
        cancelled = run_vaebench("cancel", "--registry", str(registry))
        assert cancelled.returncode == 0, cancelled.stderr
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, err[-2000:]
    assert workers and all(store.pid_dead(pid) for pid in workers)
    wait_until(lambda: not (ray_processes() - before), 60, "the Ray cluster's processes to exit")
    assert not any(a["status"] == "ok" for p in (registry / "runs").glob("*.parquet")
                   for a in attempts(registry, p.name.split(".")[0]))
    after = run_vaebench("status", "--registry", str(registry), "--json")
    points = json.loads(after.stdout)["points"]
    assert [p["state"] for p in points] == ["recorded"] * 4, after.stdout
    assert all(p["status"] == "failed" for p in points), after.stdout


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tmp_path):
    """``ray.init`` retries an address nobody answers at for minutes; the grid stops at once."""
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_vaebench(*GRID, "--steps", "30", "--registry", str(tmp_path / "reg"), "--executor", "ray",
                          "--ray-address", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --executor ray: --ray-address 127.0.0.1:{port}: no Ray cluster answers there "
        "(ConnectionRefusedError: Connection refused)"]
    assert not (tmp_path / "reg").exists()


def test_detach_is_refused_by_an_executor_whose_tasks_stop_with_it(cli, tmp_path):
    result = cli(*GRID, "--steps", "30", "--registry", str(tmp_path / "reg"), "--executor", "ray", "--detach")
    assert result.exit_code == 2 and "--detach: the ray executor's tasks stop with this command" in result.output
    assert not (tmp_path / "reg").exists()


def test_without_ray_the_executor_says_what_to_install(tmp_path):
    """Ray made unimportable (a ``ray`` package first on the path that raises ImportError,
    as an absent one does): one line naming the extra, exit 2, nothing recorded. ~3 s."""
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n", encoding="utf-8")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    result = run_vaebench(*GRID, "--steps", "30", "--registry", str(tmp_path / "reg"), "--executor", "ray",
                          env_extra={"PYTHONPATH": path})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --executor ray: Ray is not installed; install it with: pip install 'vaebench[ray]'"]
    assert not (tmp_path / "reg").exists() or not any((tmp_path / "reg").rglob("*.parquet"))
