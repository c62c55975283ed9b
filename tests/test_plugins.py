"""Plugin discovery end to end: real entry points, a pip-installed third-party
plugin, broken and duplicate plugins, and the "no torch for --help" contract.

Nothing here mocks pluggy or importlib.metadata: third-party plugins are real
distributions (a pip-installed example package, or hand-written ``.dist-info``
folders) put on ``PYTHONPATH`` of a fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vaebench
from vaebench.testing import SpecsPlugin
from vaebench.plugins import builtin
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.runspec import BETA_SCHEDULE_FIELDS
from vaebench.plugins.specs import DatasetSpec, MetricSpec, ModelSpec

from conftest import ROOT, TINY, run_vaebench

EXAMPLE = ROOT / "examples" / "vaebench-plugin-example"
BUILTIN_MODELS = ["vae", "beta_vae", "beta_vae_capacity", "cvae", "beta_tcvae", "factor_vae", "dip_vae", "vq_vae"]
BUILTIN_METRICS = {"reconstruction", "kl", "active_dims", "mig"}


# ----------------------------------------------------------------- helpers
def _env(path: Path) -> dict[str, str]:
    """PYTHONPATH with ``path`` first (keeping whatever the caller had)."""
    parts = [str(path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(parts)}


def _json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


def _stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def write_fake_dist(root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees it: a ``.dist-info`` + modules."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[vaebench]\n{eps}")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


BROKEN_AT_IMPORT = """
    raise RuntimeError("boom")
"""

RAISES_IN_MODELS_HOOK = """
    from vaebench import hookimpl
    from vaebench.plugins.specs import DatasetSpec, MetricSpec, ModelSpec

    @hookimpl
    def vaebench_register_models(register):
        register(ModelSpec(name="half_registered", description="registered before the failure", backends={}))
        raise ValueError("models hook exploded")

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="raising_metric", description="from a plugin that fails", compute="x:y"))

    @hookimpl
    def vaebench_register_datasets(register):
        register(DatasetSpec(name="raising_dataset", description="from a plugin that fails", load="x:y"))
"""

RAISES_IN_DATASETS_HOOK = """
    from vaebench import hookimpl
    from vaebench.plugins.specs import MetricSpec, ModelSpec

    @hookimpl
    def vaebench_register_models(register):
        register(ModelSpec(name="late_model", description="registered before a later hook fails", backends={}))

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="late_metric", description="registered before a later hook fails", compute="x:y"))

    @hookimpl
    def vaebench_register_datasets(register):
        raise KeyError("datasets hook exploded")
"""

DUPLICATES_BUILTIN = """
    from vaebench import hookimpl
    from vaebench.plugins.specs import ModelSpec

    @hookimpl
    def vaebench_register_models(register):
        register(ModelSpec(name="dupe_only", description="unique, but its plugin also clashes", backends={}))
        register(ModelSpec(name="beta_vae", description="an impostor beta_vae", backends={}))
"""


# ----------------------------------------------------------------- 1. built-in plugin
def test_builtin_plugin_comes_from_vaebench_own_entry_point():
    rows = _by_name(_json(run_vaebench("plugins", "--json")))
    b = rows["builtin"]
    assert (b["package"], b["version"], b["status"], b["error"]) == ("vaebench", vaebench.__version__, "ok", "")
    assert b["registered"]["models"] == BUILTIN_MODELS
    assert BUILTIN_METRICS <= set(b["registered"]["metrics"])
    assert b["registered"]["datasets"] == ["dsprites", "mnist", "digits", "shapes3d", "color_dsprites", "noisy_dsprites", "scream_dsprites",
                                             "mpi3d_toy", "mpi3d_realistic", "mpi3d_real", "smallnorb", "cars3d"]
    assert b["registered"]["backends"] == ["torch", "jax"]


@pytest.mark.parametrize("kind", ["models", "metrics", "datasets", "backends"])
def test_list_gives_name_and_one_line_description(kind):
    rows = _json(run_vaebench("list", kind, "--json"))
    names = [r["name"] for r in rows]
    assert names == sorted(names)
    expected = {"models": set(BUILTIN_MODELS), "metrics": BUILTIN_METRICS, "datasets": {"dsprites"},
                "backends": {"torch", "jax"}}[kind]
    assert expected <= set(names)
    for r in rows:
        assert isinstance(r["description"], str) and r["description"].strip(), r
        assert "\n" not in r["description"], r
    for name in expected:
        assert _by_name(rows)[name]["plugin"] == "builtin"
    if kind == "models":
        # what the model reads, declared once: β and the β schedule every β model shares
        assert _by_name(rows)["beta_vae"]["hyperparameters"] == ["beta", *BETA_SCHEDULE_FIELDS]
        assert _by_name(rows)["beta_vae"]["backends"] == ["jax", "torch"]
        assert _by_name(rows)["cvae"]["backends"] == ["jax", "torch"]
        assert _by_name(rows)["dip_vae"]["backends"] == ["torch"]
    if kind == "backends":
        assert set(_by_name(rows)["jax"]["models"]) == {"vae", "beta_vae", "beta_vae_capacity", "cvae", "vq_vae"}
        assert set(_by_name(rows)["torch"]["models"]) >= set(BUILTIN_MODELS)
    if kind == "metrics":
        assert _by_name(rows)["mig"]["direction"] == "higher"
        assert _by_name(rows)["mig"]["needs"] == ["factors", "latents"]


def test_list_unknown_kind_exits_2_with_one_line_error(cli):
    proc = run_vaebench("list", "bogus")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert _stderr_lines(proc) == ["error: unknown kind 'bogus' (use models, metrics, datasets, backends, executors, presets, references or loggers)"]
    # in-process (typer runner) agrees on the exit code
    assert cli("list", "bogus").exit_code == 2


# ----------------------------------------------------------------- 2. pip-installed example plugin
@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example package pip-installed (once) into a private target directory."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment: cannot build the example plugin")
    work = tmp_path_factory.mktemp("example-plugin")
    # Build from a copy so setuptools' build/ and *.egg-info never land in the source tree.
    src = work / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    target = work / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    common = ["--no-deps", "--no-build-isolation", "--no-index"]
    proc = subprocess.run([*pip, "install", *common, "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:  # fall back: build a wheel, then install that wheel
        wheels = work / "wheels"
        built = subprocess.run([*pip, "wheel", *common, "--wheel-dir", str(wheels), str(src)],
                               capture_output=True, text=True, timeout=180)
        assert built.returncode == 0, f"pip install and pip wheel both failed:\n{proc.stderr}\n{built.stderr}"
        (wheel,) = wheels.glob("vaebench_plugin_example-*.whl")
        proc = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
    assert (target / "vaebench_plugin_example" / "__init__.py").is_file()
    assert list(target.glob("vaebench_plugin_example-0.1.0.dist-info"))
    return target


def test_example_plugin_is_discovered_after_pip_install(example_site):
    rows = _by_name(_json(run_vaebench("plugins", "--json", env_extra=_env(example_site))))
    ex = rows["plugin_example"]
    assert (ex["package"], ex["version"], ex["status"], ex["error"]) == ("vaebench-plugin-example", "0.1.0", "ok", "")
    assert ex["registered"] == {"models": ["plugin_example_vae"], "metrics": ["plugin_example_correlation"],
                                "datasets": ["plugin_example_squares"], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}
    assert rows["builtin"]["status"] == "ok"
    assert rows["builtin"]["registered"]["models"] == BUILTIN_MODELS


def test_example_plugin_not_visible_without_it_on_the_path():
    rows = _by_name(_json(run_vaebench("plugins", "--json")))
    assert "plugin_example" not in rows


def test_list_includes_example_plugin_specs(example_site):
    env = _env(example_site)
    models = _by_name(_json(run_vaebench("list", "models", "--json", env_extra=env)))
    model = models["plugin_example_vae"]
    assert model["plugin"] == "plugin_example"
    assert model["hyperparameters"] == ["beta", *BETA_SCHEDULE_FIELDS, "sigma"]  # its own σ after the shared ones
    assert (model["backends"], model["likelihood"]) == (["torch"], "gaussian")
    assert models["beta_vae"]["plugin"] == "builtin"
    metrics = _by_name(_json(run_vaebench("list", "metrics", "--json", env_extra=env)))
    assert metrics["plugin_example_correlation"]["plugin"] == "plugin_example"
    assert metrics["plugin_example_correlation"]["direction"] == "lower"
    assert metrics["mig"]["plugin"] == "builtin"
    # the plain (table) form names them too
    table = run_vaebench("list", "models", env_extra=env)
    assert table.returncode == 0 and "plugin_example_vae" in table.stdout and table.stderr == ""


def test_run_with_example_model_and_metric(example_site, tmp_path):
    registry = tmp_path / "registry"
    env = _env(example_site)
    proc = run_vaebench("run", "--model", "plugin_example_vae", "--dataset", "plugin_example_squares", "--betas", "2",
                        "--hp", "sigma=0.2", "--metrics", "plugin_example_correlation,mig",
                        "--registry", str(registry), "--json", *TINY, env_extra=env, cwd=tmp_path)
    records = _json(proc)
    assert len(records) == 1
    out = records[0]
    assert (out["model"], out["status"], out["beta"]) == ("plugin_example_vae", "ok", 2.0)
    assert json.loads(out["spec_json"])["extra_hyperparameters"] == {"sigma": 0.2}  # the model's own σ reached it

    shown = _json(run_vaebench("show", out["run_id"], "--json", "--registry", str(registry), env_extra=env, cwd=tmp_path))
    assert shown["run_id"] == out["run_id"]
    assert (shown["model"], shown["status"]) == ("plugin_example_vae", "ok")
    metrics = shown["metrics"]
    assert {"plugin_example_correlation", "mig"} <= set(metrics)
    assert "reconstruction" not in metrics  # only the metrics asked for
    corr = metrics["plugin_example_correlation"]
    assert isinstance(corr, float) and math.isfinite(corr) and 0.0 <= corr <= 1.0
    assert math.isfinite(metrics["mig"])
    assert metrics["plugin_example_correlation"] == out["metrics"]["plugin_example_correlation"]


# ----------------------------------------------------------------- 3. broken plugins are isolated
def test_plugin_failing_at_import_is_reported_and_skipped(tmp_path):
    write_fake_dist(tmp_path, "broken-plugin", "0.1", {"broken": "broken_plugin"}, {"broken_plugin": BROKEN_AT_IMPORT})
    env = _env(tmp_path)

    rows = _by_name(_json(run_vaebench("plugins", "--json", env_extra=env)))
    broken = rows["broken"]
    assert (broken["package"], broken["version"], broken["status"]) == ("broken-plugin", "0.1", "error")
    assert "boom" in broken["error"] and "RuntimeError" in broken["error"]
    assert broken["registered"] == {"models": [], "metrics": [], "datasets": [], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}
    assert rows["builtin"]["status"] == "ok"

    proc = run_vaebench("list", "models", "--json", env_extra=env)
    models = _by_name(_json(proc))
    assert models["beta_vae"]["plugin"] == "builtin"
    (warning,) = _stderr_lines(proc)
    assert warning.startswith("warning: plugin 'broken' (broken-plugin 0.1) skipped:")
    assert "boom" in warning

    # the rest of the CLI keeps working too
    dry = run_vaebench("run", "--model", "beta_vae", "--betas", "1", "--dry-run", "--json", env_extra=env, cwd=tmp_path)
    assert [r["model"] for r in _json(dry)["runs"]] == ["beta_vae"]
    assert any("'broken'" in line for line in _stderr_lines(dry))


def test_plugin_raising_inside_a_hook_commits_nothing(tmp_path):
    write_fake_dist(tmp_path, "raising-plugin", "0.2", {"raising": "raising_plugin"},
                    {"raising_plugin": RAISES_IN_MODELS_HOOK})
    write_fake_dist(tmp_path, "late-plugin", "0.3", {"late": "late_plugin"}, {"late_plugin": RAISES_IN_DATASETS_HOOK})
    env = _env(tmp_path)

    rows = _by_name(_json(run_vaebench("plugins", "--json", env_extra=env)))
    raising, late = rows["raising"], rows["late"]
    assert (raising["package"], raising["version"], raising["status"]) == ("raising-plugin", "0.2", "error")
    assert "models hook exploded" in raising["error"]
    assert (late["package"], late["version"], late["status"]) == ("late-plugin", "0.3", "error")
    assert "datasets hook exploded" in late["error"]
    for p in (raising, late):
        assert p["registered"] == {"models": [], "metrics": [], "datasets": [], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}
    assert rows["builtin"]["status"] == "ok"

    proc = run_vaebench("list", "models", "--json", env_extra=env)
    models = set(_by_name(_json(proc)))
    assert set(BUILTIN_MODELS) <= models
    assert not {"half_registered", "late_model"} & models
    assert sorted(line.split("'")[1] for line in _stderr_lines(proc)) == ["late", "raising"]
    metrics = set(_by_name(_json(run_vaebench("list", "metrics", "--json", env_extra=env))))
    assert BUILTIN_METRICS <= metrics and not {"raising_metric", "late_metric"} & metrics
    datasets = set(_by_name(_json(run_vaebench("list", "datasets", "--json", env_extra=env))))
    assert "dsprites" in datasets and "raising_dataset" not in datasets


# ----------------------------------------------------------------- 4. duplicate names
def test_third_party_duplicate_of_builtin_model_keeps_the_rest(tmp_path):
    """A clash drops only the clashing name (the built-in keeps it), named on both plugins."""
    write_fake_dist(tmp_path, "dupe-plugin", "1.0", {"dupe": "dupe_plugin"}, {"dupe_plugin": DUPLICATES_BUILTIN})
    env = _env(tmp_path)

    rows = _by_name(_json(run_vaebench("plugins", "--json", env_extra=env)))
    dupe = rows["dupe"]
    assert (dupe["package"], dupe["status"], dupe["error"]) == ("dupe-plugin", "ok", "")
    (clash,) = dupe["warnings"]
    assert "'beta_vae'" in clash and "'builtin'" in clash and "'dupe' (dupe-plugin 1.0)" in clash
    assert rows["builtin"]["warnings"] == [clash]
    assert dupe["registered"] == {"models": ["dupe_only"], "metrics": [], "datasets": [], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}
    assert rows["builtin"]["status"] == "ok"
    assert rows["builtin"]["registered"]["models"] == BUILTIN_MODELS

    proc = run_vaebench("list", "models", "--json", env_extra=env)
    models = _by_name(_json(proc))
    assert models["beta_vae"]["plugin"] == "builtin"
    assert models["beta_vae"]["description"] != "an impostor beta_vae"
    assert models["dupe_only"]["plugin"] == "dupe"  # the rest of the plugin is kept
    (warning,) = _stderr_lines(proc)
    assert warning == f"warning: {clash}"


def test_third_party_reusing_the_builtin_plugin_name_is_refused(tmp_path):
    # Sorted after vaebench's own entry point, so the impostor is the one refused.
    write_fake_dist(tmp_path, "aaa-impostor", "0.1", {"builtin": "aaa_impostor"}, {"aaa_impostor": DUPLICATES_BUILTIN})
    plugins = _json(run_vaebench("plugins", "--json", env_extra=_env(tmp_path)))
    builtins = [p for p in plugins if p["name"] == "builtin"]
    assert [(p["package"], p["status"]) for p in builtins] == [("vaebench", "ok"), ("aaa-impostor", "error")]
    assert builtins[1]["error"] == "plugin name 'builtin' already used by package vaebench"




def _model(name: str) -> ModelSpec:
    return ModelSpec(name=name, description=f"{name} (test)", backends={})


def _metric(name: str) -> MetricSpec:
    return MetricSpec(name=name, description=f"{name} (test)", compute="x:y")


def test_in_process_valid_plugin_is_committed(manager):
    info = manager.register_plugin(SpecsPlugin(models=[_model("tiny_model")], metrics=[_metric("tiny_metric")],
                                           datasets=[DatasetSpec(name="tiny_data", description="d", load="x:y")]),
                                   "tiny", package="tiny-pkg", version="9.9")
    assert (info.status, info.error) == ("ok", "")
    assert info.registered == {"models": ["tiny_model"], "metrics": ["tiny_metric"], "datasets": ["tiny_data"], "backends": [], "executors": [], "presets": [], "references": [], "loggers": []}
    assert manager.specs["models"]["tiny_model"].description == "tiny_model (test)"
    assert manager.model("tiny_model") is manager.specs["models"]["tiny_model"]
    assert manager.owner("models", "tiny_model") == "tiny"
    assert manager.owner("metrics", "tiny_metric") == "tiny"
    assert manager.owner("models", "beta_vae") == "builtin"
    assert manager.failed() == []
    assert [p.name for p in manager.plugins] == ["builtin", "tiny"]


def test_in_process_duplicate_within_one_plugin(manager):
    info = manager.register_plugin(SpecsPlugin(models=[_model("twin"), _model("twin")], metrics=[_metric("twin_metric")]),
                                   "twins")
    assert info.status == "error"
    assert "'twin'" in info.error and "registered twice" in info.error and "'twins'" in info.error
    assert "twin" not in manager.specs["models"]
    assert "twin_metric" not in manager.specs["metrics"]
    assert manager.failed() == [info]


def test_in_process_duplicate_of_builtin(manager):
    before = manager.specs["models"]["beta_vae"]
    info = manager.register_plugin(SpecsPlugin(models=[_model("fresh"), _model("beta_vae")]), "clash", package="clash-pkg")
    assert info.status == "ok" and len(info.warnings) == 1
    assert "'beta_vae'" in info.warnings[0] and "'builtin'" in info.warnings[0] and "'clash'" in info.warnings[0]
    assert manager.specs["models"]["beta_vae"] is before
    assert manager.owner("models", "beta_vae") == "builtin"
    assert manager.owner("models", "fresh") == "clash"


def test_in_process_wrong_spec_type_is_an_error(manager):
    info = manager.register_plugin(SpecsPlugin(models=[_metric("not_a_model")]), "wrongtype")
    assert info.status == "error"
    assert "expects a ModelSpec, got MetricSpec" in info.error
    assert "not_a_model" not in manager.specs["models"] and "not_a_model" not in manager.specs["metrics"]
    # and the other way round
    info2 = manager.register_plugin(SpecsPlugin(metrics=[_model("not_a_metric")]), "wrongtype2")
    assert info2.status == "error" and "expects a MetricSpec, got ModelSpec" in info2.error


def test_in_process_bad_hook_signature_is_an_error(manager):
    class BadSignature:
        @vaebench.hookimpl
        def vaebench_register_models(self, registry):  # the hook argument is ``register``
            registry(_model("never"))

    info = manager.register_plugin(BadSignature(), "badsig")
    assert info.status == "error" and info.error.startswith("registration failed:")
    assert "never" not in manager.specs["models"]


def test_failed_plugin_is_unregistered_and_name_clash_names_the_ok_owner(manager):
    failed = manager.register_plugin(SpecsPlugin(models=[_model("x"), _model("x")]), "reused", package="first-pkg")
    assert failed.status == "error"
    # the failed plugin left no trace in pluggy: its name can be taken by a good plugin
    ok = manager.register_plugin(SpecsPlugin(models=[_model("good_model")]), "reused", package="second-pkg")
    assert (ok.status, ok.error) == ("ok", "")
    assert manager.owner("models", "good_model") == "reused"
    # a third plugin of that name is refused, naming the package that actually holds it
    third = manager.register_plugin(SpecsPlugin(models=[_model("other_model")]), "reused", package="third-pkg")
    assert third.status == "error"
    assert third.error == "plugin name 'reused' already used by package second-pkg"
    assert "other_model" not in manager.specs["models"]


# ----------------------------------------------------------------- 5. no torch for --help / list
_TORCH_PROBE = (
    "import sys\n"
    "from vaebench.harness.cli import main\n"
    "sys.argv = ['vaebench', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    "print('PROBE', code, 'torch' in sys.modules)\n"
)


def _probe(*args: str, env_extra: dict[str, str] | None = None) -> tuple[str, str]:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE, *args], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "PROBE", proc.stdout
    return last[1], last[2]


@pytest.mark.parametrize("args", [("--help",), ("list", "models"), ("plugins", "--json")])
def test_cli_does_not_import_torch(args):
    assert _probe(*args) == ("0", "False")


def test_list_models_with_example_plugin_does_not_import_torch(example_site):
    assert _probe("list", "models", env_extra=_env(example_site)) == ("0", "False")
