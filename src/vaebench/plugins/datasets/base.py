"""The dataset interface every dataset plugin's loader returns.

Images are ``(N, H, W, C)`` float32 in [0, 1]; factors are integer indices
``(N, K)`` with ``0 <= factors[:, k] < factor_sizes[k]``.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np


def hash_files(paths: "Iterable[str | os.PathLike[str]]", with_names: bool = False,
               algorithm: str = "sha256") -> Any:
    """A sha256 (``hashlib`` object; ``algorithm``: another of :func:`hashlib.new`'s, e.g. a
    download's published ``md5``) of the files' bytes, streamed in 4 MiB blocks, in the
    order given; ``with_names``: each file's name (and a NUL) before its bytes. The one
    way a file-backed dataset digests its files, and a download is checked."""
    import hashlib
    from pathlib import Path

    h = hashlib.new(algorithm)
    for path in paths:
        if with_names:
            h.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says what to do about it."""


@runtime_checkable
class FactorDataset(Protocol):
    """A dataset with known generative factors."""

    name: str
    #: Which pixels these are, e.g. ``"procedural-v1"`` or ``"npz"``. Runs on
    #: different variants are never ranked together.
    variant: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    #: ``(H, W, C)``.
    image_shape: tuple[int, int, int]

    def digest(self) -> str:
        """A short hex digest identifying the exact data (pixels + factor grid)."""
        ...

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """Images for factor indices ``(N, K)`` int -> ``(N, H, W, C)`` float32 in [0, 1]."""
        ...

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor index rows ``(n, K)`` int64, uniform over the factor grid."""
        ...

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, H, W, C) float32, factors (n, K) int64)``."""
        ...


def check_sample(dataset: Any, num_factors: int | None = None, n: int = 8) -> None:
    """Check a loaded dataset against the protocol on a small sample of ``n`` observations,
    before anything trains: images ``(n, H, W, C)`` with ``(H, W, C) == image_shape``, floats
    in [0, 1]; factors ``(n, K)`` integer indices with ``K == len(factor_names) ==
    len(factor_sizes)`` (and ``== num_factors``, the ``DatasetSpec``'s, when declared), each
    within its size. Raises a one-line :class:`DatasetError` saying what to change."""
    name = getattr(dataset, "name", type(dataset).__name__)
    images, factors = dataset.sample(n, np.random.default_rng(0))
    images = np.asarray(images)
    shape = tuple(getattr(dataset, "image_shape", ()) or ())
    if images.ndim != 4:
        raise DatasetError(f"dataset {name!r}: sample() images must be (N, H, W, C), got shape {images.shape}"
                           + (" (add the channel axis: images[..., None])" if images.ndim == 3 else ""))
    if len(shape) != 3 or images.shape[1:] != shape:
        raise DatasetError(f"dataset {name!r}: sample() images are {images.shape[1:]} but image_shape is {shape}")
    if images.dtype.kind != "f":
        raise DatasetError(f"dataset {name!r}: images must be floats in [0, 1], got dtype {images.dtype}")
    if images.size and not np.all(np.isfinite(images)):
        raise DatasetError(f"dataset {name!r}: images hold NaN or inf")
    if images.size and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        hint = " (divide 0..255 images by 255)" if float(images.max()) > 1.0 else ""
        raise DatasetError(f"dataset {name!r}: images must be in [0, 1], got values in "
                           f"[{float(images.min()):g}, {float(images.max()):g}]{hint}")
    names, sizes = tuple(dataset.factor_names), tuple(dataset.factor_sizes)
    if len(names) != len(sizes):
        raise DatasetError(f"dataset {name!r}: {len(names)} factor_names but {len(sizes)} factor_sizes")
    if num_factors is not None and num_factors != len(names):
        raise DatasetError(f"dataset {name!r}: the spec declares num_factors={num_factors} "
                           f"but the dataset has {len(names)} factor_names")
    f = np.asarray(factors) if factors is not None or names else np.zeros((images.shape[0], 0), np.int64)
    if f.ndim != 2 or f.shape[0] != images.shape[0] or f.shape[1] != len(names):
        raise DatasetError(f"dataset {name!r}: sample() factors must be ({images.shape[0]}, {len(names)}) "
                           f"(one column per factor name), got shape {f.shape}")
    try:
        check_factors(f, sizes)
    except DatasetError as exc:
        raise DatasetError(f"dataset {name!r}: {exc}") from None


# --- helpers for datasets whose factors form a full grid -------------------


def check_factors(factors: Any, sizes: tuple[int, ...]) -> np.ndarray:
    """Validate ``(N, K)`` integer factor indices against ``sizes``; return int64 ``(N, K)``."""
    try:
        arr = np.asarray(factors)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise DatasetError(f"factors must be an (N, {len(sizes)}) integer array: {exc}") from None
    k = len(sizes)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise DatasetError(f"factors must have shape (N, {k}), got {arr.shape}")
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise DatasetError("factors must be integer indices, got non-integral floats")
    elif arr.dtype.kind not in "iu":
        raise DatasetError(f"factors must be integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        lo = arr.min(axis=0)
        hi = arr.max(axis=0)
        bad = np.nonzero((lo < 0) | (hi >= np.asarray(sizes)))[0]
        if bad.size:
            j = int(bad[0])
            raise DatasetError(
                f"factor column {j} has index range [{lo[j]}, {hi[j]}] outside [0, {sizes[j] - 1}]"
            )
    return arr


def sample_factor_grid(n: int, rng: np.random.Generator, sizes: tuple[int, ...]) -> np.ndarray:
    """``n`` rows ``(n, K)`` int64, each factor uniform and independent over its ``sizes``."""
    if n < 0:
        raise DatasetError(f"n must be >= 0, got {n}")
    return rng.integers(0, np.asarray(sizes, dtype=np.int64), size=(int(n), len(sizes)), dtype=np.int64)


def flat_index(factors: Any, sizes: tuple[int, ...]) -> np.ndarray:
    """Row-major flat index ``(N,)`` of factor rows ``(N, K)`` in the grid ``sizes``."""
    f = check_factors(factors, sizes)
    if f.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.ravel_multi_index(tuple(f.T), sizes).astype(np.int64, copy=False)


def grid_factors(index: Any, sizes: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`flat_index`: ``(N,)`` -> ``(N, K)`` int64."""
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise DatasetError(f"index must be integer, got dtype {idx.dtype}")
    idx = idx.reshape(-1).astype(np.int64, copy=False)
    total = int(np.prod(sizes))
    if idx.size and (idx.min() < 0 or idx.max() >= total):
        raise DatasetError(f"flat index out of range [0, {total - 1}]")
    return np.stack(np.unravel_index(idx, sizes), axis=1).astype(np.int64, copy=False)


class FactorGridDataset:
    """Shared behaviour of datasets whose observations form a full factor grid
    (dSprites, 3D Shapes): every combination of factor values has one image.

    Subclasses set ``factor_sizes`` and ``pixel_scale`` (1 for 0/1 images, 1/255 for
    0..255) and implement ``observations_uint8(factors) -> (N, H, W, C) uint8``.
    """

    factor_sizes: tuple[int, ...]
    pixel_scale: float = 1.0

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, K)`` int -> images ``(N, H, W, C)`` float32 in [0, 1]."""
        out = self.observations_uint8(factors).astype(np.float32)
        if self.pixel_scale != 1.0:
            out *= np.float32(self.pixel_scale)
        return out

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, K)`` int64 factor indices, each factor uniform and independent."""
        return sample_factor_grid(n, rng, self.factor_sizes)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, H, W, C) float32, factors (n, K) int64)``; depends only on ``rng``."""
        f = self.sample_factors(n, rng)
        return self.observations(f), f

    def sample_uint8(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample` before the float conversion, with the same draws from ``rng``:
        ``(images (n, H, W, C) uint8, factors)``; ``float32(images) * float32(pixel_scale)``
        are :meth:`sample`'s images, bit for bit. A GPU backend moves these (a quarter of
        the bytes) and converts them on the device."""
        f = self.sample_factors(n, rng)
        return self.observations_uint8(f), f

    @property
    def grid_size(self) -> int:
        """How many images the whole factor grid holds (``prod(factor_sizes)``)."""
        return int(np.prod(self.factor_sizes))

    def grid_uint8(self, start: int, stop: int) -> np.ndarray:
        """Images ``start .. stop - 1`` of the whole grid in flat row-major order
        (:meth:`index_of`): ``(stop - start, H, W, C)`` uint8, as :meth:`observations_uint8`
        gives them. A GPU backend uploads the grid once, chunk by chunk, and gathers each
        batch on the device (``backends.device_grid.device_grid_wanted``)."""
        if not 0 <= start <= stop <= self.grid_size:
            raise DatasetError(f"grid range [{start}, {stop}) outside [0, {self.grid_size}]")
        return self.observations_uint8(self.factors_of(np.arange(start, stop, dtype=np.int64)))

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, K)`` -> flat row-major grid index ``(N,)`` int64."""
        return flat_index(factors, self.factor_sizes)

    def factors_of(self, index: np.ndarray) -> np.ndarray:
        """Flat grid index ``(N,)`` (or scalar) -> factor indices ``(N, K)`` int64."""
        return grid_factors(index, self.factor_sizes)
