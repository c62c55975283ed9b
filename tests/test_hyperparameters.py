"""Hyperparameters declared once: the axis table, run ids that stay, per-model lists,
ranges, and a plugin model's own hyperparameters as real grid axes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vaebench
from vaebench import api
from vaebench.harness.axes import PlanError, axis_table, parse_list
from vaebench.harness.cli import app
from vaebench.harness.plan import plan_grid
from vaebench.plugins import builtin
from vaebench.plugins import manager as manager_module
from vaebench.plugins.manager import PluginManager, get_manager
from vaebench.plugins.runspec import LATER_FIELDS, MODEL_HYPERPARAMETERS, RunSpec
from vaebench.plugins.specs import Hyperparameter, ModelSpec

#: (models, axes) -> the run ids main planned before hyperparameters were declared
#: (computed on commit 1786c5d, before this change). A change here orphans recorded runs.
PINNED = [
    (["beta_vae"], {"beta": [1, 4, 8]}, ["26b84a9322f9db98", "a1b61ae31bb4de9d", "625818ebf3898717"]),
    (["vae"], {}, ["03054ecffc6174b7"]),
    (["beta_vae_capacity"], {"capacity": [5], "gamma": [100], "steps": [200]}, ["62bc62ba33215927"]),
    (["beta_vae_capacity"], {}, ["2d636d5c721206fb"]),
    (["beta_vae"], {"beta_schedule": ["linear"], "beta": [4]}, ["53be7bbcc90a0947"]),
    (["beta_vae"], {"beta_schedule": ["cyclical"], "beta_cycles": [2], "beta_start": [0.5]}, ["b5d072452300d651"]),
    (["cvae"], {"condition": ["shape"]}, ["b52bda4437bc7234"]),
    (["cvae"], {}, ["47ac36e94cdd2943"]),
    (["beta_tcvae"], {"beta": [6], "seed": [1]}, ["86631b78f127d630"]),
    (["factor_vae"], {"gamma": [10]}, ["d79c1b4536c672fe"]),
    (["dip_vae"], {"dip_type": ["ii"], "lambda_od": [5]}, ["4e5d7a997afdde84"]),
    (["dip_vae"], {}, ["d514c18247c1cfff"]),
    (["vq_vae"], {"codebook_size": [64], "codebook_update": ["ema"], "dead_code_steps": [10]}, ["3cfb24a4cb21dc4d"]),
    (["vq_vae"], {}, ["be1cffe0f91d9c69"]),
    (["beta_vae"], {"latent_dim": [6], "lr": [1e-3], "batch_size": [32]}, ["0d29e9d730faabad"]),
]


@pytest.mark.parametrize(("models", "axes", "ids"), PINNED, ids=[f"{m[0]}-{i}" for i, (m, _, _) in enumerate(PINNED)])
def test_run_ids_of_every_model_stay(models, axes, ids):
    assert [s.run_id for s in plan_grid(get_manager(), models, axes)] == ids


#: command line -> run ids main planned for it (``vaebench run ... --dry-run`` on 1786c5d).
CLI_PINNED = [
    (["--model", "beta_vae", "--betas", "1,4,8"], ["26b84a9322f9db98", "a1b61ae31bb4de9d", "625818ebf3898717"]),
    (["--model", "beta_vae_capacity", "--capacities", "5,25", "--gamma", "100,1000", "--seeds", "0,1"],
     ["49e41d5a1a1ca991", "4e6edec2723a4648", "e811923e97799fb0", "81e36d5bd84d6963", "c96efc0d45a0b953",
      "9ddd657a88909c8f", "2d636d5c721206fb", "335912b8fd96fce0"]),
    (["--model", "vq_vae", "--codebook-size", "64", "--commitment", "0.5"], ["fdc53c7d698afd33"]),
    (["--model", "dip_vae", "--dip-type", "ii", "--lambda-od", "1,10"], ["866901c5937c8156", "20a7a7cb70ec5f83"]),
    (["--model", "beta_vae,cvae", "--beta-schedule", "linear", "--betas", "2", "--beta-warmup-steps", "100"],
     ["f88c647083413022", "cfdb376e5da59d7b"]),
]

#: An existing config file (top-level lists crossed over both models) and its ids on 1786c5d.
OLD_CONFIG = 'model = ["beta_vae_capacity", "factor_vae"]\ncapacities = [5, 25]\ngamma = [10, 40]\nseeds = [0]\nsteps = 100\n'
OLD_CONFIG_IDS = ["d7afafb481ff4356", "6919696c37d11592", "719c9bd05edb225f", "36c4a95782f97204",
                  "e147ea46527d9520", "30ff63c181dd0887"]


def _dry(*args) -> list[dict]:
    res = CliRunner().invoke(app, ["run", *map(str, args), "--dry-run", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["runs"]


@pytest.mark.parametrize(("args", "ids"), CLI_PINNED, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CLI_PINNED)])
def test_command_lines_keep_their_run_ids(tmp_path, args, ids):
    assert [p["run_id"] for p in _dry(*args, "--registry", tmp_path)] == ids


@pytest.mark.parametrize("table", ["", "[run]\n"])
def test_existing_config_keeps_its_run_ids(tmp_path, table):
    config = tmp_path / "grid.toml"
    config.write_text(table + OLD_CONFIG)
    assert [p["run_id"] for p in _dry("--config", config, "--registry", tmp_path)] == OLD_CONFIG_IDS


def test_the_id_rule_is_declared_per_field_not_by_order():
    """Fields left out of the canonical JSON while at their default are the ones marked so."""
    assert set(LATER_FIELDS) == set(MODEL_HYPERPARAMETERS[4:]) | {"start_step", "extra_hyperparameters", "model_plugin"}
    assert set(MODEL_HYPERPARAMETERS[:4]) == {"beta", "capacity", "gamma", "capacity_steps"}
    data = json.loads(RunSpec(model="beta_vae", beta=4.0).to_json())
    assert not set(LATER_FIELDS) & set(data) and {"beta", "capacity", "gamma", "capacity_steps"} <= set(data)
    spec = RunSpec(model="m", extra_hyperparameters={"tau": 2, "sigma": 0.5})
    assert spec.extra_hyperparameters == (("sigma", 0.5), ("tau", 2))
    assert json.loads(spec.to_json())["extra_hyperparameters"] == {"sigma": 0.5, "tau": 2}
    assert RunSpec.from_dict(json.loads(spec.to_json())).run_id == spec.run_id
    assert spec.hyperparameter("sigma") == 0.5 and spec.hyperparameter("nope", 3) == 3
    assert "sigma=0.5 tau=2" in spec.label()


def test_every_builtin_hyperparameter_is_declared_once_in_the_table():
    table = axis_table(get_manager())
    assert set(MODEL_HYPERPARAMETERS) <= set(table.axes)
    assert {table.name(s) for s in ("betas", "--betas", "capacities", "gammas", "seeds", "latent_dims",
                                    "batch_sizes", "lrs", "--codebook-size")} == {
        "beta", "capacity", "gamma", "seed", "latent_dim", "batch_size", "lr", "codebook_size"}
    # the β schedule is declared once and read by every model that reads β
    for model in ("beta_vae", "cvae", "beta_tcvae"):
        assert table.reads[model]["beta_schedule"] is builtin.BETA_SCHEDULE[0]
    assert table.reads["factor_vae"]["gamma"] is table.reads["beta_vae_capacity"]["gamma"]


@pytest.mark.parametrize(("text", "kind", "expected"), [
    ("1:16:5", float, [1.0, 4.75, 8.5, 12.25, 16.0]),
    ("1:16:5:log", float, [1.0, 2.0, 4.0, 8.0, 16.0]),
    ("0.1:0.3:3", float, [0.1, 0.2, 0.3]),
    ("0:10:4", int, [0, 3, 7, 10]),
    ("16:1024:4:log", int, [16, 64, 256, 1024]),
    ("0,5:7:3", int, [0, 5, 6, 7]),
    (["1:4:2", 8], float, [1.0, 4.0, 8.0]),
])
def test_ranges(text, kind, expected):
    values = parse_list(text, "--x", kind)
    assert values == expected and all(type(v) is kind for v in values)


def test_a_log_range_has_the_run_ids_of_the_plain_list(tmp_path):
    assert [p["run_id"] for p in _dry("--betas", "1:16:5:log", "--registry", tmp_path)] == \
        [p["run_id"] for p in _dry("--betas", "1,2,4,8,16", "--registry", tmp_path)]


@pytest.mark.parametrize(("args", "message"), [
    (["--betas", "1:16"], "--betas: '1:16' is not a range START:STOP:N"),
    (["--betas", "1:16:x"], "is not a range"),
    (["--betas", "1:16:5:cubic"], "is not a range"),
    (["--betas", "1:16:1"], "N must be from 2 to 1000, got 1"),
    (["--betas", "0:16:5:log"], "a log range needs START and STOP > 0"),
    (["--betas", "1:inf:3"], "START and STOP must be finite"),
    (["--betas", "-2:2:3"], "--betas: -2 is out of range (must be >= 0)"),
    (["--seeds", "0:1e30:2"], "--seeds: '0:1e30:2' is out of range (must be <= 9223372036854775807"),
    (["--hp", "beta=x"], "--hp beta: 'x' is not a number"),
    (["--hp", "nope=1"], "no registered model declares a hyperparameter 'nope'"),
    (["--hp", "sigma"], "expected NAME=VALUES or MODEL.NAME=VALUES"),
    (["--nosuch", "1"], "no such option: --nosuch"),
    (["--dip-type", "iii", "--model", "dip_vae"], "--dip-type: 'iii' is not one of i, ii"),
    (["--hp", "factor_vae.gamma=10"], "per-model values for 'factor_vae', which is not a selected model"),
    (["--model", "factor_vae", "--hp", "factor_vae.capacity=5"], "model 'factor_vae' does not read 'capacity'"),
])
def test_bad_grid_input_is_one_line_exit_2(tmp_path, args, message):
    res = CliRunner().invoke(app, ["run", *args, "--registry", str(tmp_path / "reg")], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "reg").exists()


PER_MODEL = """\
[run]
model = ["beta_vae_capacity", "factor_vae"]
gamma = [5]
steps = 100

[models.factor_vae]
gamma = [10, 40]

[models.beta_vae_capacity]
gammas = [100, 1000]
"""


def _gammas(planned) -> set:
    return {(p["model"], p["gamma"]) for p in planned}


def test_per_model_lists_do_not_cross(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(PER_MODEL)
    planned = _dry("--config", config, "--registry", tmp_path)
    assert _gammas(planned) == {("beta_vae_capacity", 100.0), ("beta_vae_capacity", 1000.0),
                                ("factor_vae", 10.0), ("factor_vae", 40.0)} and len(planned) == 4
    # the same from [run.models.X] tables, from --hp MODEL.NAME and from the API
    nested = tmp_path / "nested.toml"
    nested.write_text(PER_MODEL.replace("[models.", "[run.models."))
    assert _gammas(_dry("--config", nested, "--registry", tmp_path)) == _gammas(planned)
    cli = _dry("--model", "beta_vae_capacity,factor_vae", "--steps", "100", "--hp", "factor_vae.gamma=10,40",
               "--hp", "beta_vae_capacity.gamma=100,1000", "--registry", tmp_path)
    specs = api.plan_grid(["beta_vae_capacity", "factor_vae"], steps=100,
                          per_model={"factor_vae": {"gamma": [10, 40]}, "beta_vae_capacity": {"gammas": [100, 1000]}})
    assert [p["run_id"] for p in planned] == [p["run_id"] for p in cli] == [s.run_id for s in specs]
    # a top-level list still reaches a model without its own list; the command line wins over the config
    only_one = tmp_path / "one.toml"
    only_one.write_text(PER_MODEL.split("[models.beta_vae_capacity]")[0])
    assert _gammas(_dry("--config", only_one, "--registry", tmp_path)) == {
        ("beta_vae_capacity", 5.0), ("factor_vae", 10.0), ("factor_vae", 40.0)}
    assert _gammas(_dry("--config", config, "--gamma", "7", "--registry", tmp_path)) == {
        ("beta_vae_capacity", 7.0), ("factor_vae", 7.0)}


# ---------------------------------------------------------------- a plugin model's own hyperparameters
def build_sigma_vae(spec, image_shape):
    """A β-VAE whose β is the plugin's own ``sigma`` (what a factory reads by name)."""
    from vaebench.plugins.backends.torch.models import GaussianVAE

    beta = spec.hyperparameter("sigma") * spec.hyperparameter("tau", 1.0)
    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", {"beta": beta})


class _SigmaPlugin:
    @vaebench.hookimpl
    def vaebench_register_models(self, register):
        register(ModelSpec(
            name="sigma_vae", description="β-VAE with β = σ·τ (test plugin)",
            backends={"torch": build_sigma_vae},
            hyperparameters=(Hyperparameter("sigma", float, 1.0, minimum=0.0, inclusive=False, help="σ"), "tau"),
        ))


@pytest.fixture
def plugin_manager(monkeypatch) -> PluginManager:
    """A fresh in-process manager with the built-in plugin and one third-party model, made
    the process's manager for the test (backends build models through it)."""
    m = PluginManager()
    assert m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__).status == "ok"
    info = m.register_plugin(_SigmaPlugin(), "sigma-plugin", package="sigma-pkg")
    assert info.status == "ok", info.error
    monkeypatch.setattr(manager_module, "_MANAGER", m)
    return m


SMALL = dict(steps=12, batch_sizes=16, eval_samples=300, device="cpu", threads=1, architectures="mlp",
             strategy="sequential", metrics=["kl"])


def test_plugin_hyperparameters_are_grid_axes_via_the_api(plugin_manager, tmp_path):
    specs = api.plan_grid("sigma_vae", sigma=[0.5, 2], manager=plugin_manager)
    assert [s.hyperparameter("sigma") for s in specs] == [0.5, 2.0] and specs[0].run_id != specs[1].run_id
    (default,) = api.plan_grid("sigma_vae", manager=plugin_manager)
    assert default.extra_hyperparameters == (("sigma", 1.0),)  # the declared default; tau unset: left out
    with pytest.raises(PlanError, match=r"sigma: 0 is out of range \(must be > 0\)"):
        api.plan_grid("sigma_vae", sigma=0, manager=plugin_manager)
    result = api.run_grid("sigma_vae", sigma=[0.5, 2.0], tau=3, registry=str(tmp_path), manager=plugin_manager, **SMALL)
    records = result.records
    assert [r["status"] for r in records] == ["ok", "ok"] and len({r["run_id"] for r in records}) == 2
    assert [json.loads(r["spec_json"])["extra_hyperparameters"] for r in records] == [
        {"sigma": 0.5, "tau": 3.0}, {"sigma": 2.0, "tau": 3.0}]
    assert {r["run_id"] for r in records} == {s.run_id for s in api.plan_grid(
        "sigma_vae", sigma=[0.5, 2], tau=3, steps=12, batch_sizes=16, architectures="mlp", manager=plugin_manager)}


def test_plugin_hyperparameters_are_grid_axes_via_the_cli(plugin_manager, tmp_path, cli):
    registry = tmp_path / "reg"
    planned = _dry("--model", "sigma_vae", "--hp", "sigma=0.1,0.3", "--registry", registry)
    assert [p["extra_hyperparameters"] for p in planned] == [{"sigma": 0.1}, {"sigma": 0.3}]
    assert [p["run_id"] for p in _dry("--model", "sigma_vae", "--sigma", "0.1:0.3:2", "--registry", registry)] == \
        [p["run_id"] for p in planned]  # its own flag too, from the same declaration
    # the config file too: a top-level key and the model's own table plan the same runs
    (tmp_path / "top.toml").write_text('model = ["sigma_vae"]\nsigma = [0.1, 0.3]\n')
    (tmp_path / "table.toml").write_text('model = ["sigma_vae"]\n[models.sigma_vae]\nsigma = [0.1, 0.3]\n')
    for config in ("top.toml", "table.toml"):
        assert [p["run_id"] for p in _dry("--config", tmp_path / config, "--registry", registry)] == \
            [p["run_id"] for p in planned], config
    listed = json.loads(cli("list", "models", "--json").stdout)
    row = next(r for r in listed if r["name"] == "sigma_vae")
    assert row["hyperparameters"] == ["sigma", "tau"]
    assert row["hyperparameter_declarations"][0] == {"name": "sigma", "type": "float", "default": 1.0,
                                                     "allowed": "> 0", "aliases": [], "help": "σ"}
    res = cli("run", "--model", "sigma_vae", "--hp", "sigma=0.25", "--steps", "12", "--batch-size", "16",
              "--eval-samples", "300", "--device", "cpu", "--threads", "1", "--architecture", "mlp",
              "--strategy", "sequential", "--metrics", "kl", "--registry", registry, "--json")
    assert res.exit_code == 0, res.output
    (record,) = json.loads(res.stdout)
    assert record["status"] == "ok" and json.loads(record["spec_json"])["extra_hyperparameters"] == {"sigma": 0.25}
    shown = cli("show", record["run_id"][:8], "--registry", registry, "--json")
    assert json.loads(json.loads(shown.stdout)["spec_json"])["extra_hyperparameters"] == {"sigma": 0.25}


def test_a_plugin_cannot_declare_a_run_coordinate(monkeypatch):
    m = PluginManager()
    m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__)

    class _Bad:
        @vaebench.hookimpl
        def vaebench_register_models(self, register):
            register(ModelSpec(name="bad", description="x", backends={"torch": "x:y"},
                               hyperparameters=(Hyperparameter("steps", int),)))

    m.register_plugin(_Bad(), "bad")
    with pytest.raises(PlanError, match="hyperparameter 'steps' has the name of a run coordinate"):
        plan_grid(m, ["bad"], {})
    assert [s.run_id for s in plan_grid(m, ["beta_vae"], {"beta": [4]})] == ["a1b61ae31bb4de9d"]  # others unharmed
    with pytest.raises(ValueError, match="must be a Python identifier"):
        Hyperparameter("bad-name")
    with pytest.raises(ValueError, match="choices are for str"):
        Hyperparameter("x", float, choices=("a",))


class _IntSigmaPlugin:
    """Another package declaring ``sigma`` as an int >= 1, registered before sigma_vae's."""

    @vaebench.hookimpl
    def vaebench_register_models(self, register):
        register(ModelSpec(name="int_sigma_vae", description="declares sigma as an int (test plugin)",
                           backends={"torch": build_sigma_vae},
                           hyperparameters=(Hyperparameter("sigma", int, 3, minimum=1),)))


def test_two_plugins_declaring_one_name_differently_each_keep_their_own(monkeypatch, tmp_path):
    """The first declaration used to parse every model's values: installing a package whose
    ``sigma`` is an int made ``--sigma 0.05`` fail for sigma_vae (a float > 0)."""
    m = PluginManager()
    assert m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__).status == "ok"
    assert m.register_plugin(_IntSigmaPlugin(), "int-sigma", package="int-sigma-pkg").status == "ok"
    assert m.register_plugin(_SigmaPlugin(), "sigma-plugin", package="sigma-pkg").status == "ok"
    monkeypatch.setattr(manager_module, "_MANAGER", m)
    planned = _dry("--model", "sigma_vae", "--sigma", "0.05,0.5", "--registry", tmp_path)
    assert [p["extra_hyperparameters"] for p in planned] == [{"sigma": 0.05}, {"sigma": 0.5}]
    assert [p["extra_hyperparameters"] for p in _dry("--model", "sigma_vae", "--hp", "sigma=0.05",
                                                     "--registry", tmp_path)] == [{"sigma": 0.05}]
    (tmp_path / "per.toml").write_text('model = ["sigma_vae", "int_sigma_vae"]\n[models.sigma_vae]\nsigma = [0.3]\n'
                                       '[models.int_sigma_vae]\nsigma = [2]\n')
    both = _dry("--config", tmp_path / "per.toml", "--registry", tmp_path)
    assert sorted((p["model"], p["extra_hyperparameters"]["sigma"]) for p in both) == [
        ("int_sigma_vae", 2), ("sigma_vae", 0.3)]
    assert [p["extra_hyperparameters"] for p in _dry("--model", "int_sigma_vae", "--sigma", "2,4",
                                                     "--registry", tmp_path)] == [{"sigma": 2}, {"sigma": 4}]
    # each model's own declaration still checks its values
    res = CliRunner().invoke(app, ["run", "--model", "int_sigma_vae", "--sigma", "0.5", "--dry-run",
                                   "--registry", str(tmp_path)])
    assert res.exit_code == 2 and "sigma (model int_sigma_vae): '0.5' is not an integer" in res.output, res.output
    with pytest.raises(PlanError, match=r"sigma \(model sigma_vae\): -1 is out of range"):
        api.plan_grid("sigma_vae", sigma=[-1], manager=m)
