"""Traversals, reconstructions and samples: right grid shapes, regenerated from checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from vaebench.harness.figures import dims_by_kl, most_informative_factor, tile, traversal_images
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.backends import load_trained
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.backends.torch.backend import TorchBackend
from vaebench.plugins.datasets.dsprites import ProceduralDSprites


@pytest.fixture(scope="module")
def trained():
    data = ProceduralDSprites()
    spec = RunSpec(model="beta_vae", beta=4.0, latent_dim=6, steps=20, batch_size=8)
    return TorchBackend().train(spec, data, ExecutionOptions(device="cpu", threads=1)), data


def test_tile_layout():
    images = np.zeros((3, 4, 5, 6, 1), dtype=np.float32)
    canvas = tile(images, pad=2)
    assert canvas.shape == (3 * 7 + 2, 4 * 8 + 2, 1)
    assert canvas[0, 0, 0] == 1.0 and canvas[2, 2, 0] == 0.0  # gutter white, image black


def test_traversal_sweeps_only_the_chosen_code(trained):
    model, data = trained
    base = model.encode(data.observations(np.array([[0, 5, 0, 16, 16]])))[0]
    grid = traversal_images(model, base, dims=[2, 0], value_range=(-3, 3), steps=7)
    assert grid.shape == (2, 7, 64, 64, 1) and 0.0 <= grid.min() and grid.max() <= 1.0
    # The middle of the sweep is the base code itself, for every row.
    centre = model.decode(base[None])[0]
    np.testing.assert_allclose(grid[0, 3], centre, atol=1e-6)
    np.testing.assert_allclose(grid[1, 3], centre, atol=1e-6)


def test_row_order_and_factor_labels():
    assert dims_by_kl([0.1, 3.0, 0.0, 1.5]) == [1, 3, 0, 2]
    labels = most_informative_factor([[0.1, 0.9], [0.5, 0.2]], ["shape", "posX"])
    assert labels == {0: "posX", 1: "shape"}
    # With the factors' entropies: the fraction of each held, and a second factor named
    # when the code holds >= 25% of it (an entangled scale/shape code), not when less.
    mi = [[0.44, 1.12, 0.11, 0.03], [0.02, 0.01, 0.05, 2.2]]
    labels = most_informative_factor(mi, ["shape", "scale", "orientation", "posX"], [1.1, 1.8, 3.7, 3.5])
    assert labels == {0: "scale 0.62, shape 0.40", 1: "posX 0.63"}
    # A constant factor (entropy 0) is never named, whatever its MI column holds.
    assert most_informative_factor([[0.5, 0.3]], ["a", "b"], [1.0, 0.0]) == {0: "a 0.50"}


def test_run_writes_figures_and_cli_regenerates_them(cli, tmp_path):
    registry = tmp_path / "reg"
    out = cli("run", "--model", "beta_vae", "--latent-dim", "5", *TINY, "--registry", registry, "--json")
    assert out.exit_code == 0, out.output
    (record,) = json.loads(out.stdout)
    art = {k: registry / v for k, v in record["artifacts"].items()}
    png = Image.open(art["traversal_png"])
    assert png.size[0] > png.size[1] * 0.8  # 10 columns, 5 rows plus labels
    gif = Image.open(art["traversal_gif"])
    assert gif.n_frames == 2 * 10 - 2  # there and back
    assert Image.open(art["reconstructions_png"]).size[0] > 0 and Image.open(art["samples_png"]).size[0] > 0

    # Regenerate from the checkpoint, other dims and range, into another directory.
    again = cli("traverse", record["run_id"][:8], "--dims", "0,2", "--range", "-2,2", "--steps", "5",
                "--out", tmp_path / "t", "--registry", registry)
    assert again.exit_code == 0, again.output
    assert Image.open(tmp_path / "t" / "traversal.gif").n_frames == 2 * 5 - 2
    samples = cli("samples", record["run_id"][:8], "--n", "9", "--out", tmp_path / "s", "--registry", registry)
    assert samples.exit_code == 0 and (tmp_path / "s" / "samples.png").exists()
    bad = cli("traverse", record["run_id"][:8], "--dims", "7", "--registry", registry)
    assert bad.exit_code == 2 and "not a latent dimension" in bad.stderr

    # --base: 0 is the run's own base (its GIF again, frame for frame); another held-out
    # observation or the prior's mean gives another sweep; anything else is a usage error.
    def gif_frames(path) -> np.ndarray:
        gif = Image.open(path)
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L"), dtype=np.int16))
        return np.stack(frames)

    own = gif_frames(art["traversal_gif"])
    for base in ("0", "3", "prior"):
        res = cli("traverse", record["run_id"][:8], "--base", base, "--out", tmp_path / f"b{base}", "--registry", registry)
        assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(gif_frames(tmp_path / "b0" / "traversal.gif"), own)
    for other in ("3", "prior"):
        assert np.abs(gif_frames(tmp_path / f"b{other}" / "traversal.gif") - own).mean() > 1.0, other
    for bad_base in ("-1", "first", "2.5"):
        res = cli("traverse", record["run_id"][:8], "--base", bad_base, "--registry", registry)
        assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "--base" in res.stderr, bad_base

    # The checkpoint loads through the backend-neutral loader.
    model = load_trained("torch", str(tmp_path / "reg" / "artifacts" / record["run_id"] / record["attempt"]))
    data = ProceduralDSprites()
    assert model.encode(data.observations(data.sample_factors(8, np.random.default_rng(1)))).shape == (8, 5)


def test_conditional_model_gets_one_row_per_class(tmp_path):
    import vaebench

    result = vaebench.run_grid("cvae", condition="shape", steps=5, batch_sizes=8, registry=str(tmp_path),
                               device="cpu", threads=1, eval_samples=200, metrics=["kl"])
    (record,) = result.records
    assert record["status"] == "ok"
    png = Image.open(tmp_path / record["artifacts"]["class_samples_png"])
    assert png.size[0] > png.size[1]  # 8 columns, 3 rows (square, ellipse, heart)
