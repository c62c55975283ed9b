"""3D Shapes (Burgess & Kim 2018): a lazy loader for the original ``3dshapes.h5``.

The file (https://github.com/google-deepmind/3d-shapes) holds ``images``
``(480000, 64, 64, 3)`` uint8 and ``labels`` ``(480000, 6)`` float64, one
row per combination of six factors, in row-major order of::

    floor_hue     10   0.0, 0.1, ..., 0.9
    wall_hue      10   0.0, 0.1, ..., 0.9
    object_hue    10   0.0, 0.1, ..., 0.9
    scale          8   np.linspace(0.75, 1.25, 8)
    shape          4   0, 1, 2, 3 (cube, cylinder, sphere, capsule)
    orientation   15   np.linspace(-30, 30, 15)   (degrees)

Factor indices are derived from the label values, not assumed: per column,
the sorted distinct values (rounded to 6 decimals) give that factor's index
(``factor_values[k]`` keeps the values) and its size. The rows must cover the
grid of those sizes exactly once; if they are in row-major order (as in the
original file; checked, not assumed) row ``i`` is grid index ``i``, otherwise
a lookup table maps grid index to row. Any grid sizes are accepted, so a
smaller file in the same layout works too.

Images are read lazily with h5py: the file stays open (read-only) and each
request reads only its rows (sorted, de-duplicated fancy indexing, in
blocks), never the whole 5.9 GB array; only the labels (23 MB) are loaded.
``observations(factors)`` reads the rows of the requested grid points, so the
dataset has a sampler (``has_sampler=True``). Images are ``(64, 64, 3)``
float32 ``uint8 / 255``. Variant ``"h5"``.

h5py is an optional dependency (``pip install h5py``, or
``pip install 'vaebench[shapes3d]'``), imported only by the loader.

:meth:`Shapes3D.digest` is the sha256 (first 16 hex chars) of the file's
bytes, streamed on first call and cached on the instance (reads the whole
file once: seconds for the 5.9 GB original).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vaebench.plugins.datasets.base import (
    DatasetError,
    FactorDataset,
    FactorGridDataset,
    check_factors,
    flat_index,
    hash_files,
)

__all__ = ["FACTOR_NAMES", "FACTOR_SIZES", "H5_FILENAME", "H5_URL", "Shapes3D", "load_shapes3d"]

FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
#: Sizes in the original file (a loaded file's own sizes are in ``Shapes3D.factor_sizes``).
FACTOR_SIZES: tuple[int, ...] = (10, 10, 10, 8, 4, 15)
H5_FILENAME = "3dshapes.h5"
H5_URL = "https://github.com/google-deepmind/3d-shapes"
_READ_BLOCK = 2048  # rows per h5py fancy-index read
_DECIMALS = 6  # label values are grouped after rounding to this many decimals


def _missing_message(path: str | None) -> str:
    where = f"3D Shapes file {path!r} is missing" if path else "3D Shapes needs its local file"
    return (
        f"{where}: download {H5_FILENAME} from {H5_URL} and pass its path (or its directory) "
        "as --dataset-path PATH"
    )


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DatasetError(
            "3D Shapes needs h5py to read 3dshapes.h5: pip install h5py (or pip install 'vaebench[shapes3d]')"
        ) from None
    return h5py


class Shapes3D(FactorGridDataset):
    """``3dshapes.h5`` read lazily with h5py (variant ``"h5"``). See the module docstring."""

    name: str = "shapes3d"
    variant: str = "h5"
    factor_names: tuple[str, ...] = FACTOR_NAMES
    pixel_scale: float = 1.0 / 255.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._digest: str | None = None
        self._h5py = _import_h5py()
        if not os.path.isfile(self.path):
            raise DatasetError(_missing_message(self.path))
        self._file: Any = None
        try:
            self._load_labels()
        except BaseException:
            self.close()
            raise

    def _load_labels(self) -> None:
        images = self._dataset("images")
        labels_ds = self._dataset("labels")
        shape = tuple(int(s) for s in images.shape)
        if len(shape) != 4 or shape[3] != 3 or images.dtype != np.uint8:
            raise DatasetError(
                f"3D Shapes 'images' must be (N, H, W, 3) uint8, got {shape} {images.dtype} in {self.path!r}"
            )
        if labels_ds.ndim != 2 or labels_ds.shape[1] != len(FACTOR_NAMES) or labels_ds.dtype.kind not in "fiu":
            raise DatasetError(
                f"3D Shapes 'labels' must be (N, 6) numeric, got {labels_ds.shape} {labels_ds.dtype} in {self.path!r}"
            )
        n = shape[0]
        if labels_ds.shape[0] != n or n == 0:
            raise DatasetError(f"3D Shapes 'images' has {n} rows but 'labels' has {labels_ds.shape[0]} in {self.path!r}")
        labels = np.asarray(labels_ds[()], dtype=np.float64)
        if not np.all(np.isfinite(labels)):
            raise DatasetError(f"3D Shapes 'labels' has non-finite values in {self.path!r}")

        values: list[np.ndarray] = []
        indices = np.empty(labels.shape, dtype=np.int64)
        for k in range(labels.shape[1]):
            uniq, inv = np.unique(np.round(labels[:, k], _DECIMALS), return_inverse=True)
            values.append(uniq)
            indices[:, k] = inv.reshape(-1)
        sizes = tuple(len(v) for v in values)
        total = int(np.prod(sizes))
        if total != n:
            raise DatasetError(
                f"3D Shapes rows ({n}) do not match the factor grid {sizes} ({total} combinations) in {self.path!r}"
            )
        flat = np.ravel_multi_index(tuple(indices.T), sizes)
        if np.array_equal(flat, np.arange(n)):
            self._lookup: np.ndarray | None = None
        else:
            counts = np.bincount(flat, minlength=total)
            if not np.all(counts == 1):
                raise DatasetError(f"3D Shapes rows do not cover the factor grid {sizes} exactly once in {self.path!r}")
            lookup = np.empty(total, dtype=np.int64)
            lookup[flat] = np.arange(n, dtype=np.int64)
            self._lookup = lookup
        self.factor_sizes: tuple[int, ...] = sizes
        #: The label values of each factor, sorted: ``factor_values[k][i]`` is index ``i`` of factor ``k``.
        self.factor_values: tuple[np.ndarray, ...] = tuple(values)
        self.image_shape: tuple[int, int, int] = (shape[1], shape[2], 3)
        self._n = n

    # -- file handle -----------------------------------------------------------
    def _dataset(self, key: str) -> Any:
        if self._file is None:
            try:
                self._file = self._h5py.File(self.path, "r")
            except OSError as exc:
                msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                raise DatasetError(f"{_missing_message(self.path)} (unreadable as HDF5: {msg})") from None
        if key not in self._file:
            raise DatasetError(
                f"3D Shapes file {self.path!r} lacks the {key!r} dataset (has {sorted(self._file.keys())}); "
                f"expected the original {H5_FILENAME} from {H5_URL}"
            )
        return self._file[key]

    def close(self) -> None:
        """Close the HDF5 file (it is reopened on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_h5py"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._h5py = _import_h5py()

    def __len__(self) -> int:
        return self._n

    # -- reads -------------------------------------------------------------------
    def _rows(self, factors: np.ndarray) -> np.ndarray:
        flat = flat_index(factors, self.factor_sizes)
        return flat if self._lookup is None else self._lookup[flat]

    def read_rows(self, rows: Any) -> np.ndarray:
        """File rows ``(n,)`` int -> images ``(n, H, W, 3)`` uint8, reading only those rows."""
        r = np.asarray(rows).reshape(-1).astype(np.int64, copy=False)
        if r.size and (r.min() < 0 or r.max() >= self._n):
            raise DatasetError(f"row indices out of range [0, {self._n - 1}]")
        h, w, c = self.image_shape
        if r.size == 0:
            return np.zeros((0, h, w, c), dtype=np.uint8)
        uniq, inv = np.unique(r, return_inverse=True)  # h5py needs increasing, distinct indices
        images = self._dataset("images")
        got = np.empty((uniq.size, h, w, c), dtype=np.uint8)
        for s in range(0, uniq.size, _READ_BLOCK):
            block = uniq[s : s + _READ_BLOCK]
            lo, hi = int(block[0]), int(block[-1]) + 1
            if hi - lo == block.size:  # contiguous: one slice read
                got[s : s + block.size] = images[lo:hi]
            else:
                got[s : s + block.size] = images[block]
        return got[inv.reshape(-1)]

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 6)`` int -> images ``(N, H, W, 3)`` uint8."""
        return self.read_rows(self._rows(factors))

    def factor_array(self, factors: np.ndarray) -> np.ndarray:
        """Validate factor indices ``(N, 6)`` and return them as int64."""
        return check_factors(factors, self.factor_sizes)

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the file's bytes (streamed, cached)."""
        if self._digest is None:
            self._digest = hash_files([self.path]).hexdigest()[:16]
        return self._digest

    def __repr__(self) -> str:
        return f"Shapes3D({self.path!r}, factor_sizes={self.factor_sizes})"


def load_shapes3d(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """Open ``3dshapes.h5`` at ``path`` (the file, or a directory holding it) lazily.

    Raises a one-line :class:`DatasetError` naming the file and where to get
    it when the path is missing, and naming ``pip install h5py`` when h5py is
    not installed.
    """
    if path is None or (isinstance(path, str) and path == ""):
        raise DatasetError(_missing_message(None))
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, H5_FILENAME)
    if not os.path.isfile(p):
        raise DatasetError(_missing_message(p))
    return Shapes3D(p)
