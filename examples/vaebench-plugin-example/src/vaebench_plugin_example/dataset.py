"""A procedural dataset: the ``FactorDataset`` protocol of ``vaebench.plugin``."""

import hashlib

import numpy as np

from vaebench.plugin import DatasetError, FactorDataset

SIZE, SQUARE = 16, 4


class Squares:
    """A ``SQUARE``-pixel square on a ``SIZE``x``SIZE`` canvas; factors ``x``, ``y`` (its corner)."""

    name = "plugin_example_squares"
    variant = "procedural-v1"
    factor_names = ("x", "y")
    factor_sizes = (SIZE - SQUARE + 1, SIZE - SQUARE + 1)
    image_shape = (SIZE, SIZE, 1)

    def digest(self) -> str:
        return hashlib.sha256(f"{self.variant}:{SIZE}:{SQUARE}".encode()).hexdigest()[:16]

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 2)`` int -> images ``(N, 16, 16, 1)`` float32 in {0, 1}."""
        factors = np.asarray(factors, dtype=np.int64)
        images = np.zeros((len(factors), SIZE, SIZE, 1), np.float32)
        for i, (x, y) in enumerate(factors):
            images[i, y:y + SQUARE, x:x + SQUARE, 0] = 1.0
        return images

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, np.asarray(self.factor_sizes), size=(n, 2), dtype=np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(n, rng)
        return self.observations(factors), factors


def load(path: str | None = None) -> FactorDataset:
    """The loader ``DatasetSpec.load`` names; the dataset is drawn, so it takes no path."""
    if path:
        raise DatasetError(f"plugin_example_squares is procedural and takes no --dataset-path (got {path!r})")
    return Squares()
