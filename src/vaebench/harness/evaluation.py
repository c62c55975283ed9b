"""Scoring a trained model: the held-out set every run is scored on, the metrics a dataset
supports, and the metrics run over one encoding of that set.

A metric that raises is noted in ``metric_params`` and in the record's ``error`` column
(``metric X failed: ...``: the console's summary line and ``vaebench show`` say it) and the
run stays ``ok`` (it trained); one that raises ``MetricUnavailable`` (weights not installed)
is noted as unavailable, with its reason.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from vaebench.harness.messages import debug_traceback, one_line
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


def metric_values(name: str, result: Any) -> tuple[MetricResult, list[str]]:
    """What metric ``name`` returned, as a :class:`MetricResult` whose keys are all its own,
    plus the notes on what was refused or suspicious.

    A :class:`MetricResult`, a mapping of key -> float, or a bare number (stored as
    ``{name: value}``). Keys must be ``name`` or ``name.<sub>``: any other key is refused
    with a note (it would leave the metric's own column empty or overwrite another
    metric's value). A NaN or infinite value is kept and noted. A value that is not a
    number raises ``TypeError``.
    """
    if isinstance(result, MetricResult):
        pass
    elif isinstance(result, (int, float, np.number)) and not isinstance(result, bool):
        result = MetricResult({name: result})
    elif isinstance(result, Mapping):
        result = MetricResult(dict(result))
    else:
        raise TypeError(f"returned {type(result).__name__}; a metric returns a MetricResult, "
                        f"a dict of key -> float or a float")
    values: dict[str, float] = {}
    refused: list[str] = []
    for key, value in result.values.items():
        if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
            raise TypeError(f"value of {key!r} is {type(value).__name__}, not a number")
        if key == name or str(key).startswith(name + "."):
            values[key] = float(value)
        else:
            refused.append(str(key))
    notes: list[str] = []
    if refused:
        notes.append(f"metric {name} keys refused: {', '.join(refused)} (keys must be {name!r} or '{name}.<sub>')")
    nonfinite = [k for k, v in values.items() if not math.isfinite(v)]
    if nonfinite:
        notes.append(f"metric {name} returned non-finite values: {', '.join(nonfinite)}")
    return MetricResult(values, result.params), notes


def score(ctx: EvaluationContext, metric_specs: Sequence[MetricSpec]) -> tuple[dict[str, float], dict[str, Any]]:
    """Run each metric on ``ctx``: ``(values by key, params by metric name)``.

    A metric that raises is recorded as ``params[name] = {"error": one line}``, one
    that raises ``MetricUnavailable`` as ``{"unavailable": its one-line reason}``;
    the others still run. What :func:`metric_values` refused or found non-finite is
    ``params[name]["notes"]`` (a list of one-line notes). :func:`score_notes` words
    both for the record's ``error`` column.
    """
    values: dict[str, float] = {}
    params: dict[str, Any] = {}
    for m in metric_specs:
        try:
            result, notes = metric_values(m.name, m.function()(ctx))
            values.update(result.values)
            params[m.name] = dict(result.params, notes=notes) if notes else result.params
        except MetricUnavailable as exc:
            params[m.name] = {"unavailable": str(exc).strip().splitlines()[0] if str(exc).strip() else m.name}
        except Exception as exc:  # noqa: BLE001 - one broken metric must not lose the run
            debug_traceback(f"metric {m.name} failed")
            params[m.name] = {"error": one_line(exc)}
    return values, params


def score_notes(params: Mapping[str, Any]) -> list[str]:
    """The one-line notes of :func:`score`'s ``params``: ``metric X failed: <error>`` for a
    metric that raised, then each metric's own notes (refused keys, non-finite values)."""
    notes: list[str] = []
    for name, p in params.items():
        if not isinstance(p, Mapping):
            continue
        if "error" in p:
            notes.append(f"metric {name} failed: {p['error']}")
        notes += [str(n) for n in p.get("notes") or () if isinstance(p.get("notes"), list)]
    return notes


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
    execution.notes.extend(n for n in score_notes(params) if n not in execution.notes)
    params["_eval"] = {"n": int(len(images)), "eval_seed": EVAL_SEED}
    return values, params, kl_per_dim(means, logvars)
