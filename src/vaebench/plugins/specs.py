"""What a plugin registers: model, metric, dataset and backend specs.

Specs are plain data. Anything heavy (torch, jax, scikit-learn) is named by an
import path ``"package.module:attribute"`` and imported only when used, so that
listing plugins or printing ``--help`` never pays for a framework import.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

#: "none" for a quantity that is reported but not better either way (KL, active dims).
Direction = Literal["higher", "lower", "none"]

#: What a metric can ask the evaluator for.
#: ``latents``: posterior means ``(N, D)`` of held-out observations (all that
#: representations computed elsewhere provide: ``vaebench evaluate-latents``);
#: ``posterior``: also log-variances ``(N, D)`` and reconstruction errors ``(N,)``
#: (only a model trained here has them); ``factors``: the observations' integer
#: factor indices ``(N, K)``; ``sampler``: a dataset that renders observations for
#: chosen factor values plus an ``encode`` function (Higgins / FactorVAE metrics);
#: ``reconstructions``: held-out images and their reconstructions (SSIM, PSNR, LPIPS);
#: ``generator``: a ``decode`` function for samples from the prior, plus real images
#: from the dataset (FID-style metrics).
Need = Literal["latents", "posterior", "factors", "sampler", "reconstructions", "generator"]


def load_object(path: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"import path {path!r} must look like 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    return load_object(target) if isinstance(target, str) else target


@dataclass(frozen=True)
class ModelSpec:
    """A model family, e.g. ``beta_vae``.

    ``backends`` maps a backend name (``"torch"``, ``"jax"``) to a factory
    ``factory(spec: RunSpec, image_shape: tuple[int, int, int]) -> model``; the
    model object implements that backend's model protocol (``TorchModel`` /
    ``JaxModel`` in ``plugins/contract.py``). ``hyperparameters`` names the RunSpec fields
    the objective reads (``beta``, ``capacity``, ``gamma``, ``capacity_steps``);
    the others are normalised away so that two grid points differing only in an
    unused value are the same run.
    """

    name: str
    description: str
    backends: dict[str, str | Callable[..., Any]]
    hyperparameters: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    def factory(self, backend: str) -> Callable[..., Any]:
        if backend not in self.backends:
            have = ", ".join(sorted(self.backends)) or "none"
            raise KeyError(f"model {self.name!r} has no {backend!r} backend (has: {have})")
        return _resolve(self.backends[backend])

    def build(self, backend: str, spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> Any:
        """The backend's model for ``spec``; a factory that takes a ``dataset`` keyword gets it
        (conditional models read the number of classes, β-TCVAE the dataset size)."""
        factory = self.factory(backend)
        try:
            takes_dataset = "dataset" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_dataset = False
        if dataset is not None and takes_dataset:
            return factory(spec, image_shape, dataset=dataset)
        return factory(spec, image_shape)


class MetricUnavailable(RuntimeError):
    """Raised by a metric that cannot be computed here (e.g. its pretrained weights are not
    installed). The message is one line saying what to get and where to put it; the run
    records the metric as unavailable with that reason and goes on."""


@dataclass
class MetricResult:
    """Named floats plus the estimator parameters that produced them.

    ``values`` keys are full record keys: the headline value is stored under the
    metric's own name (``"mig"``), extras under dotted names (``"mig.gap.posX"``).
    ``params`` (JSON-serialisable) are recorded beside the values, so a number is
    never separated from the sample size, bin count or seed that produced it.
    """

    values: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A metric. ``compute(ctx: EvaluationContext) -> MetricResult | dict[str, float]``."""

    name: str
    description: str
    compute: str | Callable[..., Any]
    direction: Direction = "higher"
    needs: frozenset[str] = frozenset({"latents"})
    #: One-line reference, e.g. "Chen et al. 2018, arXiv:1802.04942".
    reference: str = ""
    #: Computed when ``--metrics`` is not given. Metrics whose reference estimator
    #: costs minutes per model on a CPU (DCI's gradient boosting, the sampler-based
    #: Higgins / FactorVAE metrics) are opt-in: ``--metrics dci`` or ``--metrics all``.
    default: bool = True
    #: Quality tiers, best first: ``(("excellent", 0.5), ("good", 0.3))``. A value
    #: reaches a tier when it is strictly better than the bound in ``direction``;
    #: leaderboards and ``vaebench check`` show the tier reached.
    tiers: tuple[tuple[str, float], ...] = ()
    #: Fewest factors the metric is defined for (modularity and explicitness
    #: compare factors with each other: 2). Default selections skip a metric whose
    #: dataset declares fewer (``DatasetSpec.num_factors``); naming it is an error.
    min_factors: int = 1
    #: ``check(metric_name, options) -> options`` (or its import path): the metric's
    #: options (``--metric-option NAME.KEY=VALUE``) with its defaults filled in; a one-line
    #: ``ValueError`` for an unknown key or a bad value. Called before any run trains, so a
    #: bad option stops the grid instead of dropping the metric from every run, and by the
    #: metric itself on ``ctx.options_for(name)``. ``None``: not declared, the options
    #: are checked only when the metric runs.
    options: str | Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None

    def function(self) -> Callable[..., Any]:
        return _resolve(self.compute)

    def check_options(self, given: Mapping[str, Any]) -> dict[str, Any] | None:
        """``given`` checked by :attr:`options` (defaults filled in); ``None`` when the
        metric declares no checker."""
        return None if self.options is None else _resolve(self.options)(self.name, dict(given))


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset. ``load(**options) -> FactorDataset`` (see ``plugins.datasets.base``)."""

    name: str
    description: str
    load: str | Callable[..., Any]
    #: True when the dataset can render an observation for any chosen factor values.
    has_sampler: bool = False
    has_factors: bool = True
    #: How many factors the dataset has, where that is known without loading it
    #: (``None``: unknown, no metric is skipped for it).
    num_factors: int | None = None

    def loader(self) -> Callable[..., Any]:
        return _resolve(self.load)


@dataclass(frozen=True)
class BackendSpec:
    """A training backend, e.g. ``torch``, ``jax``.

    ``backend``: import path (or class) of a class implementing the ``Backend`` Protocol
    (``plugins/contract.py``): constructed with the plugin manager whose models it builds,
    with ``name``, ``resolve_device(device: str) -> DeviceInfo`` (a one-line
    ``ValueError`` subclass for a device that does not exist here) and
    ``train(spec, dataset, execution, on_progress) -> TrainedModel``.
    ``load_checkpoint``: ``fn(directory, manager) -> TrainedModel`` rebuilding what that
    backend's ``TrainedModel.save`` wrote, the model built through ``manager``; default
    the ``load_checkpoint`` of the backend class's module. Both are imported only when a
    run or a command uses the backend. ``install``: what to tell a user whose
    environment lacks the backend's framework (e.g. ``pip install 'vaebench[jax]'``).

    Models name the backends they implement in ``ModelSpec.backends``, keyed by model
    protocol: ``model_protocol`` (default: the backend's own name) is the key whose
    factories this backend builds, so a backend that trains torch models differently
    (another loop, another device runtime) declares ``model_protocol="torch"`` and runs
    every model with a torch factory.
    """

    name: str
    description: str
    backend: str | Callable[..., Any]
    load_checkpoint: str | Callable[..., Any] | None = None
    install: str = ""
    model_protocol: str = ""

    def backend_class(self) -> Callable[..., Any]:
        return _resolve(self.backend)

    def checkpoint_loader(self) -> Callable[..., Any]:
        if self.load_checkpoint is not None:
            return _resolve(self.load_checkpoint)
        if isinstance(self.backend, str):
            return load_object(f"{self.backend.split(':', 1)[0]}:load_checkpoint")
        return load_object(f"{self.backend.__module__}:load_checkpoint")
