"""Tests for the dSprites dataset plugin (procedural renderer and npz loader)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from vaebench.plugins.datasets.base import DatasetError, FactorDataset
from vaebench.plugins.datasets.dsprites import (
    NPZ_FILENAME,
    NpzDSprites,
    ProceduralDSprites,
    load_dsprites,
)

SQUARE, ELLIPSE, HEART = 0, 1, 2


@pytest.fixture(scope="module")
def ds() -> ProceduralDSprites:
    return ProceduralDSprites()


def _img(ds: ProceduralDSprites, shape=0, scale=5, orient=0, x=15, y=15) -> np.ndarray:
    return ds.observations(np.array([[shape, scale, orient, x, y]]))[0, :, :, 0]


def _centroid(img: np.ndarray) -> tuple[float, float]:
    r, c = np.nonzero(img)
    return float(r.mean()), float(c.mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


# --- interface, shapes, dtypes ------------------------------------------------


def test_protocol_attributes(ds: ProceduralDSprites) -> None:
    assert isinstance(ds, FactorDataset)
    assert ds.name == "dsprites"
    assert ds.variant == "procedural-v1"
    assert ds.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert ds.factor_sizes == (3, 6, 40, 32, 32)
    assert ds.image_shape == (64, 64, 1)
    assert int(np.prod(ds.factor_sizes)) == 737_280
    assert isinstance(load_dsprites(), ProceduralDSprites)
    assert isinstance(load_dsprites(None), ProceduralDSprites)


def test_sample_shapes_dtypes_binary(ds: ProceduralDSprites) -> None:
    imgs, f = ds.sample(257, np.random.default_rng(0))
    assert imgs.shape == (257, 64, 64, 1) and imgs.dtype == np.float32
    assert f.shape == (257, 5) and f.dtype == np.int64
    assert set(np.unique(imgs).tolist()) == {0.0, 1.0}
    assert np.all(f >= 0) and np.all(f < np.array(ds.factor_sizes))
    u8 = ds.observations_uint8(f)
    assert u8.shape == (257, 64, 64, 1) and u8.dtype == np.uint8
    np.testing.assert_array_equal(u8.astype(np.float32), imgs)
    assert ds.observations(np.zeros((0, 5), np.int64)).shape == (0, 64, 64, 1)


def test_every_sprite_nonempty_and_inside_frame(ds: ProceduralDSprites) -> None:
    # All 720 sprites at the four extreme positions (and the centre).
    sprites = np.array(list(itertools.product(range(3), range(6), range(40))))
    for x, y in [(0, 0), (31, 31), (0, 31), (31, 0), (15, 16)]:
        f = np.column_stack([sprites, np.full(len(sprites), x), np.full(len(sprites), y)])
        imgs = ds.observations_uint8(f)[..., 0]
        assert np.all(imgs.sum(axis=(1, 2)) > 0)
        assert not imgs[:, 0, :].any() and not imgs[:, -1, :].any()
        assert not imgs[:, :, 0].any() and not imgs[:, :, -1].any()


def test_sample_factors_uniform_ranges(ds: ProceduralDSprites) -> None:
    f = ds.sample_factors(20_000, np.random.default_rng(1))
    for k, size in enumerate(ds.factor_sizes):
        counts = np.bincount(f[:, k], minlength=size)
        assert len(counts) == size and counts.min() > 0
        expected = len(f) / size
        assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))


# --- factor semantics ---------------------------------------------------------


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
@pytest.mark.parametrize("scale,orient", [(0, 0), (5, 7), (3, 23)])
def test_position_moves_centroid_linearly(ds: ProceduralDSprites, shape: int, scale: int, orient: int) -> None:
    xs = np.arange(32)
    fx = np.array([[shape, scale, orient, x, 9] for x in xs])
    imgs = ds.observations(fx)[..., 0]
    rows, cols = np.array([_centroid(im) for im in imgs]).T
    assert np.all(np.diff(cols) > 0)
    np.testing.assert_allclose(np.diff(cols), 1.0, atol=1e-9)  # one pixel per posX step
    np.testing.assert_allclose(rows, rows[0])  # row unaffected by posX
    assert abs(cols[0] - 15.5) < 1.0 and abs(cols[-1] - 46.5) < 1.0

    fy = np.array([[shape, scale, orient, 20, y] for y in xs])
    imgs = ds.observations(fy)[..., 0]
    rows, cols = np.array([_centroid(im) for im in imgs]).T
    assert np.all(np.diff(rows) > 0)
    slope, intercept = np.polyfit(xs, rows, 1)
    assert abs(slope - 1.0) < 1e-9 and abs(intercept - 15.5) < 1.0
    np.testing.assert_allclose(cols, cols[0])


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_area_grows_strictly_with_scale(ds: ProceduralDSprites, shape: int) -> None:
    for orient in range(40):
        f = np.array([[shape, s, orient, 10, 20] for s in range(6)])
        areas = ds.observations_uint8(f).sum(axis=(1, 2, 3))
        assert np.all(np.diff(areas) > 0), (orient, areas)
    # Scale is a linear size factor: area at scale 1 is roughly 4x that at 0.5.
    f = np.array([[shape, 0, 0, 10, 20], [shape, 5, 0, 10, 20]])
    a_small, a_big = ds.observations_uint8(f).sum(axis=(1, 2, 3))
    assert 3.0 < a_big / a_small < 5.5


def test_largest_square_size_comparable_to_original(ds: ProceduralDSprites) -> None:
    im = _img(ds, SQUARE, 5, 0)
    r, c = np.nonzero(im)
    height, width = r.max() - r.min() + 1, c.max() - c.min() + 1
    assert 16 <= height <= 20 and height == width
    assert im.sum() == height * width  # axis-aligned: a full rectangle


def test_shapes_differ(ds: ProceduralDSprites) -> None:
    for scale, orient in [(5, 0), (2, 13)]:
        ims = [_img(ds, s, scale, orient) for s in range(3)]
        areas = [int(im.sum()) for im in ims]
        assert len(set(areas)) == 3
        for a, b in itertools.combinations(ims, 2):
            assert _iou(a, b) < 0.9
    areas = [int(_img(ds, s, 5, 0).sum()) for s in range(3)]
    assert areas[SQUARE] > areas[HEART] > areas[ELLIPSE]


def test_square_rotation(ds: ProceduralDSprites) -> None:
    sq0, sq45 = _img(ds, SQUARE, 5, 0), _img(ds, SQUARE, 5, 5)  # 5 * 9 deg = 45 deg
    assert _iou(sq0, sq45) < 0.8
    assert not np.array_equal(sq0, sq45)
    # A diamond's bounding box is ~sqrt(2) wider than the square's.
    w0 = np.ptp(np.nonzero(sq0)[1]) + 1
    w45 = np.ptp(np.nonzero(sq45)[1]) + 1
    assert 1.25 < w45 / w0 < 1.5
    # Fourth-order moment about the centroid distinguishes them (second moments of a square are isotropic).
    def m4(im: np.ndarray) -> float:
        r, c = np.nonzero(im)
        return float(((c - c.mean()) ** 4).mean())

    assert m4(sq45) > 1.1 * m4(sq0)
    # Periodicity: a quarter turn (index 10) maps the square onto itself.
    for scale in range(6):
        for o in range(10):
            assert _iou(_img(ds, SQUARE, scale, o), _img(ds, SQUARE, scale, o + 10)) > 0.9
            assert _iou(_img(ds, SQUARE, scale, o), _img(ds, SQUARE, scale, o + 30)) > 0.9
    # Area is roughly preserved under rotation.
    areas = ds.observations_uint8(np.array([[SQUARE, 5, o, 15, 15] for o in range(40)])).sum(axis=(1, 2, 3))
    assert areas.max() / areas.min() < 1.1


def test_ellipse_orientation_second_moments(ds: ProceduralDSprites) -> None:
    def cov(im: np.ndarray) -> np.ndarray:
        r, c = np.nonzero(im)
        return np.cov(np.stack([r, c]))

    c0, c90 = cov(_img(ds, ELLIPSE, 5, 0)), cov(_img(ds, ELLIPSE, 5, 10))
    assert c0[1, 1] > 2 * c0[0, 0]  # horizontal at orientation 0
    assert c90[0, 0] > 2 * c90[1, 1]  # vertical after a quarter turn
    # Half-turn periodicity for the ellipse.
    assert _iou(_img(ds, ELLIPSE, 4, 3), _img(ds, ELLIPSE, 4, 23)) > 0.9
    # At 45 deg the principal axis is diagonal; counter-clockwise as displayed
    # (rows down) means the upper-right end: negative row-col covariance.
    c45 = cov(_img(ds, ELLIPSE, 5, 5))
    assert c45[0, 1] < -0.25 * np.sqrt(c45[0, 0] * c45[1, 1])


def test_heart_upright_and_counterclockwise(ds: ProceduralDSprites) -> None:
    im = _img(ds, HEART, 5, 0)
    r, c = np.nonzero(im)
    rc, cc = r.mean(), c.mean()
    assert r.max() - rc > rc - r.min() + 1  # tip points down
    assert abs(c.max() - cc - (cc - c.min())) < 1.0  # left-right symmetric
    im90 = _img(ds, HEART, 5, 10)  # quarter turn counter-clockwise: tip points right
    r, c = np.nonzero(im90)
    assert c.max() - c.mean() > c.mean() - c.min() + 1
    # The heart is not quarter-turn symmetric.
    assert _iou(im, im90) < 0.9


# --- determinism & indexing -----------------------------------------------------


def test_determinism(ds: ProceduralDSprites) -> None:
    a_img, a_f = ds.sample(64, np.random.default_rng(123))
    b_img, b_f = ProceduralDSprites().sample(64, np.random.default_rng(123))
    np.testing.assert_array_equal(a_f, b_f)
    np.testing.assert_array_equal(a_img, b_img)
    c_img, c_f = ds.sample(64, np.random.default_rng(124))
    assert not np.array_equal(a_f, c_f) and not np.array_equal(a_img, c_img)
    np.testing.assert_array_equal(ds.observations(a_f), ds.observations(a_f.copy()))
    d = ds.digest()
    assert len(d) == 16 and int(d, 16) >= 0
    assert d == ProceduralDSprites().digest()


def test_index_round_trip(ds: ProceduralDSprites) -> None:
    total = 737_280
    idx = np.arange(total)
    f = ds.factors_of(idx)
    assert f.shape == (total, 5) and f.dtype == np.int64
    np.testing.assert_array_equal(f.max(axis=0) + 1, ds.factor_sizes)
    np.testing.assert_array_equal(ds.index_of(f), idx)
    np.testing.assert_array_equal(f[1], [0, 0, 0, 0, 1])  # row-major: posY fastest
    np.testing.assert_array_equal(f[32], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(f[-1], [2, 5, 39, 31, 31])
    assert ds.index_of(np.array([[1, 2, 3, 4, 5]]))[0] == (((1 * 6 + 2) * 40 + 3) * 32 + 4) * 32 + 5
    with pytest.raises(DatasetError):
        ds.factors_of(np.array([total]))
    with pytest.raises(DatasetError):
        ds.factors_of(np.array([-1]))


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[0, 0, 0, 32, 0]]),  # posX out of range
        np.array([[3, 0, 0, 0, 0]]),  # shape out of range
        np.array([[0, 0, -1, 0, 0]]),  # negative
        np.array([[0, 6, 0, 0, 0]]),  # scale out of range
        np.array([[0, 0, 40, 0, 0]]),  # orientation out of range
        np.array([[0, 0, 0, 0]]),  # wrong width
        np.array([0, 0, 0, 0, 0]),  # 1-D
        np.array([[0.5, 0, 0, 0, 0]]),  # non-integral
        np.array([["a", "b", "c", "d", "e"]]),  # not numbers
    ],
)
def test_bad_factors_raise(ds: ProceduralDSprites, bad: np.ndarray) -> None:
    with pytest.raises(DatasetError) as e:
        ds.observations(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError):
        ds.index_of(bad)


# --- npz loader ------------------------------------------------------------------

NPZ_SIZES = (1, 3, 2, 4, 2, 2)  # color, shape, scale, orientation, posX, posY


def _npz_grid(ds: ProceduralDSprites) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(latents_classes (96, 6), procedural factors (96, 5), imgs (96, 64, 64) uint8)``."""
    classes = np.array(list(itertools.product(*[range(s) for s in NPZ_SIZES])), dtype=np.int64)
    # Map the small grid onto distinct procedural sprites.
    proc = np.column_stack(
        [classes[:, 1], classes[:, 2] * 5, classes[:, 3] * 3, classes[:, 4] * 31, classes[:, 5] * 17]
    )
    imgs = ds.observations_uint8(proc)[..., 0]
    return classes, proc, imgs


def _write_npz(path, classes, imgs, **extra) -> None:
    values = classes.astype(np.float64) / 10.0
    np.savez_compressed(path, imgs=imgs, latents_classes=classes, latents_values=values, **extra)


@pytest.mark.parametrize("shuffle", [False, True])
def test_npz_loader(ds: ProceduralDSprites, tmp_path, shuffle: bool) -> None:
    classes, proc, imgs = _npz_grid(ds)
    if shuffle:
        perm = np.random.default_rng(5).permutation(len(classes))
        classes_f, imgs_f = classes[perm], imgs[perm]
    else:
        classes_f, imgs_f = classes, imgs
    path = tmp_path / NPZ_FILENAME
    # A pickled metadata entry, as in the original file: it must never be read.
    _write_npz(path, classes_f, imgs_f, metadata=np.array({"k": 1}, dtype=object))

    npz = load_dsprites(str(path))
    assert isinstance(npz, NpzDSprites) and isinstance(npz, FactorDataset)
    assert npz.variant == "npz" and npz.name == "dsprites"
    assert npz.factor_names == ds.factor_names
    assert npz.factor_sizes == (3, 2, 4, 2, 2)
    assert npz.image_shape == (64, 64, 1)
    assert npz._lookup is None if not shuffle else npz._lookup is not None

    factors = classes[:, 1:]
    out = npz.observations(factors)
    assert out.shape == (96, 64, 64, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], imgs.astype(np.float32))
    np.testing.assert_array_equal(out, ds.observations(proc))
    # Arbitrary order of requests.
    pick = np.array([95, 0, 13, 13, 60])
    np.testing.assert_array_equal(npz.observations_uint8(factors[pick])[..., 0], imgs[pick])

    assert npz.digest() == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    im, f = npz.sample(10, np.random.default_rng(0))
    assert im.shape == (10, 64, 64, 1) and f.shape == (10, 5)
    np.testing.assert_array_equal(f, npz.sample_factors(10, np.random.default_rng(0)))
    np.testing.assert_array_equal(npz.factors_of(npz.index_of(factors)), factors)
    with pytest.raises(DatasetError):
        npz.observations(np.array([[0, 2, 0, 0, 0]]))  # scale has only 2 values here


def test_npz_missing_file(tmp_path) -> None:
    missing = tmp_path / "nope" / NPZ_FILENAME
    with pytest.raises(DatasetError) as e:
        load_dsprites(str(missing))
    msg = str(e.value)
    assert NPZ_FILENAME in msg and "github.com/google-deepmind/dsprites-dataset" in msg
    assert "--dataset-path" in msg and "\n" not in msg


def test_npz_unreadable_file(tmp_path) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DatasetError) as e:
        load_dsprites(str(path))
    assert NPZ_FILENAME in str(e.value) and "\n" not in str(e.value)


def test_npz_missing_keys(tmp_path) -> None:
    path = tmp_path / "noimgs.npz"
    np.savez(path, latents_classes=np.zeros((1, 6), np.int64))
    with pytest.raises(DatasetError) as e:
        NpzDSprites(path)
    assert "imgs" in str(e.value) and "\n" not in str(e.value)


def test_npz_incomplete_grid(ds: ProceduralDSprites, tmp_path) -> None:
    classes, _, imgs = _npz_grid(ds)
    path = tmp_path / "partial.npz"
    _write_npz(path, classes[:-1], imgs[:-1])  # one combination missing
    with pytest.raises(DatasetError):
        NpzDSprites(path)
    dup = classes.copy()
    dup[1] = dup[0]  # right row count but a duplicate combination
    _write_npz(path, dup, imgs)
    with pytest.raises(DatasetError):
        NpzDSprites(path)
    _write_npz(path, classes, imgs[:-1])  # row count mismatch
    with pytest.raises(DatasetError):
        NpzDSprites(path)


def test_npz_not_an_archive(tmp_path) -> None:
    path = tmp_path / "single.npy"
    np.save(path, np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(DatasetError) as e:
        NpzDSprites(path)
    assert NPZ_FILENAME in str(e.value) and "\n" not in str(e.value)
