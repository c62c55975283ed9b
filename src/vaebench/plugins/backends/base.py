"""What every backend shares: execution options, device info, which grid points can train
together as one vectorized group. The contract's types (``Backend``, ``TrainedModel``, the
model protocols) are in ``plugins/contract.py``."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from vaebench.plugins.manager import PluginManager, plugin_manager

#: ``on_progress(step, values)`` is called every few steps with ``loss``, ``recon``,
#: ``kl``, ``images_per_second`` (floats), and where the model has them the target
#: ``capacity`` and its training signals (the scheduled ``beta``, ...).
ProgressCallback = Callable[[int, dict[str, float]], None]


@dataclass
class ExecutionOptions:
    """How to execute a run (not part of the run's identity).

    ``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``. ``amp``: ``off`` |
    ``bf16`` | ``fp16`` (fp16 only on CUDA; falls back to off elsewhere).
    ``compile``: ``torch.compile`` / ``jit`` the training step, falling back to
    eager if compilation fails. ``threads``: intra-op CPU threads (default: all
    cores). ``eval_samples``: held-out observations encoded for the metrics.
    ``figures``: write each run's traversal / reconstruction / sample images.
    ``checkpoint_every``: periodic checkpoints of a run in training (see below).
    """

    device: str = "auto"
    amp: str = "off"
    compile: bool = False
    threads: int | None = None
    eval_samples: int = 10_000
    #: Look at the losses (progress report, divergence check) every this many steps;
    #: ``None``: every :data:`PROGRESS_EVERY` steps, or every fused call where a backend
    #: fuses more steps than that (``fuse_steps``: on a GPU a look every 10 steps would cap
    #: the fusing at 10).
    progress_every: int | None = None
    #: Write the traversal grid (PNG + GIF), reconstructions and samples of each run.
    figures: bool = True
    #: Every this many steps, write the run's weights and training state to
    #: ``checkpoint_dir`` (0: never), so an interrupted run picks up where it stopped.
    checkpoint_every: int = 0
    #: Where: ``<registry>/artifacts/<run_id>/partial`` (set per run by the runner).
    checkpoint_dir: str | None = None
    #: Called as ``on_checkpoint(directory, step)`` after each periodic checkpoint is
    #: written whole to ``directory`` (the harness publishes it to a remote registry; an
    #: exception it raises fails the run). ``None``: nothing to tell.
    on_checkpoint: Callable[[str, int], None] | None = None
    #: Keep a factor-grid dataset's whole image grid on the device and gather each batch
    #: there (:func:`device_grid_wanted`): ``None`` on a GPU when it fits, ``True`` also on
    #: the CPU (the tests' way to run the GPU's path), ``False`` never. Batches are the same.
    device_grid: bool | None = None
    #: Most training steps a backend may fuse into one device program (a JAX group's
    #: ``lax.scan`` over its batches, gathered from the device grid): ``None`` chooses
    #: (:data:`FUSED_STEPS` where the grid is on a GPU, else 1), ``1`` never fuses. The
    #: loop still looks at every history / progress / checkpoint step, so records are the
    #: same; only fewer programs are launched and the host waits less.
    fuse_steps: int | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Refuse values no run can use (a one-line ``ValueError``), so that they stop a grid
        before anything trains rather than failing each run after its training."""
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a name such as auto, cpu, cuda or cuda:0, got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp: unknown AMP mode {self.amp!r} (use {amp_choices()})")
        if self.threads is not None:
            _whole("threads", self.threads, 1, MAX_THREADS, "CPU threads")
        _whole("eval_samples", self.eval_samples, 1, 2**63 - 1, "held-out observations")
        if self.progress_every is not None:
            _whole("progress_every", self.progress_every, 1, 2**63 - 1, "steps")
        _whole("checkpoint_every", self.checkpoint_every, 0, 2**63 - 1, "steps (0: never)")
        if self.device_grid not in (None, True, False):
            raise ValueError(f"device_grid must be true, false or unset, got {self.device_grid!r}")
        if self.fuse_steps is not None:
            _whole("fuse_steps", self.fuse_steps, 1, 100_000, "steps")


#: Steps between progress reports unless told (``ExecutionOptions.progress_every``).
PROGRESS_EVERY = 10
#: Steps fused into one program by default where a backend can (``ExecutionOptions.fuse_steps``).
FUSED_STEPS = 100

#: The mixed-precision modes (``ExecutionOptions.amp``).
AMP_MODES = ("off", "bf16", "fp16")


def amp_choices() -> str:
    """The AMP modes as a message lists them: ``off, bf16 or fp16``."""
    return f"{', '.join(AMP_MODES[:-1])} or {AMP_MODES[-1]}"
#: Most CPU threads a run may ask for: more than any machine has cores (a typo's guard;
#: torch would try to start them all).
MAX_THREADS = 1024


def _whole(name: str, value: Any, low: int, high: int, unit: str) -> None:
    """A one-line ``ValueError`` unless ``value`` is a whole number (not a bool) in ``[low, high]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        bound = f"≥ {low}" if high == 2**63 - 1 else f"from {low} to {high}"
        raise ValueError(f"{name} must be a whole number of {unit} {bound}, got {value!r}")


@dataclass
class ResumePoint:
    """Where a continued run starts (``vaebench continue``): the parent's checkpoint
    directory (weights, and ``training_state.*`` where the parent saved them: optimizer
    moments and RNG states), the step it ended at, and what its record already holds
    (training seconds, loss history, signals), which the continued run's record extends."""

    directory: str
    step: int
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    signals: list[dict[str, float]] = field(default_factory=list)


#: Checkpoint files holding what continuing a run needs beyond its weights:
#: ``training_state.safetensors`` (optimizer moments, RNG tensors) and ``.json``.
TRAINING_STATE = "training_state"


def save_training_meta(directory: str, step: int, rng: np.random.Generator, **extra: Any) -> None:
    """``training_state.json``: the step, numpy's bit-generator state (the batch stream)
    and any backend's JSON-able extras (parameter groups, the loss scaler, ...)."""
    import json

    with open(os.path.join(directory, TRAINING_STATE + ".json"), "w") as fh:
        json.dump({"step": int(step), "numpy_rng": rng.bit_generator.state, **extra}, fh, indent=1)


def load_training_meta(directory: str, step: int, rng: np.random.Generator) -> dict[str, Any] | None:
    """What :func:`save_training_meta` wrote, with ``rng`` set to the saved state; ``None``
    when ``directory`` has none (a checkpoint from before training states were saved).
    A state of another step is a ``ValueError``."""
    import json

    path = os.path.join(directory, TRAINING_STATE + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        meta = json.load(fh)
    if int(meta["step"]) != step:
        raise ValueError(f"the checkpoint's training state is of step {meta['step']}, not {step}")
    rng.bit_generator.state = meta["numpy_rng"]
    return meta


def partial_resume_point(directory: str) -> ResumePoint | None:
    """The point an interrupted run stopped at, from the periodic checkpoint a backend
    wrote to ``directory`` (``ExecutionOptions.checkpoint_every``); ``None`` when there
    is none. Its ``training_state.json`` carries the seconds, history and signals so far."""
    import json

    path = os.path.join(directory, TRAINING_STATE + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        meta = json.load(fh)
    progress = meta.get("progress") or {}
    return ResumePoint(directory=directory, step=int(meta["step"]),
                       train_seconds=float(progress.get("train_seconds", 0.0)),
                       history=list(progress.get("history", [])), signals=list(progress.get("signals", [])))


def replace_directory(new: str, final: str) -> None:
    """Move the finished directory ``new`` to ``final``, replacing what was there, so a
    reader (or a run killed mid-write) sees the old checkpoint or the new one, never half."""
    import shutil

    old = final + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def restart_note(step: int) -> str:
    """The record's note for a run continued from a checkpoint without a training state."""
    return (f"continued from step {step} without the parent's optimizer and RNG state "
            "(its checkpoint predates them): Adam's moments restarted")


@dataclass
class DeviceInfo:
    device: str  # e.g. "cpu", "cuda:0"
    name: str  # e.g. "NVIDIA H100 80GB HBM3" or the CPU model


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


#: /proc/cpuinfo flags of CPUs with bf16 arithmetic in hardware (AVX512-BF16, AMX).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 in hardware; ``None`` where /proc/cpuinfo is
    unreadable (not Linux), so callers can leave the choice to the user there."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & set(CPU_BF16_FLAGS))
    except OSError:
        pass
    return None




#: Models whose whole loss is ``objective(recon, KL)`` of a plain Gaussian VAE: the ones
#: a backend's ``train_group`` can stack (torch ``vectorized.py``, JAX ``vectorized.py``).
VECTORIZABLE_MODELS = ("vae", "beta_vae", "beta_vae_capacity")

#: Spec fields members of one group may differ in (everything else must be equal).
MEMBER_FIELDS = (
    "model", "beta", "capacity", "gamma", "capacity_steps", "seed",
    "beta_schedule", "beta_start", "beta_warmup_steps", "beta_cycles",
)


def group_key(spec: Any) -> tuple | None:
    """Specs with equal keys can train as one vectorized group; ``None``: this spec cannot.
    (The grid runner also keys groups by ``spec.backend``.)"""
    if spec.model not in VECTORIZABLE_MODELS:
        return None
    shared = {k: v for k, v in asdict(spec).items() if k not in MEMBER_FIELDS}
    return tuple(sorted(shared.items()))


class BuiltinBackend:
    """What the built-in backends (torch, JAX) share as classes: built with the plugin manager
    whose model specs they build (default: the process-wide one), resumable alone and in
    groups, vectorized groups keyed by :func:`group_key`. Subclasses set ``name`` and
    ``model_protocol`` (the key of the models' factories it builds: a subclass registered
    under another name still builds torch / JAX models) and add ``resolve_device``,
    ``train`` and ``train_group``."""

    name = ""
    model_protocol = ""
    #: ``train`` takes ``resume`` (``vaebench continue``); ``train_group`` takes ``resume``
    #: and ``checkpoint_dirs`` (periodic checkpoints of each member).
    supports_resume = True
    supports_group_resume = True
    supports_vectorized = True

    def __init__(self, manager: PluginManager | None = None) -> None:
        #: whose model specs :meth:`build` reads
        self.manager = plugin_manager(manager)

    def build(self, spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> Any:
        """The model of ``spec`` from this backend's manager; a factory that takes a
        ``dataset`` keyword gets it."""
        return self.manager.model(spec.model).build(self.model_protocol, spec, image_shape, dataset)

    def group_key(self, spec: Any) -> tuple | None:
        """Specs with equal keys can train together in ``train_group``; ``None``: alone."""
        return group_key(spec)


def check_group(specs: Sequence[Any]) -> None:
    """Raise a one-line ``ValueError`` unless ``specs`` share one :func:`group_key`."""
    keys = {group_key(s) for s in specs}
    if not specs or None in keys or len(keys) != 1:
        raise ValueError("a vectorized group needs specs of vectorizable models (" + ", ".join(VECTORIZABLE_MODELS)
                         + ") differing only in " + ", ".join(MEMBER_FIELDS))


class DeviceError(ValueError):
    """A device that does not exist here; one line for the user."""


def parse_device(device: str, gpu_count: int, missing_hint: str) -> int | None:
    """``auto`` | ``cpu`` | ``gpu`` | ``cuda`` | ``cuda:N`` -> the GPU index, or ``None`` for the CPU.

    ``auto`` picks GPU 0 when there is one. ``missing_hint`` completes the error for a
    GPU asked for where the framework sees none (e.g. how to install its GPU build).
    """
    device = device.strip().lower()
    if device == "auto":
        return 0 if gpu_count else None
    if device == "cpu":
        return None
    if device == "gpu":
        device = "cuda"
    if not device.startswith("cuda") or device[4:5] not in ("", ":"):
        raise DeviceError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")
    if not gpu_count:
        raise DeviceError(f"device {device!r} asked for, but {missing_hint}")
    index = 0
    if ":" in device:
        try:
            index = int(device.split(":", 1)[1])
        except ValueError:
            raise DeviceError(f"bad device {device!r}: expected cuda:N") from None
    if not 0 <= index < gpu_count:
        raise DeviceError(f"device cuda:{index} does not exist ({gpu_count} GPU devices)")
    return index
