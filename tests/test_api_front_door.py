"""The API is the one front door: ``api.run_grid``, ``api.continue_run`` and
``api.leaderboard`` make the checks ``vaebench run / continue / leaderboard`` make, with the
same one-line errors (ValueErrors), before anything trains or is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vaebench
from conftest import TINY
from vaebench import api
from vaebench.plugins.metrics.weights import WeightsError

#: A tiny real run (mlp, 20 steps, 400 held-out observations, only the cheap kl metric).
SMALL = dict(steps=20, batch_sizes=16, eval_samples=400, device="cpu", threads=1, architectures="mlp",
             strategy="sequential", metrics=["kl"])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> tuple[Path, dict]:
    """A registry holding one tiny ok run to continue and rank."""
    registry = tmp_path_factory.mktemp("front") / "reg"
    (record,) = api.run_grid("beta_vae", betas=[4.0], registry=str(registry), **SMALL).records
    assert record["status"] == "ok", record["error"]
    return registry, record


def test_run_grid_checks_the_weights_the_cli_checks(tmp_path, no_weights, cli):
    """A weights file named for fid_inception that is not the network stops the API as it
    stops the CLI (it used to train the grid and record the metric as failed)."""
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the network")
    registry = tmp_path / "reg"
    with pytest.raises(WeightsError) as info:
        api.run_grid("beta_vae", registry=str(registry), **{**SMALL, "metrics": ["kl", "fid_inception"]},
                     fid_weights=str(bad))
    text = str(info.value)
    assert "fid_inception: the FID Inception-v3 TorchScript" in text and "not allow-listed" in text and "\n" not in text
    assert _files(registry) == []
    res = cli("run", "--metrics", "kl,fid_inception", "--fid-weights", bad, "--registry", registry, *TINY)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {text}"
    # The environment variable is checked the same way.
    no_weights_env = tmp_path / "missing" / "default_1.pt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEBENCH_FID_WEIGHTS", str(no_weights_env))
        with pytest.raises(WeightsError, match="does not exist"):
            api.run_grid("beta_vae", registry=str(registry), **{**SMALL, "metrics": ["kl", "fid_inception"]})
    assert _files(registry) == []


def test_run_grid_checks_metric_options_against_the_run_as_the_cli_does(tmp_path, cli):
    registry = tmp_path / "reg"
    with pytest.raises(ValueError) as info:
        api.run_grid("beta_vae", registry=str(registry), **SMALL, metric_options={"sap": {"n_jobs": 1}})
    res = cli("run", "--metrics", "kl", "--metric-option", "sap.n_jobs=1", "--registry", registry, *TINY)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {info.value}"
    assert "--metric-option: metric 'sap' is not among the metrics of this run (kl)" == str(info.value)
    assert _files(registry) == []


def test_continue_run_takes_checkpoint_every_and_checks_it(parent, no_weights, cli):
    registry, record = parent
    before = _files(registry)
    with pytest.raises(ValueError) as info:
        api.continue_run(record["run_id"], 10, registry=str(registry), device="cpu", threads=1, eval_samples=400,
                         checkpoint_every=-1)
    res = cli("continue", record["run_id"], "--steps", "10", "--checkpoint-every", "-1", "--registry", registry)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {info.value}"
    assert str(info.value) == "--checkpoint-every: expected a whole number of steps ≥ 0, got -1"
    # continue makes the weights check too (it used to train first)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEBENCH_FID_WEIGHTS", str(no_weights / "missing" / "default_1.pt"))
        with pytest.raises(WeightsError, match="does not exist"):
            api.continue_run(record["run_id"], 10, registry=str(registry), metrics=["kl", "fid_inception"],
                             device="cpu", threads=1, eval_samples=400)
    assert _files(registry) == before

    # An interrupted continuation leaves its periodic checkpoint; the same call picks up from it.
    class Interrupt:
        def start_run(self, spec, index, total): ...
        def phase(self, run_id, text): ...
        def end_run(self, record): ...
        def skipped(self, spec, status): ...

        def progress(self, run_id, step, values):
            if step >= 35:
                raise KeyboardInterrupt

    kwargs = dict(registry=str(registry), device="cpu", threads=1, eval_samples=400, checkpoint_every=10)
    prepared = api.prepare_continue(record["run_id"], 20, **kwargs)
    assert prepared.execution.checkpoint_every == 10
    with pytest.raises(KeyboardInterrupt):
        api.continue_prepared(prepared, reporter=Interrupt())
    partial = registry / "artifacts" / prepared.spec.run_id / "partial"
    assert json.loads((partial / "training_state.json").read_text())["step"] == 30
    child = api.continue_run(record["run_id"], 20, **kwargs)
    assert child["status"] == "ok" and child["run_id"] == prepared.spec.run_id
    assert "picked up from its periodic checkpoint at step 30" in (child["error"] or "")
    assert not partial.exists()


@pytest.mark.parametrize(("kwargs", "args", "message"), [
    ({"metric": "nosuch"}, ["--metric", "nosuch"], "--metric: unknown metric 'nosuch' (known: "),
    ({"by": ["model", "colour"]}, ["--by", "model,colour"], "--by: unknown column 'colour' (choose from "),
])
def test_leaderboard_checks_its_inputs_as_the_cli_does(parent, cli, kwargs, args, message):
    registry, _ = parent
    with pytest.raises(ValueError) as info:
        api.leaderboard(str(registry), **kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    res = cli("leaderboard", *args, "--registry", registry)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {info.value}"


def test_leaderboard_refuses_a_missing_registry(tmp_path, cli):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"^registry .*nope does not exist"):
        api.leaderboard(str(missing))
    assert not missing.exists()
    res = cli("leaderboard", "--registry", missing)
    assert res.exit_code == 2 and "does not exist" in res.stderr and not missing.exists()


class _AbsentFramework:
    """A backend whose framework is not installed: constructing it fails to import."""

    def __init__(self, manager: object = None) -> None:
        import vaebench_no_such_framework  # noqa: F401


class _AbsentBackendPlugin:
    @vaebench.hookimpl
    def vaebench_register_backends(self, register):
        from vaebench.plugins.specs import BackendSpec

        register(BackendSpec(name="absentfw", description="needs a framework not installed",
                             backend=_AbsentFramework, install="pip install absentfw", model_protocol="torch"))


def test_prepare_grid_names_a_missing_backend_with_its_install_hint(tmp_path):
    from vaebench.harness.plan import plan_grid
    from vaebench.plugins import builtin
    from vaebench.plugins.manager import PluginManager

    manager = PluginManager()
    for plugin, name in ((builtin, "builtin"), (_AbsentBackendPlugin(), "absent")):
        info = manager.register_plugin(plugin, name, package=name, version=vaebench.__version__)
        assert info.status == "ok", info.error
    specs = plan_grid(manager, ["beta_vae"], {"steps": [20], "batch_size": [16]}, architectures=["mlp"],
                      backends=["absentfw"])
    with pytest.raises(api.InputError) as info:
        api.prepare_grid(specs, registry=str(tmp_path / "reg"), metrics=["kl"], device="cpu", manager=manager)
    assert str(info.value) == ("backend 'absentfw' not installed: No module named 'vaebench_no_such_framework' "
                               "(pip install absentfw)")
    assert not list((tmp_path / "reg").rglob("*.parquet"))


# ------------------------------------------------ results and figure commands: one API call each
def _as_printed(data):
    """``data`` as ``vaebench ... --json`` prints it (harness.output.print_json), read back."""
    from vaebench.harness.output import json_safe

    return json.loads(json.dumps(json_safe(data), default=str, allow_nan=False))


def _same_error(call, cli, *args):
    """``call()`` raises a one-line ValueError / RegistryError, and ``vaebench *args`` exits 2
    printing that line; returns the message."""
    from vaebench.registry.store import RegistryError

    with pytest.raises((ValueError, RegistryError)) as info:
        call()
    text = str(info.value)
    assert text and "\n" not in text
    res = cli(*args)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {text}", res.stderr
    return text


def test_show_reads_and_checks_as_the_cli_does(parent, cli, tmp_path):
    registry, record = parent
    text = _same_error(lambda: api.show("zzzz", str(registry)), cli, "show", "zzzz", "--registry", registry)
    assert text == "invalid run id 'zzzz': expected hex characters"
    missing = tmp_path / "nope"
    assert "does not exist" in _same_error(lambda: api.show(record["run_id"], str(missing)), cli,
                                           "show", record["run_id"], "--registry", missing)
    assert not missing.exists()
    shown = api.show(record["run_id"][:8], str(registry), with_attempts=True)
    assert shown["run_id"] == record["run_id"] and [a["shown"] for a in shown["attempts"]] == [True]
    res = cli("show", record["run_id"][:8], "--registry", registry, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == _as_printed(shown)
    assert "attempts" not in api.show(record["run_id"][:8], str(registry))


def test_query_checks_and_returns_what_the_cli_prints(parent, cli, tmp_path):
    registry, record = parent
    assert "SELECT" in _same_error(lambda: api.query("DELETE FROM runs", str(registry)), cli,
                                   "query", "DELETE FROM runs", "--registry", registry)
    assert _same_error(lambda: api.query("SELECT 1", str(registry), timeout=-1.0), cli,
                       "query", "SELECT 1", "--timeout", "-1", "--registry", registry).startswith("--timeout: ")
    assert _same_error(lambda: api.query("SELECT 1", str(registry), memory_limit="lots"), cli,
                       "query", "SELECT 1", "--memory-limit", "lots", "--registry", registry).startswith("--memory-limit: ")
    assert "does not exist" in _same_error(lambda: api.query("SELECT 1", str(tmp_path / "nope")), cli,
                                           "query", "SELECT 1", "--registry", tmp_path / "nope")
    sql = "SELECT run_id, model, beta, metrics['kl'] AS kl FROM runs ORDER BY run_id"
    result = api.query(sql, str(registry))
    assert result.skipped == [] and record["run_id"] in result.table.column("run_id").to_pylist()
    res = cli("query", sql, "--registry", registry, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == _as_printed(result.table.to_pylist(maps_as_pydicts="lossy"))


def test_compare_checks_and_returns_what_the_cli_prints(parent, cli, tmp_path):
    registry, record = parent
    assert _same_error(lambda: api.compare("beta", "beta=4", registry=str(registry)), cli,
                       "compare", "beta", "beta=4", "--registry", registry).startswith("A: ")
    assert _same_error(lambda: api.compare("beta=4", "=4", registry=str(registry)), cli,
                       "compare", "beta=4", "=4", "--registry", registry).startswith("B: ")
    assert "does not exist" in _same_error(lambda: api.compare("beta=4", "beta=4", registry=str(tmp_path / "nope")),
                                           cli, "compare", "beta=4", "beta=4", "--registry", tmp_path / "nope")
    assert "matches no runs" in _same_error(lambda: api.compare("beta=4", "beta=99", ["kl"], str(registry)), cli,
                                            "compare", "beta=4", "beta=99", "--metrics", "kl", "--registry", registry)
    result = api.compare(record["run_id"][:8], "beta=4", ["kl"], str(registry))
    assert result.warnings == [] and result.comparison["a"]["run_ids"] == [record["run_id"]]
    res = cli("compare", record["run_id"][:8], "beta=4", "--metrics", "kl", "--registry", registry, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == _as_printed(result.comparison)


def test_check_checks_and_returns_the_verdicts_the_cli_prints(parent, cli, tmp_path):
    registry, record = parent
    targets = tmp_path / "targets.toml"
    targets.write_text('[[target]]\nname = "mig"\nselect = { model = "beta_vae" }\nmetric = "mig"\nmin_runs = 1\n'
                       'threshold = 0.0\n')  # mig is not recorded: the verdict is an error, exit 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[[target]\n")
    _same_error(lambda: api.check(bad, registry=str(registry)), cli, "check", "--targets", bad, "--registry", registry)
    assert _same_error(lambda: api.check(targets, "=1", registry=str(registry)), cli,
                       "check", "--targets", targets, "--runs", "=1", "--registry", registry).startswith("--runs: ")
    assert _same_error(lambda: api.check(targets, registry=str(registry), attempts="some"), cli,
                       "check", "--targets", targets, "--attempts", "some", "--registry", registry).startswith("--attempts: ")
    assert "does not exist" in _same_error(lambda: api.check(targets, registry=str(tmp_path / "nope")), cli,
                                           "check", "--targets", targets, "--registry", tmp_path / "nope")
    checked = api.check(targets, registry=str(registry))
    assert [r.name for r in checked.results] == ["mig"] and checked.exit_code() == 1 and checked.left_out == []
    res = cli("check", "--targets", targets, "--registry", registry, "--json")
    assert res.exit_code == checked.exit_code() and json.loads(res.stdout) == _as_printed([r.to_dict() for r in checked.results])


def test_report_checks_its_selections_as_the_cli_does(parent, cli, tmp_path):
    registry, record = parent
    out = tmp_path / "rep"
    assert _same_error(lambda: api.report("beta", out=out, registry=str(registry)), cli,
                       "report", "beta", "--out", out, "--registry", registry).startswith("SELECTION: ")
    assert _same_error(lambda: api.report(None, out=out, registry=str(registry), baseline="=1"), cli,
                       "report", "--baseline", "=1", "--out", out, "--registry", registry).startswith("--baseline: ")
    _same_error(lambda: api.report("model=nosuch", out=out, registry=str(registry)), cli,
                "report", "model=nosuch", "--out", out, "--registry", registry)
    assert not out.exists()
    written = api.report("model=beta_vae", out=tmp_path / "a", registry=str(registry))
    res = cli("report", "model=beta_vae", "--out", tmp_path / "b", "--registry", registry, "--json")
    printed = json.loads(res.stdout)
    assert res.exit_code == 0 and written["runs"] == printed["runs"] and written["runs"]["ok"] >= 1
    assert [Path(f).name for f in written["figures"]] == [Path(f).name for f in printed["figures"]]
    assert Path(written["html"]).is_file() and written["notes"] == printed["notes"]


def test_traverse_and_samples_check_and_write_as_the_cli_does(parent, cli, tmp_path):
    registry, record = parent
    run = record["run_id"][:8]
    dim = record["latent_dim"]
    assert _same_error(lambda: api.traverse(run, dims=[dim], registry=str(registry)), cli,
                       "traverse", run, "--dims", str(dim), "--registry", registry) == \
        f"--dims: {dim} is not a latent dimension (0..{dim - 1})"
    _same_error(lambda: api.samples("zzzz", registry=str(registry)), cli, "samples", "zzzz", "--registry", registry)
    for bad in ({"value_range": (1.0, -1.0)}, {"steps": 1}, {"base": -1}, {"base": "posterior"}):
        with pytest.raises(api.InputError):
            api.traverse(run, registry=str(registry), **bad)
    with pytest.raises(api.InputError, match=r"^--n: "):
        api.samples(run, n=0, registry=str(registry))
    # a run recorded without its checkpoint
    from vaebench.registry.store import write_record

    lone = tmp_path / "lone"
    write_record(str(lone), {**record, "artifacts": {}})
    assert "has no checkpoint" in _same_error(lambda: api.samples(run, registry=str(lone)), cli,
                                              "samples", run, "--registry", lone)
    # a good call writes what the command writes
    made = api.traverse(run, dims=[0], steps=3, base="prior", out=tmp_path / "api", registry=str(registry))
    res = cli("traverse", run, "--dims", "0", "--steps", "3", "--base", "prior", "--out", tmp_path / "cli",
              "--registry", registry)
    assert res.exit_code == 0 and made and all(Path(p).is_file() for p in made.values())
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    drawn = api.samples(run, n=4, out=tmp_path / "s", registry=str(registry))
    assert [Path(p).parent for p in drawn.values()] == [tmp_path / "s"] and all(Path(p).is_file() for p in drawn.values())


def test_dry_run_returns_what_the_cli_prints(parent, cli):
    """``api.dry_run`` is ``run --dry-run``: the study's size and each point's fate against
    the registry (the recorded point: a new attempt, or skipped with resume)."""
    registry, record = parent
    specs = api.plan_grid("beta_vae", betas=[4.0, 8.0], steps=20, batch_sizes=16, architectures="mlp")
    planned = api.dry_run(specs, str(registry), device="cpu")
    by_id = {r["run_id"]: r for r in planned.runs}
    assert planned.summary["runs"] == 2 and set(by_id) == {s.run_id for s in specs}
    assert by_id[record["run_id"]]["recorded"] == "ok" and by_id[record["run_id"]]["fate"] == "new attempt"
    other = next(r for r in planned.runs if r["run_id"] != record["run_id"])
    assert other["recorded"] is None and other["fate"] is None and other["picked_up_at"] is None
    resumed = api.dry_run(specs, str(registry), device="cpu", resume=True)
    assert {r["run_id"]: r["fate"] for r in resumed.runs}[record["run_id"]] == "skipped"
    res = cli("run", "--betas", "4,8", "--steps", "20", "--batch-size", "16", "--architecture", "mlp", "--device", "cpu",
              "--registry", registry, "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"summary": json.loads(json.dumps(planned.summary)), "runs": planned.runs}
