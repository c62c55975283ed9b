"""SAP, DCI, modularity / explicitness, IRS, and the Higgins and FactorVAE metrics.

Expected answers are derived in the tests from the definitions: codes equal to the
factors, a factor copied into two codes, pure noise, permuted codes, hand-made
importance / MI matrices, and a tiny synthetic "dataset" whose images carry the
factor values in pixels (so that an encoder reading them back is perfectly
disentangled). A few seeded values are pinned to catch a change of definition;
they hold for the scikit-learn recorded in ``params["sklearn_version"]`` and may
need re-pinning (after checking why) when scikit-learn changes its solvers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from vaebench.plugins.metrics import beta_vae_metric as bvm
from vaebench.plugins.metrics import dci as dci_mod
from vaebench.plugins.metrics import factor_vae_metric as fvm
from vaebench.plugins.metrics import irs as irs_mod
from vaebench.plugins.metrics import modularity as mod
from vaebench.plugins.metrics import sap as sap_mod
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.dci import dci, dci_from_importance
from vaebench.plugins.metrics.irs import irs
from vaebench.plugins.datasets.base import FactorGridDataset
from vaebench.plugins.metrics.modularity import explicitness, modularity, modularity_from_mi
from vaebench.plugins.metrics.sampler import CodeTable
from vaebench.plugins.metrics.sap import sap_score


def random_factors(rng: np.random.Generator, n: int, sizes: tuple[int, ...]) -> np.ndarray:
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)


def context(latents: np.ndarray, factors: np.ndarray | None, **kw) -> EvaluationContext:
    n = latents.shape[0]
    return EvaluationContext(
        means=latents, logvars=np.zeros_like(latents), recon_errors=np.zeros(n),
        factors=factors, **kw,
    )


SIZES = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def identity_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    factors = random_factors(rng, 1500, SIZES)
    return factors.astype(float), factors


@pytest.fixture(scope="module")
def noise_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    factors = random_factors(rng, 1500, SIZES)
    return rng.normal(size=(1500, 6)), factors


def entangled(n: int = 900, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = random_factors(rng, n, (3, 4, 5))
    mix = np.array([[1.0, 0.3, 0.0, 0.2], [0.0, 1.0, 0.5, 0.0], [0.4, 0.0, 1.0, 0.1]])
    return factors @ mix + 0.5 * rng.normal(size=(n, 4)), factors


# ============================================================ codes equal to the factors
def test_sap_codes_equal_factors(identity_case) -> None:
    latents, factors = identity_case
    res = sap_score(latents, factors, n_jobs=1)
    s = np.array(res.params["score_matrix"])
    assert s.shape == (4, 4)
    np.testing.assert_array_equal(s.argmax(axis=0), np.arange(4))  # own code wins
    # Two or three ordered values on one axis: one-vs-rest lines separate them exactly.
    assert s[0, 0] == 1.0 and s[1, 1] == 1.0
    assert res.values["sap.gap.factor0"] == pytest.approx(1.0 - s[1:, 0].max(), abs=1e-6)
    assert res.values["sap"] > 0.4
    # squared correlation 1 with the own code, ~0 (independent factors) with the others
    assert res.values["sap.continuous"] > 0.99
    assert res.params["n_train"] == 1000 and res.params["n_test"] == 500
    assert res.params["C"] == 0.01 and res.params["class_weight"] == "balanced"
    assert res.params["excluded_factors"] == []
    json.dumps(res.params)


def test_dci_codes_equal_factors(identity_case) -> None:
    latents, factors = identity_case
    res = dci(latents, factors, n_jobs=1)
    assert res.values["dci"] > 0.9
    assert res.values["dci.completeness"] > 0.9
    assert res.values["dci.informativeness_test"] == 1.0
    assert res.values["dci.informativeness_train"] == 1.0
    imp = np.array(res.params["importance_matrix"])
    np.testing.assert_array_equal(imp.argmax(axis=0), np.arange(4))
    np.testing.assert_allclose(imp.sum(axis=0), 1.0, atol=1e-5)  # GBT importances sum to 1
    assert res.params["classifier_params"]["n_estimators"] == 100
    assert res.params["classifier_params"]["random_state"] == 0
    json.dumps(res.params)


def test_modularity_explicitness_irs_codes_equal_factors(identity_case) -> None:
    latents, factors = identity_case
    m = modularity(latents, factors)
    # each code's MI with the other (independent) factors is plug-in bias only
    assert m.values["modularity"] == pytest.approx(1.0, abs=1e-3)
    mi = np.array(m.params["mi_matrix"])
    np.testing.assert_allclose(mi.diagonal(), [math.log(s) for s in SIZES], atol=0.02)
    e = explicitness(latents, factors, n_jobs=1)
    assert e.values["explicitness"] > 0.98 and e.values["explicitness.train"] > 0.98
    r = irs(latents, factors)
    # Holding a factor fixed holds its own code exactly: IRS 1 for every code.
    assert r.values["irs"] == 1.0
    assert r.values["irs.num_active_dims"] == 4.0
    assert r.params["parents"] == ["factor0", "factor1", "factor2", "factor3"]


# ============================================================ a factor in two codes
def test_factor_in_two_codes() -> None:
    rng = np.random.default_rng(3)
    n = 1200
    factors = random_factors(rng, n, (4, 3, 5))
    f = factors.astype(float)
    # SAP: two identical copies of factor a -> identical scores -> gap exactly 0
    copies = np.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 2]], axis=1)
    res = sap_score(copies, factors, factor_names=["a", "b", "c"], n_jobs=1)
    assert res.values["sap.gap.a"] == 0.0
    assert res.values["sap.continuous.gap.a"] == pytest.approx(0.0, abs=1e-12)
    assert res.values["sap.continuous.gap.b"] > 0.95
    # DCI: two noisy copies share factor a's importance -> its completeness drops
    noisy = np.stack(
        [f[:, 0] + 0.1 * rng.normal(size=n), f[:, 0] + 0.1 * rng.normal(size=n), f[:, 1], f[:, 2]],
        axis=1,
    )
    d = dci(noisy, factors, factor_names=["a", "b", "c"], n_jobs=1)
    comp = d.params["completeness_per_factor"]
    imp = np.array(d.params["importance_matrix"])
    assert imp[0, 0] > 0.2 and imp[1, 0] > 0.2  # both copies used
    assert comp[0] < 0.7 < 0.9 < min(comp[1], comp[2])
    # disentanglement stays high: each copy is still about one factor only
    assert d.values["dci"] > 0.9


# ============================================================ pure noise
def test_pure_noise_near_chance(noise_case) -> None:
    latents, factors = noise_case
    s = sap_score(latents, factors, n_jobs=1)
    assert 0.0 <= s.values["sap"] < 0.05
    assert 0.0 <= s.values["sap.continuous"] < 0.01
    d = dci(latents, factors, n_jobs=1)
    chance = float(np.mean([1.0 / k for k in SIZES]))
    assert d.values["dci.informativeness_test"] == pytest.approx(chance, abs=0.05)
    assert d.values["dci"] < 0.05 and d.values["dci.completeness"] < 0.05
    e = explicitness(latents, factors, n_jobs=1)
    assert e.values["explicitness"] == pytest.approx(0.5, abs=0.03)
    assert irs(latents, factors).values["irs"] < 0.35


# ============================================================ permuting latent dimensions
def test_invariant_to_permuting_latent_dimensions() -> None:
    latents, factors = entangled()
    perm = np.array([2, 0, 3, 1])
    moved = latents[:, perm]

    a, b = sap_score(latents, factors, n_jobs=1), sap_score(moved, factors, n_jobs=1)
    for key in a.values:  # discrete: the same fits, bit for bit; continuous: BLAS rounding
        assert b.values[key] == pytest.approx(a.values[key], abs=0 if "continuous" not in key else 1e-12)
    np.testing.assert_array_equal(
        np.array(b.params["score_matrix"]), np.array(a.params["score_matrix"])[perm]
    )
    # The trees' splitter visits features in a seeded random order and keeps the first of
    # equally good splits, so permuted columns can break (rare, deep-node) ties differently.
    a, b = dci(latents, factors, n_jobs=1, fast=True), dci(moved, factors, n_jobs=1, fast=True)
    for key in a.values:
        assert b.values[key] == pytest.approx(a.values[key], abs=0.01)
    np.testing.assert_allclose(
        np.array(b.params["importance_matrix"]), np.array(a.params["importance_matrix"])[perm],
        atol=0.02,
    )
    assert modularity(moved, factors).values == pytest.approx(modularity(latents, factors).values)
    assert irs(moved, factors).values["irs"] == pytest.approx(
        irs(latents, factors).values["irs"], abs=1e-12
    )
    # liblinear's coordinate descent visits the features in a different order: same optimum
    # to its tolerance, so AUCs agree closely but not bit for bit.
    ea, eb = explicitness(latents, factors, n_jobs=1), explicitness(moved, factors, n_jobs=1)
    assert eb.values["explicitness"] == pytest.approx(ea.values["explicitness"], abs=2e-3)


# ============================================================ against disentanglement_lib, verbatim
# Slow, obvious transcriptions of disentanglement_lib's loops ((D, N) / (K, N) layout there).
def ref_sap_matrix(mus, ys, mus_test, ys_test, continuous):
    from sklearn.svm import LinearSVC

    score = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            if continuous:
                cov = np.cov(mus[i, :], ys[j, :], ddof=1)
                score[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                clf = LinearSVC(C=0.01, class_weight="balanced", dual=False)
                clf.fit(mus[i, :, None], ys[j, :])
                score[i, j] = np.mean(clf.predict(mus_test[i, :, None]) == ys_test[j, :])
    return score


def ref_irs(gen_factors, latents, diff_quantile=0.99):
    max_deviations = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)
    cum = np.zeros([latents.shape[1], gen_factors.shape[1]])
    for i in range(gen_factors.shape[1]):
        unique = np.unique(gen_factors[:, i], axis=0)
        for value in unique:
            match = gen_factors[:, i] == value
            diffs = np.abs(latents[match, :] - np.mean(latents[match, :], axis=0))
            cum[:, i] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum[:, i] /= unique.shape[0]
    irs_matrix = 1.0 - cum / max_deviations[:, None]
    return np.average(irs_matrix.max(axis=1), weights=max_deviations)


def ref_auc(x_train, y_train, x_test, y_test):
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import MultiLabelBinarizer

    clf = mod.logistic_ovr(0).fit(x_train, y_train)
    mlb = MultiLabelBinarizer()
    return (
        roc_auc_score(mlb.fit_transform(y_train[:, None]), clf.predict_proba(x_train)),
        roc_auc_score(mlb.fit_transform(y_test[:, None]), clf.predict_proba(x_test)),
    )


def test_agrees_with_disentanglement_lib_loops() -> None:
    latents, factors = entangled(600)
    tr, te = slice(0, 400), slice(400, None)
    s = sap_score(latents, factors, n_jobs=1)
    for continuous, key in [(False, "score_matrix"), (True, "score_matrix_continuous")]:
        want = ref_sap_matrix(latents[tr].T, factors[tr].T, latents[te].T, factors[te].T, continuous)
        np.testing.assert_allclose(np.array(s.params[key]), want, atol=1e-6)
    from vaebench.plugins.metrics.information import discretize

    assert irs(latents, factors).values["irs"] == pytest.approx(
        ref_irs(discretize(factors, 20), latents), abs=1e-12
    )
    e = explicitness(latents, factors, n_jobs=1)
    x = (latents - latents[tr].mean(axis=0)) / latents[tr].std(axis=0)
    want = np.array([ref_auc(x[tr], factors[tr, k], x[te], factors[te, k]) for k in range(3)])
    assert e.values["explicitness.train"] == pytest.approx(want[:, 0].mean(), abs=1e-12)
    assert e.values["explicitness"] == pytest.approx(want[:, 1].mean(), abs=1e-12)


# ============================================================ DCI and modularity math
def ref_dci(r: np.ndarray) -> tuple[float, float]:
    """disentanglement_lib's disentanglement / completeness, verbatim (scipy entropy)."""
    per_code = 1.0 - scipy_entropy(r.T + 1e-11, base=r.shape[1])
    per_factor = 1.0 - scipy_entropy(r + 1e-11, base=r.shape[0])
    w = r if r.sum() > 0 else np.ones_like(r)
    return (
        float(np.sum(per_code * w.sum(axis=1) / w.sum())),
        float(np.sum(per_factor * w.sum(axis=0) / w.sum())),
    )


def test_dci_entropy_math_on_hand_made_matrices() -> None:
    ident = dci_from_importance(np.eye(4))
    assert ident.disentanglement == pytest.approx(1.0, abs=1e-8)
    assert ident.completeness == pytest.approx(1.0, abs=1e-8)
    uniform = dci_from_importance(np.ones((4, 3)))
    assert uniform.disentanglement == pytest.approx(0.0, abs=1e-12)
    assert uniform.completeness == pytest.approx(0.0, abs=1e-12)
    # all-zero importances: uniform after smoothing, uniform weights -> 0
    assert dci_from_importance(np.zeros((3, 2))).disentanglement == pytest.approx(0.0, abs=1e-12)

    # By hand: code 0 only about factor 0, code 1 split evenly.
    r = np.array([[1.0, 0.0], [0.5, 0.5]])
    got = dci_from_importance(r)
    assert got.per_code == pytest.approx([1.0, 0.0], abs=1e-9)
    assert got.disentanglement == pytest.approx(0.5, abs=1e-9)  # weights 1/2, 1/2
    h0 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # factor 0: (2/3, 1/3)
    assert got.per_factor == pytest.approx([1 - h0, 1.0], abs=1e-9)
    assert got.completeness == pytest.approx(0.75 * (1 - h0) + 0.25 * 1.0, abs=1e-9)

    rng = np.random.default_rng(4)
    for shape in [(5, 3), (10, 5), (2, 7)]:
        r = rng.exponential(size=shape) * (rng.random(shape) < 0.6)
        got = dci_from_importance(r)
        want = ref_dci(r)
        assert (got.disentanglement, got.completeness) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="K >= 2"):
        dci_from_importance(np.ones((3, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        dci_from_importance(-np.eye(2))


def test_modularity_math_on_hand_made_matrices() -> None:
    score, per_code = modularity_from_mi(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert per_code.tolist() == [1.0, 0.0, 0.0]  # pure; no information -> 0; uniform -> 0
    assert score == pytest.approx(1 / 3)
    # one code, MI (2, 1): delta = 1 / (4 * 1) -> 0.75
    assert modularity_from_mi(np.array([[2.0, 1.0]]))[0] == pytest.approx(0.75)


# ============================================================ constant factors and validation
def test_constant_factor_is_excluded_and_listed() -> None:
    rng = np.random.default_rng(5)
    n = 900
    factors = np.stack([rng.integers(0, 3, n), np.full(n, 2), rng.integers(0, 4, n)], axis=1)
    latents = np.concatenate([factors.astype(float), rng.normal(size=(n, 1))], axis=1)
    names = ["a", "const", "c"]
    s = sap_score(latents, factors, factor_names=names, n_jobs=1)
    assert s.params["excluded_factors"] == ["const"] and "sap.gap.const" not in s.values
    assert s.values["sap"] == pytest.approx((s.values["sap.gap.a"] + s.values["sap.gap.c"]) / 2)
    d = dci(latents, factors, factor_names=names, n_jobs=1, fast=True)
    assert d.params["excluded_factors"] == ["const"]
    assert np.array(d.params["importance_matrix"]).shape == (4, 2)
    m = modularity(latents, factors, factor_names=names)
    assert m.params["excluded_factors"] == ["const"]
    assert m.values == modularity(latents, factors[:, [0, 2]]).values
    assert irs(latents, factors, factor_names=names).values == irs(latents, factors[:, [0, 2]]).values
    e = explicitness(latents, factors, factor_names=names, n_jobs=1)
    assert e.params["excluded_factors"] == ["const"]
    with pytest.raises(ValueError, match="at least 2 factors"):
        dci(latents, factors[:, :2], n_jobs=1)
    with pytest.raises(ValueError, match="at least 2 factors"):
        modularity(latents, factors[:, :2])
    with pytest.raises(ValueError, match="every factor is constant"):
        sap_score(latents, factors[:, [1]], n_jobs=1)


def test_irs_constant_code_dropped_and_counted() -> None:
    latents, factors = entangled(600)
    with_const = np.concatenate([latents, np.full((600, 1), 0.1)], axis=1)
    r = irs(with_const, factors)
    assert r.values["irs.num_active_dims"] == 4.0
    assert r.values["irs"] == irs(latents, factors).values["irs"]
    zero = irs(np.full((600, 3), 0.3), factors)
    assert zero.values == {"irs": 0.0, "irs.num_active_dims": 0.0}


VALIDATION_CASES = [
    (np.zeros((10, 3)), np.zeros((9, 2), dtype=int), "same samples"),
    (np.full((10, 3), np.nan), np.zeros((10, 2), dtype=int), "NaN/inf"),
    (np.r_[np.ones((9, 3)), [[0, np.inf, 0]]], np.zeros((10, 2), dtype=int), "NaN/inf"),
    (np.zeros(10), np.zeros((10, 2), dtype=int), "2-D"),
    (np.zeros((10, 3)), np.full((10, 2), 0.5), "integer"),
]
LATENT_METRICS = {
    "sap": lambda z, v: sap_score(z, v, n_jobs=1),
    "dci": lambda z, v: dci(z, v, n_jobs=1),
    "dci_fast": lambda z, v: dci(z, v, n_jobs=1, fast=True),
    "modularity": modularity,
    "explicitness": lambda z, v: explicitness(z, v, n_jobs=1),
    "irs": irs,
}


@pytest.mark.parametrize("name", sorted(LATENT_METRICS))
@pytest.mark.parametrize(("latents", "factors", "match"), VALIDATION_CASES)
def test_validation_errors(name: str, latents, factors, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        LATENT_METRICS[name](latents, factors)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{name}:")


def test_gap_and_entropy_metrics_need_two_codes() -> None:
    factors = random_factors(np.random.default_rng(6), 60, (3, 4))
    one = factors[:, :1].astype(float)
    for fn, match in [(sap_score, "at least 2 latent codes"), (dci, "at least 2 latent codes")]:
        with pytest.raises(ValueError, match=match):
            fn(one, factors, n_jobs=1)
    with pytest.raises(ValueError, match="train_fraction"):
        sap_score(np.zeros((3, 2)), factors[:3], train_fraction=0.99, n_jobs=1)


# ============================================================ plugin entry points
def test_latent_entry_points_options_and_params() -> None:
    latents, factors = entangled(900)
    names = ("shape", "posX", "scale")
    ctx = context(latents, factors, factor_names=names, factor_sizes=(3, 4, 5), seed=7)
    ctx.options = {
        "sap": {"train_fraction": "0.5", "n_jobs": 1},
        "dci_fast": {"n_jobs": "1", "max_samples": 600, "n_estimators": 10},
        "modularity": {"bins": "10", "profile": "fast"},
        "explicitness": {"n_jobs": 1, "profile": "reference"},
        "irs": {"diff_quantile": 0.9},
    }
    s = sap_mod.compute(ctx)
    assert s.params["n_train"] == 450 and s.params["seed"] == 7
    assert set(s.values) >= {"sap", "sap.continuous", "sap.gap.posX", "sap.continuous.gap.scale"}
    d = dci_mod.compute_fast(ctx)
    assert d.params["n"] == 600 and d.params["random_state"] == 7
    assert d.params["classifier_params"]["n_estimators"] == 10 and d.params["max_train"] == 2000
    assert set(d.values) == {
        "dci_fast", "dci_fast.completeness",
        "dci_fast.informativeness_train", "dci_fast.informativeness_test",
    }
    m = mod.compute_modularity(ctx)
    assert m.params["bins"] == 10 and m.params["profile"] == "fast" and m.params["n"] == 900
    e = mod.compute_explicitness(ctx)
    assert set(e.values) == {"explicitness", "explicitness.train"}
    r = irs_mod.compute(ctx)
    assert r.params["diff_quantile"] == 0.9 and r.params["factor_bins"] == 20
    for res in (s, d, m, e, r):
        assert res.params["sklearn_version"]
        json.dumps(res.params)

    ctx.options = {"sap": {"C": 1.0}}
    with pytest.raises(ValueError, match="unknown option"):
        sap_mod.compute(ctx)
    ctx.options = {"dci": {"profile": "quick"}}
    with pytest.raises(ValueError, match="profile"):
        dci_mod.compute(ctx)
    ctx.options = {"irs": {"diff_quantile": 1.5}}
    with pytest.raises(ValueError, match="diff_quantile"):
        irs_mod.compute(ctx)
    ctx.options = {}
    ctx.factors = None
    for fn in (sap_mod.compute, dci_mod.compute, mod.compute_modularity, irs_mod.compute):
        with pytest.raises(ValueError, match="factors"):
            fn(ctx)
    ctx.factors = factors[:-1]
    with pytest.raises(ValueError, match="same samples"):
        mod.compute_explicitness(ctx)


def test_parallel_fits_give_identical_results() -> None:
    latents, factors = entangled(600)
    one = dci(latents, factors, n_jobs=1, fast=True, n_estimators=5)
    two = dci(latents, factors, n_jobs=2, fast=True, n_estimators=5)
    assert one.values == two.values
    assert one.params["importance_matrix"] == two.params["importance_matrix"]


# ============================================================ pinned seeded values
def test_pinned_latent_values() -> None:
    """Seeded values on fixed data; a change here means a change of definition or solver."""
    latents, factors = entangled(900)
    got = {
        **sap_score(latents, factors, n_jobs=1).values,
        **dci(latents, factors, n_jobs=1, random_state=3).values,
        **dci(latents, factors, n_jobs=1, random_state=3, fast=True).values,
        **modularity(latents, factors).values,
        **explicitness(latents, factors, n_jobs=1).values,
        **irs(latents, factors).values,
    }
    pinned = PINNED_LATENT
    assert set(pinned) <= set(got)
    for key, value in pinned.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


PINNED_LATENT: dict[str, float] = {
    "sap": 0.18333333333333335,
    "sap.continuous": 0.5650339489504631,
    "dci": 0.2941198961731346,
    "dci.completeness": 0.32776705870634026,
    "dci.informativeness_test": 0.6888888888888888,
    "dci_fast": 0.41211433787935375,
    "dci_fast.completeness": 0.460001976720491,
    "modularity": 0.8711963453793565,
    "explicitness": 0.910292559059164,
    "explicitness.train": 0.9189273418272338,
    "irs": 0.5049824903292426,
}


# ============================================================ sampler-based metrics
class TinyDataset:
    """Factor grid ``factor_sizes``; an 8x8 image holds factor k's value in pixel (0, k)."""

    def __init__(self, factor_sizes: tuple[int, ...] = (3, 4, 5)) -> None:
        self.factor_sizes = tuple(factor_sizes)
        self.factor_names = tuple(f"f{k}" for k in range(len(factor_sizes)))
        self.scale = np.maximum(np.array(factor_sizes) - 1, 1)
        self.rendered = 0

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1)

    def observations(self, factors: np.ndarray) -> np.ndarray:
        images = np.zeros((factors.shape[0], 8, 8, 1), dtype=np.float32)
        images[:, 0, : factors.shape[1], 0] = factors / self.scale
        self.rendered += factors.shape[0]
        return images

    def read_factors(self, images: np.ndarray) -> np.ndarray:
        return np.round(images[:, 0, : len(self.factor_sizes), 0] * self.scale)


def standardised(ds: TinyDataset, images: np.ndarray) -> np.ndarray:
    sizes = np.array(ds.factor_sizes, dtype=float)
    mean, std = (sizes - 1) / 2, np.sqrt((sizes**2 - 1) / 12)
    return (ds.read_factors(images) - mean) / np.where(std > 0, std, 1.0)


#: A 4x4 rotation in which every code weighs every (standardised) factor equally:
#: fixing any one factor lowers every code's variance by the same amount and leaves
#: the distribution of every |z1 - z2| alike, so neither metric can tell factors apart.
HADAMARD = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0

FAST = {"num_train": 400, "num_eval": 200}


def test_perfect_encoder_scores_one_on_both() -> None:
    ds = TinyDataset((3, 4, 5))
    rng = np.random.default_rng(8)

    def encode(images: np.ndarray) -> np.ndarray:
        z = ds.read_factors(images)
        n = z.shape[0]
        # + a unit-noise code (kept) and a collapsed code (std 0.01 < 0.05: pruned)
        return np.concatenate([z, rng.normal(size=(n, 1)), 0.01 * rng.normal(size=(n, 1))], 1)

    h = bvm.beta_vae_metric(ds, encode, **FAST, seed=1)
    assert h.values == {"beta_vae_metric": 1.0, "beta_vae_metric.train": 1.0}
    f = fvm.factor_vae_metric(ds, encode, **FAST, num_variance_estimate=1000, seed=1)
    assert f.values["factor_vae_metric"] == 1.0 and f.values["factor_vae_metric.train"] == 1.0
    assert f.values["factor_vae_metric.num_active_dims"] == 4.0
    assert f.params["active_dims"] == [0, 1, 2, 3]
    assert f.params["classifier"][:3] == [0, 1, 2]
    votes = np.array(f.params["train_votes"])
    assert votes.sum() == 400 and np.count_nonzero(votes) == 3  # only (k, code k) votes
    # prune_threshold=0 keeps the collapsed code too (it still never wins a vote)
    f0 = fvm.factor_vae_metric(ds, encode, **FAST, num_variance_estimate=1000, prune_threshold=0)
    assert f0.values["factor_vae_metric.num_active_dims"] == 5.0
    assert f0.values["factor_vae_metric"] == 1.0
    json.dumps(h.params)
    json.dumps(f.params)


def test_mixing_encoder_scores_near_chance() -> None:
    ds = TinyDataset((3, 4, 5, 6))

    def mixed(images: np.ndarray) -> np.ndarray:
        return standardised(ds, images) @ HADAMARD.T

    h = bvm.beta_vae_metric(ds, mixed, **FAST, seed=2)
    f = fvm.factor_vae_metric(ds, mixed, **FAST, num_variance_estimate=1000, seed=2)
    assert h.values["beta_vae_metric"] < 0.45  # chance: 1/4
    assert f.values["factor_vae_metric"] < 0.45


def test_single_valued_factor_is_never_fixed() -> None:
    ds = TinyDataset((3, 1, 4))
    h = bvm.beta_vae_metric(ds, ds.read_factors, **FAST, seed=3)
    assert h.params["fixable_factors"] == [0, 2]
    assert h.values["beta_vae_metric"] == 1.0
    f = fvm.factor_vae_metric(ds, ds.read_factors, **FAST, num_variance_estimate=500, seed=3)
    assert f.values["factor_vae_metric"] == 1.0
    assert f.values["factor_vae_metric.num_active_dims"] == 2.0  # the constant code is pruned
    assert np.array(f.params["train_votes"])[1].sum() == 0
    with pytest.raises(ValueError, match="at least 2 factors"):
        bvm.beta_vae_metric(TinyDataset((1, 4)), lambda x: np.zeros((len(x), 2)), **FAST)


def test_collapsed_encoder_and_bad_encoders() -> None:
    ds = TinyDataset((3, 4))
    flat = fvm.factor_vae_metric(
        ds, lambda x: np.zeros((len(x), 3)), **FAST, num_variance_estimate=200
    )
    assert flat.values == {
        "factor_vae_metric": 0.0, "factor_vae_metric.train": 0.0,
        "factor_vae_metric.num_active_dims": 0.0,
    }
    with pytest.raises(ValueError, match="NaN/inf"):
        bvm.beta_vae_metric(ds, lambda x: np.full((len(x), 2), np.nan), **FAST)
    with pytest.raises(ValueError, match="encode returned shape"):
        fvm.factor_vae_metric(ds, lambda x: np.zeros((len(x) + 1, 2)), **FAST)


def test_sampler_chunking_does_not_change_values() -> None:
    ds = TinyDataset((3, 4, 5))
    weights = np.arange(1.0, 10.0).reshape(3, 3)

    def noisy(images: np.ndarray) -> np.ndarray:
        # a fixed, content-dependent perturbation: the same image always gets the same code
        z = standardised(ds, images)
        return z + 0.7 * np.sin(12.9898 * z @ weights)

    a = bvm.beta_vae_metric(ds, noisy, **FAST, seed=4, encode_batch=100_000)
    b = bvm.beta_vae_metric(ds, noisy, **FAST, seed=4, encode_batch=300)
    assert a.values == b.values
    c = fvm.factor_vae_metric(ds, noisy, **FAST, num_variance_estimate=500, seed=4, encode_batch=7)
    d = fvm.factor_vae_metric(ds, noisy, **FAST, num_variance_estimate=500, seed=4)
    assert c.values == d.values


class TinyGrid(TinyDataset, FactorGridDataset):
    """TinyDataset declared a factor grid (one image per factor row): encoded once per image."""


def row_exact(ds: TinyDataset):
    """A content-dependent encoder computed elementwise, so a row's code never depends on its batch."""

    def encode(images: np.ndarray) -> np.ndarray:
        z = standardised(ds, images)
        return z + 0.7 * np.sin(12.9898 * z * z[:, ::-1] + z)

    return encode


def test_code_table_encodes_each_grid_image_once_with_equal_values() -> None:
    sizes = (3, 4, 5)  # 60 grid images
    plain, grid = TinyDataset(sizes), TinyGrid(sizes)
    a = bvm.beta_vae_metric(plain, row_exact(plain), **FAST, seed=4, encode_batch=1000)
    b = bvm.beta_vae_metric(grid, row_exact(grid), **FAST, seed=4, encode_batch=1000)
    assert a.values == b.values
    drawn = (400 + 200) * 64 * 2
    assert (a.params["code_cache"], a.params["images_requested"], a.params["images_encoded"]) == (
        "off", drawn, drawn,
    )
    assert (b.params["code_cache"], b.params["images_requested"], b.params["images_encoded"]) == (
        "grid", drawn, 60,
    )
    assert plain.rendered == drawn and grid.rendered == 60

    # One table shared by both metrics: the second encodes nothing new, values unchanged.
    fast_fvm = dict(FAST, num_variance_estimate=500, seed=4)
    table = CodeTable(grid, row_exact(grid), sizes)
    bvm.beta_vae_metric(grid, row_exact(grid), **FAST, seed=4, table=table)
    f = fvm.factor_vae_metric(grid, row_exact(grid), **fast_fvm, table=table)
    assert f.params["images_encoded"] == 0
    assert f.params["images_requested"] == 500 + (400 + 200) * 64
    assert f.values == fvm.factor_vae_metric(plain, row_exact(plain), **fast_fvm).values

    # A table over its byte budget (60 cells x 3 codes x 8 B > 1000 B) stops caching
    # after answering its first call from that call's unique images.
    small = CodeTable(grid, row_exact(grid), sizes, max_bytes=1000)
    c = bvm.beta_vae_metric(grid, row_exact(grid), **FAST, seed=4, encode_batch=1000, table=small)
    assert c.values == a.values and c.params["code_cache"] == "off"
    assert 60 < c.params["images_encoded"] < drawn

    with pytest.raises(ValueError, match="NaN/inf"):
        bvm.beta_vae_metric(grid, lambda x: np.full((len(x), 2), np.nan), **FAST)


def test_sampler_metrics_of_one_context_share_a_code_table() -> None:
    grid = TinyGrid((3, 4, 5))
    ctx = context(np.zeros((5, 3)), None, dataset=grid, encode=row_exact(grid), seed=2,
                  factor_names=grid.factor_names, factor_sizes=grid.factor_sizes)
    ctx.options = {"beta_vae_metric": FAST, "factor_vae_metric": FAST}
    h = bvm.compute(ctx)
    f = fvm.compute(ctx)
    assert h.params["images_encoded"] == 60 and f.params["images_encoded"] == 0
    # a new context (another model) starts a new table
    ctx2 = context(np.zeros((5, 3)), None, dataset=grid, encode=row_exact(grid), seed=2,
                   factor_names=grid.factor_names, factor_sizes=grid.factor_sizes)
    ctx2.options = ctx.options
    assert fvm.compute(ctx2).params["images_encoded"] == 60


def test_sampler_entry_points_profiles_and_pinned_values() -> None:
    ds = TinyDataset((3, 4, 5, 6))
    # part axis-aligned, mostly the all-mixing rotation, plus a fixed perturbation
    blend = 0.3 * np.eye(4) + 0.7 * HADAMARD
    weights = np.arange(1.0, 17.0).reshape(4, 4)

    def encode(images: np.ndarray) -> np.ndarray:
        z = standardised(ds, images) @ blend.T
        return z + 0.3 * np.sin(12.9898 * z @ weights)

    ctx = context(np.zeros((5, 3)), None, dataset=ds, encode=encode, seed=11,
                  factor_names=ds.factor_names, factor_sizes=ds.factor_sizes)
    ctx.options = {"beta_vae_metric": {"profile": "fast", "num_train": 300, "num_eval": "150"}}
    h = bvm.compute(ctx)
    assert h.params["profile"] == "fast" and h.params["num_train"] == 300
    assert h.params["num_eval"] == 150 and h.params["batch_size"] == 64
    assert h.params["seed"] == 11 and h.params["sklearn_version"]
    ctx.options = {"factor_vae_metric": {"profile": "fast"}}
    f = fvm.compute(ctx)
    assert (f.params["num_train"], f.params["num_eval"], f.params["num_variance_estimate"]) == (
        1000, 500, 2000,
    )
    assert f.params["profile"] == "fast" and f.params["prune_threshold"] == 0.05
    assert f.params["factor_names"] == ["f0", "f1", "f2", "f3"]
    # reproducible from the seed
    assert fvm.compute(ctx).values == f.values
    ctx.options = {
        "factor_vae_metric": {"num_train": 300, "num_eval": 150, "num_variance_estimate": 1000}
    }
    f = fvm.compute(ctx)
    assert f.params["profile"] == "reference" and f.params["num_train"] == 300
    got = {**h.values, **f.values}
    for key, value in PINNED_SAMPLER.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key

    ctx.options = {"factor_vae_metric": {"num_train": 0}}
    with pytest.raises(ValueError, match="num_train"):
        fvm.compute(ctx)
    ctx.options = {"beta_vae_metric": {"bins": 3}}
    with pytest.raises(ValueError, match="unknown option"):
        bvm.compute(ctx)
    ctx.options = {}
    ctx.encode = None
    with pytest.raises(ValueError, match="encode"):
        bvm.compute(ctx)
    ctx.dataset = None
    with pytest.raises(ValueError, match="dataset"):
        fvm.compute(ctx)


PINNED_SAMPLER: dict[str, float] = {
    "beta_vae_metric": 0.84,
    "beta_vae_metric.train": 0.83,
    "factor_vae_metric": 0.8,
    "factor_vae_metric.train": 0.7,
    "factor_vae_metric.num_active_dims": 4.0,
}
