"""LPIPS (Zhang et al. 2018) with plain-torch AlexNet / VGG16 backbones loaded from torchvision-format files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.lpips import ARCHS, LPIPSNet, backbone_features, compute_lpips_alex, load_lpips, lpips
from vaebench.plugins.metrics.weights import WeightsError, sha256_file
from vaebench.plugins.specs import MetricUnavailable


def _backbone_file(path, arch: str, seed: int = 0):
    """A torchvision-format state dict (``features.N.weight`` / ``.bias``), random values."""
    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in backbone_features(arch).state_dict().items()}
    torch.save(state, path)
    return path


def _heads_file(path, arch: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    net_channels = [lin.weight.shape[1] for lin in LPIPSNet(arch).lins]
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(net_channels)}, path)
    return path


@pytest.fixture(scope="module")
def alex_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    backbone = _backbone_file(d / "alexnet-test.pth", "alex")
    heads = _heads_file(d / "alex-heads.pth", "alex")
    return backbone, heads, [sha256_file(backbone), sha256_file(heads)]


@pytest.fixture(scope="module")
def alex(alex_files):
    backbone, heads, allowed = alex_files
    return load_lpips("alex", str(backbone), heads=str(heads), allowed=allowed)


def _images(n: int, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    raw = gaussian_filter(np.random.default_rng(seed).standard_normal((n, 64, 64, 1)), sigma=(0, 3, 3, 0))
    lo, hi = raw.min(axis=(1, 2, 3), keepdims=True), raw.max(axis=(1, 2, 3), keepdims=True)
    return ((raw - lo) / (hi - lo)).astype(np.float32)


def _by_hand(backbone_path, heads_path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LPIPS-alex written out from the paper and the released code, straight from the two state dicts."""
    sd = torch.load(backbone_path, weights_only=True)
    heads = torch.load(heads_path, weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(img):
        h = (torch.from_numpy(img).permute(0, 3, 1, 2).repeat(1, 3, 1, 1) * 2 - 1 - shift) / scale
        relu1 = F.relu(F.conv2d(h, sd["features.0.weight"], sd["features.0.bias"], stride=4, padding=2))
        relu2 = F.relu(F.conv2d(F.max_pool2d(relu1, 3, 2), sd["features.3.weight"], sd["features.3.bias"], padding=2))
        relu3 = F.relu(F.conv2d(F.max_pool2d(relu2, 3, 2), sd["features.6.weight"], sd["features.6.bias"], padding=1))
        relu4 = F.relu(F.conv2d(relu3, sd["features.8.weight"], sd["features.8.bias"], padding=1))
        relu5 = F.relu(F.conv2d(relu4, sd["features.10.weight"], sd["features.10.bias"], padding=1))
        return [t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for t in (relu1, relu2, relu3, relu4, relu5)]

    with torch.no_grad():
        total = 0
        for i, (a, b) in enumerate(zip(taps(x), taps(y))):
            w = heads[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)
            total = total + ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total.double().numpy()


def test_lpips_properties_and_hand_computed_value(alex, alex_files):
    net, identity = alex
    backbone, heads, _ = alex_files
    x = _images(6)
    rng = np.random.default_rng(3)
    noisy = [np.clip(x + s * rng.standard_normal(x.shape), 0, 1).astype(np.float32) for s in (0.02, 0.1, 0.3)]
    np.testing.assert_allclose(lpips(net, x, x), 0.0, atol=1e-7)
    d = [lpips(net, x, y) for y in noisy]
    np.testing.assert_allclose(lpips(net, noisy[1], x), d[1], rtol=1e-5)
    assert d[0].mean() < d[1].mean() < d[2].mean()
    np.testing.assert_allclose(d[2], _by_hand(backbone, heads, x, noisy[2]), rtol=1e-5)
    assert identity["backbone"]["sha256"] == sha256_file(backbone)


def test_compute_lpips_alex_records_identity(alex, alex_files):
    backbone, heads, allowed = alex_files
    x = _images(5, seed=1)
    y = np.clip(x + 0.1, 0, 1)
    ctx = EvaluationContext(means=np.zeros((5, 2)), logvars=np.zeros((5, 2)), recon_errors=np.zeros(5),
                            images=x, reconstructions=y,
                            options={"lpips_alex": {"n": 4, "weights": str(backbone), "heads": str(heads)}})
    from vaebench.plugins.metrics import weights

    # The plugin path uses the shipped allow-list: the test's random backbone is refused by it.
    with pytest.raises(WeightsError, match=r"lpips_alex: the torchvision ImageNet AlexNet weights: .* not allow-listed"):
        compute_lpips_alex(ctx)
    assert weights.ALEXNET.allows("7be5be79" + "0" * 56) and not weights.ALEXNET.allows("0" * 64)


def test_backbone_loader_errors(tmp_path, alex_files):
    _, heads, _ = alex_files
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 11, 11)}, wrong)
    with pytest.raises(WeightsError, match=r"does not hold torchvision's alex features \(missing \['features.0.bias'"):
        load_lpips("alex", str(wrong), heads=str(heads), allowed=[sha256_file(wrong), sha256_file(heads)])
    good = _backbone_file(tmp_path / "good.pth", "alex", seed=5)
    full_sha = sha256_file(good)
    good.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match=r"has sha256 .* which is not allow-listed"):
        load_lpips("alex", str(good), heads=str(heads), allowed=[full_sha, sha256_file(heads)])
    with pytest.raises(WeightsError, match=r"is not a readable torch weights file \(truncated\?\)"):
        load_lpips("alex", str(good), heads=str(heads), allowed=[sha256_file(good), sha256_file(heads)])
    with pytest.raises(WeightsError, match=r"does not exist \(get alexnet-owt-7be5be79.pth: https://download"):
        load_lpips("alex", str(tmp_path / "absent.pth"), heads=str(heads))


def test_missing_backbone_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "t"))
    monkeypatch.delenv("VAEBENCH_LPIPS_WEIGHTS", raising=False)
    with pytest.raises(MetricUnavailable) as info:
        load_lpips("vgg")
    text = str(info.value)
    assert text.startswith("lpips_vgg: needs the torchvision ImageNet VGG16 weights (vgg16-397923af.pth;")
    assert "--lpips-weights PATH" in text and "VAEBENCH_LPIPS_WEIGHTS" in text and "\n" not in text


def test_vgg_backbone_matches_torchvision_layout(tmp_path):
    """VGG16: torchvision's 13 conv layers at their indices; taps at relu1_2 ... relu5_3."""
    layers, ends, _, _ = ARCHS["vgg"]
    convs = [i for i, s in enumerate(layers) if s[0] == "conv"]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28] and ends == (4, 9, 16, 23, 30)
    backbone = _backbone_file(tmp_path / "vgg.pth", "vgg")
    heads = _heads_file(tmp_path / "vgg-heads.pth", "vgg")
    net, _ = load_lpips("vgg", str(backbone), heads=str(heads), allowed=[sha256_file(backbone), sha256_file(heads)])
    x = _images(2)
    assert [t.shape[1:] for t in net.taps(torch.from_numpy(x).permute(0, 3, 1, 2).repeat(1, 3, 1, 1))] == [
        (64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]
    assert lpips(net, x, np.clip(x + 0.2, 0, 1)).min() > 0


def test_shipped_heads_are_allow_listed():
    """The heads come from the installed torchmetrics (vaebench[quality]): found and loadable."""
    from vaebench.plugins.metrics.weights import LPIPS_ALEX_HEADS, LPIPS_VGG_HEADS, resolve

    for kind, arch in ((LPIPS_ALEX_HEADS, "alex"), (LPIPS_VGG_HEADS, "vgg")):
        try:
            path, digest, source = resolve(kind, None, metric="lpips")
        except MetricUnavailable as exc:
            pytest.skip(f"torchmetrics not installed ({exc})")
        heads = torch.load(path, map_location="cpu", weights_only=True)
        widths = [heads[f"lin{i}.model.1.weight"].shape[1] for i in range(5)]
        assert widths == ([64, 192, 384, 256, 256] if arch == "alex" else [64, 128, 256, 512, 512])
        assert source == "package" and min(float(v.min()) for v in heads.values()) >= 0
