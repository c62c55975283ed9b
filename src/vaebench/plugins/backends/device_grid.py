"""A factor grid kept whole on a device: whether a backend keeps one
(:func:`device_grid_wanted`), its upload in chunks (:func:`grid_chunks`), the flat indices
each batch gathers (:func:`draw_grid_indices`) and the per-process cache of uploaded grids
(:class:`DeviceGrids`). A dataset has a grid when it declares ``grid_uint8``
(``contract.DatasetCapabilities``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from vaebench.plugins.contract import capability

#: Largest factor grid (bytes of its uint8 images) a backend keeps whole on a GPU, and the
#: share of the device's memory it may take: dSprites (737,280 64 x 64 images, 2.8 GiB) and
#: 3D Shapes (480,000 64 x 64 x 3, 5.5 GiB) fit a 24 GiB GPU or larger.
DEVICE_GRID_MAX_BYTES = 8 * 2**30
DEVICE_GRID_MAX_SHARE = 0.25
#: Images per chunk of the grid's upload (host memory of one chunk: 128 MiB for dSprites).
DEVICE_GRID_CHUNK = 32_768


def grid_bytes(dataset: Any) -> int | None:
    """Bytes of ``dataset``'s whole uint8 image grid; ``None`` for a dataset without one
    (not a ``FactorGridDataset``)."""
    if capability(dataset, "grid_uint8") is None:
        return None
    return int(dataset.grid_size) * int(np.prod(dataset.image_shape))


def device_grid_wanted(dataset: Any, on_gpu: bool, wanted: bool | None, device_bytes: int | None) -> bool:
    """Whether a backend keeps ``dataset``'s grid on its device (``ExecutionOptions.device_grid``):
    never without a grid or when ``wanted`` is ``False``; always when ``True``; by default
    on a GPU when the grid fits :data:`DEVICE_GRID_MAX_BYTES` and :data:`DEVICE_GRID_MAX_SHARE`
    of ``device_bytes`` (the device's memory, ``None``: unknown)."""
    size = grid_bytes(dataset)
    if size is None or wanted is False:
        return False
    if wanted:
        return True
    limit = DEVICE_GRID_MAX_BYTES if device_bytes is None else min(DEVICE_GRID_MAX_BYTES, DEVICE_GRID_MAX_SHARE * device_bytes)
    return on_gpu and size <= limit


def grid_chunks(dataset: Any, chunk: int = DEVICE_GRID_CHUNK):
    """``(start, images (n, H, W, C) uint8)`` over ``dataset``'s whole grid in flat order."""
    total = int(dataset.grid_size)
    for start in range(0, total, chunk):
        yield start, capability(dataset, "grid_uint8")(start, min(total, start + chunk))


def draw_grid_indices(dataset: Any, n: int, rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One batch per generator, drawn as ``dataset.sample(n, rng)`` draws it (the same draws,
    so the generator goes on alike), as flat grid indices ``(len(rngs), n)`` int64 into
    :func:`grid_chunks`' order, and each batch's factors ``(n, K)``."""
    factors = [dataset.sample_factors(n, rng) for rng in rngs]
    return np.stack([dataset.index_of(f) for f in factors]), factors


class DeviceGrids:
    """Whole image grids kept on devices, uploaded once per process: ``upload(dataset,
    device)`` builds one; kept by content (dataset kind, variant, digest) and device, so
    the fresh dataset object each grid loads reuses it; the newest ``keep`` are held."""

    def __init__(self, upload: Callable[[Any, Any], Any], keep: int = 2) -> None:
        self.upload = upload
        self.keep = keep
        self.grids: dict[tuple[str, ...], Any] = {}
        #: seconds each upload took, by key (what ``benchmarks/gpu_check.py`` reports)
        self.seconds: dict[tuple[str, ...], float] = {}

    def get(self, dataset: Any, device: Any) -> Any:
        import time

        key = (type(dataset).__qualname__, str(getattr(dataset, "variant", "")), dataset.digest(), str(device))
        if key not in self.grids:
            while len(self.grids) >= self.keep:
                self.grids.pop(next(iter(self.grids)))
            t0 = time.perf_counter()
            self.grids[key] = self.upload(dataset, device)
            self.seconds[key] = time.perf_counter() - t0
        return self.grids[key]

    def clear(self) -> None:
        self.grids.clear()
