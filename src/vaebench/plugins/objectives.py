"""The β-VAE family's objectives, written once for every backend.

Reductions (they decide what β means): the reconstruction term is the negative
log-likelihood *summed over pixels* (Bernoulli: binary cross-entropy with
logits), the KL term is KL(q(z|x) || N(0, I)) *summed over latent dimensions*;
both are then *averaged over the batch*. So β = 1 is the ELBO, and β, γ and the
capacity C are in nats per image.

The functions take and return any array type with ``+``, ``*`` and ``abs``
(torch tensors, jax arrays, floats), so the torch and JAX backends share them;
:func:`dip_regulariser` also uses ``.diagonal()`` and ``.sum()`` (numpy, torch and
jax arrays all have them). The schedules (:func:`capacity_at`, :func:`beta_at`) take
the step as a Python int (torch: they return Python floats) or as an array scalar
(JAX: a traced ``int32`` inside the jitted training step; they return an array
scalar): the hyperparameters are static, only the step varies, and the one
non-arithmetic operation, ``min``, dispatches on the step's type (:func:`_min1`).

The model zoo's losses (same reductions; each term in nats per image):

- ``cvae`` (Sohn et al. 2015): recon + β(step)·KL, with encoder and decoder
  conditioned on a one-hot label; β defaults to 1 (the conditional ELBO).
- ``beta_tcvae`` (Chen et al. 2018, arXiv:1802.04942): :func:`tcvae_loss`,
  recon + α·MI + β(step)·TC + γ·dim-wise KL with α = γ = 1, the three terms
  estimated by minibatch weighted sampling (the torch model's
  ``mws_log_densities``).
- ``factor_vae`` (Kim & Mnih 2018, arXiv:1802.05983): :func:`factor_vae_loss`,
  recon + KL + γ·TC, TC by the density-ratio trick with a discriminator.
- ``dip_vae`` (Kumar et al. 2018, arXiv:1711.00848): recon + KL +
  :func:`dip_regulariser` of Cov[μ(x)] (type i) or Cov[μ(x)] + E[diag σ²(x)] (type ii).
- ``vq_vae`` (van den Oord et al. 2017, arXiv:1711.00937): :func:`vq_vae_loss`,
  recon + ‖sg[z_e] − e‖² + β_commit·‖z_e − sg[e]‖² (the codebook term is dropped
  when the codebook is learned by exponential moving averages).
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def _min1(value: Any) -> Any:
    """``min(1, value)`` for a Python number or an array scalar (numpy, jax, traced or not)."""
    if isinstance(value, (int, float)):
        return min(1.0, value)
    namespace = getattr(value, "__array_namespace__", None)
    if namespace is None:  # a torch tensor
        return value.clamp(max=1.0)
    return namespace().minimum(value, 1.0)


def capacity_at(step: Any, c_max: float, ramp_steps: int) -> Any:
    """Burgess et al. 2018 capacity schedule: C raised linearly from 0 to ``c_max``
    over ``ramp_steps`` optimisation steps, then held (nats). ``step``: a Python int
    (returns a float) or an array scalar (returns an array scalar; traceable)."""
    if ramp_steps <= 0:
        return float(c_max)
    return float(c_max) * _min1(step / ramp_steps)


#: The β schedules :func:`beta_at` knows. ``constant`` is the default.
BETA_SCHEDULES = ("constant", "linear", "cyclical")

#: Fu et al. 2019 (Cyclical Annealing Schedule, arXiv:1903.10145): the proportion R
#: of each cycle spent raising β; the rest of the cycle holds β.
CYCLICAL_RAMP = 0.5

#: Cycles of the cyclical schedule when ``beta_cycles`` is not given (Fu et al.: M = 4).
DEFAULT_BETA_CYCLES = 4


#: What a model reading β passes to its objective when β is scheduled: β, the schedule
#: and the run length (:func:`beta_at` reads them).
BETA_HYPERPARAMETERS = ("beta", "beta_schedule", "beta_start", "beta_warmup_steps", "beta_cycles", "steps")


def spec_values(spec: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``{name: spec.name}`` for the RunSpec fields an objective reads."""
    return {n: getattr(spec, n) for n in names}


def beta_hyperparameters(spec: Any) -> dict[str, Any]:
    """A β-reading model's objective hyperparameters, one rule for every backend: without a
    schedule only β (a model's hyperparameters key JAX's compiled step, and runs that differ
    only in their length share one compilation); with one, :data:`BETA_HYPERPARAMETERS`."""
    if getattr(spec, "beta_schedule", None) in (None, "constant"):
        return {"beta": spec.beta}
    return {n: getattr(spec, n, None) for n in BETA_HYPERPARAMETERS}


def beta_at(step: Any, hp: dict[str, Any]) -> Any:
    """The β weight at optimisation ``step`` (1-based, like the training loop): a
    float for a Python int step, an array scalar for an array step (traceable by
    ``jax.jit``: only ``step`` may be traced, ``hp`` is static).

    ``hp`` holds ``beta`` (the target β) and optionally ``beta_schedule``:

    - ``None`` / ``constant``: β at every step.
    - ``linear``: β_start + (β − β_start)·min(1, step / ``beta_warmup_steps``), then
      held at β ("anneal β from 1 to 4 over 10 epochs": β_start = 1, β = 4,
      warm-up = 10 epochs of steps); the same ramp as :func:`capacity_at`.
      A warm-up of 0 steps is constant β.
    - ``cyclical`` (Fu et al. 2019): the run's ``steps`` split into ``beta_cycles``
      equal cycles; within a cycle, with τ ∈ [0, 1) the position in it
      (τ = ((step − 1) mod T) / T, T = steps / cycles), β rises linearly from
      β_start to β while τ < R = 0.5 and is held at β for the rest of the cycle.

    ``beta_start`` defaults to 0.
    """
    beta = float(hp["beta"])
    schedule = hp.get("beta_schedule") or "constant"
    if schedule == "constant":
        return beta
    start = float(hp.get("beta_start") or 0.0)
    if schedule == "linear":
        ramp = hp.get("beta_warmup_steps")
        ramp = int(hp.get("steps") or 0) if ramp is None else int(ramp)
        if ramp <= 0:
            return beta
        return start + (beta - start) * _min1(step / ramp)
    if schedule == "cyclical":
        cycles = int(hp.get("beta_cycles") or DEFAULT_BETA_CYCLES)
        total = int(hp.get("steps") or 0)
        if total <= 0 or cycles <= 0:
            return beta
        period = total / cycles
        tau = ((step - 1) % period) / period
        return start + (beta - start) * _min1(tau / CYCLICAL_RAMP)
    raise ValueError(f"unknown beta schedule {schedule!r} (use {', '.join(BETA_SCHEDULES)})")


def scheduled_beta(spec: Any, step: Any, default: float | None = None) -> Any:
    """β at optimisation ``step`` (1-based) of the run ``spec`` (a ``RunSpec``), under the
    run's β schedule (``--beta-schedule``, ``--beta-start``, ...): :func:`beta_at` of
    :func:`beta_hyperparameters`, the rule the built-in models apply; ``default`` is the
    target β of a run without one (as in ``spec.hyperparameter("beta", default)``). A Python
    float for an int ``step``; an array scalar for an array step (traceable by ``jax.jit``).
    Public as ``vaebench.plugin.scheduled_beta``: a plugin model declaring the plain name
    ``"beta"`` reads β with it in ``loss_terms``. A one-line ``ValueError`` when the run has
    no β and no ``default`` is given."""
    hp = beta_hyperparameters(spec)
    if hp["beta"] is None:
        if default is None:
            raise ValueError(f"model {getattr(spec, 'model', '?')!r}: β is unset; give it a default "
                             "(ModelSpec(defaults={'beta': 1.0}) or scheduled_beta(spec, step, default=1.0))")
        hp = {**hp, "beta": default}
    return beta_at(step, hp)


def tcvae_loss(recon: T, mi: T, tc: T, dwkl: T, beta: float, alpha: float = 1.0, gamma: float = 1.0) -> T:
    """β-TCVAE (Chen et al. 2018): recon + α·MI + β·TC + γ·dim-wise KL (α = γ = 1 here)."""
    return recon + alpha * mi + beta * tc + gamma * dwkl


def factor_vae_loss(recon: T, kl: T, tc: T, gamma: float) -> T:
    """FactorVAE (Kim & Mnih 2018): recon + KL + γ·TC, TC = E[log D(z) / (1 − D(z))]."""
    return recon + kl + gamma * tc


def dip_regulariser(cov: T, lambda_od: float, lambda_d: float, extra_diagonal: Any = None) -> T:
    """DIP-VAE regulariser (Kumar et al. 2018, eq. 6/7; disentanglement_lib's
    ``regularize_diag_off_diag_dip``): λ_od·Σ_{i≠j} C_ij² + λ_d·Σ_i (C_ii − 1)².

    ``cov`` ``(D, D)`` is Cov_x[μ(x)]; ``extra_diagonal`` ``(D,)`` is added to its
    diagonal (type ii: E_x[σ²(x)], so C = Cov_q(z)[z]; the off-diagonal part is
    unchanged because the added matrix is diagonal).
    """
    diag = cov.diagonal()
    off_diagonal = (cov * cov).sum() - (diag * diag).sum()
    if extra_diagonal is not None:
        diag = diag + extra_diagonal
    return lambda_od * off_diagonal + lambda_d * ((diag - 1.0) * (diag - 1.0)).sum()


#: VQ-VAE (both backends): steps over which the code-usage fraction (and the collapse
#: note) is measured; collapse = fewer than this fraction of the codes used in that window;
#: the EMA codebook's decay and Laplace smoothing (van den Oord et al. 2017, appendix A.1).
VQ_USAGE_WINDOW = 50
VQ_COLLAPSE_FRACTION = 0.10
VQ_EMA_DECAY = 0.99
VQ_EMA_EPSILON = 1e-5


def cvae_condition(spec: Any, dataset: Any) -> tuple[int, int, int]:
    """cvae's label (both backends): ``(factor column, number of labels, number of factors)``
    of ``spec.condition`` (default the dataset's first factor); a one-line ``ValueError``
    for a dataset without factors or a condition that is not one of them."""
    if dataset is None:
        raise ValueError("cvae needs the dataset to be built (factory(spec, image_shape, dataset=...))")
    names = tuple(dataset.factor_names)
    if not names:
        raise ValueError(f"cvae needs a dataset with factors; {spec.dataset!r} has none")
    name = spec.condition or names[0]
    if name not in names:
        raise ValueError(f"condition {name!r} is not a factor of {spec.dataset} (factors: {', '.join(names)})")
    index = names.index(name)
    return index, int(dataset.factor_sizes[index]), len(names)


def vq_vae_loss(recon: T, codebook: T, commitment: T, beta: float) -> T:
    """VQ-VAE (van den Oord et al. 2017, eq. 3): recon + ‖sg[z_e] − e‖² + β·‖z_e − sg[e]‖²
    (squared distances summed over slots and code dimensions, mean over the batch;
    ``codebook`` is 0 when the codebook is learned by EMA)."""
    return recon + codebook + beta * commitment


def objective(model: str, recon: T, kl: T, hp: dict[str, Any], step: Any) -> tuple[T, Any]:
    """Total loss for ``model`` from batch-mean ``recon`` and ``kl`` (nats per image).

    Returns ``(loss, capacity)``; ``capacity`` is the current C for capacity
    models and ``None`` otherwise.

    - ``vae``: recon + KL (the negative ELBO).
    - ``beta_vae`` (Higgins et al. 2017): recon + β·KL.
    - ``beta_vae_capacity`` (Burgess et al. 2018, arXiv:1804.03599):
      recon + γ·|KL − C(step)|.
    - ``cvae`` (Sohn et al. 2015): recon + β(step)·KL, conditioned on a label.

    β follows ``hp``'s schedule (:func:`beta_at`); without one it is constant.
    ``step`` is a Python int or an array scalar (traced under ``jax.jit``).
    """
    kind = hp.get("objective", model)
    if kind == "vae":
        return recon + kl, None
    if kind in ("beta_vae", "cvae"):
        return recon + beta_at(step, hp) * kl, None
    if kind == "beta_vae_capacity":
        c = capacity_at(step, hp["capacity"], hp["capacity_steps"])
        return recon + hp["gamma"] * abs(kl - c), c
    raise ValueError(f"no objective named {kind!r}")
