"""SmallNORB (LeCun, Huang & Bottou 2004), read from its binary ``.mat`` files as
disentanglement_lib reads it (``disentanglement_lib/data/ground_truth/norb.py`` at
google-research/disentanglement_lib@86a644d4ed35c771560dc3360756363d35477357).

Files (one folder, both chunks; ``vaebench data fetch smallnorb`` puts them there)::

    smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat
    smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat

They are *not* MATLAB files but LeCun's binary matrix format (little-endian int32s): a magic
number giving the element type (``0x1E3D4C55`` bytes, ``0x1E3D4C54`` int32, ``0x1E3D4C51``
float32, ``0x1E3D4C53`` float64, ``0x1E3D4C56`` int16), ``ndim``, ``max(3, ndim)`` dimension
slots (the unused ones padding), then the data in row-major order (:func:`read_binary_matrix`,
:func:`write_binary_matrix`). ``dat``: ``(N, 2, 96, 96)`` uint8 stereo pairs; ``cat``: ``(N,)``
int32 category; ``info``: ``(N, 4)`` int32 instance, elevation, azimuth (0, 2, ..., 34),
lighting. disentanglement_lib reads the byte type as ``int8``; Pillow (checked with 13.0) turns
an ``int8`` array into the same 32-bit ``"I"`` image as the ``uint8`` one (raw mode ``I;8``:
the unsigned bytes), so this module reads ``uint8`` and resizes that ``"I"`` image
(``tests/test_data_files.py`` compares the two paths).

As there: both chunks are concatenated (48,600 rows); the left camera image (``dat[:, 0]``) is
resized 96 × 96 -> 64 × 64 with Pillow's Lanczos filter (``ANTIALIAS``) on the 32-bit image,
then ``/ 255``; azimuth is halved (0..17). The full grid is ``category 5 × instance 10 ×
elevation 9 × azimuth 18 × lighting 6``, each combination once; the instance is not a latent
factor: ``factor_names == ("category", "elevation", "azimuth", "lighting")`` and each
observation draws the instance uniformly (disentanglement_lib's ``latent_factor_indices = [0, 2,
3, 4]``). Grid sizes are read from the files (``max + 1`` per column, coverage checked), so a
reduced file in the same layout works too.

Differences, on purpose: resizing is per requested batch (the raw ``dat`` files are
memory-mapped), not all 48,600 images at load; Lanczos can overshoot, so the resized values are
clipped to [0, 255] (the protocol wants [0, 1]; disentanglement_lib keeps the overshoot);
:meth:`SmallNORB.observations` draws the instance from a generator seeded by the requested
factors' bytes (the same request gives the same images), :meth:`SmallNORB.sample` from ``rng``.
Images ``(64, 64, 1)`` float32. Variant ``"mat"``; the digest hashes the six files' bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.plugins.datasets.base import (DatasetError, FactorDataset, check_factors, hash_files,
                                            sample_factor_grid)
from vaebench.plugins.datasets.catalog import locate

__all__ = ["CHUNKS", "FACTOR_NAMES", "MAGIC", "SmallNORB", "load_smallnorb", "read_binary_matrix",
           "resize_norb", "write_binary_matrix"]

CHUNKS: tuple[str, ...] = ("5x46789x9x18x6x2x96x96-training", "5x01235x9x18x6x2x96x96-testing")
FACTOR_NAMES: tuple[str, ...] = ("category", "elevation", "azimuth", "lighting")
#: Magic number -> element dtype of LeCun's binary matrix format.
MAGIC: dict[int, np.dtype] = {
    0x1E3D4C55: np.dtype("u1"), 0x1E3D4C54: np.dtype("<i4"), 0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"), 0x1E3D4C56: np.dtype("<i2"),
}
IMAGE_SIZE = 64
_LATENT = (0, 2, 3, 4)  # columns of (category, instance, elevation, azimuth, lighting)


def filename(chunk: str, part: str) -> str:
    """``smallnorb-<chunk>-<part>.mat``."""
    return f"smallnorb-{chunk}-{part}.mat"


def read_binary_matrix(path: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """A LeCun binary matrix file -> its array (memory-mapped read-only with ``mmap``)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise DatasetError(f"{p!r} is too short for a binary matrix header")
            magic, ndim = (int(v) for v in np.frombuffer(head, "<i4", 2))
            if magic not in MAGIC or not 0 <= ndim <= 16:
                raise DatasetError(f"{p!r} is not a SmallNORB binary matrix (magic {magic:#x}, ndim {ndim})")
            slots = max(3, ndim)
            dims = tuple(int(d) for d in np.frombuffer(fh.read(4 * slots), "<i4", slots)[:ndim])
            offset = 8 + 4 * slots
            dtype = MAGIC[magic]
            need = offset + int(np.prod(dims)) * dtype.itemsize
            size = os.fstat(fh.fileno()).st_size
            if size < need:
                raise DatasetError(f"{p!r} holds {size} bytes but its header {dims} needs {need} "
                                   "(a truncated download? run `vaebench data fetch smallnorb`)")
            if mmap:
                return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=dims)
            fh.seek(offset)
            return np.frombuffer(fh.read(need - offset), dtype).reshape(dims)
    except OSError as exc:
        raise DatasetError(f"SmallNORB file {p!r} is unreadable ({exc}); run `vaebench data fetch smallnorb`") from None


def write_binary_matrix(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` (uint8, int32, float32, float64 or int16) in LeCun's binary matrix format."""
    arr = np.ascontiguousarray(array)
    found = [k for k, v in MAGIC.items() if (v.kind, v.itemsize) == (arr.dtype.kind, arr.dtype.itemsize)]
    if not found:
        raise ValueError(f"no binary matrix type for dtype {arr.dtype}")
    code, dtype = found[0], MAGIC[found[0]]
    dims = list(arr.shape) + [1] * max(0, 3 - arr.ndim)
    with open(path, "wb") as fh:
        fh.write(np.asarray([code, arr.ndim] + dims, "<i4").tobytes())
        fh.write(arr.astype(dtype, copy=False).tobytes())


def resize_norb(images: np.ndarray) -> np.ndarray:
    """``(N, 96, 96)`` uint8 -> ``(N, 64, 64)`` uint8: Pillow Lanczos on the 32-bit ``"I"`` image
    (as disentanglement_lib's ``_resize_images``), clipped to [0, 255]."""
    from PIL import Image

    out = np.empty((images.shape[0], IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(images.shape[0]):
        im = Image.fromarray(np.asarray(images[i], dtype=np.int32))
        small = np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))
        out[i] = np.clip(small, 0, 255)
    return out


class SmallNORB:
    """SmallNORB's six files (see the module docstring)."""

    name: str = "smallnorb"
    variant: str = "mat"
    factor_names: tuple[str, ...] = FACTOR_NAMES
    #: Not a factor, drawn per observation: ``observations(f)`` need not give the image
    #: ``sample()`` gave for ``f`` (the kit checks its shape and range only).
    nuisance: tuple[str, ...] = ("instance",)
    image_shape: tuple[int, int, int] = (IMAGE_SIZE, IMAGE_SIZE, 1)

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._digest: str | None = None
        self.paths = [self.folder / filename(c, p) for c in CHUNKS for p in ("dat", "cat", "info")]
        missing = [p.name for p in self.paths if not p.is_file()]
        if missing:
            raise DatasetError(f"smallnorb: {str(self.folder)!r} lacks {', '.join(missing)}; "
                               "run `vaebench data fetch smallnorb` (or pass the folder holding them as --dataset-path)")
        self._open()
        features = []
        for chunk in CHUNKS:
            cat = read_binary_matrix(self.folder / filename(chunk, "cat")).reshape(-1)
            info = read_binary_matrix(self.folder / filename(chunk, "info"))
            if info.ndim != 2 or info.shape[1] != 4 or info.shape[0] != cat.shape[0]:
                raise DatasetError(f"smallnorb: {chunk} info must be ({cat.shape[0]}, 4), got {info.shape}")
            features.append(np.column_stack((cat, info)).astype(np.int64))
        feats = np.concatenate(features, axis=0)
        feats[:, 3] = feats[:, 3] // 2  # azimuth values are 0, 2, 4, ..., 34
        if feats.shape[0] != sum(d.shape[0] for d in self._dat):
            raise DatasetError("smallnorb: the dat files' rows do not match the cat/info files' rows")
        if feats.size == 0 or feats.min() < 0:
            raise DatasetError("smallnorb: factor labels must be non-negative")
        sizes = tuple(int(s) for s in feats.max(axis=0) + 1)
        flat = np.ravel_multi_index(tuple(feats.T), sizes)
        if flat.size != int(np.prod(sizes)) or np.unique(flat).size != flat.size:
            raise DatasetError(f"smallnorb: the rows do not cover the factor grid {sizes} exactly once")
        lookup = np.empty(flat.size, dtype=np.int64)
        lookup[flat] = np.arange(flat.size)
        self._lookup = lookup
        self._all_sizes = sizes  # (category, instance, elevation, azimuth, lighting)
        self.factor_sizes: tuple[int, ...] = tuple(sizes[i] for i in _LATENT)
        self._starts = np.cumsum([0] + [d.shape[0] for d in self._dat])

    def _open(self) -> None:
        self._dat = []
        for chunk in CHUNKS:
            dat = read_binary_matrix(self.folder / filename(chunk, "dat"), mmap=True)
            if dat.ndim != 4 or dat.shape[1] != 2 or dat.dtype != np.uint8:
                raise DatasetError(f"smallnorb: {chunk} dat must be (N, 2, H, W) bytes, got {dat.shape} {dat.dtype}")
            self._dat.append(dat)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dat"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return int(self._lookup.size)

    def raw_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the concatenated chunks -> left-camera images ``(n, 96, 96)`` uint8."""
        out = np.empty((rows.size,) + self._dat[0].shape[2:], dtype=np.uint8)
        chunk = np.searchsorted(self._starts, rows, side="right") - 1
        for c, dat in enumerate(self._dat):
            sel = np.nonzero(chunk == c)[0]
            if sel.size:
                out[sel] = dat[rows[sel] - self._starts[c], 0]
        return out

    def _images(self, factors: np.ndarray, instances: np.ndarray) -> np.ndarray:
        full = np.column_stack((factors[:, 0], instances, factors[:, 1], factors[:, 2], factors[:, 3]))
        rows = self._lookup[np.ravel_multi_index(tuple(full.T), self._all_sizes)] if full.size else np.zeros(0, np.int64)
        small = resize_norb(self.raw_rows(np.asarray(rows, dtype=np.int64)))
        return (small.astype(np.float32) * np.float32(1.0 / 255.0))[..., None]

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 4)`` -> images ``(N, 64, 64, 1)`` float32 in [0, 1]; the instance
        of each is drawn from a generator seeded by the request's bytes."""
        f = check_factors(factors, self.factor_sizes)
        seed = int.from_bytes(hashlib.sha256(f.tobytes()).digest()[:8], "little")
        inst = np.random.default_rng(seed).integers(0, self._all_sizes[1], size=f.shape[0])
        return self._images(f, inst)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 4)`` int64, each factor uniform and independent."""
        return sample_factor_grid(n, rng, self.factor_sizes)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, 64, 64, 1) float32, factors (n, 4) int64)``; factors then instances from ``rng``."""
        f = self.sample_factors(n, rng)
        inst = rng.integers(0, self._all_sizes[1], size=f.shape[0])
        return self._images(f, inst), f

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the six files' bytes, in :data:`CHUNKS` order."""
        if self._digest is None:
            self._digest = hash_files(self.paths).hexdigest()[:16]
        return self._digest

    def __repr__(self) -> str:
        return f"SmallNORB({str(self.folder)!r}, factor_sizes={self.factor_sizes})"


def load_smallnorb(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """SmallNORB from the folder ``path`` (or one of its files), default where ``data fetch`` put it."""
    p = locate("smallnorb", path)
    return SmallNORB(p if p.is_dir() else p.parent)
