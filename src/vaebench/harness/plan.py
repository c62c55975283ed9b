"""Grid planning: lists of values -> RunSpecs, each with a stable content hash.

The grid is the Cartesian product of every list given. A model reads only the
hyperparameters its spec names (``beta_vae`` reads β; ``beta_vae_capacity``
reads C, γ and the ramp length); the others are set to ``None`` before hashing,
so two grid points that differ only in a value the model ignores are one run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Sequence

from vaebench.plugins.manager import PluginManager

#: Fields of a RunSpec that only some models read.
MODEL_HYPERPARAMETERS = ("beta", "capacity", "gamma", "capacity_steps")


class PlanError(ValueError):
    """Invalid grid values; the message is one line for the user."""


@dataclass(frozen=True)
class RunSpec:
    """One training run: what to train, on what, for how long.

    Units: ``beta``, ``gamma`` dimensionless weights; ``capacity`` is C_max in
    nats; ``capacity_steps`` is the number of steps over which C rises linearly
    from 0 (default: all ``steps``); ``lr`` is Adam's learning rate.
    Execution details (device, AMP, compile, threads) are not part of a spec:
    the same spec on a GPU or a CPU is the same experiment.
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

    @property
    def run_id(self) -> str:
        """16 hex digits of the SHA-256 of the spec's canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        parts = [self.model]
        for name in MODEL_HYPERPARAMETERS:
            value = getattr(self, name)
            if value is not None and name != "capacity_steps":
                parts.append(f"{name}={value:g}")
        parts.append(f"seed={self.seed}")
        return " ".join(parts)


#: Grid axes: RunSpec field -> (python type, minimum, minimum inclusive?).
AXES: dict[str, tuple[type, float, bool]] = {
    "beta": (float, 0.0, True),
    "capacity": (float, 0.0, True),
    "gamma": (float, 0.0, False),
    "capacity_steps": (int, 0, True),
    "latent_dim": (int, 1, True),
    "seed": (int, 0, True),
    "steps": (int, 1, True),
    "batch_size": (int, 1, True),
    "lr": (float, 0.0, False),
}


def parse_list(text: str | Sequence[Any] | int | float, option: str, kind: type, axis: str | None = None) -> list[Any]:
    """``"1,4,8"`` -> ``[1.0, 4.0, 8.0]``; a bad item gives one clear line naming the option.

    With ``axis`` (a RunSpec field), values are also checked against that axis's range.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        items: list[Any] = [text]
    elif isinstance(text, str):
        items = [t.strip() for t in text.split(",")]
    else:
        items = list(text)
    out = []
    for item in items:
        if item == "":
            raise PlanError(f"{option}: empty value in {text!r}")
        try:
            value = kind(item)
            if kind is int and isinstance(item, float) and not item.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise PlanError(f"{option}: {item!r} is not {what}") from None
        if kind is float and value != value:
            raise PlanError(f"{option}: NaN is not allowed")
        out.append(value)
    if axis is not None:
        check_range(option, axis, out)
    return out


def check_range(option: str, field_name: str, values: Iterable[Any]) -> None:
    _, minimum, inclusive = AXES[field_name]
    for v in values:
        if v < minimum or (not inclusive and v == minimum):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise PlanError(f"{option}: {v:g} is out of range (must be {bound})")


def plan_grid(
    manager: PluginManager,
    models: Sequence[str],
    axes: dict[str, Sequence[Any]] | None = None,
    datasets: Sequence[str] = ("dsprites",),
    backends: Sequence[str] = ("torch",),
    architectures: Sequence[str] = ("conv",),
    dataset_path: str | None = None,
) -> list[RunSpec]:
    """Expand the product of all lists into de-duplicated RunSpecs, in grid order.

    ``axes`` maps a RunSpec field (``beta``, ``seed``, ``latent_dim``, ...) to its
    values. Raises :class:`PlanError` for out-of-range values, unknown names, or an
    axis that no selected model reads (``--capacities`` with only ``beta_vae``).
    """
    axes = {k: list(v) for k, v in (axes or {}).items() if v is not None and len(v) > 0}
    for name, values in axes.items():
        if name not in AXES:
            raise PlanError(f"unknown grid axis {name!r}")
        check_range(name, name, values)
    if not models:
        raise PlanError("no model given (try --model beta_vae)")
    specs_by_model = {m: manager.model(m) for m in models}
    for name in datasets:
        manager.dataset(name)
    for m, mspec in specs_by_model.items():
        for b in backends:
            if b not in mspec.backends:
                raise PlanError(f"model {m!r} has no {b!r} backend (has: {', '.join(sorted(mspec.backends))})")
    for hp in MODEL_HYPERPARAMETERS:
        if hp in axes and not any(hp in s.hyperparameters for s in specs_by_model.values()):
            raise PlanError(f"no selected model reads {hp!r} (models: {', '.join(models)})")

    plan: list[RunSpec] = []
    seen: set[str] = set()
    names = list(axes)
    for model, dataset, backend, arch in itertools.product(models, datasets, backends, architectures):
        mspec = specs_by_model[model]
        for combo in itertools.product(*(axes[n] for n in names)):
            values = dict(zip(names, combo))
            spec = RunSpec(model=model, dataset=dataset, dataset_path=dataset_path, backend=backend, architecture=arch)
            spec = replace(spec, **{k: v for k, v in values.items() if k not in MODEL_HYPERPARAMETERS})
            spec = normalise(spec, mspec.hyperparameters, mspec.defaults, values)
            if spec.run_id not in seen:
                seen.add(spec.run_id)
                plan.append(spec)
    return plan


def normalise(spec: RunSpec, reads: Sequence[str], defaults: dict[str, Any], given: dict[str, Any]) -> RunSpec:
    """Keep the hyperparameters the model reads (given value, else its default), clear the rest."""
    updates: dict[str, Any] = {}
    for hp in MODEL_HYPERPARAMETERS:
        if hp not in reads:
            updates[hp] = None
        elif given.get(hp) is not None:
            updates[hp] = given[hp]
        elif hp == "capacity_steps" and defaults.get(hp) is None:
            updates[hp] = spec.steps  # ramp over the whole budget unless told otherwise
        else:
            updates[hp] = defaults.get(hp)
    for hp in ("beta", "capacity", "gamma"):
        if updates.get(hp) is not None:
            updates[hp] = float(updates[hp])
    return replace(spec, **updates)
