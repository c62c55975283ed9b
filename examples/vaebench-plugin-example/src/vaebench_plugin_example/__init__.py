"""Hook implementations: what this plugin adds to vaebench."""

from vaebench.plugin import MetricSpec, ModelSpec, hookimpl


@hookimpl
def vaebench_register_models(register):
    register(ModelSpec(
        name="mse_beta_vae",
        description="β-VAE with a unit-variance Gaussian likelihood (½·squared error) [example plugin].",
        backends={"torch": "vaebench_plugin_example.model:build"},
        hyperparameters=("beta",),
        defaults={"beta": 1.0},
        likelihood="gaussian",  # its reconstruction is never ranked against Bernoulli models'
    ))


@hookimpl
def vaebench_register_metrics(register):
    register(MetricSpec(
        name="latent_correlation",
        description="Mean |Pearson r| between the posterior means of active latent dims [example plugin].",
        compute="vaebench_plugin_example.metric:latent_correlation",
        direction="lower",
    ))
