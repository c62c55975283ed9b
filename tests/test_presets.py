"""Study presets (built-in TOML package data and plugin-shipped), the override order
preset < --config < options, and the dry-run's study size and time estimate. Plans only:
nothing trains here (each test well under a second or two, most of it planning)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

from vaebench import api
from vaebench.harness.presets_cli import preset_rows
from vaebench.harness.study_size import estimate, recorded_throughput
from vaebench.plugins.builtin import PRESETS
from vaebench.plugins.specs import PresetSpec
from vaebench.registry.store import write_record
from vaebench.testing import SpecsPlugin, plugin_manager

DL_COMMIT = "86a644d4ed35c771560dc3360756363d35477357"
STUDY_DATASETS = ["dsprites", "color_dsprites", "noisy_dsprites", "scream_dsprites", "smallnorb", "cars3d", "shapes3d"]


def _dry(cli, *args) -> dict:
    res = cli("run", *args, "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_locatello2019_plans_the_studys_grid_with_its_cited_values():
    """(~1.5 s: plans the whole study once.) Each model's own list from
    disentanglement_lib's sweep.py, the shared settings from shared.gin; seeds 0..49."""
    preset = api.load_preset("locatello2019")
    assert any("unsupervised_study_v1/sweep.py" in s and DL_COMMIT in s for s in preset.source)
    assert any("unsupervised_study_v1/model_configs/shared.gin" in s and DL_COMMIT in s for s in preset.source)
    laptop = api.plan_grid(preset="locatello2019", seeds=0, steps=200, datasets="dsprites")
    assert Counter(s.model for s in laptop) == {"beta_vae": 6, "beta_vae_capacity": 6, "factor_vae": 6,
                                                 "dip_vae": 12, "beta_tcvae": 6}
    by = lambda model, key: sorted({getattr(s, key) if hasattr(s, key) else s.hp[key]  # noqa: E731
                                    for s in laptop if s.model == model})
    assert by("beta_vae", "beta") == [1, 2, 4, 6, 8, 16]
    assert by("beta_tcvae", "beta") == [1, 2, 4, 6, 8, 10]
    assert by("beta_vae_capacity", "capacity") == [5, 10, 25, 50, 75, 100]
    assert by("beta_vae_capacity", "gamma") == [1000] and by("beta_vae_capacity", "capacity_steps") == [100000]
    assert by("factor_vae", "gamma") == [10, 20, 30, 40, 50, 100]
    assert {(s.steps, s.batch_size, s.lr, s.latent_dim, s.architecture) for s in laptop} == {(200, 64, 1e-4, 10, "conv")}
    whole = api.plan_grid(preset="locatello2019")
    registered = [d for d in STUDY_DATASETS if d in plugin_manager().specs["datasets"]]
    assert len(whole) == 36 * 50 * len(registered)
    assert {s.seed for s in whole} == set(range(50)) and {s.steps for s in whole} == {300_000}
    assert set(preset.left_out) == ({"datasets"} if len(registered) < 7 else set())


def test_higgins_and_burgess_presets(cli):
    """(~1 s.) One run each on dSprites with the cited values; `presets show` prints the file."""
    (higgins,) = api.plan_grid(preset="higgins2017")
    assert (higgins.model, higgins.dataset, higgins.beta, higgins.latent_dim, higgins.batch_size) == ("beta_vae", "dsprites", 4, 10, 64)
    (burgess,) = api.plan_grid(preset="burgess2018")
    assert (burgess.model, burgess.capacity, burgess.gamma, burgess.capacity_steps) == ("beta_vae_capacity", 25, 1000, 100000)
    shown = cli("presets", "show", "burgess2018")
    assert shown.exit_code == 0 and shown.stdout == Path(api.load_preset("burgess2018").path).read_text()
    listed = json.loads(cli("presets", "--json").stdout)
    assert {r["name"] for r in listed} >= set(PRESETS) and all(r["source"] and not r["error"] for r in listed)


def test_override_order_preset_then_config_then_options(cli, tmp_path):
    """(~1 s.) The preset is the base, --config replaces it, options replace both; an axis
    given replaces the preset's per-model list of it."""
    reg = ["--registry", tmp_path / "reg"]
    base = _dry(cli, "--preset", "higgins2017", *reg)["runs"]
    assert [(r["steps"], r["seed"], r["beta"]) for r in base] == [(345600, 0, 4.0)]
    config = tmp_path / "c.toml"
    config.write_text("[run]\nsteps = 1000\nseeds = [1, 2]\n")
    from_config = _dry(cli, "--preset", "higgins2017", "--config", config, *reg)["runs"]
    assert sorted((r["steps"], r["seed"], r["lr"]) for r in from_config) == [(1000, 1, 5e-4), (1000, 2, 5e-4)]
    given = _dry(cli, "--preset", "higgins2017", "--config", config, "--steps", "50", "--betas", "8", *reg)["runs"]
    assert sorted((r["steps"], r["seed"], r["beta"]) for r in given) == [(50, 1, 8.0), (50, 2, 8.0)]
    one_model = _dry(cli, "--preset", "locatello2019", "--model", "factor_vae", "--seeds", "0", "--dataset", "dsprites", *reg)
    assert one_model["summary"]["per_model"] == {"factor_vae": 6}


def test_unknown_preset_is_a_one_line_usage_error(cli, tmp_path):
    """(~0.3 s.) Exit 2, one line naming the presets, nothing written."""
    res = cli("run", "--preset", "nope", "--registry", tmp_path / "reg")
    assert res.exit_code == 2
    message = res.stderr.strip()
    assert message.startswith("error: unknown preset 'nope'") and "\n" not in message and "locatello2019" in message
    assert not (tmp_path / "reg").exists()
    assert cli("presets", "show", "nope").exit_code == 2
    with pytest.raises(api.InputError, match="unknown preset"):
        api.plan_grid(preset="nope")


def test_a_plugin_ships_a_preset(tmp_path):
    """(~0.3 s.) A PresetSpec registered through the hook plans like a built-in one; a
    dataset it names that nothing registers is left out with a note."""
    path = tmp_path / "mystudy.toml"
    path.write_text('[preset]\nname = "mystudy"\ndescription = "two betas"\nsource = ["my paper, table 1"]\n'
                    'notes = []\n[run]\nmodel = "beta_vae"\ndataset = ["dsprites", "not_a_dataset"]\n'
                    'seeds = [0, 1]\nsteps = [100]\n[models.beta_vae]\nbeta = [2, 3]\n')
    manager = plugin_manager(SpecsPlugin(presets=[PresetSpec(name="mystudy", description="two betas", path=str(path))]))
    assert manager.owner("presets", "mystudy") != "builtin"
    preset = api.load_preset("mystudy", manager=manager)
    assert "not_a_dataset" in preset.left_out["datasets"]
    specs = api.plan_grid(preset=preset, manager=manager)
    assert sorted((s.beta, s.seed, s.dataset) for s in specs) == [
        (2, 0, "dsprites"), (2, 1, "dsprites"), (3, 0, "dsprites"), (3, 1, "dsprites")]
    (row,) = [r for r in preset_rows(manager) if r["name"] == "mystudy"]
    assert row["runs"] == 4 and row["source"] == ["my paper, table 1"]
    with pytest.raises(ValueError, match=".toml"):
        PresetSpec(name="x", description="x", path=str(tmp_path / "x.json"))


def test_dry_run_summary_counts_and_totals(cli, tmp_path):
    """(~5 s: two throughput probes of the mlp.) The laptop-sized locatello2019 (mlp here, to
    keep the probe cheap): 36 runs, per model and dataset, steps and images; a big study lists
    its first runs and a count; an empty registry: this machine's throughput measured now."""
    out = _dry(cli, "--preset", "locatello2019", "--seeds", "0", "--steps", "200", "--dataset", "dsprites",
               "--architecture", "mlp", "--registry", tmp_path / "reg")
    summary = out["summary"]
    assert summary["runs"] == len(out["runs"]) == 36
    assert summary["per_model"] == {"beta_vae": 6, "beta_vae_capacity": 6, "factor_vae": 6, "dip_vae": 12, "beta_tcvae": 6}
    assert summary["per_dataset"] == {"dsprites": 36}
    assert summary["steps"] == 36 * 200 and summary["images"] == 36 * 200 * 64
    (probe,) = summary["estimates"]  # an empty registry: measured now, one planned run for 50 steps
    assert probe["this_machine"] and probe["device_name"] == "measured now" and probe["seconds"] > 0
    assert probe["runs_estimated"] == 36 and not (tmp_path / "reg" / "runs").exists()  # nothing recorded
    text = cli("run", "--preset", "locatello2019", "--seeds", "0,1", "--steps", "200", "--dataset", "dsprites",
               "--architecture", "mlp", "--registry", tmp_path / "reg", "--dry-run").stdout
    assert "... and 62 more run(s)" in text and "72 run(s): per model beta_vae 12" in text
    assert "estimated training time on this machine (cpu, measured now over 50 steps" in text


def test_estimate_from_records_in_a_registry(tmp_path, cli):
    """(~1 s.) Median images/s of the records of the same model/architecture/device kind;
    another model's records of that architecture stand in for a model without any; a
    cuda record gives the GPU line."""
    reg = tmp_path / "reg"
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    ids = iter(range(1, 100))

    def make_record(**fields):
        return {"run_id": f"{next(ids):012x}", "status": "ok", "backend": "torch", "dataset": "dsprites", "beta": 1.0,
                "latent_dim": 10, "seed": 0, "steps": 100, "metrics": {"mig": 0.1}, **fields}
    for ips in (100.0, 200.0, 400.0):
        write_record(reg, make_record(model="beta_vae", architecture="conv", device="cpu", images_per_second=ips,
                                      started_at=t0, finished_at=t0))
    write_record(reg, make_record(model="beta_vae", architecture="conv", device="cuda:0", device_name="NVIDIA H200",
                                  images_per_second=6400.0, started_at=t0, finished_at=t0))
    write_record(reg, make_record(model="beta_vae", architecture="conv", device="cpu", images_per_second=1e9,
                                  status="failed", started_at=t0, finished_at=t0))
    records = recorded_throughput(str(reg))
    assert sorted(r["images_per_second"] for r in records) == [100.0, 200.0, 400.0, 6400.0]
    specs = api.plan_grid("beta_vae", betas=[1, 4], steps=1000, batch_sizes=64)
    cpu = estimate(specs, records, "cpu")
    assert cpu["seconds"] == pytest.approx(2 * 1000 * 64 / 200.0) and cpu["records"] == 3
    gpu = estimate(specs, records, "cuda")
    assert gpu["seconds"] == pytest.approx(2 * 1000 * 64 / 6400.0) and gpu["device_name"] == "NVIDIA H200"
    other = estimate(api.plan_grid("factor_vae", steps=1000, batch_sizes=64), records, "cpu")
    assert other["models_from_other_records"] == ["factor_vae"] and other["seconds"] == pytest.approx(320.0)
    assert estimate(api.plan_grid("beta_vae", architectures="mlp"), records, "cpu")["runs_estimated"] == 0
    out = _dry(cli, "--model", "beta_vae", "--betas", "1,4", "--steps", "1000", "--device", "cpu", "--registry", reg)
    lines = {e["device"]: e for e in out["summary"]["estimates"]}
    assert lines["cpu"]["this_machine"] and lines["cpu"]["seconds"] == pytest.approx(640.0)
    assert not lines["cuda"]["this_machine"] and lines["cuda"]["seconds"] == pytest.approx(20.0)
    text = cli("run", "--model", "beta_vae", "--betas", "1,4", "--steps", "1000", "--device", "cpu", "--registry", reg,
               "--dry-run").stdout
    assert "estimated training time on this machine (cpu, from 3 record(s)): 10 min" in text
    assert "estimated training time on a GPU (cuda, NVIDIA H200, from 1 record(s)): 20 s" in text
