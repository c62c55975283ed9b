"""Reference packs, bootstrap intervals over seeds and seeds needed: records written with the
store's writer into a temp registry (no training), the real CLI and a real installed plugin."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from conftest import ROOT, run_vaebench
from vaebench import api
from vaebench.harness.seed_noise import bootstrap_ci, seeds_needed
from vaebench.plugins.specs import ReferenceSpec
from vaebench.registry.store import write_record
from vaebench.testing import SpecsPlugin, plugin_manager

FIXTURE = ROOT / "tests" / "data" / "reference_fixture.toml"
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
_ids = iter(range(1, 1_000_000))


def record(beta: float, seed: int, mig: float, bins: int = 20, n: int = 10000, **config: Any) -> dict[str, Any]:
    """An ok beta_vae run on dsprites whose MIG was estimated with ``bins`` bins on ``n`` points."""
    return {"run_id": f"{next(_ids):012x}", "status": "ok", "model": "beta_vae", "backend": "torch",
            "dataset": "dsprites", "dataset_variant": "full", "beta": beta, "latent_dim": 10, "seed": seed, **config,
            "steps": 100, "metrics": {"mig": mig}, "started_at": T0, "finished_at": T0 + dt.timedelta(seconds=1),
            "metric_params": json.dumps({"mig": {"n": n, "bins": bins, "estimator": "histogram"},
                                         "_eval": {"n": n, "eval_seed": 0}})}


def registry(tmp_path: Path, runs: list[dict[str, Any]]) -> Path:
    reg = tmp_path / "reg"
    for run in runs:
        write_record(reg, run)
    return reg


def fixture_manager():
    return plugin_manager(SpecsPlugin(references=[ReferenceSpec("fixture", "test fixture", path=str(FIXTURE))]))


def by_beta(result) -> dict[float, dict[str, Any]]:
    rows = result.table.to_pylist()
    return {row["beta"]: {**row, **extra} for row, extra in zip(rows, result.annotations)}


def test_a_row_stands_as_a_percentile_or_inside_the_range(tmp_path):
    """beta=4 (mean 0.25) against per-seed values 0.1..0.4: the 50th percentile; beta=8 (mean
    0.25) against the range [0.1, 0.2]: above it; beta=1: no entry in the pack."""
    reg = registry(tmp_path, [record(4.0, 0, 0.2), record(4.0, 1, 0.3), record(8.0, 0, 0.25), record(8.0, 1, 0.25),
                              record(1.0, 0, 0.05)])
    rows = by_beta(api.leaderboard_result(str(reg), "mig", manager=fixture_manager(), reference="fixture"))
    assert rows[4.0]["reference"]["standing"] == {"percentile": 50.0, "text": "50th percentile of 4 seeds"}
    assert rows[8.0]["reference"]["standing"]["range"] == "above"
    assert rows[1.0]["reference"]["text"] == "no reference for this model/dataset/setting"
    assert "invented for tests" in rows[4.0]["reference"]["source"]


def test_a_row_of_other_estimator_settings_is_refused_with_a_reason(tmp_path):
    reg = registry(tmp_path, [record(4.0, 0, 0.2, bins=10), record(4.0, 1, 0.3, bins=10),
                              record(8.0, 0, 0.15, n=500)])
    rows = by_beta(api.leaderboard_result(str(reg), "mig", manager=fixture_manager(), reference="fixture"))
    assert rows[4.0]["reference"]["refused"] == "mig estimator setting bins is 10 here, 20 in the reference"
    assert "standing" not in rows[4.0]["reference"]
    assert rows[8.0]["reference"]["refused"] == "mig estimator setting n is 500 here, 10000 in the reference"


def test_an_unknown_pack_is_one_line_and_exit_2(cli, tmp_path):
    reg = registry(tmp_path, [record(4.0, 0, 0.2)])
    res = cli("leaderboard", "--registry", reg, "--reference", "no_such_pack")
    assert res.exit_code == 2
    assert "unknown reference 'no_such_pack'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real installed distribution (.dist-info + a package with a TOML data file) whose plugin
    ships the fixture pack as ``shipped``: the environment a fresh interpreter finds it in."""
    site = tmp_path_factory.mktemp("site")
    pkg = site / "refpack_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from vaebench.plugin import ReferenceSpec, hookimpl

        @hookimpl
        def vaebench_register_references(register):
            register(ReferenceSpec(name="shipped", description="a pack a plugin ships",
                                   path="refpack_plugin:packs/shipped.toml"))
    """))
    (pkg / "packs").mkdir()
    (pkg / "packs" / "shipped.toml").write_text(FIXTURE.read_text())
    info = site / "refpack_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: refpack-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vaebench]\nrefpack = refpack_plugin\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), *sys.path])}


def test_a_pack_shipped_by_an_installed_plugin_as_package_data(tmp_path, plugin_env):
    """Found through the entry point: `vaebench list references` shows it and `leaderboard
    --reference` reads it from the package's data file."""
    reg = registry(tmp_path, [record(4.0, 0, 0.2), record(4.0, 1, 0.3)])
    listed = run_vaebench("list", "references", "--json", env_extra=plugin_env)
    assert listed.returncode == 0, listed.stderr
    assert {r["name"]: r["plugin"] for r in json.loads(listed.stdout)}["shipped"] == "refpack"
    board = run_vaebench("leaderboard", "--registry", str(reg), "--reference", "shipped", "--json", env_extra=plugin_env)
    assert board.returncode == 0, board.stderr
    (row,) = json.loads(board.stdout)
    assert row["reference"]["standing"]["percentile"] == 50.0


def test_the_report_shows_intervals_seeds_needed_and_the_reference(tmp_path, plugin_env):
    reg = registry(tmp_path, [record(4.0, 0, 0.2), record(4.0, 1, 0.3), record(8.0, 0, 0.1, bins=10),
                              record(8.0, 1, 0.14, bins=10)])
    out = tmp_path / "report"
    res = run_vaebench("report", "--registry", str(reg), "--out", str(out), "--reference", "shipped",
                       env_extra=plugin_env)
    assert res.returncode == 0, res.stderr
    text = (out / "report.md").read_text()
    low, high = bootstrap_ci([0.2, 0.3])
    assert "50th percentile of 4 seeds" in text
    assert "refused: mig estimator setting bins is 10 here, 20 in the reference" in text
    assert "Seeds needed to tell beta_vae dsprites beta=4.0 from beta_vae dsprites beta=8.0" in text
    from vaebench.harness.output import fmt
    assert f"[{fmt(low)}–{fmt(high)}]" in text
    bad = run_vaebench("report", "--registry", str(reg), "--out", str(tmp_path / "r2"), "--reference", "nope")
    assert bad.returncode == 2 and "unknown reference 'nope'" in bad.stderr
    assert not (tmp_path / "r2").exists()


def test_bootstrap_interval_is_reproducible_and_none_for_one_seed(cli, tmp_path):
    reg = registry(tmp_path, [record(4.0, s, v) for s, v in enumerate((0.11, 0.31, 0.2, 0.25))]
                   + [record(8.0, 0, 0.4)])
    first = json.loads(cli("leaderboard", "--registry", reg, "--json").stdout)
    again = json.loads(cli("leaderboard", "--registry", reg, "--json").stdout)
    # (DuckDB's parallel avg may differ in the last bit between two runs: compare what this adds)
    assert [(r["ci95"], r["seeds_needed"]) for r in first] == [(r["ci95"], r["seeds_needed"]) for r in again]
    rows = {r["beta"]: r for r in first}
    assert rows[8.0]["ci95"] is None
    low, high = rows[4.0]["ci95"]
    assert 0.11 <= low < rows[4.0]["mean"] < high <= 0.31
    assert [low, high] == list(bootstrap_ci([0.11, 0.31, 0.2, 0.25]))
    assert bootstrap_ci([0.3]) is None and bootstrap_ci([0.3, 0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.25, 0.2, 0.31, 0.11]) == (low, high)  # the values' order does not matter
    # the top two rows carry the seeds needed; beta=8 has one seed, so no estimate
    assert rows[8.0]["seeds_needed"]["seeds"] is None


def test_seeds_needed_on_known_numbers():
    """Cohen's tables (two-sided α=0.05, power 0.8): d=0.5 -> 64, d=0.8 -> 26, d=1 -> 17 per group;
    and by hand for d=0.5: power at 63 seeds is under 0.8, at 64 it is not."""
    assert seeds_needed(0.3, 0.2, 0.2, 0.2).seeds == 64
    assert seeds_needed(0.8, 1.0, 0.0, 1.0).seeds == 26
    assert seeds_needed(1.0, 1.0, 0.0, 1.0).seeds == 17

    def power(n: int, d: float) -> float:
        df, nc = 2 * n - 2, d * math.sqrt(n / 2)
        crit = stats.t.ppf(0.975, df)
        return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)

    assert power(63, 0.5) < 0.8 <= power(64, 0.5)
    # unequal sds pool as sqrt((a² + b²) / 2): sds 0.1 and 0.3 -> sqrt(0.05); diff 0.2 -> d = 0.894
    est = seeds_needed(0.5, 0.1, 0.3, 0.3)
    assert est.effect == pytest.approx(0.2 / math.sqrt(0.05))
    assert power(est.seeds - 1, est.effect) < 0.8 <= power(est.seeds, est.effect)
    assert seeds_needed(0.2, 0.1, 0.2, 0.1).seeds is None
    assert seeds_needed(0.3, 0.0, 0.2, 0.0) == seeds_needed(0.3, 0.0, 0.2, 0.0)  # no noise: 2 seeds, no infinite d
    assert (seeds_needed(0.3, 0.0, 0.2, 0.0).seeds, seeds_needed(0.3, 0.0, 0.2, 0.0).effect) == (2, None)


def test_compare_says_the_seeds_needed_per_metric(cli, tmp_path):
    """Two selections, sds 0.2 each and means 0.3 / 0.2 (d = 0.5): 64 seeds a side, Cohen's table."""
    h = 0.2 / math.sqrt(2)  # two values m ± h have sample sd 0.2
    reg = registry(tmp_path, [record(4.0, 0, 0.3 - h), record(4.0, 1, 0.3 + h),
                              record(8.0, 0, 0.2 - h), record(8.0, 1, 0.2 + h)])
    res = cli("compare", "beta=8", "beta=4", "--registry", reg, "--json")
    assert res.exit_code == 0, res.stderr
    (row,) = [r for r in json.loads(res.stdout)["metrics"] if r["metric"] == "mig"]
    assert row["a"]["std"] == pytest.approx(0.2) and row["b"]["std"] == pytest.approx(0.2)
    assert row["delta"] == pytest.approx(0.1)
    assert row["seeds_needed"] == 64


def test_the_builtin_lin2020_pack_sets_factor_vae_against_table_1(tmp_path):
    """The shipped pack (Lin et al. 2020 Table 1, MIG of FactorVAE): gamma=10 mean 0.40 ± 0.01 over
    10 runs on 73,728 points with 20 bins. Runs scored the same way get a z; runs scored on 500
    points are refused."""
    from vaebench.harness.references import load_pack

    pack = load_pack("lin2020")
    assert [e.setting["gamma"] for e in pack.entries] == [1.0, 10.0, 20.0, 40.0]
    assert all("Table 1" in e.source and e.estimator == {"bins": 20, "n": 73728} for e in pack.entries)
    fv = {"model": "factor_vae", "gamma": 10.0}
    reg = registry(tmp_path, [record(None, 0, 0.41, n=73728, **fv), record(None, 1, 0.43, n=73728, **fv),
                              record(None, 0, 0.3, n=500, **{**fv, "gamma": 40.0})])
    result = api.leaderboard_result(str(reg), "mig", reference="lin2020")
    rows = {row["gamma"]: {**row, **extra} for row, extra in zip(result.table.to_pylist(), result.annotations)}
    assert rows[10.0]["reference"]["standing"]["z"] == pytest.approx((0.42 - 0.40) / 0.01)
    assert rows[10.0]["reference"]["mean"] == 0.40 and rows[10.0]["reference"]["n_seeds"] == 10
    assert rows[40.0]["reference"]["refused"] == "mig estimator setting n is 500 here, 73728 in the reference"
