"""The torch backend trains for real on procedural dSprites."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaebench.plugins.runspec import RunSpec
from vaebench.harness.runner import run_grid
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.backends.torch.backend import DeviceError, TorchBackend, load_checkpoint, resolve_device
from vaebench.plugins.datasets.dsprites import ProceduralDSprites
from vaebench.plugins.manager import get_manager
from vaebench.plugins.objectives import capacity_at, objective

DATA = ProceduralDSprites()


def _train(spec: RunSpec, **kw):
    return TorchBackend().train(spec, DATA, ExecutionOptions(device="cpu", threads=1, progress_every=5, **kw))


def test_loss_falls_on_dsprites():
    trained = _train(RunSpec(model="beta_vae", beta=4.0, steps=80, batch_size=32, lr=1e-3))
    recon = [h["recon"] for h in trained.history]
    # An untrained Bernoulli decoder costs ~4096·ln 2 ≈ 2839 nats per image; learning the
    # mostly-black background alone takes it far below that.
    assert recon[0] > 1500
    assert np.mean(recon[-5:]) < 0.5 * recon[0]
    assert trained.steps_done == 80 and not trained.diverged and math.isfinite(trained.final_loss)


def test_same_seed_same_training_and_checkpoint_round_trip(tmp_path):
    spec = RunSpec(model="beta_vae", beta=4.0, steps=12, batch_size=16, seed=3)
    a, b = _train(spec), _train(spec)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = _train(RunSpec(model="beta_vae", beta=4.0, steps=12, batch_size=16, seed=4))
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]

    artifacts = a.save(str(tmp_path / "ckpt"))
    assert artifacts["checkpoint"].endswith(".safetensors")
    restored = load_checkpoint(str(tmp_path / "ckpt"))
    images = DATA.observations(DATA.sample_factors(40, np.random.default_rng(0)))
    np.testing.assert_array_equal(restored.encode(images), a.encode(images))
    assert restored.spec == spec


def test_checkpoint_reads_its_image_shape_from_config_json(tmp_path):
    """config.json holds the image shape, so loading a checkpoint needs no dataset (its file
    may be gone); one written before it stored the shape still loads, from the dataset."""
    import json

    spec = RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=16, seed=3)
    trained = _train(spec)
    directory = tmp_path / "ckpt"
    trained.save(str(directory))
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    assert config["image_shape"] == list(DATA.image_shape) and config["layout"] == "NCHW"
    images = DATA.observations(DATA.sample_factors(8, np.random.default_rng(0)))
    config["spec"]["dataset_path"] = str(tmp_path / "gone.npz")  # loading the dataset would fail
    config_path.write_text(json.dumps(config))
    np.testing.assert_array_equal(load_checkpoint(str(directory)).encode(images), trained.encode(images))
    del config["image_shape"]
    config["spec"]["dataset_path"] = None
    config_path.write_text(json.dumps(config))
    np.testing.assert_array_equal(load_checkpoint(str(directory)).encode(images), trained.encode(images))


def test_capacity_schedule_is_recorded_in_history():
    spec = RunSpec(model="beta_vae_capacity", capacity=20.0, gamma=10.0, capacity_steps=40, steps=60, batch_size=16)
    trained = _train(spec)
    for h in trained.history:
        assert h["capacity"] == pytest.approx(20.0 * min(1.0, h["step"] / 40))


def test_objectives_match_their_definitions():
    assert capacity_at(0, 25.0, 100) == 0.0
    assert capacity_at(50, 25.0, 100) == 12.5
    assert capacity_at(500, 25.0, 100) == 25.0
    assert objective("vae", 100.0, 7.0, {}, 1) == (107.0, None)
    assert objective("beta_vae", 100.0, 7.0, {"beta": 4.0}, 1) == (128.0, None)
    loss, c = objective("beta_vae_capacity", 100.0, 7.0, {"gamma": 10.0, "capacity": 20.0, "capacity_steps": 10}, 5)
    assert (loss, c) == (100.0 + 10.0 * abs(7.0 - 10.0), 10.0)


def test_mlp_architecture_trains():
    trained = _train(RunSpec(model="vae", architecture="mlp", steps=10, batch_size=8))
    assert trained.model.encode(torch.zeros(2, 1, 64, 64))[0].shape == (2, 10)


def test_divergence_is_recorded_and_the_grid_goes_on(tmp_path):
    # β = 1e308 makes β·KL overflow to inf on the first step: a real non-finite loss.
    specs = [
        RunSpec(model="beta_vae", beta=1e308, steps=20, batch_size=8),
        RunSpec(model="beta_vae", beta=1.0, steps=20, batch_size=8),
    ]
    execution = ExecutionOptions(device="cpu", threads=1, eval_samples=300, progress_every=5)
    result = run_grid(specs, get_manager(), str(tmp_path), execution)
    first, second = result.records
    assert first["status"] == "diverged" and "non-finite loss" in first["error"]
    assert first["steps_done"] <= 5 and not first.get("metrics")
    assert second["status"] == "ok" and 0.0 <= second["metrics"]["mig"] <= 1.0


def test_amp_falls_back_cleanly_on_cpu():
    execution = ExecutionOptions(device="cpu", threads=1, amp="fp16")
    trained = TorchBackend().train(RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=4), DATA, execution)
    assert trained.amp == "off" and any("fp16" in n for n in execution.notes)


def test_bf16_on_a_cpu_with_bf16_instructions_trains_in_bf16(monkeypatch):
    import vaebench.plugins.backends.torch.backend as torch_backend

    monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda: True)
    trained = _train(RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=4), amp="bf16")
    assert trained.amp == "bf16" and math.isfinite(trained.final_loss)
    # The autocast really ran: bf16 rounding moves the loss off the float32 run's.
    plain = _train(RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=4))
    assert trained.final_loss != plain.final_loss


def test_bf16_on_a_cpu_without_bf16_instructions_trains_in_float32(monkeypatch):
    import vaebench.plugins.backends.torch.backend as torch_backend

    monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda: False)
    execution = ExecutionOptions(device="cpu", threads=1, amp="bf16")
    spec = RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=4)
    trained = TorchBackend().train(spec, DATA, execution)
    assert trained.amp == "off" and any("no bf16 instructions" in n for n in execution.notes)
    assert trained.final_loss == _train(spec).final_loss


def test_cpu_bf16_probe_reads_this_machines_flags():
    from vaebench.plugins.backends.base import CPU_BF16_FLAGS, cpu_has_native_bf16

    try:
        with open("/proc/cpuinfo") as fh:
            flags = next(line for line in fh if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags line on this machine")
    assert cpu_has_native_bf16() is any(f in flags for f in CPU_BF16_FLAGS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error path")
def test_cuda_request_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda:0")
    assert resolve_device("auto").device == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


def test_evaluation_batches_cover_every_image_in_order():
    """Encoding crosses the device's evaluation batch (CPU: 64) and its remainder;
    each image's code is the one it gets encoded alone."""
    from vaebench.plugins.backends.torch.backend import EVAL_BATCH, eval_batch

    assert eval_batch("cpu") == EVAL_BATCH["cpu"] and eval_batch("cuda:1") == EVAL_BATCH["cuda"]
    assert eval_batch("mps") == EVAL_BATCH["cpu"]
    trained = _train(RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=8))
    n = 2 * EVAL_BATCH["cpu"] + 5
    images, _ = DATA.sample(n, np.random.default_rng(7))
    z = trained.encode(images)
    means, _, errors = trained.evaluate(images)
    assert z.shape == (n, trained.model.latent_dim) and errors.shape == (n,)
    np.testing.assert_array_equal(means, z)
    for i in (0, EVAL_BATCH["cpu"] - 1, EVAL_BATCH["cpu"], n - 1):
        np.testing.assert_allclose(trained.encode(images[i : i + 1])[0], z[i], rtol=1e-5, atol=1e-6)
