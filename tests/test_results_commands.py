"""query / compare / check: real Parquet records, real DuckDB, the real CLI layer."""

from __future__ import annotations

import itertools
import json
import os
import statistics
from pathlib import Path
from typing import Any

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from vaebench.harness import targets as tg
from vaebench.harness.results_cli import register
from vaebench.registry import readonly
from vaebench.registry.selection import SELECT_KEYS, Selection, fetch_runs, parse_selection
from vaebench.registry.store import write_record

_ids = itertools.count(0x100000)


def record(**overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "run_id": f"{next(_ids):012x}",
        "status": "ok",
        "model": "beta_vae",
        "backend": "torch",
        "dataset": "dsprites",
        "dataset_variant": "full",
        "dataset_digest": "d1g35t",
        "architecture": "conv",
        "beta": 4.0,
        "latent_dim": 10,
        "seed": 0,
        "steps": 100,
        "batch_size": 64,
        "lr": 5e-4,
        "metrics": {"mig": 0.3, "reconstruction": 30.0, "kl": 10.0},
    }
    rec.update(overrides)
    return rec


def write_runs(root: Path, metric: str, values: list[float], **overrides: Any) -> list[str]:
    """One ok run per value (seeds 0..n-1); other metrics fixed. Returns the run ids."""
    ids = []
    for seed, value in enumerate(values):
        base = record(seed=seed, **overrides)
        base["metrics"] = {**base["metrics"], metric: value}
        write_record(root, base)
        ids.append(base["run_id"])
    return ids


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """test app"""

    register(app)
    return app


@pytest.fixture
def invoke(app: typer.Typer):
    runner = CliRunner()

    def run(*args: Any):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


def one_line_error(result) -> str:
    err = result.stderr.strip()
    assert err.startswith("error:"), err
    assert len(err.splitlines()) == 1, err
    return err


def snapshot(*dirs: Path) -> dict[str, bytes]:
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                out[str(p)] = p.read_bytes()
    return out


# --------------------------------------------------------------------------- selection


def test_selection_parsing_and_sql(tmp_path: Path) -> None:
    sel = Selection.parse("model=beta_vae, beta=4,dataset=dsprites,beta=8,capacity=null")
    assert dict(sel.terms) == {"model": ("beta_vae",), "beta": (4.0, 8.0), "dataset": ("dsprites",), "capacity": (None,)}
    where, params = sel.where()
    assert "?" in where and params == ["beta_vae", 4.0, 8.0, "dsprites"]
    assert "beta_vae" not in where  # values are parameters, never SQL text

    ids = Selection.parse("3FA2C1, 9b0e")
    assert ids.prefixes == ("3fa2c1", "9b0e") and not ids.terms
    assert Selection.parse("").empty and Selection.parse(None).empty
    assert parse_selection({"model": "beta_vae", "seed": [0, 1]}).terms == (("model", ("beta_vae",)), ("seed", (0, 1)))
    assert set(SELECT_KEYS) >= {"run_id", "status", "backend", "beta", "seed", "dataset_variant"}

    for bad, message in [
        ("foo=1", "unknown selection key 'foo'"),
        ("seed=abc", "seed='abc': expected a number"),
        ("seed=1.5", "expected an integer"),
        ("beta=nan", "finite"),
        ("status=done", "choose from ok, diverged, failed"),
        ("not-hex", "expected key=value"),
        ("run_id=xyz", "hex"),
    ]:
        with pytest.raises(ValueError, match=message):
            Selection.parse(bad)
    with pytest.raises(ValueError, match="unknown selection key 'drop table runs'"):
        Selection.from_mapping({"drop table runs": 1})


def test_selection_matches_typed_values_and_injection_is_harmless(tmp_path: Path) -> None:
    a = write_runs(tmp_path, "mig", [0.1, 0.2], beta=4.0, lr=5e-4)
    b = write_runs(tmp_path, "mig", [0.3], beta=8.0, model="it's", capacity=25.0)
    con, _ = readonly.open_readonly(tmp_path)
    try:
        def ids(text: str) -> list[str]:
            return [r["run_id"] for r in fetch_runs(con, Selection.parse(text))]

        assert ids("beta=4") == a  # 4 matches the stored 4.0 (typed cast, not string compare)
        assert ids("beta=4.0,lr=0.0005") == a
        assert ids("beta=4,beta=8") == a + b
        assert ids("seed=1") == a[1:]
        assert ids("capacity=null") == a and ids("capacity=25") == b
        assert ids("model=it's") == b  # a quote is just a character of the value
        assert ids(f"{a[0]}") == a[:1] and ids(f"run_id={a[1]}") == a[1:2]
        assert ids(f"run_id={os.path.commonprefix(a + b)}") == a + b  # run_id= is a prefix filter
        assert ids("status=diverged") == []
        for attack in ["model=x' OR '1'='1", "model=beta_vae'; DROP TABLE runs; --", "dataset=\" OR 1=1 --"]:
            assert ids(attack) == []
        assert ids("beta=4,model=beta_vae' OR model='it''s") == []
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 3  # still there
        joined = Selection.parse("beta=4") & Selection.parse(f"{a[1]}")
        assert [r["run_id"] for r in fetch_runs(con, joined)] == a[1:]
        assert fetch_runs(con, Selection.parse("beta=4") & Selection.parse("beta=8")) == []
    finally:
        con.close()


# --------------------------------------------------------------------------- query


def test_query_select_works(tmp_path: Path, invoke) -> None:
    write_runs(tmp_path, "mig", [0.1, 0.2], model="beta_vae")
    write_runs(tmp_path, "mig", [0.3], model="vae")
    res = invoke("query", "SELECT model, count(*) AS n FROM runs GROUP BY model ORDER BY model", "--registry", tmp_path, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == [{"model": "beta_vae", "n": 2}, {"model": "vae", "n": 1}]
    res = invoke("query", "SELECT model, count(*) FROM runs GROUP BY model", "--registry", tmp_path)
    assert res.exit_code == 0 and "beta_vae" in res.stdout and "2 row(s)" in res.stdout
    res = invoke("query", "SELECT metrics['mig'] AS mig, metrics FROM runs WHERE model = 'vae'", "--registry", tmp_path, "--json")
    assert json.loads(res.stdout)[0]["mig"] == 0.3
    assert json.loads(res.stdout)[0]["metrics"]["mig"] == 0.3
    # WITH / FROM-first are SELECTs too
    res = invoke("query", "WITH r AS (FROM runs) SELECT count(*) AS n FROM r", "--registry", tmp_path, "--json")
    assert json.loads(res.stdout) == [{"n": 3}]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY runs TO '{out}/x.csv'",
        "COPY (SELECT 1) TO '{out}/x.parquet' (FORMAT parquet)",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW runs",
        "DROP TABLE runs",
        "DELETE FROM runs",
        "INSERT INTO runs (model) VALUES ('x')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_parquet('{reg}/runs/*.parquet')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "ATTACH '{out}/x.db' AS x",
        "EXPORT DATABASE '{out}/dump'",
        "SET enable_external_access = true",
        "PRAGMA version",
        "SELECT 1; COPY runs TO '{out}/y.csv'",
        "SELECT 1; SELECT 2",
        "",
        "SELEKT 1",
        'SELECT * FROM "[/bold] [red]x"',
    ],
)
def test_query_cannot_write_or_read_files(tmp_path: Path, invoke, sql: str) -> None:
    reg, out = tmp_path / "reg", tmp_path / "out"
    out.mkdir()
    write_runs(reg, "mig", [0.1])
    before = snapshot(reg)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        res = invoke("query", sql.format(out=out, reg=reg), "--registry", reg)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    one_line_error(res)
    assert res.stdout == ""
    assert list(out.iterdir()) == []  # nothing written, not even DuckDB temp files
    assert snapshot(reg) == before


def test_readonly_connection_is_locked_even_without_the_statement_check(tmp_path: Path) -> None:
    write_runs(tmp_path, "mig", [0.1, 0.2])
    con, skipped = readonly.open_readonly(tmp_path)
    try:
        assert skipped == []
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)  # materialised before the lock
        for sql in [
            f"COPY runs TO '{tmp_path}/leak.csv'",
            "SELECT * FROM read_csv('/etc/passwd')",
            f"ATTACH '{tmp_path}/x.db'",
            "SET enable_external_access = true",
            "SET lock_configuration = false",
            "RESET enable_external_access",
        ]:
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "x.db").exists()
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration')"
        ).fetchall())
        assert settings == {"enable_external_access": "false", "lock_configuration": "true"}
    finally:
        con.close()
    with pytest.raises(ValueError, match="only SELECT"):
        readonly.run_select(tmp_path, "DROP TABLE runs")


def test_query_missing_registry_and_corrupt_file(tmp_path: Path, invoke) -> None:
    res = invoke("query", "SELECT 1", "--registry", tmp_path / "nope")
    assert res.exit_code == 2 and "does not exist" in one_line_error(res)
    write_runs(tmp_path, "mig", [0.1, 0.2])
    (tmp_path / "runs" / "ffffffffffff.parquet").write_bytes(b"not parquet")
    res = invoke("query", "SELECT count(*) AS n FROM runs", "--registry", tmp_path, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == [{"n": 2}]
    assert "skipped record file" in res.stderr


# --------------------------------------------------------------------------- compare


def test_compare_deltas_match_direct_computation(tmp_path: Path, invoke) -> None:
    a_mig, a_rec = [0.50, 0.51, 0.49], [30.0, 31.0, 29.5]
    b_mig, b_rec = [0.40, 0.42], [20.0, 21.0]
    for seed, (m, r) in enumerate(zip(a_mig, a_rec)):
        write_record(tmp_path, record(beta=1.0, seed=seed, metrics={"mig": m, "reconstruction": r, "kl": 10.0}))
    for seed, (m, r) in enumerate(zip(b_mig, b_rec)):
        write_record(tmp_path, record(beta=4.0, seed=seed, metrics={"mig": m, "reconstruction": r, "kl": 12.0}))
    write_record(tmp_path, record(beta=4.0, seed=9, status="diverged", metrics={}))

    res = invoke("compare", "beta=1", "model=beta_vae,beta=4", "--registry", tmp_path, "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["a"]["n_ok"], out["b"]["n_ok"], out["b"]["n_diverged"]) == (3, 2, 1)
    rows = {r["metric"]: r for r in out["metrics"]}
    assert rows["mig"]["delta"] == pytest.approx(statistics.fmean(b_mig) - statistics.fmean(a_mig), abs=1e-12)
    assert rows["mig"]["a"] == {"mean": pytest.approx(statistics.fmean(a_mig)), "std": pytest.approx(statistics.stdev(a_mig)), "n": 3}
    assert rows["mig"]["b"]["n"] == 2
    assert rows["reconstruction"]["delta"] == pytest.approx(statistics.fmean(b_rec) - statistics.fmean(a_rec))
    # direction from the plugins: mig higher (dropped -> worse), reconstruction lower (dropped -> better), kl none
    assert (rows["mig"]["direction"], rows["mig"]["better"]) == ("higher", "worse")
    assert (rows["reconstruction"]["direction"], rows["reconstruction"]["better"]) == ("lower", "better")
    assert (rows["kl"]["direction"], rows["kl"]["better"]) == ("none", None)
    config = {r["column"]: r for r in out["config"]}
    assert config["beta"] == {"column": "beta", "a": 1.0, "b": 4.0, "differs": True}
    assert config["model"]["differs"] is False
    assert config["seed"]["b"] == [0, 1, 9] and config["seed"]["differs"] is True
    assert "capacity" not in config  # unset on both sides

    res = invoke("compare", "beta=1", "beta=4", "--registry", tmp_path, "--metrics", "mig")
    assert res.exit_code == 0
    assert "mig ↑" in res.stdout and "-0.09" in res.stdout and "reconstruction" not in res.stdout


def test_compare_two_run_ids_and_errors(tmp_path: Path, invoke) -> None:
    a, b, c = "aaaa11112222", "aaab33334444", "bbbb55556666"
    write_record(tmp_path, record(run_id=a, beta=1.0, metrics={"mig": 0.25}))
    write_record(tmp_path, record(run_id=b, beta=4.0, metrics={"mig": 0.5}))
    write_record(tmp_path, record(run_id=c, beta=8.0, metrics={"mig": 0.75}))
    res = invoke("compare", "aaaa", b, "--registry", tmp_path, "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["a"]["run_ids"] == [a] and out["b"]["run_ids"] == [b]
    assert {r["metric"]: r["delta"] for r in out["metrics"]}["mig"] == 0.25

    res = invoke("compare", "aaa", c, "--registry", tmp_path)
    assert res.exit_code == 2 and "matches several runs" in one_line_error(res)
    res = invoke("compare", "abcdef123", b, "--registry", tmp_path)
    assert res.exit_code == 2 and "no run matches" in one_line_error(res)
    res = invoke("compare", "beta=2", b, "--registry", tmp_path)
    assert res.exit_code == 2 and "A (beta=2) matches no runs" in one_line_error(res)
    res = invoke("compare", "colour=red", b, "--registry", tmp_path)
    assert res.exit_code == 2 and "unknown selection key 'colour'" in one_line_error(res)


# --------------------------------------------------------------------------- check


TARGET_MIG = """
[[target]]
name = "beta4 MIG"
select = {{ model = "beta_vae", beta = 4, dataset = "dsprites" }}
metric = "mig"
aggregate = "{aggregate}"
min_runs = {min_runs}
{extra}
"""


def targets_file(tmp_path: Path, text: str = "", *, aggregate: str = "mean", min_runs: int = 3, extra: str = "") -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text or TARGET_MIG.format(aggregate=aggregate, min_runs=min_runs, extra=extra))
    return path


def check_json(invoke, *args: Any) -> tuple[int, list[dict[str, Any]]]:
    res = invoke("check", *args, "--json")
    assert res.exit_code in (0, 1), (res.exit_code, res.stdout, res.stderr)
    return res.exit_code, json.loads(res.stdout)


def test_check_threshold_pass_and_fail(tmp_path: Path, invoke) -> None:
    reg = tmp_path / "reg"
    write_runs(reg, "mig", [0.35, 0.32, 0.31])
    write_runs(reg, "mig", [0.9, 0.9, 0.9], beta=8.0)  # outside the select
    write_record(reg, record(status="diverged", seed=7, metrics={}))
    path = targets_file(tmp_path, extra="threshold = 0.3")
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 0 and row["verdict"] == "pass"
    assert row["value"] == pytest.approx(statistics.fmean([0.35, 0.32, 0.31]))
    assert (row["n"], row["n_diverged"], row["n_failed"]) == (3, 1, 0)
    assert row["tier"] == "good" and row["direction"] == "higher"

    res = invoke("check", "--targets", path, "--registry", reg)
    assert res.exit_code == 0 and "beta4 MIG" in res.stdout and "pass" in res.stdout

    path = targets_file(tmp_path, extra="threshold = 0.34")
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 1 and row["verdict"] == "fail" and "not >=" in row["detail"]
    res = invoke("check", "--targets", path, "--registry", reg)
    assert res.exit_code == 1 and "fail" in res.stdout and "1 of 1 target(s) not met" in res.stderr

    # median of [0.35, 0.32, 0.31] is 0.32 >= 0.32, mean 0.3267 < 0.33
    path = targets_file(tmp_path, aggregate="median", extra="threshold = 0.32")
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 0 and row["value"] == 0.32


def regression_registry(tmp_path: Path, metric: str, baseline: list[float], current: list[float]) -> Path:
    reg = tmp_path / "reg"
    write_runs(reg, metric, baseline, steps=100)
    write_runs(reg, metric, current, steps=200)
    return reg


def test_check_significant_regression_fails(tmp_path: Path, invoke) -> None:
    base, cur = [0.50, 0.51, 0.49], [0.40, 0.41, 0.39]
    reg = regression_registry(tmp_path, "mig", base, cur)
    path = targets_file(tmp_path, extra='max_regression = "5%"')
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    assert code == 1 and row["verdict"] == "fail"
    assert row["baseline"] == pytest.approx(0.5) and row["value"] == pytest.approx(0.4)
    assert row["regression"] == pytest.approx(0.1) and row["regression_relative"] == pytest.approx(0.2)
    from scipy import stats

    expected = stats.ttest_ind(cur, base, equal_var=False, alternative="less").pvalue
    assert row["p_value"] == pytest.approx(expected) and row["p_value"] < 0.05
    assert "Welch" in row["test"] and "one-sided" in row["test"]
    res = invoke("check", "--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    assert res.exit_code == 1 and "Welch" in res.stderr

    # the same drop within an absolute tolerance of 0.15 passes
    path = targets_file(tmp_path, extra="max_regression = 0.15")
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    assert code == 0 and row["verdict"] == "pass"


def test_check_noisy_change_is_not_significant(tmp_path: Path, invoke) -> None:
    # 10% worse on average, but the seeds are all over the place
    reg = regression_registry(tmp_path, "mig", [0.5, 0.2, 0.8], [0.35, 0.9, 0.1])
    path = targets_file(tmp_path, extra='max_regression = "5%"')
    args = ("--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    code, (row,) = check_json(invoke, *args)
    assert row["verdict"] == "changed, not significant" and code == 0
    assert row["regression_relative"] == pytest.approx(0.1) and row["p_value"] > 0.05
    res = invoke("check", *args)
    assert res.exit_code == 0 and "changed, not significant" in res.stdout

    # The brief's [0.5, 0.2, 0.8] -> [0.45, 0.9, 0.1] is only 3.3% worse: within 5%, a pass.
    reg2 = regression_registry(tmp_path / "b", "mig", [0.5, 0.2, 0.8], [0.45, 0.9, 0.1])
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg2, "--runs", "steps=200", "--baseline", "steps=100")
    assert code == 0 and row["verdict"] == "pass" and row["regression_relative"] == pytest.approx(1 / 30)


def test_check_lower_is_better_metric(tmp_path: Path, invoke) -> None:
    text = """
[[target]]
select = { beta = 4 }
metric = "reconstruction"
min_runs = 2
threshold = 25.0
max_regression = "5%"
"""
    path = targets_file(tmp_path, text)
    # current reconstruction went UP (worse for a lower-is-better metric)
    reg = regression_registry(tmp_path, "reconstruction", [20.0, 21.0, 22.0], [30.0, 31.0, 29.0])
    args = ("--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    code, (row,) = check_json(invoke, *args)
    assert code == 1 and row["verdict"] == "fail" and row["direction"] == "lower"
    assert "not <=" in row["detail"] and "regressed" in row["detail"]
    assert row["regression"] == pytest.approx(9.0) and row["p_value"] < 0.05

    # the mirror image is an improvement: passes the threshold, no regression
    reg = regression_registry(tmp_path / "b", "reconstruction", [30.0, 31.0, 29.0], [20.0, 21.0, 22.0])
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    assert code == 0 and row["verdict"] == "pass" and row["regression"] == pytest.approx(-9.0)
    assert row["p_value"] > 0.5


def test_check_missing_data_is_an_error_not_a_pass(tmp_path: Path, invoke) -> None:
    reg = tmp_path / "reg"
    write_runs(reg, "mig", [0.5, 0.6])
    write_record(reg, record(status="failed", seed=5, metrics={}, error="boom"))
    path = targets_file(tmp_path, extra="threshold = 0.3")  # min_runs = 3
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 1 and row["verdict"].startswith("error: ")
    assert "2 ok run(s)" in row["verdict"] and "min_runs is 3" in row["verdict"] and row["n_failed"] == 1
    res = invoke("check", "--targets", path, "--registry", reg)
    assert res.exit_code == 1 and "error:" in res.stdout

    # an ok run without the metric
    rec = record(seed=3)
    rec["metrics"] = {"reconstruction": 30.0}
    write_record(reg, rec)
    path = targets_file(tmp_path, min_runs=2, extra="threshold = 0.3")
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 1 and "missing or not finite in 1 of 3 ok runs" in row["verdict"]

    # nothing selected at all
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg, "--runs", "steps=999")
    assert code == 1 and row["verdict"].startswith("error: 0 ok run(s)")

    # a regression check needs a baseline with enough runs
    reg2 = regression_registry(tmp_path / "b", "mig", [0.5], [0.4, 0.41, 0.39])
    path = targets_file(tmp_path, min_runs=1, extra='max_regression = "5%"')
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg2, "--runs", "steps=200", "--baseline", "steps=100")
    assert code == 1 and "at least 2 runs per side" in row["verdict"]


def test_check_incomparable_runs(tmp_path: Path, invoke) -> None:
    reg = tmp_path / "reg"
    write_runs(reg, "mig", [0.5, 0.6], dataset_variant="full")
    write_runs(reg, "mig", [0.5], dataset_variant="small")
    path = targets_file(tmp_path, min_runs=1, extra="threshold = 0.3")
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 1 and row["verdict"] == "error: incomparable runs: dataset_variant differs (full, small)"

    # same dataset, different estimator settings (MIG bins)
    reg = tmp_path / "reg2"
    for bins in (20, 20, 30):
        params = {"mig": {"n": 500, "bins": bins, "estimator": "plug-in", "mi_matrix": [[bins]]}, "_eval": {"n": 500, "eval_seed": 1}}
        write_runs(reg, "mig", [0.5], metric_params=json.dumps(params))
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 1 and "estimator settings differ (bins)" in row["verdict"]

    # a metric whose implementation version changed (the "metric version")
    reg = tmp_path / "reg_version"
    for version in (1, 2):
        params = {"mig": {"n": 500, "bins": 20, "version": version}, "_eval": {"n": 500, "eval_seed": 1}}
        write_runs(reg, "mig", [0.5], metric_params=json.dumps(params))
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg)
    assert code == 1 and "estimator settings differ (version)" in row["verdict"]

    # baseline on another dataset digest is incomparable too
    reg = tmp_path / "reg3"
    write_runs(reg, "mig", [0.5, 0.5], steps=100, dataset_digest="aaaa")
    write_runs(reg, "mig", [0.5, 0.5], steps=200, dataset_digest="bbbb")
    path = targets_file(tmp_path, min_runs=2, extra='max_regression = "5%"')
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg, "--runs", "steps=200", "--baseline", "steps=100")
    assert code == 1 and "dataset_digest differs" in row["verdict"]


def test_check_overlap_and_baseline_registry(tmp_path: Path, invoke) -> None:
    reg = regression_registry(tmp_path, "mig", [0.50, 0.51, 0.49], [0.40, 0.41, 0.39])
    path = targets_file(tmp_path, extra='max_regression = "5%"')
    code, (row,) = check_json(invoke, "--targets", path, "--registry", reg, "--baseline", "steps=100")
    assert code == 1 and "overlap" in row["verdict"]

    # the same grid re-run with new code: same run ids, kept in two registries
    main_reg, branch_reg = tmp_path / "main", tmp_path / "branch"
    for seed, (b, c) in enumerate(zip([0.50, 0.51, 0.49], [0.40, 0.41, 0.39])):
        rec = record(seed=seed)
        write_record(main_reg, {**rec, "metrics": {"mig": b}})
        write_record(branch_reg, {**rec, "metrics": {"mig": c}})
    code, (row,) = check_json(invoke, "--targets", path, "--registry", branch_reg, "--baseline-registry", main_reg)
    assert code == 1 and row["verdict"] == "fail" and row["baseline_run_ids"] == row["run_ids"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[target]\nmetric = ", "is not valid TOML"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "nosuch"\nthreshold = 1', "unknown metric 'nosuch'"),
        ('[[target]]\nselect = { colour = "red" }\nmetric = "mig"\nthreshold = 1', "unknown selection key 'colour'"),
        ('[[target]]\nselect = { beta = "four" }\nmetric = "mig"\nthreshold = 1', "beta='four': expected a number"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "kl"\nthreshold = 1', "direction 'none'"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "mig"', "give a threshold, a max_regression or both"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "mig"\nthreshold = 1\ncolour = 1', "unknown key 'colour'"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "mig"\nthreshold = 1\naggregate = "max"', "aggregate must be one of"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "mig"\nthreshold = 1\nmin_runs = 0', "min_runs must be"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "mig"\nmax_regression = "lots"', "max_regression: expected a percentage"),
        ('[[target]]\nselect = { beta = 4 }\nmetric = "mig"\nmax_regression = "5%"', "pass --baseline"),
        ('[[target]]\nmetric = "mig"\nthreshold = 1', "'select' is required"),
        ('title = "x"', "unknown top-level key 'title'"),
    ],
)
def test_check_usage_errors_exit_2(tmp_path: Path, invoke, text: str, message: str) -> None:
    write_runs(tmp_path / "reg", "mig", [0.5])
    path = targets_file(tmp_path, text)
    res = invoke("check", "--targets", path, "--registry", tmp_path / "reg")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert message in one_line_error(res)


def test_check_cli_usage_errors(tmp_path: Path, invoke) -> None:
    write_runs(tmp_path / "reg", "mig", [0.5])
    path = targets_file(tmp_path, min_runs=1, extra="threshold = 0.3")
    for args, message in [
        (("--targets", tmp_path / "none.toml"), "not found"),
        (("--targets", path, "--runs", "colour=red"), "--runs: unknown selection key 'colour'"),
        (("--targets", path, "--baseline", "seed=x"), "--baseline: seed='x'"),
        (("--targets", path, "--registry", tmp_path / "missing"), "does not exist"),
    ]:
        res = invoke("check", "--registry", tmp_path / "reg", *args) if "--registry" not in args else invoke("check", *args)
        assert res.exit_code == 2, (args, res.stdout, res.stderr)
        assert message in one_line_error(res)


# --------------------------------------------------------------------------- library pieces


def test_welch_and_regression_helpers() -> None:
    assert tg.welch_worse_p([0.4, 0.4], [0.5, 0.5], "higher") == 0.0  # no variance, clearly worse
    assert tg.welch_worse_p([0.6, 0.6], [0.5, 0.5], "higher") == 1.0
    assert tg.welch_worse_p([0.6, 0.61], [0.5, 0.51], "lower") < 0.05
    with pytest.raises(ValueError):
        tg.welch_worse_p([0.5], [0.5, 0.6], "higher")
    r = tg.parse_regression("5%")
    assert r.relative and r.allowed(-2.0) == pytest.approx(0.1)
    assert tg.parse_regression(0.02).allowed(100.0) == 0.02
    with pytest.raises(tg.TargetsError):
        tg.parse_regression("-1%")


def test_tiers() -> None:
    # Shipped by the metric plugins: MIG > 0.3 good, > 0.5 excellent; SSIM > 0.9 / 0.8 / 0.7.
    assert tg.tier("mig", 0.55) == "excellent"
    assert tg.tier("mig", 0.4) == "good"
    assert tg.tier("mig", 0.3) is None  # strictly greater than the bound
    assert tg.tier("ssim", 0.85) == "good" and tg.tier("ssim", 0.75) == "acceptable" and tg.tier("ssim", 0.6) is None
    assert tg.tier("sap", 0.9) is None and tg.tier("mig", float("nan")) is None and tg.tier("mig", None) is None
    lower = {"fid": {"direction": "lower", "tiers": {"excellent": 30.0, "good": 50.0, "acceptable": 100.0}}}
    assert tg.tier("fid", 20.0, lower) == "excellent" and tg.tier("fid", 70.0, lower) == "acceptable"
    assert tg.tier("fid", 120.0, lower) is None


def test_register_adds_commands_with_examples(app: typer.Typer) -> None:
    runner = CliRunner()
    for name, example in (("query", "vaebench query"), ("compare", "vaebench compare"), ("check", "[[target]]")):
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0 and example in res.stdout, res.stdout
