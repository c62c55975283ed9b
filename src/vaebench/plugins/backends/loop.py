"""The training loop every backend runs, written once: what a trained model records and
how its checkpoint's ``config.json`` reads.

:func:`train_loop` owns the bookkeeping of a run: the step loop, the loss history's
cadence, the divergence rule, the final loss, progress reports, training signals,
seconds, periodic checkpoints (and the one at the step a stop signal arrived), and the
pick-up of a resumed run. A backend fills it with its step (:class:`Steps`): a lone run
is a group of one member, a vectorized group the same loop over ``M`` members, each
member with its own history, divergence and checkpoints, as its lone run would have
them (disentanglement_lib's one model skeleton, each model filling in its regulariser).

The loop looks at the losses only at its cadence (history, progress, last step): a
backend's :meth:`Steps.run` may train several steps per call (``Steps.steps_per_call``:
a ``lax.scan`` over k steps, a CUDA graph) and keep the losses on the device between
looks; :meth:`Steps.read` brings them to the host.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.base import (
    PROGRESS_EVERY, ExecutionOptions, ProgressCallback, ResumePoint, replace_directory
)

#: Loss history keeps at most this many points per run.
HISTORY_POINTS = 200

#: The training signal carrying latent dimension ``d``'s KL: ``kl.dim0``, ``kl.dim1``, ...
#: (nats per image, the batch mean), recorded at each history point where the backend's
#: :class:`Readout` has ``kl_per_dim``.
KL_DIM_SIGNAL = "kl.dim{}"


@dataclass
class GroupStart:
    """Where a run goes on from (a lone run is a group of one): ``step`` (0: the start),
    each member's resume point, periodic checkpoint directory and training seconds before
    this process. A group goes on from one step for all members; the grid trains members
    interrupted at other steps on their own (``resumption.split_by_pickup_step``)."""

    step: int
    points: list[ResumePoint | None]
    dirs: list[str | None]
    earlier: list[float]

    @classmethod
    def of(cls, resume: Sequence[ResumePoint | None] | None, checkpoint_dirs: Sequence[str | None] | None,
           count: int) -> "GroupStart":
        """A ``ValueError`` when the points are not one per member at one step."""
        dirs = list(checkpoint_dirs or [None] * count)
        if not resume or all(p is None for p in resume):
            return cls(0, [None] * count, dirs, [0.0] * count)
        steps = {p.step if p is not None else None for p in resume}
        if len(resume) != count or len(steps) != 1:
            raise ValueError(f"a vectorized group goes on from one step for all members, not {sorted(map(str, steps))}")
        points = list(resume)
        return cls(int(points[0].step), points, dirs, [p.train_seconds for p in points])  # type: ignore[union-attr]

    def extend(self, trained: Sequence[Any]) -> None:
        """Give each member's trained model the history, signals and step it left off at."""
        for run, point in zip(trained, self.points):
            if point is not None:
                run.history, run.signals, run.steps_done = list(point.history), list(point.signals), point.step


def write_partial(trained: Any, directory: str) -> None:
    """A periodic checkpoint: ``trained.save`` into a fresh directory, then swapped in whole
    for the previous one (:func:`replace_directory`)."""
    import shutil

    new = directory + ".new"
    shutil.rmtree(new, ignore_errors=True)
    trained.save(new)
    replace_directory(new, directory)


def checkpoint_due(execution: ExecutionOptions, step: int, last: int, directory: str | None = None) -> bool:
    """Whether a backend writes its periodic checkpoint after ``step`` (never after the last)
    into ``directory`` (default: ``execution.checkpoint_dir``; a vectorized group passes
    each member's own): every ``checkpoint_every`` steps, and at the step a stop signal
    arrived (``interrupt``), so the stopped run picks up from there."""
    every = execution.checkpoint_every
    if not ((directory or execution.checkpoint_dir) and every > 0 and step < last):
        return False
    return step % every == 0 or interrupt.received() is not None



class TrainedRecord:
    """The training record every backend's trained model carries (``base.TrainedModel``):
    ``history`` (per history point ``{"step", "loss", "recon", "kl", "capacity"}``),
    ``signals`` (per history point ``{"step": ..., name: value}``: the scheduled β, the TC
    estimate, codebook perplexity, the KL per latent dimension ``kl.dim<d>``, ...; written beside the checkpoint as ``signals.json``),
    ``steps_done``, ``diverged``, ``train_seconds``, ``final_loss``, and ``training_state``:
    what continuing the run needs beyond its weights (the backend's; set by the loop).
    ``image_shape``: ``(H, W, C)`` of the images it was trained on (``config.json``)."""

    def __init__(self, spec: Any, device: str, amp: str, compiled: bool,
                 image_shape: Sequence[int] | None = None) -> None:
        self.spec = spec
        self.device = device
        self.amp = amp
        self.compiled = compiled
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape else None
        self.history: list[dict[str, float]] = []
        self.signals: list[dict[str, float]] = []
        self.steps_done = 0
        self.diverged = False
        self.train_seconds = 0.0
        self.final_loss = math.nan
        self.training_state: Any = None


def write_config(directory: str, trained: TrainedRecord, backend: str, latent_dim: int, layout: str) -> dict[str, str]:
    """``config.json`` (the spec, the backend, the latent size, the image shape ``(H, W, C)``
    and the weights' layout, ``NCHW`` or ``NHWC``) and, where the model reported any, its
    training signals as ``signals.json`` beside the checkpoint in ``directory``; returns
    the artifacts written (``config``, ``signals``)."""
    path = os.path.join(directory, "config.json")
    with open(path, "w") as fh:
        json.dump({"spec": asdict(trained.spec), "backend": backend, "latent_dim": int(latent_dim),
                   "image_shape": list(trained.image_shape) if trained.image_shape else None, "layout": layout},
                  fh, indent=2)
    if not trained.signals:
        return {"config": path}
    signals = os.path.join(directory, "signals.json")
    with open(signals, "w") as fh:
        json.dump({"history": trained.signals}, fh, indent=1)
    return {"config": path, "signals": signals}


def read_config(directory: str, backend: str, manager: Any = None) -> tuple[dict[str, Any], Any, tuple[int, int, int], Any]:
    """What :func:`write_config` wrote: ``(config, spec, image_shape, dataset)``. The dataset
    is loaded only where needed: a checkpoint without a stored image shape (written before
    torch checkpoints stored it), or a model factory that reads it (cvae: the number of
    labels); otherwise ``None``. Specs are looked up in ``manager`` (default: the process-wide
    one). A checkpoint of another backend is a ``ValueError``."""
    import inspect

    from vaebench.plugins.manager import plugin_manager
    from vaebench.plugins.runspec import RunSpec

    with open(os.path.join(directory, "config.json")) as fh:
        config = json.load(fh)
    if config.get("backend", backend) != backend:
        raise ValueError(f"{directory} holds a {config.get('backend')!r} checkpoint, not a {backend} one")
    spec = RunSpec.from_dict(config["spec"])
    manager = plugin_manager(manager)
    image_shape = config.get("image_shape")
    dataset = None
    if not image_shape or "dataset" in inspect.signature(manager.model(spec.model).factory(backend)).parameters:
        dataset = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
        image_shape = image_shape or dataset.image_shape
    return config, spec, tuple(int(s) for s in image_shape), dataset


@dataclass
class Readout:
    """The terms of the last step trained, on the host, one entry per member: ``loss``,
    ``recon``, ``kl`` (nats per image), ``capacity`` (the target C, or ``None``), the
    model's training ``signals`` and, for a model with a Gaussian posterior
    (``gaussian_posterior``), ``kl_per_dim`` (each member's ``(D,)`` KL per latent
    dimension, nats per image; recorded as the signals :data:`KL_DIM_SIGNAL`)."""

    loss: Sequence[float]
    recon: Sequence[float]
    kl: Sequence[float]
    capacity: Sequence[float | None]
    signals: Sequence[dict[str, float]]
    kl_per_dim: Sequence[Sequence[float]] | None = None

    def member_signals(self, i: int) -> dict[str, float]:
        """Member ``i``'s signals with its KL per dimension (``kl.dim<d>``), as floats."""
        out = {k: float(v) for k, v in (self.signals[i] or {}).items()}
        if self.kl_per_dim is not None:
            out.update({KL_DIM_SIGNAL.format(d): float(v) for d, v in enumerate(self.kl_per_dim[i])})
        return out


def fusable_steps(total: int, execution: ExecutionOptions, cap: int) -> int:
    """The most steps a :class:`Steps` may fuse so that each call ends on a step the loop
    looks at anyway: the largest divisor, at most ``cap``, of the greatest common divisor
    of the history, progress (where set) and checkpoint cadences (1: no fusing). Calls of
    that size then fill the run; the loop asks for fewer only at the last step."""
    every = [max(1, total // HISTORY_POINTS)]
    if execution.progress_every is not None:
        every.append(max(1, execution.progress_every))
    if execution.checkpoint_every > 0:
        every.append(execution.checkpoint_every)
    common = math.gcd(*every)
    return max(d for d in range(1, max(1, min(cap, common)) + 1) if common % d == 0)


def report_cadence(execution: ExecutionOptions, steps_per_call: int) -> int:
    """Steps between the loop's looks at the losses: ``execution.progress_every``, else
    :data:`base.PROGRESS_EVERY` or a fused call's steps where that is more."""
    if execution.progress_every is not None:
        return max(1, execution.progress_every)
    return max(PROGRESS_EVERY, steps_per_call)


class Steps(Protocol):
    """What a backend fills :func:`train_loop` with, for ``M`` members (1: a lone run)."""

    #: Most steps one :meth:`run` call may train (the loop asks for fewer to stop at its
    #: cadence: history, progress, periodic checkpoints, the last step).
    steps_per_call: int

    def run(self, step: int, count: int, live: Sequence[int]) -> None:
        """Train steps ``step .. step + count - 1`` (1-based); ``live``: the members not
        diverged (a group leaves the others out of its summed loss)."""
        ...

    def read(self) -> Readout:
        """The terms of the last step :meth:`run` trained, on the host."""
        ...

    def keep(self, i: int) -> None:
        """Member ``i`` diverged at the last step: keep its weights as they are now (where its
        lone run would stop), whatever later steps of the group do to them."""
        ...

    def state(self, i: int, step: int, progress: dict[str, Any] | None) -> Any:
        """Bring member ``i``'s trained model up to date with its weights at ``step`` and return
        its training state (``TrainedRecord.training_state``); ``progress`` (seconds,
        history, signals so far) only for a periodic checkpoint."""
        ...

    def sync(self) -> None:
        """Wait for the device to finish the steps queued."""
        ...


def train_loop(
    steps: Steps, trained: Sequence[TrainedRecord], begin: GroupStart, total: int, batch: int,
    execution: ExecutionOptions, callbacks: Sequence[ProgressCallback | None] | None = None,
) -> None:
    """Train ``trained``'s members from ``begin.step + 1`` to ``total`` with ``steps``.

    Every ``total // HISTORY_POINTS`` steps, every :func:`report_cadence` steps and at
    the last, the loop reads the terms: each member's history point (and its signals) at
    the history cadence, its final loss and a progress report (``images_per_second`` of
    ``batch`` images a step). A member whose loss, reconstruction or KL is non-finite at
    such a look is ``diverged`` there (its point recorded, its weights kept, its seconds
    stopped); the loop ends when no member is left. After each step the periodic
    checkpoint of every member due one (``base.checkpoint_due``: every
    ``checkpoint_every`` steps and at the step a stop signal arrived) is written to its
    directory (``begin.dirs[i]``, else ``execution.checkpoint_dir``) and announced
    (``execution.on_checkpoint``), then a stop signal
    stops the loop (``interrupt.check``). Seconds count on from ``begin.earlier``.
    """
    begin.extend(trained)
    live = list(range(len(trained)))
    history_every = max(1, total // HISTORY_POINTS)
    report_every = report_cadence(execution, steps.steps_per_call)
    every = execution.checkpoint_every
    callbacks = list(callbacks or [None] * len(trained))
    dirs = [d or execution.checkpoint_dir for d in begin.dirs]

    def next_look(step: int) -> int:
        """The first step after ``step`` the loop must look at (or checkpoint after)."""
        marks = [total, (step // history_every + 1) * history_every, (step // report_every + 1) * report_every]
        if every > 0:
            marks.append((step // every + 1) * every)
        return min(marks)

    step = begin.step
    start = time.perf_counter()
    while step < total:
        count = max(1, min(steps.steps_per_call, next_look(step) - step))
        steps.run(step + 1, count, live)
        step += count
        last = step == total
        if step % history_every == 0 or step % report_every == 0 or last:
            terms = steps.read()
            elapsed = time.perf_counter() - start
            for i in list(live):
                run = trained[i]
                values = {"loss": float(terms.loss[i]), "recon": float(terms.recon[i]), "kl": float(terms.kl[i])}
                run.steps_done = step
                run.final_loss = values["loss"]
                finite = all(math.isfinite(v) for v in values.values())
                signals = terms.member_signals(i)
                if not finite or step % history_every == 0 or last:
                    run.history.append({"step": step, **values, "capacity": terms.capacity[i]})
                    if signals:
                        run.signals.append({"step": step, **signals})
                if not finite:
                    run.diverged = True
                    run.train_seconds = elapsed + begin.earlier[i]
                    steps.keep(i)
                    live.remove(i)
                elif callbacks[i] is not None and (step % report_every == 0 or last):
                    live_values = {**signals, **values,
                                   "images_per_second": (step - begin.step) * batch / elapsed}
                    if terms.capacity[i] is not None:
                        live_values["capacity"] = float(terms.capacity[i])
                    callbacks[i](step, live_values)
            if not live:
                break
        for i in live:
            if checkpoint_due(execution, step, total, dirs[i]):
                run = trained[i]
                run.steps_done = step
                run.training_state = steps.state(i, step, {
                    "train_seconds": time.perf_counter() - start + begin.earlier[i], "history": run.history,
                    "signals": run.signals})
                write_partial(run, str(dirs[i]))
                if execution.on_checkpoint is not None:
                    execution.on_checkpoint(str(dirs[i]), step)
        interrupt.check()
    steps.sync()
    elapsed = time.perf_counter() - start
    for i in live:
        trained[i].train_seconds = elapsed + begin.earlier[i]
        trained[i].training_state = steps.state(i, trained[i].steps_done, None)
