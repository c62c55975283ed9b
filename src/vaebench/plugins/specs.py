"""What a plugin registers: model, metric, dataset, backend and executor specs.

Specs are plain data. Anything heavy (torch, jax, scikit-learn) is named by an
import path ``"package.module:attribute"`` and imported only when used, so that
listing plugins or printing ``--help`` never pays for a framework import.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, get_args

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

#: The allowed values of :data:`Direction` and :data:`Need`, checked when a spec is made.
DIRECTIONS: tuple[str, ...] = get_args(Direction)
NEEDS: tuple[str, ...] = get_args(Need)


def import_path_problem(target: Any) -> str | None:
    """Why ``target`` is neither a callable nor an import path ``"package.module:attr"`` (every
    part a Python identifier), or ``None``. Only the spelling is checked: nothing is imported
    (``vaebench plugins --check`` imports it)."""
    if callable(target):
        return None
    if not isinstance(target, str):
        return f"{target!r} is neither a callable nor an import path 'package.module:attribute'"
    module_name, colon, attr = target.partition(":")
    parts = module_name.split(".") + (attr.split(".") if colon else [])
    if not colon or not attr or not all(p.isidentifier() for p in parts):
        return f"import path {target!r} must look like 'package.module:attribute'"
    return None


def _check_paths(kind: str, name: str, paths: Mapping[str, Any]) -> None:
    """Raise a one-line ``ValueError`` naming the first field of ``paths`` that is not an import path."""
    for field_name, target in paths.items():
        problem = import_path_problem(target)
        if problem is not None:
            raise ValueError(f"{kind} {name!r}: {field_name}: {problem}")


#: Where a metric belongs (``MetricSpec.category``; the report's groups, in this order).
METRIC_CATEGORIES = ("disentanglement", "reconstruction", "image_quality", "other")


def default_category(needs: frozenset[str]) -> str:
    """The category of a metric that declares none: ``disentanglement`` when it needs
    ``factors``, ``image_quality`` when it needs ``reconstructions`` or a ``generator``,
    else ``other``."""
    if "factors" in needs:
        return "disentanglement"
    if {"reconstructions", "generator"} & set(needs):
        return "image_quality"
    return "other"


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
class Hyperparameter:
    """One hyperparameter a model reads: a grid axis (``--NAME VALUES``, ``--hp NAME=VALUES``,
    a config-file key, an API keyword argument), declared once.

    ``type``: ``float``, ``int`` or ``str``. ``default``: the value a run gets when none
    is given (a model's ``ModelSpec.defaults`` entry wins; ``None``: unset, the model
    decides). Numbers must be ``>= minimum`` (``> minimum`` when not ``inclusive``;
    ``None``: no bound); a ``str`` with ``choices`` must be one of them. ``aliases``:
    other spellings accepted for the axis (``betas`` for ``beta``: ``--betas``, a config's
    ``betas = [...]``, ``api.run_grid(betas=...)``). ``help``: one line, shown by
    ``vaebench list models``.

    A name that is a RunSpec field (``beta``, ``gamma``, ...) is stored in that field;
    any other name is stored in ``RunSpec.extra_hyperparameters`` and read by the model's
    factory with ``spec.hyperparameter(name)``.
    """

    name: str
    type: type = float
    default: Any = None
    minimum: float | None = None
    inclusive: bool = True
    choices: tuple[str, ...] = ()
    help: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise ValueError(f"hyperparameter name {self.name!r} must be a Python identifier without a leading '_'")
        if self.type not in (float, int, str):
            raise ValueError(f"hyperparameter {self.name!r}: type must be float, int or str, not {self.type!r}")
        if self.type is str and self.minimum is not None:
            raise ValueError(f"hyperparameter {self.name!r}: a str hyperparameter has choices, not a minimum")
        if self.choices and self.type is not str:
            raise ValueError(f"hyperparameter {self.name!r}: choices are for str hyperparameters")
        object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "aliases", tuple(self.aliases))

    def bound(self) -> str:
        """The allowed values in words: ``>= 0``, ``> 0``, ``one of i, ii`` or ``""``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.minimum is None:
            return ""
        return f"{'>=' if self.inclusive else '>'} {self.minimum:g}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of :attr:`type`) is not allowed, or ``None``."""
        if self.type is str:
            if not isinstance(value, str) or not value:
                return f"{value!r} is not a name"
            if self.choices and value not in self.choices:
                return f"{value!r} is not one of {', '.join(self.choices)}"
            return None
        if self.minimum is not None and (value < self.minimum or (not self.inclusive and value == self.minimum)):
            return f"{value:g} is out of range (must be {self.bound()})"
        return None


@dataclass(frozen=True)
class ModelSpec:
    """A model family, e.g. ``beta_vae``.

    ``backends`` maps a backend name (``"torch"``, ``"jax"``) to a factory
    ``factory(spec: RunSpec, image_shape: tuple[int, int, int]) -> model``; the
    model object implements that backend's model protocol (``TorchModel`` /
    ``JaxModel`` in ``plugins/contract.py``). ``hyperparameters`` declares what the model reads:
    :class:`Hyperparameter` objects, or plain names of hyperparameters another model
    declares (``"beta"``; a plain ``"beta"`` also reads the β schedule, as it always did;
    a plain name nobody declares is a float with no bound). Each is a grid axis; the
    ones a model does not read are normalised away, so that two grid points differing
    only in an unused value are the same run. ``defaults``: per-model defaults, winning
    over the declarations' (``beta_vae``'s β is 4, ``cvae``'s 1).

    ``likelihood``: the decoder's likelihood, which sets the unit of the ``reconstruction``
    metric (a negative log-likelihood): ``"bernoulli"`` (the default; binary cross-entropy
    summed over pixels), ``"gaussian"``, ``"laplace"``, ``"categorical"`` or another lowercase
    name. The record stores it (column ``likelihood``); ``leaderboard`` and ``compare`` never
    rank ``reconstruction`` across likelihoods.
    """

    name: str
    description: str
    backends: dict[str, str | Callable[..., Any]]
    hyperparameters: tuple[Hyperparameter | str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        if not isinstance(self.backends, Mapping):
            raise TypeError(f"model {self.name!r}: backends maps a backend name to a factory, "
                            f"not {type(self.backends).__name__}")
        _check_paths("model", self.name, {f"backends[{b!r}]": f for b, f in self.backends.items()})
        if not (isinstance(self.likelihood, str) and self.likelihood.isidentifier() and self.likelihood.islower()):
            raise ValueError(f"model {self.name!r}: likelihood must be a lowercase name such as 'bernoulli' or "
                             f"'gaussian', not {self.likelihood!r}")
        for hp in self.hyperparameters:
            if not isinstance(hp, (Hyperparameter, str)):
                raise TypeError(f"model {self.name!r}: hyperparameters holds Hyperparameter objects or names, "
                                f"not {type(hp).__name__}")
        object.__setattr__(self, "hyperparameters", tuple(self.hyperparameters))

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        """The names in :attr:`hyperparameters`, as declared (plain names as given)."""
        return tuple(hp if isinstance(hp, str) else hp.name for hp in self.hyperparameters)

    def import_paths(self) -> dict[str, str]:
        """Every import path this spec names (field -> path)."""
        return {f"backends[{b!r}]": f for b, f in self.backends.items() if isinstance(f, str)}

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
    #: Where the metric belongs, one of :data:`METRIC_CATEGORIES` (the report's groups; the
    #: record stores it beside the direction). ``""``: derived from ``needs``
    #: (:func:`default_category`).
    category: str = ""

    def __post_init__(self) -> None:
        """A misspelt direction, an unknown need or category, malformed tiers or min_factors or
        a malformed import path is a one-line ``ValueError`` here, so the plugin registering it
        fails (``vaebench plugins``)."""
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction {self.direction!r} is not one of {', '.join(DIRECTIONS)}")
        if isinstance(self.needs, str) or not all(isinstance(n, str) for n in self.needs):
            raise ValueError(f"metric {self.name!r}: needs is a set of names, e.g. frozenset({{'latents'}}), "
                             f"not {self.needs!r}")
        unknown = sorted(set(self.needs) - set(NEEDS))
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown need(s) {', '.join(map(repr, unknown))} "
                             f"(allowed: {', '.join(NEEDS)})")
        object.__setattr__(self, "needs", frozenset(self.needs))
        if not self.category:
            object.__setattr__(self, "category", default_category(self.needs))
        elif self.category not in METRIC_CATEGORIES:
            raise ValueError(f"metric {self.name!r}: category {self.category!r} is not one of "
                             f"{', '.join(METRIC_CATEGORIES)}")
        tiers = self.tiers
        if isinstance(tiers, (str, bytes)) or not all(
                isinstance(t, (tuple, list)) and len(t) == 2 and isinstance(t[0], str)
                and isinstance(t[1], (int, float)) and not isinstance(t[1], bool) for t in tiers):
            raise ValueError(f"metric {self.name!r}: tiers holds (label, bound) pairs best first, e.g. "
                             f"(('excellent', 0.5), ('good', 0.3)), not {tiers!r}")
        object.__setattr__(self, "tiers", tuple((str(t[0]), float(t[1])) for t in tiers))
        if not isinstance(self.min_factors, int) or isinstance(self.min_factors, bool) or self.min_factors < 1:
            raise ValueError(f"metric {self.name!r}: min_factors must be an int >= 1, got {self.min_factors!r}")
        _check_paths("metric", self.name, {"compute": self.compute,
                                           **({} if self.options is None else {"options": self.options})})

    def import_paths(self) -> dict[str, str]:
        """Every import path this spec names (field -> path)."""
        return {k: v for k, v in (("compute", self.compute), ("options", self.options)) if isinstance(v, str)}

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

    def __post_init__(self) -> None:
        _check_paths("dataset", self.name, {"load": self.load})

    def import_paths(self) -> dict[str, str]:
        """Every import path this spec names (field -> path)."""
        return {"load": self.load} if isinstance(self.load, str) else {}

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

    def __post_init__(self) -> None:
        _check_paths("backend", self.name, {"backend": self.backend, **(
            {} if self.load_checkpoint is None else {"load_checkpoint": self.load_checkpoint})})

    def import_paths(self) -> dict[str, str]:
        """Every import path this spec names (field -> path), the default checkpoint loader included."""
        paths = {k: v for k, v in (("backend", self.backend), ("load_checkpoint", self.load_checkpoint))
                 if isinstance(v, str)}
        if self.load_checkpoint is None and isinstance(self.backend, str):
            paths["load_checkpoint"] = f"{self.backend.split(':', 1)[0]}:load_checkpoint"
        return paths

    def backend_class(self) -> Callable[..., Any]:
        return _resolve(self.backend)

    def checkpoint_loader(self) -> Callable[..., Any]:
        if self.load_checkpoint is not None:
            return _resolve(self.load_checkpoint)
        if isinstance(self.backend, str):
            return load_object(f"{self.backend.split(':', 1)[0]}:load_checkpoint")
        return load_object(f"{self.backend.__module__}:load_checkpoint")


#: The types an executor option may have (``ExecutorSpec.options``).
OPTION_TYPES: tuple[type, ...] = (str, int, float, bool)


@dataclass(frozen=True)
class ExecutorSpec:
    """Where and how a grid's planned runs train: ``local`` (this machine, by a strategy),
    or a cluster scheduler a plugin brings (``--executor NAME``, a config's ``executor = NAME``).

    ``executor``: import path (or callable) of a factory ``factory(options: dict[str, Any])
    -> Executor`` (``plugins/contract.py``), handed :attr:`options` checked and with their
    defaults filled in (:meth:`check_options`); imported only when a grid runs with it.
    ``options``: option name -> ``(type, default, help)``, ``type`` one of
    :data:`OPTION_TYPES` (an ``int`` is accepted for a ``float``), ``default`` of that type or
    ``None`` (unset), ``help`` one line shown by ``vaebench list executors``.
    """

    name: str
    description: str
    executor: str | Callable[..., Any]
    options: Mapping[str, tuple[type, Any, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A malformed import path or option declaration is a one-line ``ValueError`` here,
        so the plugin registering it fails (``vaebench plugins``)."""
        _check_paths("executor", self.name, {"executor": self.executor})
        if not isinstance(self.options, Mapping):
            raise TypeError(f"executor {self.name!r}: options maps an option name to (type, default, help), "
                            f"not {type(self.options).__name__}")
        for key, declared in self.options.items():
            if not (isinstance(key, str) and key.isidentifier() and not key.startswith("_")):
                raise ValueError(f"executor {self.name!r}: option name {key!r} must be a Python identifier "
                                 "without a leading '_'")
            if not (isinstance(declared, tuple) and len(declared) == 3 and declared[0] in OPTION_TYPES
                    and isinstance(declared[2], str)):
                raise ValueError(f"executor {self.name!r}: option {key!r} must be (type, default, help) with "
                                 f"type one of {', '.join(t.__name__ for t in OPTION_TYPES)}, not {declared!r}")
            if declared[1] is not None and _option_problem(declared[0], declared[1]) is not None:
                raise ValueError(f"executor {self.name!r}: option {key!r}: default "
                                 f"{_option_problem(declared[0], declared[1])}")
        object.__setattr__(self, "options", dict(self.options))

    def import_paths(self) -> dict[str, str]:
        """Every import path this spec names (field -> path)."""
        return {"executor": self.executor} if isinstance(self.executor, str) else {}

    def check_options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``given`` (option name -> value) checked against :attr:`options`, every declared
        option present (its default where not given or ``None``). Raises a one-line
        ``ValueError`` for an unknown name or a value not of the declared type."""
        out = {key: default for key, (_, default, _) in self.options.items()}
        for key, value in (given or {}).items():
            if key not in self.options:
                raise ValueError(f"executor {self.name!r}: unknown option {key!r} "
                                 f"(options: {', '.join(sorted(self.options)) or 'none'})")
            if value is None:  # unset (a manifest keeps every option, the unset ones as null)
                continue
            problem = _option_problem(self.options[key][0], value)
            if problem is not None:
                raise ValueError(f"executor {self.name!r}: option {key!r}: {problem}")
            out[key] = float(value) if self.options[key][0] is float else value
        return out

    def build(self, options: Mapping[str, Any] | None = None) -> Any:
        """The ``Executor``: the factory called with :meth:`check_options` of ``options``."""
        return _resolve(self.executor)(self.check_options(options))


def _option_problem(kind: type, value: Any) -> str | None:
    """Why ``value`` is not a ``kind`` (``bool`` is not an ``int``; an ``int`` is a ``float``)."""
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    return None if ok else f"{value!r} is not of type {kind.__name__}"


@dataclass(frozen=True)
class PresetSpec:
    """A study preset: a TOML file in the ``vaebench run --config`` shape (a ``[run]`` table,
    per-model lists in ``[models.MODEL]``) plus a ``[preset]`` table (``name``,
    ``description``, ``source``: the paper and the repository files the values came from,
    ``notes``: what could not be expressed). ``vaebench run --preset NAME`` plans it;
    ``vaebench presets`` lists them.

    ``path``: the TOML file (a plugin ships it as package data:
    ``Path(__file__).parent / "mystudy.toml"``); read when the preset is used.
    """

    name: str
    description: str
    path: str | os.PathLike[str]

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path).endswith(".toml"):
            raise ValueError(f"preset {self.name!r}: path must be a .toml file, not {self.path!r}")

    def import_paths(self) -> dict[str, str]:
        """A preset names no import path (its file is read when used)."""
        return {}



@dataclass(frozen=True)
class ReferenceSpec:
    """A reference pack: published values of a metric per model / dataset / setting, with their
    sources, that ``vaebench leaderboard --reference NAME`` and the report set a run against.

    Exactly one of ``path`` and ``data``. ``path``: the pack file (TOML or JSON, never pickle),
    a filesystem path or ``"package:relative/file.toml"`` (package data, read with
    ``importlib.resources``); ``data``: the pack's content as a mapping (the same shape as the
    file: ``harness/references.py`` says it). Nothing is read when the spec is made; a malformed
    pack is a one-line error when it is used.
    """

    name: str
    description: str
    path: str | None = None
    data: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError(f"reference {self.name!r}: give exactly one of path and data")
        if self.path is not None and not isinstance(self.path, str):
            raise TypeError(f"reference {self.name!r}: path must be a string, not {type(self.path).__name__}")
        if self.data is not None and not isinstance(self.data, Mapping):
            raise TypeError(f"reference {self.name!r}: data must be a mapping, not {type(self.data).__name__}")

    def import_paths(self) -> dict[str, str]:
        """A pack names no import path."""
        return {}



@dataclass(frozen=True)
class LoggerSpec:
    """An experiment tracker that watches runs while they train (``--log-to NAME[:TARGET]``):
    ``mlflow``, ``tensorboard``, ``wandb``, or one a plugin brings.

    ``logger``: import path (or callable) of a factory ``factory(target: str | None, context:
    LoggerContext) -> Logger`` (``plugins/contract.py``): ``target`` is what followed the colon
    in ``--log-to NAME:TARGET`` (``None`` without one), ``context`` the grid's id and registry.
    Imported when a grid that logs to it is checked, before anything trains: an
    ``ImportError`` there is a one-line error naming ``install`` (e.g.
    ``pip install 'vaebench[mlflow]'``)."""

    name: str
    description: str
    logger: str | Callable[..., Any]
    install: str = ""

    def __post_init__(self) -> None:
        _check_paths("logger", self.name, {"logger": self.logger})

    def import_paths(self) -> dict[str, str]:
        """Every import path this spec names (field -> path)."""
        return {"logger": self.logger} if isinstance(self.logger, str) else {}

    def factory(self) -> Callable[..., Any]:
        return _resolve(self.logger)
