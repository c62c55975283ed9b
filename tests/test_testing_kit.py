"""``vaebench.testing``, the conformance kit plugin authors call: the built-ins pass it,
and each ordinary mistake of an author fails it with a message that says what to change.

Cost: about 15 s on one CPU core (every built-in torch model built twice on 4 images with
the mlp networks; three cheap metrics on 300 observations; two datasets; 4 torch steps twice).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vaebench import hookimpl
from vaebench.plugin import DatasetSpec, MetricResult, MetricSpec, ModelSpec
from vaebench.plugins.datasets.digits import SklearnDigits
from vaebench.testing import (
    check_backend,
    check_dataset,
    check_metric,
    check_model,
    plugin_manager,
    tiny_context,
)

MANAGER = plugin_manager()
TORCH_MODELS = sorted(n for n, s in MANAGER.specs["models"].items() if "torch" in s.backends)


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_every_builtin_torch_model_passes_the_kit(name):
    check_model(MANAGER.model(name), manager=MANAGER, architecture="mlp", batch_size=4)


@pytest.mark.parametrize("name", ["kl", "mig", "sap"])
def test_cheap_builtin_metrics_pass_the_kit(name):
    result = check_metric(MANAGER.metric(name))
    assert name in result.values


@pytest.mark.parametrize("name", ["dsprites", "digits"])
def test_builtin_datasets_pass_the_kit(name):
    data = check_dataset(MANAGER.dataset(name))
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
