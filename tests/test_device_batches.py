"""What the backends do differently on a GPU, checked on the CPU where the logic allows:
batches travel as uint8 and become the CPU's float32 values bit for bit; JAX encodes
at the CUDA evaluation batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaebench.plugins.backends.torch.backend import draw_batches
from vaebench.plugins.datasets.base import FactorGridDataset
from vaebench.plugins.datasets.dsprites import ProceduralDSprites


class Grey255(FactorGridDataset):
    """A real factor-grid dataset stored as 0..255 (like 3D Shapes): 3 x 4 factors, 8 x 8 x 3 images."""

    factor_sizes = (3, 4)
    factor_names = ("a", "b")
    image_shape = (8, 8, 3)
    pixel_scale = 1.0 / 255.0

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        f = np.asarray(factors, dtype=np.int64)
        base = (f[:, 0] * 61 + f[:, 1] * 17)[:, None, None, None]
        return ((base + np.arange(8 * 8 * 3).reshape(1, 8, 8, 3) * 7) % 256).astype(np.uint8)


DATASETS = [ProceduralDSprites(), Grey255()]


@pytest.mark.parametrize("dataset", DATASETS, ids=["dsprites", "grey255"])
def test_sample_uint8_is_sample_before_the_float_conversion(dataset):
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    images, factors = dataset.sample(16, a)
    raw, raw_factors = dataset.sample_uint8(16, b)
    assert raw.dtype == np.uint8 and raw.shape == images.shape
    np.testing.assert_array_equal(raw_factors, factors)
    np.testing.assert_array_equal(raw.astype(np.float32) * np.float32(dataset.pixel_scale), images)
    assert a.bit_generator.state == b.bit_generator.state  # the same draws: the batch stream goes on alike


@pytest.mark.parametrize("dataset", DATASETS, ids=["dsprites", "grey255"])
@pytest.mark.parametrize("members", [1, 3])
def test_torch_uint8_batches_are_the_float_batches(dataset, members):
    """The GPU's path (uint8 moved, converted on the device) against the CPU's, run on the CPU."""
    plain = [np.random.default_rng(s) for s in range(members)]
    compact = [np.random.default_rng(s) for s in range(members)]
    x, factors = draw_batches(dataset, 8, plain, "cpu")
    y, factors_y = draw_batches(dataset, 8, compact, "cpu", compact=True)
    h, w, c = dataset.image_shape
    assert x.shape == y.shape == (members, 8, c, h, w) and y.dtype == torch.float32 and y.is_contiguous()
    assert torch.equal(x, y)
    for f, g in zip(factors, factors_y):
        np.testing.assert_array_equal(f, g)
    reference = dataset.sample(8, np.random.default_rng(0))[0].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(x[0].numpy(), reference)


def test_jax_uint8_batches_are_the_float_batches():
    jax = pytest.importorskip("jax")
    from vaebench.plugins.backends.jax.backend import device_batches

    cpu = jax.devices("cpu")[0]
    for dataset in DATASETS:
        x, _ = device_batches(dataset, 8, [np.random.default_rng(s) for s in range(2)], cpu)
        y, _ = device_batches(dataset, 8, [np.random.default_rng(s) for s in range(2)], cpu, compact=True)
        assert y.dtype == np.float32 and y.shape == (2, 8, *dataset.image_shape)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        one, _ = device_batches(dataset, 8, [np.random.default_rng(0)], cpu, stacked=False, compact=True)
        np.testing.assert_array_equal(np.asarray(one), np.asarray(x[0]))


def test_jax_encodes_at_the_cuda_evaluation_batch_on_a_gpu():
    jax = pytest.importorskip("jax")
    from vaebench.plugins.runspec import RunSpec
    from vaebench.plugins.backends.jax.backend import EVAL_BATCH, JaxBackend, TrainedJaxModel, eval_batch

    assert eval_batch("cuda:1") == EVAL_BATCH["cuda"] == 1024 and eval_batch("cpu") == EVAL_BATCH["cpu"]
    spec = RunSpec(model="beta_vae", beta=4.0, batch_size=8)
    data = ProceduralDSprites()
    model = JaxBackend().build(spec, data.image_shape, data)
    images = np.zeros((3000, *data.image_shape), np.float32)
    # the chunking a CUDA model's encode uses (its arrays placed on this machine's CPU)
    on_gpu = TrainedJaxModel(model, spec, "cuda:0", "off", False, jax_device=jax.devices("cpu")[0])
    assert [len(x) for x, _, _ in on_gpu._chunks(images)] == [1024, 1024, 1024]
    on_cpu = TrainedJaxModel(model, spec, "cpu", "off", False)
    assert {len(x) for x, _, _ in on_cpu._chunks(images)} == {EVAL_BATCH["cpu"]}
