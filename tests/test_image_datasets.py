"""Tests for the image dataset plugins: MNIST (IDX), scikit-learn digits, 3D Shapes (HDF5)."""

from __future__ import annotations

import gzip
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from vaebench.plugins.datasets.base import DatasetError, FactorDataset
from vaebench.plugins.datasets.digits import SklearnDigits, load_digits
from vaebench.plugins.datasets.mnist import FILENAMES, MNIST, bilinear_matrix, load_mnist, parse_idx

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --- IDX files written by the tests --------------------------------------------------


def _idx_images(imgs: np.ndarray, magic: int = 2051) -> bytes:
    n, h, w = imgs.shape
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, h, w)) + imgs.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray, magic: int = 2049) -> bytes:
    return magic.to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def _fake_split(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    # Encode the row in the first pixel so a test can tell which row it got.
    imgs[:, 0, 0] = np.arange(n)
    return imgs, labels


def _write_split(directory: Path, split: str, imgs: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    img_name, lab_name = FILENAMES[split]
    for name, data in ((img_name, _idx_images(imgs)), (lab_name, _idx_labels(labels))):
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_raw_and_gzipped(tmp_path: Path, gz: bool) -> None:
    imgs, labels = _fake_split()
    _write_split(tmp_path, "train", imgs, labels, gz)
    ds = load_mnist(tmp_path)
    assert isinstance(ds, MNIST) and isinstance(ds, FactorDataset)
    assert ds.variant == "idx-train" and ds.split == "train"
    assert len(ds) == 40
    np.testing.assert_array_equal(ds.raw_images, imgs)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.factor_names == ("digit",) and ds.factor_sizes == (10,) and ds.image_shape == (64, 64, 1)
    # The digest is of the decompressed bytes: the same with and without gzip.
    expected = hashlib.sha256(_idx_images(imgs) + _idx_labels(labels)).hexdigest()[:16]
    assert ds.digest() == expected


def test_idx_test_split_by_argument_and_by_file(tmp_path: Path) -> None:
    imgs, labels = _fake_split(n=30)
    _write_split(tmp_path, "test", imgs, labels, gz=True)
    # Only the test split: asking for train says so and names the path that selects test.
    with pytest.raises(DatasetError) as exc:
        load_mnist(tmp_path)
    msg = _one_line(exc)
    assert "only the test split" in msg and "t10k-images-idx3-ubyte.gz" in msg and "--dataset-path" in msg
    by_arg = load_mnist(str(tmp_path), split="test")
    by_alias = load_mnist(str(tmp_path), split="t10k")
    by_file = load_mnist(str(tmp_path / "t10k-labels-idx1-ubyte.gz"))
    for ds in (by_arg, by_alias, by_file):
        assert ds.variant == "idx-test" and len(ds) == 30
        np.testing.assert_array_equal(ds.raw_images, imgs)
    with pytest.raises(DatasetError, match="is a test file"):
        load_mnist(tmp_path / "t10k-images-idx3-ubyte.gz", split="train")
    with pytest.raises(DatasetError, match="split must be"):
        load_mnist(tmp_path, split="validation")


def test_idx_wrong_magic_truncated_and_mismatched(tmp_path: Path) -> None:
    imgs, labels = _fake_split(n=12)
    img_name, lab_name = FILENAMES["train"]
    # Wrong magic: labels file where the images file belongs.
    _write_split(tmp_path, "train", imgs, labels, gz=False)
    (tmp_path / img_name).write_bytes(_idx_labels(labels))
    with pytest.raises(DatasetError) as exc:
        load_mnist(tmp_path)
    assert "magic number 2049, expected 2051" in _one_line(exc)
    # Truncated payload.
    (tmp_path / img_name).write_bytes(_idx_images(imgs)[:-100])
    with pytest.raises(DatasetError) as exc:
        load_mnist(tmp_path)
    assert "truncated" in _one_line(exc)
    # Truncated header.
    (tmp_path / img_name).write_bytes(_idx_images(imgs)[:10])
    with pytest.raises(DatasetError, match="truncated"):
        load_mnist(tmp_path)
    # Truncated gzip stream.
    (tmp_path / img_name).unlink()
    (tmp_path / (img_name + ".gz")).write_bytes(gzip.compress(_idx_images(imgs))[:-40])
    with pytest.raises(DatasetError) as exc:
        load_mnist(tmp_path)
    assert "truncated" in _one_line(exc)
    # Counts disagree.
    (tmp_path / (img_name + ".gz")).write_bytes(gzip.compress(_idx_images(imgs[:11])))
    with pytest.raises(DatasetError, match="11 images .* 12 labels"):
        load_mnist(tmp_path)
    # Labels out of range.
    (tmp_path / (img_name + ".gz")).write_bytes(gzip.compress(_idx_images(imgs)))
    (tmp_path / lab_name).write_bytes(_idx_labels(np.full(12, 10)))
    with pytest.raises(DatasetError, match="expected digits 0..9"):
        load_mnist(tmp_path)


def test_parse_idx_trailing_bytes() -> None:
    data = _idx_labels(np.arange(5)) + b"\0"
    with pytest.raises(DatasetError, match="beyond"):
        parse_idx(data, 2049)
    assert parse_idx(data[:-1], 2049).tolist() == [0, 1, 2, 3, 4]


def test_mnist_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_mnist(tmp_path / "nope")
    msg = _one_line(exc)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert "yann.lecun.com/exdb/mnist" in msg and "--dataset-path DIR" in msg
    with pytest.raises(DatasetError) as exc:
        load_mnist(None)
    assert "--dataset-path DIR" in _one_line(exc)
    with pytest.raises(DatasetError) as exc:
        load_mnist(tmp_path)  # exists but empty
    assert "train-images-idx3-ubyte" in _one_line(exc)
    other = tmp_path / "other.bin"
    other.write_bytes(b"x")
    with pytest.raises(DatasetError, match="not one of the IDX files"):
        load_mnist(other)


def test_bilinear_resize_matches_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    imgs, labels = _fake_split(n=20)
    _write_split(tmp_path, "train", imgs, labels, gz=False)
    ds = load_mnist(tmp_path)
    got = ds.images(np.arange(20))
    assert got.shape == (20, 64, 64, 1) and got.dtype == np.float32
    x = torch.from_numpy(imgs.astype(np.float32) / 255.0)[:, None]
    ref = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(got[..., 0], ref, atol=1e-5)
    m = bilinear_matrix(28, 64)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    assert (m >= 0).all()


def test_sample_and_observations_deterministic(tmp_path: Path) -> None:
    imgs, labels = _fake_split(n=40)
    _write_split(tmp_path, "train", imgs, labels, gz=False)
    ds = load_mnist(tmp_path)
    a_img, a_f = ds.sample(25, np.random.default_rng(7))
    b_img, b_f = ds.sample(25, np.random.default_rng(7))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_f, b_f)
    assert a_f.shape == (25, 1) and a_f.dtype == np.int64
    # Sampled images belong to their labels' rows (row id is encoded in the raw pixel (0, 0)).
    rows = ds.sample_rows(25, np.random.default_rng(7))
    np.testing.assert_array_equal(a_f[:, 0], labels[rows])
    np.testing.assert_allclose(a_img, ds.images(rows))
    # observations(): one example with the requested label, the same for the same request.
    want = np.array([[3], [3], [0], [9], [5]])
    rows_o = ds.rows_for(want)
    np.testing.assert_array_equal(labels[rows_o], want[:, 0])
    np.testing.assert_array_equal(ds.rows_for(want.copy()), rows_o)
    np.testing.assert_array_equal(ds.observations(want), ds.images(rows_o))
    assert ds.observations(np.zeros((0, 1), dtype=np.int64)).shape == (0, 64, 64, 1)
    with pytest.raises(DatasetError, match="outside"):
        ds.observations(np.array([[10]]))
    with pytest.raises(DatasetError, match="shape"):
        ds.observations(np.array([1, 2]))


def test_observations_missing_label(tmp_path: Path) -> None:
    imgs, _ = _fake_split(n=6)
    _write_split(tmp_path, "train", imgs, np.array([0, 1, 2, 0, 1, 2]), gz=False)
    ds = load_mnist(tmp_path)
    with pytest.raises(DatasetError, match=r"no example with label\(s\) \[7\]"):
        ds.observations(np.array([[1], [7]]))


# --- real MNIST test split ------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test() -> MNIST:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test split not found at {MNIST_DIR} (../shared/data/mnist from the project root)")
    ds = load_mnist(MNIST_DIR, split="test")
    assert isinstance(ds, MNIST)
    return ds


def test_real_mnist_test_split(mnist_test: MNIST) -> None:
    ds = mnist_test
    assert len(ds) == 10_000 and ds.variant == "idx-test"
    assert ds.raw_images.shape == (10_000, 28, 28) and ds.raw_images.dtype == np.uint8
    assert np.bincount(ds.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert ds.label_counts().tolist() == MNIST_TEST_COUNTS
    assert ds.image_shape == (64, 64, 1)
    assert len(ds.digest()) == 16 and ds.digest() == load_mnist(MNIST_DIR / "t10k-images-idx3-ubyte.gz").digest()
    imgs, f = ds.sample(500, np.random.default_rng(0))
    assert imgs.shape == (500, 64, 64, 1) and imgs.dtype == np.float32
    assert imgs.min() == 0.0 and imgs.max() == pytest.approx(1.0) and imgs.max() <= 1.0
    # Grayscale, not binarised.
    assert np.mean((imgs > 0.05) & (imgs < 0.95)) > 0.02
    # MNIST digits are centred by their centre of mass: the resized mass is near the centre (31.5).
    mass = imgs[..., 0]
    coords = np.arange(64) + 0.0
    total = mass.sum(axis=(1, 2))
    cy = (mass.sum(axis=2) * coords).sum(axis=1) / total
    cx = (mass.sum(axis=1) * coords).sum(axis=1) / total
    assert abs(cy.mean() - 31.5) < 1.5 and abs(cx.mean() - 31.5) < 1.5
    assert np.all(np.abs(cy - 31.5) < 6) and np.all(np.abs(cx - 31.5) < 6)
    # Resizing preserves the mean intensity (up to edge effects).
    rows = ds.sample_rows(500, np.random.default_rng(0))
    raw_mean = ds.raw_images[rows].astype(np.float64).mean() / 255.0
    assert imgs.mean() == pytest.approx(raw_mean, rel=0.02)
    # Deterministic for a seed; observations honour labels.
    again, f2 = ds.sample(500, np.random.default_rng(0))
    np.testing.assert_array_equal(imgs, again)
    np.testing.assert_array_equal(f, f2)
    want = np.arange(10)[:, None]
    np.testing.assert_array_equal(ds.labels[ds.rows_for(want)], np.arange(10))


# --- scikit-learn digits --------------------------------------------------------------


def test_digits() -> None:
    ds = load_digits()
    assert isinstance(ds, SklearnDigits) and isinstance(ds, FactorDataset)
    assert len(ds) == 1797 and ds.variant == "sklearn-8x8-up64" and ds.name == "digits"
    assert ds.factor_names == ("digit",) and ds.factor_sizes == (10,) and ds.image_shape == (64, 64, 1)
    assert np.unique(ds.labels).tolist() == list(range(10))
    assert ds.raw_images.shape == (1797, 8, 8) and ds.raw_images.max() == 16
    imgs, f = ds.sample(64, np.random.default_rng(3))
    assert imgs.shape == (64, 64, 64, 1) and imgs.dtype == np.float32 and f.shape == (64, 1)
    assert 0.0 <= imgs.min() and imgs.max() <= 1.0
    again, _ = ds.sample(64, np.random.default_rng(3))
    np.testing.assert_array_equal(imgs, again)
    # Nearest-neighbour upscaling: exact 8 x 8 blocks of level / 16.
    rows = ds.sample_rows(64, np.random.default_rng(3))
    np.testing.assert_array_equal(f[:, 0], ds.labels[rows])
    blocks = imgs[..., 0].reshape(64, 8, 8, 8, 8)
    np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))
    np.testing.assert_allclose(blocks[:, :, 0, :, 0], ds.raw_images[rows] / 16.0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels[ds.rows_for(np.arange(10)[:, None])], np.arange(10))
    assert ds.digest() == load_digits(None).digest() and len(ds.digest()) == 16
    with pytest.raises(DatasetError) as exc:
        load_digits("/some/path")
    assert "takes no --dataset-path" in _one_line(exc)


# --- 3D Shapes --------------------------------------------------------------------


SMALL_SIZES = (2, 2, 2, 2, 2, 3)


def _write_shapes3d(path: Path, order: np.ndarray | None = None, drop_last: bool = False) -> np.ndarray:
    """A tiny 3dshapes.h5: grid SMALL_SIZES in row-major order (or ``order``), images encode the indices.

    Pixel ``[0, k, 0]`` holds factor ``k``'s index * 40 + 7, pixel ``[1, 0, 1]``
    the flat grid index; label values mimic the original's (hues 0.0/0.1, ...).
    """
    h5py = pytest.importorskip("h5py")
    grid = np.array(list(itertools.product(*[range(s) for s in SMALL_SIZES])), dtype=np.int64)
    values = [
        np.array([0.0, 0.1]),
        np.array([0.0, 0.1]),
        np.array([0.0, 0.1]),
        np.linspace(0.75, 1.25, 2),
        np.array([0.0, 1.0]),
        np.linspace(-30.0, 30.0, 3),
    ]
    labels = np.stack([values[k][grid[:, k]] for k in range(6)], axis=1)
    n = grid.shape[0]
    imgs = np.zeros((n, 64, 64, 3), dtype=np.uint8)
    imgs[:, 0, :6, 0] = grid * 40 + 7
    imgs[:, 1, 0, 1] = np.arange(n)
    imgs[:, 2:, :, 2] = (np.arange(n) * 2)[:, None, None]
    if order is not None:
        imgs, labels = imgs[order], labels[order]
    if drop_last:
        imgs, labels = imgs[:-1], labels[:-1]
    with h5py.File(path, "w") as fh:
        fh.create_dataset("images", data=imgs, chunks=(4, 64, 64, 3))
        fh.create_dataset("labels", data=labels)
    return grid


def test_shapes3d_row_major(tmp_path: Path) -> None:
    from vaebench.plugins.datasets.shapes3d import FACTOR_NAMES, Shapes3D, load_shapes3d

    grid = _write_shapes3d(tmp_path / "3dshapes.h5")
    ds = load_shapes3d(tmp_path)  # a directory holding 3dshapes.h5 works too
    assert isinstance(ds, Shapes3D) and isinstance(ds, FactorDataset)
    assert ds._lookup is None  # row-major order verified
    assert ds.factor_names == FACTOR_NAMES and ds.factor_sizes == SMALL_SIZES
    assert ds.image_shape == (64, 64, 3) and len(ds) == 96 and ds.variant == "h5"
    np.testing.assert_allclose(ds.factor_values[5], [-30.0, 0.0, 30.0])
    # Lazy: the images stay an h5py dataset, never an in-memory array.
    assert not isinstance(ds._dataset("images"), np.ndarray)
    f = grid[[95, 0, 17, 17, 42]]  # unsorted, with a duplicate
    u8 = ds.observations_uint8(f)
    np.testing.assert_array_equal(u8[:, 0, :6, 0], f * 40 + 7)
    np.testing.assert_array_equal(u8[:, 1, 0, 1], [95, 0, 17, 17, 42])
    obs = ds.observations(f)
    assert obs.dtype == np.float32 and obs.shape == (5, 64, 64, 3)
    np.testing.assert_allclose(obs, u8 / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.index_of(f), [95, 0, 17, 17, 42])
    np.testing.assert_array_equal(ds.factors_of(np.array([95, 0])), grid[[95, 0]])
    imgs, fs = ds.sample(50, np.random.default_rng(1))
    imgs2, fs2 = ds.sample(50, np.random.default_rng(1))
    np.testing.assert_array_equal(imgs, imgs2)
    np.testing.assert_array_equal(fs, fs2)
    np.testing.assert_array_equal(np.round(imgs[:, 0, :6, 0] * 255).astype(np.int64), fs * 40 + 7)
    np.testing.assert_array_equal(ds.observations_uint8(grid[10:20])[:, 1, 0, 1], np.arange(10, 20))  # contiguous read
    with pytest.raises(DatasetError, match="outside"):
        ds.observations(np.array([[0, 0, 0, 0, 0, 3]]))
    assert len(ds.digest()) == 16
    assert ds.digest() == hashlib.sha256((tmp_path / "3dshapes.h5").read_bytes()).hexdigest()[:16]
    import pickle

    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.observations_uint8(f), u8)
    ds.close()
    np.testing.assert_array_equal(ds.observations_uint8(f), u8)  # reopens
    ds.close()


def test_shapes3d_shuffled_and_incomplete(tmp_path: Path) -> None:
    from vaebench.plugins.datasets.shapes3d import load_shapes3d

    order = np.random.default_rng(0).permutation(96)
    grid = _write_shapes3d(tmp_path / "shuffled.h5", order=order)
    ds = load_shapes3d(tmp_path / "shuffled.h5")
    assert ds._lookup is not None
    u8 = ds.observations_uint8(grid[[3, 50, 95]])
    np.testing.assert_array_equal(u8[:, 1, 0, 1], [3, 50, 95])
    np.testing.assert_array_equal(u8[:, 0, :6, 0], grid[[3, 50, 95]] * 40 + 7)
    ds.close()
    _write_shapes3d(tmp_path / "short.h5", drop_last=True)
    with pytest.raises(DatasetError) as exc:
        load_shapes3d(tmp_path / "short.h5")
    assert "do not match the factor grid" in _one_line(exc)


def test_shapes3d_missing_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vaebench.plugins.datasets import shapes3d

    for path in (None, tmp_path / "nope.h5", tmp_path):
        with pytest.raises(DatasetError) as exc:
            shapes3d.load_shapes3d(path)
        msg = _one_line(exc)
        assert "3dshapes.h5" in msg and "github.com/google-deepmind/3d-shapes" in msg and "--dataset-path" in msg
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    pytest.importorskip("h5py")
    with pytest.raises(DatasetError) as exc:
        shapes3d.load_shapes3d(bad)
    assert "unreadable as HDF5" in _one_line(exc)
    import h5py

    with h5py.File(tmp_path / "nolabels.h5", "w") as fh:
        fh.create_dataset("images", data=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(DatasetError) as exc:
        shapes3d.load_shapes3d(tmp_path / "nolabels.h5")
    assert "lacks the 'labels' dataset" in _one_line(exc)
    # h5py not installed -> says how to install it.
    _write_shapes3d(tmp_path / "3dshapes.h5")
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    with pytest.raises(DatasetError) as exc:
        shapes3d.load_shapes3d(tmp_path / "3dshapes.h5")
    msg = _one_line(exc)
    assert "pip install h5py" in msg and "vaebench[shapes3d]" in msg
