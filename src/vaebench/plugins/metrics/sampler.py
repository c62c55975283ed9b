"""Rendering and encoding observations for chosen factor values: what the sampler
metrics (``beta_vae_metric``, ``factor_vae_metric``) share.

Those metrics draw factor vectors, render their images with the dataset and encode
them. On a factor-grid dataset (one image per combination of factor values, a pure
function of the factors: dSprites, 3D Shapes) the same images come up again and
again: the reference β-VAE metric draws ``15,000 x 64 x 2 = 1.92 M`` images from
dSprites' 737,280, the FactorVAE metric another 970 k. :class:`CodeTable` keeps the
code of every grid image it has encoded, indexed by the image's flat grid index,
and encodes only images it has not seen; one table serves every sampler metric of
an evaluation context. A code is what ``encode`` returns for the image, so values
are those of encoding every draw (the encoder is deterministic: posterior means)
-- up to the last bits a backend may change with batch composition, which the
tests and ``benchmarks/metrics.py`` check. Datasets that are not factor grids
are encoded on every draw.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np

from vaebench.plugins.datasets.base import FactorGridDataset, flat_index, grid_factors
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import int_option, profile_option, read_options

__all__ = [
    "DEFAULT_ENCODE_BATCH",
    "DEFAULT_TABLE_BYTES",
    "CodeTable",
    "Encoder",
    "chunked_reduce",
    "code_table",
    "encode_factors",
    "fixable_factors",
    "sample_factors",
    "sampler_from_context",
    "sampler_options",
]

DEFAULT_ENCODE_BATCH = 8192
#: Largest code table kept (float64 codes of every grid image): dSprites at D = 10
#: needs 59 MB; a grid whose table would be larger is encoded on every draw.
DEFAULT_TABLE_BYTES = 1 << 30

Encoder = Callable[[np.ndarray], np.ndarray]


def sampler_from_context(ctx: EvaluationContext, metric: str) -> tuple[Any, Encoder, tuple[int, ...]]:
    """``(dataset, encode, factor_sizes)`` of a context, or a one-line ``ValueError``."""
    if ctx.dataset is None or not hasattr(ctx.dataset, "sample_factors") or not hasattr(
        ctx.dataset, "observations"
    ):
        raise ValueError(f"{metric}: needs a dataset that renders observations for chosen factors")
    if ctx.encode is None:
        raise ValueError(f"{metric}: needs an encode function (images -> posterior means)")
    sizes = tuple(getattr(ctx.dataset, "factor_sizes", ()) or ctx.factor_sizes)
    return ctx.dataset, ctx.encode, sizes


def fixable_factors(factor_sizes: tuple[int, ...], metric: str) -> np.ndarray:
    """Indices of the factors with more than one value (the ones that can be "fixed")."""
    sizes = np.asarray(factor_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"{metric}: dataset has no factor sizes")
    fixable = np.flatnonzero(sizes > 1)
    if fixable.size < 2:
        raise ValueError(
            f"{metric}: need at least 2 factors with more than one value, got sizes {sizes.tolist()}"
        )
    return fixable


def sample_factors(dataset: Any, n: int, k_count: int, rng: np.random.Generator, metric: str) -> np.ndarray:
    """``dataset.sample_factors(n, rng)`` checked to be ``(n, K)`` integers."""
    f = np.asarray(dataset.sample_factors(n, rng))
    if f.shape != (n, k_count) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(
            f"{metric}: dataset.sample_factors({n}) returned {f.dtype} array of shape {f.shape}, "
            f"expected integer ({n}, {k_count})"
        )
    return f


def encode_factors(
    dataset: Any, encode: Encoder, factors: np.ndarray, metric: str
) -> np.ndarray:
    """Render ``(M, K)`` factor rows and encode them: ``(M, D)`` float64 means, validated."""
    z = np.asarray(encode(dataset.observations(factors)))
    if z.ndim != 2 or z.shape[0] != factors.shape[0]:
        raise ValueError(
            f"{metric}: encode returned shape {z.shape} for {factors.shape[0]} images, "
            "expected (M, D)"
        )
    if not np.isfinite(z).all():
        bad = int(np.count_nonzero(~np.isfinite(z)))
        raise ValueError(f"{metric}: encoder produced {bad} NaN/inf value(s)")
    return z.astype(np.float64, copy=False)


def chunked_reduce(
    table: CodeTable,
    factors: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray],
    encode_batch: int,
    metric: str,
) -> np.ndarray:
    """Encode ``(P, G, K)`` groups of factor rows chunk by chunk and reduce each group.

    ``reduce`` maps codes ``(p, G, D)`` of ``p`` groups to ``(p, ...)``; chunks hold
    ``max(1, encode_batch // G)`` groups, so at most about ``encode_batch`` images are
    rendered at once. Returns the concatenated reductions.
    """
    p_count, group, k_count = factors.shape
    per_chunk = max(1, encode_batch // group)
    out = []
    d_count = None
    for start in range(0, p_count, per_chunk):
        chunk = factors[start : start + per_chunk]
        z = table.codes(chunk.reshape(-1, k_count), metric)
        if d_count is None:
            d_count = z.shape[1]
        elif z.shape[1] != d_count:
            raise ValueError(f"{metric}: encode returned {z.shape[1]} codes, earlier {d_count}")
        out.append(reduce(z.reshape(chunk.shape[0], group, -1)))
    return np.concatenate(out, axis=0)


def sampler_options(
    metric: str,
    options: Mapping[str, Any],
    profiles: Mapping[str, Mapping[str, int]],
    extra: Mapping[str, tuple[Callable[[str, str, Any], Any], Any]] | None = None,
) -> dict[str, Any]:
    """Options of a sampler metric: ``profile`` picks the size defaults, explicit ones win."""
    extra = dict(extra or {})
    parsers: dict[str, Callable[[str, str, Any], Any]] = {
        "profile": profile_option,
        "encode_batch": partial(int_option, minimum=1),
        **{name: partial(int_option, minimum=2 if name == "batch_size" else 1)
           for name in profiles["reference"]},
        **{name: parser for name, (parser, _) in extra.items()},
    }
    profile = profile_option(metric, "profile", options.get("profile", "reference"))
    defaults = {
        "profile": profile,
        "encode_batch": DEFAULT_ENCODE_BATCH,
        **profiles[profile],
        **{name: default for name, (_, default) in extra.items()},
    }
    return read_options(metric, options, parsers, defaults)


class CodeTable:
    """Codes of observations chosen by factor rows; on a factor grid each image is encoded once.

    Args:
        dataset: has ``observations(factors)`` (and ``sample_factors`` for the metrics).
        encode: images ``(M, H, W, C)`` in [0, 1] -> posterior means ``(M, D)``.
        factor_sizes: the factor grid (``dataset.factor_sizes`` unless overridden).
        max_bytes: largest table kept (``N_cells x D`` float64); above it, no table.

    ``images_requested`` counts the factor rows asked for, ``images_encoded`` the
    images actually rendered and encoded.
    """

    def __init__(
        self,
        dataset: Any,
        encode: Encoder,
        factor_sizes: tuple[int, ...],
        *,
        max_bytes: int = DEFAULT_TABLE_BYTES,
    ) -> None:
        self.dataset = dataset
        self.encode = encode
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.max_bytes = int(max_bytes)
        self.cells = int(np.prod(self.factor_sizes, dtype=np.float64)) if self.factor_sizes else 0
        self.cached = (
            isinstance(dataset, FactorGridDataset)
            and tuple(dataset.factor_sizes) == self.factor_sizes
            and 0 < self.cells * 8 * 2 <= self.max_bytes
        )
        self.images_requested = 0
        self.images_encoded = 0
        self._codes: np.ndarray | None = None
        self._filled: np.ndarray | None = None

    @property
    def mode(self) -> str:
        """``"grid"`` (each grid image encoded once) or ``"off"`` (every draw encoded)."""
        return "grid" if self.cached else "off"

    def codes(self, factors: np.ndarray, metric: str) -> np.ndarray:
        """Codes ``(M, D)`` float64 of the images of ``(M, K)`` factor rows, validated."""
        m = int(factors.shape[0])
        self.images_requested += m
        if not self.cached:
            self.images_encoded += m
            return encode_factors(self.dataset, self.encode, factors, metric)
        idx = flat_index(factors, self.factor_sizes)
        if self._filled is None:
            self._filled = np.zeros(self.cells, dtype=bool)
        missing = np.unique(idx[~self._filled[idx]])
        if missing.size == 0:
            return self._codes[idx]  # type: ignore[index]
        z = encode_factors(self.dataset, self.encode, grid_factors(missing, self.factor_sizes), metric)
        self.images_encoded += int(missing.size)
        if self._codes is None:
            if self.cells * z.shape[1] * 8 > self.max_bytes:
                # Too large to keep: answer this call from its own unique images, then stop caching.
                self.cached = False
                self._filled = None
                return z[np.searchsorted(missing, idx)]
            self._codes = np.zeros((self.cells, z.shape[1]), dtype=np.float64)
        elif z.shape[1] != self._codes.shape[1]:
            raise ValueError(f"{metric}: encode returned {z.shape[1]} codes, earlier {self._codes.shape[1]}")
        self._codes[missing] = z
        self._filled[missing] = True
        return self._codes[idx]

    def stats_since(self, requested: int, encoded: int) -> dict[str, Any]:
        """Record fields for the work since counters ``(requested, encoded)`` were read."""
        return {
            "code_cache": self.mode,
            "images_requested": self.images_requested - requested,
            "images_encoded": self.images_encoded - encoded,
        }


#: The code table of the last evaluation context, so that the β-VAE and FactorVAE
#: metrics of one model share the images they both draw.
_TABLE_MEMO: dict[str, Any] = {}


def code_table(ctx: EvaluationContext, metric: str) -> CodeTable:
    """The :class:`CodeTable` of a sampler context (memoised per context), or a one-line ``ValueError``."""
    dataset, encode, sizes = sampler_from_context(ctx, metric)
    ref = _TABLE_MEMO.get("ctx")
    table = _TABLE_MEMO.get("table")
    if ref is None or ref() is not ctx or table.factor_sizes != tuple(sizes):
        table = CodeTable(dataset, encode, sizes)
        _TABLE_MEMO.update(ctx=weakref.ref(ctx), table=table)
    return table
