"""A grid's runs and a run's continuation, from specs to records.

:func:`run_grid` leaves out what is recorded already (``--resume``) and hands the rest to
an executor (``--executor``; the built-in ``local`` one, ``harness/local_executor.py``, runs
a strategy: ``harness/strategies.py``), which ends every run in
``pending.PendingRun``; :func:`continue_run` trains one recorded run further
(``vaebench continue``). :func:`check_grid` is what ``api.prepare_grid`` asks of a grid
before anything trains.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from vaebench.harness import resumption
from vaebench.harness.evaluation import metrics_for
from vaebench.harness.loggers import close_reporter, logging_reporter
from vaebench.harness.messages import debug_traceback, one_line
from vaebench.harness.pending import PendingRun, PointClaims, Reporter, SilentReporter, dataset_loader
from vaebench.harness.plan import INT_MAX
from vaebench.plugins.contract import GridJob, TaskRef, capability
from vaebench.plugins.backends import get_backend
from vaebench.plugins.backends.base import ExecutionOptions, ResumePoint
from vaebench.plugins.datasets.base import check_sample
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.specs import MetricSpec
from vaebench.registry import claims, grids, location, store
from vaebench.registry.schema import DONE_STATUSES


@dataclass
class GridResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[RunSpec] = field(default_factory=list)
    #: ``(spec, "host:pid")`` of points another writer was training (claimed), skipped
    held_elsewhere: list[tuple[RunSpec, str]] = field(default_factory=list)
    #: ``(spec, reason)`` of points not trained because their claim could not be taken
    #: (the registry could not be reached)
    unclaimed: list[tuple[RunSpec, str]] = field(default_factory=list)
    #: the strategy the runs were trained with (``auto`` resolved)
    strategy: str = "sequential"
    #: the executor that ran them (``--executor``) and the scheduler's job ids, if it submits
    executor: str = "local"
    jobs: list[str] = field(default_factory=list)
    #: the grid's id; for an executor that submits, its tasks (``registry.grids``' manifest)
    #: and whether its records arrive later (``detaches``: the caller watches the registry)
    grid_id: str = ""
    tasks: list[TaskRef] = field(default_factory=list)
    detached: bool = False


def selected_metrics(specs: Sequence[RunSpec], manager: PluginManager,
                     metric_names: Sequence[str] | None = None) -> dict[str, MetricSpec]:
    """The metrics a grid computes, by name: those of ``metric_names`` (``None``: the default
    ones, ``["all"]``: all) that suit at least one of the specs' datasets
    (:func:`metrics_for`; a named metric unfit for a dataset is a one-line ``ValueError``).
    Needs no dataset loaded."""
    selected: dict[str, MetricSpec] = {}
    for name in dict.fromkeys(s.dataset for s in specs):
        selected.update((m.name, m) for m in metrics_for(manager, manager.dataset(name), metric_names))
    return selected


def check_metric_options(selected: Mapping[str, MetricSpec], metric_options: Mapping[str, Any] | None) -> None:
    """``metric_options`` (``{metric: {key: value}}``, ``--metric-option``) name metrics of
    this run (``selected``, :func:`selected_metrics`) and pass each metric's own checker
    (``MetricSpec.options``), rather than dropping the metric from every run after training.
    The one home of this check: ``api.check_run_options`` makes it, before a dry run prints
    and before anything trains. Raises a one-line ``ValueError``."""
    for metric, given in (metric_options or {}).items():
        if metric not in selected:
            raise ValueError(f"--metric-option: metric {metric!r} is not among the metrics of this run "
                             f"({', '.join(sorted(selected)) or 'none'})")
        if not isinstance(given, Mapping):
            raise ValueError(f"metric options: {metric!r} must map option names to values, got {given!r}")
        try:
            selected[metric].check_options(given)
        except ValueError as exc:
            raise ValueError(f"metric options: {one_line(exc)}") from None


def check_grid(
    specs: Sequence[RunSpec],
    manager: PluginManager,
    datasets: Mapping[tuple[str, str | None], Any] | None = None,
) -> dict[tuple[str, str | None], Any]:
    """The checks of a grid that need its datasets, made before anything trains
    (``api.prepare_grid`` calls it for ``vaebench run`` and ``api.run_grid``; the metric
    options are checked before, without datasets: :func:`check_metric_options`): each spec
    fits its dataset (a model reading ``condition`` conditions on one of the dataset's
    factors); each dataset keeps the dataset protocol on a small sample
    (``datasets.base.check_sample``: image axes and range, factor columns).

    Loads the datasets ``datasets`` (keyed by ``(name, path)``) lacks and returns them all.
    Raises a one-line ``ValueError`` (``DatasetError`` for a dataset that cannot be loaded).
    """
    loaded = dict(datasets or {})
    for key in dict.fromkeys((s.dataset, s.dataset_path) for s in specs):
        if key not in loaded:
            loaded[key] = manager.dataset(key[0]).loader()(path=key[1])
        check_sample(loaded[key], manager.dataset(key[0]).num_factors)
    for spec in specs:
        if "condition" in manager.model(spec.model).hyperparameter_names:
            from vaebench.plugins.objectives import cvae_condition

            cvae_condition(spec, loaded[(spec.dataset, spec.dataset_path)])
    return loaded


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
    pinned["model_plugin"] = manager.model_plugin(spec.model)  # the installed code's version, not the parent's
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
    log_to: Sequence[str] = (),
    log_every: int | None = None,
) -> dict[str, Any]:
    """Train the run recorded as ``parent`` for ``more_steps`` more steps from its checkpoint,
    then score and record it as a new run (``parent_run_id`` = the parent's id; the parent's
    record is left as it is), holding the new run's claim while it trains (``registry.claims``;
    one another writer holds is a ``ContinueError``). Its ``history`` and ``train_seconds`` include the parent's.
    ``metric_names``: default, the metrics the parent was scored with; ``dataset``: the
    run's dataset when the caller has loaded it; ``log_to`` / ``log_every``: as :func:`run_grid`'s."""
    spec = continued_spec(parent, more_steps, manager)
    recorded = (parent.get("artifacts") or {}).get("checkpoint")
    checkpoint = store.artifact_path(registry, parent["run_id"], recorded)
    if checkpoint is None:
        raise ContinueError(f"run {parent['run_id']} has no checkpoint in {location.join(location.display(registry), 'artifacts', parent['run_id'])} "
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
    claim = claims.acquire(registry, spec.run_id, writer="vaebench continue")
    if claim is None:
        info = claims.holder(registry, spec.run_id)
        raise ContinueError(f"the continuation {spec.run_id} of run {parent['run_id']} is being trained by "
                            f"{info.who if info is not None else 'another writer'}")
    claims.KEEPER.keep(claim)
    reporter = logging_reporter(reporter, manager, log_to, registry, run.record["attempt"], log_every)
    try:
        execution, picked_up = resumption.periodic_checkpoints(execution, registry, spec)
        reporter.start_run(spec, 0, 1)
        try:
            trained = backend.train(spec, run.dataset, execution, resume=picked_up or resume,
                                    on_progress=lambda step, values: reporter.progress(spec.run_id, step, values))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded like any failed run
            debug_traceback(f"run {spec.run_id} failed in training")
            return run.fail(registry, one_line(exc), reporter)
        return run.finish(trained, registry, reporter, metric_options)
    finally:
        claim.release()
        close_reporter(reporter)


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
    executor: str = "local",
    executor_options: Mapping[str, Any] | None = None,
    log_to: Sequence[str] = (),
    log_every: int | None = None,
) -> GridResult:
    """Run every spec with ``executor`` (an ``ExecutorSpec`` name; ``local``: on this machine
    with ``strategy``, see ``harness/strategies.py``; ``auto`` picks by device), built with
    ``executor_options``. With ``resume``, specs already recorded as ``ok`` or ``diverged`` are
    skipped (``failed`` ones are retried). Each point is claimed right before it trains
    (``pending.PointClaims``): one another writer trains now is skipped
    (``GridResult.held_elsewhere``), as is one another writer recorded meanwhile (any
    finished attempt with ``resume``, else one finished since this grid started;
    ``GridResult.skipped``). ``recorded`` is the registry's
    ``recorded_status`` when the caller has read it already, ``datasets`` the datasets it
    has loaded, keyed by ``(name, path)``. Records come back in the order of ``specs``.
    ``log_to``: ``--log-to NAME[:TARGET]`` entries (checked: ``loggers.check_log_to``), the
    loggers fed beside ``reporter`` (``loggers.LoggingReporter``) every ``log_every`` steps."""
    from vaebench.registry.query import recorded_status  # DuckDB: only when a grid runs

    reporter = reporter or SilentReporter()
    started = datetime.now(timezone.utc)
    result = GridResult()
    done = (recorded if recorded is not None else recorded_status(registry)) if resume else {}
    dataset_of = dataset_loader(manager, datasets)

    todo = []
    for spec in specs:
        status = done.get(spec.run_id)
        if status in DONE_STATUSES:
            result.skipped.append(spec)
            reporter.skipped(spec, status)
        else:
            todo.append(spec)
    claims = PointClaims(registry, reporter, resume, since=started)
    result.grid_id = store.new_attempt(started)
    reporter = logging_reporter(reporter, manager, log_to, registry, result.grid_id, log_every)
    job = GridJob(manager=manager, registry=registry, execution=execution, metric_names=metric_names,
                  metric_options=metric_options, strategy=strategy, resume=resume, reporter=reporter,
                  datasets=dataset_of, claims=claims, grid_id=result.grid_id, started_at=started,
                  log_to=tuple(log_to), log_every=int(log_every or 0))
    spec_of = manager.executor(executor)
    built = spec_of.build(executor_options)
    detaches = bool(capability(built, "detaches"))

    written: list[TaskRef] = []

    def write_manifest(tasks: Sequence[TaskRef]) -> None:
        """The manifest ``status`` and ``cancel`` read (once per set of tasks); the process
        the tasks die with is named for an executor that does not detach
        (``grids.driver_state``)."""
        if list(tasks) == written:
            return
        written[:] = tasks
        grids.write_manifest(registry, grids.GridManifest(
            grid_id=result.grid_id, executor=executor, options=spec_of.check_options(executor_options),
            submitted_at=started, tasks=list(tasks), specs={s.run_id: json.loads(s.to_json()) for s in todo},
            driver="" if detaches else grids.this_process()))

    job.submitted = write_manifest
    try:
        executed = built.run(todo, job)
    finally:
        claims.release_all()
        close_reporter(reporter)
    result.strategy, result.executor, result.jobs = executed.strategy, executor, list(executed.jobs)
    result.tasks, result.detached = list(executed.tasks), detaches and bool(executed.tasks)
    if executed.tasks:  # a submitting executor: the manifest status and cancel read (unless written at submission)
        write_manifest(result.tasks)
    records = executed.records
    result.held_elsewhere = list(claims.held_elsewhere)
    result.unclaimed = list(claims.unclaimed)
    result.skipped.extend(spec for spec, _ in claims.done_meanwhile)
    order = {spec.run_id: i for i, spec in enumerate(todo)}
    result.records = sorted(records, key=lambda r: order[r["run_id"]])
    return result
