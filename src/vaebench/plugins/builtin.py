"""The built-in plugin: registered through vaebench's own ``vaebench`` entry point,
exactly as a third-party package registers its own (see pyproject.toml)."""

from __future__ import annotations

from vaebench import hookimpl
from vaebench.plugins.specs import DatasetSpec, MetricSpec, ModelSpec

_TORCH = "vaebench.plugins.backends.torch.models"


@hookimpl
def vaebench_register_models(register):
    register(ModelSpec(
        name="vae",
        description="VAE (Kingma & Welling 2014): Bernoulli likelihood, recon + KL (the negative ELBO).",
        backends={"torch": f"{_TORCH}:build_vae"},
    ))
    register(ModelSpec(
        name="beta_vae",
        description="β-VAE (Higgins et al. 2017): recon + β·KL.",
        backends={"torch": f"{_TORCH}:build_beta_vae"},
        hyperparameters=("beta",),
        defaults={"beta": 4.0},
    ))
    register(ModelSpec(
        name="beta_vae_capacity",
        description="β-VAE with controlled capacity (Burgess et al. 2018): recon + γ·|KL − C|, C ramped 0→C_max.",
        backends={"torch": f"{_TORCH}:build_beta_vae_capacity"},
        hyperparameters=("capacity", "gamma", "capacity_steps"),
        defaults={"capacity": 25.0, "gamma": 1000.0, "capacity_steps": None},
    ))


@hookimpl
def vaebench_register_metrics(register):
    posterior = "vaebench.plugins.metrics.posterior"
    register(MetricSpec(
        name="reconstruction",
        description="Mean reconstruction NLL per image (nats), decoded from the posterior mean.",
        compute=f"{posterior}:reconstruction",
        direction="lower",
    ))
    register(MetricSpec(
        name="kl",
        description="KL(q(z|x) || p(z)) summed over dimensions, mean over images (nats).",
        compute=f"{posterior}:kl",
        direction="none",
    ))
    register(MetricSpec(
        name="active_dims",
        description="Latent dimensions with Var_x(E[z_d|x]) > 0.01 (Burda et al. 2016).",
        compute=f"{posterior}:active_dims",
        direction="none",
    ))
    register(MetricSpec(
        name="mig",
        description="Mutual Information Gap (Chen et al. 2018), disentanglement_lib estimator.",
        compute="vaebench.plugins.metrics.mig:compute",
        direction="higher",
        needs=frozenset({"encodings", "factors"}),
        reference="Chen et al. 2018, arXiv:1802.04942",
    ))


@hookimpl
def vaebench_register_datasets(register):
    register(DatasetSpec(
        name="dsprites",
        description="dSprites (Matthey et al. 2017): 64×64 binary sprites, 5 factors; rendered locally or read from the .npz.",
        load="vaebench.plugins.datasets.dsprites:load_dsprites",
        has_sampler=True,
    ))
