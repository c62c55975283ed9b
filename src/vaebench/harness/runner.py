"""Train, score and record RunSpecs, one after another.

A run ends in exactly one record: ``ok`` (trained and scored), ``diverged``
(non-finite loss; the grid goes on) or ``failed`` (an exception, kept as one
line; the grid goes on). A metric that raises is noted in ``metric_params`` and
the run stays ``ok``; one that raises ``MetricUnavailable`` (weights not installed)
is noted as unavailable, with its reason.

Storage failures (a full disk, a file size limit) lose as little as possible: a
checkpoint that cannot be written is noted and what it left removed, the run keeps its
metrics (``ok``); a record that cannot be written leaves nothing behind (the run's
artifacts are removed, its periodic checkpoint kept for a later pick-up) and the grid
goes on. :func:`storage_failed` tells the CLI to exit 1 for either.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from vaebench.harness.environment import environment
from vaebench.harness.plan import INT_MAX
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.backends import get_backend, interrupt
from vaebench.plugins.contract import capability
from vaebench.plugins.backends.base import DeviceInfo, ExecutionOptions, partial_resume_point, pickup_note
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.models.diagnostics import posterior_collapse_note
from vaebench.plugins.metrics.posterior import kl_per_dim
from vaebench.plugins.specs import DatasetSpec, MetricResult, MetricSpec, MetricUnavailable
from vaebench.registry import store
from vaebench.registry.schema import DONE_STATUSES, RECORD_SCHEMA, SCHEMA_VERSION, signal_rows

#: Notes (in ``error``) of a run whose checkpoint / record could not be written.
CHECKPOINT_NOT_WRITTEN = "checkpoint not written"
RECORD_NOT_WRITTEN = "record not written"

#: The held-out evaluation set is the same for every run (fixed seed), so runs
#: differ only by what they learned, not by which observations they were scored on.
EVAL_SEED = 20_180_402


class Reporter(Protocol):
    def start_run(self, spec: RunSpec, index: int, total: int) -> None: ...
    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None: ...
    def phase(self, run_id: str, text: str) -> None: ...
    def end_run(self, record: dict[str, Any]) -> None: ...
    def skipped(self, spec: RunSpec, status: str) -> None: ...


class SilentReporter:
    def start_run(self, spec: RunSpec, index: int, total: int) -> None: ...
    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None: ...
    def phase(self, run_id: str, text: str) -> None: ...
    def end_run(self, record: dict[str, Any]) -> None: ...
    def skipped(self, spec: RunSpec, status: str) -> None: ...


@dataclass
class GridResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    #: the strategy the runs were trained with (``auto`` resolved)
    strategy: str = "sequential"


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


def check_grid(
    specs: Sequence[RunSpec],
    manager: PluginManager,
    metric_names: Sequence[str] | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    datasets: Mapping[tuple[str, str | None], Any] | None = None,
) -> dict[tuple[str, str | None], Any]:
    """The checks of a grid that need its metrics and datasets, made before anything trains
    (``api.prepare_grid`` calls it for ``vaebench run`` and ``api.run_grid``): the metrics suit each dataset
    (:func:`metrics_for`); ``metric_options`` (``{metric: {key: value}}``) name metrics of
    this run and pass each metric's own checker (``MetricSpec.options``), rather than
    dropping the metric from every run after training; each spec fits its dataset (a model
    reading ``condition`` conditions on one of the dataset's factors).

    Loads the datasets ``datasets`` (keyed by ``(name, path)``) lacks and returns them all.
    Raises a one-line ``ValueError`` (``DatasetError`` for a dataset that cannot be loaded).
    """
    selected: dict[str, MetricSpec] = {}
    for name in dict.fromkeys(s.dataset for s in specs):
        selected.update((m.name, m) for m in metrics_for(manager, manager.dataset(name), metric_names))
    for metric, given in (metric_options or {}).items():
        if metric not in selected:
            raise ValueError(f"metric options: metric {metric!r} is not among the metrics of this run "
                             f"({', '.join(sorted(selected)) or 'none'})")
        if not isinstance(given, Mapping):
            raise ValueError(f"metric options: {metric!r} must map option names to values, got {given!r}")
        try:
            selected[metric].check_options(given)
        except ValueError as exc:
            raise ValueError(f"metric options: {_one_line(exc)}") from None
    loaded = dict(datasets or {})
    for key in dict.fromkeys((s.dataset, s.dataset_path) for s in specs):
        if key not in loaded:
            loaded[key] = manager.dataset(key[0]).loader()(path=key[1])
    for spec in specs:
        if "condition" in manager.model(spec.model).hyperparameter_names:
            from vaebench.plugins.models.objectives import cvae_condition

            cvae_condition(spec, loaded[(spec.dataset, spec.dataset_path)])
    return loaded


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _one_line(exc: BaseException) -> str:
    """First line of the message; the exception type is kept unless it is an input error."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if type(exc) is ValueError and text else f"{type(exc).__name__}: {text}"


def storage_failed(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` (as a run returned it) lost its checkpoint or was not written."""
    error = record.get("error") or ""
    return CHECKPOINT_NOT_WRITTEN in error or RECORD_NOT_WRITTEN in error


def _reason(exc: BaseException) -> str:
    """One line for a storage failure: the OS's words where it is an OS error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(exc)


def base_record(spec: RunSpec, dataset: Any, device: DeviceInfo, execution: ExecutionOptions) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "model": spec.model,
        "backend": spec.backend,
        "dataset": spec.dataset,
        "dataset_variant": getattr(dataset, "variant", None),
        "dataset_digest": dataset.digest() if dataset is not None else None,
        "architecture": spec.architecture,
        "beta": spec.beta,
        "capacity": spec.capacity,
        "gamma": spec.gamma,
        "capacity_steps": spec.capacity_steps,
        "latent_dim": spec.latent_dim,
        "seed": spec.seed,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "spec_json": spec.to_json(),
        "config_id": spec.config_id,
        "device": device.device,
        "device_name": device.name,
        "threads": execution.threads,
        "environment": environment(),
    }


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
            params[m.name] = {"error": _one_line(exc)}
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


def _figures(trained: Any, dataset: Any, spec: RunSpec, kl: np.ndarray, params: dict[str, Any], out_dir: str,
             execution: ExecutionOptions) -> dict[str, str]:
    """The run's images; a failure here is noted, never a failed run."""
    from vaebench.harness.figures import write_run_figures

    try:
        images, _ = held_out(dataset, 10)
        return write_run_figures(trained, images, kl.tolist(), out_dir, params.get("mig"), tuple(dataset.factor_names),
                                 seed=spec.seed)
    except Exception as exc:  # noqa: BLE001
        execution.notes.append(f"figures not written ({_one_line(exc)})")
        return {}


def run_one(
    spec: RunSpec,
    manager: PluginManager,
    registry: str,
    execution: ExecutionOptions,
    metric_names: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    dataset: Any = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    strategy: str = "sequential",
    concurrent_runs: int = 1,
) -> dict[str, Any]:
    """Train, score and record one run; returns the record as written (every schema column).

    ``strategy`` and ``concurrent_runs`` say how the grid ran it (recorded as such)."""
    reporter = reporter or SilentReporter()
    run = PendingRun(spec, manager, execution, metric_names, dataset, strategy, concurrent_runs)
    kwargs: dict[str, Any] = {}
    if capability(run.backend, "supports_resume"):
        execution, point = _periodic_checkpoints(execution, registry, spec)
        if point is not None:
            kwargs["resume"] = point
    try:
        trained = run.backend.train(
            spec, run.dataset, execution, on_progress=lambda step, values: reporter.progress(spec.run_id, step, values),
            **kwargs,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the grid goes on
        return run.fail(registry, _one_line(exc), reporter)
    return run.finish(trained, registry, reporter, metric_options)


def _periodic_checkpoints(execution: ExecutionOptions, registry: str, spec: RunSpec) -> tuple[ExecutionOptions, Any]:
    """``execution`` writing ``spec``'s periodic checkpoints (when ``checkpoint_every``), and
    the point an interrupted run of this very spec stopped at, or ``None``. Its state is
    exact, so going on from it trains what a run without the interruption would have."""
    partial = store.partial_dir(registry, spec.run_id)
    if execution.checkpoint_every:
        execution = replace(execution, checkpoint_dir=str(partial))
    point = partial_resume_point(str(partial))
    if point is not None:
        execution.notes.append(pickup_note(point.step))
    return execution, point


def _drop_partial(record: dict[str, Any], registry: str) -> dict[str, Any]:
    """A recorded ``ok`` / ``diverged`` run no longer needs its periodic checkpoint (called
    as its record is written)."""
    if record["status"] != "failed":
        shutil.rmtree(store.partial_dir(registry, record["run_id"]), ignore_errors=True)
    return record


class PendingRun:
    """A run between its start and its record: the spec, its dataset and backend,
    and the record's columns known before training (start time, device, ...).

    Every strategy (sequential, worker processes, vectorized groups) trains its own
    way and then calls :meth:`finish` (or :meth:`fail`) for each run, so that
    scoring, artifacts and the record are written one way.
    """

    def __init__(self, spec: RunSpec, manager: PluginManager, execution: ExecutionOptions,
                 metric_names: Sequence[str] | None = None, dataset: Any = None,
                 strategy: str = "sequential", concurrent_runs: int = 1) -> None:
        self.spec = spec
        self.execution = execution
        self.backend = get_backend(spec.backend, manager)
        device = self.backend.resolve_device(execution.device)
        started = _now()
        dataset_spec = manager.dataset(spec.dataset)
        self.dataset = dataset if dataset is not None else dataset_spec.loader()(path=spec.dataset_path)
        self.metric_specs = metrics_for(manager, dataset_spec, metric_names)
        execution.notes.clear()
        self.record = base_record(spec, self.dataset, device, execution)
        self.record.update(started_at=started, strategy=strategy, concurrent_runs=concurrent_runs)

    def finish(
        self, trained: Any, registry: str, reporter: Reporter, metric_options: dict[str, dict[str, Any]] | None = None, notes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Score ``trained``, save its checkpoint and figures, write the record."""
        spec, dataset, execution, record = self.spec, self.dataset, self.execution, self.record
        try:
            record.update(
                amp=trained.amp, compiled=trained.compiled, steps_done=trained.steps_done,
                train_seconds=trained.train_seconds, final_loss=trained.final_loss, history=trained.history,
                signals=signal_rows(capability(trained, "signals")),
            )
            if trained.train_seconds > 0:
                ips = trained.steps_done * spec.batch_size / trained.train_seconds
                record["images_per_second"] = ips
                size = math.prod(dataset.factor_sizes) if dataset.factor_sizes else None
                record["seconds_per_epoch"] = size / ips if size else None
            if trained.diverged:
                record["status"] = "diverged"
                record["error"] = f"non-finite loss at step {trained.steps_done}"
            else:
                reporter.phase(spec.run_id, "evaluating")
                t0 = time.perf_counter()
                values, params, per_dim = evaluate(trained, spec, dataset, self.metric_specs, execution, metric_options)
                record["eval_seconds"] = time.perf_counter() - t0
                record.update(status="ok", metrics=values, metric_params=json.dumps(params), kl_per_dim=per_dim.tolist())
                record["artifacts"] = self._save(trained, registry, reporter, per_dim, params)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the grid goes on
            record["status"] = "failed"
            record["error"] = _one_line(exc)
        return self._write(registry, reporter, notes)

    def _save(self, trained: Any, registry: str, reporter: Reporter, per_dim: np.ndarray,
              params: dict[str, Any]) -> dict[str, str]:
        """Write the checkpoint and figures under ``<registry>/artifacts/<run_id>/``; returns
        their paths relative to the registry (``store.artifact_refs``). A checkpoint that
        cannot be written is a note (the run keeps its metrics), and what it left is removed."""
        spec, execution = self.spec, self.execution
        try:
            out_dir = str(store.artifact_dir(registry, spec.run_id))
            paths = dict(trained.save(out_dir))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a full disk must not lose the run's metrics
            store.remove_artifacts(registry, spec.run_id)
            execution.notes.append(f"{CHECKPOINT_NOT_WRITTEN} ({_reason(exc)})")
            return {}
        if execution.figures:
            reporter.phase(spec.run_id, "figures")
            paths.update(_figures(trained, self.dataset, spec, per_dim, params, out_dir, execution))
        return store.artifact_refs(registry, spec.run_id, paths)

    def fail(self, registry: str, error: str, reporter: Reporter) -> dict[str, Any]:
        """Record the run as ``failed`` with a one-line ``error``."""
        self.record.update(status="failed", error=error)
        return self._write(registry, reporter)

    def _write(self, registry: str, reporter: Reporter, notes: Sequence[str] = ()) -> dict[str, Any]:
        record = self.record
        notes = [*notes, *self.execution.notes]
        if notes:
            note = "; ".join(notes)
            record["error"] = f"{record['error']}; {note}" if record.get("error") else note
        record["finished_at"] = _now()
        with interrupt.deferred():  # a stop signal waits until the record is written and shown
            try:
                store.write_record(registry, record)
            except store.RegistryWriteError as exc:
                # Nothing of the run stays without its record; the grid goes on.
                store.remove_artifacts(registry, record["run_id"])
                note = f"{RECORD_NOT_WRITTEN} ({exc})"
                record.update(status="failed", artifacts=None,
                              error=f"{record['error']}; {note}" if record.get("error") else note)
            record = {name: record.get(name) for name in RECORD_SCHEMA.names} | {"schema_version": SCHEMA_VERSION}
            _drop_partial(record, registry)
            reporter.end_run(record)
        return record


class ContinueError(ValueError):
    """A run that cannot be continued; the message is one line for the user."""


def continued_spec(parent: Mapping[str, Any], more_steps: int, manager: PluginManager) -> RunSpec:
    """The spec of ``parent`` (a record) trained ``more_steps`` further: ``steps`` is the new
    total and ``start_step`` the parent's last step. Schedules whose length defaults to
    the run's ``steps`` (the capacity ramp, a linear β warm-up) are pinned to the parent's
    length, so continuing never re-times a ramp already run; a cyclical β schedule is
    defined over the whole run and cannot be stretched (``ContinueError``)."""
    if isinstance(more_steps, bool) or not isinstance(more_steps, int) or more_steps < 1:
        raise ContinueError(f"--steps must be at least 1 (steps to train beyond the parent's), got {more_steps!r}")
    if parent.get("status") != "ok":
        raise ContinueError(f"run {parent['run_id']} is {parent.get('status')}; only an ok run can be continued")
    spec = RunSpec.from_dict(json.loads(parent["spec_json"]))
    if spec.beta_schedule == "cyclical":
        raise ContinueError(f"run {parent['run_id']} has a cyclical β schedule, whose cycles span the whole run; "
                            "continuing it would re-time them")
    done = int(parent.get("steps_done") or spec.steps)
    if done + more_steps > INT_MAX:
        raise ContinueError(f"--steps: {more_steps} more steps would end past step {INT_MAX}, the largest int64")
    pinned: dict[str, Any] = {"steps": done + more_steps, "start_step": done}
    reads = set(manager.model(spec.model).hyperparameter_names)
    if "capacity_steps" in reads and spec.capacity_steps is None:
        pinned["capacity_steps"] = spec.steps
    if spec.beta_schedule == "linear" and spec.beta_warmup_steps is None:
        pinned["beta_warmup_steps"] = spec.steps
    return replace(spec, **pinned)


def continue_run(
    parent: Mapping[str, Any],
    more_steps: int,
    manager: PluginManager,
    registry: str,
    execution: ExecutionOptions,
    metric_names: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    dataset: Any = None,
) -> dict[str, Any]:
    """Train the run recorded as ``parent`` for ``more_steps`` more steps from its checkpoint,
    then score and record it as a new run (``parent_run_id`` = the parent's id; the parent's
    record is left as it is). Its ``history`` and ``train_seconds`` include the parent's.
    ``metric_names``: default, the metrics the parent was scored with; ``dataset``: the
    run's dataset when the caller has loaded it."""
    from vaebench.plugins.backends.base import ResumePoint

    spec = continued_spec(parent, more_steps, manager)
    recorded = (parent.get("artifacts") or {}).get("checkpoint")
    checkpoint = store.artifact_path(registry, parent["run_id"], recorded)
    if checkpoint is None:
        raise ContinueError(f"run {parent['run_id']} has no checkpoint in {Path(registry) / 'artifacts' / parent['run_id']} "
                            f"({recorded or 'not recorded'})")
    backend = get_backend(spec.backend, manager)
    if not capability(backend, "supports_resume"):
        raise ContinueError(f"the {spec.backend} backend cannot continue a run yet (the torch backend can)")
    if metric_names is None:
        metric_names = parent_metrics(parent, manager)
    reporter = reporter or SilentReporter()
    run = PendingRun(spec, manager, execution, metric_names, dataset)
    run.record["parent_run_id"] = parent["run_id"]
    resume = ResumePoint(
        directory=str(Path(checkpoint).parent), step=int(spec.start_step or 0),
        train_seconds=float(parent.get("train_seconds") or 0.0),
        history=[dict(point) for point in parent.get("history") or []],
        signals=_signal_points(parent.get("signals")),
    )
    execution, picked_up = _periodic_checkpoints(execution, registry, spec)
    reporter.start_run(spec, 0, 1)
    try:
        trained = backend.train(spec, run.dataset, execution, resume=picked_up or resume,
                                on_progress=lambda step, values: reporter.progress(spec.run_id, step, values))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded like any failed run
        return run.fail(registry, _one_line(exc), reporter)
    return run.finish(trained, registry, reporter, metric_options)


def parent_metrics(parent: Mapping[str, Any], manager: PluginManager) -> list[str] | None:
    """The metrics ``parent`` (a record) was scored with that are still registered; ``None``
    (the defaults) when its record names none."""
    known = set(manager.specs["metrics"])
    return [name for name in json.loads(parent.get("metric_params") or "{}") if name in known] or None


def _signal_points(rows: Sequence[Mapping[str, Any]] | None) -> list[dict[str, float]]:
    """The ``signals`` column's long rows back to a backend's per-step points (the inverse
    of ``schema.signal_rows``)."""
    points: dict[int, dict[str, float]] = {}
    for row in rows or ():
        step = int(row["step"])
        points.setdefault(step, {"step": step})[str(row["name"])] = float(row["value"])
    return [points[step] for step in sorted(points)]


def run_grid(
    specs: Sequence[RunSpec],
    manager: PluginManager,
    registry: str,
    execution: ExecutionOptions,
    metric_names: Sequence[str] | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    strategy: str = "auto",
    recorded: Mapping[str, str] | None = None,
    datasets: Mapping[tuple[str, str | None], Any] | None = None,
) -> GridResult:
    """Run every spec with ``strategy`` (see ``harness/strategies.py``; ``auto`` picks by
    device). With ``resume``, specs already recorded as ``ok`` or ``diverged`` are
    skipped (``failed`` ones are retried); ``recorded`` is the registry's
    ``recorded_status`` when the caller has read it already, ``datasets`` the datasets it
    has loaded, keyed by ``(name, path)``. Records come back in the order of ``specs``."""
    from vaebench.harness import strategies
    from vaebench.registry.query import recorded_status

    reporter = reporter or SilentReporter()
    result = GridResult()
    done = (recorded if recorded is not None else recorded_status(registry)) if resume else {}
    loaded: dict[tuple[str, str | None], Any] = dict(datasets or {})

    def dataset_of(spec: RunSpec) -> Any:
        key = (spec.dataset, spec.dataset_path)
        if key not in loaded:
            loaded[key] = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
        return loaded[key]

    todo = []
    for spec in specs:
        status = done.get(spec.run_id)
        if status in DONE_STATUSES:
            result.skipped.append(spec)
            reporter.skipped(spec, status)
        else:
            todo.append(spec)
    result.strategy = strategies.choose_strategy(strategy, todo, execution, manager)
    run = {
        "sequential": strategies.run_sequential,
        "processes": strategies.run_processes,
        "vectorized": strategies.run_vectorized,
    }[result.strategy]
    records = run(todo, manager, registry, execution, metric_names, reporter, metric_options, dataset_of)
    order = {spec.run_id: i for i, spec in enumerate(todo)}
    result.records = sorted(records, key=lambda r: order[r["run_id"]])
    return result
