"""The registry under faults: killed writers, untrustworthy record files, registries moved
or copied, a full disk. Real processes, real files, real failing writes (RLIMIT_FSIZE
in a child process, or a full tmpfs where this runs as root); no mocks."""

from __future__ import annotations

import datetime
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import TINY
from test_registry import make_record

from vaebench.registry import store
from vaebench.registry.query import leaderboard, open_runs, recorded_status
from vaebench.registry.schema import RECORD_SCHEMA, SCHEMA_VERSION
from vaebench.registry.store import RegistryError, read_record, write_record

#: A real grid, as cheap as it gets: conv β-VAE, a few steps, MIG on a few hundred observations.
CHEAP = ["--steps", "10", "--batch-size", "16", "--eval-samples", "300", "--device", "cpu", "--threads", "1",
         "--metrics", "mig", "--strategy", "sequential"]


def _vaebench(*args: object, fsize: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``vaebench ARGS`` in a fresh interpreter; with ``fsize``, no file it writes may grow
    beyond that many bytes (RLIMIT_FSIZE; SIGXFSZ ignored, so such a write fails with EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    code = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if fsize is not None else None)


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------- 5: temporary files of dead writers


def test_temporary_files_of_dead_writers_are_stale_and_live_ones_kept(tmp_path: Path) -> None:
    """Dead pid on this host, a zombie, or older than an hour: stale. A live writer's file,
    another host's recent file and an old-format name (no host) that is recent: kept."""
    runs = tmp_path / "runs"
    runs.mkdir()
    host, rid = store.this_host(), "ab" * 8
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, not reaped: a zombie
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{zombie.pid}").exists() and b") Z" not in Path(f"/proc/{zombie.pid}/stat").read_bytes():
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        dead = _dead_pid()

        def temp(name: str, age: float = 0.0) -> Path:
            path = runs / name
            path.write_bytes(b"PAR1 half a record")
            if age:
                then = time.time() - age
                os.utime(path, (then, then))
            return path

        stale = [
            temp(f".{rid}.{dead}.{host}.0123abcd.parquet.partial"),
            temp(f".{rid}.{zombie.pid}.{host}.0123abcd.parquet.partial"),
            temp(f".probe.{dead}.{host}.89abcdef.partial"),
            temp(f".{rid}.{dead}.elsewhere.example.org.0123abcd.parquet.partial", age=2 * 3600),
            temp(f".{rid}.{dead}.0123abcd.parquet.partial", age=2 * 3600),  # an older version's name
        ]
        kept = [
            temp(f".{rid}.{os.getpid()}.{host}.0123abcd.parquet.partial"),  # a live writer (this process)
            temp(f".{rid}.{dead}.elsewhere.example.org.4567abcd.parquet.partial"),  # pid not checkable here
            temp(f".{rid}.{dead}.fedcba98.parquet.partial"),  # host unknown, recent
            temp(".notes.partial", age=2 * 3600),  # not a writer's name
        ]
        record = write_record(tmp_path, make_record())
        assert store.stale_temporaries(tmp_path) == sorted(stale)
        assert store.check_writable(tmp_path) == sorted(stale)
    finally:
        zombie.wait()
    assert sorted(runs.iterdir()) == sorted([*kept, record])
    assert store.check_writable(tmp_path) == []


_WRITER = """
import sys
import numpy as np
from vaebench.registry.store import write_record
i, big = int(sys.argv[2]), np.full(200_000, 0.5)  # ~1.6 MB a record: most of each write is spent on its file
while True:
    write_record(sys.argv[1], {"run_id": f"{i:016x}", "status": "ok", "model": "m", "kl_per_dim": big})
    i += 1
"""


def test_a_killed_writer_leaves_a_temporary_file_that_is_found_stale(tmp_path: Path) -> None:
    """kill -9 a real writer while it writes records until one leaves its temporary file
    (each write is mostly spent writing and fsyncing that file); the file is stale at once,
    removed by the next writer's check, and every record there is readable."""
    leftovers: list[Path] = []
    for attempt in range(20):
        before = len(list((tmp_path / "runs").glob("*.parquet")))
        # each attempt's writer starts at its own run id, so its two new records are counted
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(attempt << 32)])
        try:
            deadline = time.monotonic() + 120
            while len(list((tmp_path / "runs").glob("*.parquet"))) < before + 2:
                assert time.monotonic() < deadline and writer.poll() is None, "the writer wrote nothing"
                time.sleep(0.01)
            time.sleep(random.uniform(0.0, 0.1))
        finally:
            writer.kill()
            writer.wait()
        leftovers = sorted((tmp_path / "runs").glob(".*.partial"))
        if leftovers:
            break
    print(f"kills until one hit a write: {attempt + 1}")
    assert leftovers, "20 kills, none during a write"
    assert leftovers[0].name.startswith(".") and f".{writer.pid}.{store.this_host()}." in leftovers[0].name
    assert store.stale_temporaries(tmp_path) == leftovers
    assert store.check_writable(tmp_path) == leftovers
    assert not list((tmp_path / "runs").glob(".*.partial"))
    result = leaderboard(tmp_path, by=["model"])
    assert result.skipped == [] and result.table.to_pylist()[0]["n"] == 0  # no metrics, but every file a run
    assert len(recorded_status(tmp_path)) == len(list((tmp_path / "runs").glob("*.parquet")))


# ------------------------------------------------------------- 9: records checked when read


def _grid(root: Path) -> list[dict]:
    records = [make_record(beta=beta, seed=seed, metrics={"mig": 0.1 * beta + 0.01 * seed})
               for beta in (1.0, 4.0) for seed in (0, 1, 2)]
    for record in records:
        write_record(root, record)
    return records


def _raw_record(root: Path, name: str, schema: pa.Schema = RECORD_SCHEMA, **values: object) -> Path:
    """A record file written around ``write_record``'s checks, as a hand or another tool would."""
    row = {n: None for n in schema.names} | make_record() | {"schema_version": SCHEMA_VERSION} | values
    for key in ("metrics", "environment", "artifacts"):
        row[key] = list(row[key].items()) if row[key] is not None else None
    path = root / "runs" / name
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
    return path


def test_a_phantom_record_is_skipped_and_report_still_works(tmp_path: Path, cli) -> None:
    _grid(tmp_path)
    phantom = tmp_path / "runs" / "00000000dead.parquet"
    pq.write_table(pa.table({"x": [1]}), phantom)  # one row, no run column
    result = leaderboard(tmp_path, by=["model", "beta"])
    assert result.skipped == [(phantom, "no run_id")]
    rows = result.table.to_pylist()
    assert [(r["model"], r["beta"], r["n"]) for r in rows] == [("beta_vae", 4.0, 3), ("beta_vae", 1.0, 3)]
    assert len(recorded_status(tmp_path)) == 6
    with pytest.raises(RegistryError, match="invalid run record .*00000000dead.parquet: no run_id"):
        read_record(tmp_path, "00000000dead")
    out = tmp_path / "report"
    res = cli("report", "--out", out, "--registry", tmp_path)
    assert res.exit_code == 0, res.output
    assert "00000000dead.parquet" in res.stderr and "no run_id" in res.stderr
    assert "6 runs: 6 ok" in res.stdout and (out / "index.html").is_file()


def test_a_compare_that_fails_still_says_which_record_files_were_left_out(tmp_path: Path, cli) -> None:
    """A selection that matches nothing may be explained by a record file left out: the
    warning comes before the one-line error (the API adds it to the error as a note)."""
    _grid(tmp_path)
    phantom = tmp_path / "runs" / "00000000dead.parquet"
    pq.write_table(pa.table({"x": [1]}), phantom)
    res = cli("compare", "beta=99", "beta=4", "--registry", tmp_path)
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert "00000000dead.parquet" in lines[0] and "warning" in lines[0] and lines[-1].startswith("error:"), lines


def test_a_record_with_text_where_a_number_belongs_is_skipped(tmp_path: Path, cli) -> None:
    _grid(tmp_path)
    schema = RECORD_SCHEMA.set(RECORD_SCHEMA.get_field_index("beta"), pa.field("beta", pa.string()))
    bad = _raw_record(tmp_path, "00000000beef.parquet", schema, run_id="00000000beef", beta="4",
                      metrics={"mig": 99.0})
    result = leaderboard(tmp_path, by=["model", "beta"])
    assert [p for p, _ in result.skipped] == [bad]
    assert "column 'beta' is string, expected double" in result.skipped[0][1]
    assert pa.types.is_float64(result.table.schema.field("beta").type)
    assert result.table.to_pylist()[0]["mean"] == pytest.approx(0.41)  # β = 4, not the "mig 99" file
    res = cli("leaderboard", "--by", "model,beta", "--registry", tmp_path, "--json")
    assert res.exit_code == 0 and "00000000beef.parquet" in res.stderr
    assert [row["beta"] for row in json.loads(res.stdout)] == [4.0, 1.0]
    res = cli("show", "00000000beef", "--registry", tmp_path)
    assert res.exit_code == 2 and "invalid run record" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # a narrower type of the same kind is a record (an int β, an int32 seed)
    schema = RECORD_SCHEMA.set(RECORD_SCHEMA.get_field_index("beta"), pa.field("beta", pa.int64()))
    _raw_record(tmp_path, "00000000cafe.parquet", schema, run_id="00000000cafe", beta=8, metrics={"mig": 0.9})
    rows = leaderboard(tmp_path, by=["model", "beta"]).table.to_pylist()
    assert (rows[0]["beta"], rows[0]["mean"]) == (8.0, 0.9)
    assert read_record(tmp_path, "00000000cafe")["beta"] == 8


def test_a_record_copied_under_another_name_counts_once(tmp_path: Path) -> None:
    records = _grid(tmp_path)
    (original,) = (tmp_path / "runs").glob(f"{records[0]['run_id']}.*.parquet")
    copy = tmp_path / "runs" / "0000-backup.parquet"  # sorts before the original
    shutil.copyfile(original, copy)
    result = leaderboard(tmp_path, by=["model", "beta"])
    assert [(r["beta"], r["n"], r["seeds"]) for r in result.table.to_pylist()] == [(4.0, 3, [0, 1, 2]), (1.0, 3, [0, 1, 2])]
    assert result.skipped == [(copy, f"duplicate of {original.name} (same run_id {records[0]['run_id']})")]
    con, skipped = open_runs(tmp_path)
    try:
        assert con.sql("SELECT count(*), count(DISTINCT run_id) FROM runs").fetchall() == [(6, 6)]
    finally:
        con.close()


TARGETS = """
[[target]]
name = "beta4 MIG"
select = { model = "beta_vae", beta = 4 }
metric = "mig"
threshold = 0.3
"""


def test_check_fails_while_record_files_are_left_out(tmp_path: Path, cli) -> None:
    _grid(tmp_path)
    targets = tmp_path / "targets.toml"
    targets.write_text(TARGETS)
    assert cli("check", "--targets", targets, "--registry", tmp_path).exit_code == 0
    bad = tmp_path / "runs" / "0badbad0.parquet"
    bad.write_bytes(np.random.default_rng(0).bytes(512))
    res = cli("check", "--targets", targets, "--registry", tmp_path)
    assert res.exit_code == 1
    assert "0badbad0.parquet" in res.stderr and "1 record file(s) left out" in res.stderr
    assert "--allow-unreadable" in res.stderr
    res = cli("check", "--targets", targets, "--registry", tmp_path, "--allow-unreadable", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["verdict"] == "pass" and "checked without them" in res.stderr


def test_resume_says_which_points_it_trains_again_for_an_unreadable_record(tmp_path: Path, cli) -> None:
    registry = tmp_path / "reg"
    plan = cli("run", "--betas", "1,4", *TINY, "--registry", registry, "--dry-run", "--json")
    ids = [point["run_id"] for point in json.loads(plan.stdout)["runs"]]
    (registry / "runs").mkdir(parents=True)
    write_record(registry, make_record(run_id=ids[0]))
    (registry / "runs" / f"{ids[1]}.parquet").write_bytes(b"PAR1 cut short by a full disk")
    res = cli("run", "--betas", "1,4", *TINY, "--registry", registry, "--resume", "--dry-run")
    assert res.exit_code == 0, res.output
    assert f"{ids[1]}.parquet" in res.stderr
    assert f"1 grid point(s) have an unreadable record and are trained again: {ids[1]}" in res.stderr


def test_the_api_warns_which_points_it_trains_again_for_an_unreadable_record(tmp_path: Path) -> None:
    """``api.run_grid(resume=True)`` says what ``vaebench run --resume`` says: the record file
    it left out and the point it trains again (an ``UnreadableRecordWarning`` each)."""
    from vaebench import api

    small = dict(steps=5, batch_sizes=16, eval_samples=300, device="cpu", threads=1, architectures="mlp",
                 strategy="sequential", metrics=["kl"])
    registry = tmp_path / "reg"
    ids = [s.run_id for s in api.plan_grid("beta_vae", betas=[1, 4], steps=5, batch_sizes=16, architectures="mlp")]
    (registry / "runs").mkdir(parents=True)
    write_record(registry, make_record(run_id=ids[0]))
    (registry / "runs" / f"{ids[1]}.parquet").write_bytes(b"PAR1 cut short by a full disk")
    with pytest.warns(api.UnreadableRecordWarning) as caught:
        result = api.run_grid("beta_vae", betas=[1, 4], registry=str(registry), resume=True, **small)
    lines = [str(w.message) for w in caught if issubclass(w.category, api.UnreadableRecordWarning)]
    assert any(f"{ids[1]}.parquet" in line for line in lines), lines
    assert f"1 grid point(s) have an unreadable record and are trained again: {ids[1]}" in lines
    assert [r["run_id"] for r in result.records] == [ids[1]] and [s.run_id for s in result.skipped] == [ids[0]]


def test_a_report_that_fails_half_way_leaves_no_output_folder(tmp_path: Path) -> None:
    """Writing the first figure fails (a real EFBIG): one line, exit 2, and neither the
    output folder nor its staging folder is left; an existing folder keeps its files."""
    registry = tmp_path / "reg"
    _grid(registry)
    out = tmp_path / "report"
    res = _vaebench("report", "--out", out, "--registry", registry, fsize=4096)
    assert res.returncode == 2, res.stderr
    assert "cannot write to --out" in res.stderr and "File too large" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg"]
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = _vaebench("report", "--out", out, "--registry", registry, fsize=4096)
    assert res.returncode == 2 and _files(out) == ["notes.txt"]
    res = _vaebench("report", "--out", out, "--registry", registry)
    assert res.returncode == 0, res.stderr
    assert {"notes.txt", "index.html", "report.md", "figures/beta_tradeoff.png"} <= set(_files(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg", "report"]


# ------------------------------------------------------------- 10: paths relative to the registry


def _rewrite(registry: Path, run_id: str, **artifacts: str) -> None:
    """A hand-edited record: a new attempt (the latest) with other artifact paths."""
    record = read_record(registry, run_id)
    write_record(registry, record | {"artifacts": record["artifacts"] | artifacts, "attempt": None,
                                     "finished_at": datetime.datetime.now(datetime.timezone.utc)})


def test_a_moved_or_copied_registry_uses_its_own_artifacts_only(tmp_path: Path, cli) -> None:
    first = tmp_path / "reg"
    res = cli("run", "--betas", "4", *CHEAP, "--registry", first, "--json")
    assert res.exit_code == 0, res.output
    (record,) = json.loads(res.stdout)
    rid = record["run_id"]
    att = record["attempt"]
    assert record["artifacts"]["checkpoint"] == f"artifacts/{rid}/{att}/model.safetensors"
    assert all(v.startswith(f"artifacts/{rid}/{att}/") for v in read_record(first, rid)["artifacts"].values())

    moved = tmp_path / "regY"
    first.rename(moved)
    res = cli("samples", rid[:8], "--n", "4", "--registry", moved)
    assert res.exit_code == 0, res.output
    home = moved / "artifacts" / rid / att  # outputs go beside the checkpoint they came from
    assert res.stdout.split() == [str(home.resolve() / "samples.png")]
    res = cli("continue", rid, "--steps", "5", "--device", "cpu", "--threads", "1", "--eval-samples", "300",
              "--registry", moved, "--json")
    assert res.exit_code == 0, res.output
    child = json.loads(res.stdout)
    assert child["steps_done"] == 15 and child["artifacts"]["checkpoint"] == (
        f"artifacts/{child['run_id']}/{child['attempt']}/model.safetensors")

    copy = tmp_path / "regZ"
    shutil.copytree(moved, copy)
    before = _snapshot(moved)
    assert cli("samples", rid, "--n", "9", "--seed", "3", "--registry", copy).exit_code == 0
    # an older record's absolute paths, into the registry before it moved
    _rewrite(copy, rid, **{k: str(first / v) for k, v in read_record(copy, rid)["artifacts"].items()})
    res = cli("traverse", rid, "--steps", "2", "--dims", "0", "--registry", copy)
    assert res.exit_code == 0, res.output
    assert res.stdout.split()[0] == str((copy / "artifacts" / rid / att).resolve() / "traversal.png")
    assert _snapshot(moved) == before  # the copy read and wrote only its own files
    assert (copy / "artifacts" / rid / att / "samples.png").read_bytes() != before[f"artifacts/{rid}/{att}/samples.png"]

    # a hand-edited checkpoint path out of the registry is not followed
    outside = tmp_path / "outside"
    shutil.copytree(copy / "artifacts" / rid / att, outside)
    (copy / "artifacts" / rid / att / "model.safetensors").unlink()
    _rewrite(copy, rid, checkpoint=str(outside / "model.safetensors"))
    kept = _snapshot(outside)
    for command in (("traverse", rid), ("samples", rid), ("continue", rid, "--steps", "5")):
        res = cli(*command, "--registry", copy)
        assert res.exit_code == 2 and f"has no checkpoint in {copy / 'artifacts' / rid}" in res.stderr, res.output
    _rewrite(copy, rid, checkpoint="../../../outside/model.safetensors")
    assert cli("samples", rid, "--registry", copy).exit_code == 2
    assert _snapshot(outside) == kept


def _snapshot(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in _files(root)}


def test_artifact_path_resolves_inside_the_run_directory_only(tmp_path: Path) -> None:
    rid = "0123456789abcdef"
    home = tmp_path / "artifacts" / rid
    (home / "sub").mkdir(parents=True)
    (home / "model.safetensors").write_bytes(b"x")
    (home / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    (home / "link.png").symlink_to(tmp_path / "secret")
    real = home.resolve()
    for recorded, found in [
        (f"artifacts/{rid}/model.safetensors", real / "model.safetensors"),
        (f"/old/place/reg/artifacts/{rid}/sub/a.png", real / "sub" / "a.png"),
        (f"old-reg/artifacts/{rid}/model.safetensors", real / "model.safetensors"),
        ("/anywhere/model.safetensors", real / "model.safetensors"),  # by name, in the run's directory
        (f"artifacts/{rid}/../../secret", None),
        ("../secret", None),
        (str(tmp_path / "secret"), None),
        (f"artifacts/{rid}/link.png", None),  # a link out of the registry
        (f"artifacts/{rid}", None),
        ("", None),
    ]:
        assert store.artifact_path(tmp_path, rid, recorded) == found, recorded
    assert store.artifact_path(tmp_path, "../x", "model.safetensors") is None
    assert store.artifact_refs(tmp_path, rid, {"checkpoint": str(home / "model.safetensors"), "x": "/else/y"}) == {
        "checkpoint": f"artifacts/{rid}/model.safetensors", "x": "/else/y"}


# ------------------------------------------------------------- 11: a full disk


def test_a_full_disk_records_what_it_can_and_leaves_no_orphans(tmp_path: Path) -> None:
    """No file may pass 16 KiB: no checkpoint (2 MB) and no record (~20 kB) can be written.
    Both grid points are still trained and tried, nothing of them is left, exit 1; the
    temporary file of a writer that died before is removed and counted."""
    registry = tmp_path / "reg"
    (registry / "runs").mkdir(parents=True)
    dead = registry / "runs" / f".{'cd' * 8}.{_dead_pid()}.{store.this_host()}.0123abcd.parquet.partial"
    dead.write_bytes(b"PAR1")
    res = _vaebench("run", "--betas", "1,4", *CHEAP, "--registry", registry, "--json", fsize=16 * 1024)
    assert res.returncode == 1, res.stderr
    records = json.loads(res.stdout)
    assert len(records) == 2 and all(r["status"] == "failed" for r in records)
    for r in records:
        assert "checkpoint not written (" in r["error"] and "record not written (" in r["error"]
        assert "File too large" in r["error"] and r["metrics"]["mig"] >= 0  # trained and scored
    assert "2 run(s) not recorded" in res.stderr and "removed 1 temporary record file(s)" in res.stderr
    assert _files(registry) == []  # no record, no temporary file, no artifact


def test_a_checkpoint_that_cannot_be_written_keeps_the_metrics(tmp_path: Path) -> None:
    """Files up to 64 KiB: the record fits, the checkpoint does not. The run is recorded ok
    with its metrics and a note, its half-written artifacts are removed, exit 1."""
    registry = tmp_path / "reg"
    res = _vaebench("run", "--betas", "4", *CHEAP, "--registry", registry, "--json", fsize=64 * 1024)
    assert res.returncode == 1, res.stderr
    (record,) = json.loads(res.stdout)
    disk = read_record(registry, record["run_id"])
    assert disk["status"] == "ok" and disk["metrics"]["mig"] == record["metrics"]["mig"]
    assert "checkpoint not written (" in disk["error"] and "File too large" in disk["error"]
    assert disk["artifacts"] == {}
    assert _files(registry) == [f"runs/{record['run_id']}.{record['attempt']}.parquet"]
    assert "1 run(s) recorded without their checkpoint" in res.stderr
    (row,) = leaderboard(registry, by=["model"]).table.to_pylist()
    assert row["n"] == 1 and row["mean"] == pytest.approx(record["metrics"]["mig"])


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_runs_directory_mid_grid(tmp_path: Path) -> None:
    """runs/ on a 64 KiB tmpfs with 16 KiB left: the start-up probe fits, no record does
    (ENOSPC), while artifacts (elsewhere) are written whole. Every point is trained and
    tried, its artifacts removed, exit 1 with one line per problem."""
    registry = tmp_path / "reg"
    runs = registry / "runs"
    runs.mkdir(parents=True)
    if not _mount_tmpfs(runs, "64k"):
        pytest.skip("needs root and tmpfs to fill a file system")
    try:
        (runs / "ballast").write_bytes(b"\0" * 48 * 1024)
        res = _vaebench("run", "--betas", "1,4", *CHEAP, "--registry", registry, "--json")
        files = _files(registry)
    finally:
        subprocess.run(["umount", str(runs)], check=True)
    assert res.returncode == 1, res.stderr
    records = json.loads(res.stdout)
    assert len(records) == 2
    assert all("No space left on device" in r["error"] and r["status"] == "failed" for r in records)
    assert "2 run(s) not recorded (cannot write to registry" in res.stderr
    assert files == ["runs/ballast"]  # artifacts/<id>/ (checkpoint, figures: MBs) removed


def test_a_rerun_keeps_the_earlier_attempts_checkpoint(tmp_path: Path, cli) -> None:
    """Every attempt keeps its own artifacts (artifacts/<run_id>/<attempt>/): a rerun of the
    same spec neither overwrites nor removes the checkpoint an earlier record names."""
    registry = tmp_path / "reg"
    first = json.loads(cli("run", "--betas", "4", *CHEAP, "--registry", registry, "--json").stdout)[0]
    second = json.loads(cli("run", "--betas", "4", *CHEAP, "--registry", registry, "--json").stdout)[0]
    assert first["run_id"] == second["run_id"] and first["attempt"] != second["attempt"]
    paths = [registry / r["artifacts"]["checkpoint"] for r in (first, second)]
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)
    for record in (first, second):  # each attempt reads its own checkpoint
        res = cli("samples", f"{record['run_id']}.{record['attempt']}", "--n", "4", "--registry", registry)
        assert res.exit_code == 0 and res.stdout.split() == [str(paths[[first, second].index(record)].parent.resolve()
                                                                  / "samples.png")], res.output
