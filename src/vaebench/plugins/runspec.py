"""RunSpec: one training run's identity, the contract a backend is handed.

It lives under ``plugins`` (not ``harness``) because backends and models read it:
the harness plans RunSpecs and hands them downward.

The run id is the hash of the canonical JSON (:meth:`RunSpec.to_json`). The rule that
keeps recorded ids valid is declared on each field, not implied by field order: a field
marked ``omitted while default`` (:data:`LATER_FIELDS`: the model zoo's hyperparameters,
the β schedule, ``start_step``, ``extra_hyperparameters``, ``model_plugin``, all added
after runs were first recorded) is left out of the canonical JSON while it holds its default (``None``, or
``()`` for ``extra_hyperparameters``), so every spec that does not use it keeps the run
id it always had. A new field must be declared that way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

#: Field metadata: left out of the canonical JSON (and so of the run id) while at its default.
OMITTED_WHILE_DEFAULT = "omitted_while_default"
#: Field metadata: a model hyperparameter, ``None`` unless the run's model reads it.
MODEL_HYPERPARAMETER = "model_hyperparameter"


def _hp_field(*, later: bool) -> Any:
    return field(default=None, metadata={MODEL_HYPERPARAMETER: True, OMITTED_WHILE_DEFAULT: later})


@dataclass(frozen=True)
class RunSpec:
    """One training run: what to train, on what, for how long.

    Units: ``beta``, ``gamma`` dimensionless weights; ``capacity`` is C_max in
    nats; ``capacity_steps`` is the number of steps over which C rises linearly
    from 0 (default: all ``steps``); ``lr`` is Adam's learning rate.
    Execution details (device, AMP, compile, threads) are not part of a spec:
    the same spec on a GPU or a CPU is the same experiment.

    The model zoo's fields (``None`` unless the model reads them):

    - β schedule (``objectives.beta_at``): ``beta_schedule`` ``constant`` (stored as
      ``None``) | ``linear`` (β_start -> β over ``beta_warmup_steps``, default all
      ``steps``) | ``cyclical`` (Fu et al. 2019: ``beta_cycles`` cycles, default 4,
      each ramping β_start -> β over its first half); ``beta_start`` default 0.
    - ``condition``: the factor cvae conditions on (default: the dataset's first).
    - ``codebook_size`` K, ``codebook_dim``, ``commitment`` β of VQ-VAE,
      ``codebook_update`` ``loss`` | ``ema`` (decay 0.99), ``dead_code_steps``
      (reset a code unused for that many steps; 0 = never).
    - ``dip_type`` ``i`` | ``ii``, ``lambda_od``, ``lambda_d`` of DIP-VAE.

    ``start_step``: for a run continued from another's checkpoint (``vaebench continue``),
    the step its training resumed at (the parent's last step); ``None`` for a run trained
    from step 0. It is part of the identity: a continued run is never mistaken for one
    trained in one go, and continued seeds of one configuration share a ``config_id``.

    ``model_plugin``: ``package==version`` of the third-party plugin whose model the run
    trains, set by the planner (``PluginManager.model_plugin``); ``None`` for a built-in
    model. It is part of the identity: after a plugin's author bumps the package version,
    ``--resume`` trains the new code instead of reusing the old code's records.
    """

    model: str
    dataset: str = "dsprites"
    dataset_path: str | None = None
    backend: str = "torch"
    architecture: str = "conv"
    beta: float | None = _hp_field(later=False)
    capacity: float | None = _hp_field(later=False)
    gamma: float | None = _hp_field(later=False)
    capacity_steps: int | None = _hp_field(later=False)
    latent_dim: int = 10
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    beta_schedule: str | None = _hp_field(later=True)
    beta_start: float | None = _hp_field(later=True)
    beta_warmup_steps: int | None = _hp_field(later=True)
    beta_cycles: int | None = _hp_field(later=True)
    condition: str | None = _hp_field(later=True)
    codebook_size: int | None = _hp_field(later=True)
    codebook_dim: int | None = _hp_field(later=True)
    commitment: float | None = _hp_field(later=True)
    codebook_update: str | None = _hp_field(later=True)
    dead_code_steps: int | None = _hp_field(later=True)
    dip_type: str | None = _hp_field(later=True)
    lambda_od: float | None = _hp_field(later=True)
    lambda_d: float | None = _hp_field(later=True)
    start_step: int | None = field(default=None, metadata={OMITTED_WHILE_DEFAULT: True})
    #: A plugin model's hyperparameters that are no field above: sorted ``(name, value)``
    #: pairs (a dict is accepted and sorted); a JSON object in the canonical JSON.
    extra_hyperparameters: tuple[tuple[str, Any], ...] = field(default=(), metadata={OMITTED_WHILE_DEFAULT: True})
    #: ``package==version`` of the third-party plugin whose model this is (``None`` for a
    #: built-in model): a new version of the plugin is a new run, never a recorded one.
    model_plugin: str | None = field(default=None, metadata={OMITTED_WHILE_DEFAULT: True})

    def __post_init__(self) -> None:
        extra = self.extra_hyperparameters
        pairs = extra.items() if isinstance(extra, Mapping) else extra
        object.__setattr__(self, "extra_hyperparameters", tuple(sorted((str(k), v) for k, v in pairs)))

    def hyperparameter(self, name: str, default: Any = None) -> Any:
        """A model hyperparameter's value by name: a field above (``beta``) or one of
        :attr:`extra_hyperparameters` (a plugin's ``sigma``); ``default`` when unset."""
        if name in MODEL_HYPERPARAMETERS:
            value = getattr(self, name)
        else:
            value = dict(self.extra_hyperparameters).get(name)
        return default if value is None else value

    @property
    def run_id(self) -> str:
        """16 hex digits of the SHA-256 of the spec's canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def config_id(self) -> str:
        """12 hex digits identifying everything but the seed: runs with equal ``config_id``
        are repetitions of one configuration, which is what leaderboards average over."""
        data = json.loads(self.to_json())
        data.pop("seed")
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys); :data:`LATER_FIELDS` are left out while at their
        default; ``extra_hyperparameters`` is an object ``{"sigma": 0.1}``."""
        data = {k: v for k, v in asdict(self).items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        if "extra_hyperparameters" in data:
            data["extra_hyperparameters"] = dict(self.extra_hyperparameters)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        parts = [self.model]
        for name in MODEL_HYPERPARAMETERS:
            value = getattr(self, name)
            if value is not None and name not in NOT_IN_LABEL:
                parts.append(f"{name}={value:g}" if isinstance(value, (int, float)) else f"{name}={value}")
        for name, value in self.extra_hyperparameters:
            parts.append(f"{name}={value:g}" if isinstance(value, (int, float)) else f"{name}={value}")
        parts.append(f"seed={self.seed}")
        if self.start_step is not None:
            parts.append(f"from step {self.start_step}")
        return " ".join(parts)


#: Fields of a RunSpec that only some models read (declared by field metadata), in field order.
MODEL_HYPERPARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(RunSpec) if f.metadata.get(MODEL_HYPERPARAMETER))

#: Fields left out of the canonical JSON while at their default: ``{field: default}``.
LATER_FIELDS: dict[str, Any] = {f.name: f.default for f in fields(RunSpec) if f.metadata.get(OMITTED_WHILE_DEFAULT)}

#: The β schedule's fields (see ``objectives.beta_at``); read by every model that reads β.
BETA_SCHEDULE_FIELDS = ("beta_schedule", "beta_start", "beta_warmup_steps", "beta_cycles")

#: Hyperparameters left out of a run's one-line label (lengths and starts of ramps).
NOT_IN_LABEL = frozenset({"capacity_steps", "beta_warmup_steps", "beta_start", "beta_cycles"})
