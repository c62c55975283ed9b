"""scikit-learn's bundled 8 x 8 handwritten digits (UCI optdigits test set), upscaled to 64 x 64.

``sklearn.datasets.load_digits()``: 1,797 images, ``8 x 8``, integer grey
levels 0..16 (counts of set pixels in 4 x 4 blocks of the original 32 x 32
bitmaps), labels 0..9 (178, 182, 177, 183, 181, 182, 181, 179, 174, 180).
Always available: it ships inside scikit-learn (no download, no path).

Images are stored as the 1797 x 8 x 8 uint8 levels and, per batch, scaled by
1/16 into [0, 1] and upscaled to ``64 x 64 x 1`` by **nearest-neighbour**
replication (each source pixel becomes an exact 8 x 8 block): an integer
factor, so no grey levels are invented and every block keeps its exact value
(bilinear would blur a 8-pixel-wide digit into a smear). Grayscale, not
binarised (soft Bernoulli targets, as for MNIST). Variant
``"sklearn-8x8-up64"``.

Factors, sampling and :meth:`~vaebench.plugins.datasets.mnist.LabelledImages.observations`
are as for MNIST (one factor ``"digit"``, 10 values; ``observations`` returns
a deterministic random example per requested label; no sampler, so
``has_sampler=False``). :meth:`SklearnDigits.digest` hashes the stored 8 x 8
levels and the labels.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from vaebench.plugins.datasets.base import DatasetError, FactorDataset
from vaebench.plugins.datasets.mnist import IMAGE_SIZE, LabelledImages

__all__ = ["SklearnDigits", "load_digits"]


class SklearnDigits(LabelledImages):
    """The scikit-learn digits, ``(1797, 64, 64, 1)`` after nearest-neighbour 8x upscaling."""

    name = "digits"
    variant = "sklearn-8x8-up64"

    def __init__(self) -> None:
        try:
            from sklearn.datasets import load_digits as _sk_load_digits
        except ImportError as exc:  # pragma: no cover - scikit-learn is a core dependency
            raise DatasetError(f"the digits dataset needs scikit-learn (pip install scikit-learn): {exc}") from None
        bunch = _sk_load_digits()
        levels = np.asarray(bunch.images)
        if levels.ndim != 3 or levels.shape[1:] != (8, 8) or levels.min() < 0 or levels.max() > 16:
            raise DatasetError(f"sklearn load_digits returned unexpected images {levels.shape} (expected (N, 8, 8) in 0..16)")
        images = levels.astype(np.uint8)
        labels = np.asarray(bunch.target).astype(np.int64)
        if IMAGE_SIZE % images.shape[1] or IMAGE_SIZE % images.shape[2]:  # pragma: no cover
            raise DatasetError(f"digits images {images.shape[1:]} do not divide {IMAGE_SIZE}")
        self._init_images(images, labels, 16.0, "sklearn.datasets.load_digits")
        h = hashlib.sha256()
        h.update(str(images.shape).encode())
        h.update(np.ascontiguousarray(images).tobytes())
        h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        self._digest = h.hexdigest()[:16]

    def _upscale(self, batch: np.ndarray) -> np.ndarray:
        """``(n, 8, 8)`` -> ``(n, 64, 64)`` by exact 8 x 8 block replication."""
        n, h, w = batch.shape
        fy, fx = IMAGE_SIZE // h, IMAGE_SIZE // w
        return np.broadcast_to(batch[:, :, None, :, None], (n, h, fy, w, fx)).reshape(n, IMAGE_SIZE, IMAGE_SIZE)

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the stored 8 x 8 levels and the labels."""
        return self._digest

    def __repr__(self) -> str:
        return f"SklearnDigits(n={len(self)})"


def load_digits(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """The bundled scikit-learn digits; ``path`` must be ``None`` (it takes no file)."""
    if path is not None and not (isinstance(path, str) and path == ""):
        raise DatasetError(
            f"the digits dataset is bundled with scikit-learn and takes no --dataset-path (got {os.fspath(path)!r})"
        )
    return SklearnDigits()
