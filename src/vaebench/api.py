"""The Python API: what the CLI does, callable from a notebook.

    import vaebench
    result = vaebench.run_grid(models=["beta_vae"], betas=[1, 4, 8], seeds=[0, 1], steps=1500)
    table = vaebench.leaderboard(metric="mig", by=["model", "beta"])   # pyarrow.Table
    df = table.to_pandas()
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
) -> list[Any]:
    """The RunSpecs of a grid (the product of every list), without running anything."""
    from vaebench.harness.plan import plan_grid as _plan
    from vaebench.plugins.manager import get_manager

    axes = {
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
    **grid: Any,
) -> Any:
    """Plan and run a grid; returns a ``GridResult`` (``.records``: the records written,
    ``.skipped``: specs already recorded when ``resume``). ``grid`` takes the keyword
    arguments of :func:`plan_grid`."""
    from vaebench.harness.runner import run_grid as _run
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.manager import get_manager
    from vaebench.registry.store import check_writable

    specs = plan_grid(models, **grid)
    check_writable(registry)
    reporter = None
    if progress:
        from rich.console import Console

        from vaebench.harness.progress import RichReporter

        reporter = RichReporter(Console(stderr=True))
    execution = ExecutionOptions(device=device, amp=amp, compile=compile, threads=threads, eval_samples=eval_samples)
    return _run(specs, get_manager(), registry, execution, metrics, resume=resume, reporter=reporter)


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


def metric_direction(key: str) -> str:
    """``higher`` / ``lower`` / ``none`` for a metric key (``mig``, ``mig.gap.posX``) from its plugin."""
    from vaebench.plugins.manager import get_manager

    specs = get_manager().specs["metrics"]
    head = key.split(".", 1)[0]
    spec = specs.get(key) or specs.get(head)
    return spec.direction if spec is not None else "higher"
