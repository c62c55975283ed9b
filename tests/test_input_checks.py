"""Bad inputs stop `vaebench run` / `continue` (and the Python API) before anything trains.

Each invocation here once trained first and then failed (a `failed` record, a traceback,
exit 2 at record time) or was accepted (non-finite β recorded as `Infinity`, a metric
silently dropped from every run). Now each is one line on stderr, exit 2, and the
registry exactly as it was. The messages are asserted, so that an invocation stopped
later for another reason (e.g. no checkpoint to continue from) does not pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_results_commands import record, snapshot
from vaebench import api
from vaebench.plugins.runspec import RunSpec
from vaebench.registry.store import write_record

#: Cheap settings that would train for real (a few seconds) if a check let the invocation through.
BASE = {"steps": "20", "batch_size": "16", "eval_samples": "500", "device": "cpu", "threads": "1", "metrics": "kl",
        "strategy": "sequential"}

#: (extra arguments or a config file's text, part of the one-line message)
RUN_CASES: list[tuple[list[str] | str, str]] = [
    (["--betas", "inf"], "--betas: 'inf' is not a finite number"),
    (["--betas", "1e400"], "--betas: '1e400' is not a finite number"),
    (["--betas", "4,-inf"], "--betas: '-inf' is not a finite number"),
    (["--betas", "nan"], "--betas: NaN is not allowed"),
    (["--steps", "99999999999999999999"], "--steps: 99999999999999999999 is out of range (must be <= 9223372036854775807"),
    (["--seeds", "9223372036854775808"], "--seeds: 9223372036854775808 is out of range"),
    (["--lr", "inf"], "--lr: 'inf' is not a finite number"),
    (["--eval-samples", "0"], "eval_samples must be a whole number of held-out observations ≥ 1, got 0"),
    (["--eval-samples", "-5"], "eval_samples must be a whole number of held-out observations ≥ 1, got -5"),
    (["--threads", "-1"], "threads must be a whole number of CPU threads from 1 to 1024, got -1"),
    (["--threads", "0"], "threads must be a whole number of CPU threads from 1 to 1024, got 0"),
    (["--threads", "99999999999999999999"], "threads must be a whole number of CPU threads from 1 to 1024"),
    (["--model", "cvae", "--condition", "nosuchfactor"], "condition 'nosuchfactor' is not a factor of dsprites"),
    (["--metrics", "mig", "--metric-option", "mig.bins=abc"], "metric options: mig: bins must be an integer, got 'abc'"),
    (["--metrics", "mig", "--metric-option", "mig.nosuch=3"], "metric options: mig: unknown option(s) ['nosuch']"),
    (["--metrics", "mig", "--metric-option", "mig.bins=1"], "mig: bins must be an integer >= 2, got 1"),
    (["--metric-option", "kl.bins=3"], "metric options: kl: unknown option(s) ['bins']; known: []"),
    (["--metrics", "sap", "--metric-option", "sap.train_fraction=1.5"], "sap: train_fraction must lie in (0.0, 1.0)"),
    (["--metrics", "dci", "--metric-option", "dci.n_estimators=5"], "dci: unknown option(s) ['n_estimators']"),
    # config files: TOML values of the wrong type
    ("latent_dim = true", "--latent-dim: True is not an integer"),
    ("betas = [4, true]", "--betas: True is not a number"),
    ("betas = inf", "--betas: inf is not a finite number"),
    ("steps = nan", "--steps: nan is not an integer"),
    ("seeds = [0, 1.5]", "--seeds: 1.5 is not an integer"),
    ('condition = 3\nmodel = "cvae"', "--condition: 3 is not a name"),
    ('threads = "two"', "threads must be a whole number of CPU threads from 1 to 1024, got 'two'"),
    ('eval_samples = "abc"', "eval_samples must be a whole number of held-out observations ≥ 1, got 'abc'"),
    ("eval_samples = 1000.0", "eval_samples must be a whole number of held-out observations ≥ 1, got 1000.0"),
    ('metrics = "mig"\n[metric_options.mig]\nbins = "abc"', "metric options: mig: bins must be an integer"),
]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry holding one (hand-made, real Parquet) ok record of a β-VAE spec."""
    reg = tmp_path / "reg"
    spec = RunSpec(model="beta_vae", beta=4.0, steps=20, batch_size=16)
    write_record(reg, record(run_id=spec.run_id, spec_json=spec.to_json(), steps=20, batch_size=16,
                            steps_done=20, metric_params='{"kl": {}}', artifacts={}))
    return reg


def _one_line(res) -> str:
    err = res.stderr.strip()
    assert err.startswith("error:"), (res.stdout, err)
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(("given", "message"), RUN_CASES, ids=[str(c[0]) for c in RUN_CASES])
def test_run_refuses_before_training(tmp_path: Path, registry: Path, cli, given: list[str] | str, message: str) -> None:
    if isinstance(given, str):  # a config file: the command line would win over its keys
        config = tmp_path / "grid.toml"
        config.write_text(given + "\n")
        base = {k: v for k, v in BASE.items() if f"{k} =" not in given}
        args = ["--config", config]
    else:
        base, args = BASE, given
    before = snapshot(tmp_path)
    base_args = [a for k, v in base.items() for a in ("--" + k.replace("_", "-"), v)]
    res = cli("run", *base_args, *args, "--registry", registry)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert message in _one_line(res)
    assert res.stdout == ""
    assert snapshot(tmp_path) == before  # nothing trained, nothing written (registry and around it)


#: Metric options a dry run refuses as the run itself does (built-in metrics; one check, in api.check_run_options).
DRY_RUN_CASES: list[tuple[list[str], str]] = [
    (["--metrics", "mig", "--metric-option", "mig.bogus=1"], "metric options: mig: unknown option(s) ['bogus']"),
    (["--metrics", "mig", "--metric-option", "mig.bins=abc"], "metric options: mig: bins must be an integer, got 'abc'"),
    (["--metrics", "kl", "--metric-option", "sap.n_jobs=1"], "metric 'sap' is not among the metrics of this run (kl)"),
]


@pytest.mark.parametrize(("given", "message"), DRY_RUN_CASES, ids=[" ".join(c[0]) for c in DRY_RUN_CASES])
def test_dry_run_refuses_bad_metric_options_as_the_run_does(tmp_path: Path, registry: Path, cli, given: list[str],
                                                             message: str) -> None:
    before = snapshot(tmp_path)
    base_args = [a for k, v in BASE.items() if k != "metrics" for a in ("--" + k.replace("_", "-"), v)]
    dry = cli("run", *base_args, *given, "--registry", registry, "--dry-run")
    assert dry.exit_code == 2, (dry.stdout, dry.stderr)
    assert message in _one_line(dry) and dry.stdout == ""
    real = cli("run", *base_args, *given, "--registry", registry)
    assert (real.exit_code, real.stderr) == (2, dry.stderr)
    assert snapshot(tmp_path) == before


CONTINUE_CASES: list[tuple[list[str], str]] = [
    (["--steps", "99999999999999999999"], "would end past step 9223372036854775807, the largest int64"),
    (["--steps", "10", "--threads", "0"], "threads must be a whole number of CPU threads from 1 to 1024, got 0"),
    (["--steps", "10", "--threads", "-1"], "threads must be a whole number of CPU threads from 1 to 1024, got -1"),
    (["--steps", "10", "--eval-samples", "0"], "eval_samples must be a whole number of held-out observations ≥ 1"),
    (["--steps", "10", "--eval-samples", "-5"], "eval_samples must be a whole number of held-out observations ≥ 1"),
]


@pytest.mark.parametrize(("given", "message"), CONTINUE_CASES, ids=[" ".join(c[0]) for c in CONTINUE_CASES])
def test_continue_refuses_before_training(tmp_path: Path, registry: Path, cli, given: list[str], message: str) -> None:
    before = snapshot(tmp_path)
    run_id = next((registry / "runs").glob("*.parquet")).stem[:8]
    res = cli("continue", run_id, *given, "--device", "cpu", "--registry", registry)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert message in _one_line(res)
    assert snapshot(tmp_path) == before


API_CASES: list[tuple[dict, str]] = [
    ({"betas": [float("inf")]}, "beta: inf is not a finite number"),
    ({"betas": float("nan")}, "beta: NaN is not allowed"),
    ({"steps": 2**63}, "steps: 9223372036854775808 is out of range"),
    ({"latent_dims": True}, "latent_dim: True is not an integer"),
    ({"seeds": [0, 1.5]}, "seed: 1.5 is not an integer"),
    ({"threads": 0}, "threads must be a whole number of CPU threads"),
    ({"threads": "two"}, "threads must be a whole number of CPU threads"),
    ({"eval_samples": 0}, "eval_samples must be a whole number"),
    ({"amp": "fp8"}, "unknown AMP mode 'fp8'"),
    ({"checkpoint_every": -1}, "checkpoint_every must be a whole number"),
    ({"metrics": ["mig"], "metric_options": {"mig": {"bins": "abc"}}}, "mig: bins must be an integer"),
    ({"metrics": ["mig"], "metric_options": {"sap": {"n_jobs": 1}}}, "metric 'sap' is not among the metrics"),
    ({"models": "cvae", "condition": "nosuchfactor"}, "condition 'nosuchfactor' is not a factor of dsprites"),
]


@pytest.mark.parametrize(("given", "message"), API_CASES, ids=[str(c[0]) for c in API_CASES])
def test_api_run_grid_refuses_before_training(tmp_path: Path, registry: Path, given: dict, message: str) -> None:
    before = snapshot(tmp_path)
    kwargs = {"steps": 20, "batch_sizes": 16, "eval_samples": 500, "device": "cpu", "threads": 1, "metrics": ["kl"],
              "strategy": "sequential", **given}
    with pytest.raises(ValueError) as info:
        api.run_grid(registry=str(registry), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


def test_api_plan_grid_types_values_as_the_cli_does() -> None:
    """The API's values go through the CLI's parsing: 4 and 4.0 are one β, "8" is 8, one run id each."""
    a = api.plan_grid("beta_vae", betas=[4, 8.0], steps=100.0, seeds="0")
    b = api.plan_grid("beta_vae", betas=["4", 8], steps=100, seeds=[0])
    assert [s.run_id for s in a] == [s.run_id for s in b]
    assert a[0].steps == 100 and isinstance(a[0].steps, int) and a[0].beta == 4.0


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_worker_count_in_the_environment_is_one_line(tmp_path: Path, registry: Path, cli, monkeypatch,
                                                           value: str) -> None:
    """``VAEBENCH_WORKERS`` that is no whole number ≥ 1: exit 2 with one line before training
    (it was a ValueError traceback from the processes strategy's worker plan)."""
    monkeypatch.setenv("VAEBENCH_WORKERS", value)
    before = snapshot(tmp_path)
    base_args = [a for k, v in BASE.items() for a in ("--" + k.replace("_", "-"), v)]
    res = cli("run", *base_args, "--registry", registry)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert f"VAEBENCH_WORKERS={value!r}: expected a whole number of worker processes >= 1" in _one_line(res)
    assert snapshot(tmp_path) == before
