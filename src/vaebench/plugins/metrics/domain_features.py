"""Fréchet distance and KID in the feature space of a small, locally trained domain network.

FID (Heusel et al. 2017, arXiv:1706.08500) and KID (Bińkowski et al. 2018,
arXiv:1801.01401) compare generated and real images in the feature space of an
ImageNet Inception-v3. That network (and torchvision) is not available offline
here, and its ImageNet features describe 64x64 binary sprites poorly anyway. So
vaebench trains its own small feature network on the benchmark dataset itself
and reports the two distances under their own names, ``fd_domain`` and
``kd_domain``, never as ``fid`` / ``kid``: the numbers are comparable only
between runs that used the same network, which is identified by the sha256 of
its weights file and recorded with every value.

The network (``FactorNet``, version ``v1``): a factor predictor for dSprites-like
data (``64 x 64 x 1`` images with integer factors). Four 4x4 stride-2
convolutions (16, 32, 32, 64 channels, ReLU; 64 -> 4 pixels), a dense layer of
``FEATURE_DIM = 128`` ReLU units -- the features -- and one linear
classification head per factor (softmax cross-entropy, summed over factors).

Training is deterministic: weights initialised under ``torch.manual_seed(0)``
(the caller's global RNG state is restored), ``DEFAULT_STEPS = 800`` Adam steps
(lr 1e-3) on batches of 64 images drawn with ``np.random.default_rng(0)`` from
``dataset.sample``, one CPU thread and ``torch.use_deterministic_algorithms(True)``
while training (both restored afterwards): about 30 s on two busy CPU cores, once per
machine and dataset. Same machine and torch build -> same
bytes; other CPUs / builds may round differently, which is why the identity is
the sha256 of the cached file, not the recipe.

Cache: ``$VAEBENCH_CACHE/feature_nets/<name>-<variant>-<digest>-v1/`` (default
``$VAEBENCH_CACHE = ~/.cache/vaebench``; ``<digest>`` is the dataset's digest, a
non-default step count adds ``-steps<N>``) holding ``weights.safetensors``
(loaded with safetensors only, never pickle) and ``meta.json`` (sha256 of the
weights, architecture, training recipe, held-out factor accuracies, training
time, torch version). Both are written atomically (temporary file, then
``os.replace``). A cache whose weights do not match the recorded sha256
(truncated, edited), whose ``meta.json`` is unreadable, or whose recipe differs
is *rebuilt*: a one-line ``RuntimeWarning`` says why, and the network is trained
again (training is deterministic, so on the same machine the rebuilt file has the
same sha256).

Estimators (``n`` = option ``n``, default 2,000):

* generated: ``n`` latents ``z ~ N(0, I_D)`` (``D`` = the model's latent size)
  decoded by ``ctx.decode`` -- the decoder's Bernoulli means, not binarised;
* real: ``n`` images from ``ctx.dataset.sample`` (independent uniform factors);
* both from ``np.random.SeedSequence(ctx.seed)`` (one child stream each);
* preprocessing: float32 in [0, 1], NHWC -> NCHW, no resizing or normalisation;
* ``fd_domain``: Fréchet distance of the two feature sets (``frechet.py``: mean,
  unbiased covariance, eigh-based matrix square root, float64);
* ``kd_domain``: KID, unbiased MMD² with the cubic polynomial kernel, mean over
  100 subsets of ``min(1000, n)`` rows (``kd_domain``) and their standard
  deviation (``kd_domain.std``).

``fd_domain`` and ``kd_domain`` of one context with the same ``n`` share one set of
samples and features (the last context's are kept), so asking for both decodes once.

Both values are biased by the finite ``n`` (FD strongly: roughly ``d / n``
terms), so they are comparable only at equal ``n``, which is recorded.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.frechet import (
    KID_DEGREE,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
)
from vaebench.plugins.metrics.inputs import int_option, prior_and_real_features, prior_latent_dim, read_options
from vaebench.plugins.metrics.weights import cache_root, sha256_file
from vaebench.plugins.specs import MetricResult

__all__ = [
    "DEFAULT_N",
    "DEFAULT_STEPS",
    "FEATURE_DIM",
    "NET_VERSION",
    "DomainFeatureNet",
    "FactorNet",
    "cache_root",
    "compute_fd_domain",
    "compute_kd_domain",
    "load_or_train",
    "net_directory",
    "train_feature_net",
]

NET_VERSION = "v1"
FEATURE_DIM = 128
DEFAULT_STEPS = 800
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
TRAIN_SEED = 0
DEFAULT_N = 2000
IMAGE_SHAPE = (64, 64, 1)
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"
PREPROCESSING = "float32 in [0, 1], NHWC -> NCHW, no resizing or normalisation"
FEATURE_LAYER = f"penultimate: ReLU of the {FEATURE_DIM}-unit dense layer"
#: Images pushed through the decoder / feature network at once.
_BATCH = 500
_ARCHITECTURE = "conv4x4s2(16,32,32,64)+relu -> dense(128)+relu [features] -> linear heads per factor"


class FactorNet(nn.Module):
    """Factor predictor: ``features(x)`` ``(B, 128)``, ``forward(x)`` -> concatenated logits."""

    def __init__(self, factor_sizes: tuple[int, ...], channels: int = 1, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.factor_sizes = tuple(int(k) for k in factor_sizes)
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 16, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        )
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, feature_dim), nn.ReLU())
        self.heads = nn.Linear(feature_dim, sum(self.factor_sizes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, 64, 64)`` in [0, 1] -> ``(B, feature_dim)``."""
        return self.dense(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(x))


@dataclass
class DomainFeatureNet:
    """A trained, cached feature network and its identity."""

    name: str
    sha256: str
    path: Path
    module: FactorNet
    meta: dict[str, Any] = field(default_factory=dict)
    #: True when this call trained the network (no usable cache).
    trained: bool = False

    @property
    def feature_dim(self) -> int:
        return int(self.module.heads.in_features)

    @property
    def identity(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}

    def features(self, images: np.ndarray) -> np.ndarray:
        """Images ``(M, 64, 64, 1)`` in [0, 1] -> features ``(M, feature_dim)`` float64."""
        x = np.asarray(images, dtype=np.float32)
        out = np.empty((x.shape[0], self.feature_dim), dtype=np.float64)
        self.module.eval()
        with torch.no_grad():
            for start in range(0, x.shape[0], _BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + _BATCH].transpose(0, 3, 1, 2)))
                out[start : start + batch.shape[0]] = self.module.features(batch).double().numpy()
        return out


# --- cache --------------------------------------------------------------------


def _check_dataset(dataset: Any, metric: str) -> None:
    name = getattr(dataset, "name", type(dataset).__name__)
    shape = tuple(getattr(dataset, "image_shape", ()) or ())
    sizes = tuple(getattr(dataset, "factor_sizes", ()) or ())
    if dataset is None or shape != IMAGE_SHAPE or not sizes or not hasattr(dataset, "sample"):
        raise ValueError(
            f"{metric}: no domain feature network for dataset {name!r} (needs dSprites-like "
            f"64x64x1 images with factors; got image shape {shape or None})"
        )


def _net_name(dataset: Any) -> str:
    return f"{dataset.name}-factor-convnet-{NET_VERSION}"


def net_directory(dataset: Any, steps: int = DEFAULT_STEPS, root: str | os.PathLike[str] | None = None) -> Path:
    """Cache directory of the feature network for ``dataset`` trained for ``steps`` steps."""
    base = Path(root) if root is not None else cache_root()
    tag = f"{dataset.name}-{dataset.variant}-{dataset.digest()}-{NET_VERSION}"
    if steps != DEFAULT_STEPS:
        tag += f"-steps{steps}"
    return base / "feature_nets" / tag


def _recipe(dataset: Any, steps: int) -> dict[str, Any]:
    return {
        "name": _net_name(dataset),
        "version": NET_VERSION,
        "architecture": _ARCHITECTURE,
        "feature_dim": FEATURE_DIM,
        "factor_names": list(getattr(dataset, "factor_names", ())),
        "factor_sizes": [int(k) for k in dataset.factor_sizes],
        "dataset": {"name": dataset.name, "variant": dataset.variant, "digest": dataset.digest()},
        "steps": int(steps),
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam(lr={LEARNING_RATE})",
        "loss": "sum over factors of softmax cross-entropy",
        "seed": TRAIN_SEED,
        "threads": 1,
        "deterministic_algorithms": True,
    }


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def train_feature_net(dataset: Any, steps: int = DEFAULT_STEPS) -> tuple[FactorNet, dict[str, Any]]:
    """Train :class:`FactorNet` deterministically on ``dataset.sample`` (module docstring).

    Returns the network (eval mode) and a summary: held-out accuracy per factor on
    1,000 fresh samples, wall-clock seconds.
    """
    _check_dataset(dataset, "train_feature_net")
    sizes = tuple(int(k) for k in dataset.factor_sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    start = time.perf_counter()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TRAIN_SEED)
            net = FactorNet(sizes, channels=IMAGE_SHAPE[2])
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        rng = np.random.default_rng(TRAIN_SEED)
        net.train()
        for _ in range(int(steps)):
            images, factors = dataset.sample(BATCH_SIZE, rng)
            x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2)))
            y = torch.from_numpy(np.asarray(factors, dtype=np.int64))
            logits = net(x)
            loss = sum(
                nn.functional.cross_entropy(logits[:, offsets[k] : offsets[k + 1]], y[:, k])
                for k in range(len(sizes))
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        images, factors = dataset.sample(1000, np.random.default_rng(TRAIN_SEED + 1))
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))))
        accuracy = {
            str(name): round(
                float((logits[:, offsets[k] : offsets[k + 1]].argmax(1).numpy() == factors[:, k]).mean()), 4
            )
            for k, name in enumerate(getattr(dataset, "factor_names", None) or [f"factor{k}" for k in range(len(sizes))])
        }
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return net, {"heldout_accuracy": accuracy, "train_seconds": round(time.perf_counter() - start, 3)}


def _load_cached(directory: Path, recipe: dict[str, Any]) -> tuple[FactorNet, dict[str, Any], str]:
    """Load and verify a cached network; raises ``ValueError`` saying what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta_path = directory / WEIGHTS_FILE, directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{META_FILE} unreadable ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("recipe") != recipe:
        raise ValueError(f"{META_FILE} describes a different network")
    digest = sha256_file(weights)
    if digest != meta.get("sha256"):
        raise ValueError(f"{WEIGHTS_FILE} sha256 {digest[:12]} does not match {META_FILE}")
    try:
        state = load_file(str(weights))
        net = FactorNet(tuple(recipe["factor_sizes"]), channels=IMAGE_SHAPE[2])
        net.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ValueError(f"{WEIGHTS_FILE} unloadable ({type(exc).__name__})") from None
    net.eval()
    return net, meta, digest


def load_or_train(
    dataset: Any,
    steps: int = DEFAULT_STEPS,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    metric: str = "domain_features",
) -> DomainFeatureNet:
    """The feature network for ``dataset``: from the cache, else trained and cached.

    ``cache_dir`` replaces ``$VAEBENCH_CACHE`` (networks go to ``<cache_dir>/feature_nets/...``).
    A corrupt or mismatched cache is rebuilt with a ``RuntimeWarning`` (module docstring).
    Raises ``ValueError`` for a dataset that is not dSprites-like.
    """
    _check_dataset(dataset, metric)
    steps = int_option(metric, "steps", steps, minimum=1)
    directory = net_directory(dataset, steps, cache_dir)
    recipe = _recipe(dataset, steps)
    weights = directory / WEIGHTS_FILE
    if weights.exists() or (directory / META_FILE).exists():
        try:
            net, meta, digest = _load_cached(directory, recipe)
            return DomainFeatureNet(recipe["name"], digest, weights, net, meta, trained=False)
        except ValueError as exc:
            warnings.warn(f"feature network cache {directory} is invalid ({exc}); retraining", RuntimeWarning,
                          stacklevel=2)
    from safetensors.torch import save_file

    net, summary = train_feature_net(dataset, steps)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # One metadata key only: safetensors writes ``__metadata__`` from a hash map, so with
    # several keys their order (and the file's sha256) would vary from call to call.
    _atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    digest = sha256_file(weights)
    meta = {"sha256": digest, "recipe": recipe, **summary, "torch": torch.__version__}
    _atomic_write(directory / META_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
    return DomainFeatureNet(recipe["name"], digest, weights, net, meta, trained=True)


# --- metrics ------------------------------------------------------------------

def _context_features(
    ctx: EvaluationContext, metric: str, n: int, feature_net: DomainFeatureNet | None
) -> tuple[np.ndarray, np.ndarray, DomainFeatureNet, int]:
    """``(real features, generated features, network, latent size)`` for ``n`` images each."""
    prior_latent_dim(ctx, metric)
    _check_dataset(ctx.dataset, metric)
    net = feature_net if feature_net is not None else load_or_train(ctx.dataset, metric=metric)

    def check(generated: np.ndarray) -> None:
        if generated.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"{metric}: decoded samples must have shape {(n, *IMAGE_SHAPE)}, got {generated.shape}")

    real_f, gen_f, latent_dim = prior_and_real_features(ctx, metric, n, net, check)
    return real_f, gen_f, net, latent_dim


def _common_params(ctx: EvaluationContext, net: DomainFeatureNet, n: int, latent_dim: int) -> dict[str, Any]:
    return {
        "feature_net": net.identity,
        "feature_dim": net.feature_dim,
        "feature_layer": FEATURE_LAYER,
        "feature_net_steps": int(net.meta.get("recipe", {}).get("steps", DEFAULT_STEPS)),
        "preprocessing": PREPROCESSING,
        "generated": f"decoder Bernoulli means of z ~ N(0, I_{latent_dim})",
        "real": "dataset.sample (uniform independent factors)",
        "n_generated": n,
        "n_real": n,
        "seed": int(ctx.seed),
    }


def fd_options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``fd_domain``'s options (``MetricSpec.options``): ``n`` (2,000, >= 2)."""
    return read_options(metric, given, {"n": partial(int_option, minimum=2)}, {"n": DEFAULT_N})


def kd_options(metric: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``kd_domain``'s options (``MetricSpec.options``): ``n``, ``subsets``, ``subset_size``."""
    parsers = {
        "n": partial(int_option, minimum=2),
        "subsets": partial(int_option, minimum=1),
        "subset_size": partial(int_option, minimum=2),
    }
    return read_options(metric, given, parsers, {"n": DEFAULT_N, "subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE})


def compute_fd_domain(ctx: EvaluationContext, *, feature_net: DomainFeatureNet | None = None) -> MetricResult:
    """Plugin entry point: Fréchet distance of prior samples vs real images in domain features.

    Option ``n`` (default 2,000, >= 2). ``feature_net`` overrides the cached default (tests).
    """
    metric = "fd_domain"
    opts = fd_options(metric, ctx.options_for(metric))
    real_f, gen_f, net, latent_dim = _context_features(ctx, metric, opts["n"], feature_net)
    mu_r, s_r = feature_statistics(real_f)
    mu_g, s_g = feature_statistics(gen_f)
    value = frechet_distance(mu_g, s_g, mu_r, s_r)
    params = _common_params(ctx, net, opts["n"], latent_dim)
    params.update(
        estimator="Frechet distance of Gaussians (Heusel et al. 2017): mean, unbiased covariance, eigh sqrt",
    )
    return MetricResult(values={metric: value}, params=params)


def compute_kd_domain(ctx: EvaluationContext, *, feature_net: DomainFeatureNet | None = None) -> MetricResult:
    """Plugin entry point: KID (mean and std over subsets) of prior samples vs real images.

    Options ``n`` (default 2,000), ``subsets`` (100), ``subset_size`` (1,000; capped at ``n``).
    """
    metric = "kd_domain"
    opts = kd_options(metric, ctx.options_for(metric))
    real_f, gen_f, net, latent_dim = _context_features(ctx, metric, opts["n"], feature_net)
    mean, std = kernel_inception_distance(
        gen_f, real_f, subsets=opts["subsets"], subset_size=opts["subset_size"], degree=KID_DEGREE, seed=ctx.seed
    )
    params = _common_params(ctx, net, opts["n"], latent_dim)
    params.update(
        estimator="unbiased MMD^2, polynomial kernel (x.y/d + 1)^3 (Binkowski et al. 2018)",
        subsets=opts["subsets"],
        subset_size=min(opts["subset_size"], opts["n"]),
        degree=KID_DEGREE,
        std="population std over subsets",
    )
    return MetricResult(values={metric: mean, f"{metric}.std": std}, params=params)
