"""Colour, noisy and scream dSprites (disentanglement_lib's constructions, one seed per observation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vaebench.plugins.datasets.base import DatasetError
from vaebench.plugins.datasets.dsprites import FACTOR_NAMES, FACTOR_SIZES, ProceduralDSprites
from vaebench.plugins.datasets.dsprites_variants import (
    ColorDSprites,
    NoisyDSprites,
    ScreamDSprites,
    load_color_dsprites,
    load_noisy_dsprites,
    load_scream_dsprites,
    scream_texture,
)
from vaebench.testing import check_dataset

LOADERS = {"color_dsprites": load_color_dsprites, "noisy_dsprites": load_noisy_dsprites,
           "scream_dsprites": load_scream_dsprites}
BASE = ProceduralDSprites()  # one sprite bank for the module (~0.3 s to build)


def _sample(cls, n: int = 64, seed: int = 0, **kw):
    ds = cls(BASE, **kw)
    f = ds.sample_factors(n, np.random.default_rng(seed))
    masks = BASE.observations_uint8(f)[..., 0] > 0
    return ds, ds.observations(f), f, masks


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_registered_variant_follows_the_dataset_protocol(name: str, manager) -> None:
    # ~0.5 s each: the conformance kit (shapes, [0, 1], same draws for a seed, observations == sample, digest)
    ds = check_dataset(manager.dataset(name))
    assert ds.name == name and ds.image_shape == (64, 64, 3)
    assert ds.factor_names == FACTOR_NAMES and ds.factor_sizes == FACTOR_SIZES
    for got, want in zip(ds.factor_values, BASE.factor_values):
        np.testing.assert_array_equal(got, want)
    images, factors = ds.sample(32, np.random.default_rng(3))
    assert images.dtype == np.float32 and images.shape == (32, 64, 64, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0
    # the same grid points give the same images in another process-fresh object (reproducible)
    np.testing.assert_array_equal(LOADERS[name]().observations(factors), images)
    assert LOADERS[name]().digest() == ds.digest()


def test_color_sprite_is_one_colour_in_half_to_one_on_black() -> None:
    # ~0.1 s
    _, images, _, masks = _sample(ColorDSprites)
    assert masks.any(axis=(1, 2)).all()
    for img, m in zip(images, masks):
        np.testing.assert_array_equal(img[~m], 0.0)
        colours = np.unique(img[m], axis=0)
        assert colours.shape == (1, 3)  # one colour per image
        assert np.all(colours >= 128 / 255) and np.all(colours <= 1.0)
    per_image = np.stack([img[m][0] for img, m in zip(images, masks)])
    assert len(np.unique(per_image, axis=0)) > 60  # drawn per observation, not one colour
    assert per_image.min() < 0.6 and per_image.max() > 0.9  # spans [0.5, 1]


def test_noisy_background_is_noise_and_sprite_white() -> None:
    # ~0.1 s
    _, images, _, masks = _sample(NoisyDSprites)
    for img, m in zip(images, masks):
        np.testing.assert_array_equal(img[m], 1.0)
    background = images[~masks]  # (pixels, 3)
    assert 0.0 <= background.min() and background.max() <= 1.0
    assert abs(background.mean() - 0.5) < 0.01 and abs(background.std() - (1 / 12) ** 0.5) < 0.01  # uniform
    assert len(np.unique(background)) == 256  # every uint8 level occurs
    np.testing.assert_array_less(np.abs(np.corrcoef(background.T) - np.eye(3)), 0.02)  # channels independent


def test_scream_background_is_a_shifted_texture_crop_inverted_under_the_sprite() -> None:
    # ~0.1 s
    tex = scream_texture()
    assert tex.shape == (274, 350, 3) and 0.0 <= tex.min() and tex.max() <= 1.0
    np.testing.assert_array_equal(tex, scream_texture())  # fixed seed
    ds, images, f, masks = _sample(ScreamDSprites, n=16)
    u8 = np.rint(images * 255).astype(np.int64)
    found = 0
    for img, m, i in zip(u8, masks, ds.index_of(f)):
        # redo the draws of this observation: crop offsets, then the colour shift
        rng = np.random.default_rng([0, int(i)])
        r0, c0 = int(rng.integers(0, 274 - 64)), int(rng.integers(0, 350 - 64))
        shift = rng.uniform(0, 1, 3)
        back = np.rint(np.clip((tex[r0:r0 + 64, c0:c0 + 64] + shift) / 2, 0, 1) * 255).astype(np.int64)
        np.testing.assert_array_equal(img[~m], back[~m])  # background: the shifted crop
        np.testing.assert_array_equal(img[m], 255 - back[m])  # sprite: inverted
        found += int(m.sum())
    assert found > 0
    # the background really is the texture (not noise): neighbouring pixels are alike
    bg = images[~masks.astype(bool)]
    assert np.abs(np.diff(images, axis=2)).mean() < 0.1 and bg.std() > 0.05


def test_a_user_scream_image_is_read_and_thumbnailed(tmp_path: Path) -> None:
    # ~0.2 s: a JPEG written by Pillow stands in for scream.jpg
    from PIL import Image

    grad = np.zeros((600, 480, 3), np.uint8)
    grad[..., 0] = np.linspace(0, 255, 480)[None, :]
    grad[..., 2] = np.linspace(0, 255, 600)[:, None]
    Image.fromarray(grad).save(tmp_path / "scream.jpg")
    ds = load_scream_dsprites(tmp_path / "scream.jpg")
    assert ds.variant == "procedural-v1+scream-jpg" and ds.background.shape == (274, 219, 3)  # aspect kept
    assert ds.digest() != load_scream_dsprites().digest()
    images, _ = ds.sample(4, np.random.default_rng(0))
    assert images.shape == (4, 64, 64, 3)
    with pytest.raises(DatasetError, match="missing"):
        load_scream_dsprites(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="unreadable") as exc:
        load_scream_dsprites(tmp_path / "bad.jpg")
    assert "\n" not in str(exc.value)
    Image.fromarray(grad[:60, :60]).save(tmp_path / "small.png")  # smaller than one 64 x 64 crop
    with pytest.raises(DatasetError, match="larger than 64 x 64"):
        load_scream_dsprites(tmp_path / "small.png")


def test_seed_changes_the_nuisance_not_the_factors() -> None:
    # ~0.1 s
    f = BASE.sample_factors(16, np.random.default_rng(1))
    a, b = ColorDSprites(BASE).observations(f), ColorDSprites(BASE, seed=1).observations(f)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a > 0, b > 0)  # same sprite masks
    assert ColorDSprites(BASE).digest() != ColorDSprites(BASE, seed=1).digest()


def test_a_tiny_run_on_a_variant(cli, tmp_path: Path) -> None:
    # ~6 s: the conv β-VAE trains 20 steps on 3-channel noisy dSprites and MIG is scored
    registry = tmp_path / "reg"
    result = cli("run", "--dataset", "noisy_dsprites", "--steps", "20", "--batch-size", "16",
                 "--eval-samples", "512", "--metrics", "mig", "--device", "cpu", "--threads", "1", "--registry", registry,
                 "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["architecture"] for r in records] == ["conv"]
    for record in records:
        assert record["dataset"] == "noisy_dsprites" and record["dataset_variant"] == "procedural-v1+noisy-v1"
        assert record["status"] == "ok" and np.isfinite(record["metrics"]["mig"])


def test_color_and_noisy_on_the_original_npz(tmp_path: Path) -> None:
    # ~0.1 s: --dataset-path is the dSprites .npz, as for `dsprites`; a small grid in its layout
    import itertools

    classes = np.array(list(itertools.product(range(1), range(3), range(2), range(2), range(2), range(2))), np.int64)
    proc = np.column_stack([classes[:, 1], classes[:, 2] * 5, classes[:, 3] * 10, classes[:, 4] * 31, classes[:, 5] * 31])
    imgs = BASE.observations_uint8(proc)[..., 0]
    np.savez(tmp_path / "d.npz", imgs=imgs, latents_classes=classes)
    for load in (load_color_dsprites, load_noisy_dsprites):
        ds = load(tmp_path / "d.npz")
        assert ds.variant.startswith("npz+") and ds.factor_sizes == (3, 2, 2, 2, 2)
        out = ds.observations(classes[:, 1:])
        assert out.shape == (48, 64, 64, 3)
        lit = out.min(axis=-1) > 0.999 if load is load_noisy_dsprites else out.max(axis=-1) > 0
        np.testing.assert_array_equal(lit[imgs > 0], True)  # every sprite pixel lit
    with pytest.raises(DatasetError, match="missing"):
        load_color_dsprites(tmp_path / "none.npz")


def test_a_missing_scream_image_stops_the_run_before_training(cli, tmp_path: Path) -> None:
    # ~0.3 s
    result = cli("run", "--dataset", "scream_dsprites", "--dataset-path", tmp_path / "scream.jpg", "--steps", "5",
                 "--registry", tmp_path / "reg")
    assert result.exit_code == 2
    assert "scream image" in result.stderr and "missing" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "reg").exists()
