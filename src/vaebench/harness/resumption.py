"""Run resumption on the harness side: where a run's periodic checkpoint lives, picking
an interrupted run up from it, and dropping it once the run is recorded.

A run trained with ``--checkpoint-every N`` has the backend write its exact state
(weights, optimizer, generators, seconds, history and signals so far) every N steps
to ``<registry>/artifacts/<run_id>/partial`` (:func:`checkpoint_dir`). The next run
of the same spec (same run id: ``run --resume``, or the same command again) finds it
(:func:`pick_up`) and goes on from that step; once the run is recorded ``ok`` or
``diverged`` the checkpoint is deleted (:func:`drop`). The checkpoint's format is the
backends' (``backends/base.py``: ``write_partial`` / ``partial_resume_point``); every
harness module asks this one for paths and points.

On a remote registry the backend writes the checkpoint to the run's local staging
directory and the harness publishes each one to the bucket as it is written
(``ExecutionOptions.on_checkpoint`` -> ``staging.upload_partial``: the files, then a
``partial/COMPLETE`` marker naming the step); :func:`pick_up` downloads only a checkpoint
its marker declares complete, and :func:`drop` removes it from the bucket too.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from vaebench.plugins.backends.base import ExecutionOptions, ResumePoint, partial_resume_point
from vaebench.plugins.runspec import RunSpec
from vaebench.registry import location, staging, store


def checkpoint_dir(registry: str, run_id: str) -> Path:
    """``<registry>/artifacts/<run_id>/partial``: the run's periodic checkpoint (not created here)."""
    return store.partial_dir(registry, run_id)


def pick_up(registry: str, run_id: str) -> ResumePoint | None:
    """The point an interrupted run of ``run_id`` stopped at (its periodic checkpoint), or
    ``None``. A remote registry's checkpoint is downloaded first (only a complete one)."""
    if location.is_remote(registry):
        if staging.fetch_partial(registry, run_id) is None:
            return None
    return partial_resume_point(str(checkpoint_dir(registry, run_id)))


def checkpoint_step(registry: str, run_id: str) -> int | None:
    """The step ``run_id``'s periodic checkpoint is at, or ``None``: read without taking it
    (a watcher's view; a remote registry's from the published marker, nothing downloaded)."""
    if location.is_remote(registry):
        return staging.partial_step(registry, run_id)
    try:
        point = partial_resume_point(str(checkpoint_dir(registry, run_id)))
    except (OSError, ValueError, KeyError):  # being replaced right now: none to tell
        return None
    return point.step if point is not None else None


def announce(execution: ExecutionOptions, registry: str) -> ExecutionOptions:
    """``execution`` publishing each periodic checkpoint to ``registry`` when it is remote
    (``on_checkpoint``); unchanged for a local one."""
    if not location.is_remote(registry) or not execution.checkpoint_every:
        return execution
    return replace(execution, on_checkpoint=functools.partial(publish, registry))


def publish(registry: str, directory: str, step: int) -> None:
    """Upload the periodic checkpoint written to ``directory`` at ``step`` to ``registry``
    (``staging.upload_partial``); a one-line ``OSError`` when it cannot be."""
    try:
        staging.upload_partial(registry, directory, step)
    except staging.StagingError as exc:
        raise OSError(str(exc)) from None


def pickup_note(step: int) -> str:
    """The record's note for a run picked up from its periodic checkpoint."""
    return f"picked up from its periodic checkpoint at step {step}"


def periodic_checkpoints(execution: ExecutionOptions, registry: str,
                         spec: RunSpec) -> tuple[ExecutionOptions, ResumePoint | None]:
    """``execution`` writing ``spec``'s periodic checkpoints (when ``checkpoint_every``), and
    the point an interrupted run of this very spec stopped at, or ``None`` (then noted in
    ``execution.notes``). Its state is exact, so going on from it trains what a run without
    the interruption would have."""
    if execution.checkpoint_every:
        execution = announce(replace(execution, checkpoint_dir=str(checkpoint_dir(registry, spec.run_id))), registry)
    point = pick_up(registry, spec.run_id)
    if point is not None:
        execution.notes.append(pickup_note(point.step))
    return execution, point


def group_checkpoints(execution: ExecutionOptions, registry: str, group: Sequence[RunSpec],
                      points: Sequence[ResumePoint | None]) -> dict[str, Any]:
    """``train_group``'s keyword arguments for a group that can be picked up: ``resume`` (the
    members' points, when any has one; noted in ``execution.notes``) and ``checkpoint_dirs``
    (one per member, when ``checkpoint_every``; on a remote registry ``execution.on_checkpoint``
    is set to publish them). ``points`` come from :func:`split_by_pickup_step`."""
    kwargs: dict[str, Any] = {}
    if any(p is not None for p in points):
        kwargs["resume"] = list(points)
        execution.notes.append(pickup_note(next(p for p in points if p is not None).step))
    if execution.checkpoint_every:
        kwargs["checkpoint_dirs"] = [str(checkpoint_dir(registry, s.run_id)) for s in group]
        execution.on_checkpoint = announce(execution, registry).on_checkpoint
    return kwargs


def split_by_pickup_step(
    groups: Sequence[Sequence[RunSpec]], registry: str,
) -> tuple[list[tuple[list[RunSpec], list[ResumePoint | None]]], list[RunSpec]]:
    """Each group with its members' periodic checkpoint points, and the specs to train alone.
    A group goes on from one step (``loop.GroupStart``): where its members' checkpoints are
    at different steps (or only some have one, e.g. beside a member that diverged), the
    members with a checkpoint are picked up on their own and the rest train as a group."""
    kept: list[tuple[list[RunSpec], list[ResumePoint | None]]] = []
    alone: list[RunSpec] = []
    for group in groups:
        points = [pick_up(registry, s.run_id) for s in group]
        if len({p.step if p is not None else None for p in points}) == 1:
            kept.append((list(group), points))
            continue
        alone.extend(s for s, p in zip(group, points) if p is not None)
        rest = [s for s, p in zip(group, points) if p is None]
        if len(rest) >= 2:
            kept.append((rest, [None] * len(rest)))
        else:
            alone.extend(rest)
    return kept, alone


def drop(record: Mapping[str, Any], registry: str) -> None:
    """A recorded ``ok`` / ``diverged`` run no longer needs its periodic checkpoint (called
    as its record is written); a ``failed`` one keeps it for a later pick-up."""
    if record["status"] != "failed":
        if location.is_remote(registry):
            staging.remove_partial(registry, record["run_id"])
        else:
            shutil.rmtree(checkpoint_dir(registry, record["run_id"]), ignore_errors=True)
