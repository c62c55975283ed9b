"""Image-quality metrics: SSIM / PSNR against references, Fréchet distance, KID, domain features."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
from scipy import linalg
from scipy.ndimage import gaussian_filter

from vaebench.plugins.datasets.dsprites import ProceduralDSprites
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    kid_subset_indices,
)
from vaebench.plugins.metrics.image_quality import compute_psnr, compute_ssim, psnr, ssim


@pytest.fixture(scope="module")
def dsprites():
    return ProceduralDSprites()


def _smooth_fields(rng: np.random.Generator, n: int, h: int, w: int, c: int) -> np.ndarray:
    raw = gaussian_filter(rng.standard_normal((n, h, w, c)), sigma=(0, 3, 3, 0))
    lo = raw.min(axis=(1, 2, 3), keepdims=True)
    hi = raw.max(axis=(1, 2, 3), keepdims=True)
    return (raw - lo) / (hi - lo)


def _degraded(x: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    y = gaussian_filter(x.astype(np.float64), sigma=(0, blur, blur, 0)) if blur else x.astype(np.float64)
    return np.clip(y + noise * rng.standard_normal(x.shape), 0.0, 1.0)


# --- SSIM / PSNR --------------------------------------------------------------


def test_ssim_matches_scikit_image(dsprites):
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image is not installed")
    rng = np.random.default_rng(0)
    sprites, _ = dsprites.sample(12, rng)
    pairs = [
        (sprites, _degraded(sprites, rng, 1.0, 0.0)),
        (sprites, _degraded(sprites, rng, 0.0, 0.1)),
        (sprites, _degraded(sprites, rng, 0.7, 0.05)),
    ]
    fields = _smooth_fields(rng, 4, 40, 52, 3)  # non-square, 3 channels
    pairs.append((fields, _degraded(fields, rng, 0.5, 0.05)))
    for a, b in pairs:
        ours = ssim(a, b)
        ref = [
            skm.structural_similarity(
                np.asarray(a[i], np.float64), np.asarray(b[i], np.float64), gaussian_weights=True,
                sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1,
            )
            for i in range(a.shape[0])
        ]
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
        assert np.ptp(ours) > 0.01  # the comparison covers a range of values


def test_ssim_properties(dsprites):
    rng = np.random.default_rng(1)
    x, _ = dsprites.sample(6, rng)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-12)
    y = _degraded(x, rng, 0.8, 0.05)
    np.testing.assert_allclose(ssim(x, y), ssim(y, x), atol=1e-12)
    fields = _smooth_fields(rng, 3, 32, 32, 1)
    scores = [ssim(fields, _degraded(fields, np.random.default_rng(2), 0.0, s)).mean() for s in (0.01, 0.05, 0.2)]
    assert scores[0] > scores[1] > scores[2]
    with pytest.raises(ValueError, match="ssim: .*smaller than the 11x11 window"):
        ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"ssim: images must lie in \[0, 1\]"):
        ssim(np.full((1, 16, 16, 1), 2.0), np.zeros((1, 16, 16, 1)))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(np.zeros((1, 16, 16, 1)), np.zeros((2, 16, 16, 1)))


def test_psnr_closed_form_and_cap():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.0, 0.8, size=(3, 16, 16, 2))
    np.testing.assert_allclose(psnr(a, a + 0.1), 20.0, atol=1e-9)  # MSE 0.01 -> 20 dB
    np.testing.assert_allclose(psnr(a, a + 0.01), 40.0, atol=1e-9)
    assert np.all(psnr(a, a) == 100.0)  # identical images: capped at 100 dB
    assert np.all(np.isinf(psnr(a, a, max_db=None)))
    b = a.copy()
    b[0, 0, 0, 0] += 0.5  # per image, not pooled over the batch
    got = psnr(a, b)
    np.testing.assert_allclose(got[0], 10 * math.log10(a[0].size / 0.25))
    assert np.all(got[1:] == 100.0)


def test_entry_points(dsprites):
    rng = np.random.default_rng(4)
    x, _ = dsprites.sample(30, rng)
    y = _degraded(x, rng, 0.0, 0.1).astype(np.float32)
    ctx = EvaluationContext(
        means=np.zeros((30, 2)), logvars=np.zeros((30, 2)), recon_errors=np.zeros(30),
        images=x, reconstructions=y, options={"ssim": {"n": "20"}},
    )
    res = compute_ssim(ctx)
    assert res.values["ssim"] == pytest.approx(ssim(x[:20], y[:20]).mean())
    assert res.params["n"] == 20 and res.params["window"] == 11 and res.params["sigma"] == 1.5
    assert res.params["K1"] == 0.01 and res.params["K2"] == 0.03 and res.params["data_range"] == 1.0
    res = compute_psnr(ctx)
    assert res.values["psnr"] == pytest.approx(psnr(x, y).mean())
    assert res.params["n"] == 30 and res.params["max_db"] == 100.0 and res.params["n_capped"] == 0
    bare = EvaluationContext(means=np.zeros((3, 2)), logvars=np.zeros((3, 2)), recon_errors=np.zeros(3))
    with pytest.raises(ValueError, match="psnr: needs held-out images"):
        compute_psnr(bare)
    with pytest.raises(ValueError, match="unknown option"):
        compute_ssim(EvaluationContext(**{**ctx.__dict__, "options": {"ssim": {"bins": 3}}}))


# --- Fréchet distance ---------------------------------------------------------


def test_frechet_closed_forms():
    rng = np.random.default_rng(5)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2.0 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    a = rng.standard_normal((d, d))
    b = rng.standard_normal((d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    covmean = linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_sampling_bias_shrinks_with_n():
    rng = np.random.default_rng(6)
    d = 8
    values = []
    for n in (200, 2000, 20000):
        s1 = feature_statistics(rng.standard_normal((n, d)))
        s2 = feature_statistics(rng.standard_normal((n, d)))
        values.append(frechet_distance(*s1, *s2))
    # Expected size ~ d / n (mean term) plus covariance terms of the same order.
    assert values[0] > values[1] > values[2] > 0.0
    assert values[2] < 5 * d / 20000
    x = rng.standard_normal((500, d))
    assert frechet_distance(*feature_statistics(x), *feature_statistics(x)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_rank_deficient():
    rng = np.random.default_rng(7)
    d, n = 64, 20  # N < d: singular covariances
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) + 0.5
    value = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert np.isfinite(value) and value > 0.0
    mu_x, s_x = feature_statistics(x)
    mu_y, s_y = feature_statistics(y)
    ref = np.sum((mu_x - mu_y) ** 2) + np.trace(s_x) + np.trace(s_y) - 2.0 * np.trace(linalg.sqrtm(s_x @ s_y)).real
    assert value == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu_x, s_x, mu_x, s_x) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(mu_x, s_x[:3, :3], mu_y, s_y)


# --- KID ------------------------------------------------------------------------


def _kid_loop(f1, f2, subsets, subset_size, seed, degree=3):
    idx1, idx2 = kid_subset_indices(len(f1), len(f2), subsets, subset_size, seed)
    d = f1.shape[1]
    out = []
    for i1, i2 in zip(idx1, idx2):
        x, y = f1[i1], f2[i2]
        m = len(x)
        kxx = (x @ x.T / d + 1) ** degree
        kyy = (y @ y.T / d + 1) ** degree
        kxy = (x @ y.T / d + 1) ** degree
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        out.append(off - 2 * kxy.sum() / m**2)
    return np.mean(out), np.std(out)


def test_kid_matches_loop_and_separates():
    rng = np.random.default_rng(8)
    d = 16
    f1 = rng.standard_normal((300, d))
    f2 = rng.standard_normal((400, d))
    ref_mean, ref_std = _kid_loop(f1, f2, 20, 100, 3)
    for method in ("auto", "subsets", "full"):
        mean, std = kernel_inception_distance(f1, f2, subsets=20, subset_size=100, seed=3, method=method)
        assert mean == pytest.approx(ref_mean, abs=1e-10) and std == pytest.approx(ref_std, abs=1e-10)
    assert abs(mean) < 3 * std  # equal distributions: unbiased estimate ~ 0
    shifted, shifted_std = kernel_inception_distance(f1, f2 + 0.5, subsets=20, subset_size=100, seed=3)
    assert shifted > 0.1 and shifted > 5 * shifted_std
    # subset size is capped at the smaller set
    for method in ("subsets", "full"):
        small = kernel_inception_distance(f1[:50], f2, subsets=5, subset_size=1000, seed=0, method=method)
        assert small == pytest.approx(_kid_loop(f1[:50], f2, 5, 1000, 0), abs=1e-10)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        kernel_inception_distance(f1, f2[:, :3])


# --- domain feature network -----------------------------------------------------

TINY_STEPS = 12


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory, dsprites):
    from vaebench.plugins.metrics.domain_features import load_or_train

    root = tmp_path_factory.mktemp("cache")
    return load_or_train(dsprites, steps=TINY_STEPS, cache_dir=root), root


def test_domain_net_cache_reused_and_rebuilt(tiny_net, dsprites):
    from vaebench.plugins.metrics.domain_features import load_or_train

    net, root = tiny_net
    assert net.trained and len(net.sha256) == 64 and net.path.name == "weights.safetensors"
    mtime = os.stat(net.path).st_mtime_ns
    again = load_or_train(dsprites, steps=TINY_STEPS, cache_dir=root)
    assert not again.trained and again.sha256 == net.sha256 and os.stat(net.path).st_mtime_ns == mtime
    # Truncated weights: detected by the sha256 check, rebuilt (deterministically: same bytes).
    data = net.path.read_bytes()
    net.path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=r"does not match meta.json\); retraining"):
        rebuilt = load_or_train(dsprites, steps=TINY_STEPS, cache_dir=root)
    assert rebuilt.trained and rebuilt.sha256 == net.sha256
    (net.path.parent / "meta.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="meta.json unreadable"):
        assert load_or_train(dsprites, steps=TINY_STEPS, cache_dir=root).sha256 == net.sha256
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not load_or_train(dsprites, steps=TINY_STEPS, cache_dir=root).trained


def _generator_context(dataset, decode, seed=0, options=None):
    return EvaluationContext(
        means=np.zeros((4, 3)), logvars=np.zeros((4, 3)), recon_errors=np.zeros(4),
        dataset=dataset, decode=decode, seed=seed, options=options or {},
    )


def test_fd_domain_real_vs_noise(tiny_net, dsprites):
    from vaebench.plugins.metrics.domain_features import compute_fd_domain, compute_kd_domain

    net, _ = tiny_net
    rng = np.random.default_rng(9)
    real_a = net.features(dsprites.sample(300, rng)[0])
    real_b = net.features(dsprites.sample(300, rng)[0])
    noise = net.features(rng.uniform(size=(300, 64, 64, 1)).astype(np.float32))
    fd_real = frechet_distance(*feature_statistics(real_a), *feature_statistics(real_b))
    fd_noise = frechet_distance(*feature_statistics(real_a), *feature_statistics(noise))
    assert fd_noise > 20 * fd_real

    def real_decoder(z):  # a "perfect generator": real images, independent of the real sample
        return dsprites.sample(len(z), np.random.default_rng(int(abs(z[0, 0]) * 1e6)))[0]

    def noise_decoder(z):
        return np.random.default_rng(0).uniform(size=(len(z), 64, 64, 1)).astype(np.float32)

    opts = {"fd_domain": {"n": 300}, "kd_domain": {"n": 300, "subsets": 10, "subset_size": 200}}
    good = _generator_context(dsprites, real_decoder, options=opts)
    bad = _generator_context(dsprites, noise_decoder, options=opts)
    fd_good = compute_fd_domain(good, feature_net=net)
    kd_good = compute_kd_domain(good, feature_net=net)  # reuses fd_domain's features
    fd_bad = compute_fd_domain(bad, feature_net=net)
    kd_bad = compute_kd_domain(bad, feature_net=net)
    assert fd_bad.values["fd_domain"] > 20 * fd_good.values["fd_domain"]
    p = fd_good.params
    assert p["feature_net"] == {"name": "dsprites-factor-convnet-v1", "sha256": net.sha256}
    assert p["feature_dim"] == 128 and p["n_real"] == p["n_generated"] == 300 and p["seed"] == 0
    assert abs(kd_good.values["kd_domain"]) < 3 * kd_good.values["kd_domain.std"] + 1e-6
    assert kd_bad.values["kd_domain"] > 10 * kd_bad.values["kd_domain.std"]
    assert kd_bad.params["subsets"] == 10 and kd_bad.params["subset_size"] == 200


def test_domain_features_reject_other_datasets():
    from vaebench.plugins.metrics.domain_features import compute_fd_domain

    class Mnist:
        name = "mnist"
        variant = "v0"
        image_shape = (28, 28, 1)
        factor_sizes = (10,)

    ctx = _generator_context(Mnist(), lambda z: np.zeros((len(z), 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="no domain feature network for dataset 'mnist'"):
        compute_fd_domain(ctx)
