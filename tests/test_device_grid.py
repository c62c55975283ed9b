"""A factor grid kept whole on the device (``ExecutionOptions.device_grid``), each batch
gathered there from indices drawn on the host: run on the CPU with the option forced,
it gives the host path's batches and records bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.backends.device_grid import DEVICE_GRID_MAX_BYTES, DeviceGrids, device_grid_wanted, grid_bytes
from vaebench.plugins.backends.torch.backend import TorchBackend, device_grid, draw_batches
from vaebench.plugins.datasets.dsprites import NpzDSprites, ProceduralDSprites

from test_device_batches import Grey255 as _Grey255


class Grey255(_Grey255):
    """``test_device_batches``' 0..255 grid with the digest the grid cache keys on."""

    def digest(self) -> str:
        return "grey255-test"


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> NpzDSprites:
    """A real dSprites-format file of 2 x 2 x 3 x 2 x 2 = 48 64 x 64 images, rows shuffled
    (the loader's lookup path), pixels 0/1."""
    sizes = (2, 2, 3, 2, 2)
    rng = np.random.default_rng(7)
    grid = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)
    order = rng.permutation(len(grid))
    classes = np.concatenate([np.zeros((len(grid), 1), np.int64), grid[order]], axis=1)
    imgs = (rng.random((len(grid), 64, 64)) < 0.2).astype(np.uint8)
    path = tmp_path_factory.mktemp("npz") / "small.npz"
    np.savez(path, imgs=imgs, latents_classes=classes)
    return NpzDSprites(path)


def test_grid_chunks_are_the_observations_in_flat_order(small_npz):
    for dataset in (small_npz, Grey255()):
        flat = dataset.grid_uint8(0, dataset.grid_size)
        np.testing.assert_array_equal(flat, dataset.observations_uint8(dataset.factors_of(np.arange(dataset.grid_size))))
    dsprites = ProceduralDSprites()
    part = dsprites.grid_uint8(400_000, 400_200)
    np.testing.assert_array_equal(part, dsprites.observations_uint8(dsprites.factors_of(np.arange(400_000, 400_200))))
    assert grid_bytes(dsprites) == 737_280 * 64 * 64 <= DEVICE_GRID_MAX_BYTES


def test_when_the_grid_goes_to_the_device(small_npz):
    dsprites = ProceduralDSprites()
    assert device_grid_wanted(dsprites, True, None, 140 * 2**30)  # an H200
    assert not device_grid_wanted(dsprites, True, None, 8 * 2**30)  # a quarter of 8 GiB is too little
    assert not device_grid_wanted(dsprites, False, None, None)  # the CPU: batches drawn as before
    assert not device_grid_wanted(dsprites, True, False, None)
    assert device_grid_wanted(small_npz, False, True, None)  # forced (this file's tests)
    assert grid_bytes(object()) is None and not device_grid_wanted(object(), True, True, None)  # no grid (MNIST)
    with pytest.raises(ValueError, match="device_grid"):
        ExecutionOptions(device_grid="yes")


def test_a_fresh_dataset_object_reuses_the_uploaded_grid(small_npz):
    uploads = []
    grids = DeviceGrids(lambda dataset, device: uploads.append(device) or object(), keep=1)
    a = grids.get(small_npz, "cpu")
    assert grids.get(NpzDSprites(small_npz.path), "cpu") is a and uploads == ["cpu"]
    grids.get(Grey255(), "cpu")  # another dataset: the oldest one goes (keep=1)
    assert len(grids.grids) == 1 and grids.get(small_npz, "cpu") is not a and len(uploads) == 3


@pytest.mark.parametrize("members", [1, 3])
def test_torch_batches_gathered_from_the_grid_are_the_drawn_ones(small_npz, members):
    for dataset in (small_npz, Grey255()):
        plain = [np.random.default_rng(s) for s in range(members)]
        gathered = [np.random.default_rng(s) for s in range(members)]
        grid = device_grid(dataset, "cpu", True)
        for _ in range(3):  # the generators go on alike
            x, factors = draw_batches(dataset, 8, plain, "cpu")
            y, factors_y = draw_batches(dataset, 8, gathered, "cpu", grid=grid)
            assert y.dtype == torch.float32 and y.shape == x.shape and y.is_contiguous()
            # the host path's layout too (one channel: stride 1, read as channels-last by the
            # convolutions), or other kernels run and the records differ in the last bits
            assert y.stride()[1:] == x.stride()[1:]
            assert torch.equal(x, y)
            for f, g in zip(factors, factors_y):
                np.testing.assert_array_equal(f, g)
        assert [r.bit_generator.state for r in plain] == [r.bit_generator.state for r in gathered]
        assert device_grid(dataset, "cpu", None) is None  # not on a CPU unless asked


def test_jax_batches_gathered_from_the_grid_are_the_drawn_ones(small_npz):
    jax = pytest.importorskip("jax")
    from vaebench.plugins.backends.jax.backend import device_batches
    from vaebench.plugins.backends.jax.backend import device_grid as jax_grid

    cpu = jax.devices("cpu")[0]
    for dataset in (small_npz, Grey255()):
        grid = jax_grid(dataset, cpu, True)
        assert grid.shape == (dataset.grid_size, *dataset.image_shape)
        for stacked, count in ((True, 2), (False, 1)):
            plain = [np.random.default_rng(s) for s in range(count)]
            gathered = [np.random.default_rng(s) for s in range(count)]
            x, _ = device_batches(dataset, 8, plain, cpu, stacked=stacked)
            y, _ = device_batches(dataset, 8, gathered, cpu, stacked=stacked, grid=grid)
            assert y.dtype == np.float32 and y.shape == x.shape
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_torch_training_on_the_grid_records_what_the_host_path_records(small_npz):
    """A lone run and a vectorized group, each with the grid forced on and off: equal
    histories and weights, bit for bit."""
    spec = RunSpec(model="beta_vae", beta=4.0, seed=3, steps=6, batch_size=8)
    group = [RunSpec(model="beta_vae", beta=b, seed=s, steps=6, batch_size=8) for b, s in ((1.0, 0), (4.0, 1))]
    backend = TorchBackend()
    for on in (True, False):
        lone = backend.train(spec, small_npz, ExecutionOptions(device="cpu", threads=1, progress_every=1, device_grid=on))
        members = backend.train_group(group, small_npz, ExecutionOptions(device="cpu", threads=1, progress_every=1,
                                                                         device_grid=on))
        if on:
            lone_on, members_on = lone, members
    assert lone_on.history == lone.history and lone_on.history
    for key, value in _weights(lone.model).items():
        assert torch.equal(_weights(lone_on.model)[key], value), key
    for a, b in zip(members_on, members):
        assert a.history == b.history and a.history
        for key, value in _weights(b.model).items():
            assert torch.equal(_weights(a.model)[key], value), key


def test_jax_group_fused_steps_record_what_step_by_step_records(small_npz, monkeypatch):
    """The JAX group's fused steps (``fuse_steps``: a ``lax.scan`` over batches gathered from
    the device grid) against one compiled step a call: the loop looks at the same steps, so
    histories, final losses and weights are equal; the fused program really ran (8 steps a
    call: ``loop.fusable_steps`` of the cadences 8 and 8; 10 history points instead of 200,
    so that a short run has a cadence to fuse up to)."""
    pytest.importorskip("jax")
    from flax import nnx

    from vaebench.plugins.backends.jax.backend import JaxBackend
    from vaebench.plugins.backends import loop
    from vaebench.plugins.backends.loop import fusable_steps

    monkeypatch.setattr(loop, "HISTORY_POINTS", 10)

    group = [RunSpec(model="beta_vae", backend="jax", architecture="mlp", beta=b, seed=s, steps=80, batch_size=4)
             for b, s in ((1.0, 0), (4.0, 1))]
    runs = {}
    for fuse in (1, 8):
        execution = ExecutionOptions(device="cpu", progress_every=8, device_grid=True, fuse_steps=fuse, figures=False)
        assert fusable_steps(80, execution, fuse) == fuse
        runs[fuse] = JaxBackend().train_group(group, small_npz, execution)
    assert runs[8][0].compile_seconds > 0  # the fused program (the one-step program was cached by then)
    for a, b in zip(runs[1], runs[8]):
        assert a.history == b.history and len(a.history) == 10 and a.final_loss == b.final_loss
        wa, wb = nnx.state(a.model, nnx.Param), nnx.state(b.model, nnx.Param)
        for x, y in zip(jax_leaves(wa), jax_leaves(wb)):
            assert np.array_equal(np.asarray(x), np.asarray(y))


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


class NoUint8(Grey255):
    """A grid dataset that says it has neither uint8 path (``None``: the contract's
    "absent", ``contract.DatasetCapabilities``): batches come from ``sample``'s floats."""

    sample_uint8 = None
    grid_uint8 = None


def test_a_dataset_declaring_its_uint8_paths_none_has_neither():
    dataset = NoUint8()
    assert grid_bytes(dataset) is None and not device_grid_wanted(dataset, True, True, None)
    x, factors = draw_batches(dataset, 8, [np.random.default_rng(2)], "cpu", compact=True)
    images, expected = Grey255().sample(8, np.random.default_rng(2))
    np.testing.assert_array_equal(x[0].permute(0, 2, 3, 1).numpy(), images)
    np.testing.assert_array_equal(factors[0], expected)
