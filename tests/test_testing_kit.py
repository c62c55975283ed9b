"""``vaebench.testing``, the conformance kit plugin authors call: the built-ins pass it,
and each ordinary mistake of an author fails it with a message that says what to change.

Cost: about 15 s on one CPU core (every built-in torch model built twice on 4 images with
the mlp networks; three cheap metrics on 300 observations; two datasets; 4 torch steps twice).
The JAX path (when jax is installed): every built-in JAX model and a plugin's own JAX model
(also trained 4 steps on the jax backend), about 20 s, most of it jit compilation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vaebench import hookimpl
from vaebench.plugin import DatasetSpec, MetricResult, MetricSpec, ModelSpec
from vaebench.plugins.datasets.digits import SklearnDigits
from vaebench.testing import (
    SpecsPlugin,
    check_backend,
    check_dataset,
    check_metric,
    check_model,
    plugin_manager,
    tiny_context,
)

from conftest import backend_installed

MANAGER = plugin_manager()
TORCH_MODELS = sorted(n for n, s in MANAGER.specs["models"].items() if "torch" in s.backends)


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_every_builtin_torch_model_passes_the_kit(name):
    check_model(MANAGER.model(name), manager=MANAGER, architecture="mlp", batch_size=4)


#: Built-in metrics the kit leaves to their own tests: they need pretrained networks'
#: weights (Inception, LPIPS, the domain feature extractors: tests/test_image_metrics*.py).
HEAVY_METRICS = ("fid_inception", "kid_inception", "lpips_alex", "lpips_vgg", "fd_domain", "kd_domain")


@pytest.mark.parametrize("name", sorted(n for n in MANAGER.specs["metrics"] if n not in HEAVY_METRICS))
def test_builtin_metrics_pass_the_kit(name):
    """Every built-in metric but the pretrained-network ones (0.1-14 s each; dci the slowest)."""
    result = check_metric(MANAGER.metric(name))
    assert name in result.values


def _write_files(name, folder):
    """The dataset's files in their real format, small (the writers of tests/test_data_files.py)."""
    from test_data_files import write_cars, write_mpi3d, write_smallnorb

    if name.startswith("mpi3d"):
        folder.mkdir()
        write_mpi3d(folder / f"{name}.npz")
        return folder / f"{name}.npz"
    if name == "smallnorb":
        write_smallnorb(folder)
    elif name == "cars3d":
        write_cars(folder)
    return folder


#: Datasets whose loaders' own tests write their files (tests/test_image_datasets.py: MNIST's
#: idx files; tests/test_cli.py: 3D Shapes' HDF5): left out here.
OWN_FILE_TESTS = ("mnist", "shapes3d")
FILE_BACKED = ("mpi3d_toy", "mpi3d_realistic", "mpi3d_real", "smallnorb", "cars3d")


@pytest.mark.parametrize("name", sorted(n for n in MANAGER.specs["datasets"] if n not in OWN_FILE_TESTS))
def test_builtin_datasets_pass_the_kit(name, tmp_path):
    """Every procedural dataset as it is; every file-backed one on a small file written in its
    real format (< 1 s each)."""
    path = str(_write_files(name, tmp_path / name)) if name in FILE_BACKED else None
    data = check_dataset(MANAGER.dataset(name), path=path)
    assert data.name == name


def test_the_torch_backend_passes_the_kit():
    trained = check_backend(MANAGER.backend("torch"), manager=MANAGER)
    assert trained.steps_done == 4


# ------------------------------------------------------------------ mistakes


def _metric(compute, **kw):
    return MetricSpec(name="mine", description="d", compute=compute, **kw)


@pytest.mark.parametrize("spec, says", [
    (_metric(lambda ctx: 0.5), "not a bare float"),
    (_metric(lambda ctx: {"other": 1.0}), "headline key 'mine'"),
    (_metric(lambda ctx: {"mine": 1.0, "mig": 2.0}), "must be 'mine' or start with 'mine.'"),
    (_metric(lambda ctx: {"mine": float("nan")}), "is nan"),
    (_metric("no_such_module.metric:compute"), "does not import"),
    (_metric(lambda ctx: MetricResult({"mine": float(np.random.default_rng().random())})), "not deterministic"),
    (_metric(lambda ctx: MetricResult({"mine": 1.0}, {"array": np.zeros(2)})), "JSON-serialisable"),
])
def test_metric_mistakes_fail_with_what_to_change(spec, says):
    with pytest.raises(AssertionError, match=None) as info:
        check_metric(spec, tiny_context(n=60))
    assert says in str(info.value), str(info.value)


class _Digits(SklearnDigits):
    """The real digits dataset with one mistake injected into what it returns."""

    mistake = ""

    def sample(self, n, rng):
        images, factors = super().sample(n, rng)
        if self.mistake == "no channel axis":
            return images[..., 0], factors
        if self.mistake == "0..255":
            return (images * 255).astype(np.float32), factors
        if self.mistake == "extra column":
            return images, np.concatenate([factors, factors], axis=1)
        return images, factors


@pytest.mark.parametrize("mistake, says", [
    ("no channel axis", "add the channel axis"),
    ("0..255", "divide 0..255 images by 255"),
    ("extra column", "one column per factor name"),
])
def test_dataset_mistakes_fail_with_what_to_change(mistake, says):
    data = _Digits()
    data.mistake = mistake
    with pytest.raises(AssertionError) as info:
        check_dataset(DatasetSpec(name="digits_bad", description="d", load=lambda path=None: data))
    assert says in str(info.value), str(info.value)


def test_num_factors_must_match_the_dataset():
    with pytest.raises(AssertionError, match="num_factors=3"):
        check_dataset(DatasetSpec(name="d3", description="d", load=lambda path=None: SklearnDigits(), num_factors=3))


def test_model_mistakes_fail_with_what_to_change():
    import torch

    builtin = MANAGER.model("vae")

    def wrong_decode(spec, image_shape):
        model = builtin.build("torch", spec, image_shape)
        model.decode = lambda z, factors=None: torch.zeros(len(z), 7)
        return model

    def no_capacity(spec, image_shape):
        model = builtin.build("torch", spec, image_shape)
        full = model.loss_terms
        model.loss_terms = lambda x, step: {k: v for k, v in full(x, step).items() if k != "capacity"}
        return model

    for factory, says in ((wrong_decode, "decode(z) must return pixel logits (B, C, H, W)"),
                          (no_capacity, "lacks capacity")):
        spec = dataclasses.replace(builtin, name="mine", backends={"torch": factory})
        with pytest.raises(AssertionError) as info:
            check_model(spec, manager=plugin_manager(), architecture="mlp")
        assert says in str(info.value), str(info.value)


def test_plugin_manager_registers_plugins_and_reports_a_broken_one():
    class Good:
        @hookimpl
        def vaebench_register_metrics(self, register):
            register(MetricSpec(name="mine", description="d", compute=lambda ctx: {"mine": 1.0}))

    class Broken:
        @hookimpl
        def vaebench_register_metrics(self, register):
            register("not a spec")

    manager = plugin_manager(Good())
    assert "mine" in manager.specs["metrics"] and "mig" in manager.specs["metrics"]
    assert check_metric(manager.metric("mine")).values == {"mine": 1.0}
    with pytest.raises(AssertionError, match="did not register"):
        plugin_manager(Broken())


# ------------------------------------------------------------------ the JAX path

jax_only = pytest.mark.skipif(not backend_installed("jax"), reason="the jax backend's framework is not installed")
JAX_MODELS = sorted(n for n, s in MANAGER.specs["models"].items() if "jax" in s.backends)


@jax_only
@pytest.mark.parametrize("name", JAX_MODELS)
def test_every_builtin_jax_model_passes_the_kit(name):
    model = check_model(MANAGER.model(name), "jax", manager=MANAGER, architecture="mlp", batch_size=4)
    assert model.latent_dim >= 1


def _tiny_jax_spec(mistake: str = "") -> ModelSpec:
    """A plugin's own JAX model (one dense layer each way, Bernoulli decoder) with one
    author's ``mistake`` injected ("" = none)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class TinyJax(nnx.Module):
        def __init__(self, image_shape, latent_dim, seed):  # noqa: ANN001
            h, w, c = image_shape
            if mistake == "unseeded":
                seed = int(np.random.default_rng().integers(1 << 30))
            rngs = nnx.Rngs(params=seed)
            self.image_shape, self.latent_dim = image_shape, latent_dim
            self.enc = nnx.Linear(h * w * c, 2 * latent_dim, rngs=rngs)
            self.dec = nnx.Linear(latent_dim, h * w * c, rngs=rngs)

        def encode(self, x, factors=None):  # noqa: ANN001
            out = self.enc(x.reshape(x.shape[0], -1))
            return out if mistake == "one_array" else tuple(jnp.split(out, 2, axis=1))

        def decode(self, z, factors=None):  # noqa: ANN001
            logits = self.dec(z).reshape(z.shape[0], *self.image_shape)
            return logits.transpose(0, 3, 1, 2) if mistake == "channels_first" else logits

        def nll(self, x, logits):  # noqa: ANN001
            return (jnp.logaddexp(0.0, logits) - x * logits).sum(axis=(1, 2, 3))

        def recon_errors(self, x, logits):  # noqa: ANN001 - what evaluation calls
            return self.nll(x, logits) * jnp.nan if mistake == "nan_recon" else self.nll(x, logits)

        def loss_terms(self, x, step, key=None, factors=None, eps=None):  # noqa: ANN001
            mu, logvar = self.encode(x)
            z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
            recon = self.nll(x, self.decode(z)).mean()
            if mistake == "python_if" and float(recon) > 0:  # fine eagerly, fails when traced
                recon = recon + 0.0
            kl_per_dim = (0.5 * (mu ** 2 + jnp.exp(logvar) - logvar - 1.0)).mean(0)
            loss = recon + kl_per_dim.sum()
            if mistake == "no_gradient":
                loss = jax.lax.stop_gradient(loss)
            return {"loss": loss, "recon": recon, "kl": kl_per_dim.sum(), "kl_per_dim": kl_per_dim,
                    "capacity": None, "signals": {}}

    return ModelSpec(name="tiny_jax", description="d",
                     backends={"jax": lambda spec, shape: TinyJax(shape, spec.latent_dim, spec.seed)})


@jax_only
def test_a_plugin_jax_model_passes_the_kit_and_trains_on_the_jax_backend():
    spec = _tiny_jax_spec()
    manager = plugin_manager(SpecsPlugin(models=[spec]))
    model = check_model(spec, "jax", manager=manager)
    assert model.latent_dim == 3
    trained = check_backend(manager.backend("jax"), manager=manager, model="tiny_jax")
    assert trained.steps_done == 4


@jax_only
@pytest.mark.parametrize("mistake, says", [
    ("one_array", "must return a tuple (mu, logvar)"),
    ("channels_first", "(B, H, W, C)"),
    ("nan_recon", "must be finite per-image NLL"),
    ("python_if", "does not trace under jax.jit"),
    ("no_gradient", "has no gradient"),
    ("unseeded", "not deterministic"),
])
def test_jax_model_mistakes_fail_with_what_to_change(mistake, says):
    with pytest.raises(AssertionError) as info:
        check_model(_tiny_jax_spec(mistake), "jax")
    assert says in str(info.value), str(info.value)
