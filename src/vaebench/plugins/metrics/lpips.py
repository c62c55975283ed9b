"""LPIPS of reconstructions against their inputs: ``lpips_alex`` and ``lpips_vgg``.

Zhang, Isola, Efros, Shechtman & Wang 2018, "The Unreasonable Effectiveness of
Deep Features as a Perceptual Metric", CVPR, arXiv:1801.03924 (version 0.1 of
the released metric, as the ``lpips`` package and torchmetrics compute it).

For images ``x, y`` in [0, 1]: both are mapped to [-1, 1] (``2x - 1``) and through
the scaling layer ``(x - shift) / scale`` (``shift = (-.030, -.088, -.188)``,
``scale = (.458, .448, .450)``); an ImageNet backbone gives feature maps
``f^l`` at five ReLU layers (AlexNet: relu1-relu5; VGG16: relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3); each is unit-normalised over channels
(``f / (||f||_2 + 1e-10)``); then::

    LPIPS(x, y) = sum_l mean_{h,w} w_l . (f^l_x - f^l_y)^2

with the non-negative per-channel weights ``w_l`` of the released linear heads
(``lin{l}.model.1.weight``; the copies torchmetrics ships, allow-listed by
sha256). 0 for identical images, symmetric, lower is better.

The backbones are written here in plain torch with torchvision's layer indices,
so torchvision's ImageNet files (``alexnet-owt-7be5be79.pth``,
``vgg16-397923af.pth``) load as they are: with ``torch.load(weights_only=True)``
(never unpickling code), only their ``features.*`` tensors, checked by name and
shape; the classifier is not needed. Files are located as ``weights.py`` says
(``--lpips-weights``, ``$VAEBENCH_LPIPS_WEIGHTS``, the cache directories); no
download, no torchvision.

Estimator: the first ``n`` held-out images and their reconstructions (option
``n``, default 1,000), grayscale replicated to RGB, no resizing (64 x 64 inputs;
at least 32 x 32), one value per image pair, averaged over pairs.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.inputs import int_option, read_options
from vaebench.plugins.metrics.weights import (
    ALEXNET,
    LPIPS_ALEX_HEADS,
    LPIPS_VGG_HEADS,
    VGG16,
    WeightsError,
    WeightsKind,
    resolve,
)
from vaebench.plugins.specs import MetricResult

__all__ = [
    "ARCHS",
    "DEFAULT_N",
    "LPIPSNet",
    "backbone_features",
    "compute_lpips_alex",
    "compute_lpips_vgg",
    "load_lpips",
    "lpips",
]

DEFAULT_N = 1000
MIN_SIDE = 32
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
_BATCH = 100

#: torchvision's ``features`` Sequential, as (index, layer) specs: ("conv", in, out, kernel,
#: stride, padding), ("relu",), ("pool", kernel, stride).
_ALEX = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",),
         ("pool", 3, 2), ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
         ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2)]


def _vgg16() -> list[tuple]:
    layers: list[tuple] = []
    c_in = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(("pool", 2, 2))
        else:
            layers += [("conv", c_in, v, 3, 1, 1), ("relu",)]
            c_in = v
    return layers


#: arch -> (layer specs, end index of each of the five LPIPS slices, backbone kind, heads kind)
ARCHS: dict[str, tuple[list[tuple], tuple[int, ...], WeightsKind, WeightsKind]] = {
    "alex": (_ALEX, (2, 5, 8, 10, 12), ALEXNET, LPIPS_ALEX_HEADS),
    "vgg": (_vgg16(), (4, 9, 16, 23, 30), VGG16, LPIPS_VGG_HEADS),
}


def backbone_features(arch: str) -> nn.Sequential:
    """torchvision's ``features`` of AlexNet (``"alex"``) / VGG16 (``"vgg"``), same indices, untrained."""
    layers: list[nn.Module] = []
    for spec in ARCHS[arch][0]:
        if spec[0] == "conv":
            layers.append(nn.Conv2d(spec[1], spec[2], spec[3], stride=spec[4], padding=spec[5]))
        elif spec[0] == "relu":
            layers.append(nn.ReLU(inplace=False))
        else:
            layers.append(nn.MaxPool2d(spec[1], spec[2]))
    return nn.Sequential(*layers)


class LPIPSNet(nn.Module):
    """Backbone slices + linear heads; ``forward(x, y)`` ``(B, 3, H, W)`` in [0, 1] -> ``(B,)``."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"lpips: arch must be one of {sorted(ARCHS)}, got {arch!r}")
        self.arch = arch
        self.features = backbone_features(arch)
        ends = ARCHS[arch][1]
        self.ends = ends
        channels = [self._channels_before(end) for end in ends]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def _channels_before(self, end: int) -> int:
        return [s[2] for s in ARCHS[self.arch][0][:end] if s[0] == "conv"][-1]

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised feature maps of ``x`` ``(B, 3, H, W)`` in [0, 1]."""
        h = ((2.0 * x - 1.0) - self.shift) / self.scale
        out, start = [], 0
        for end in self.ends:
            for k in range(start, end):
                h = self.features[k](h)
            start = end
            out.append(h / (torch.sqrt(torch.sum(h * h, dim=1, keepdim=True)) + EPS))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for lin, fx, fy in zip(self.lins, self.taps(x), self.taps(y)):
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


def _load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise WeightsError(
            f"{what}: {path} is not a readable torch weights file (truncated?): {type(exc).__name__}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what}: {path} is not a state dict of tensors")
    return state


def _load_backbone(net: LPIPSNet, path: Path, kind: WeightsKind) -> None:
    state = _load_tensors(path, kind.what)
    want = {f"features.{k}": v.shape for k, v in net.features.state_dict().items()}
    have = {k: v for k, v in state.items() if k.startswith("features.")}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want)) + sorted(k for k in state if not k.startswith(("features.", "classifier.")))
    if missing or extra:
        raise WeightsError(
            f"{kind.what}: {path} does not hold torchvision's {net.arch} features "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, shape in want.items():
        if tuple(have[k].shape) != tuple(shape):
            raise WeightsError(f"{kind.what}: {path}: {k} has shape {tuple(have[k].shape)}, expected {tuple(shape)}")
    net.features.load_state_dict({k[len("features."):]: have[k].float() for k in want}, strict=True)


def _load_heads(net: LPIPSNet, path: Path, kind: WeightsKind) -> None:
    state = _load_tensors(path, kind.what)
    for i, lin in enumerate(net.lins):
        key = f"lin{i}.model.1.weight"
        if key not in state or tuple(state[key].shape) != tuple(lin.weight.shape):
            raise WeightsError(f"{kind.what}: {path}: {key} missing or not of shape {tuple(lin.weight.shape)}")
        lin.weight.data.copy_(state[key].float())


#: (arch, backbone sha256, heads sha256) -> network: each pair of files is loaded once per process.
_LOADED: dict[tuple[str, str, str], tuple[LPIPSNet, dict[str, Any]]] = {}


def load_lpips(
    arch: str,
    weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    heads: str | os.PathLike[str] | None = None,
    metric: str | None = None,
    allowed: Sequence[str] | None = None,
) -> tuple[LPIPSNet, dict[str, Any]]:
    """LPIPS network for ``arch`` (``"alex"`` / ``"vgg"``) and its identity (paths, sha256s).

    ``weights``: backbone file(s) the user named (else env / caches); ``heads``: a heads
    file (else the installed torchmetrics' copy). ``allowed`` replaces both allow-lists
    (full sha256 digests; for files a test writes). Raises ``WeightsError`` /
    ``MetricUnavailable`` with one line.
    """
    if arch not in ARCHS:
        raise ValueError(f"lpips: arch must be one of {sorted(ARCHS)}, got {arch!r}")
    metric = metric or f"lpips_{arch}"
    _, _, backbone_kind, heads_kind = ARCHS[arch]
    b_path, b_sha, b_source = resolve(backbone_kind, weights, metric=metric, allowed=allowed)
    h_path, h_sha, h_source = resolve(heads_kind, heads, metric=metric, allowed=allowed)
    key = (arch, b_sha, h_sha)
    if key not in _LOADED:
        net = LPIPSNet(arch)
        _load_backbone(net, b_path, backbone_kind)
        _load_heads(net, h_path, heads_kind)
        net.eval()
        identity = {
            "backbone": {"file": b_path.name, "sha256": b_sha, "source": b_source},
            "heads": {"file": h_path.name, "sha256": h_sha, "source": h_source},
        }
        _LOADED[key] = (net, identity)
    return _LOADED[key]


def lpips(net: LPIPSNet, a: Any, b: Any) -> np.ndarray:
    """Per-pair LPIPS ``(N,)`` float64 of two ``(N, H, W, C)`` batches in [0, 1], ``C`` 1 or 3."""
    x, y = np.asarray(a), np.asarray(b)
    name = f"lpips_{net.arch}"
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: need two (N, H, W, C) batches of equal shape, C = 1 or 3; got {x.shape}, {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: need at least one image, got N=0")
    if min(x.shape[1], x.shape[2]) < MIN_SIDE:
        raise ValueError(f"{name}: images of {x.shape[1]}x{x.shape[2]} are smaller than {MIN_SIDE}x{MIN_SIDE}")
    for what, arr in (("images", x), ("reconstructions", y)):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(f"{name}: {what} must be finite and lie in [0, 1]")
    device = next(net.parameters()).device
    out = np.empty(x.shape[0], dtype=np.float64)
    with torch.inference_mode():
        for s in range(0, x.shape[0], _BATCH):
            tx, ty = (
                torch.from_numpy(np.ascontiguousarray(arr[s : s + _BATCH], dtype=np.float32).transpose(0, 3, 1, 2))
                .expand(-1, 3, -1, -1).to(device)
                for arr in (x, y)
            )
            out[s : s + tx.shape[0]] = net(tx, ty).double().cpu().numpy()
    return out


def options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``lpips_alex`` / ``lpips_vgg`` options (``MetricSpec.options``): ``n`` (>= 1), ``weights``, ``heads``."""
    return read_options(
        metric, given,
        {"n": partial(int_option, minimum=1), "weights": lambda m, k, v: v, "heads": lambda m, k, v: v},
        {"n": DEFAULT_N},
    )


def _compute(ctx: EvaluationContext, arch: str) -> MetricResult:
    metric = f"lpips_{arch}"
    opts = options(metric, ctx.options_for(metric))
    if ctx.images is None or ctx.reconstructions is None:
        raise ValueError(
            f"{metric}: needs held-out images and their reconstructions ('reconstructions'), "
            "but the evaluation context has none"
        )
    net, identity = load_lpips(arch, opts["weights"], heads=opts["heads"], metric=metric)
    n = opts["n"]
    values = lpips(net, np.asarray(ctx.images)[:n], np.asarray(ctx.reconstructions)[:n])
    params: dict[str, Any] = {
        "n": int(values.shape[0]),
        "n_requested": n,
        "version": "0.1",
        "backbone": {"alex": "AlexNet", "vgg": "VGG16"}[arch],
        **identity,
        "preprocessing": "grayscale replicated to RGB, 2x - 1, scaling layer; no resize",
        "reduction": "spatial mean per layer, summed over 5 layers; per image, then averaged over images",
        "std": round(float(values.std()), 6),
    }
    return MetricResult(values={metric: float(values.mean())}, params=params)


def compute_lpips_alex(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: mean LPIPS (AlexNet) of the first ``n`` reconstructions (options ``n``, ``weights``)."""
    return _compute(ctx, "alex")


def compute_lpips_vgg(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: mean LPIPS (VGG16) of the first ``n`` reconstructions (options ``n``, ``weights``)."""
    return _compute(ctx, "vgg")
