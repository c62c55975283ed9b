"""MNIST (LeCun, Cortes & Burges): a loader for the standard IDX files, upscaled to 64 x 64.

Files (in one directory, each gzipped ``.gz`` or not)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte     split "train" (60,000)
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte      split "test"  (10,000)

from https://yann.lecun.com/exdb/mnist/ or a mirror (e.g.
https://ossci-datasets.s3.amazonaws.com/mnist/, the one torchvision uses).

Choosing the split
------------------
The harness passes only ``--dataset-path``, so the path selects the split:

* ``--dataset-path DIR`` -> the training split of ``DIR``. If ``DIR`` holds
  only the test split (``t10k-*``, as ``../shared/data/mnist`` does), loading
  fails with a one-line :class:`DatasetError` that says so and names the
  path that selects the test split (the next bullet). There is no silent
  fallback: train and test are different data (variants ``"idx-train"`` and
  ``"idx-test"``).
* ``--dataset-path DIR/t10k-images-idx3-ubyte.gz`` (any of the four file
  names, ``.gz`` or not) -> that file's split; its partner is looked up in the
  same directory.
* From Python, ``load_mnist(DIR, split="test")`` (``"t10k"`` is an alias).
  ``split=None`` (default) means "train" for a directory and the file's own
  split for a file; an explicit split that contradicts the file is an error.

Images
------
The IDX ``28 x 28`` uint8 images are kept as loaded (uint8, ~47 MB for the
training split) and resized per batch, when requested, to ``64 x 64`` (the
size the conv architectures expect) by **bilinear** interpolation with
half-pixel centres (identical to ``torch.nn.functional.interpolate(...,
mode="bilinear", align_corners=False)``), implemented as two small NumPy
matrix products. Values are ``uint8 / 255`` in [0, 1], float32, shape
``(64, 64, 1)``: grayscale, **not binarised**; the Bernoulli likelihood
then uses the grey levels as soft targets (cross-entropy with targets in
[0, 1]). Only the requested batch is ever converted to float32.

Factors
-------
One factor, the label: ``factor_names == ("digit",)``, ``factor_sizes ==
(10,)``. The dataset is finite and the digit does not determine the image,
so it has no sampler (``has_sampler=False`` in its spec):

* :meth:`MNIST.sample` draws rows uniformly at random (with replacement).
* :meth:`MNIST.observations` returns, for each requested label, a random
  example with that label, drawn with a generator seeded from the requested
  label array itself (sha256 of its int64 bytes), so the same request always
  yields the same images, independent of any other state.

:meth:`MNIST.digest` is the sha256 (first 16 hex chars) of the decompressed
IDX bytes (images file, then labels file), so a gzipped and an uncompressed
copy of the same files have the same digest.

:class:`LabelledImages` (the shared machinery) is reused by
``vaebench.plugins.datasets.digits``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from typing import Any

import numpy as np

from vaebench.plugins.datasets.base import DatasetError, FactorDataset, check_factors, sample_factor_grid

__all__ = [
    "FILENAMES",
    "IMAGE_SIZE",
    "LabelledImages",
    "MNIST",
    "MNIST_URL",
    "bilinear_matrix",
    "load_mnist",
    "parse_idx",
]

MNIST_URL = "https://yann.lecun.com/exdb/mnist/"
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: split -> (images file, labels file), without the optional ``.gz``.
FILENAMES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SPLIT_ALIASES = {"train": "train", "test": "test", "t10k": "test"}
IMAGE_SIZE = 64
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
_BATCH = 4096  # rows resized per NumPy step


def _all_names() -> str:
    return ", ".join(f"{n}[.gz]" for pair in FILENAMES.values() for n in pair)


def _download_hint() -> str:
    return (
        f"download {_all_names()} from {MNIST_URL} (or a mirror such as {MNIST_MIRROR}) "
        "into one directory and pass it as --dataset-path DIR"
    )


# --- IDX ---------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        with open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        raise DatasetError(f"MNIST file {path!r} is unreadable or a truncated download ({msg}); {_download_hint()}") from None


def parse_idx(data: bytes, magic: int, source: str = "<bytes>") -> np.ndarray:
    """Parse unsigned-byte IDX ``data`` whose magic number must be ``magic`` (2051 images, 2049 labels).

    Returns a read-only uint8 array of the header's shape (a view of ``data``).
    Raises a one-line :class:`DatasetError` on a wrong magic number, a zero or
    implausible dimension, or a payload shorter (truncated) or longer than the
    header announces.
    """
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    kind = {_IDX_IMAGES_MAGIC: "images", _IDX_LABELS_MAGIC: "labels"}.get(magic, "IDX")
    if len(data) < 4:
        raise DatasetError(f"MNIST {kind} file {source!r} is truncated ({len(data)} bytes, no IDX header)")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DatasetError(
            f"MNIST {kind} file {source!r} has IDX magic number {got}, expected {magic} "
            f"(is it the {kind} file, decompressed correctly?)"
        )
    if len(data) < header:
        raise DatasetError(f"MNIST {kind} file {source!r} is truncated ({len(data)} bytes, header needs {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim > 1 and any(d == 0 for d in dims[1:]):
        raise DatasetError(f"MNIST {kind} file {source!r} has a zero image dimension {dims}")
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(data) - header
    if payload < expected:
        raise DatasetError(
            f"MNIST {kind} file {source!r} is truncated: header announces {dims} = {expected} bytes, "
            f"found {payload}"
        )
    if payload > expected:
        raise DatasetError(
            f"MNIST {kind} file {source!r} has {payload - expected} bytes beyond the {dims} its header announces"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return arr


# --- resizing ------------------------------------------------------------------


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 matrix of 1-D bilinear interpolation with half-pixel centres.

    Same weights as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, antialias=False)``: output pixel ``j`` samples input
    coordinate ``max((j + 0.5) * n_in / n_out - 0.5, 0)``. Rows sum to 1.
    """
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m.astype(np.float32)


# --- shared labelled-image machinery -------------------------------------------


class LabelledImages:
    """A finite set of grayscale images with one factor, the class label (``"digit"``, 10 values).

    Subclasses set ``name``/``variant`` and call :meth:`_init_images` with the
    stored uint8 images ``(N, h, w)``, labels ``(N,)`` and the value that maps
    to 1.0; they may override :meth:`_upscale` (default: bilinear to 64 x 64).
    """

    name: str = "labelled"
    variant: str = ""
    factor_names: tuple[str, ...] = ("digit",)
    factor_sizes: tuple[int, ...] = (10,)
    image_shape: tuple[int, int, int] = (IMAGE_SIZE, IMAGE_SIZE, 1)

    def _init_images(self, images: np.ndarray, labels: np.ndarray, max_value: float, source: str) -> None:
        n = int(images.shape[0])
        if images.ndim != 3 or n == 0:
            raise DatasetError(f"{self.name} images from {source!r} must be a non-empty (N, H, W) array, got {images.shape}")
        if labels.shape != (n,):
            raise DatasetError(f"{self.name} has {n} images but {labels.shape[0] if labels.ndim else 0} labels in {source!r}")
        if int(labels.max()) >= self.factor_sizes[0] or int(labels.min()) < 0:
            raise DatasetError(
                f"{self.name} labels in {source!r} lie in [{int(labels.min())}, {int(labels.max())}], "
                f"expected digits 0..{self.factor_sizes[0] - 1}"
            )
        self._images = images  # uint8 as stored; never converted as a whole
        lab = labels.astype(np.int64)
        lab.flags.writeable = False
        #: ``(N,)`` int64 class labels.
        self.labels: np.ndarray = lab
        self._scale = np.float32(1.0 / max_value)
        self._my = bilinear_matrix(images.shape[1], IMAGE_SIZE)
        self._mx_t = bilinear_matrix(images.shape[2], IMAGE_SIZE).T.copy()
        order = np.argsort(lab, kind="stable")
        counts = np.bincount(lab, minlength=self.factor_sizes[0])
        self._by_label = order
        self._label_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._label_count = counts.astype(np.int64)

    def __len__(self) -> int:
        return int(self._images.shape[0])

    @property
    def raw_images(self) -> np.ndarray:
        """The stored images ``(N, h, w)`` uint8, before scaling and resizing (read-only view)."""
        view = self._images.view()
        view.flags.writeable = False
        return view

    def label_counts(self) -> np.ndarray:
        """``(10,)`` int64: how many images carry each label."""
        return self._label_count.copy()

    def _upscale(self, batch: np.ndarray) -> np.ndarray:
        """``(n, h, w)`` float32 in [0, 1] -> ``(n, 64, 64)`` float32 (bilinear)."""
        return np.matmul(np.matmul(self._my, batch), self._mx_t)

    def images(self, rows: Any) -> np.ndarray:
        """Rows ``(n,)`` int -> images ``(n, 64, 64, 1)`` float32 in [0, 1]."""
        r = np.asarray(rows)
        if r.dtype.kind not in "iu":
            raise DatasetError(f"rows must be integer indices, got dtype {r.dtype}")
        r = r.reshape(-1).astype(np.int64, copy=False)
        n = len(self)
        if r.size and (r.min() < 0 or r.max() >= n):
            raise DatasetError(f"row indices out of range [0, {n - 1}]")
        out = np.empty((r.size, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
        for s in range(0, r.size, _BATCH):
            batch = self._images[r[s : s + _BATCH]].astype(np.float32)
            batch *= self._scale
            # Clip guards float rounding only: the interpolation weights are convex.
            out[s : s + _BATCH, :, :, 0] = np.clip(self._upscale(batch), 0.0, 1.0)
        return out

    # -- protocol ------------------------------------------------------------
    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 1)`` int64 labels, uniform over 0..9."""
        return sample_factor_grid(n, rng, self.factor_sizes)

    def sample_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` int64 row indices drawn uniformly with replacement."""
        if n < 0:
            raise DatasetError(f"n must be >= 0, got {n}")
        return rng.integers(0, len(self), size=int(n), dtype=np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random rows: ``(images (n, 64, 64, 1) float32, labels (n, 1) int64)``; depends only on ``rng``."""
        rows = self.sample_rows(n, rng)
        return self.images(rows), self.labels[rows][:, None].copy()

    def rows_for(self, factors: np.ndarray) -> np.ndarray:
        """The rows :meth:`observations` uses: per requested label, a random row with that label.

        The generator is seeded from the sha256 of the requested ``(N, 1)``
        int64 labels, so equal requests give equal rows.
        """
        f = check_factors(factors, self.factor_sizes)
        lab = f[:, 0]
        if lab.size == 0:
            return np.zeros(0, dtype=np.int64)
        empty = np.nonzero(self._label_count[np.unique(lab)] == 0)[0]
        if empty.size:
            missing = np.unique(lab)[empty].tolist()
            raise DatasetError(f"{self.name} has no example with label(s) {missing}")
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(f, dtype="<i8").tobytes()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        pick = rng.integers(0, self._label_count[lab], dtype=np.int64)
        return self._by_label[self._label_start[lab] + pick]

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """Labels ``(N, 1)`` int -> one random example per label ``(N, 64, 64, 1)`` float32 (see :meth:`rows_for`)."""
        return self.images(self.rows_for(factors))


class MNIST(LabelledImages):
    """One MNIST split read from IDX files (variant ``"idx-train"`` or ``"idx-test"``). See the module docstring."""

    name = "mnist"

    def __init__(self, images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str], split: str) -> None:
        self.images_path = os.fspath(images_path)
        self.labels_path = os.fspath(labels_path)
        self.split = split
        self.variant = f"idx-{split}"
        img_bytes = _read_bytes(self.images_path)
        lab_bytes = _read_bytes(self.labels_path)
        images = parse_idx(img_bytes, _IDX_IMAGES_MAGIC, self.images_path)
        labels = parse_idx(lab_bytes, _IDX_LABELS_MAGIC, self.labels_path)
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"MNIST {split} split has {images.shape[0]} images in {self.images_path!r} but "
                f"{labels.shape[0]} labels in {self.labels_path!r}"
            )
        if images.shape[0] == 0:
            raise DatasetError(f"MNIST images file {self.images_path!r} holds no images")
        h = hashlib.sha256()
        h.update(img_bytes)
        h.update(lab_bytes)
        self._digest = h.hexdigest()[:16]
        self._init_images(images, labels, 255.0, self.images_path)

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the decompressed images then labels IDX bytes."""
        return self._digest

    def __repr__(self) -> str:
        return f"MNIST({self.images_path!r}, split={self.split!r}, n={len(self)})"


# --- loader ----------------------------------------------------------------------


def _find(directory: str, base: str) -> str | None:
    for candidate in (base, base + ".gz"):
        p = os.path.join(directory, candidate)
        if os.path.isfile(p):
            return p
    return None


def _split_of_file(filename: str) -> tuple[str, int] | None:
    stem = filename[:-3] if filename.endswith(".gz") else filename
    for split, pair in FILENAMES.items():
        if stem in pair:
            return split, pair.index(stem)
    return None


def load_mnist(path: str | os.PathLike[str] | None = None, split: str | None = None) -> FactorDataset:
    """Load one MNIST split from ``path`` (a directory, or one of the four IDX files).

    ``split``: ``"train"`` or ``"test"`` (alias ``"t10k"``); ``None`` means
    ``"train"`` for a directory and the file's own split for a file path.
    Raises a one-line :class:`DatasetError` naming the files to download if
    anything is missing, and when only the test split is present while the
    training split was asked for (naming the path that selects the test split).
    """
    if path is None or (isinstance(path, str) and path == ""):
        raise DatasetError(f"MNIST needs local files: {_download_hint()}")
    p = os.fspath(path)
    want: str | None = None
    if split is not None:
        want = _SPLIT_ALIASES.get(str(split).lower())
        if want is None:
            raise DatasetError(f"MNIST split must be 'train' or 'test' (alias 't10k'), got {split!r}")

    if os.path.isfile(p):
        directory, filename = os.path.split(p)
        found = _split_of_file(filename)
        if found is None:
            raise DatasetError(
                f"MNIST path {p!r} is not one of the IDX files ({_all_names()}); pass the directory "
                "holding them, or one of them, as --dataset-path"
            )
        file_split = found[0]
        if want is not None and want != file_split:
            raise DatasetError(f"MNIST path {p!r} is a {file_split} file but split={split!r} was requested")
        want = file_split
    elif os.path.isdir(p):
        directory = p
        want = want or "train"
    else:
        raise DatasetError(f"MNIST directory {p!r} does not exist: {_download_hint()}")

    img_name, lab_name = FILENAMES[want]
    images = _find(directory, img_name)
    labels = _find(directory, lab_name)
    if images is None or labels is None:
        missing = [n + "[.gz]" for n, f in ((img_name, images), (lab_name, labels)) if f is None]
        other = "test" if want == "train" else "train"
        o_img = _find(directory, FILENAMES[other][0])
        o_lab = _find(directory, FILENAMES[other][1])
        if want == "train" and o_img is not None and o_lab is not None:
            raise DatasetError(
                f"MNIST training split ({', '.join(missing)}) is not in {directory!r}, only the test split is: "
                f"to use the test split pass --dataset-path {o_img} (or split='test' from Python); to train on "
                f"the training split download {img_name}.gz and {lab_name}.gz from {MNIST_URL} into that directory"
            )
        raise DatasetError(f"MNIST {want} split files {missing} are missing in {directory!r}: {_download_hint()}")
    return MNIST(images, labels, want)
