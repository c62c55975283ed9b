"""The hooks: what this plugin adds to vaebench. Heavy code is named by import path and
imported only when used, so ``vaebench plugins`` stays cheap."""

from vaebench.plugin import DatasetSpec, Hyperparameter, MetricSpec, ModelSpec, hookimpl


@hookimpl
def vaebench_register_models(register):
    register(ModelSpec(
        name="plugin_example_vae",
        description="β-VAE with a Gaussian decoder of fixed σ (recon in nats per image).",
        backends={"torch": "vaebench_plugin_example.model:build"},
        hyperparameters=("beta", Hyperparameter("sigma", float, 0.1, minimum=0.0, inclusive=False,
                                                help="decoder standard deviation σ (pixels in [0, 1])")),
        defaults={"beta": 1.0},
        likelihood="gaussian",  # its reconstruction is ranked only against other Gaussian models'
    ))


@hookimpl
def vaebench_register_metrics(register):
    register(MetricSpec(
        name="plugin_example_correlation",
        description="Mean |Pearson r| between the posterior means' dimensions.",
        compute="vaebench_plugin_example.metric:compute",
        direction="lower",
        needs=frozenset({"latents"}),
    ))


@hookimpl
def vaebench_register_datasets(register):
    register(DatasetSpec(
        name="plugin_example_squares",
        description="A 4x4 square on a 16x16 canvas; factors x and y (13 positions each).",
        load="vaebench_plugin_example.dataset:load",
        has_sampler=True,
        num_factors=2,
    ))
