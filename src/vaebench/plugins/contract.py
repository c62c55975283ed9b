"""The backend contract as types: what a backend, a torch model, a JAX model, a trained
model and a grid executor provide. Types only (no torch, no jax); the implementations live in
``plugins/backends/``. Plugin authors read these through :mod:`vaebench.plugin`.

Each Protocol's optional part — capability flags and optional methods, each with its
default — is a Protocol of its own (:class:`BackendCapabilities`,
:class:`ModelCapabilities`, :class:`TorchModelCapabilities`,
:class:`JaxModelCapabilities`, :class:`TrainedModelCapabilities`, :class:`ExecutorCapabilities`) that the full
Protocol extends (:class:`DatasetCapabilities`: the optional part of ``datasets.base.FactorDataset``,
kept apart from that runtime-checkable Protocol). An implementation declares any of them or none; the
harness and the backends read one with :func:`capability`, the one place where a member an
implementation left out becomes the default declared here.

Why a reader rather than a base class that implementations inherit the defaults from: a
third-party model is a plain ``nn.Module`` or ``nnx.Module`` that implements the
Protocol structurally; a default reached only through inheritance would break every
model that does not inherit it (all that exist outside this package), and
``nnx.Module``'s metaclass cannot be combined with ``Protocol``'s, so a JAX model could
not inherit the Protocol's defaults anyway.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from vaebench.plugins.backends.base import DeviceInfo, ExecutionOptions, ProgressCallback, ResumePoint
from vaebench.registry.grids import TaskRef  # the manifest's unit, re-exported with the contract

if TYPE_CHECKING:  # types only: the manager is handed in, never imported from here
    from vaebench.plugins.manager import PluginManager
    from vaebench.plugins.runspec import RunSpec


# ----------------------------------------------------------------- backends


class BackendCapabilities(Protocol):
    """What a backend may declare it can do (class attributes; defaults: it cannot)."""

    #: ``train`` takes ``resume: ResumePoint`` (``vaebench continue``; a run picked up
    #: from its periodic checkpoint): it starts at ``resume.step + 1`` and extends the
    #: point's history, signals and seconds.
    supports_resume: bool = False
    #: ``group_key(spec)`` and ``train_group(...)`` exist (:class:`VectorizedBackend`):
    #: the ``vectorized`` strategy trains grid points with equal keys as one program.
    supports_vectorized: bool = False
    #: ``train_group`` takes ``resume`` (one point per member, one step for all) and
    #: ``checkpoint_dirs`` (each member's periodic checkpoint directory).
    supports_group_resume: bool = False


class Backend(BackendCapabilities, Protocol):
    """A training backend: the class a ``BackendSpec`` names.

    Constructed with the plugin manager whose models it builds (``cls(manager)``:
    ``get_backend(name, manager)``), so a model registered on an in-process manager
    trains like an installed one.
    """

    name: str

    def __init__(self, manager: PluginManager) -> None: ...

    def resolve_device(self, device: str) -> DeviceInfo:
        """``auto | cpu | gpu | cuda | cuda:N`` -> the device a run trains on; a device
        that does not exist here raises a ``ValueError`` subclass with one line."""
        ...

    def train(
        self,
        spec: RunSpec,
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: ProgressCallback | None = None,
        model: Any = None,
        resume: ResumePoint | None = None,
    ) -> TrainedModel:
        """Train ``spec`` on ``dataset`` (a ``FactorDataset``): batches from
        ``np.random.default_rng(spec.seed)``; ``on_progress(step, {loss, recon, kl,
        images_per_second})`` every ``execution.progress_every`` steps; a non-finite loss
        ends training with ``diverged``; notes for the record go to ``execution.notes``.
        ``model``: a prebuilt model (default: the model spec's factory, through the
        manager). ``resume`` only where :attr:`supports_resume`."""
        ...


class VectorizedBackend(Backend, Protocol):
    """A backend with ``supports_vectorized = True``."""

    def group_key(self, spec: RunSpec) -> tuple | None:
        """Specs with equal keys train together in :meth:`train_group`; ``None``: alone."""
        ...

    def train_group(
        self,
        specs: Sequence[RunSpec],
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: Sequence[ProgressCallback | None] | None = None,
        resume: Sequence[ResumePoint | None] | None = None,
        checkpoint_dirs: Sequence[str | None] | None = None,
    ) -> list[TrainedModel]:
        """One trained model per spec (``resume`` / ``checkpoint_dirs`` only where
        :attr:`supports_group_resume`)."""
        ...


# ----------------------------------------------------------------- datasets


class DatasetCapabilities(Protocol):
    """What a dataset (``datasets.base.FactorDataset``) may provide beyond the protocol
    (what a GPU backend uses to move fewer bytes; defaults: the methods ``None``, absent)."""

    #: What a uint8 pixel is worth as a float in [0, 1]: 1 for 0/1 pixels, 1/255 for 0..255
    #: (``sample_uint8`` / ``grid_uint8`` images times this are ``sample``'s).
    pixel_scale: float = 1.0
    #: ``sample_uint8(n, rng) -> (images (n, H, W, C) uint8, factors (n, K) int64)``:
    #: ``sample``'s draws before the float conversion, the same draws from ``rng``;
    #: ``float32(images) * float32(pixel_scale)`` are ``sample``'s images bit for bit. A GPU
    #: backend moves these (a quarter of the bytes) and converts them on the device.
    #: ``None``: it moves ``sample``'s floats.
    sample_uint8: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None
    #: ``grid_uint8(start, stop) -> (stop - start, H, W, C) uint8``: images ``start .. stop - 1``
    #: of the whole factor grid in flat row-major order (with ``grid_size``, the grid's
    #: image count, and ``index_of(factors (N, K)) -> (N,) int64``). A GPU backend uploads
    #: the grid once, chunk by chunk, and gathers each batch on the device
    #: (``backends.device_grid``). ``None``: no grid (batches come from ``sample``).
    grid_uint8: Callable[[int, int], np.ndarray] | None = None
    #: Variables that change the image but are not factors, drawn per observation
    #: (SmallNORB's ``("instance",)``): then ``observations(f)`` renders *an* image of the
    #: factors ``f``, not necessarily the one ``sample()`` gave. ``()``: the factors
    #: determine the image.
    nuisance: tuple[str, ...] = ()


# ----------------------------------------------------------------- models


class ModelCapabilities(Protocol):
    """What a torch or JAX model may declare (defaults: a plain Gaussian VAE)."""

    #: The model reads the dataset's factors: the training step passes the batch's factor
    #: rows ``(B, K)`` int as ``factors``, evaluation passes the held-out set's; without
    #: them (a metric's ``encode``, a figure) ``encode`` infers them (``infer_factors``)
    #: and ``decode`` uses a default condition.
    needs_factors: bool = False
    #: ``encode`` returns a Gaussian posterior (``False``: VQ-VAE; the posterior-collapse
    #: check is skipped).
    gaussian_posterior: bool = True
    #: A label-conditional model (cvae): how many labels it conditions on, read from
    #: factor ``factor_index`` of ``num_factors`` (both then required); the run's figures
    #: add samples per label. ``None``: not label-conditional.
    num_classes: int | None = None

    def notes(self) -> list[str]:
        """One-line warnings added to the run's record after training (VQ-VAE: codebook
        collapse)."""
        return []


class TorchModelCapabilities(ModelCapabilities, Protocol):
    def auxiliary_optimizers(self) -> dict[str, Any]:
        """``{name: torch.optim.Optimizer}`` the model owns over some of its parameters
        (FactorVAE's discriminator): the backend leaves those out of the main Adam and
        steps each on ``loss_terms(...)["aux_losses"][name]``."""
        return {}


class TorchModel(TorchModelCapabilities, Protocol):
    """What a torch model factory returns: an ``nn.Module`` with these members
    (``plugins/backends/torch/models.py`` has the full text)."""

    #: D, the width of what ``encode`` returns and ``decode`` takes.
    latent_dim: int

    def encode(self, x: Any, factors: Any = None) -> tuple[Any, Any]:
        """Images ``(B, C, H, W)`` in [0, 1] -> ``(mu, logvar)``, ``(B, D)`` each."""
        ...

    def decode(self, z: Any, factors: Any = None) -> Any:
        """``(B, D)`` -> pixel logits ``(B, C, H, W)``."""
        ...

    def loss_terms(self, x: Any, step: int, **factors: Any) -> dict[str, Any]:
        """``loss`` (scalar to minimise), ``recon`` and ``kl`` (batch means, nats per
        image), ``kl_per_dim`` ``(D,)``, ``capacity`` (float or ``None``); optionally
        ``signals`` and ``aux_losses`` (``{name: scalar}``)."""
        ...

    def recon_errors(self, x: Any, logits: Any) -> Any:
        """Per-image negative log-likelihood ``(B,)`` nats."""
        ...


class JaxModelCapabilities(ModelCapabilities, Protocol):
    #: ``(H, W, C)`` the model was built for: written to ``config.json``, so that loading
    #: the checkpoint need not load the dataset to learn it. ``None``: not known.
    image_shape: tuple[int, int, int] | None = None

    def before_step(self, x: Any, step: Any, key: Any, factors: Any = None) -> None:
        """Traced before each gradient step; may change any variable, parameters included
        (VQ-VAE's dead-code reset). Default: nothing."""
        return None


class JaxModel(JaxModelCapabilities, Protocol):
    """What a JAX model factory returns: an ``nnx.Module`` with these members, traceable
    (``plugins/backends/jax/models.py`` has the full text)."""

    latent_dim: int

    def encode(self, x: Any, factors: Any = None) -> tuple[Any, Any]:
        """Images ``(B, H, W, C)`` in [0, 1] -> ``(mu, logvar)``, ``(B, D)`` each."""
        ...

    def decode(self, z: Any, factors: Any = None) -> Any:
        """``(B, D)`` -> pixel logits ``(B, H, W, C)``."""
        ...

    def loss_terms(self, x: Any, step: Any, key: Any = None, factors: Any = None, eps: Any = None) -> dict[str, Any]:
        """As :meth:`TorchModel.loss_terms`, traced with ``step`` an ``int32`` and ``key``
        the step's PRNG key; ``signals`` always present (may be empty)."""
        ...

    def recon_errors(self, x: Any, logits: Any) -> Any:
        """Per-image negative log-likelihood ``(B,)`` nats."""
        ...


# ----------------------------------------------------------------- trained models


class TrainedModelCapabilities(Protocol):
    """What a trained model may carry besides its record."""

    #: Per history point, ``{"step": s, name: value}`` for the training signals the model
    #: reports (scheduled β, TC estimate, codebook perplexity, ...).
    signals: Sequence[dict[str, float]] = ()
    #: The backend's model (a :class:`TorchModel` / :class:`JaxModel`), whose capabilities
    #: the evaluator reads; ``None``: none to read (all defaults).
    model: Any = None


class TrainedModel(TrainedModelCapabilities, Protocol):
    """A trained model as the evaluator and the registry see it."""

    #: ≤ 200 points ``{step, loss, recon, kl, capacity}``.
    history: list[dict[str, float]]
    steps_done: int
    diverged: bool
    train_seconds: float
    final_loss: float
    amp: str
    compiled: bool

    def evaluate(
        self, images: np.ndarray, reconstructions: bool = False, factors: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Images ``(N, H, W, C)`` in [0, 1] -> posterior means ``(N, D)``, log-variances
        ``(N, D)`` and reconstruction NLL ``(N,)`` nats (decoded from the mean), and with
        ``reconstructions`` also the decoded Bernoulli means ``(N, H, W, C)``. ``factors``
        ``(N, K)`` only for a model that ``needs_factors``."""
        ...

    def decode(self, latents: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Latents ``(M, D)`` -> Bernoulli means ``(M, H, W, C)`` in [0, 1]."""
        ...

    def encode(self, images: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Images ``(N, H, W, C)`` -> posterior means ``(N, D)``."""
        ...

    def save(self, directory: str) -> dict[str, str]:
        """Write a checkpoint (safetensors + ``config.json`` with ``"backend": name``, no
        pickle); returns artifact name -> path."""
        ...


# ----------------------------------------------------------------- executors


@dataclass
class GridJob:
    """What an executor is handed beside the planned specs (``runner.run_grid`` makes it).

    ``manager``: the plugin manager the specs were planned with; ``registry``: where each
    run's record is written (a remote executor's workers must reach it); ``execution``: the
    :class:`ExecutionOptions` each run trains under; ``metric_names`` (``None``: the
    defaults) and ``metric_options`` (``{metric: {key: value}}``, checked already): what
    each run is scored with; ``strategy``: ``--strategy`` (``auto`` unresolved), how runs
    share one machine; ``resume``: ``--resume`` was given. ``reporter``: the progress
    reporter (``harness.pending.Reporter``: ``start_run``, ``progress``, ``end_run`` ...);
    ``datasets(spec)``: the spec's dataset, loaded once per ``(name, path)`` in this
    process; ``claims``: the grid's point claims (``harness.pending.PointClaims``):
    ``claims.take(spec)`` right before a point trains (``None``: held or recorded
    elsewhere, leave it out), ``claims.release(run_id)`` once it is recorded.
    """

    manager: Any
    registry: str
    execution: ExecutionOptions
    metric_names: Sequence[str] | None
    metric_options: dict[str, dict[str, Any]] | None
    strategy: str
    resume: bool
    reporter: Any
    datasets: Callable[[Any], Any]
    claims: Any
    #: The grid's id (``YYYYMMDDTHHMMSSZ-xxxxxx``, when it started) and its start: a remote
    #: task skips a point another writer finished since then (``harness.tasks.PointsTask``).
    grid_id: str = ""
    started_at: datetime | None = None
    #: ``--log-to NAME[:TARGET]`` entries (checked): a remote task logs its points itself
    #: (``harness.tasks.PointsTask.log_to``); the local executor's runs log through ``reporter``.
    log_to: Sequence[str] = ()
    #: ``--log-every``: steps between live values sent to the loggers.
    log_every: int = 0
    #: An executor that submits calls ``submitted(tasks)`` (its :class:`TaskRef`\ s) as soon
    #: as they are submitted, before it waits for them: the runner writes the grid's manifest
    #: then, so ``vaebench status`` sees the grid while it runs. ``None``: nobody listens.
    submitted: Callable[[Sequence[TaskRef]], None] | None = None


@dataclass
class TaskState:
    """A scheduler task's state as an executor reads it: ``state`` one of :data:`TASK_STATES`
    and ``reason`` the scheduler's own word for it (``OUT_OF_MEMORY``, ``NODE_FAIL``,
    ``Resources`` ...; empty when it says none)."""

    state: str
    reason: str = ""


#: ``queued`` (waiting, or requeued), ``running``, ``ended`` (left the scheduler: its runs'
#: records tell how), ``failed`` (the scheduler says it failed: out of memory, a node
#: failure, cancelled, a time limit), ``unknown`` (the scheduler no longer knows it).
TASK_STATES = ("queued", "running", "ended", "failed", "unknown")


@dataclass
class ExecutorResult:
    """What an executor's ``run`` returns: ``records`` (one dict per run recorded, any
    order), ``strategy`` (how the runs were trained: the ``strategy`` column's value, e.g.
    ``sequential``), ``jobs`` (the scheduler's job ids, for an executor that submits) and
    ``tasks`` (what each submitted task trains: the grid's manifest, ``registry.grids``)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    strategy: str = "sequential"
    jobs: list[str] = field(default_factory=list)
    tasks: list[TaskRef] = field(default_factory=list)


class ExecutorCapabilities(Protocol):
    """What an executor may declare (class attributes; defaults: neither)."""

    #: ``run`` returns once the runs are submitted, before they are recorded (a scheduler's
    #: jobs); their records arrive in the registry later. An executor that submits tasks but
    #: does not detach (``ray``) is taken to hold them: they end with the process that runs
    #: it, which the grid's manifest names as its driver (``vaebench status`` reads its points
    #: from the registry while it lives, ``vaebench cancel`` stops it, and once it is gone a
    #: point with neither a record nor a live claim is lost).
    detaches: bool = False
    #: Runs train on other machines: the registry must be reachable from there and each
    #: worker loads its own datasets (``job.datasets`` is this process's).
    remote: bool = False

    def check(self, specs: Sequence["RunSpec"]) -> None:
        """Raise a one-line ``ValueError`` for options the scheduler would refuse for
        ``specs`` (an unknown partition, more memory than a node has), before anything is
        submitted or recorded (``vaebench run`` exits 2). Default: nothing to check."""
        return None

    def states(self, tasks: Sequence[TaskRef]) -> dict[str, TaskState]:
        """Each of ``tasks``' state by job id, as the scheduler tells it now (``vaebench
        status``, the watch after a submission). Default: none known."""
        return {}

    def cancel(self, tasks: Sequence[TaskRef]) -> list[str]:
        """Cancel ``tasks`` (``vaebench cancel``); returns the job ids cancelled. Default:
        this executor cannot cancel (a ``ValueError``)."""
        raise ValueError("this executor cannot cancel its tasks")

    def log_tail(self, task: TaskRef, lines: int = 20) -> str:
        """The last ``lines`` lines of ``task``'s output (stdout and stderr), ``""`` when
        there is none to read: shown for a failed task and kept in its runs' failed
        records. Default: the file ``task.log`` names, if any."""
        return tail_of(task.log, lines)


def tail_of(path: str | None, lines: int = 20) -> str:
    """The last ``lines`` lines of the text file ``path`` (``""`` when it is absent or
    ``None``); reads at most the last 64 KiB."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Executor(ExecutorCapabilities, Protocol):
    """What an ``ExecutorSpec``'s factory returns (``factory(options) -> Executor``)."""

    def run(self, specs: Sequence["RunSpec"], job: GridJob) -> ExecutorResult:
        """Train, score and record each of ``specs`` (the grid's points not recorded yet,
        in grid order) as ``job`` says, each claimed with ``job.claims`` right before it
        trains; a run that fails is recorded as failed, not raised."""
        ...


# ----------------------------------------------------------------- reading capabilities


def _declared(*protocols: type) -> dict[str, Any]:
    """Every optional member the capability Protocols declare, with its default."""
    defaults: dict[str, Any] = {}
    for protocol in protocols:
        for name, value in vars(protocol).items():
            if not name.startswith("_"):
                defaults[name] = value
    return defaults


#: Optional member name -> its default (a value, or a function bound to the object read).
CAPABILITIES: dict[str, Any] = _declared(
    BackendCapabilities, ModelCapabilities, TorchModelCapabilities, JaxModelCapabilities, TrainedModelCapabilities,
    ExecutorCapabilities, DatasetCapabilities,
)

_ABSENT = object()


def capability(obj: object, name: str) -> Any:
    """``obj``'s optional member ``name`` (a flag, or a method to call) as ``obj`` declares
    it, or the contract's default where it does not (a method default comes bound to
    ``obj``). ``obj`` may be ``None`` (all defaults). An undeclared ``name`` is a
    ``KeyError``: only the contract's optional members have defaults."""
    default = CAPABILITIES[name]
    value = getattr(obj, name, _ABSENT)
    if value is not _ABSENT:
        return value
    return functools.partial(default, obj) if inspect.isfunction(default) else default


@dataclass
class LoggerContext:
    """What a logger is made with (``LoggerSpec.logger(context)``) and handed at each run's
    start: ``target`` (what followed the colon in ``--log-to NAME:TARGET``, ``None``
    without one: an experiment, a directory, a project), the grid's id (``YYYYMMDDTHHMMSSZ-xxxxxx``;
    a continuation's is its own) and ``registry`` (where the records go; a logger keeps its
    own files beside it by default, e.g. ``<registry>/tensorboard``)."""

    target: str | None
    grid_id: str
    registry: str


class Logger(Protocol):
    """An experiment tracker's side of a grid (``LoggerSpec``). Called from one background
    thread, in order, never from the training loop: a call may block (a slow server) without
    slowing training. An exception from any call is said once in one line and the logger is
    dropped for the rest of the grid; the runs are recorded as they would be without it.

    ``start_run(spec, context)``: a grid point starts (``spec``: its ``RunSpec``).
    ``log(run_id, step, values)``: live values at ``step`` (floats: ``loss``, ``recon``, ``kl``
    in nats per image, ``images_per_second``, and where the model has them the target
    capacity ``capacity`` and its training signals, e.g. the scheduled ``beta``), every
    ``--log-every`` steps. ``end_run(record, artifacts)``: the run's record as written
    (``status``, ``metrics``, ``kl_per_dim``, ``run_id``, ``config_id`` ...) and its files on
    this machine (``{"traversal": path, "reconstructions": path, "samples": path, ...}``;
    empty for a remote registry). ``close()``: the grid is over (flush, finish)."""

    def start_run(self, spec: Any, context: LoggerContext) -> None: ...
    def log(self, run_id: str, step: int, values: dict[str, float]) -> None: ...
    def end_run(self, record: dict[str, Any], artifacts: dict[str, str]) -> None: ...
    def close(self) -> None: ...
