"""Cars3D (Reed et al. 2015), read from its MATLAB ``.mat`` files as disentanglement_lib reads it
(``disentanglement_lib/data/ground_truth/cars3d.py`` at
google-research/disentanglement_lib@86a644d4ed35c771560dc3360756363d35477357).

The folder ``cars/`` of ``nips2015-analogy-data.tar.gz`` (``vaebench data fetch cars3d`` puts it
there) holds one MATLAB v5 file per car model, ``car_<id>_mesh.mat``, read with
``scipy.io.loadmat`` (no pickle): key ``im`` ``(128, 128, 3, 24, 4)`` uint8 = (H, W, RGB,
azimuth, elevation). Factors, in this order::

    elevation      4
    azimuth       24
    object_type  183   (one per file)

Every combination has one image: the image of ``(e, a, i)`` is ``im[:, :, :, a, e]`` of the
``i``-th file (disentanglement_lib: ``einsum("abcde->deabc")`` then row ``a * 4 + e`` gets
factors ``(e, a, i)``). Each image is resized 128 × 128 -> 64 × 64 with Pillow's Lanczos filter
(disentanglement_lib's ``thumbnail((64, 64, 3), ANTIALIAS)``, which for a square image is the
same single Lanczos resize) and scaled ``/ 255``: ``(64, 64, 3)`` float32.

The file order is ``list.txt`` of the archive when the folder has one (the archive's own
ordered list), else the ``*.mat`` names sorted. disentanglement_lib takes the directory
listing's order, which the filesystem decides; ``object_type`` indices can therefore differ
from a given disentanglement_lib run's, never the set of images. A folder with another number
of files gives ``object_type`` that many values (a reduced folder works too).

Memory: a car's file is read and resized the first time one of its images is requested and
kept (uint8, 1.2 MB per car, 216 MB for all 183), not all at load. Variant ``"mat"``; the digest
hashes the files' names and bytes in factor order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.plugins.datasets.base import DatasetError, FactorDataset, FactorGridDataset, hash_files
from vaebench.plugins.datasets.catalog import locate

__all__ = ["FACTOR_NAMES", "Cars3D", "car_files", "load_cars3d", "resize_rgb"]

FACTOR_NAMES: tuple[str, ...] = ("elevation", "azimuth", "object_type")
IMAGE_SIZE = 64


def car_files(folder: Path) -> list[Path]:
    """The car files of ``folder`` in factor order (``list.txt``'s when present, else sorted)."""
    listing = folder / "list.txt"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        files = [folder / (n if n.endswith(".mat") else n + ".mat") for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DatasetError(f"cars3d: list.txt names {len(missing)} missing files (first {missing[0]}) in "
                               f"{str(folder)!r}; run `vaebench data fetch cars3d`")
        return files
    return sorted(folder.glob("*.mat"))


def resize_rgb(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, 64, 64, 3)`` uint8, Pillow Lanczos per image."""
    from PIL import Image

    out = np.empty((images.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i in range(images.shape[0]):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(images[i])).resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))
    return out


class Cars3D(FactorGridDataset):
    """A folder of Cars3D ``*_mesh.mat`` files (see the module docstring)."""

    name: str = "cars3d"
    variant: str = "mat"
    factor_names: tuple[str, ...] = FACTOR_NAMES
    pixel_scale: float = 1.0 / 255.0
    image_shape: tuple[int, int, int] = (IMAGE_SIZE, IMAGE_SIZE, 3)

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.files = car_files(self.folder)
        if not self.files:
            raise DatasetError(f"cars3d: no .mat files in {str(self.folder)!r}; run `vaebench data fetch cars3d` "
                               "(or pass the cars/ folder as --dataset-path)")
        self.factor_sizes: tuple[int, ...] = (4, 24, len(self.files))
        self._cars: dict[int, np.ndarray] = {}
        self._digest: str | None = None
        self.car(0)  # a bad file fails at load, not mid-training

    def car(self, i: int) -> np.ndarray:
        """Car ``i``'s images ``(4 elevations, 24 azimuths, 64, 64, 3)`` uint8 (read once, kept)."""
        got = self._cars.get(i)
        if got is None:
            import scipy.io

            path = self.files[i]
            try:
                im = scipy.io.loadmat(path)["im"]
            except KeyError:
                raise DatasetError(f"cars3d: {str(path)!r} has no 'im' array") from None
            except (OSError, ValueError, TypeError) as exc:
                raise DatasetError(f"cars3d: {str(path)!r} is not a readable MATLAB file ({exc})".replace("\n", " ")) from None
            if im.ndim != 5 or im.shape[2:] != (3, 24, 4) or im.dtype != np.uint8:
                raise DatasetError(f"cars3d: {path.name} 'im' must be (H, W, 3, 24, 4) uint8, got {im.shape} {im.dtype}")
            views = np.transpose(im, (4, 3, 0, 1, 2))  # (elevation, azimuth, H, W, 3)
            got = resize_rgb(views.reshape((-1,) + views.shape[2:])).reshape((4, 24, IMAGE_SIZE, IMAGE_SIZE, 3))
            self._cars[i] = got
        return got

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 3)`` -> images ``(N, 64, 64, 3)`` uint8."""
        f = self.factors_of(self.index_of(factors)) if len(factors) else np.zeros((0, 3), np.int64)
        out = np.empty((f.shape[0],) + self.image_shape, dtype=np.uint8)
        for i in np.unique(f[:, 2]):
            sel = np.nonzero(f[:, 2] == i)[0]
            out[sel] = self.car(int(i))[f[sel, 0], f[sel, 1]]
        return out

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the files' names and bytes, in factor order."""
        if self._digest is None:
            self._digest = hash_files(self.files, with_names=True).hexdigest()[:16]
        return self._digest

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cars"] = {}
        return state

    def __repr__(self) -> str:
        return f"Cars3D({str(self.folder)!r}, factor_sizes={self.factor_sizes})"


def load_cars3d(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """Cars3D from the ``cars/`` folder ``path``, default where ``data fetch`` put it."""
    p = locate("cars3d", path)
    return Cars3D(p if p.is_dir() else p.parent)
