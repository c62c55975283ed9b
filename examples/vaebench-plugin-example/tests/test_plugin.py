"""The example plugin's contract, checked by vaebench's conformance kit (``vaebench.testing``)."""

import vaebench_plugin_example
from vaebench.testing import check_metric, check_model, plugin_manager

MANAGER = plugin_manager(vaebench_plugin_example)


def test_model():
    check_model(MANAGER.model("mse_beta_vae"), manager=MANAGER)


def test_metric():
    check_metric(MANAGER.metric("latent_correlation"))
