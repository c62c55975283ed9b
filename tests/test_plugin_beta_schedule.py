"""A third-party model declaring the plain name ``"beta"`` is given the β schedule's axes
(``--beta-schedule``, ``--beta-start``, ...) and applies them through the one public rule,
``vaebench.plugin.scheduled_beta`` (the built-ins' ``objectives.beta_at``):

- the docs' plugin model (docs/plugins.md), trained under ``beta_schedule = constant,
  linear``, gives two runs whose final loss and KL differ (they were identical: the model
  read one constant ``spec.beta``);
- ``scheduled_beta`` is β at a step by the built-ins' rule (a built-in model's recorded β);
- the kit (``check_model``) fails a model that declares ``"beta"`` but ignores the
  schedule, saying to use ``scheduled_beta``; a model that declares its own β (no schedule
  offered) passes.

Cost: about 5 s (two 20-step runs of a small MLP on CPU; the kit on 4 images, a few times).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vaebench import api
from vaebench.plugin import Hyperparameter, ModelSpec, scheduled_beta
from vaebench.testing import SpecsPlugin, check_model, plugin_manager

from test_docs_examples import DOC_BLOCKS, run_block

SMALL = dict(steps=20, batch_sizes=16, eval_samples=512, device="cpu", threads=1, architectures="mlp",
             strategy="sequential", metrics=["kl"])


def docs_model():
    return run_block(next(b for b in DOC_BLOCKS if "gauss_vae" in b), "docs_model_for_schedule")


def test_a_plugin_model_trains_under_the_beta_schedule(tmp_path):
    manager = plugin_manager(docs_model())
    result = api.run_grid("gauss_vae", beta=4, beta_schedule=["constant", "linear"], beta_start=0,
                          registry=str(tmp_path), manager=manager, **SMALL)
    constant, linear = result.records
    assert [r["status"] for r in result.records] == ["ok", "ok"] and constant["run_id"] != linear["run_id"]
    assert constant["final_loss"] != linear["final_loss"]
    assert constant["metrics"]["kl"] != linear["metrics"]["kl"]


def test_scheduled_beta_is_the_builtin_rule():
    manager = plugin_manager()
    (spec,) = api.plan_grid("beta_vae", beta=4, beta_schedule="linear", beta_start=1, beta_warmup_steps=10,
                            steps=20, architectures="mlp", manager=manager)
    model = manager.model("beta_vae").build("torch", spec, (64, 64, 1))
    x = torch.rand(2, 1, 64, 64)
    for step in (1, 5, 10, 15):
        assert scheduled_beta(spec, step) == pytest.approx(model.loss_terms(x, step)["signals"]["beta"])
    assert scheduled_beta(spec, 5) == pytest.approx(1 + 3 * 5 / 10)
    (plain,) = api.plan_grid("beta_vae", beta=4, manager=manager)
    assert scheduled_beta(plain, 7) == 4.0


def constant_beta_model() -> ModelSpec:
    """The docs' model reading β once (``spec.beta``), as the usability run's author wrote it."""
    module = docs_model()
    module.scheduled_beta = lambda spec, step, default=None: float(spec.beta)
    return dataclasses.replace(plugin_manager(module).model("gauss_vae"), name="fixed_beta_vae")


def test_the_kit_fails_a_model_that_ignores_the_beta_schedule():
    docs = plugin_manager(docs_model())
    check_model(docs.model("gauss_vae"), manager=docs)  # scheduled_beta: passes

    fixed = constant_beta_model()
    with pytest.raises(AssertionError) as info:
        check_model(fixed, manager=plugin_manager(SpecsPlugin(models=[fixed])))
    message = str(info.value)
    assert "declares 'beta'" in message and "vaebench.plugin.scheduled_beta(spec, step)" in message, message
    assert "\n" not in message

    # the same model declaring its own β is offered no schedule, and passes
    own = dataclasses.replace(fixed, name="own_beta_vae", hyperparameters=(
        Hyperparameter("beta", float, 1.0, minimum=0.0), *fixed.hyperparameters[1:]))
    check_model(own, manager=plugin_manager(SpecsPlugin(models=[own])))
