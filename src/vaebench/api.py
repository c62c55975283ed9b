"""The Python API: what the CLI does, callable from a notebook.

    import vaebench
    result = vaebench.run_grid(models=["beta_vae"], betas=[1, 4, 8], seeds=[0, 1], steps=1500)
    table = vaebench.leaderboard(metric="mig", by=["model", "beta"])   # pyarrow.Table
    df = table.to_pandas()
    scores = vaebench.evaluate_latents(latents, factors, metrics=["mig", "sap"])  # any framework's codes
    vaebench.report("model=beta_vae", out="report")               # report/index.html, report/report.md
"""

from __future__ import annotations

from typing import Any, Sequence

DEFAULT_REGISTRY = "vaebench-results"


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def plan_grid(
    models: str | Sequence[str] = "beta_vae",
    *,
    betas: Sequence[float] | float | None = None,
    capacities: Sequence[float] | float | None = None,
    gammas: Sequence[float] | float | None = None,
    capacity_steps: Sequence[int] | int | None = None,
    seeds: Sequence[int] | int | None = None,
    latent_dims: Sequence[int] | int | None = None,
    steps: Sequence[int] | int | None = None,
    batch_sizes: Sequence[int] | int | None = None,
    lrs: Sequence[float] | float | None = None,
    datasets: str | Sequence[str] = "dsprites",
    backends: str | Sequence[str] = "torch",
    architectures: str | Sequence[str] = "conv",
    dataset_path: str | None = None,
    **more_axes: Any,
) -> list[Any]:
    """The RunSpecs of a grid (the product of every list), without running anything.

    ``more_axes`` takes any other grid axis by its RunSpec field name, a value or a
    list: ``dip_type="ii"``, ``lambda_od=[1, 10]``, ``beta_schedule="linear"``.
    """
    from vaebench.harness.plan import AXES, PlanError
    from vaebench.harness.plan import plan_grid as _plan
    from vaebench.plugins.manager import get_manager

    unknown = sorted(set(more_axes) - set(AXES))
    if unknown:
        raise PlanError(f"unknown grid axis {unknown[0]!r} (known: {', '.join(sorted(AXES))})")
    axes = {k: _as_list(v) for k, v in more_axes.items()}
    axes |= {
        "beta": _as_list(betas), "capacity": _as_list(capacities), "gamma": _as_list(gammas),
        "capacity_steps": _as_list(capacity_steps), "seed": _as_list(seeds), "latent_dim": _as_list(latent_dims),
        "steps": _as_list(steps), "batch_size": _as_list(batch_sizes), "lr": _as_list(lrs),
    }
    return _plan(
        get_manager(), _as_list(models) or [], axes, datasets=_as_list(datasets) or [],
        backends=_as_list(backends) or [], architectures=_as_list(architectures) or [], dataset_path=dataset_path,
    )


def run_grid(
    models: str | Sequence[str] = "beta_vae",
    *,
    registry: str = DEFAULT_REGISTRY,
    metrics: Sequence[str] | None = None,
    resume: bool = False,
    device: str = "auto",
    amp: str = "off",
    compile: bool = False,
    threads: int | None = None,
    eval_samples: int = 10_000,
    progress: bool = False,
    strategy: str = "auto",
    metric_options: dict[str, dict[str, Any]] | None = None,
    checkpoint_every: int = 0,
    **grid: Any,
) -> Any:
    """Plan and run a grid; returns a ``GridResult`` (``.records``: the records written,
    ``.skipped``: specs already recorded when ``resume``, ``.strategy``: how they were
    trained). ``grid`` takes the keyword arguments of :func:`plan_grid`; ``strategy``:
    ``auto`` | ``sequential`` | ``processes`` | ``vectorized`` (``vaebench run --help``);
    ``metric_options`` per metric, e.g. ``{"fid_inception": {"n": 2000, "weights": "default_1.pt"}}``;
    ``checkpoint_every``: save each run's state every N steps, so a rerun picks up an
    interrupted one (``vaebench run --checkpoint-every``)."""
    from vaebench.harness.runner import check_grid
    from vaebench.harness.runner import run_grid as _run
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.manager import get_manager
    from vaebench.registry.store import check_writable

    # The checks `vaebench run` makes, before anything trains or is written (one-line ValueErrors).
    specs = plan_grid(models, **grid)
    execution = ExecutionOptions(device=device, amp=amp, compile=compile, threads=threads, eval_samples=eval_samples,
                                 checkpoint_every=checkpoint_every)
    datasets = check_grid(specs, get_manager(), metrics, metric_options)
    check_writable(registry)
    reporter = None
    if progress:
        from rich.console import Console

        from vaebench.harness.progress import RichReporter

        reporter = RichReporter(Console(stderr=True))
    return _run(specs, get_manager(), registry, execution, metrics, resume=resume, reporter=reporter,
                strategy=strategy, metric_options=metric_options, datasets=datasets)


def continue_run(
    run: str,
    steps: int,
    *,
    registry: str = DEFAULT_REGISTRY,
    metrics: Sequence[str] | None = None,
    device: str = "auto",
    amp: str = "off",
    compile: bool = False,
    threads: int | None = None,
    eval_samples: int = 10_000,
    progress: bool = False,
) -> dict[str, Any]:
    """Train recorded run ``run`` (id or unique prefix) ``steps`` more steps from its checkpoint
    and record it as a new run; returns that record (``parent_run_id`` = ``run``'s id).
    ``metrics``: default, those ``run`` was scored with. See ``vaebench continue --help``."""
    from vaebench.harness.runner import continue_run as _continue
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.manager import get_manager
    from vaebench.registry.store import check_writable, read_record

    parent = read_record(registry, run)
    execution = ExecutionOptions(device=device, amp=amp, compile=compile, threads=threads, eval_samples=eval_samples)
    check_writable(registry)
    reporter = None
    if progress:
        from rich.console import Console

        from vaebench.harness.progress import RichReporter

        reporter = RichReporter(Console(stderr=True))
    return _continue(parent, steps, get_manager(), registry, execution, metrics, reporter=reporter)


def leaderboard(
    registry: str = DEFAULT_REGISTRY,
    metric: str = "mig",
    by: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Any:
    """Runs aggregated over seeds (mean, std, n), best first, as a ``pyarrow.Table``."""
    from vaebench.registry import query

    kwargs: dict[str, Any] = {"dataset": dataset, "model": model, "descending": metric_direction(metric) != "lower"}
    if by is not None:
        kwargs["by"] = list(by)
    return query.leaderboard(registry, metric, **kwargs).table


def show(run: str, registry: str = DEFAULT_REGISTRY) -> dict[str, Any]:
    """One record as a dict (``run`` is a run id or a unique prefix of one)."""
    from vaebench.registry import store

    return store.read_record(registry, run)


def report(
    selection: str | dict[str, Any] | None = None,
    out: str = "vaebench-report",
    registry: str = DEFAULT_REGISTRY,
    targets: str | None = None,
    baseline: str | dict[str, Any] | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Write ``out/index.html``, ``out/report.md`` and ``out/figures/`` for the selected runs
    (``"model=beta_vae,beta=4"``, a dict, or None for every run); see ``vaebench report``.

    Returns what was written (paths, run counts, target verdicts, notes). Raises
    ``ValueError`` (one line) when no run is selected or a targets file is bad,
    ``registry.store.RegistryError`` when the registry cannot be read.
    """
    from vaebench.harness.report import write_report

    return write_report(registry, out, selection, targets, baseline, metric).to_dict()


def metric_direction(key: str) -> str:
    """``higher`` / ``lower`` / ``none`` for a metric key (``mig``, ``mig.gap.posX``) from its plugin."""
    from vaebench.plugins.manager import get_manager

    specs = get_manager().specs["metrics"]
    head = key.split(".", 1)[0]
    spec = specs.get(key) or specs.get(head)
    return spec.direction if spec is not None else "higher"


#: What a representation computed elsewhere provides: latent codes and their factors.
LATENT_NEEDS = frozenset({"latents", "factors"})


def evaluate_latents(
    latents: Any,
    factors: Any,
    metrics: Sequence[str] | None = None,
    *,
    factor_names: Sequence[str] | None = None,
    train_fraction: float | None = None,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score representations computed anywhere (any framework) against known factors.

    Args:
        latents: ``(N, D)`` floats, e.g. encoder means.
        factors: ``(N, K)`` integer factor indices of the same observations.
        metrics: metric names whose needs are only latents + factors (default: every
            such metric marked default, e.g. mig, sap, modularity, explicitness, irs).
        factor_names: ``K`` names (default ``factor0..``).
        train_fraction: for metrics with a train/test split, the first fraction of
            rows trains (default: each metric's reference 2/3).
        seed: seed for any randomness in the estimators.
        options: per-metric estimator options, e.g. ``{"mig": {"bins": 30}}``.

    Returns ``{"metrics": {key: value}, "params": {metric: estimator params},
    "errors": {metric: one-line message}}``. Raises ``ValueError`` (one line) for
    inputs no metric can use: not 2-D, different N, NaN/inf, non-integer factors.
    """
    import numpy as np

    from vaebench.harness.runner import score
    from vaebench.plugins.manager import get_manager
    from vaebench.plugins.metrics.context import EvaluationContext

    z = np.asarray(latents)
    f = np.asarray(factors)
    if z.ndim != 2 or f.ndim != 2:
        raise ValueError(f"latents must be (N, D) and factors (N, K); got shapes {z.shape} and {f.shape}")
    if len(z) != len(f):
        raise ValueError(f"latents have {len(z)} rows but factors have {len(f)}; they must describe the same observations")
    if not np.issubdtype(z.dtype, np.number) or not np.all(np.isfinite(z)):
        raise ValueError("latents must be finite numbers (found NaN or inf)")
    if not np.issubdtype(f.dtype, np.number) or not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
        raise ValueError("factors must be integer indices (found non-integer values)")
    f = f.astype(np.int64)
    names = tuple(factor_names) if factor_names is not None else tuple(f"factor{k}" for k in range(f.shape[1]))
    if len(names) != f.shape[1]:
        raise ValueError(f"{len(names)} factor names given for {f.shape[1]} factor columns")
    if train_fraction is not None and not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")

    manager = get_manager()
    if metrics is None:
        specs = [m for m in manager.specs["metrics"].values() if m.default and m.needs <= LATENT_NEEDS]
    else:
        specs = [manager.metric(name) for name in metrics]
        for m in specs:
            if not m.needs <= LATENT_NEEDS:
                extra = ", ".join(sorted(m.needs - LATENT_NEEDS))
                raise ValueError(f"metric {m.name!r} needs {extra}, which latents and factors alone do not provide")
    sizes = tuple(int(v) for v in (f.max(axis=0) + 1)) if len(f) else ()
    ctx = EvaluationContext(
        means=z, logvars=np.zeros_like(z, dtype=np.float64), recon_errors=np.zeros(len(z)), factors=f,
        factor_names=names, factor_sizes=sizes, seed=seed, options=options or {}, train_fraction=train_fraction,
    )
    values, params = score(ctx, specs)
    errors = {name: p.pop("error") for name, p in params.items() if "error" in p}
    return {"metrics": values, "params": {k: v for k, v in params.items() if k not in errors}, "errors": errors}
