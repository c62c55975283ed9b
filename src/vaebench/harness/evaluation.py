"""Scoring a trained model: the held-out set every run is scored on, the metrics a dataset
supports, and the metrics run over one encoding of that set.

A metric that raises is noted in ``metric_params`` and the run stays ``ok``; one that
raises ``MetricUnavailable`` (weights not installed) is noted as unavailable, with its reason.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vaebench.harness.messages import one_line
from vaebench.plugins.contract import capability
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.posterior import kl_per_dim
from vaebench.plugins.metrics.collapse import posterior_collapse_note
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.specs import DatasetSpec, MetricResult, MetricSpec, MetricUnavailable

#: The held-out evaluation set is the same for every run (fixed seed), so runs
#: differ only by what they learned, not by which observations they were scored on.
EVAL_SEED = 20_180_402


def metrics_for(manager: PluginManager, dataset: DatasetSpec, names: Sequence[str] | None) -> list[MetricSpec]:
    """The metrics to compute: those named (each must suit the dataset); ``["all"]``: every
    metric the dataset supports; ``None``: the default ones (``MetricSpec.default``) it supports.

    A metric suits a dataset that has what it ``needs`` (factors, a sampler) and at least
    its ``min_factors`` factors, where the dataset declares ``num_factors``."""
    def enough_factors(m: MetricSpec) -> bool:
        return dataset.num_factors is None or ("factors" not in m.needs) or dataset.num_factors >= m.min_factors

    def supported(m: MetricSpec) -> bool:
        return (
            (("factors" not in m.needs) or dataset.has_factors)
            and (("sampler" not in m.needs) or dataset.has_sampler)
            and enough_factors(m)
        )

    if names is None:
        return [m for m in manager.specs["metrics"].values() if m.default and supported(m)]
    if list(names) == ["all"]:
        return [m for m in manager.specs["metrics"].values() if supported(m)]
    chosen = [manager.metric(n) for n in names]
    for m in chosen:
        if not enough_factors(m):
            raise ValueError(
                f"metric {m.name!r} needs at least {m.min_factors} factors; dataset {dataset.name!r} "
                f"has {dataset.num_factors}"
            )
        if not supported(m):
            raise ValueError(f"metric {m.name!r} needs {', '.join(sorted(m.needs))}, which dataset {dataset.name!r} lacks")
    return chosen


def score(ctx: EvaluationContext, metric_specs: Sequence[MetricSpec]) -> tuple[dict[str, float], dict[str, Any]]:
    """Run each metric on ``ctx``: ``(values by key, params by metric name)``.

    A metric that raises is recorded as ``params[name] = {"error": one line}``, one
    that raises ``MetricUnavailable`` as ``{"unavailable": its one-line reason}``;
    the others still run.
    """
    values: dict[str, float] = {}
    params: dict[str, Any] = {}
    for m in metric_specs:
        try:
            result = m.function()(ctx)
            if not isinstance(result, MetricResult):
                result = MetricResult(dict(result))
            values.update({k: float(v) for k, v in result.values.items()})
            params[m.name] = result.params
        except MetricUnavailable as exc:
            params[m.name] = {"unavailable": str(exc).strip().splitlines()[0] if str(exc).strip() else m.name}
        except Exception as exc:  # noqa: BLE001 - one broken metric must not lose the run
            params[m.name] = {"error": one_line(exc)}
    return values, params


def held_out(dataset: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` held-out observations ``(images (n, H, W, C), factors (n, K))``: one
    draw seeded with :data:`EVAL_SEED`, so a smaller ``n`` gives a prefix of a larger one —
    observation ``i`` is the same in the evaluation set, the figures and ``traverse --base i``."""
    return dataset.sample(n, np.random.default_rng(EVAL_SEED))


def evaluate(
    trained: Any, spec: RunSpec, dataset: Any, metric_specs: Sequence[MetricSpec], execution: ExecutionOptions,
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, float], dict[str, Any], np.ndarray]:
    """Encode a held-out set once and run every metric on it.

    Returns ``(metric values, metric params by metric name, KL per dimension (D,))``.
    """
    images, factors = held_out(dataset, execution.eval_samples)
    needs = set().union(*(m.needs for m in metric_specs)) if metric_specs else set()
    want_recons = "reconstructions" in needs
    # Conditional models (cvae) are scored given the true labels of the held-out images.
    net = capability(trained, "model")
    conditional = capability(net, "needs_factors")
    means, logvars, errors, *recons = trained.evaluate(
        images, reconstructions=want_recons, **({"factors": factors} if conditional else {})
    )
    if capability(net, "gaussian_posterior"):
        # One home for the collapse flag of every backend: the note reaches the record's
        # `error` column and the run's summary line (the metric `posterior_collapsed` is opt-out).
        note = posterior_collapse_note(means, logvars)
        if note and note not in execution.notes:
            execution.notes.append(note)
    ctx = EvaluationContext(
        means=means, logvars=logvars, recon_errors=errors, factors=factors,
        factor_names=tuple(dataset.factor_names), factor_sizes=tuple(dataset.factor_sizes),
        dataset=dataset, encode=trained.encode, seed=spec.seed, options=options or {},
        images=images if want_recons else None, reconstructions=recons[0] if want_recons else None,
        decode=trained.decode if "generator" in needs else None,
    )
    values, params = score(ctx, metric_specs)
    params["_eval"] = {"n": int(len(images)), "eval_seed": EVAL_SEED}
    return values, params, kl_per_dim(means, logvars)
