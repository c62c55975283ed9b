"""registry compact / verify / info / gc / merge and export: real files, real DuckDB, a real
(loopback) S3 server; synthetic records written with store.write_record."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vaebench.harness.cli import app
from vaebench.registry import compaction, maintenance, query, sharing, store
from vaebench.registry.query import leaderboard, open_runs

T0 = dt.datetime(2024, 5, 1, 12, 30, 15, tzinfo=dt.timezone.utc)
_counter = iter(range(1, 1_000_000))
runner = CliRunner()


def make_record(**overrides: Any) -> dict[str, Any]:
    n = next(_counter)
    rec: dict[str, Any] = {
        "run_id": f"{n:012x}", "status": "ok", "model": "beta_vae", "backend": "torch", "dataset": "dsprites",
        "dataset_variant": "full", "beta": 4.0, "latent_dim": 10, "seed": 0, "steps": 100,
        "metrics": {"mig": 0.25, "sap": 0.125}, "history": [{"step": 0, "loss": 1.5}],
        "started_at": T0, "finished_at": T0 + dt.timedelta(seconds=42),
    }
    rec.update(overrides)
    return rec


def write_old(root: Path, rec: dict[str, Any]) -> Path:
    """A record as written before attempts were kept: ``<run_id>.parquet``, no attempt column."""
    path = store.write_record(root, rec)
    table = pq.read_table(path)
    table = table.drop_columns(["attempt"])
    old = Path(path).with_name(f"{rec['run_id']}.parquet")
    pq.write_table(table, old)
    os.unlink(path)
    return old


def populate(root: Path, n: int) -> int:
    """``n`` runs over 2 datasets x 2 models (one with a '/' in its name), a third of them with
    a second attempt, two older files without an attempt; returns the number of records."""
    records = 0
    for i in range(n):
        rec = make_record(model=("beta_vae", "tc/vae")[i % 2], dataset=("dsprites", "shapes3d")[i % 3 % 2],
                          seed=i, metrics={"mig": i / n})
        if i < 2:
            write_old(root, rec)
            records += 1
            continue
        store.write_record(root, rec)
        records += 1
        if i % 3 == 0:
            store.write_record(root, {**rec, "finished_at": rec["finished_at"] + dt.timedelta(hours=1),
                                      "started_at": rec["started_at"] + dt.timedelta(hours=1), "attempt": None})
            records += 1
    return records


def counts(root: Path | str) -> tuple[int, int]:
    """(rows, distinct (run_id, attempt)) of every attempt; opens again when a file vanished
    after open_runs returned (as leaderboard does)."""
    for _ in range(20):
        con, skipped = open_runs(root, attempts="all")
        try:
            assert not skipped, skipped
            ((rows, distinct),) = con.sql(
                "SELECT count(*), count(DISTINCT (run_id, coalesce(attempt, ''))) FROM runs").fetchall()
            return rows, distinct
        except duckdb.IOException:
            continue
        finally:
            con.close()
    raise AssertionError("files kept vanishing")


# ----------------------------------------------------------------------------- compact


def test_compact_while_reading_sees_every_record_once(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    n = populate(root, 240)
    assert n > 300 and counts(root) == (n, n)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(counts(root))
        except BaseException as exc:  # noqa: BLE001 - a reader must never fail during compaction
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        while not seen and reader.is_alive():  # the reader is reading before compaction starts
            threading.Event().wait(0.01)
        first = compaction.compact(root)
        extra = [store.write_record(root, make_record(seed=1000 + i)) for i in range(5)]
        second = compaction.compact(root)  # merges the new files into the dsprites/beta_vae part
    finally:
        stop.set()
        reader.join(60)
    n += len(extra)
    assert errors == []  # no reader ever failed (a file removed between its check and the read)
    # never a record twice, never one missing: the count only grows, as the extra records are written
    assert seen and all(a == b and n - len(extra) <= a <= n for a, b in seen), set(seen)
    assert all(x[0] <= y[0] for x, y in zip(seen, seen[1:])), seen
    assert counts(root) == (n, n)
    assert first.records == n - len(extra) and len(first.written) == 4 and not first.left and not first.conflicts
    assert second.partitions == 1 and len(second.written) == 1 and len(second.removed) == 6  # 5 files + the old part
    # Only parts are left; the partition names are sanitised, the columns kept.
    assert [p for p in store.run_files(root) if not store.is_compacted(p)] == []
    parts = sorted(str(Path(p).relative_to(root / "runs" / "compacted").parent) for p in store.compacted_files(root))
    assert parts == ["dataset=dsprites/model=beta_vae", "dataset=dsprites/model=tc_vae",
                     "dataset=shapes3d/model=beta_vae", "dataset=shapes3d/model=tc_vae"]
    assert "tc/vae" in pq.read_table(next(p for p in store.compacted_files(root) if "tc_vae" in str(p))).column(
        "model").to_pylist()
    # Nothing new: nothing written. Older records keep their null attempt, readers still work.
    assert compaction.compact(root).written == []
    con, _ = open_runs(root, attempts="all")
    nulls = con.sql("SELECT count(*) FROM runs WHERE attempt IS NULL").fetchall()[0][0]
    con.close()
    assert nulls == 2
    board = leaderboard(root, metric="mig", by=("model", "dataset"))
    assert not board.skipped and sum(board.table.column("n").to_pylist()) == 240 + len(extra)
    some = pq.read_table(store.compacted_files(root)[0]).column("run_id")[0].as_py()
    assert len(store.read_attempts(root, some)) >= 1 and store.read_record(root, some)["run_id"] == some
    result = runner.invoke(app, ["show", some, "--registry", str(root), "--json"])
    assert result.exit_code == 0, result.output


def test_compact_keeps_conflicting_copies_and_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    rec = make_record()
    path = Path(store.write_record(root, rec))
    other = make_record(dataset="shapes3d")
    store.write_record(root, other)
    compaction.compact(root)
    # The same record id again, different content; and a corrupt file.
    store.write_record(root, {**rec, "attempt": path.name.split(".")[1], "seed": 99})
    (root / "runs" / "deadbeef0000.parquet").write_bytes(b"not parquet")
    result = compaction.compact(root)
    assert result.conflicts == [f"{rec['run_id']}.{path.name.split('.')[1]}"]
    assert {Path(p).name for p, _ in result.left} >= {"deadbeef0000.parquet", path.name}
    assert path.exists()  # nothing of the conflicting partition removed
    report = maintenance.verify(root, min_age=0)
    kinds = sorted({f.kind for f in report.problems})
    assert kinds == ["corrupt", "duplicate"]


# ----------------------------------------------------------------------------- verify, gc, info


def test_verify_gc_info(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    art = root / "artifacts"
    good = make_record(artifacts={"checkpoint": "artifacts/{}/model.safetensors"})
    good["artifacts"]["checkpoint"] = good["artifacts"]["checkpoint"].format(good["run_id"])
    (art / good["run_id"]).mkdir(parents=True)
    (art / good["run_id"] / "model.safetensors").write_bytes(b"x" * 10)
    store.write_record(root, good)
    for i in range(3):
        store.write_record(root, make_record(seed=i))
    compaction.compact(root)
    store.write_record(root, make_record())
    cli = ["--registry", str(root)]
    result = runner.invoke(app, ["registry", "verify", *cli, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True

    missing = make_record(artifacts={"plot": "artifacts/abc/gone.png"})
    store.write_record(root, missing)
    (art / "0123456789ab").mkdir()
    (art / "0123456789ab" / "model.safetensors").write_bytes(b"y")  # orphaned
    (art / "0123456789ab" / "partial").mkdir()
    (art / "0123456789ab" / "partial" / "state.safetensors").write_bytes(b"p")
    (art / "fedcba987654" / "partial").mkdir(parents=True)  # resumable
    (art / "fedcba987654" / "partial" / "state.safetensors").write_bytes(b"p")
    (art / "aaaaaaaaaaaa").mkdir()  # claimed: in training
    (art / "aaaaaaaaaaaa" / "figure.png").write_bytes(b"f")
    (root / "claims" / "aaaaaaaaaaaa").mkdir(parents=True)
    (root / "claims" / "aaaaaaaaaaaa" / "1.json").write_text("{}")
    stale = root / "runs" / f".{'ab' * 6}.999999999.{store.temporary_name('x').split('.')[3]}.0123abcd.parquet.partial"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    result = runner.invoke(app, ["registry", "verify", *cli, "--json", "--older-than", "0"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    problems = sorted(p["kind"] for p in data["problems"])
    assert problems == ["missing_artifact", "orphaned_artifacts", "stale_temporary"]  # (the dead claim comes below)
    notes = sorted(p["kind"] for p in data["notes"])
    assert notes == ["claimed", "resumable"]
    # Too recent to be orphaned with the default --older-than.
    assert "orphaned_artifacts" not in {f.kind for f in maintenance.verify(root).problems}
    # A stale claim (its writer, on this host, is dead) is a problem, and gc ends it.
    dead = root / "claims" / "bbbbbbbbbbbb" / "1.json"
    dead.parent.mkdir(parents=True)
    dead.write_text(json.dumps({"host": store.this_host(), "pid": 999999999, "pids": [999999999],
                                "renewed": dt.datetime.now(dt.timezone.utc).isoformat(), "lease_seconds": 300}))
    report = maintenance.verify(root, min_age=0)
    assert [f.path for f in report.problems if f.kind == "stale_claim"] == [str(dead)]
    assert "aaaaaaaaaaaa" not in report.orphans  # its claim is live

    result = runner.invoke(app, ["registry", "gc", *cli, "--dry-run", "--older-than", "0"])
    assert result.exit_code == 0 and "would remove" in result.output and stale.exists()
    result = runner.invoke(app, ["registry", "gc", *cli, "--older-than", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not (art / "0123456789ab" / "model.safetensors").exists() and not dead.exists()
    assert (art / "0123456789ab" / "partial" / "state.safetensors").exists()
    assert (art / good["run_id"] / "model.safetensors").exists() and (art / "aaaaaaaaaaaa" / "figure.png").exists()
    kinds = {f.kind for f in maintenance.verify(root, min_age=0).problems}
    assert kinds == {"missing_artifact"}

    result = runner.invoke(app, ["registry", "info", *cli, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["records"] == 6 and data["runs"] == 6 and data["files"]["compacted"] == 1
    assert data["files"]["one_record"] == 2 and data["bytes"]["artifacts"] >= 10
    assert runner.invoke(app, ["registry", "info", *cli]).exit_code == 0
    bad = runner.invoke(app, ["registry", "verify", "--registry", "nosuch://x/y"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1


def test_an_attempt_folder_no_record_holds_is_orphaned_and_gc_removes_it(tmp_path: Path) -> None:
    """A rerun killed before its record leaves ``artifacts/<run_id>/<attempt>/`` (100+ MB of
    checkpoint) beside the run's recorded attempt: verify skipped any run with a record, so
    neither verify nor gc ever saw it."""
    root = tmp_path / "reg"
    rec = make_record(attempt="20261101T000000Z-aaaaaa")
    kept = root / "artifacts" / rec["run_id"] / rec["attempt"]
    kept.mkdir(parents=True)
    (kept / "model.safetensors").write_bytes(b"k")
    rec["artifacts"] = {"checkpoint": f"artifacts/{rec['run_id']}/{rec['attempt']}/model.safetensors"}
    store.write_record(root, rec)
    killed = root / "artifacts" / rec["run_id"] / "20261102T000000Z-bbbbbb"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"o" * 100)
    (killed / "training_state.safetensors").write_bytes(b"o")
    partial = root / "artifacts" / rec["run_id"] / "partial"  # the run's periodic checkpoint: never an attempt
    partial.mkdir()
    (partial / "state.safetensors").write_bytes(b"p")
    for f in (*killed.iterdir(), *partial.iterdir()):
        os.utime(f, (0, 0))
    report = maintenance.verify(root, min_age=60)
    orphaned = [f for f in report.problems if f.kind == "orphaned_artifacts"]
    assert [f.path for f in orphaned] == [str(killed)] and "2 file(s) of attempt 20261102T000000Z-bbbbbb" in orphaned[0].detail
    assert report.orphan_attempts == [f"{rec['run_id']}/20261102T000000Z-bbbbbb"]
    (killed / "figure.png").write_bytes(b"f")  # written just now: maybe a run finishing
    assert "orphaned_artifacts" not in {f.kind for f in maintenance.verify(root, min_age=60).problems}
    os.utime(killed / "figure.png", (0, 0))
    cli = ["--registry", str(root)]
    result = runner.invoke(app, ["registry", "gc", *cli, "--older-than", "60", "--json"])
    assert result.exit_code == 0, result.output
    assert not killed.exists() and (kept / "model.safetensors").exists() and (partial / "state.safetensors").exists()
    assert maintenance.verify(root, min_age=0).ok


# ----------------------------------------------------------------------------- merge, export


def test_merge_every_attempt_once_and_export(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    shared = make_record()
    store.write_record(here, shared)
    store.write_record(there, shared)  # another attempt of the same run
    old = make_record(dataset="shapes3d")
    write_old(there, old)
    with_art = make_record(artifacts={"checkpoint": "x"})
    store.write_record(there, with_art)
    run_art = there / "artifacts" / with_art["run_id"]
    (run_art / "partial").mkdir(parents=True)
    (run_art / "model.safetensors").write_bytes(b"m")
    (run_art / "partial" / "state.safetensors").write_bytes(b"p")
    compaction.compact(there)
    result = runner.invoke(app, ["registry", "merge", str(there), "--artifacts", "--registry", str(here), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["copied"] == 3 and data["artifact_files"] == 1
    assert (here / "artifacts" / with_art["run_id"] / "model.safetensors").read_bytes() == b"m"
    assert not (here / "artifacts" / with_art["run_id"] / "partial").exists()
    again = sharing.merge(here, there, artifacts=True)
    assert again["copied"] == 0 and again["present"] == 3 and again["artifact_files"] == 0
    assert counts(here) == (4, 4)
    assert store.read_record(here, old["run_id"])["attempt"] == sharing.derived_attempt(old)

    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"runs.{fmt}"
        result = runner.invoke(app, ["export", "--format", fmt, "--out", str(out), "--registry", str(here),
                                     "--attempts", "all"])
        assert result.exit_code == 0, result.output
        if fmt == "csv":
            table = pcsv.read_csv(out)
        elif fmt == "parquet":
            table = pq.read_table(out)
        else:
            lines = [json.loads(line) for line in out.read_text().splitlines()]
            assert len(lines) == 4 and lines[0]["metric.mig"] == 0.25 and "history" not in lines[0]
            continue
        assert table.num_rows == 4 and "metric.mig" in table.column_names and "history" not in table.column_names
    out = tmp_path / "one.csv"
    result = runner.invoke(app, ["export", "dataset=shapes3d", "--format", "csv", "--out", str(out),
                                 "--registry", str(here)])
    assert result.exit_code == 0 and pcsv.read_csv(out).num_rows == 1
    for args in (["--format", "xml"], ["--format", "csv", "beta=x"], ["--format", "csv", "--attempts", "some"]):
        bad = runner.invoke(app, ["export", *args, "--out", str(out), "--registry", str(here)])
        assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1, bad.output


# ----------------------------------------------------------------------------- remote


def test_remote_compact_verify_on_loopback_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    import boto3

    from vaebench.registry import location

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("VAEBENCH_S3_ENDPOINT_URL", raising=False)
        location.clear_cache()
        s3fs.S3FileSystem.clear_instance_cache()
        boto3.client("s3").create_bucket(Bucket="lab")
        root = "s3://lab/vaebench"
        n = 0
        for i in range(12):
            store.write_record(root, make_record(model=("beta_vae", "tc_vae")[i % 2], seed=i))
            n += 1
        assert counts(root) == (n, n)
        result = runner.invoke(app, ["registry", "compact", "--registry", root, "--json"])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.output)["written"]) == 2
        location.filesystem(root)[0].invalidate_cache()
        files = store.run_files(root)
        assert len(files) == 2 and all(store.is_compacted(p) and str(p).startswith("s3://") for p in files)
        assert counts(root) == (n, n)
        result = runner.invoke(app, ["registry", "verify", "--registry", root, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["records"] == n
        # An attempt folder no record holds (a rerun killed before its record): found and removed.
        fs = location.filesystem(root)[0]
        rec = make_record(attempt="20261101T000000Z-aaaaaa")
        held = f"lab/vaebench/artifacts/{rec['run_id']}/{rec['attempt']}/model.safetensors"
        orphan = f"lab/vaebench/artifacts/{rec['run_id']}/20261102T000000Z-bbbbbb/model.safetensors"
        rec["artifacts"] = {"checkpoint": held.removeprefix("lab/vaebench/")}
        fs.pipe(held, b"k")
        fs.pipe(orphan, b"o")
        store.write_record(root, rec)
        n += 1
        fs.invalidate_cache()
        report = maintenance.verify(root, min_age=0)
        assert report.orphan_attempts == [f"{rec['run_id']}/20261102T000000Z-bbbbbb"], report.findings
        maintenance.gc(root, report)
        fs.invalidate_cache()
        assert not fs.exists(orphan) and fs.exists(held)
        # A merge from the bucket into a local registry, and export from the bucket.
        assert sharing.merge(tmp_path / "local", root)["copied"] == n
        assert sharing.export_table(root).num_rows == n
    finally:
        location.clear_cache()
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
