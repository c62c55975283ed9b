"""MIG and the discrete-information helpers, checked against independent references.

References are computed in this file the slow, obvious way: per-column
``np.histogram``/``np.digitize`` (disentanglement_lib's ``_histogram_discretize``)
and a double loop of ``sklearn.metrics.mutual_info_score``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from vaebench.plugins.metrics import information
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.information import discretize, entropy, mutual_information_matrix
from vaebench.plugins.metrics.mig import compute, mutual_info_gap


# --------------------------------------------------------------------- references
def ref_discretize(x: np.ndarray, bins: int = 20) -> np.ndarray:
    out = np.zeros(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        out[:, j] = np.digitize(x[:, j], np.histogram(x[:, j], bins)[1][:-1])
    return out


def ref_mi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(
        [
            [mutual_info_score(b[:, k], a[:, d]) for k in range(b.shape[1])]
            for d in range(a.shape[1])
        ]
    )


def ref_entropy(b: np.ndarray) -> np.ndarray:
    return np.array([mutual_info_score(b[:, k], b[:, k]) for k in range(b.shape[1])])


def ref_gaps(latents: np.ndarray, factors: np.ndarray, bins: int = 20) -> np.ndarray:
    m = ref_mi(ref_discretize(latents, bins), factors)
    top = np.sort(m, axis=0)[::-1]
    return (top[0] - top[1]) / ref_entropy(factors)


def random_factors(rng: np.random.Generator, n: int, sizes: tuple[int, ...]) -> np.ndarray:
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)


# --------------------------------------------------------------------- discretize
@pytest.mark.parametrize("bins", [1, 2, 7, 20])
def test_discretize_matches_histogram_digitize_random_normal(bins: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)) * rng.uniform(1e-3, 1e3, size=6) + rng.normal(size=6) * 100
    got = discretize(x, bins)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref_discretize(x, bins))
    assert got.min() >= 1 and got.max() <= bins


def test_discretize_edge_cases_bit_identical() -> None:
    rng = np.random.default_rng(1)
    n = 500
    cols = [
        np.full(n, 3.7),  # constant: range becomes [v - 0.5, v + 0.5]
        rng.normal(size=n),
        rng.integers(-5, 6, size=n).astype(float),  # integer-valued floats
        1.0 + 1e-12 * rng.normal(size=n),  # tiny range, edges a few ulps apart
        1e8 + rng.uniform(size=n),  # large offset
        np.linspace(0.0, 1.0, n),  # maximum exactly at the top edge
        np.round(rng.uniform(0, 2, size=n), 1),  # many values exactly on 0.1-spaced edges
    ]
    x = np.stack(cols, axis=1)
    # Plant every histogram edge of a column into that column (inside its range),
    # so ties between data and floating-point edges are exercised.
    for j in range(x.shape[1]):
        edges = np.histogram(x[:, j], 20)[1]
        inside = edges[(edges >= x[:, j].min()) & (edges <= x[:, j].max())]
        x[: inside.size, j] = inside
    got = discretize(x)
    np.testing.assert_array_equal(got, ref_discretize(x))
    # constant column: one bin for all (the middle one: v is the centre of [v - 0.5, v + 0.5])
    assert np.unique(got[:, 0]).size == 1
    assert got[x[:, 5].argmax(), 5] == 20  # the maximum lands in the last bin


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32, np.float64])
def test_discretize_dtypes(dtype: type) -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [rng.integers(0, 50, size=(400, 3)), np.full((400, 1), 7)], axis=1
    ).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        x[:, :3] += rng.normal(size=(400, 3)).astype(dtype)
    np.testing.assert_array_equal(discretize(x), ref_discretize(x))
    np.testing.assert_array_equal(discretize(x, 32), ref_discretize(x, 32))


def test_discretize_rejects_what_histogram_rejects() -> None:
    tiny = np.array([[1.0, 0.0], [np.nextafter(1.0, 2.0), 1.0]])
    with pytest.raises(ValueError):
        np.histogram(tiny[:, 0], 20)
    with pytest.raises(ValueError, match="finite-sized bins"):
        discretize(tiny)
    denormal = np.array([[0.0], [5e-324]])
    with pytest.raises(ValueError):
        np.histogram(denormal[:, 0], 20)
    with pytest.raises(ValueError, match="finite-sized bins"):
        discretize(denormal)
    with pytest.raises(ValueError, match="NaN or infinite"):
        discretize(np.array([[0.0], [np.inf]]))
    with pytest.raises(ValueError, match="2-D"):
        discretize(np.zeros(5))


# --------------------------------------------------------------------- information
@pytest.mark.parametrize("dense", [True, False])
def test_rank_columns_equals_unique_inverse(dense: bool, monkeypatch) -> None:
    if not dense:
        monkeypatch.setattr(information, "_DENSE_CELL_LIMIT", 0)
    rng = np.random.default_rng(3)
    x = rng.integers(-1000, 1000, size=(300, 4)) * 7
    x[:, 1] = 5
    x[:, 3] = rng.integers(0, 2, size=300) * np.iinfo(np.int64).max  # huge span
    ranks, sizes = information._rank_columns(x)
    for j in range(x.shape[1]):
        values, inverse = np.unique(x[:, j], return_inverse=True)
        np.testing.assert_array_equal(ranks[:, j], inverse)
        assert sizes[j] == values.size
    # small and unsigned dtypes, spans that would wrap around in the native dtype
    for labels in (
        np.array([[-128, 0], [127, 1], [0, 0]], dtype=np.int8),
        np.array([[0, 1], [255, 1], [7, 1]], dtype=np.uint8),
        np.array([[2**64 - 1], [2**64 - 3], [2**64 - 1]], dtype=np.uint64),
        np.array([[2**62 + 5], [2**62], [2**62 + 5]], dtype=np.int64),
        np.array([[True], [False], [True]]),
    ):
        ranks, sizes = information._rank_columns(information._check_labels(labels, "x"))
        for j in range(labels.shape[1]):
            values, inverse = np.unique(labels[:, j], return_inverse=True)
            np.testing.assert_array_equal(ranks[:, j], inverse)
            assert sizes[j] == values.size


@pytest.mark.parametrize(
    ("n", "a_sizes", "b_sizes"),
    [
        (1, (3, 3), (2,)),
        (37, (20, 5, 2), (3, 4)),
        (500, (20,) * 6, (3, 6, 40, 1)),
        (2000, (2, 7, 20, 100), (5, 32, 2)),
    ],
)
@pytest.mark.parametrize("dense", [True, False])
def test_mutual_information_matrix_matches_sklearn(
    n: int, a_sizes: tuple[int, ...], b_sizes: tuple[int, ...], dense: bool, monkeypatch
) -> None:
    if not dense:
        monkeypatch.setattr(information, "_DENSE_CELL_LIMIT", 0)
    rng = np.random.default_rng(n)
    a = random_factors(rng, n, a_sizes)
    b = random_factors(rng, n, b_sizes) * 3 - 10  # non-contiguous, negative labels
    a[:, 0] = (b[:, 0] + rng.integers(0, 2, size=n)) % 5  # some real dependence
    got = mutual_information_matrix(a, b)
    assert got.shape == (len(a_sizes), len(b_sizes))
    np.testing.assert_allclose(got, ref_mi(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(entropy(b), ref_entropy(b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(entropy(a), ref_entropy(a), rtol=0, atol=1e-12)


def test_entropy_exact_values() -> None:
    b = np.stack([np.repeat(np.arange(4), 25), np.zeros(100, dtype=int)], axis=1)
    h = entropy(b)
    assert h[0] == pytest.approx(math.log(4), abs=1e-14)
    assert h[1] == 0.0
    np.testing.assert_allclose(mutual_information_matrix(b, b).diagonal(), h, atol=1e-14)


# --------------------------------------------------------------------- MIG
def test_codes_equal_factors_gap_matches_independent_value() -> None:
    rng = np.random.default_rng(4)
    n, sizes = 10_000, (3, 6, 10, 20)
    factors = random_factors(rng, n, sizes)
    latents = np.concatenate([factors.astype(float), rng.normal(size=(n, 3))], axis=1)
    res = mutual_info_gap(latents, factors, factor_names=["a", "b", "c", "d"])

    binned = ref_discretize(latents)
    for k, name in enumerate("abcd"):
        h = mutual_info_score(factors[:, k], factors[:, k])
        # <= 20 values: the discretized copy is a relabelling of the factor, MI = H.
        assert mutual_info_score(factors[:, k], binned[:, k]) == pytest.approx(h, abs=1e-12)
        others = [mutual_info_score(factors[:, k], binned[:, d]) for d in range(7) if d != k]
        expected = (h - max(others)) / h
        assert res.values[f"mig.gap.{name}"] == pytest.approx(expected, abs=1e-12)
    assert res.values["mig"] == pytest.approx(np.mean(ref_gaps(latents, factors)), abs=1e-12)
    assert res.values["mig"] > 0.9
    assert res.params["n"] == n and res.params["bins"] == 20
    assert res.params["excluded_factors"] == []
    mi = np.array(res.params["mi_matrix"])
    assert mi.shape == (7, 4)
    np.testing.assert_array_equal(mi.argmax(axis=0), np.arange(4))
    json.dumps(res.params)  # recorded beside the values: must be JSON-serialisable


def test_factor_in_two_identical_codes_has_zero_gap() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    factors = random_factors(rng, n, (5, 8))
    latents = np.stack(
        [factors[:, 0], factors[:, 0], factors[:, 1], rng.normal(size=n)], axis=1
    ).astype(float)
    res = mutual_info_gap(latents, factors, factor_names=["x", "y"])
    assert res.values["mig.gap.x"] == 0.0
    assert res.values["mig.gap.y"] > 0.9
    assert res.values["mig"] == pytest.approx(res.values["mig.gap.y"] / 2, abs=1e-15)


def test_pure_noise_gives_near_zero_mig() -> None:
    rng = np.random.default_rng(6)
    n = 10_000
    factors = random_factors(rng, n, (3, 5, 8, 16))
    latents = rng.normal(size=(n, 10))
    res = mutual_info_gap(latents, factors)
    assert 0.0 <= res.values["mig"] < 0.05
    assert res.values["mig"] == pytest.approx(np.mean(ref_gaps(latents, factors)), abs=1e-12)


def _entangled(rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    factors = random_factors(rng, n, (4, 10, 6))
    mix = rng.normal(size=(3, 6))
    latents = factors @ mix + rng.normal(size=(n, 6)) * 2
    return latents, factors


def test_invariant_to_permuting_latent_dimensions() -> None:
    rng = np.random.default_rng(7)
    latents, factors = _entangled(rng)
    perm = rng.permutation(latents.shape[1])
    base = mutual_info_gap(latents, factors)
    permuted = mutual_info_gap(latents[:, perm], factors)
    assert permuted.values == base.values  # identical floats, not just close
    np.testing.assert_array_equal(
        np.array(permuted.params["mi_matrix"]), np.array(base.params["mi_matrix"])[perm]
    )


def test_invariant_to_positive_affine_transform_of_each_code() -> None:
    rng = np.random.default_rng(8)
    latents, factors = _entangled(rng)
    scale = rng.uniform(0.01, 100.0, size=latents.shape[1])
    shift = rng.normal(size=latents.shape[1]) * 50
    moved = latents * scale + shift
    np.testing.assert_array_equal(discretize(moved), discretize(latents))
    assert mutual_info_gap(moved, factors).values == mutual_info_gap(latents, factors).values


def test_factor_with_more_values_than_bins_cannot_reach_one() -> None:
    rng = np.random.default_rng(9)
    n = 3200
    big = rng.permutation(np.repeat(np.arange(32), n // 32))  # exactly uniform, H = log 32
    small = rng.integers(0, 4, size=n)
    factors = np.stack([big, small], axis=1)
    latents = np.concatenate([factors.astype(float), rng.normal(size=(n, 1))], axis=1)
    res = mutual_info_gap(latents, factors, factor_names=["big", "small"])

    gap = res.values["mig.gap.big"]
    expected = ref_gaps(latents, factors)[0]
    assert gap == pytest.approx(expected, abs=1e-12)
    # 20 bins carry at most log 20 nats about a factor of entropy log 32.
    assert gap < math.log(20) / math.log(32) + 1e-12 < 1.0
    assert res.values["mig.gap.small"] > 0.95


def test_float_factors_with_whole_values_accepted() -> None:
    rng = np.random.default_rng(10)
    latents, factors = _entangled(rng, 500)
    as_int = mutual_info_gap(latents, factors)
    as_float = mutual_info_gap(latents, factors.astype(np.float32))
    assert as_int.values == as_float.values


def test_constant_factor_excluded_and_listed() -> None:
    rng = np.random.default_rng(11)
    n = 1000
    factors = np.stack([rng.integers(0, 5, size=n), np.full(n, 3), rng.integers(0, 7, size=n)], 1)
    latents = np.concatenate([factors.astype(float), rng.normal(size=(n, 2))], axis=1)
    res = mutual_info_gap(latents, factors, factor_names=["a", "const", "c"])
    assert res.params["excluded_factors"] == ["const"]
    assert "mig.gap.const" not in res.values
    assert res.values["mig"] == pytest.approx(
        (res.values["mig.gap.a"] + res.values["mig.gap.c"]) / 2, abs=1e-15
    )
    with pytest.raises(ValueError, match="every factor is constant"):
        mutual_info_gap(latents, factors[:, [1]])


@pytest.mark.parametrize(
    ("latents", "factors", "match"),
    [
        (np.zeros((10, 3)), np.zeros((9, 2), dtype=int), "same samples"),
        (np.full((10, 3), np.nan), np.zeros((10, 2), dtype=int), "NaN/inf"),
        (np.r_[np.zeros((9, 3)), [[0, np.inf, 0]]], np.zeros((10, 2), dtype=int), "NaN/inf"),
        (np.zeros((10, 1)), np.zeros((10, 2), dtype=int), "at least 2 latent codes"),
        (np.zeros(10), np.zeros((10, 2), dtype=int), "latents must be a 2-D"),
        (np.zeros((10, 3)), np.zeros(10, dtype=int), "factors must be a 2-D"),
        (np.zeros((10, 3)), np.full((10, 2), 0.5), "integer"),
        (np.zeros((10, 3)), np.full((10, 2), "a"), "integer"),
    ],
)
def test_validation_errors(latents: np.ndarray, factors: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        mutual_info_gap(latents, factors)
    assert "\n" not in str(info.value)


def test_bad_names_and_bins() -> None:
    latents, factors = np.random.default_rng(12).normal(size=(20, 3)), np.arange(40).reshape(20, 2)
    with pytest.raises(ValueError, match="factor names"):
        mutual_info_gap(latents, factors, factor_names=["only_one"])
    with pytest.raises(ValueError, match="distinct"):
        mutual_info_gap(latents, factors, factor_names=["a", "a"])
    with pytest.raises(ValueError, match="bins"):
        mutual_info_gap(latents, factors, bins=1)


def test_compute_plugin_entry_point() -> None:
    rng = np.random.default_rng(13)
    latents, factors = _entangled(rng, 800)
    n = latents.shape[0]
    ctx = EvaluationContext(
        means=latents,
        logvars=np.zeros_like(latents),
        recon_errors=np.zeros(n),
        factors=factors,
        factor_names=("shape", "posX", "scale"),
        factor_sizes=(4, 10, 6),
        options={"mig": {"bins": 10}},
    )
    res = compute(ctx)
    direct = mutual_info_gap(latents, factors, bins=10, factor_names=["shape", "posX", "scale"])
    assert res.values == direct.values
    assert res.params["bins"] == 10 and res.params["n"] == n
    assert set(res.values) == {"mig", "mig.gap.shape", "mig.gap.posX", "mig.gap.scale"}

    ctx.options = {}
    assert compute(ctx).params["bins"] == 20
    ctx.options = {"mig": {"bins": "12"}}
    assert compute(ctx).params["bins"] == 12
    ctx.options = {"mig": {"nbins": 12}}
    with pytest.raises(ValueError, match="unknown option"):
        compute(ctx)
    ctx.options = {}
    ctx.factors = None
    with pytest.raises(ValueError, match="factors"):
        compute(ctx)
