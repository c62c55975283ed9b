"""End to end through the CLI: a real (tiny) grid, the leaderboard, resume, bad input."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import vaebench
from conftest import TINY
from vaebench.registry.schema import SCHEMA_VERSION


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Four real runs: β ∈ {1, 8} × seeds {0, 1}."""
    from typer.testing import CliRunner

    from vaebench.harness.cli import app

    registry = tmp_path_factory.mktemp("registry")
    result = CliRunner().invoke(
        app, ["run", "--model", "beta_vae", "--betas", "1,8", "--seeds", "0,1", *TINY, "--registry", str(registry), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return registry, json.loads(result.stdout)


def _records_from_files(registry: Path) -> list[dict]:
    """Read the Parquet files directly with pyarrow (independently of vaebench's reader)."""
    rows = []
    for f in sorted((registry / "runs").glob("*.parquet")):
        row = pq.read_table(f).to_pylist(maps_as_pydicts="strict")[0]
        rows.append(row)
    return rows


def test_grid_writes_one_record_per_point(grid):
    registry, records = grid
    assert len(records) == 4
    files = list((registry / "runs").glob("*.parquet"))
    assert len(files) == 4
    assert not list((registry / "runs").glob("*.partial"))
    on_disk = {r["run_id"]: r for r in _records_from_files(registry)}
    for r in records:
        disk = on_disk[r["run_id"]]
        assert disk["status"] == "ok"
        assert disk["schema_version"] == SCHEMA_VERSION
        assert disk["dataset_variant"] == "procedural-v1" and len(disk["dataset_digest"]) == 16
        assert disk["steps_done"] == 30 and disk["images_per_second"] > 0 and disk["train_seconds"] > 0
        assert disk["seconds_per_epoch"] == pytest.approx(737_280 / disk["images_per_second"])
        m = disk["metrics"]
        assert set(m) >= {"mig", "kl", "reconstruction", "active_dims", "sap", "modularity", "ssim", "psnr"}
        assert 0.0 <= m["ssim"] <= 1.0 and m["psnr"] > 0
        assert 0.0 <= m["mig"] <= 1.0
        assert len(disk["kl_per_dim"]) == 10 and math.isclose(sum(disk["kl_per_dim"]), m["kl"], rel_tol=1e-9)
        params = json.loads(disk["metric_params"])
        assert params["mig"]["n"] == 500 and params["mig"]["bins"] == 20
        assert disk["environment"]["torch"].startswith("2.") and "python" in disk["environment"]
        assert os.path.exists(registry / disk["artifacts"]["checkpoint"])
    # β changes what is learned: the β = 8 runs keep much less information in the code.
    kl = {(r["beta"], r["seed"]): r["metrics"]["kl"] for r in records}
    assert kl[(8.0, 0)] < kl[(1.0, 0)] and kl[(8.0, 1)] < kl[(1.0, 1)]


def test_leaderboard_equals_direct_computation(grid, cli):
    registry, _ = grid
    result = cli("leaderboard", "--metric", "mig", "--by", "model,beta", "--json", "--registry", registry)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    direct: dict[float, list[float]] = {}
    for r in _records_from_files(registry):
        direct.setdefault(r["beta"], []).append(r["metrics"]["mig"])
    assert {row["beta"] for row in rows} == set(direct)
    for row in rows:
        values = np.array(direct[row["beta"]])
        assert row["n"] == 2 and row["model"] == "beta_vae" and row["seeds"] == [0, 1]
        assert row["mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    assert [row["mean"] for row in rows] == sorted((row["mean"] for row in rows), reverse=True)
    # MIG has tiers (good > 0.3, excellent > 0.5); these tiny runs reach none.
    assert all(row["tier"] is None for row in rows if row["mean"] <= 0.3)
    # Lower-is-better metrics rank ascending.
    rows = json.loads(cli("leaderboard", "--metric", "reconstruction", "--by", "beta", "--json", "--registry", registry).stdout)
    assert rows[0]["mean"] <= rows[-1]["mean"]
    # The table form for people.
    table = cli("leaderboard", "--registry", registry)
    assert table.exit_code == 0 and "beta_vae" in table.stdout and "mig" in table.stdout


def test_python_api_matches_cli(grid):
    registry, records = grid
    table = vaebench.leaderboard(str(registry), metric="kl", by=["beta"])
    df = table.to_pandas()
    assert list(df["beta"]) == [1.0, 8.0]  # KL has no direction: descending, β = 1 keeps more
    record = vaebench.show(records[0]["run_id"][:8], registry=str(registry))
    assert record["run_id"] == records[0]["run_id"]


def test_resume_skips_recorded_runs(grid, cli):
    registry, _ = grid
    before = {f: f.stat().st_mtime_ns for f in (registry / "runs").glob("*.parquet")}
    result = cli("run", "--model", "beta_vae", "--betas", "1,8", "--seeds", "0,1", *TINY, "--registry", registry, "--resume")
    assert result.exit_code == 0
    assert "4 run(s) skipped: a finished attempt (ok or diverged) is recorded (--resume)" in result.stderr
    after = {f: f.stat().st_mtime_ns for f in (registry / "runs").glob("*.parquet")}
    assert before == after


def test_dry_run_and_a_rerun_say_which_points_are_already_recorded(grid, cli, tmp_path):
    import shutil

    registry = tmp_path / "copy"
    shutil.copytree(grid[0] / "runs", registry / "runs")
    plan = ["run", "--model", "beta_vae", "--betas", "1,2", "--seeds", "0", *TINY, "--registry", registry, "--dry-run"]
    lines = cli(*plan).stdout.splitlines()
    assert lines[0].endswith("(recorded: ok, a new attempt beside it)") and "beta=1" in lines[0]
    assert "beta=2" in lines[1] and "recorded" not in lines[1]
    assert cli(*plan, "--resume").stdout.splitlines()[0].endswith("(recorded: ok, skipped)")
    as_json = json.loads(cli(*plan, "--json").stdout)["runs"]
    assert [r["recorded"] for r in as_json] == ["ok", None]

    again = cli("run", "--model", "beta_vae", "--betas", "1", "--seeds", "0", *TINY, "--registry", registry)
    assert again.exit_code == 0
    assert ("1 of them already recorded: trained again as new attempts, the earlier records kept "
            "(--resume skips them)") in again.stderr
    assert len(list((registry / "runs").glob("*.parquet"))) == 5  # every attempt kept

    # show lists the run's attempts; leaderboard and check count it once unless --attempts all
    (rerun,) = json.loads(cli("run", "--model", "beta_vae", "--betas", "1", "--seeds", "0", *TINY,
                              "--registry", registry, "--resume", "--dry-run", "--json").stdout)["runs"]
    shown = json.loads(cli("show", rerun["run_id"], "--json", "--registry", registry).stdout)
    assert len(shown["attempts"]) == 2 and shown["attempts"][-1]["shown"] and shown["attempt"] == shown["attempts"][-1]["attempt"]
    first = shown["attempts"][0]["attempt"]
    assert json.loads(cli("show", f"{rerun['run_id']}.{first}", "--json", "--registry", registry).stdout)["attempt"] == first
    assert "2 attempts" in cli("show", rerun["run_id"], "--registry", registry).stdout
    board = ["leaderboard", "--by", "beta,seed", "--registry", registry, "--json"]
    assert [r["n"] for r in json.loads(cli(*board).stdout) if r["beta"] == 1.0 and r["seed"] == 0] == [1]
    assert [r["n"] for r in json.loads(cli(*board, "--attempts", "all").stdout) if r["beta"] == 1.0 and r["seed"] == 0] == [2]
    bad = cli(*board, "--attempts", "newest")
    assert bad.exit_code == 2 and "--attempts: choose from latest, all" in bad.stderr


def test_show_prints_one_record(grid, cli):
    registry, records = grid
    run_id = records[0]["run_id"]
    out = cli("show", run_id[:6], "--json", "--registry", registry)
    assert out.exit_code == 0
    shown = json.loads(out.stdout)
    assert shown["run_id"] == run_id and shown["metrics"]["mig"] == records[0]["metrics"]["mig"]
    assert cli("show", run_id, "--registry", registry).exit_code == 0
    missing = cli("show", "ffffffffff", "--registry", registry)
    assert missing.exit_code == 2 and "no run matches" in missing.stderr


def test_corrupt_file_is_skipped_with_a_warning(grid, cli, tmp_path):
    registry, _ = grid
    import shutil

    copy = tmp_path / "reg"
    shutil.copytree(registry, copy)
    (copy / "runs" / "0123456789abcdef.parquet").write_bytes(b"PAR1 this is not parquet")
    result = cli("leaderboard", "--by", "beta", "--json", "--registry", copy)
    assert result.exit_code == 0
    assert "0123456789abcdef.parquet" in result.stderr and "warning" in result.stderr
    rows = json.loads(result.stdout)
    assert sum(r["n"] for r in rows) == 4


def _assert_usage_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    for f in fragments:
        assert f in message, message


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--betas", "1,x"], ["--betas", "'x' is not a number"]),
        (["--betas", "-1"], ["--betas", "out of range"]),
        (["--model", "nope"], ["unknown model 'nope'", "beta_vae"]),
        (["--dataset", "nope"], ["unknown dataset 'nope'"]),
        (["--metrics", "mig,nope"], ["unknown metric 'nope'"]),
        (["--capacities", "5"], ["no selected model reads 'capacity'"]),
        (["--latent-dim", "0"], ["--latent-dim", "out of range"]),
        (["--seeds", "1.5"], ["--seeds", "not an integer"]),
        (["--architecture", "resnet"], ["unknown architecture"]),
        (["--backend", "tensorflow"], ["backend"]),
        (["--amp", "fp8"], ["AMP"]),
        (["--device", "tpu"], ["unknown device"]),
        (["--dataset", "digits", "--metrics", "mig,modularity"],
         ["metric 'modularity' needs at least 2 factors", "'digits' has 1"]),
    ],
)
def test_bad_run_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, fragments):
    registry = tmp_path / "reg"
    result = cli("run", *args, *TINY[:2], "--registry", registry)
    _assert_usage_error(result, *fragments)
    assert not list(registry.glob("runs/*.parquet"))


def test_a_missing_dataset_file_stops_the_run_before_anything_is_written(cli, tmp_path):
    registry = tmp_path / "reg"
    result = cli("run", "--dataset", "mnist", "--dataset-path", tmp_path / "no-mnist", *TINY[:2], "--registry", registry)
    _assert_usage_error(result, "t10k-images-idx3-ubyte", "--dataset-path")
    assert not registry.exists()  # not even the registry directory


def test_bad_input_loses_nothing_already_recorded(grid, cli):
    registry, _ = grid
    before = sorted(p.name for p in (registry / "runs").glob("*.parquet"))
    _assert_usage_error(cli("run", "--betas", "1,x", "--registry", registry), "--betas")
    assert sorted(p.name for p in (registry / "runs").glob("*.parquet")) == before


def test_unwritable_registry(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _assert_usage_error(cli("run", *TINY, "--registry", blocker / "reg"), "registry")


def test_leaderboard_bad_input(grid, cli, tmp_path):
    registry, _ = grid
    _assert_usage_error(cli("leaderboard", "--metric", "nope", "--registry", registry), "unknown metric 'nope'")
    _assert_usage_error(cli("leaderboard", "--by", "model;drop", "--registry", registry), "--by")
    _assert_usage_error(cli("leaderboard", "--registry", tmp_path / "missing"), "does not exist")
    # A value reaches SQL only as a parameter: an injection attempt matches nothing.
    out = cli("leaderboard", "--dataset", "x' OR 1=1 --", "--json", "--registry", registry)
    assert out.exit_code == 0 and json.loads(out.stdout) == []
    # For people, an empty result says why instead of drawing an empty table.
    out = cli("leaderboard", "--model", "dip_vae", "--registry", registry)
    assert out.exit_code == 0 and out.stdout == "" and "no recorded run matches --model dip_vae" in out.stderr


def test_config_file_and_command_line_override(cli, tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text('model = "beta_vae"\nbetas = [1, 4]\nseeds = [0, 1, 2]\nsteps = 50\n')
    out = cli("run", "--config", config, "--dry-run", "--json")
    assert out.exit_code == 0, out.output
    planned = json.loads(out.stdout)["runs"]
    assert len(planned) == 6 and {p["steps"] for p in planned} == {50}
    out = cli("run", "--config", config, "--seeds", "7", "--dry-run", "--json")
    assert {p["seed"] for p in json.loads(out.stdout)["runs"]} == {7}
    config.write_text("betaz = [1]\n")
    _assert_usage_error(cli("run", "--config", config, "--dry-run"), "unknown key(s) betaz")
    _assert_usage_error(cli("run", "--config", tmp_path / "none.toml"), "not found")


def test_python_api_runs_a_grid(tmp_path):
    result = vaebench.run_grid(
        "beta_vae", betas=[2.0], steps=10, batch_sizes=8, registry=str(tmp_path), device="cpu", threads=1,
        eval_samples=300, metrics=["mig", "kl"],
    )
    (record,) = result.records
    assert record["status"] == "ok" and set(record["metrics"]) >= {"mig", "kl"}
    again = vaebench.run_grid("beta_vae", betas=[2.0], steps=10, batch_sizes=8, registry=str(tmp_path), resume=True)
    assert again.records == [] and len(again.skipped) == 1


def test_help_shows_examples_and_defaults():
    from typer.testing import CliRunner

    from vaebench.harness.cli import app

    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    assert "vaebench run --model beta_vae --betas 1,4,8" in out.stdout
    assert "[default: beta_vae]" in out.stdout and "[default: 3000]" in out.stdout


def test_metric_options_reach_the_estimator_and_the_record(cli, tmp_path):
    result = cli("run", "--betas", "4", "--metrics", "mig,kl", "--metric-option", "mig.bins=7", "--json",
                 "--registry", tmp_path, *TINY)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert json.loads(record["metric_params"])["mig"]["bins"] == 7
    # the same run with the reference 20 bins gives another value: the option was used
    ref = cli("run", "--betas", "4", "--metrics", "mig,kl", "--json", "--registry", tmp_path / "ref", *TINY)
    (reference,) = json.loads(ref.stdout)
    assert json.loads(reference["metric_params"])["mig"]["bins"] == 20
    assert record["metrics"]["mig"] != reference["metrics"]["mig"]


@pytest.mark.parametrize("option, message", [
    ("mig.bins", "expected METRIC.KEY=VALUE"),
    ("bins=7", "expected METRIC.KEY=VALUE"),
    ("sap.n_jobs=1", "metric 'sap' is not among the metrics of this run"),
])
def test_bad_metric_options_are_usage_errors(cli, tmp_path, option, message):
    result = cli("run", "--betas", "4", "--metrics", "mig", "--metric-option", option, "--registry", tmp_path, *TINY)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_default_metrics_skip_what_a_one_factor_dataset_cannot_support():
    from vaebench.harness.evaluation import metrics_for
    from vaebench.plugins.manager import get_manager

    m = get_manager()
    on_digits = {x.name for x in metrics_for(m, m.dataset("digits"), None)}
    on_dsprites = {x.name for x in metrics_for(m, m.dataset("dsprites"), None)}
    assert {"modularity", "explicitness"} <= on_dsprites
    assert on_digits == on_dsprites - {"modularity", "explicitness"}
    everything = {x.name for x in metrics_for(m, m.dataset("digits"), ["all"])}
    assert "mig" in everything and not everything & {"modularity", "explicitness", "dci", "dci_fast"}


def test_list_datasets_shows_a_dash_for_an_undeclared_factor_count(cli, monkeypatch):
    import vaebench
    from vaebench.harness import cli as cli_module
    from vaebench.plugins import builtin
    from vaebench.plugins.manager import PluginManager
    from vaebench.plugins.specs import DatasetSpec

    class ThirdParty:
        @vaebench.hookimpl
        def vaebench_register_datasets(self, register):
            register(DatasetSpec(name="their_data", description="factor count not declared", load="x:y"))

    m = PluginManager()
    m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__)
    m.register_plugin(ThirdParty(), "third")
    monkeypatch.setattr(cli_module, "_manager", lambda: m)
    result = cli("list", "datasets")
    assert result.exit_code == 0
    (row,) = [line for line in result.output.splitlines() if "their_data" in line]
    assert "None" not in row
    cells = [c.strip() for c in row.split("│")]
    assert cells[1:4] == ["their_data", "third", "factor count not declared"]
    assert cells[4] == "-"  # factors
    (dsprites,) = [line for line in result.output.splitlines()
                   if "│" in line and line.split("│")[1].strip() == "dsprites"]
    assert [c.strip() for c in dsprites.split("│")][4] == "5"
