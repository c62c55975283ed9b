"""Provenance: each record names the package and version of every plugin that made it, and a
third-party model's plugin version is part of the run's identity (so ``--resume`` never
reuses the old code's results), while built-in models keep the run ids they always had."""

from __future__ import annotations

import dataclasses
import json

import pyarrow.parquet as pq

import vaebench
from vaebench import api
from vaebench.plugins import builtin
from vaebench.plugins.manager import PluginManager
from vaebench.registry.store import read_record
from vaebench.testing import SpecsPlugin, plugin_manager

TINY = dict(steps=4, batch_sizes=8, eval_samples=200, device="cpu", threads=1, architectures="mlp",
            strategy="sequential", metrics=["kl"])


def manager_with(version: str | None) -> PluginManager:
    """The built-ins plus package ``my-vae-pkg`` at ``version`` registering ``my_vae`` (β-VAE's
    code under another name); ``None``: no third-party plugin."""
    m = PluginManager()
    assert m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__).status == "ok"
    if version is not None:
        mine = dataclasses.replace(m.model("beta_vae"), name="my_vae")
        info = m.register_plugin(SpecsPlugin(models=[mine]), "mine", package="my-vae-pkg", version=version)
        assert info.status == "ok", info.error
    return m


def ids(manager: PluginManager, models: list[str]) -> list[str]:
    return [s.run_id for s in api.plan_grid(models, manager=manager, betas=[1, 4], seeds=[0, 1], steps=4)]


def test_a_third_party_models_version_is_in_its_run_id_and_a_builtins_is_not():
    old, new = manager_with("1.0"), manager_with("1.1")
    assert old.model_plugin("my_vae") == "my-vae-pkg==1.0" and old.model_plugin("beta_vae") is None
    assert set(ids(old, ["my_vae"])).isdisjoint(ids(new, ["my_vae"]))
    assert ids(old, ["my_vae"]) == ids(manager_with("1.0"), ["my_vae"])  # the same version: the same runs
    # built-in models: the same ids with or without a third-party plugin, whatever its version
    assert ids(old, ["beta_vae"]) == ids(new, ["beta_vae"]) == ids(manager_with(None), ["beta_vae"])
    spec = api.plan_grid(["my_vae"], manager=new, steps=4)[0]
    assert json.loads(spec.to_json())["model_plugin"] == "my-vae-pkg==1.1"
    assert "model_plugin" not in api.plan_grid(["beta_vae"], manager=new, steps=4)[0].to_json()
    # a plugin registered in-process without a version has no version to be told apart by
    anon = plugin_manager(SpecsPlugin(models=[dataclasses.replace(old.model("beta_vae"), name="anon_vae")]))
    assert anon.model_plugin("anon_vae") is None
    assert anon.package_of("models", "anon_vae") == "SpecsPlugin-0==unknown"


def test_records_carry_provenance_and_resume_retrains_a_new_version(tmp_path, cli):
    registry = str(tmp_path / "reg")
    first = api.run_grid(["beta_vae", "my_vae"], registry=registry, manager=manager_with("1.0"), **TINY)
    assert [r["status"] for r in first.records] == ["ok", "ok"]
    by_model = {r["model"]: r for r in first.records}
    builtin_version = f"vaebench=={vaebench.__version__}"
    assert dict(by_model["my_vae"]["provenance"]) == {
        "vaebench": builtin_version, "model": "my-vae-pkg==1.0", "dataset": builtin_version,
        "backend": builtin_version, "metric.kl": builtin_version}
    assert dict(by_model["beta_vae"]["provenance"])["model"] == builtin_version
    stored = read_record(registry, by_model["my_vae"]["run_id"])
    assert dict(stored["provenance"])["model"] == "my-vae-pkg==1.0"
    shown = cli("show", by_model["my_vae"]["run_id"], "--registry", registry)
    assert shown.exit_code == 0 and "provenance.model" in shown.stdout and "my-vae-pkg==1.0" in shown.stdout
    as_json = json.loads(cli("show", by_model["my_vae"]["run_id"], "--json", "--registry", registry).stdout)
    assert as_json["provenance"]["model"] == "my-vae-pkg==1.0"

    # the author bumps the package to 1.1: --resume trains my_vae again, beta_vae stays recorded
    again = api.run_grid(["beta_vae", "my_vae"], registry=registry, manager=manager_with("1.1"), resume=True, **TINY)
    assert [s.model for s in again.skipped] == ["beta_vae"]
    assert [(r["model"], dict(r["provenance"])["model"]) for r in again.records] == [("my_vae", "my-vae-pkg==1.1")]
    assert again.records[0]["run_id"] != by_model["my_vae"]["run_id"]
    # and either version, planned again, finds its own runs recorded
    for version in ("1.0", "1.1"):
        done = api.run_grid(["beta_vae", "my_vae"], registry=registry, manager=manager_with(version), resume=True,
                            **TINY)
        assert done.records == [] and len(done.skipped) == 2


def test_a_record_without_provenance_still_reads(tmp_path):
    registry = tmp_path / "reg"
    record = api.run_grid(["beta_vae"], registry=str(registry), manager=manager_with(None), **TINY).records[0]
    src = next(registry.rglob(f"{record['run_id']}.*.parquet"))
    pq.write_table(pq.read_table(src).drop_columns(["provenance"]), src)
    assert read_record(str(registry), record["run_id"])["provenance"] is None
    from vaebench.registry import query

    con, skipped = query.open_runs(registry)
    assert skipped == [] and con.sql("SELECT provenance FROM runs").fetchall() == [(None,)]


def test_a_continued_run_carries_the_installed_version(tmp_path):
    from vaebench.harness.runner import continued_spec

    registry = str(tmp_path / "reg")
    parent = api.run_grid(["my_vae"], registry=registry, manager=manager_with("1.0"), **TINY).records[0]
    spec = continued_spec(parent, 2, manager_with("2.0"))
    assert spec.model_plugin == "my-vae-pkg==2.0" and spec.start_step == 4
