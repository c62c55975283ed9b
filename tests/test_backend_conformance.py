"""The backend contract, checked for every registered backend × every model it claims
(``ModelSpec.backends``), and a third-party backend added through the plugin hook.

Per (backend, model), one short training on dSprites (batch 16, 30 steps) is checked
for: the loss falling, the shapes of evaluate / encode / decode and of prior samples,
determinism for a seed (a second training gives the same history and weights), a
checkpoint round trip to identical outputs. Per backend, every model is recorded
through ``run_grid`` and each Parquet file must carry exactly the registry's schema.
The torch/JAX numerical equivalence (same weights, same noise -> same loss terms) is in
``tests/test_jax_backend.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import backend_installed
from vaebench import hookimpl
from vaebench.harness.plan import PlanError, plan_grid
from vaebench.harness.runner import run_grid
from vaebench.plugins.backends import get_backend, load_trained
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.backends.torch.backend import TorchBackend
from vaebench.plugins.backends.torch.backend import load_checkpoint as torch_load_checkpoint
from vaebench.plugins.datasets.dsprites import ProceduralDSprites
from vaebench.plugins.manager import PluginManager, UnknownSpecError, get_manager
from vaebench.plugins.specs import BackendSpec
from vaebench.registry.schema import RECORD_SCHEMA

DATA = ProceduralDSprites()
STEPS = 30


def _claims() -> list[tuple[str, str]]:
    m = get_manager()
    return [
        (b, name)
        for b, bspec in sorted(m.specs["backends"].items())
        for name, mspec in sorted(m.specs["models"].items())
        if (bspec.model_protocol or b) in mspec.backends
    ]


CLAIMS = _claims()


@pytest.fixture
def torch_cpu_state():
    """Torch on one thread (the tests' convention: a busy 2-core machine), and the
    process-wide flush-denormal setting TorchBackend.train turns on, restored."""
    threads = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _execution(**kw) -> ExecutionOptions:
    return ExecutionOptions(**{"device": "cpu", "threads": 1, "progress_every": 10, "eval_samples": 200,
                               "figures": False, **kw})


def _spec(backend: str, model: str, steps: int = STEPS, **values):
    axes = {"steps": [steps], "batch_size": [16], "lr": [1e-3], **{k: [v] for k, v in values.items()}}
    if model == "vq_vae":
        axes["codebook_size"] = [64]  # a few dozen steps use a fair share of 64 codes
    (spec,) = plan_grid(get_manager(), [model], axes, backends=[backend])
    return spec


def test_every_builtin_backend_claims_its_models():
    claims = set(CLAIMS)
    for model in ("vae", "beta_vae", "beta_vae_capacity", "cvae", "vq_vae"):
        assert ("torch", model) in claims and ("jax", model) in claims
    for model in ("beta_tcvae", "factor_vae", "dip_vae"):
        assert ("torch", model) in claims and ("jax", model) not in claims
    with pytest.raises(PlanError, match=r"'dip_vae' is not implemented by the 'jax' backend \(backends that run it: torch\)"):
        plan_grid(get_manager(), ["dip_vae"], {}, backends=["jax"])
    with pytest.raises(UnknownSpecError, match=r"unknown backend 'tf' \(available: jax, torch\)"):
        get_backend("tf")


@pytest.mark.parametrize("backend,model", CLAIMS, ids=[f"{b}-{m}" for b, m in CLAIMS])
def test_backend_trains_the_model_to_contract(backend, model, tmp_path, torch_cpu_state):
    if not backend_installed(backend):
        pytest.skip(f"backend {backend} not installed")
    spec = _spec(backend, model)
    engine = get_backend(backend)
    trained = engine.train(spec, DATA, _execution())

    # the loss falls over a few dozen steps (an untrained decoder: ~2,800 nats per image)
    assert trained.steps_done == STEPS and not trained.diverged and math.isfinite(trained.final_loss)
    assert [h["step"] for h in trained.history] == list(range(1, STEPS + 1))
    assert set(trained.history[0]) == {"step", "loss", "recon", "kl", "capacity"}
    recon = [h["recon"] for h in trained.history]
    assert np.mean(recon[-5:]) < 0.8 * np.mean(recon[:3]), (recon[:3], recon[-5:])

    # shapes: posterior (N, D), recon NLL (N,), reconstructions and prior samples (N, 64, 64, 1)
    images, _ = DATA.sample(10, np.random.default_rng(1))
    d = trained.model.latent_dim
    means, logvars, errors, recons = trained.evaluate(images, reconstructions=True)
    assert means.shape == logvars.shape == (10, d) and errors.shape == (10,) and recons.shape == (10, 64, 64, 1)
    assert np.all(np.isfinite(means)) and np.all(np.isfinite(errors)) and 0 <= recons.min() <= recons.max() <= 1
    z = trained.encode(images)
    assert z.shape == (10, d)
    samples = trained.decode(np.random.default_rng(2).standard_normal((7, d)).astype(np.float32))
    assert samples.shape == (7, 64, 64, 1) and 0 <= samples.min() <= samples.max() <= 1

    # determinism: the same seed gives the same training and the same weights
    again = engine.train(spec, DATA, _execution())
    assert [h["loss"] for h in again.history] == [h["loss"] for h in trained.history]
    np.testing.assert_array_equal(again.encode(images), z)
    assert again.signals == trained.signals

    # checkpoint round trip through the backend's registered loader: identical outputs
    artifacts = trained.save(str(tmp_path / "ckpt"))
    assert {"checkpoint", "config"} <= set(artifacts)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["backend"] == backend
    restored = load_trained(backend, str(tmp_path / "ckpt"))
    assert restored.spec == spec
    np.testing.assert_array_equal(restored.encode(images), z)
    np.testing.assert_array_equal(restored.evaluate(images)[2], errors)
    np.testing.assert_array_equal(restored.decode(z), trained.decode(z))


@pytest.mark.parametrize("backend", sorted(get_manager().specs["backends"]))
def test_records_have_the_registry_schema(backend, tmp_path, torch_cpu_state):
    if not backend_installed(backend):
        pytest.skip(f"backend {backend} not installed")
    models = [m for b, m in CLAIMS if b == backend]
    specs = [_spec(backend, m, steps=4) for m in models]
    result = run_grid(specs, get_manager(), str(tmp_path), _execution(), metric_names=["reconstruction", "kl"])
    for spec, record in zip(specs, result.records):
        assert record["status"] == "ok", (spec.model, record["error"])
        assert record["backend"] == backend and record["model"] == spec.model
        schema = pq.read_schema(tmp_path / "runs" / f"{spec.run_id}.{record['attempt']}.parquet")
        assert schema.remove_metadata().equals(RECORD_SCHEMA.remove_metadata()), (spec.model, schema)
        assert {"reconstruction", "kl"} <= set(record["metrics"])
        assert [set(h) for h in record["history"]] == [{"step", "loss", "recon", "kl", "capacity"}] * 4


def test_torch_and_jax_report_the_same_signals():
    if not backend_installed("jax"):
        pytest.skip("backend jax not installed")
    for model, values in (("vq_vae", {"codebook_update": "ema"}), ("cvae", {"beta_schedule": "linear"})):
        torch_run = TorchBackend().train(_spec("torch", model, steps=3, **values), DATA, _execution())
        jax_run = get_backend("jax").train(_spec("jax", model, steps=3, **values), DATA, _execution())
        assert [set(s) for s in jax_run.signals] == [set(s) for s in torch_run.signals], model
        assert jax_run.signals and set(jax_run.signals[0]) > {"step"}


# -- a third-party backend, added through the plugin hook ----------------------------------


class DeterministicTorchBackend(TorchBackend):
    """A real third-party backend: the torch backend's loop under
    ``torch.use_deterministic_algorithms(True)`` (bitwise-reproducible kernels on GPU too),
    restored afterwards. It builds torch models (``model_protocol="torch"``)."""

    name = "torch_deterministic"

    def train(self, spec, dataset, execution, on_progress=None, model=None):  # noqa: ANN001
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            trained = super().train(spec, dataset, execution, on_progress, model)
        finally:
            torch.use_deterministic_algorithms(previous)
        execution.notes.append("deterministic torch kernels")
        return trained


class ThirdPartyPlugin:
    @hookimpl
    def vaebench_register_backends(self, register):
        register(BackendSpec(
            name="torch_deterministic",
            description="torch with deterministic kernels",
            backend=DeterministicTorchBackend,
            load_checkpoint=torch_load_checkpoint,
            model_protocol="torch",
        ))


def test_a_plugin_registers_a_backend_that_trains_through_run_grid(tmp_path, torch_cpu_state):
    manager = PluginManager()
    manager.load_entry_points()
    info = manager.register_plugin(ThirdPartyPlugin(), "deterministic", package="third-party")
    assert (info.status, info.error) == ("ok", "")
    assert info.registered["backends"] == ["torch_deterministic"]
    assert manager.owner("backends", "torch_deterministic") == "deterministic"
    specs = [
        s
        for b in ("torch_deterministic", "torch")
        for s in plan_grid(manager, ["beta_vae"], {"steps": [6], "batch_size": [16]}, backends=[b])
    ]
    result = run_grid(specs, manager, str(tmp_path), _execution(), metric_names=["reconstruction", "kl"])
    ours, reference = result.records
    assert ours["status"] == reference["status"] == "ok"
    assert ours["backend"] == "torch_deterministic" and ours["run_id"] != reference["run_id"]
    assert "deterministic torch kernels" in ours["error"]
    # the same loop on the same seed: the same training, to the bit
    assert [h["loss"] for h in ours["history"]] == [h["loss"] for h in reference["history"]]
    assert ours["metrics"]["reconstruction"] == reference["metrics"]["reconstruction"]
    assert not torch.are_deterministic_algorithms_enabled()
    restored = load_trained("torch_deterministic", str((tmp_path / ours["artifacts"]["checkpoint"]).parent), manager)
    images, _ = DATA.sample(5, np.random.default_rng(0))
    assert restored.encode(images).shape == (5, 10)
    # a second plugin registering the same backend name is a clash: the first keeps it,
    # both plugins carry a warning naming the two
    dupe = manager.register_plugin(ThirdPartyPlugin(), "deterministic-again", package="other")
    assert dupe.status == "ok" and manager.owner("backends", "torch_deterministic") == "deterministic"
    assert any("torch_deterministic" in w and "deterministic-again" in w for w in dupe.warnings)
