"""Executors are plugins (``ExecutorSpec``, ``vaebench_register_executors``): the built-in
``local`` one runs today's strategies and is the default; ``vaebench list executors``;
``--executor`` / a config's ``executor``; an unknown one stops the run before anything
trains; a third-party executor gets the planned specs and the grid's job.

Cost: about 10 s in all (two tiny runs of one point each; the rest trains nothing).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from vaebench import api
from vaebench.plugin import ExecutorResult, ExecutorSpec, GridJob
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.specs import load_object
from vaebench.testing import SpecsPlugin, plugin_manager

from conftest import TINY

ONE_POINT = ["run", "--model", "beta_vae", "--betas", "4", "--metrics", "kl", "--json", *TINY]


def test_list_executors_shows_local(cli):
    human = cli("list", "executors")
    assert human.exit_code == 0 and "local" in human.output and "--strategy" in human.output
    rows = json.loads(cli("list", "executors", "--json").stdout)
    local = next(r for r in rows if r["name"] == "local")
    assert local["plugin"] == "builtin" and local["options"] == []


def test_executor_local_records_what_the_default_records(cli, tmp_path):
    default = cli(*ONE_POINT, "--registry", tmp_path / "default")
    local = cli(*ONE_POINT, "--executor", "local", "--registry", tmp_path / "local")
    assert default.exit_code == 0 and local.exit_code == 0, default.output + local.output
    (d,), (lo,) = json.loads(default.stdout), json.loads(local.stdout)
    assert d["run_id"] == lo["run_id"] and d["status"] == lo["status"] == "ok"
    assert (d["strategy"], d["concurrent_runs"]) == (lo["strategy"], lo["concurrent_runs"]) == ("sequential", 1)
    assert d["final_loss"] == lo["final_loss"] and d["metrics"] == lo["metrics"]


@pytest.mark.parametrize("where", ["flag", "config"])
def test_an_unknown_executor_is_one_line_and_nothing_trains(cli, tmp_path, where):
    registry = tmp_path / "registry"
    if where == "flag":
        result = cli(*ONE_POINT, "--executor", "nosuch", "--registry", registry)
    else:
        config = tmp_path / "grid.toml"
        config.write_text('[run]\nexecutor = "nosuch"\n', encoding="utf-8")
        result = cli(*ONE_POINT, "--config", config, "--registry", registry)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line == "error: unknown executor 'nosuch' (available: local, ray, slurm)"
    assert not registry.exists() or not any(registry.rglob("*.parquet"))


class Recorder:
    """A detaching executor that trains nothing: it keeps what it was handed."""

    detaches = True
    remote = True
    handed: list[tuple[list[Any], GridJob, dict[str, Any]]] = []

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def run(self, specs, job: GridJob) -> ExecutorResult:
        Recorder.handed.append((list(specs), job, self.options))
        return ExecutorResult(records=[], strategy="submitted", jobs=[f"job-{i}" for i in range(len(specs))])


RECORDER = ExecutorSpec(name="recorder", description="Keeps the specs it is handed.", executor=Recorder,
                        options={"partition": (str, "debug", "where the jobs go"), "gpus": (int, 0, "per task")})


def test_a_third_party_executor_is_handed_the_planned_specs(tmp_path):
    manager = plugin_manager(SpecsPlugin(executors=[RECORDER]))
    assert {"local", "slurm", "recorder"} <= set(manager.specs["executors"])
    Recorder.handed.clear()
    grid = dict(betas=[1.0, 4.0], seeds=[0], steps=[5], batch_size=[16])
    planned = api.plan_grid("beta_vae", manager=manager, **grid)
    result = api.run_grid("beta_vae", registry=str(tmp_path / "reg"), metrics=["kl"], device="cpu", eval_samples=300,
                          strategy="sequential", manager=manager, executor="recorder",
                          executor_options={"gpus": 2}, **grid)
    (specs, job, options), = Recorder.handed
    assert [s.run_id for s in specs] == [s.run_id for s in planned]
    assert job.registry == str(tmp_path / "reg") and job.strategy == "sequential" and job.metric_names == ["kl"]
    assert job.manager is manager and job.execution.device == "cpu" and job.datasets(specs[0]) is not None
    assert options == {"partition": "debug", "gpus": 2}
    assert (result.executor, result.jobs, result.records, result.strategy) == (
        "recorder", ["job-0", "job-1"], [], "submitted")
    with pytest.raises(api.InputError, match="executor 'recorder': unknown option 'qos'"):
        api.run_grid("beta_vae", registry=str(tmp_path / "reg"), manager=manager, executor="recorder",
                     executor_options={"qos": "high"}, **grid)
    with pytest.raises(api.InputError, match="option 'gpus': 'two' is not of type int"):
        api.run_grid("beta_vae", registry=str(tmp_path / "reg"), manager=manager, executor="recorder",
                     executor_options={"gpus": "two"}, **grid)
    assert len(Recorder.handed) == 1  # neither bad call reached the executor


def _registered(*specs: Any) -> tuple[PluginManager, Any]:
    manager = plugin_manager()
    info = manager.register_plugin(SpecsPlugin(executors=list(specs)), name="third")
    return manager, info


@pytest.mark.parametrize("make, problem", [
    (lambda: ExecutorSpec(name="bad", description="-", executor="not a path"),
     "executor 'bad': executor: import path 'not a path' must look like 'package.module:attribute'"),
    (lambda: ExecutorSpec(name="bad", description="-", executor="pkg.mod:make", options={"gpus": (list, [], "-")}),
     "executor 'bad': option 'gpus' must be (type, default, help)"),
    (lambda: ExecutorSpec(name="bad", description="-", executor="pkg.mod:make", options={"gpus": (int, "2", "-")}),
     "executor 'bad': option 'gpus': default '2' is not of type int"),
])
def test_a_malformed_executor_spec_fails_its_plugin(make, problem):
    manager, info = _registered(make)
    assert info.status == "error" and problem in info.error
    assert "bad" not in manager.specs["executors"] and "local" in manager.specs["executors"]


def test_executor_import_paths_are_checked_and_names_clash_like_other_specs():
    missing = ExecutorSpec(name="gone", description="-", executor="vaebench.harness.no_such_module:make")
    clash = ExecutorSpec(name="local", description="-", executor="vaebench.harness.local_executor:local_executor")
    manager, info = _registered(missing, clash)
    assert info.status == "ok" and info.registered["executors"] == ["gone"]
    assert manager.owner("executors", "local") == "builtin"
    assert any("executor 'local' is registered by plugin 'builtin'" in line for line in manager.clashes)
    problems, _ = manager.import_problems()
    assert [p for p in problems if "executor" in p] == [
        "executor 'gone' (plugin 'third'): executor 'vaebench.harness.no_such_module:make': does not import: "
        "ModuleNotFoundError: No module named 'vaebench.harness.no_such_module'"]
    assert callable(load_object(manager.executor("local").executor))


def test_options_given_as_none_are_unset_so_a_manifest_rebuilds_its_executor():
    """A grid manifest keeps every option, the unset ones as null; status builds the executor
    from it again (a None refused here left every lost point of a Slurm grid unsettled)."""
    from vaebench.plugins.manager import get_manager

    spec = get_manager().executor("slurm")
    options = spec.check_options({"partition": "debug", "mem": "2G"})
    assert options["account"] is None
    assert spec.check_options(options) == options
