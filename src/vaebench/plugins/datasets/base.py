"""The dataset interface every dataset plugin's loader returns.

Images are ``(N, H, W, C)`` float32 in [0, 1]; factors are integer indices
``(N, K)`` with ``0 <= factors[:, k] < factor_sizes[k]``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


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
