"""Registry: real Parquet files in tmp_path, real DuckDB queries, no mocks."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vaebench.registry import query, store
from vaebench.registry.query import leaderboard, open_runs, recorded_status
from vaebench.registry.schema import RECORD_SCHEMA, SCHEMA_VERSION
from vaebench.registry.store import RegistryError, read_record, run_files, write_record

T0 = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)
_counter = iter(range(1, 1_000_000))


def make_record(**overrides: Any) -> dict[str, Any]:
    """A complete, valid record; keyword arguments override fields."""
    n = next(_counter)
    rec: dict[str, Any] = {
        "run_id": f"{n:012x}",
        "status": "ok",
        "model": "beta_vae",
        "backend": "torch",
        "dataset": "dsprites",
        "dataset_variant": "full",
        "beta": 4.0,
        "latent_dim": 10,
        "seed": 0,
        "steps": 100,
        "metrics": {"mig": 0.25, "sap": 0.125},
        "environment": {"python": "3.11", "torch": "2.3.0"},
        "artifacts": {"checkpoint": "artifacts/x/model.safetensors"},
        "history": [
            {"step": 0, "loss": 100.5, "recon": 90.25, "kl": 10.25, "capacity": None},
            {"step": 50, "loss": 60.0, "recon": 55.0, "kl": 5.0, "capacity": 0.0},
        ],
        "kl_per_dim": [0.5, 0.25, 0.0],
        "started_at": T0,
        "finished_at": T0 + dt.timedelta(seconds=42, microseconds=7),
    }
    rec.update(overrides)
    return rec


def visible_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "runs").iterdir())


# ----------------------------------------------------------------------- store


def test_round_trip(tmp_path: Path) -> None:
    rec = make_record(beta=0.1 + 0.2, lr=1e-4, compiled=True, error=None)
    path = write_record(tmp_path, rec)
    back = read_record(tmp_path, rec["run_id"])
    assert path == tmp_path / "runs" / f"{rec['run_id']}.{back['attempt']}.parquet"
    assert back["attempt"].startswith("20240501T123015Z-")  # the attempt of its started_at
    assert set(back) == set(RECORD_SCHEMA.names)
    for key, value in rec.items():
        assert back[key] == value, key
    assert back["beta"] == 0.1 + 0.2  # exact float, not rounded
    assert isinstance(back["metrics"], dict) and back["metrics"] == rec["metrics"]
    assert isinstance(back["environment"], dict)
    assert back["history"][1] == rec["history"][1]
    assert back["started_at"] == T0 and back["started_at"].tzinfo is not None
    assert back["schema_version"] == SCHEMA_VERSION
    assert back["capacity"] is None  # missing nullable field -> None
    # by unique prefix too, and via query.show
    assert query.show(tmp_path, rec["run_id"][:10]) == back


def test_nan_metric_round_trips(tmp_path: Path) -> None:
    rec = make_record(metrics={"mig": float("nan")}, final_loss=float("inf"))
    write_record(tmp_path, rec)
    back = read_record(tmp_path, rec["run_id"])
    assert math.isnan(back["metrics"]["mig"]) and back["final_loss"] == float("inf")


def test_atomic_write_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:  # records the names, then does the real thing
        seen.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    rec = make_record()
    write_record(tmp_path, rec)
    monkeypatch.undo()

    (src, dst), = seen
    assert Path(src).parent == Path(dst).parent == tmp_path / "runs"
    assert not fnmatch.fnmatch(Path(src).name, "*.parquet")
    assert visible_files(tmp_path) == [Path(dst).name]
    assert Path(dst).name.startswith(f"{rec['run_id']}.")


def test_a_rerun_keeps_every_attempt(tmp_path: Path) -> None:
    """Nothing is overwritten: each write of a run id is a new attempt beside the others;
    read_record takes the latest finished attempt (a later failure does not hide an ok one),
    RUN.ATTEMPT names one, read_attempts lists them oldest first."""
    rec = make_record(status="failed", error="boom", metrics={})
    write_record(tmp_path, {**rec, "attempt": "20240501T120000Z-aaaaaa"})
    write_record(tmp_path, {**rec, "status": "ok", "error": None, "metrics": {"mig": 0.5},
                            "attempt": "20240501T130000Z-bbbbbb", "finished_at": T0 + dt.timedelta(hours=1)})
    write_record(tmp_path, {**rec, "attempt": "20240501T140000Z-cccccc", "finished_at": T0 + dt.timedelta(hours=2)})
    run_id = rec["run_id"]
    assert visible_files(tmp_path) == [f"{run_id}.20240501T1{h}0000Z-{c * 6}.parquet" for h, c in
                                       (("2", "a"), ("3", "b"), ("4", "c"))]
    back = read_record(tmp_path, run_id)
    assert back["status"] == "ok" and back["error"] is None and back["metrics"] == {"mig": 0.5}
    assert [r["attempt"][-6:] for r in store.read_attempts(tmp_path, run_id)] == ["aaaaaa", "bbbbbb", "cccccc"]
    assert read_record(tmp_path, f"{run_id}.20240501T140000Z-cccccc")["status"] == "failed"
    with pytest.raises(RegistryError, match="no run matches"):
        read_record(tmp_path, f"{run_id}.20240501T150000Z-dddddd")
    with pytest.raises(RegistryError, match="invalid attempt"):
        read_record(tmp_path, f"{run_id}.latest")
    with pytest.raises(RegistryError, match="exists"):  # an attempt is written once
        write_record(tmp_path, {**rec, "attempt": "20240501T120000Z-aaaaaa"})
    con, _ = open_runs(tmp_path)
    try:
        assert con.sql("SELECT status, attempt FROM runs").fetchall() == [("ok", "20240501T130000Z-bbbbbb")]
    finally:
        con.close()
    con, _ = open_runs(tmp_path, attempts="all")
    try:
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(3,)]
    finally:
        con.close()


def test_failed_write_removes_temp_file(tmp_path: Path) -> None:
    rec = make_record(attempt="20240501T120000Z-aaaaaa")
    # A directory squatting on the final name makes the write fail.
    (tmp_path / "runs" / f"{rec['run_id']}.{rec['attempt']}.parquet").mkdir(parents=True)
    with pytest.raises(RegistryError, match="cannot write to registry"):
        write_record(tmp_path, rec)
    assert visible_files(tmp_path) == [f"{rec['run_id']}.{rec['attempt']}.parquet"]


def test_unwritable_root_under_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    root = blocker / "registry"
    with pytest.raises(RegistryError, match="cannot write to registry") as info:
        write_record(root, make_record())
    assert "\n" not in str(info.value)
    with pytest.raises(RegistryError, match="cannot write to registry"):
        store.check_writable(root)
    with pytest.raises(RegistryError):
        store.artifact_dir(root, "abcdef")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_unwritable_root_read_only_dir(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o500)
    try:
        with pytest.raises(RegistryError, match="cannot write to registry"):
            write_record(tmp_path, make_record())
        with pytest.raises(RegistryError, match="cannot write to registry"):
            store.check_writable(tmp_path)
        assert visible_files(tmp_path) == []
    finally:
        (tmp_path / "runs").chmod(0o700)


def test_check_writable_ok_and_artifact_dir(tmp_path: Path) -> None:
    root = tmp_path / "new" / "registry"
    store.check_writable(root)
    assert (root / "runs").is_dir() and visible_files(root) == []
    adir = store.artifact_dir(root, "abcdef01")
    assert adir == root / "artifacts" / "abcdef01" and adir.is_dir()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"learning_rate": 0.1}, "unknown record field 'learning_rate'"),
        ({"status": "done"}, "invalid status"),
        ({"run_id": "XYZ123"}, "invalid run_id"),
        ({"run_id": "abc"}, "invalid run_id"),
        ({"run_id": "abcdef\n"}, "invalid run_id"),
        ({"run_id": None}, "invalid run_id"),
        ({"started_at": dt.datetime(2024, 1, 1)}, "timezone-aware"),
        ({"beta": "big"}, "'beta'"),
        ({"history": [{"step": 1, "los": 2.0}]}, "unknown history field 'los'"),
    ],
)
def test_invalid_records_rejected(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        write_record(tmp_path, make_record(**override))
    assert run_files(tmp_path) == []


def test_read_record_prefix_errors(tmp_path: Path) -> None:
    write_record(tmp_path, make_record(run_id="abc123"))
    write_record(tmp_path, make_record(run_id="abc456"))
    write_record(tmp_path, make_record(run_id="abc1234567"))
    assert read_record(tmp_path, "abc123")["run_id"] == "abc123"  # exact beats prefix
    assert read_record(tmp_path, "abc4")["run_id"] == "abc456"
    with pytest.raises(RegistryError, match="matches 3 runs"):
        read_record(tmp_path, "abc")
    with pytest.raises(RegistryError, match="no run matches"):
        read_record(tmp_path, "fff")
    with pytest.raises(RegistryError, match="invalid run id"):
        read_record(tmp_path, "../etc")


# ----------------------------------------------------------------------- query


def _write_grid(root: Path) -> list[dict[str, Any]]:
    """2 models x 3 betas x 3 seeds, seeded random MIG values; plus noise runs."""
    rng = np.random.default_rng(1234)
    records = []
    for model in ("beta_vae", "annealed_vae"):
        for beta in (1.0, 4.0, 16.0):
            for seed in range(3):
                rec = make_record(
                    model=model, beta=beta, seed=seed,
                    metrics={"mig": float(rng.random()), "sap": float(rng.random())},
                )
                write_record(root, rec)
                records.append(rec)
    # Diverged / failed runs carry a metric that must NOT enter the mean.
    for status, seed in (("diverged", 3), ("failed", 4)):
        rec = make_record(model="beta_vae", beta=16.0, seed=seed, status=status,
                          metrics={"mig": 99.0})
        write_record(root, rec)
        records.append(rec)
    # Another dataset, filtered out by dataset="dsprites".
    rec = make_record(dataset="shapes3d", model="beta_vae", beta=1.0, metrics={"mig": 0.9})
    write_record(root, rec)
    records.append(rec)
    return records


BY = ["model", "beta"]


def test_leaderboard_matches_direct_computation(tmp_path: Path) -> None:
    records = _write_grid(tmp_path)
    res = leaderboard(tmp_path, metric="mig", by=BY, dataset="dsprites")
    assert res.skipped == []
    rows = res.table.to_pylist()
    assert res.table.column_names == [*BY, "mean", "std", "n", "n_diverged", "seeds"]

    expected = {}
    for model in ("beta_vae", "annealed_vae"):
        for beta in (1.0, 4.0, 16.0):
            group = [r for r in records if r["model"] == model and r["beta"] == beta
                     and r["dataset"] == "dsprites"]
            vals = np.array([r["metrics"]["mig"] for r in group if r["status"] == "ok"])
            expected[(model, beta)] = (
                vals.mean(), vals.std(ddof=1), len(vals),
                sum(r["status"] != "ok" for r in group), sorted(r["seed"] for r in group),
            )
    assert len(rows) == len(expected) == 6
    for row in rows:
        mean, std, n, n_div, seeds = expected[(row["model"], row["beta"])]
        assert row["mean"] == pytest.approx(mean, abs=1e-12, rel=0)
        assert row["std"] == pytest.approx(std, abs=1e-12, rel=0)
        assert (row["n"], row["n_diverged"], row["seeds"]) == (n, n_div, seeds)
    assert expected[("beta_vae", 16.0)][3] == 2  # diverged + failed counted

    means = [r["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    asc = leaderboard(tmp_path, metric="mig", by=BY, dataset="dsprites", descending=False)
    assert [r["mean"] for r in asc.table.to_pylist()] == sorted(means)


def test_leaderboard_filters_default_by_and_single_run(tmp_path: Path) -> None:
    _write_grid(tmp_path)
    res = leaderboard(tmp_path, metric="mig", dataset="shapes3d")
    rows = res.table.to_pylist()
    assert res.table.column_names[: len(query.DEFAULT_BY)] == list(query.DEFAULT_BY)
    assert len(rows) == 1 and rows[0]["n"] == 1 and rows[0]["mean"] == 0.9
    assert rows[0]["std"] is None  # n=1 -> NULL, not 0 or NaN

    only = leaderboard(tmp_path, metric="sap", by=BY, model="annealed_vae").table
    assert set(only.column("model").to_pylist()) == {"annealed_vae"}
    assert only.num_rows == 3
    # a metric no run has: groups still listed, mean NULL, n 0
    none = leaderboard(tmp_path, metric="nope", by=["model"]).table.to_pylist()
    assert {r["model"] for r in none} == {"beta_vae", "annealed_vae"}
    assert all(r["mean"] is None and r["n"] == 0 for r in none)


def test_group_without_metric_sorts_last(tmp_path: Path) -> None:
    write_record(tmp_path, make_record(model="a", metrics={"mig": 0.1}))
    write_record(tmp_path, make_record(model="b", metrics={"sap": 0.5}))
    write_record(tmp_path, make_record(model="c", metrics={"mig": 0.3}))
    for desc in (True, False):
        rows = leaderboard(tmp_path, by=["model"], descending=desc).table.to_pylist()
        assert rows[-1]["model"] == "b" and rows[-1]["mean"] is None
    rows = leaderboard(tmp_path, by=["model"]).table.to_pylist()
    assert [r["model"] for r in rows] == ["c", "a", "b"]


def test_corrupt_file_is_skipped_and_reported(tmp_path: Path) -> None:
    _write_grid(tmp_path)
    bad = tmp_path / "runs" / "x.parquet"
    bad.write_bytes(np.random.default_rng(0).bytes(512))
    res = leaderboard(tmp_path, metric="mig", by=BY, dataset="dsprites")
    assert res.table.num_rows == 6
    assert [p for p, _ in res.skipped] == [bad]
    reason = res.skipped[0][1]
    assert reason and "\n" not in reason

    statuses = recorded_status(tmp_path)
    assert len(statuses) == 18 + 2 + 1


def test_corrupt_data_page_with_valid_footer_is_skipped(tmp_path: Path) -> None:
    """A footer DuckDB accepts but data it cannot scan: found when the query runs."""
    for seed in range(3):
        write_record(tmp_path, make_record(seed=seed, metrics={"mig": seed / 10}))
    bad = write_record(tmp_path, make_record(seed=9, metrics={"mig": 5.0}))
    md = pq.read_metadata(bad)
    col = [md.schema.column(i).path for i in range(md.num_columns)].index("model")
    chunk = md.row_group(0).column(col)
    data = bytearray(bad.read_bytes())
    start = chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    bad.write_bytes(bytes(data))
    assert pq.read_metadata(bad).num_rows == 1  # footer still fine

    res = leaderboard(tmp_path, by=["model"])
    (row,) = res.table.to_pylist()
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.1, abs=1e-12)
    assert [p for p, _ in res.skipped] == [bad]
    assert res.skipped[0][1].isprintable()


def test_union_by_name_keeps_new_column_and_floats(tmp_path: Path) -> None:
    write_record(tmp_path, make_record(model="old", beta=2.0, metrics={"mig": 0.5}))
    # A "newer" writer's file: one extra column, the rest per RECORD_SCHEMA.
    rec = make_record(model="new", beta=8.0, metrics={"mig": 0.75})
    row = {name: rec.get(name) for name in RECORD_SCHEMA.names}
    row["schema_version"] = SCHEMA_VERSION
    for name in ("metrics", "environment", "artifacts"):
        row[name] = list(row[name].items())
    schema = RECORD_SCHEMA.append(pa.field("fid", pa.float64()))
    table = pa.Table.from_pylist([{**row, "fid": 12.5}], schema=schema)
    pq.write_table(table, tmp_path / "runs" / f"{rec['run_id']}.parquet")
    # ids grow with the counter, so the newer file sorts last: without
    # union_by_name DuckDB would take the first file's schema and drop "fid".

    res = leaderboard(tmp_path, metric="mig", by=["model", "beta"])
    rows = res.table.to_pylist()
    assert res.skipped == []
    assert [(r["model"], r["beta"], r["mean"]) for r in rows] == [
        ("new", 8.0, 0.75), ("old", 2.0, 0.5)]
    assert isinstance(rows[0]["beta"], float)
    assert pa.types.is_float64(res.table.schema.field("beta").type)

    con, skipped = open_runs(tmp_path)
    try:
        assert skipped == []
        got = con.sql("SELECT model, fid FROM runs ORDER BY model").fetchall()
        assert got == [("new", 12.5), ("old", None)]
    finally:
        con.close()
    assert read_record(tmp_path, rec["run_id"])["fid"] == 12.5


def test_sql_injection_is_inert(tmp_path: Path) -> None:
    _write_grid(tmp_path)
    for kwargs in ({"dataset": "x' OR 1=1 --"}, {"model": "x' OR '1'='1"},
                   {"metric": "mig')[1] FROM runs; --"}):
        res = leaderboard(tmp_path, by=BY, **kwargs)
        if "metric" in kwargs:  # groups exist, but nothing has that metric
            assert all(r["mean"] is None for r in res.table.to_pylist())
        else:
            assert res.table.num_rows == 0
    for by in (["model; DROP TABLE runs"], ['model" --'], ["run_id"], "beta; --"):
        with pytest.raises(ValueError, match="unknown column"):
            leaderboard(tmp_path, by=by)
    assert len(run_files(tmp_path)) == 21  # nothing was touched


def test_empty_registry(tmp_path: Path) -> None:
    res = leaderboard(tmp_path / "does-not-exist-yet")
    assert res.table.num_rows == 0 and res.skipped == []
    assert "mean" in res.table.column_names
    store.check_writable(tmp_path)  # creates runs/ with no files
    assert leaderboard(tmp_path, by=[]).table.num_rows == 0
    con, skipped = open_runs(tmp_path)
    try:
        assert [d[0] for d in con.sql("SELECT * FROM runs").description] == RECORD_SCHEMA.names
        assert query.metric_keys(con) == []
    finally:
        con.close()
    assert recorded_status(tmp_path) == {}


def test_metric_keys_and_recorded_status(tmp_path: Path) -> None:
    a = make_record(status="ok", metrics={"mig": 0.1, "dci": 0.2})
    b = make_record(status="diverged", metrics={})
    c = make_record(status="failed", error="CUDA OOM", metrics=None)
    for rec in (a, b, c):
        write_record(tmp_path, rec)
    (tmp_path / "runs" / "0badbad0.parquet").write_bytes(b"PAR1 nope")
    assert recorded_status(tmp_path) == {
        a["run_id"]: "ok", b["run_id"]: "diverged", c["run_id"]: "failed"}
    con, skipped = open_runs(tmp_path)
    try:
        assert query.metric_keys(con) == ["dci", "mig"]
        assert [p.name for p, _ in skipped] == ["0badbad0.parquet"]
    finally:
        con.close()


def test_a_file_url_registry_keeps_everything_under_its_folder(tmp_path: Path) -> None:
    """``--registry file:///abs/reg`` is the folder /abs/reg for every command: the run's
    artifacts land there (not under ``./file:``), and another directory's ``registry verify``
    and ``samples`` find them (~10 s: a 20-step run in a fresh interpreter)."""
    from conftest import run_vaebench

    reg = tmp_path / "reg"
    url = f"file://{reg}"
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    ran = run_vaebench("run", "--betas", "4", "--steps", "20", "--architecture", "mlp", "--batch-size", "16",
                       "--eval-samples", "512", "--metrics", "kl", "--device", "cpu", "--threads", "1",
                       "--registry", url, "--json", cwd=here)
    assert ran.returncode == 0, ran.stderr
    (record,) = json.loads(ran.stdout)
    assert record["status"] == "ok" and (reg / "artifacts" / record["run_id"]).is_dir()
    assert not any(here.iterdir()), list(here.iterdir())  # nothing under ./file:
    verified = run_vaebench("registry", "verify", "--registry", url, cwd=elsewhere)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    sampled = run_vaebench("samples", record["run_id"], "--n", "4", "--registry", url, cwd=elsewhere)
    assert sampled.returncode == 0, sampled.stderr
    assert not any(elsewhere.iterdir())
