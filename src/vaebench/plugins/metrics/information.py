"""Discrete information-theoretic helpers shared by the factor-based metrics.

Everything here is the *plug-in* estimator used by disentanglement_lib
(Locatello et al. 2019): continuous codes are discretized into equal-width
histogram bins, and entropies / mutual informations are computed from the
empirical joint frequencies, in nats. The functions are vectorized over columns
so that a full ``(D, K)`` mutual-information matrix costs a handful of
``np.bincount`` calls instead of ``D * K`` calls to scikit-learn, while giving the
same numbers as ``sklearn.metrics.mutual_info_score`` (to ~1e-13).
"""

from __future__ import annotations

import numpy as np

__all__ = ["discretize", "entropy", "mutual_information_matrix"]

#: Largest dense table (cells) built for re-indexing labels and, per factor, for
#: the joint histograms in :func:`mutual_information_matrix`; above it the work is
#: done by sorting instead (same result; only for labels with very many values).
_DENSE_CELL_LIMIT = 1 << 22


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Discretize each column into ``bins`` equal-width bins over its own range.

    Bit-identical to disentanglement_lib's ``_histogram_discretize``, i.e. for
    every column ``x``::

        np.digitize(x, np.histogram(x, bins)[1][:-1])

    but with the bin edges of all columns computed at once (the same
    ``np.linspace`` call ``np.histogram`` makes, with array end points) and the
    digitization done as a count of edges ``<= x``, which is what ``np.digitize``
    (``searchsorted(..., side="right")``) returns for increasing edges. As in
    ``np.histogram``, a constant column gets the range ``[v - 0.5, v + 0.5]``, the
    column maximum falls in the last bin, and edges are computed in the input's
    floating dtype (float64 for integer input).

    Args:
        codes: ``(N, D)`` real array, ``N >= 1``, all values finite.
        bins: number of bins, ``>= 1``.

    Returns:
        ``(N, D)`` int64 array with values in ``1..bins``.

    Raises:
        ValueError: on a non-2-D or empty array, non-finite values, a bad ``bins``,
            or a column whose range is too small to hold ``bins`` distinct
            floating-point edges (where ``np.histogram`` raises too).
    """
    x = np.asarray(codes)
    if x.ndim != 2:
        raise ValueError(f"codes must be a 2-D (N, D) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("codes must hold at least one sample (N >= 1)")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    if np.issubdtype(x.dtype, np.complexfloating) or not (
        np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_
    ):
        raise ValueError(f"codes must be real numbers, got dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        # np.histogram computes integer data's edges in float64 and np.digitize
        # compares the data against them in float64.
        x = x.astype(np.float64)
    if x.shape[1] == 0:
        return np.zeros(x.shape, dtype=np.int64)

    lo = x.min(axis=0)
    hi = x.max(axis=0)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        bad = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
        raise ValueError(f"codes contain NaN or infinite values (columns {bad.tolist()})")
    constant = lo == hi
    if constant.any():
        # np.histogram's expansion of an empty range, in the same dtype.
        lo = np.where(constant, lo - 0.5, lo).astype(x.dtype, copy=False)
        hi = np.where(constant, hi + 0.5, hi).astype(x.dtype, copy=False)

    # (D, bins + 1): row d equals np.histogram(x[:, d], bins)[1] bit for bit.
    edges = np.linspace(lo, hi, bins + 1, endpoint=True, dtype=x.dtype, axis=1)
    not_increasing = np.any(edges[:, :-1] >= edges[:, 1:], axis=1)
    if not_increasing.any():
        bad = np.flatnonzero(not_increasing).tolist()
        raise ValueError(
            f"cannot create {bins} finite-sized bins for the range of column(s) {bad} "
            "(range too small for the values' floating-point precision)"
        )

    # np.digitize(x, e[:-1]) == searchsorted(e[:-1], x, "right") == #{e[:-1] <= x}.
    out = np.zeros(x.shape, dtype=np.int64)
    for b in range(bins):
        out += x >= edges[:, b]
    return out


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, columns) label array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample (N >= 1)")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64) if arr.dtype == np.bool_ else arr


def _rank_columns(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-index every column to ``0..n_values - 1``, vectorized over columns.

    Column ``c`` of the result equals ``np.unique(labels[:, c], return_inverse=True)[1]``.
    Labels spanning a small range (factor indices, bin numbers) are ranked in
    ``O(N C)`` through a table of the values present; others by sorting.

    Args:
        labels: ``(N, C)`` integer labels, ``N >= 1``.

    Returns:
        ``(N, C)`` int64 ranks and ``(C,)`` int64 numbers of distinct values.
    """
    n, c = labels.shape
    base = labels if np.issubdtype(labels.dtype, np.unsignedinteger) else labels.astype(np.int64)
    lo = base.min(axis=0)
    hi = base.max(axis=0)
    # A float estimate first, so that the exact integer span below cannot overflow.
    if float(np.max(hi.astype(np.float64) - lo.astype(np.float64))) < 2.0**40:
        width = int(np.max(hi - lo)) + 1
        if width * c <= _DENSE_CELL_LIMIT:
            shifted = (base - lo).astype(np.int64)  # base >= lo: no wrap-around
            present = _column_counts(shifted, width) > 0  # (C, width)
            table = np.cumsum(present, axis=1) - 1
            ranks = table.ravel()[shifted + width * np.arange(c, dtype=np.int64)]
            return ranks, present.sum(axis=1).astype(np.int64)
    order = np.argsort(labels, axis=0, kind="stable")
    ordered = np.take_along_axis(labels, order, axis=0)
    is_new = np.zeros((n, c), dtype=np.int64)
    is_new[1:] = ordered[1:] != ordered[:-1]
    ranks_sorted = np.cumsum(is_new, axis=0)
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=0)
    return ranks, ranks_sorted[-1] + 1


def _column_counts(ranks: np.ndarray, width: int) -> np.ndarray:
    """``(N, C)`` ranks below ``width`` -> ``(C, width)`` counts of each rank per column."""
    c = ranks.shape[1]
    flat = (ranks + width * np.arange(c, dtype=np.int64)).ravel()
    return np.bincount(flat, minlength=c * width).reshape(c, width)


def mutual_information_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plug-in mutual information between every column of ``a`` and of ``b``, in nats.

    ``out[d, k]`` equals ``sklearn.metrics.mutual_info_score(b[:, k], a[:, d])``
    (the estimator disentanglement_lib's ``discrete_mutual_info`` calls):
    ``sum_{x,y} p(x, y) log(p(x, y) / (p(x) p(y)))`` over the empirical joint
    frequencies. Labels are arbitrary integers (re-indexed per column first). For
    each column of ``b`` one ``np.bincount`` builds the joint histograms with
    all ``D`` columns of ``a`` at once.

    Args:
        a: ``(N, D)`` integer labels (e.g. :func:`discretize` output).
        b: ``(N, K)`` integer labels (e.g. ground-truth factor indices).

    Returns:
        ``(D, K)`` float64 array, ``>= 0``.
    """
    a = _check_labels(a, "a")
    b = _check_labels(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must have the same number of rows, got {a.shape[0]} and {b.shape[0]}"
        )
    n, d_count = a.shape
    k_count = b.shape[1]
    out = np.zeros((d_count, k_count), dtype=np.float64)
    if d_count == 0 or k_count == 0:
        return out

    a_ranks, a_sizes = _rank_columns(a)
    b_ranks, b_sizes = _rank_columns(b)
    a_width = int(a_sizes.max())
    a_counts = _column_counts(a_ranks, a_width).ravel()  # index d * a_width + a
    b_counts = _column_counts(b_ranks, int(b_sizes.max()))  # (K, max values)
    # (N, D): the flat (code d, value a) cell of every sample.
    a_cells = a_ranks + a_width * np.arange(d_count, dtype=np.int64)

    for k in range(k_count):
        k_width = int(b_sizes[k])
        keys = a_cells * k_width + b_ranks[:, k : k + 1]  # d*W*Kv + a*Kv + b
        n_cells = d_count * a_width * k_width
        if n_cells <= _DENSE_CELL_LIMIT:
            joint = np.bincount(keys.ravel(), minlength=n_cells)
            cells = np.flatnonzero(joint)
            n_ab = joint[cells]
        else:
            cells, n_ab = np.unique(keys, return_counts=True)
        da, bv = np.divmod(cells, k_width)
        # Ratio of exact integer products (exact in float64 for N < ~9e7), so that
        # independent or constant columns give log(1) == 0 exactly.
        ratio = (n_ab * n) / (a_counts[da] * b_counts[k, bv])
        terms = n_ab * np.log(ratio)
        out[:, k] = np.bincount(da // a_width, weights=terms, minlength=d_count) / n
    np.maximum(out, 0.0, out=out)
    return out


def entropy(b: np.ndarray) -> np.ndarray:
    """Plug-in entropy of every column, in nats.

    ``out[k]`` equals ``sklearn.metrics.mutual_info_score(b[:, k], b[:, k])``
    (disentanglement_lib's ``discrete_entropy``); a constant column gives exactly 0.

    Args:
        b: ``(N, K)`` integer labels.

    Returns:
        ``(K,)`` float64 array, ``>= 0``.
    """
    b = _check_labels(b, "b")
    n, k_count = b.shape
    if k_count == 0:
        return np.zeros(0, dtype=np.float64)
    ranks, sizes = _rank_columns(b)
    counts = _column_counts(ranks, int(sizes.max())).astype(np.float64)
    present = counts > 0
    terms = np.where(present, counts * np.log(n / np.where(present, counts, 1.0)), 0.0)
    return terms.sum(axis=1) / n
