"""A plugin author's ordinary mistakes are caught when the plugin registers (issue 22):
a misspelt direction or need, a malformed import path, a misspelt or unmarked hook; a
name two plugins register is a clash that keeps everything else; what loads is chosen
with ``VAEBENCH_PLUGINS`` / ``VAEBENCH_DISABLE_PLUGINS`` / ``--disable-plugin``;
``vaebench plugins --check`` imports every import path; ``--debug`` shows tracebacks;
plugin-provided text in tables is printed as written (no rich markup).

In-process registrations use a real ``PluginManager``; the CLI cases run real
interpreters over hand-written ``.dist-info`` distributions (no mocks).
"""

from __future__ import annotations

import json
import types

import pytest

import vaebench
from vaebench.testing import SpecsPlugin
from vaebench.plugins import builtin
from vaebench.plugins import manager as manager_module
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.specs import DatasetSpec, MetricSpec, ModelSpec

from conftest import run_vaebench
from test_plugins import _by_name, _env, _json, _stderr_lines, write_fake_dist

NOTHING = {"models": [], "metrics": [], "datasets": [], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}




def _model(name: str) -> ModelSpec:
    return ModelSpec(name=name, description=f"{name} (test)", backends={"torch": "my_pkg.model:build"})


def _metric(name: str, **kw) -> MetricSpec:
    return MetricSpec(name=name, description=f"{name} (test)", **{"compute": "my_pkg.metric:compute", **kw})


# ----------------------------------------------------------------- found item 2: checked at registration
@pytest.mark.parametrize("kind, bad, reason", [
    ("metrics", lambda: _metric("m", direction="lowerr"), "metric 'm': direction 'lowerr' is not one of higher, lower, none"),
    ("metrics", lambda: _metric("m", needs=frozenset({"encodings", "latents"})), "metric 'm': unknown need(s) 'encodings'"),
    ("metrics", lambda: _metric("m", needs="latents"), "metric 'm': needs is a set of names"),
    ("metrics", lambda: _metric("m", compute="my_pkg.metric.compute"), "metric 'm': compute: import path 'my_pkg.metric.compute' must look like"),
    ("metrics", lambda: _metric("m", compute="my-pkg.metric:compute"), "metric 'm': compute: import path"),
    ("models", lambda: ModelSpec(name="m", description="d", backends={"torch": "my_pkg.model"}), "model 'm': backends['torch']: import path"),
    ("datasets", lambda: DatasetSpec(name="m", description="d", load=42), "dataset 'm': load: 42 is neither a callable nor an import path"),
])
def test_a_bad_spec_fails_its_plugin_with_one_line(manager, kind, bad, reason):
    plugin = SpecsPlugin(models=[_model("kept_out")])
    getattr(plugin, kind).append(bad)
    info = manager.register_plugin(plugin, "careless", package="careless-pkg")
    assert info.status == "error"
    assert reason in info.error and "\n" not in info.error
    assert info.registered == NOTHING and "kept_out" not in manager.specs["models"]
    assert manager.failed() == [info]


def test_needs_given_as_a_set_is_accepted_as_a_frozenset():
    spec = _metric("m", needs={"latents", "factors"})
    assert spec.needs == frozenset({"latents", "factors"}) and isinstance(spec.needs, frozenset)


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def test_misspelt_hook_fails_the_plugin(manager):
    @vaebench.hookimpl
    def vaebench_register_metric(register):  # the hook is vaebench_register_metrics
        register(_metric("never"))

    info = manager.register_plugin(_module("typo_plugin", vaebench_register_metric=vaebench_register_metric), "typo")
    assert info.status == "error"
    assert info.error == ("'vaebench_register_metric' is not a vaebench hook "
                          "(did you mean 'vaebench_register_metrics'?)")
    assert "never" not in manager.specs["metrics"]


@pytest.mark.parametrize("attr, specname, says", [
    ("register_metrics", None, "'register_metrics' is marked @hookimpl but 'register_metrics' is not a vaebench hook "
                               "(did you mean 'vaebench_register_metrics'?)"),
    ("vaebenchregister_metrics", None, "'vaebenchregister_metrics' is marked @hookimpl but 'vaebenchregister_metrics' "
                                       "is not a vaebench hook (did you mean 'vaebench_register_metrics'?)"),
    ("anything", "vaebench_register_metric", "'anything' is marked @hookimpl but 'vaebench_register_metric' is not a "
                                             "vaebench hook (did you mean 'vaebench_register_metrics'?)"),
])
def test_a_marked_hook_that_names_no_hook_fails_the_plugin(manager, attr, specname, says):
    """A function marked ``@hookimpl`` whose name (or ``specname``) is no vaebench hook was
    ignored by pluggy while ``vaebench plugins`` said ok."""
    def hook(register):
        register(_metric("never"))

    marked = vaebench.hookimpl(specname=specname)(hook) if specname else vaebench.hookimpl(hook)
    info = manager.register_plugin(_module("prefixless", **{attr: marked}), "prefixless")
    assert (info.status, info.error) == ("error", says)
    assert "never" not in manager.specs["metrics"]


@pytest.mark.parametrize("bad, says", [
    (dict(tiers=("good", 0.3)), "metric 'm': tiers holds (label, bound) pairs best first"),
    (dict(tiers=(("good", "high"),)), "metric 'm': tiers holds (label, bound) pairs best first"),
    (dict(min_factors=0), "metric 'm': min_factors must be an int >= 1, got 0"),
])
def test_malformed_tiers_or_min_factors_fail_at_registration(manager, bad, says):
    """Only the test kit checked these: ``tiers=("good", 0.3)`` passed ``plugins --check`` and
    then crashed ``leaderboard`` with a traceback."""
    info = manager.register_plugin(SpecsPlugin(metrics=[]), "placeholder")  # the manager is usable
    with pytest.raises(ValueError, match=r"^" + says.replace("(", r"\(").replace(")", r"\)")):
        _metric("m", **bad)
    assert info.status == "ok"
    assert _metric("m", tiers=[["good", 1]]).tiers == (("good", 1.0),)  # lists from a config are pairs too


def test_hook_without_the_marker_fails_the_plugin(manager):
    class Unmarked:
        @vaebench.hookimpl
        def vaebench_register_models(self, register):
            register(_model("marked_model"))

        def vaebench_register_metrics(self, register):  # no @hookimpl: pluggy would never call it
            register(_metric("unmarked_metric"))

    info = manager.register_plugin(Unmarked(), "unmarked")
    assert info.status == "error"
    assert info.error.startswith("'vaebench_register_metrics' lacks the @hookimpl marker")
    assert "marked_model" not in manager.specs["models"]


def test_other_vaebench_names_on_a_plugin_module_are_not_hooks(manager):
    """A plugin package named ``vaebench_*`` imported into the plugin module, or a constant, is no hook."""
    @vaebench.hookimpl
    def vaebench_register_models(register):
        register(_model("fine_model"))

    plugin = _module("fine", vaebench_register_models=vaebench_register_models,
                     vaebench_my_pkg=types.ModuleType("vaebench_my_pkg"), vaebench_VERSION="1.0")
    info = manager.register_plugin(plugin, "fine")
    assert (info.status, info.error) == ("ok", "")
    assert info.registered["models"] == ["fine_model"]


def test_import_problems_imports_every_path():
    """Spelling is checked at registration; ``import_problems`` (``plugins --check``) imports."""
    m = PluginManager()
    info = m.register_plugin(SpecsPlugin(
        models=[ModelSpec(name="needs_absent_framework", description="d",
                          backends={"torch": "vaebench.harness.output:no_such_factory"})],
        metrics=[_metric("gone", compute="vaebench_no_such_module_xyz:compute"),
                 _metric("here", compute="json:dumps", direction="none")]), "paths")
    assert info.status == "ok"  # well spelt: registration does not import
    problems, notes = m.import_problems()
    assert len(problems) == 2 and notes == []
    assert any("metric 'gone' (plugin 'paths'): compute 'vaebench_no_such_module_xyz:compute'" in p
               and "does not import" in p for p in problems)
    assert any("model 'needs_absent_framework'" in p and "no_such_factory" in p for p in problems)
    assert not any("'here'" in p for p in problems)
    # the cheap part, without running any module: the path whose module is not there
    assert m.unfound_paths() == {"paths": ["metric 'gone': compute 'vaebench_no_such_module_xyz:compute': "
                                           "no module 'vaebench_no_such_module_xyz'"]}


# ----------------------------------------------------------------- found item 4: a clash keeps the rest
def test_clash_between_two_third_party_plugins_keeps_the_rest(manager):
    first = manager.register_plugin(SpecsPlugin(models=[_model("gauss_vae")], metrics=[_metric("recon_nll")]),
                                    "first", package="first-pkg", version="1.0")
    second = manager.register_plugin(SpecsPlugin(models=[_model("gauss_vae"), _model("second_only")],
                                             metrics=[_metric("second_metric")]),
                                     "second", package="second-pkg", version="2.0")
    assert (first.status, second.status) == ("ok", "ok")
    assert manager.owner("models", "gauss_vae") == "first"
    assert second.registered == {"models": ["second_only"], "metrics": ["second_metric"], "datasets": [], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}
    assert manager.owner("models", "second_only") == "second" and "second_metric" in manager.specs["metrics"]
    (line,) = manager.clashes
    assert line == ("model 'gauss_vae' is registered by plugin 'first' (first-pkg 1.0) and by plugin 'second' "
                    "(second-pkg 2.0): plugin 'first' keeps it")
    assert first.warnings == [line] and second.warnings == [line]
    assert manager.failed() == []


def test_clash_with_the_builtin_keeps_the_builtin(manager):
    before = manager.specs["models"]["beta_vae"]
    info = manager.register_plugin(SpecsPlugin(models=[_model("fresh"), _model("beta_vae")]), "clash", package="clash-pkg")
    assert info.status == "ok" and info.registered["models"] == ["fresh"]
    assert manager.specs["models"]["beta_vae"] is before and manager.owner("models", "beta_vae") == "builtin"
    assert "'beta_vae'" in manager.clashes[0] and "'builtin'" in manager.clashes[0] and "'clash'" in manager.clashes[0]
    assert manager.clashes[0] in next(p for p in manager.plugins if p.name == "builtin").warnings


# ----------------------------------------------------------------- choosing what loads
CLEAN = """
    from vaebench.plugin import MetricSpec, hookimpl

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="{name}_metric", description="score [extras] [example plugin]",
                            compute="json:dumps", direction="lower"))
"""


@pytest.fixture
def two_plugins(tmp_path):
    write_fake_dist(tmp_path, "alpha-plugin", "0.1", {"alpha": "alpha_plugin"}, {"alpha_plugin": CLEAN.format(name="alpha")})
    write_fake_dist(tmp_path, "beta-plugin", "0.2", {"beta": "beta_plugin"}, {"beta_plugin": CLEAN.format(name="beta")})
    return _env(tmp_path)


def _statuses(proc) -> dict[str, str]:
    return {r["name"]: r["status"] for r in _json(proc)}


def test_selection_from_env():
    PluginSelection = manager_module.PluginSelection
    assert PluginSelection.from_env({}) == PluginSelection(None, frozenset())
    sel = PluginSelection.from_env({"VAEBENCH_PLUGINS": "", "VAEBENCH_DISABLE_PLUGINS": "a, b"})
    assert sel.only == frozenset() and sel.disabled == {"a", "b"}
    assert sel.skip_reason("c") == "not named in VAEBENCH_PLUGINS"


def test_choosing_which_plugins_load(two_plugins):
    env = two_plugins
    assert _statuses(run_vaebench("plugins", "--json", env_extra=env)) == {"builtin": "ok", "alpha": "ok", "beta": "ok"}
    only = run_vaebench("plugins", "--json", env_extra={**env, "VAEBENCH_PLUGINS": "beta"})
    assert _statuses(only) == {"builtin": "ok", "alpha": "disabled", "beta": "ok"}
    assert _by_name(_json(only))["alpha"]["error"] == "not named in VAEBENCH_PLUGINS"
    assert _statuses(run_vaebench("plugins", "--json", env_extra={**env, "VAEBENCH_PLUGINS": ""})) == {
        "builtin": "ok", "alpha": "disabled", "beta": "disabled"}
    off = run_vaebench("--disable-plugin", "alpha", "list", "metrics", "--json",
                       env_extra={**env, "VAEBENCH_DISABLE_PLUGINS": "beta"})
    metrics = _by_name(_json(off))
    assert "alpha_metric" not in metrics and "beta_metric" not in metrics and "mig" in metrics
    assert off.stderr == ""  # disabled is not failed: no warning
    # the built-in plugin cannot be disabled
    refused = run_vaebench("--disable-plugin", "builtin", "plugins", env_extra=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert _stderr_lines(refused) == ["error: --disable-plugin builtin: the built-in plugin cannot be disabled"]
    noted = run_vaebench("plugins", "--json", env_extra={**env, "VAEBENCH_DISABLE_PLUGINS": "builtin,gamma"})
    assert _statuses(noted)["builtin"] == "ok"
    assert _stderr_lines(noted) == [
        "note: the built-in plugin 'builtin' cannot be disabled: loaded",
        "note: no installed plugin is named 'gamma' (VAEBENCH_PLUGINS / VAEBENCH_DISABLE_PLUGINS)"]


# ----------------------------------------------------------------- found item 10: bracketed text survives
def test_bracketed_descriptions_are_printed_as_written(two_plugins):
    proc = run_vaebench("list", "metrics", env_extra=two_plugins)
    assert proc.returncode == 0, proc.stderr
    assert "score [extras] [example plugin]" in " ".join(proc.stdout.split())


# ----------------------------------------------------------------- plugins --check
BROKEN_PATH_AND_CLASH = """
    from vaebench.plugin import MetricSpec, ModelSpec, hookimpl

    @hookimpl
    def vaebench_register_models(register):
        register(ModelSpec(name="beta_vae", description="a second beta_vae", backends={}))
        register(ModelSpec(name="own_model", description="kept", backends={}))

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="ghost", description="d", compute="vaebench_no_such_module_xyz:compute"))
"""


def test_plugins_check_exits_1_on_any_problem(tmp_path, cli):
    write_fake_dist(tmp_path, "sloppy-plugin", "0.3", {"sloppy": "sloppy_plugin"},
                    {"sloppy_plugin": BROKEN_PATH_AND_CLASH})
    write_fake_dist(tmp_path, "typo-plugin", "0.4", {"typo": "typo_plugin"}, {"typo_plugin": """
        from vaebench.plugin import hookimpl

        @hookimpl
        def vaebench_register_metric(register):
            pass
    """})
    env = _env(tmp_path)
    # without --check: listed (the clash shown on both), exit 0
    rows = _by_name(_json(run_vaebench("plugins", "--json", env_extra=env)))
    assert rows["sloppy"]["status"] == "ok" and rows["sloppy"]["registered"]["models"] == ["own_model"]
    assert rows["sloppy"]["warnings"] == rows["builtin"]["warnings"] and len(rows["builtin"]["warnings"]) == 1
    assert rows["typo"]["status"] == "error" and "did you mean 'vaebench_register_metrics'" in rows["typo"]["error"]
    # a path whose module is not there is shown without --check (no module run to find it)
    assert rows["sloppy"]["unfound"] == ["metric 'ghost': compute 'vaebench_no_such_module_xyz:compute': "
                                         "no module 'vaebench_no_such_module_xyz'"]
    assert rows["builtin"]["unfound"] == []
    table = run_vaebench("plugins", env_extra=env)
    assert table.returncode == 0 and "clash" in table.stdout and "error" in table.stdout
    assert "not found" in table.stdout and "vaebench plugins --check" in table.stderr

    proc = run_vaebench("plugins", "--check", "--json", env_extra=env)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    problems = out["problems"]
    assert len(problems) == 3, problems
    assert problems[0].startswith("plugin 'typo' (typo-plugin 0.4): 'vaebench_register_metric' is not a vaebench hook")
    assert problems[1].startswith("model 'beta_vae' is registered by plugin 'builtin'") and "'sloppy'" in problems[1]
    assert "metric 'ghost' (plugin 'sloppy')" in problems[2] and "does not import" in problems[2]
    # the built-in plugin's own paths all import
    assert not any("(plugin 'builtin'):" in p for p in problems)


def test_plugins_check_exits_0_with_the_builtin_alone(cli):
    result = cli("plugins", "--check")
    assert result.exit_code == 0, result.output
    assert "builtin" in result.output and "no problems" in result.output


# ----------------------------------------------------------------- found item 11: --debug
def test_debug_prints_the_traceback_where_one_line_is_the_default(tmp_path):
    plain = run_vaebench("show", "zzzz", "--registry", str(tmp_path))
    assert plain.returncode == 2 and _stderr_lines(plain) == ["error: invalid run id 'zzzz': expected hex characters"]
    for args, extra in ((("--debug", "show", "zzzz"), {}), (("show", "zzzz"), {"VAEBENCH_DEBUG": "1"})):
        proc = run_vaebench(*args, "--registry", str(tmp_path), env_extra=extra)
        lines = _stderr_lines(proc)
        assert proc.returncode == 2
        assert lines[0] == "Traceback (most recent call last):" and "RegistryError" in lines[-2]
        assert lines[-1] == "error: invalid run id 'zzzz': expected hex characters"


def test_debug_shows_a_broken_plugins_traceback(tmp_path):
    write_fake_dist(tmp_path, "broken-plugin", "0.1", {"broken": "broken_plugin"},
                    {"broken_plugin": "def helper():\n    raise RuntimeError('boom')\n\nhelper()\n"})
    plain = run_vaebench("list", "datasets", "--json", env_extra=_env(tmp_path))
    assert len(_stderr_lines(plain)) == 1
    proc = run_vaebench("--debug", "list", "datasets", "--json", env_extra=_env(tmp_path))
    assert proc.returncode == 0
    assert "Traceback (most recent call last):" in proc.stderr and "in helper" in proc.stderr
    assert "RuntimeError: boom" in proc.stderr


FAILING_PLUGIN = """
    from vaebench.plugin import MetricSpec, ModelSpec, hookimpl

    def build_model(spec, image_shape):
        raise RuntimeError("factory exploded")

    def compute_metric(ctx):
        raise ZeroDivisionError("metric exploded")

    @hookimpl
    def vaebench_register_models(register):
        register(ModelSpec(name="exploding_vae", description="d", backends={"torch": build_model}))

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="exploding", description="d", compute=compute_metric))
"""


def test_debug_shows_the_traceback_of_a_failed_run_and_of_a_failed_metric(tmp_path):
    """A run that fails in training and a metric that raises print one line each by default
    (the run's error in its record, the metric's in the summary); with --debug (VAEBENCH_DEBUG)
    their tracebacks come too. Cost: about 14 s (two tiny runs, twice)."""
    write_fake_dist(tmp_path, "failing-plugin", "0.1", {"failing": "failing_plugin"}, {"failing_plugin": FAILING_PLUGIN})
    args = ["run", "--model", "vae,exploding_vae", "--metrics", "exploding,kl", "--architecture", "mlp",
            "--steps", "3", "--batch-size", "8", "--eval-samples", "64", "--device", "cpu", "--threads", "1"]
    outputs = {}
    for label, pre, extra in (("plain", [], {}), ("flag", ["--debug"], {})):
        proc = run_vaebench(*pre, *args, "--registry", str(tmp_path / label), env_extra={**_env(tmp_path), **extra},
                            cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr  # one run failed
        outputs[label] = proc.stderr
    assert "Traceback" not in outputs["plain"] and "in build_model" not in outputs["plain"]
    err = outputs["flag"]
    assert "failed in training" in err and "in build_model" in err and "RuntimeError: factory exploded" in err
    assert "metric exploding failed" in err and "in compute_metric" in err and "ZeroDivisionError" in err


def test_a_metric_whose_compute_does_not_import_stops_run_before_training(monkeypatch, tmp_path, cli):
    """A well-spelt path to a function that is not there (``json:dumpz``) passes registration
    (nothing is imported then); ``run`` used to train, then record the metric as failed."""
    m = PluginManager()
    assert m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__).status == "ok"
    assert m.register_plugin(SpecsPlugin(metrics=[_metric("typo_metric", compute="json:dumpz")]), "typo",
                             package="typo-pkg").status == "ok"
    monkeypatch.setattr(manager_module, "_MANAGER", m)
    res = cli("run", "--model", "beta_vae", "--architecture", "mlp", "--steps", "5", "--metrics", "kl,typo_metric",
              "--registry", str(tmp_path / "reg"))
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: metric 'typo_metric': compute 'json:dumpz' does not import")
    assert not (tmp_path / "reg").exists()
