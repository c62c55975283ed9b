"""The plugin's contract, checked by vaebench's conformance kit (``vaebench.testing``)."""

from vaebench.testing import check_dataset, check_metric, check_model, plugin_manager

import vaebench_plugin_example.plugin

MANAGER = plugin_manager(vaebench_plugin_example.plugin)


def test_model():
    check_model(MANAGER.model("plugin_example_vae"), manager=MANAGER, dataset="plugin_example_squares")


def test_model_reads_its_own_hyperparameter():
    model = check_model(MANAGER.model("plugin_example_vae"), manager=MANAGER, dataset="plugin_example_squares",
                        hyperparameters={"sigma": 0.5})
    assert model.sigma == 0.5


def test_metric():
    check_metric(MANAGER.metric("plugin_example_correlation"))


def test_dataset():
    check_dataset(MANAGER.dataset("plugin_example_squares"))
