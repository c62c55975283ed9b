"""The Python API: what the CLI does, callable from a notebook.

    import vaebench
    result = vaebench.run_grid(models=["beta_vae"], betas=[1, 4, 8], seeds=[0, 1], steps=1500)
    table = vaebench.leaderboard(metric="mig", by=["model", "beta"])   # pyarrow.Table
    df = table.to_pandas()
    scores = vaebench.evaluate_latents(latents, factors, metrics=["mig", "sap"])  # any framework's codes
    vaebench.report("model=beta_vae", out="report")               # report/index.html, report/report.md
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from vaebench.registry import ATTEMPTS, DEFAULT_REGISTRY


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def load_preset(name: str, *, manager: Any = None) -> Any:
    """The study preset ``name`` (``vaebench presets``): a ``Preset`` with its ``source``,
    ``notes``, ``run`` table and per-model ``models`` lists, the datasets and models this
    install does not register left out (``left_out`` says which). Raises a one-line
    ``InputError`` for an unknown name or a bad preset file."""
    from vaebench.harness.presets import PresetError, load_preset as load
    from vaebench.plugins.manager import plugin_manager

    try:
        return load(plugin_manager(manager), name)
    except PresetError as exc:
        raise InputError(str(exc)) from None


def plan_grid(
    models: str | Sequence[str] | None = None,
    *,
    datasets: str | Sequence[str] | None = None,
    backends: str | Sequence[str] | None = None,
    architectures: str | Sequence[str] | None = None,
    dataset_path: str | None = None,
    per_model: dict[str, dict[str, Any]] | None = None,
    manager: Any = None,
    preset: Any = None,
    **axes: Any,
) -> list[Any]:
    """The RunSpecs of a grid (the product of every list), without running anything.

    ``axes``: every grid axis by name or alias (``vaebench list models`` shows each
    model's hyperparameters), a value, a list or a string ``"1,4,8"`` / ``"1:16:5:log"``:
    the shared ``seeds`` (``seed``), ``latent_dims``, ``steps``, ``batch_sizes``, ``lrs``;
    the built-in models' ``betas``, ``capacities``, ``gammas``, ``capacity_steps``,
    ``beta_schedule``, ``dip_type``, ``lambda_od``, ...; a plugin model's own
    (``sigma=[0.1, 0.3]``). ``per_model``: a model's own lists, which replace the
    top-level ones for that model: ``per_model={"factor_vae": {"gamma": [10, 40]}}``.
    ``manager``: the plugin manager (default: the process's). ``preset``: a preset name
    or :func:`load_preset`'s result, whose grid is the base: every argument given here
    replaces the preset's value (an axis given replaces its per-model lists too).
    Defaults without a preset: ``beta_vae`` on ``dsprites``, ``torch``, ``conv``.
    """
    from vaebench.harness import plan
    from vaebench.plugins.manager import plugin_manager

    manager = plugin_manager(manager)
    if preset is not None:
        from vaebench.harness.axes import axis_table
        from vaebench.harness.presets import PresetError, grid_arguments

        chosen = load_preset(preset, manager=manager) if isinstance(preset, str) else preset
        try:
            merged = grid_arguments(
                chosen, axis_table(manager), models=_as_list(models), datasets=_as_list(datasets),
                backends=_as_list(backends), architectures=_as_list(architectures), per_model=per_model, axes=axes)
        except PresetError as exc:
            raise InputError(str(exc)) from None
        return plan.plan_grid(manager, merged["models"], merged["axes"], datasets=merged["datasets"],
                              backends=merged["backends"], architectures=merged["architectures"],
                              dataset_path=dataset_path, per_model=merged["per_model"])
    return plan.plan_grid(
        manager, _as_list(models or "beta_vae") or [], axes, datasets=_as_list(datasets or "dsprites") or [],
        backends=_as_list(backends or "torch") or [], architectures=_as_list(architectures or "conv") or [],
        dataset_path=dataset_path, per_model=per_model,
    )


class InputError(ValueError):
    """A bad input the front door refuses before anything trains or is written (one line)."""


def _non_negative(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{option}: expected a whole number of steps ≥ 0, got {value!r}")
    return value


def _progress_reporter(progress: bool) -> Any:
    if not progress:
        return None
    from rich.console import Console

    from vaebench.harness.progress import RichReporter

    return RichReporter(Console(stderr=True))


def _check_loggers(log_to: Sequence[str] | None, manager: Any, log_every: int | None) -> list[str]:
    """``loggers.check_log_to`` with its one-line ``ValueError`` as an ``InputError``."""
    from vaebench.harness.loggers import check_log_to

    try:
        return check_log_to(log_to, manager, log_every)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def check_run_options(
    specs: Sequence[Any],
    *,
    metrics: Sequence[str] | None = None,
    amp: str = "off",
    strategy: str = "auto",
    checkpoint_every: Any = 0,
    metric_options: dict[str, dict[str, Any]] | None = None,
    manager: Any = None,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
) -> Any:
    """The option checks of ``vaebench run`` that need no dataset (made before a dry run
    prints); returns the executor built from ``executor_options``: the executor is registered and ``executor_options`` are its options, the metric names exist and suit the datasets, ``metric_options``
    (``{metric: {key: value}}``) name metrics of the run and pass their checkers
    (``runner.check_metric_options``), each spec's architecture is conv / mlp, ``amp`` and
    ``strategy`` are known, ``checkpoint_every`` is a whole number ≥ 0. Raises a one-line
    ``ValueError`` (``PlanError``, ``InputError``) or ``UnknownSpecError``."""
    from vaebench.harness.plan import PlanError
    from vaebench.harness.runner import check_metric_options, selected_metrics
    from vaebench.harness.strategies import STRATEGIES
    from vaebench.harness.messages import one_line
    from vaebench.harness.workers import forced_workers
    from vaebench.plugins.backends.base import AMP_MODES, amp_choices
    from vaebench.plugins.contract import capability
    from vaebench.plugins.manager import plugin_manager

    manager = plugin_manager(manager)
    try:
        # Built here so that a missing scheduler or engine and options it refuses (an
        # unknown partition) stop the grid before anything is written, a dry run too.
        built = manager.executor(executor).build(executor_options)
        capability(built, "check")(list(specs))
    except ValueError as exc:
        raise InputError(f"--executor {executor}: {one_line(exc)}") from None
    if metrics and list(metrics) != ["all"]:
        for name in metrics:
            manager.metric(name)
    try:
        selected = selected_metrics(specs, manager, metrics)
        check_metric_options(selected, metric_options)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    for name, mspec in selected.items():  # a compute path that does not import fails before training
        try:
            mspec.function()
        except (ImportError, AttributeError, ValueError) as exc:
            raise InputError(f"metric {name!r}: compute {mspec.compute!r} does not import ({one_line(exc)}); "
                             "`vaebench plugins --check` checks every plugin's paths") from None
    for arch in {s.architecture for s in specs}:
        if arch not in ("conv", "mlp"):
            raise PlanError(f"unknown architecture {arch!r} (available: conv, mlp)")
    if amp not in AMP_MODES:
        raise PlanError(f"--amp: unknown AMP mode {amp!r} (use {amp_choices()})")
    if strategy not in STRATEGIES:
        raise PlanError(f"--strategy: unknown strategy {strategy!r} (use {', '.join(STRATEGIES)})")
    _non_negative(checkpoint_every, "--checkpoint-every")
    try:
        forced_workers()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return built


def _resolve_devices(backends: Sequence[str], device: str, manager: Any) -> None:
    """Each backend can place its work on ``device``; a backend whose package is missing
    raises ``InputError`` naming it with its install hint."""
    from vaebench.plugins.backends import get_backend

    for b in sorted(set(backends)):
        try:
            get_backend(b, manager).resolve_device(device)
        except ImportError as exc:
            hint = manager.backend(b).install
            raise InputError(f"backend {b!r} not installed: {exc}" + (f" ({hint})" if hint else "")) from None


class UnreadableRecordWarning(UserWarning):
    """A record file of the registry could not be read: it is left out and, with resume,
    its grid point is trained again (:func:`read_recorded`)."""


@dataclass
class RecordedGrid:
    """What a registry holds for a planned grid (:func:`read_recorded`)."""

    #: ``{run_id: status}`` of every valid record.
    recorded: dict[str, str]
    #: ``(path, reason)`` of each record file left out (unreadable, invalid).
    unreadable: list[tuple[Path, str]]
    #: Run ids of the grid's points whose record is unreadable: trained again with resume.
    trained_again: list[str]
    resume: bool = False

    def warnings(self) -> list[str]:
        """One line per file left out, and one naming the points trained again (resume)."""
        lines = [f"skipped record file {path}: {reason}" for path, reason in self.unreadable]
        if self.trained_again and self.resume:
            lines.append(f"{len(self.trained_again)} grid point(s) have an unreadable record and are trained "
                         f"again: {', '.join(self.trained_again)}")
        return lines


def read_recorded(specs: Sequence[Any], registry: str = DEFAULT_REGISTRY, *, resume: bool = False,
                  warn: bool = True) -> RecordedGrid:
    """The registry's records for the planned ``specs``; with ``warn``, each of
    :meth:`RecordedGrid.warnings` as an :class:`UnreadableRecordWarning` (the CLI renders
    them itself: ``warn=False``). Raises ``RegistryError`` / ``LocationError``."""
    import warnings

    from vaebench.registry.query import recorded_runs
    from vaebench.registry.store import base_name

    recorded, unreadable = recorded_runs(registry)
    ids = {base_name(path).split(".", 1)[0] for path, _ in unreadable}
    found = RecordedGrid(recorded, list(unreadable), [s.run_id for s in specs if s.run_id in ids], bool(resume))
    if warn:
        for line in found.warnings():
            warnings.warn(line, UnreadableRecordWarning, stacklevel=2)
    return found


@dataclass
class DryRun:
    """What ``run --dry-run`` shows (:func:`dry_run`): the study's ``summary`` (size and
    estimated time, ``harness.study_size.study_summary``) and per planned point its spec,
    recorded status and fate."""

    summary: dict[str, Any]
    #: Per point: ``run_id``, the spec's fields, ``recorded`` (its status or ``None``),
    #: ``fate`` (``None``: trained; ``"skipped"``, ``"retried"`` or ``"new attempt"``
    #: beside a recorded one) and ``picked_up_at`` (the step of a periodic checkpoint
    #: it goes on from, or ``None``).
    runs: list[dict[str, Any]]


def dry_run(specs: Sequence[Any], registry: str = DEFAULT_REGISTRY, *, device: str = "auto", resume: bool = False,
            recorded: dict[str, str] | None = None, manager: Any = None) -> DryRun:
    """What running ``specs`` would do, without training: the study's size and estimate
    (probing this machine's throughput when the registry has none of it) and each point's
    fate against the registry (``recorded``: :func:`read_recorded`'s, else read here).
    Raises ``RegistryError`` / ``LocationError``."""
    from vaebench.harness.resumption import pick_up
    from vaebench.harness.study_size import study_summary
    from vaebench.registry.schema import DONE_STATUSES

    if recorded is None:
        recorded = read_recorded(specs, registry, resume=resume, warn=False).recorded
    summary = study_summary(specs, registry, str(device), manager)
    runs = []
    for s in specs:
        status = recorded.get(s.run_id)
        done = status in DONE_STATUSES
        fate = None if status is None else ("skipped" if resume and done else "retried" if resume else "new attempt")
        point = None if (resume and done) else pick_up(registry, s.run_id)
        runs.append({"run_id": s.run_id, **json.loads(s.to_json()), "recorded": status, "fate": fate,
                     "picked_up_at": None if point is None else point.step})
    return DryRun(summary, runs)


@dataclass
class PreparedGrid:
    """A grid checked and ready to train (:func:`prepare_grid`): its specs, the options it
    runs with, the metric options (weights paths included) and the datasets loaded."""

    specs: list[Any]
    manager: Any
    registry: str
    execution: Any
    metrics: list[str] | None
    metric_options: dict[str, dict[str, Any]]
    datasets: dict[Any, Any]
    resume: bool = False
    strategy: str = "auto"
    #: Stale temporary record files of dead writers removed from the registry.
    removed: list[Path] = field(default_factory=list)
    #: Where the runs train (an ``ExecutorSpec`` name) and its options.
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    #: ``--log-to NAME[:TARGET]`` entries (checked) and ``--log-every``.
    log_to: list[str] = field(default_factory=list)
    log_every: int | None = None
    #: The registry's records as read for ``resume`` (:func:`read_recorded`); None without resume.
    recorded: RecordedGrid | None = None


def prepare_grid(
    specs: Sequence[Any],
    *,
    registry: str = DEFAULT_REGISTRY,
    metrics: Sequence[str] | None = None,
    resume: bool = False,
    device: str = "auto",
    amp: str = "off",
    compile: bool = False,
    threads: int | None = None,
    eval_samples: int = 10_000,
    strategy: str = "auto",
    metric_options: dict[str, dict[str, Any]] | None = None,
    checkpoint_every: int = 0,
    fid_weights: str | None = None,
    lpips_weights: str | None = None,
    manager: Any = None,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    log_to: Sequence[str] | None = None,
    log_every: int | None = None,
    recorded: RecordedGrid | None = None,
) -> PreparedGrid:
    """Every check ``vaebench run`` makes before anything trains or is written, for the
    planned ``specs``: options (:func:`check_run_options`, ``metric_options`` included), the
    weights the selected metrics need (``fid_weights`` / ``lpips_weights``: paths, default
    the environment and the cache), the loggers of ``log_to`` registered and installed
    (``loggers.check_log_to``), every dataset loaded (``runner.check_grid``), the registry writable
    (stale temporary files of dead writers removed), each backend's device resolved. With
    ``resume``, the registry's records are read (:func:`read_recorded`, warning of each record
    file that cannot be read and the points trained again for it) unless ``recorded`` is given.

    Raises a one-line ``ValueError`` (``InputError``, ``PlanError``, ``WeightsError``,
    ``DatasetError``, ``DeviceError``), ``UnknownSpecError`` or ``RegistryError``."""
    from vaebench.harness.runner import check_grid, selected_metrics
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.contract import capability
    from vaebench.plugins.manager import plugin_manager
    from vaebench.plugins.metrics.weights import check_metric_weights
    from vaebench.registry.store import check_writable

    manager = plugin_manager(manager)
    specs = list(specs)
    metrics = list(metrics) if metrics else None
    execution = ExecutionOptions(device=str(device), amp=str(amp), compile=bool(compile), threads=threads,
                                 eval_samples=eval_samples, checkpoint_every=checkpoint_every)
    built = check_run_options(specs, metrics=metrics, amp=amp, strategy=strategy, checkpoint_every=checkpoint_every,
                              metric_options=metric_options, manager=manager, executor=executor,
                              executor_options=executor_options)
    options = check_metric_weights(sorted(selected_metrics(specs, manager, metrics)), fid_weights, lpips_weights)
    loggers = _check_loggers(log_to, manager, log_every)
    for name, values in (metric_options or {}).items():
        options.setdefault(name, {}).update(values)
    # Every dataset is loaded, and every check that needs one made (cvae's condition, the
    # dataset protocol), before anything is written or announced; run_grid reuses them.
    datasets = check_grid(specs, manager)
    removed = check_writable(registry)
    if not capability(built, "remote"):
        _resolve_devices([s.backend for s in specs], execution.device, manager)  # a cluster's: where it trains
    if resume and recorded is None:
        recorded = read_recorded(specs, registry, resume=True)
    return PreparedGrid(specs, manager, registry, execution, metrics, options, datasets, bool(resume), strategy,
                        removed, executor, dict(executor_options or {}), loggers, log_every, recorded)


def run_prepared(prepared: PreparedGrid, *, reporter: Any = None, recorded: dict[str, str] | None = None) -> Any:
    """Train, score and record a grid :func:`prepare_grid` checked; returns a ``GridResult``.
    ``recorded``: the registry's ``{run_id: status}`` when already read."""
    from vaebench.harness import runner

    p = prepared
    if recorded is None and p.recorded is not None:
        recorded = p.recorded.recorded
    return runner.run_grid(p.specs, p.manager, p.registry, p.execution, p.metrics, resume=p.resume, reporter=reporter,
                strategy=p.strategy, metric_options=p.metric_options, recorded=recorded, datasets=p.datasets,
                executor=p.executor, executor_options=p.executor_options, log_to=p.log_to, log_every=p.log_every)


@dataclass
class PreparedContinue:
    """A continuation checked and ready to train (:func:`prepare_continue`)."""

    parent: dict[str, Any]
    spec: Any
    manager: Any
    registry: str
    execution: Any
    metrics: list[str] | None
    metric_options: dict[str, dict[str, Any]]
    dataset: Any
    steps: int
    removed: list[Path] = field(default_factory=list)
    log_to: list[str] = field(default_factory=list)
    log_every: int | None = None


def prepare_continue(
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
    checkpoint_every: int = 0,
    manager: Any = None,
    log_to: Sequence[str] | None = None,
    log_every: int | None = None,
) -> PreparedContinue:
    """Every check ``vaebench continue`` makes before training: the options, the parent
    record (``run``: id or unique prefix) and its continued spec, the metrics (default:
    those the parent was scored with) and the weights they need, the backend's device,
    the dataset loaded, the registry writable (stale temporary files removed).

    Raises a one-line ``ValueError`` (``InputError``, ``ContinueError``, ``WeightsError``,
    ``DatasetError``), ``UnknownSpecError`` or ``RegistryError``."""
    from vaebench.harness.evaluation import metrics_for
    from vaebench.harness.runner import continued_spec, parent_metrics
    from vaebench.plugins.backends import get_backend
    from vaebench.plugins.backends.base import AMP_MODES, ExecutionOptions, amp_choices
    from vaebench.plugins.manager import plugin_manager
    from vaebench.plugins.metrics.weights import check_metric_weights
    from vaebench.registry import location
    from vaebench.registry.store import check_writable, read_record

    if amp not in AMP_MODES:
        raise InputError(f"--amp: unknown AMP mode {amp!r} (use {amp_choices()})")
    _non_negative(checkpoint_every, "--checkpoint-every")
    manager = plugin_manager(manager)
    location.check_location(registry)  # a remote registry's bucket exists (LocationError, one line)
    parent = read_record(registry, run)
    spec = continued_spec(parent, steps, manager)
    metric_names = list(metrics) if metrics else None
    if metric_names and metric_names != ["all"]:
        for name in metric_names:
            manager.metric(name)
    metric_names = metric_names or parent_metrics(parent, manager)
    selected = [m.name for m in metrics_for(manager, manager.dataset(spec.dataset), metric_names)]
    metric_options = check_metric_weights(selected)
    loggers = _check_loggers(log_to, manager, log_every)
    try:
        get_backend(spec.backend, manager).resolve_device(device)
    except ImportError as exc:
        raise InputError(str(exc)) from None
    dataset = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
    execution = ExecutionOptions(device=device, amp=amp, compile=compile, threads=threads,
                                 eval_samples=eval_samples, checkpoint_every=checkpoint_every)
    removed = check_writable(registry)
    return PreparedContinue(parent, spec, manager, registry, execution, metric_names, metric_options, dataset,
                            steps, removed, loggers, log_every)


def continue_prepared(prepared: PreparedContinue, *, reporter: Any = None) -> dict[str, Any]:
    """Train, score and record a continuation :func:`prepare_continue` checked; returns its record."""
    from vaebench.harness import runner

    p = prepared
    return runner.continue_run(p.parent, p.steps, p.manager, p.registry, p.execution, p.metrics, reporter=reporter,
                     metric_options=p.metric_options, dataset=p.dataset, log_to=p.log_to, log_every=p.log_every)


def leaderboard_result(
    registry: str = DEFAULT_REGISTRY,
    metric: str = "mig",
    by: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
    manager: Any = None,
    attempts: str = "latest",
    reference: str | None = None,
) -> Any:
    """:func:`leaderboard` with the record files left out: a ``registry.query.LeaderboardResult``
    (``.table``, ``.skipped``: ``(path, reason)``). Checks what ``vaebench leaderboard``
    checks: the registry exists, each ``by`` column is groupable, ``metric`` is a recorded
    key or a registered metric (``InputError``, one line).

    The ranking follows the metric's direction: its plugin's, else the one its records carry
    (``.direction``). A ``reconstruction``-category metric over runs of several model
    likelihoods is ranked within each likelihood (grouped by ``likelihood`` first, ``.note``
    says so): NLLs of different likelihoods have different units. Each run counts with its
    latest finished attempt; ``attempts="all"`` counts every attempt.

    Seed noise (``harness.standings``): ``.annotations`` holds per row its bootstrap interval over
    seeds (``ci95``) and, with ``reference`` (a reference pack's name; unknown or malformed:
    ``InputError``), where the row's mean stands against the pack (or why it is refused);
    ``.seeds_needed`` the seeds per config that tell the top two rows apart."""
    import pyarrow.compute as pc

    from vaebench.harness.references import ReferenceError, load_pack

    from vaebench.harness.metric_info import metric_info
    from vaebench.plugins.manager import plugin_manager
    from vaebench.registry import location, query
    from vaebench.registry.schema import GROUPABLE_COLUMNS

    manager = plugin_manager(manager)
    try:
        location.require(registry)
    except location.LocationError as exc:
        raise InputError(str(exc)) from None
    if attempts not in ATTEMPTS:
        raise InputError(f"--attempts: choose from {', '.join(ATTEMPTS)}, not {attempts!r}")
    try:
        pack = load_pack(reference, manager) if reference is not None else None
    except ReferenceError as exc:
        raise InputError(str(exc)) from None
    by_cols = list(by) if by is not None else None
    if by_cols:
        bad = [c for c in by_cols if c not in GROUPABLE_COLUMNS]
        if bad:
            raise InputError(f"--by: unknown column {bad[0]!r} (choose from {', '.join(GROUPABLE_COLUMNS)})")
    con, _ = query.open_runs(registry)
    try:
        known = set(query.metric_keys(con)) | set(manager.specs["metrics"])
        info = metric_info([query.recorded_metric_info(con)], manager)
        mixed = query.metric_likelihoods(con, metric, dataset, model) if info.category(metric) == "reconstruction" else []
    finally:
        con.close()
    if metric not in known:
        raise InputError(f"--metric: unknown metric {metric!r} (known: {', '.join(sorted(known))})")
    direction = info.direction(metric)
    kwargs: dict[str, Any] = {"dataset": dataset, "model": model, "descending": direction != "lower"}
    if len(mixed) > 1:
        by_cols = list(by_cols if by_cols is not None else query.DEFAULT_BY)
        by_cols = ["likelihood", *(c for c in by_cols if c != "likelihood")]
    if by_cols is not None:
        kwargs["by"] = by_cols
    result = query.leaderboard(registry, metric, attempts=attempts, **kwargs)
    result.direction = direction
    if len(mixed) > 1:
        # A stable sort: each likelihood's rows keep the metric's order.
        result.table = result.table.take(pc.sort_indices(result.table, sort_keys=[("likelihood", "ascending")]))
        result.note = (f"{metric} is ranked within each likelihood ({', '.join(mixed)}): "
                       f"their negative log-likelihoods have different units")
    _annotate(result, registry, metric, dataset, model, attempts, pack, within=("likelihood",) if len(mixed) > 1 else ())
    return result


def _annotate(result: Any, registry: str, metric: str, dataset: str | None, model: str | None,
              attempts: str, pack: Any, within: Sequence[str] = ()) -> None:
    """Fill ``result.annotations`` and ``result.seeds_needed`` (``harness.standings``)."""
    from vaebench.harness import standings
    from vaebench.registry import query
    from vaebench.registry.schema import GROUPABLE_COLUMNS

    cols = [c for c in result.table.column_names if c in GROUPABLE_COLUMNS]
    con, _ = query.open_runs(registry, attempts=attempts)
    try:
        groups = query.group_values(con, metric, cols, dataset, model)
    finally:
        con.close()
    rows = result.table.to_pylist()
    result.annotations = standings.annotate(rows, groups, cols, metric, pack)
    result.seeds_needed = standings.top_two_seeds_needed(rows, within)


def run_grid(
    models: str | Sequence[str] | None = None,
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
    fid_weights: str | None = None,
    lpips_weights: str | None = None,
    manager: Any = None,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    log_to: str | Sequence[str] | None = None,
    log_every: int | None = None,
    **grid: Any,
) -> Any:
    """Plan and run a grid; returns a ``GridResult`` (``.records``: the records written,
    ``.skipped``: specs already recorded when ``resume``, ``.strategy``: how they were
    trained). ``grid`` takes the keyword arguments of :func:`plan_grid` (every grid axis,
    ``per_model``, ``datasets`` ...); ``manager``: the plugin manager; ``strategy``:
    ``auto`` | ``sequential`` | ``processes`` | ``vectorized`` (``vaebench run --help``);
    ``executor``: where the runs train (``local``, or one a plugin registers: ``vaebench
    list executors``), with ``executor_options`` (its declared options);
    ``metric_options`` per metric, e.g. ``{"fid_inception": {"n": 2000}}``;
    ``fid_weights`` / ``lpips_weights``: weights files (``vaebench run --fid-weights``);
    ``checkpoint_every``: save each run's state every N steps, so a rerun picks up an
    interrupted one (``vaebench run --checkpoint-every``). ``log_to``: experiment trackers to
    watch the runs in, ``["mlflow", "tensorboard:DIR"]`` (``vaebench run --log-to``), sent live
    values every ``log_every`` steps (default ``harness.loggers.LOG_EVERY``). ``preset=NAME`` (in ``grid``):
    a study preset's grid as the base (:func:`plan_grid`), e.g.
    ``run_grid(preset="locatello2019", seeds=[0], steps=3000, datasets="dsprites")``.

    Makes every check ``vaebench run`` makes (:func:`prepare_grid`) before anything trains
    or is written, raising the same one-line errors."""
    specs = plan_grid(models, manager=manager, **grid)
    prepared = prepare_grid(
        specs, registry=registry, metrics=metrics, resume=resume, device=device, amp=amp, compile=compile,
        threads=threads, eval_samples=eval_samples, strategy=strategy, metric_options=metric_options,
        checkpoint_every=checkpoint_every, fid_weights=fid_weights, lpips_weights=lpips_weights, manager=manager,
        executor=executor, executor_options=executor_options, log_to=_as_list(log_to), log_every=log_every,
    )
    return run_prepared(prepared, reporter=_progress_reporter(progress))


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
    checkpoint_every: int = 0,
    progress: bool = False,
    log_to: str | Sequence[str] | None = None,
    log_every: int | None = None,
) -> dict[str, Any]:
    """Train recorded run ``run`` (id or unique prefix) ``steps`` more steps from its checkpoint
    and record it as a new run; returns that record (``parent_run_id`` = ``run``'s id).
    ``metrics``: default, those ``run`` was scored with. ``checkpoint_every``: save the
    state every N steps, so calling again with the same ``run`` and ``steps`` picks up an
    interrupted continuation. Makes the checks ``vaebench continue`` makes
    (:func:`prepare_continue`). See ``vaebench continue --help``."""
    prepared = prepare_continue(run, steps, registry=registry, metrics=metrics, device=device, amp=amp,
                                compile=compile, threads=threads, eval_samples=eval_samples,
                                checkpoint_every=checkpoint_every, log_to=_as_list(log_to), log_every=log_every)
    return continue_prepared(prepared, reporter=_progress_reporter(progress))


def leaderboard(
    registry: str = DEFAULT_REGISTRY,
    metric: str = "mig",
    by: Sequence[str] | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Any:
    """Runs aggregated over seeds (mean, std, n), best first, as a ``pyarrow.Table``.
    Raises ``InputError`` (one line) for a registry that does not exist, a ``by`` column
    that cannot be grouped on, or an unknown ``metric`` (see :func:`leaderboard_result`)."""
    return leaderboard_result(registry, metric, by, dataset, model).table


def show(run: str, registry: str = DEFAULT_REGISTRY, *, with_attempts: bool = False) -> dict[str, Any]:
    """One record as a dict: ``run`` is a run id or a unique prefix of one (its latest finished
    attempt, ``registry.store.latest``), or ``RUN.ATTEMPT`` for one attempt. With
    ``with_attempts``, the record carries ``"attempts"``: one row per attempt of the run,
    oldest first (``attempt``, ``status``, ``finished_at``, ``git_revision``, ``vaebench``,
    ``shown``: the attempt returned), what ``vaebench show --json`` prints.

    Raises ``LocationError`` (a ``ValueError``, one line) when the registry does not exist,
    ``registry.store.RegistryError`` (one line) for a bad, unknown or ambiguous ``run`` or an
    unreadable record file."""
    from vaebench.registry import location
    from vaebench.registry.store import latest, read_attempts

    location.require(registry)
    attempts = read_attempts(registry, run)
    record = latest(attempts)
    if not with_attempts:
        return record
    summary = [{"attempt": r.get("attempt"), "status": r.get("status"), "finished_at": r.get("finished_at"),
                "git_revision": (r.get("environment") or {}).get("git_revision"),
                "vaebench": (r.get("provenance") or {}).get("vaebench"), "shown": r is record} for r in attempts]
    return record | {"attempts": summary}


@dataclass
class QueryResult:
    """What :func:`query` read: ``table`` (a ``pyarrow.Table``, one row per result row) and
    ``skipped``: the record files left out, ``(path, reason)``."""

    table: Any
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def query(sql: str, registry: str = DEFAULT_REGISTRY, *, timeout: float | None = None,
          memory_limit: str | int | None = None) -> QueryResult:
    """Run one read-only SELECT (DuckDB) over the table ``runs`` (one row per run, each run's
    latest finished attempt, every record column) on a locked connection that cannot read,
    write or attach files. ``timeout``: seconds (default ``registry.readonly.DEFAULT_TIMEOUT``,
    60); ``memory_limit``: bytes or a size such as ``"512MB"`` (default 2GB).

    Raises ``ValueError`` (one line): not a single SELECT, a bad ``--timeout`` /
    ``--memory-limit``, a missing registry (``LocationError``), a query that fails or runs past
    a limit (``QueryLimitError``, naming the option that raises it);
    ``registry.store.RegistryError`` when the registry cannot be read. Ctrl-C while the query
    runs raises ``KeyboardInterrupt``."""
    from vaebench.registry import location, readonly

    limits = {"timeout": readonly.DEFAULT_TIMEOUT if timeout is None else timeout,
              "memory_limit": readonly.DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit}
    readonly.check_select(sql)
    for option, check, value in (("--timeout", readonly.check_timeout, limits["timeout"]),
                                 ("--memory-limit", readonly.parse_size, limits["memory_limit"])):
        try:
            check(value)
        except ValueError as exc:
            raise InputError(f"{option}: {exc}") from None
    location.require(registry)
    try:
        table, skipped = readonly.run_select(registry, sql, **limits)
    except readonly.QueryLimitError as exc:
        raise InputError(f"{exc} (raise it with {'--timeout' if exc.limit == 'timeout' else '--memory-limit'})") from None
    return QueryResult(table, list(skipped))


def _selection(text: Any, option: str) -> Any:
    """``text`` (``"model=beta_vae,beta=4"``, run id prefixes, a dict, ``None``) as a
    ``registry.selection.Selection``; ``InputError`` ``"option: ..."`` when it cannot be parsed."""
    from vaebench.registry.selection import parse_selection

    try:
        return parse_selection(text)
    except ValueError as exc:
        raise InputError(f"{option}: {exc}") from None


def _open_results(registry: str, attempts: str, warnings: list[str], left_out: list[tuple[Path, str]]) -> Any:
    """The registry's locked read-only connection (``runs``: each run's latest finished
    attempt, or every attempt); the record files left out are appended to ``left_out`` and,
    as one-line warnings, to ``warnings``, as are temporary files of writers that died.
    Raises ``LocationError`` (missing registry) or ``RegistryError``."""
    from vaebench.registry import location
    from vaebench.registry.readonly import open_readonly
    from vaebench.registry.store import stale_temporaries

    location.require(registry)
    con, skipped = open_readonly(registry, attempts=attempts)
    warnings += [f"skipped record file {path}: {reason}" for path, reason in skipped]
    left_out += skipped
    stale = stale_temporaries(registry)
    if stale:
        warnings.append(f"{len(stale)} temporary record file(s) of writers that died in {registry}/runs "
                        "(the next `vaebench run` removes them)")
    return con


@contextlib.contextmanager
def _noting(warnings: list[str]) -> Iterator[None]:
    """On an error inside, the registry's ``warnings`` gathered so far are added to it as
    notes (``exc.__notes__``: a record file left out often explains why a selection matched
    nothing); the CLI prints them before the error line."""
    try:
        yield
    except Exception as exc:
        for line in warnings:
            exc.add_note(line)
        raise


@dataclass
class CompareResult:
    """What :func:`compare` found: ``comparison`` (``harness.compare.compare``'s dict, what
    ``vaebench compare --json`` prints) and ``warnings``: one-line notes on the registry
    (record files left out, temporary files of dead writers), in the order they arose."""

    comparison: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def compare(a: Any, b: Any, metrics: Sequence[str] | None = None, registry: str = DEFAULT_REGISTRY) -> CompareResult:
    """Compare runs ``a`` with runs ``b`` (each a selection: ``"model=beta_vae,beta=4"``, run
    ids / unique prefixes, or a dict): config side by side, per metric the means over each
    side's ok runs (in the metric's units), ``delta`` = B − A, ``better`` by the metric's
    direction, and the seeds a two-sample t-test needs. ``metrics``: keys to show (default all).

    Raises ``InputError`` (``"A: ..."`` / ``"B: ..."``) for a selection that cannot be parsed,
    ``LocationError`` for a missing registry, ``ValueError`` (one line) for a selection that
    matches nothing or an unknown metric key, ``RegistryError`` for an unreadable registry."""
    from vaebench.harness import compare as comparison

    sel_a = _selection(a, "A")
    sel_b = _selection(b, "B")
    warnings: list[str] = []
    con = _open_results(registry, "latest", warnings, [])
    try:
        with _noting(warnings):
            return CompareResult(comparison.compare(con, sel_a, sel_b, list(metrics) if metrics else None), warnings)
    finally:
        con.close()


@dataclass
class CheckResult:
    """What :func:`check` found: ``results`` (one ``harness.targets.TargetResult`` per target,
    in file order), ``left_out`` (record files of either registry that could not be read,
    ``(path, reason)``), ``warnings`` (one-line notes on the registries, in order), ``runs``:
    the selection of the current runs (a ``registry.selection.Selection``)."""

    results: list[Any]
    left_out: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runs: Any = None

    def exit_code(self, allow_unreadable: bool = False) -> int:
        """``vaebench check``'s exit status: 0 when every target passes, 1 when one fails or
        cannot be evaluated, or a record file was left out (unless ``allow_unreadable``)."""
        from vaebench.harness.targets import exit_code

        code = exit_code(self.results)
        return max(code, 1) if self.left_out and not allow_unreadable else code


def check(
    targets: str | Path,
    runs: Any = None,
    baseline: Any = None,
    *,
    baseline_registry: str | None = None,
    registry: str = DEFAULT_REGISTRY,
    attempts: str = "latest",
) -> CheckResult:
    """Check the runs against the ``[[target]]`` tables of the TOML file ``targets``
    (``vaebench check --help``): ``runs`` (a selection, ANDed with each target's select) are
    the current runs, ``baseline`` (a selection) and/or ``baseline_registry`` the baseline
    runs of ``max_regression``; ``attempts``: ``latest`` | ``all``.

    Raises a one-line ``ValueError``: a selection that cannot be parsed (``InputError``,
    ``"--runs: ..."`` / ``"--baseline: ..."``), a bad targets file (``TargetsError``), an unknown
    ``attempts``, a missing registry (``LocationError``), an unknown metric or select key;
    ``RegistryError`` for an unreadable registry. A failed target is not an error: see
    :meth:`CheckResult.exit_code`."""
    from vaebench.harness import targets as tg
    from vaebench.registry.selection import Selection

    current = _selection(runs, "--runs")
    base = _selection(baseline, "--baseline") if baseline is not None else None
    if base is None and baseline_registry is not None:
        base = Selection()
    parsed = tg.load_targets(targets, baseline=base is not None)
    if attempts not in ATTEMPTS:
        raise InputError(f"--attempts: choose from {', '.join(ATTEMPTS)}, not {attempts!r}")
    warnings: list[str] = []
    left_out: list[tuple[Path, str]] = []
    con = _open_results(registry, attempts, warnings, left_out)
    base_con = None
    try:
        with _noting(warnings):
            if baseline_registry is not None:
                base_con = _open_results(baseline_registry, attempts, warnings, left_out)
            return CheckResult(tg.check_targets(con, parsed, current, base, base_con), left_out, warnings, current)
    finally:
        con.close()
        if base_con is not None:
            base_con.close()


def find_grid(selection: str | None = None, registry: str = DEFAULT_REGISTRY) -> Any:
    """The submitted grid ``selection`` names (``registry.grids.find_grids``: ``None`` the
    latest, a grid id or prefix, a job id, a run id prefix; the latest of several), as its
    ``GridManifest``. Raises ``InputError`` (one line) when none is found."""
    from vaebench.registry.grids import find_grids
    from vaebench.registry.location import display

    found = find_grids(registry, selection or None)
    if not found:
        what = f"matching {selection!r}" if selection else "submitted"
        raise InputError(f"no grid {what} in {display(registry)} (a grid is kept when an executor that submits, "
                         "e.g. --executor slurm, runs it)")
    return found[-1]


def status(selection: str | None = None, registry: str = DEFAULT_REGISTRY, *, manager: Any = None,
           settle: bool = True) -> Any:
    """The state of the grid ``selection`` names (:func:`find_grid`), each point recorded /
    training / queued / lost (``harness.watch.GridState``); with ``settle``, a lost point's
    ``failed`` record is written first (``watch.settle``). Raises ``InputError``."""
    from vaebench.harness import watch
    from vaebench.plugins.manager import plugin_manager

    manager = plugin_manager(manager)
    manifest = find_grid(selection, registry)
    if not settle:
        return watch.grid_state(registry, manifest, manager)
    return watch.watch(registry, manifest, manager, once=True)


def cancel(selection: str | None = None, registry: str = DEFAULT_REGISTRY, *, manager: Any = None) -> tuple[Any, list[str]]:
    """Cancel the tasks of the grid ``selection`` names that may still train (a point not
    recorded, queued or training); returns the grid's ``GridManifest`` and the job ids
    cancelled. A grid whose tasks die with their driver (``ray``) is cancelled by stopping
    that driver (SIGTERM, as its Ctrl-C; on this host only). Raises ``InputError`` when no
    grid is found, its executor cannot cancel, or its driver runs on another host."""
    from vaebench.harness import watch
    from vaebench.plugins.manager import plugin_manager

    manager = plugin_manager(manager)
    manifest = find_grid(selection, registry)
    from vaebench.plugins.manager import UnknownSpecError

    if manifest.driver:  # tasks that die with their driver (ray): stopping it cancels them
        tasks = watch.cancellable(watch.grid_state(registry, manifest, manager))
        if not tasks:
            return manifest, []
        try:
            stopped = watch.stop_driver(manifest)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return manifest, [t.job for t in tasks] if stopped else []
    try:
        executor = watch.build_executor(manifest, manager)
    except (ValueError, UnknownSpecError) as exc:
        raise InputError(str(exc)) from None
    if getattr(executor, "cancel", None) is None:
        raise InputError(f"the {manifest.executor} executor cannot cancel its tasks (grid {manifest.grid_id})")
    tasks = watch.cancellable(watch.grid_state(registry, manifest, manager, executor))
    if not tasks:
        return manifest, []
    try:
        return manifest, list(executor.cancel(tasks))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def report_result(
    selection: Any = None,
    out: str | Path = "vaebench-report",
    registry: str = DEFAULT_REGISTRY,
    targets: str | Path | None = None,
    baseline: Any = None,
    metric: str | None = None,
    reference: str | None = None,
) -> Any:
    """:func:`report` as a ``harness.report.ReportResult`` (``.html``, ``.markdown``,
    ``.figures``, ``.counts``, ``.targets``: ``TargetResult``s, ``.notes``, ``.skipped``: the
    record files left out). Raises what :func:`report` raises."""
    from vaebench.harness.report import write_report

    sel = _selection(selection, "SELECTION")
    base = _selection(baseline, "--baseline") if baseline is not None else None
    return write_report(registry, out, sel, targets, base, metric, reference)


def report(
    selection: Any = None,
    out: str | Path = "vaebench-report",
    registry: str = DEFAULT_REGISTRY,
    targets: str | Path | None = None,
    baseline: Any = None,
    metric: str | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Write ``out/index.html``, ``out/report.md`` and ``out/figures/`` for the selected runs
    (``"model=beta_vae,beta=4"``, a dict, or None for every run); see ``vaebench report``.
    ``reference``: a reference pack to set the leaderboard's means against.

    Returns what was written (paths, run counts, target verdicts, notes: ``vaebench report
    --json``). Raises ``ValueError`` (one line) when a selection cannot be parsed
    (``"SELECTION: ..."``, ``"--baseline: ..."``), no run is selected, ``out`` is not a
    directory or a targets file is bad, ``registry.store.RegistryError`` when the registry
    cannot be read.
    """
    return report_result(selection, out, registry, targets, baseline, metric, reference).to_dict()


def load_run(run: str, registry: str = DEFAULT_REGISTRY) -> tuple[dict[str, Any], Any]:
    """The record of run ``run`` (id or unique prefix) and its trained model loaded from the
    checkpoint in the registry (a backend's ``TrainedModel``: ``encode(images) -> (means,
    logvars)``, ``decode(codes) -> images``). The record's ``artifacts["checkpoint"]`` is set
    to the local path of the checkpoint found.

    Raises ``LocationError`` (missing registry), ``RegistryError`` (bad or unknown run id),
    ``InputError`` (one line) when the run has no checkpoint or it cannot be loaded."""
    from vaebench.plugins.backends import load_trained
    from vaebench.registry import location
    from vaebench.registry.store import artifact_path, read_record

    location.require(registry)
    record = read_record(registry, run)
    recorded = (record.get("artifacts") or {}).get("checkpoint")
    checkpoint = artifact_path(registry, record["run_id"], recorded)
    if checkpoint is None:
        where = location.join(location.display(registry), "artifacts", record["run_id"])
        raise InputError(f"run {record['run_id']} has no checkpoint in {where} "
                         f"({recorded or 'not recorded'}); it was {record['status']}")
    record["artifacts"]["checkpoint"] = str(checkpoint)  # found in the registry: what traverse/samples write beside
    try:
        return record, load_trained(record["backend"], str(checkpoint.parent))
    except Exception as exc:  # noqa: BLE001 - a checkpoint from elsewhere may be anything
        raise InputError(f"cannot load the checkpoint of run {record['run_id']}: {exc}") from None


#: The largest held-out observation index a traversal may start from.
MAX_BASE_INDEX = 100_000


def traverse(
    run: str,
    *,
    dims: Sequence[int] | None = None,
    value_range: tuple[float, float] = (-3.0, 3.0),
    steps: int = 10,
    base: int | str = 0,
    out: str | Path | None = None,
    registry: str = DEFAULT_REGISTRY,
    manager: Any = None,
) -> dict[str, str]:
    """Write run ``run``'s latent traversal (PNG + GIF) from its saved checkpoint: each latent
    dimension of ``dims`` (default: all, sorted by KL) swept over ``value_range`` (LOW < HIGH,
    in latent units around the base code) in ``steps`` images per row (≥ 2). ``base``: the
    index of the held-out observation whose code is the base (0..100000; 0-9 are the inputs
    of the run's reconstructions.png), or ``"prior"`` for the zero code. ``out``: a directory
    (default: the run's artifact directory). Returns ``{kind: path written}``.

    Raises :func:`load_run`'s errors, and ``InputError`` (one line) for a dimension that is
    not one of the run's, a bad ``value_range``, ``steps`` or ``base``."""
    import json

    import numpy as np

    from vaebench.harness.evaluation import held_out
    from vaebench.harness.figures import factor_labels, write_traversal
    from vaebench.plugins.manager import plugin_manager

    low, high = (float(v) for v in value_range)
    if not low < high:
        raise InputError(f"--range: expected LOW < HIGH, got {low:g},{high:g}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise InputError(f"--steps: expected a whole number ≥ 2 of images per row, got {steps!r}")
    if base != "prior" and (isinstance(base, bool) or not isinstance(base, int) or not 0 <= base <= MAX_BASE_INDEX):
        raise InputError(f"--base: {base!r} is neither a held-out observation index (0..{MAX_BASE_INDEX}) nor 'prior'")
    record, model = load_run(run, registry)
    kl = record.get("kl_per_dim") or []
    chosen = list(dims) if dims else None
    bad = [d for d in chosen or [] if not 0 <= d < len(kl)]
    if bad:
        raise InputError(f"--dims: {bad[0]} is not a latent dimension (0..{len(kl) - 1})")
    manager = plugin_manager(manager)
    dataset = manager.dataset(record["dataset"]).loader()(path=json.loads(record["spec_json"]).get("dataset_path"))
    if base == "prior":
        code, where = np.zeros(int(record["latent_dim"]), dtype=np.float32), "the prior's mean"
    else:
        images, _ = held_out(dataset, base + 1)
        code, where = model.encode(images[base:])[0], f"held-out #{base}"
    params = json.loads(record.get("metric_params") or "{}")
    factor_of_dim = factor_labels(params.get("mig"), dataset.factor_names)
    directory = str(out) if out else str(Path(record["artifacts"]["checkpoint"]).parent)
    title = f"run {record['run_id'][:10]}" + ("" if base == 0 else f", base {where}")
    return write_traversal(model, code, kl, directory, dims=chosen, value_range=(low, high),
                           steps=steps, factor_of_dim=factor_of_dim, title=title)


#: The most prior samples one :func:`samples` call decodes.
MAX_SAMPLES = 1024


def samples(run: str, *, n: int = 64, seed: int = 0, out: str | Path | None = None,
            registry: str = DEFAULT_REGISTRY) -> dict[str, str]:
    """Decode ``n`` (1..1024) codes drawn from the prior N(0, I) (``seed``) with run ``run``'s
    saved checkpoint into a PNG grid in ``out`` (default: the run's artifact directory).
    Returns ``{kind: path written}``. Raises :func:`load_run`'s errors, and ``InputError``
    for a bad ``n``."""
    from vaebench.harness.figures import write_samples

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise InputError(f"--n: expected a whole number of samples in 1..{MAX_SAMPLES}, got {n!r}")
    record, model = load_run(run, registry)
    directory = str(out) if out else str(Path(record["artifacts"]["checkpoint"]).parent)
    return write_samples(model, int(record["latent_dim"]), directory, n=n, seed=seed)


def metric_direction(key: str) -> str:
    """``higher`` / ``lower`` / ``none`` for a metric key (``mig``, ``mig.gap.posX``) from its plugin
    (``harness.metric_info``: what leaderboard, compare and report read)."""
    from vaebench.harness.metric_info import metric_info

    return metric_info().direction(key)


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

    from vaebench.harness.evaluation import score
    from vaebench.plugins.manager import plugin_manager
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

    manager = plugin_manager()
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
