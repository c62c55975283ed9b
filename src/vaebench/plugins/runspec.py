"""RunSpec: one training run's identity, the contract a backend is handed.

It lives under ``plugins`` (not ``harness``) because backends and models read it:
the harness plans RunSpecs and hands them downward.

Fields added after the first recorded runs (:data:`LATER_FIELDS`: the model zoo's
hyperparameters and the β schedule) are left out of the canonical JSON while they
are ``None``, so every spec that does not use them keeps the run id it always had.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

#: Fields of a RunSpec that only some models read.
MODEL_HYPERPARAMETERS = (
    "beta", "capacity", "gamma", "capacity_steps",
    # β schedule (models that read β: beta_vae, cvae, beta_tcvae)
    "beta_schedule", "beta_start", "beta_warmup_steps", "beta_cycles",
    # cvae
    "condition",
    # vq_vae
    "codebook_size", "codebook_dim", "commitment", "codebook_update", "dead_code_steps",
    # dip_vae
    "dip_type", "lambda_od", "lambda_d",
)

#: RunSpec fields added after runs were first recorded: omitted from the canonical
#: JSON (and so from the run id) while ``None``.
LATER_FIELDS = frozenset(MODEL_HYPERPARAMETERS[4:]) | {"start_step"}

#: The β schedule's fields (see ``objectives.beta_at``); read by every model that reads β.
BETA_SCHEDULE_FIELDS = ("beta_schedule", "beta_start", "beta_warmup_steps", "beta_cycles")



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
    """

    model: str
    dataset: str = "dsprites"
    dataset_path: str | None = None
    backend: str = "torch"
    architecture: str = "conv"
    beta: float | None = None
    capacity: float | None = None
    gamma: float | None = None
    capacity_steps: int | None = None
    latent_dim: int = 10
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    beta_schedule: str | None = None
    beta_start: float | None = None
    beta_warmup_steps: int | None = None
    beta_cycles: int | None = None
    condition: str | None = None
    codebook_size: int | None = None
    codebook_dim: int | None = None
    commitment: float | None = None
    codebook_update: str | None = None
    dead_code_steps: int | None = None
    dip_type: str | None = None
    lambda_od: float | None = None
    lambda_d: float | None = None
    start_step: int | None = None

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
        """Canonical JSON (sorted keys); :data:`LATER_FIELDS` are left out while ``None``."""
        data = {k: v for k, v in asdict(self).items() if not (v is None and k in LATER_FIELDS)}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        parts = [self.model]
        for name in MODEL_HYPERPARAMETERS:
            value = getattr(self, name)
            if value is not None and name not in ("capacity_steps", "beta_warmup_steps", "beta_start", "beta_cycles"):
                parts.append(f"{name}={value:g}" if isinstance(value, (int, float)) else f"{name}={value}")
        parts.append(f"seed={self.seed}")
        if self.start_step is not None:
            parts.append(f"from step {self.start_step}")
        return " ".join(parts)
