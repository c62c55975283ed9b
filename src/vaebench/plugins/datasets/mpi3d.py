"""MPI3D (Gondal et al. 2019): toy / realistic / real, read from the published ``.npz`` files.

As disentanglement_lib reads them (``disentanglement_lib/data/ground_truth/mpi3d.py`` at
google-research/disentanglement_lib@86a644d4ed35c771560dc3360756363d35477357): the ``.npz``
holds ``images`` ``(N, 64, 64, 3)`` uint8, one row per combination of seven factors in
row-major order (row ``= dot(factors, prod(sizes) / cumprod(sizes))``), images ``uint8 / 255``::

    object_color       6 (4)
    object_shape       6 (4)
    object_size        2
    camera_height      3
    background_color   3
    horizontal_axis   40   (first DOF)
    vertical_axis     40   (second DOF)

The first two sizes follow the row count: ``N == 1,036,800`` -> 6 × 6 (the files published
now, as the MPI3D authors' README at
rr-learning/disentanglement_dataset@a7a6729f0a0fbd2370770a8a55f43f5df130408b describes them, and
disentanglement_lib's ``mpi3d_real`` sizes), ``N == 460,800`` -> 4 × 4 (the first release, the
toy file disentanglement_lib's download script fetches, its ``factor_sizes = [4, 4, 2, 3, 3,
40, 40]`` for toy/realistic). Any other ``N`` is refused unless the file carries its own grid: an int array
``factor_sizes`` of seven sizes with ``prod == N`` (not in the published files; a reduced file
a test or a user writes in the same layout, e.g. ``[2, 2, 2, 3, 3, 2, 2]`` with 288 rows).

Memory: the published files are stored uncompressed in the zip (``np.savez``), so the
``images`` member is memory-mapped in place (``np.memmap`` at the member's data offset; the
12.7 GB array is never read whole); a compressed member (``np.savez_compressed``) cannot be
mapped in place: it is extracted once to ``<file>.images.npy`` beside the file and that is
mapped (loaded into memory only where that file cannot be written). Variant ``"npz"``; :meth:`MPI3D.digest` streams the file's
sha256 once (cached).
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.plugins.datasets.base import DatasetError, FactorDataset, FactorGridDataset, hash_files
from vaebench.plugins.datasets.catalog import locate

__all__ = ["FACTOR_NAMES", "MODES", "MPI3D", "load_mpi3d_real", "load_mpi3d_realistic", "load_mpi3d_toy",
           "npz_member"]

FACTOR_NAMES: tuple[str, ...] = ("object_color", "object_shape", "object_size", "camera_height",
                                 "background_color", "horizontal_axis", "vertical_axis")
_TAIL: tuple[int, ...] = (2, 3, 3, 40, 40)
#: Row count -> factor sizes of the published files.
KNOWN_SIZES: dict[int, tuple[int, ...]] = {1036800: (6, 6) + _TAIL, 460800: (4, 4) + _TAIL}
MODES = ("mpi3d_toy", "mpi3d_realistic", "mpi3d_real")


def npz_member(path: str, key: str) -> np.ndarray:
    """Array ``key`` of the ``.npz`` at ``path``: memory-mapped read-only when the member is
    stored uncompressed, else loaded. Never unpickles (``allow_pickle=False``)."""
    member = key + ".npy"
    try:
        with zipfile.ZipFile(path) as zf:
            if member not in zf.namelist():
                raise DatasetError(f"{path!r} has no {key!r} array (has {sorted(n[:-4] for n in zf.namelist())})")
            info = zf.getinfo(member)
            if info.compress_type != zipfile.ZIP_STORED:
                return _unzipped(zf, member, path, key)
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if local[:4] != b"PK\x03\x04":
                raise DatasetError(f"{path!r}: bad zip local header for {member!r}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DatasetError(f"{path!r} is not a readable .npz ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if dtype.hasobject:
        raise DatasetError(f"{path!r}: {key!r} holds Python objects; refusing to unpickle")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _unzipped(zf: zipfile.ZipFile, member: str, path: str, key: str) -> np.ndarray:
    """A compressed member: extracted once to ``<path>.<key>.npy`` beside the file (kept while it
    is newer than the file) and memory-mapped; loaded into memory where that cannot be written."""
    cache = f"{path}.{key}.npy"
    try:
        if not (os.path.isfile(cache) and os.path.getmtime(cache) >= os.path.getmtime(path)):
            tmp = f"{cache}.{os.getpid()}.tmp"
            with zf.open(member) as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 22):
                    dst.write(block)
            os.replace(tmp, cache)
        return np.load(cache, mmap_mode="r", allow_pickle=False)
    except OSError:
        with zf.open(member) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)


class MPI3D(FactorGridDataset):
    """One MPI3D ``.npz`` (see the module docstring); ``mode`` is the dataset's name."""

    variant: str = "npz"
    factor_names: tuple[str, ...] = FACTOR_NAMES
    pixel_scale: float = 1.0 / 255.0

    def __init__(self, path: str | os.PathLike[str], mode: str = "mpi3d_toy") -> None:
        self.name = mode
        self.path = os.fspath(path)
        self._digest: str | None = None
        images = npz_member(self.path, "images")
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{mode}: 'images' must be (N, H, W, 3) uint8, got {images.shape} {images.dtype} "
                               f"in {self.path!r}")
        n = int(images.shape[0])
        sizes = KNOWN_SIZES.get(n)
        with zipfile.ZipFile(self.path) as zf:
            own = "factor_sizes.npy" in zf.namelist()
        if own:
            given = npz_member(self.path, "factor_sizes")
            sizes = tuple(int(s) for s in np.asarray(given).reshape(-1))
            if len(sizes) != len(FACTOR_NAMES) or min(sizes) < 1 or int(np.prod(sizes)) != n:
                raise DatasetError(f"{mode}: 'factor_sizes' {list(sizes)} must be 7 positive sizes whose product "
                                   f"is the {n} rows, in {self.path!r}")
        if sizes is None:
            raise DatasetError(f"{mode}: {n} images in {self.path!r} match no MPI3D grid (1036800 or 460800 rows); "
                               f"a reduced file needs a 'factor_sizes' array; re-fetch with `vaebench data fetch {mode}`")
        self.images = images
        self.factor_sizes: tuple[int, ...] = sizes
        self.image_shape: tuple[int, int, int] = (int(images.shape[1]), int(images.shape[2]), 3)

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 7)`` -> images ``(N, H, W, 3)`` uint8 (only those rows are read)."""
        rows = self.index_of(factors)
        if rows.size == 0:
            return np.zeros((0,) + self.image_shape, dtype=np.uint8)
        uniq, inv = np.unique(rows, return_inverse=True)  # sorted reads from the map
        return np.asarray(self.images[uniq])[inv.reshape(-1)]

    def grid_uint8(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop - 1`` (the file is in grid order): ``(stop - start, H, W, 3)`` uint8."""
        if not 0 <= start <= stop <= self.grid_size:
            raise DatasetError(f"grid range [{start}, {stop}) outside [0, {self.grid_size}]")
        return np.array(self.images[start:stop])

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the file's bytes (streamed, cached)."""
        if self._digest is None:
            self._digest = hash_files([self.path]).hexdigest()[:16]
        return self._digest

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.images = npz_member(self.path, "images")

    def __repr__(self) -> str:
        return f"MPI3D({self.path!r}, mode={self.name!r}, factor_sizes={self.factor_sizes})"


def _load(mode: str, path: str | os.PathLike[str] | None) -> FactorDataset:
    p = locate(mode, path)
    if p.is_dir():
        p = p / f"{mode}.npz"
    if not p.is_file():
        raise DatasetError(f"{mode}: {str(p)!r} is missing; run `vaebench data fetch {mode}` "
                           "(or pass the .npz as --dataset-path)")
    return MPI3D(Path(p), mode)


def load_mpi3d_toy(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """MPI3D toy: ``path`` is the ``.npz`` or its folder (default: where ``data fetch`` put it)."""
    return _load("mpi3d_toy", path)


def load_mpi3d_realistic(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """MPI3D realistic: ``path`` is the ``.npz`` or its folder (default: where ``data fetch`` put it)."""
    return _load("mpi3d_realistic", path)


def load_mpi3d_real(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """MPI3D real: ``path`` is the ``.npz`` or its folder (default: where ``data fetch`` put it)."""
    return _load("mpi3d_real", path)
