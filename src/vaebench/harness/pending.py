"""A run between its start and its record, and the one way every run ends.

A run ends in exactly one record: ``ok`` (trained and scored), ``diverged``
(non-finite loss; the grid goes on) or ``failed`` (an exception, kept as one
line; the grid goes on). Every strategy (``harness/strategies.py``: sequential, worker
processes, vectorized groups) trains its own way and ends each run in
:meth:`PendingRun.finish` or :meth:`PendingRun.fail`; :func:`run_one` is a lone run.

Storage failures (a full disk, a file size limit) lose as little as possible: a
checkpoint that cannot be written is noted and what it left removed, the run keeps its
metrics (``ok``); a record that cannot be written leaves nothing behind (the run's
artifacts are removed, its periodic checkpoint kept for a later pick-up) and the grid
goes on. :func:`storage_failed` tells the CLI to exit 1 for either.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from vaebench.harness import resumption
from vaebench.harness.environment import environment
from vaebench.harness.evaluation import evaluate, held_out, metrics_for
from vaebench.harness.messages import debug_traceback, one_line, storage_reason
from vaebench.plugins.contract import capability
from vaebench.plugins.backends import get_backend, interrupt
from vaebench.plugins.backends.base import DeviceInfo, ExecutionOptions
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.runspec import RunSpec
from vaebench.registry import claims, store
from vaebench.registry.schema import DONE_STATUSES, RECORD_SCHEMA, SCHEMA_VERSION, signal_rows
from vaebench.version import __version__

#: Notes (in ``error``) of a run whose checkpoint / record could not be written.
CHECKPOINT_NOT_WRITTEN = "checkpoint not written"
RECORD_NOT_WRITTEN = "record not written"


class Reporter(Protocol):
    def start_run(self, spec: RunSpec, index: int, total: int) -> None: ...
    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None: ...
    def phase(self, run_id: str, text: str) -> None: ...
    def end_run(self, record: dict[str, Any]) -> None: ...
    def skipped(self, spec: RunSpec, status: str) -> None: ...
    def note(self, text: str) -> None: ...


class SilentReporter:
    def start_run(self, spec: RunSpec, index: int, total: int) -> None: ...
    def progress(self, run_id: str, step: int, values: dict[str, float]) -> None: ...
    def phase(self, run_id: str, text: str) -> None: ...
    def end_run(self, record: dict[str, Any]) -> None: ...
    def skipped(self, spec: RunSpec, status: str) -> None: ...
    def note(self, text: str) -> None: ...


def _note(reporter: Any, text: str) -> None:
    """A one-line message through ``reporter`` (to stderr for a reporter without ``note``)."""
    note = getattr(reporter, "note", None)
    if note is not None:
        note(text)
    else:
        sys.stderr.write(text + "\n")


class PointClaims:
    """The claims of one grid's points (``registry.claims``), taken one at a time right
    before a point trains, renewed while it trains (``claims.KEEPER``), released once its
    record is written (or it stopped).

    :meth:`take` gives ``None`` for a point not to train here: one held live by another
    writer (said in one line, ``"<run_id> is being trained by host:pid; skipped"``, and
    kept in :attr:`held_elsewhere`), or one whose finished attempt (``ok`` / ``diverged``)
    the registry holds now although the grid did not skip it at its start: any with
    ``resume``, otherwise one finished since the grid started (``since``): another writer
    trained it meanwhile (kept in :attr:`done_meanwhile`, shown as skipped), or one whose
    claim could not be taken because the registry cannot be reached (a lost connection:
    kept in :attr:`unclaimed` with the one-line reason, said; ``run`` exits 1 and
    ``--resume`` trains it later).

    ``incarnation``: the scheduler task's run this process is (``claims.Incarnation``, e.g.
    a requeued Slurm array task): a point an earlier run of the same task still holds is
    taken over (that run died without releasing it).
    """

    def __init__(self, registry: str, reporter: Any, resume: bool, since: datetime | None = None,
                 writer: str = "vaebench run", incarnation: claims.Incarnation | None = None) -> None:
        self.registry, self.reporter, self.resume = registry, reporter, resume
        self.since = since or _now()
        self.writer = writer
        self.incarnation = incarnation
        self.held_elsewhere: list[tuple[RunSpec, str]] = []
        self.done_meanwhile: list[tuple[RunSpec, str]] = []
        self.unclaimed: list[tuple[RunSpec, str]] = []
        self._held: dict[str, claims.Claim] = {}

    def take(self, spec: RunSpec) -> claims.Claim | None:
        """Claim ``spec``'s point for this process, or ``None`` (see the class)."""
        try:
            claim = claims.acquire(self.registry, spec.run_id, writer=self.writer, incarnation=self.incarnation)
        except Exception as exc:  # noqa: BLE001 - the store cannot be reached: not trained here
            debug_traceback(f"claim of {spec.run_id}")
            why = storage_reason(exc)
            self.unclaimed.append((spec, why))
            _note(self.reporter, f"{spec.run_id} not trained: its claim could not be taken ({why})")
            return None
        if claim is None:
            info = claims.holder(self.registry, spec.run_id)
            who = info.who if info is not None else "another writer"
            self.held_elsewhere.append((spec, who))
            _note(self.reporter, f"{spec.run_id} is being trained by {who}; skipped")
            return None
        status = finished_status(self.registry, spec.run_id, None if self.resume else self.since)
        if status is not None:
            claim.release()
            self.done_meanwhile.append((spec, status))
            self.reporter.skipped(spec, status)
            return None
        claims.KEEPER.keep(claim)
        self._held[spec.run_id] = claim
        return claim

    def working(self, run_id: str, pids: Sequence[int]) -> None:
        """Name the processes besides this one that work on ``run_id`` (a worker), so the
        claim stays live while any of them does."""
        claim = self._held.get(run_id)
        if claim is not None:
            try:
                claim.renew(list(pids))
            except Exception:  # noqa: BLE001 - renewed again by the keeper
                pass

    def release(self, run_id: str) -> None:
        """Release ``run_id``'s claim (its record is written, or it stopped); a claim taken
        over meanwhile (its lease ran out while this process stalled) is said in one line."""
        claim = self._held.pop(run_id, None)
        if claim is None:
            return
        claim.release()
        if claim.lost_to is not None:
            _note(self.reporter, f"{run_id}: its claim was taken over by {claim.lost_to.who} (not renewed for "
                                 f"{claim.lease_seconds:.0f} s); both may record it")

    def release_all(self) -> None:
        """Release every claim still held (an interrupt, an error)."""
        for run_id in list(self._held):
            self.release(run_id)


def recorded_since(registry: str, run_id: str, since: datetime | None = None,
                   statuses: Sequence[str] | None = None) -> dict[str, Any] | None:
    """``run_id``'s latest attempt in the registry (of ``statuses``, any when ``None``)
    finished at or after ``since`` (any time when ``None``), or ``None``; a registry that
    cannot be read here answers ``None``. The one reading of "recorded since" a grid's
    claims (:func:`finished_status`), the watch and the ray executor share."""
    try:
        attempts = store.read_attempts(registry, run_id)
    except store.RegistryError:
        return None
    found = [r for r in attempts if r.get("run_id") == run_id and (statuses is None or r.get("status") in statuses)
             and (since is None or (r.get("finished_at") is not None and r["finished_at"] >= since))]
    return found[-1] if found else None


def finished_status(registry: str, run_id: str, since: datetime | None = None) -> str | None:
    """The status of ``run_id``'s latest finished attempt (``ok`` / ``diverged``) in the
    registry, or ``None``; with ``since``, only an attempt finished at or after it counts.
    A registry that cannot be read here answers ``None`` (the point is trained)."""
    found = recorded_since(registry, run_id, since, DONE_STATUSES)
    return found["status"] if found else None


def dataset_loader(manager: PluginManager, loaded: Mapping[tuple[str, str | None], Any] | None = None) -> Any:
    """``datasets(spec)``: the spec's dataset, loaded once per ``(name, path)`` (``loaded``:
    those the caller has already), as a ``GridJob`` hands it to an executor."""
    cache: dict[tuple[str, str | None], Any] = dict(loaded or {})

    def datasets(spec: RunSpec) -> Any:
        key = (spec.dataset, spec.dataset_path)
        if key not in cache:
            cache[key] = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
        return cache[key]

    return datasets


def _now() -> datetime:
    return datetime.now(timezone.utc)


def storage_failed(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` (as a run returned it) lost its checkpoint or was not written."""
    error = record.get("error") or ""
    return CHECKPOINT_NOT_WRITTEN in error or RECORD_NOT_WRITTEN in error


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


def provenance(manager: PluginManager, spec: RunSpec, metric_specs: Sequence[Any]) -> dict[str, str]:
    """The record's ``provenance`` map: ``vaebench`` -> vaebench's ``package==version``, and
    ``model`` / ``dataset`` / ``backend`` / ``metric.<name>`` -> ``package==version`` of the
    plugin that registered the run's model, dataset, backend and each metric."""
    out = {"vaebench": f"vaebench=={__version__}", "model": manager.package_of("models", spec.model),
           "dataset": manager.package_of("datasets", spec.dataset),
           "backend": manager.package_of("backends", spec.backend)}
    out.update({f"metric.{m.name}": manager.package_of("metrics", m.name) for m in metric_specs})
    return out


def run_figures(trained: Any, dataset: Any, spec: RunSpec, kl: np.ndarray, params: dict[str, Any], out_dir: str,
             execution: ExecutionOptions) -> dict[str, str]:
    """The run's images; a failure here is noted, never a failed run."""
    from vaebench.harness.figures import write_run_figures

    try:
        images, _ = held_out(dataset, 10)
        return write_run_figures(trained, images, kl.tolist(), out_dir, params.get("mig"), tuple(dataset.factor_names),
                                 seed=spec.seed)
    except Exception as exc:  # noqa: BLE001
        debug_traceback(f"run {spec.run_id}: figures not written")
        execution.notes.append(f"figures not written ({one_line(exc)})")
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
        execution, point = resumption.periodic_checkpoints(execution, registry, spec)
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
        debug_traceback(f"run {spec.run_id} failed in training")
        return run.fail(registry, one_line(exc), reporter)
    return run.finish(trained, registry, reporter, metric_options)


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
        self.record.update(
            started_at=started, attempt=store.new_attempt(started), strategy=strategy, concurrent_runs=concurrent_runs,
            likelihood=manager.model(spec.model).likelihood,
            metric_directions={m.name: m.direction for m in self.metric_specs},
            metric_categories={m.name: m.category for m in self.metric_specs},
            provenance=provenance(manager, spec, self.metric_specs),
        )

    def finish(
        self, trained: Any, registry: str, reporter: Reporter, metric_options: dict[str, dict[str, Any]] | None = None, notes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Score ``trained``, save its checkpoint and figures, write the record."""
        spec, dataset, execution, record = self.spec, self.dataset, self.execution, self.record
        try:
            # Read again after training: the thread pools and devices it used (a JAX run's too).
            record["environment"] = environment(spec.backend)
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
            debug_traceback(f"run {self.spec.run_id} failed")
            record["status"] = "failed"
            record["error"] = one_line(exc)
        return self._write(registry, reporter, notes)

    def _save(self, trained: Any, registry: str, reporter: Reporter, per_dim: np.ndarray,
              params: dict[str, Any]) -> dict[str, str]:
        """Write the checkpoint and figures under ``<registry>/artifacts/<run_id>/<attempt>/`` (a
        remote registry's: staged locally, then uploaded before the record); returns their paths
        relative to the registry (``store.artifact_refs``). A checkpoint that cannot be
        written or uploaded is a note (the run keeps its metrics), and what it left is removed."""
        spec, execution = self.spec, self.execution
        attempt = self.record["attempt"]
        try:
            out_dir = str(store.artifact_dir(registry, spec.run_id, attempt))
            paths = dict(trained.save(out_dir))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a full disk must not lose the run's metrics
            debug_traceback(f"run {spec.run_id}: checkpoint not written")
            store.remove_artifacts(registry, spec.run_id, attempt=attempt)
            execution.notes.append(f"{CHECKPOINT_NOT_WRITTEN} ({storage_reason(exc)})")
            return {}
        if execution.figures:
            reporter.phase(spec.run_id, "figures")
            paths.update(run_figures(trained, self.dataset, spec, per_dim, params, out_dir, execution))
        try:
            store.upload_artifacts(registry, spec.run_id)  # a remote registry's: before the record
        except store.RegistryWriteError as exc:
            debug_traceback(f"run {spec.run_id}: artifacts not uploaded")
            store.remove_artifacts(registry, spec.run_id, attempt=attempt)
            execution.notes.append(f"{CHECKPOINT_NOT_WRITTEN} ({exc})")
            return {}
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
                # Nothing of this attempt stays without its record; the grid goes on.
                store.remove_artifacts(registry, record["run_id"], attempt=record["attempt"])
                note = f"{RECORD_NOT_WRITTEN} ({exc})"
                record.update(status="failed", artifacts=None,
                              error=f"{record['error']}; {note}" if record.get("error") else note)
            record = {name: record.get(name) for name in RECORD_SCHEMA.names} | {"schema_version": SCHEMA_VERSION}
            resumption.drop(record, registry)
            reporter.end_run(record)
        return record
