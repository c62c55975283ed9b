"""Grid planning: lists of values -> RunSpecs, each with a stable content hash.

The grid is the Cartesian product of every list given. A model reads only the
hyperparameters its spec names (``beta_vae`` reads β; ``beta_vae_capacity``
reads C, γ and the ramp length); the others are set to ``None`` before hashing,
so two grid points that differ only in a value the model ignores are one run.
RunSpec itself lives in :mod:`vaebench.plugins.runspec` (backends read it).
"""

from __future__ import annotations

import itertools
import numbers
from dataclasses import replace
from typing import Any, Iterable, Sequence

from vaebench.plugins.manager import PluginManager
from vaebench.plugins.runspec import BETA_SCHEDULE_FIELDS, MODEL_HYPERPARAMETERS, RunSpec

try:  # numpy's bool is no Python bool, and no number of an axis either
    from numpy import bool_ as np_bool
except ImportError:  # pragma: no cover - numpy is a dependency
    np_bool = bool


class PlanError(ValueError):
    """Invalid grid values; the message is one line for the user."""


#: Grid axes: RunSpec field -> (python type, minimum, minimum inclusive?); for a
#: ``str`` axis the minimum is ``None`` and :data:`CHOICES` lists the allowed values
#: where there is a fixed set (``condition`` is checked against the dataset when the
#: model is built).
AXES: dict[str, tuple[type, float | None, bool]] = {
    "beta": (float, 0.0, True),
    "capacity": (float, 0.0, True),
    "gamma": (float, 0.0, False),
    "capacity_steps": (int, 0, True),
    "beta_schedule": (str, None, True),
    "beta_start": (float, 0.0, True),
    "beta_warmup_steps": (int, 0, True),
    "beta_cycles": (int, 1, True),
    "condition": (str, None, True),
    "codebook_size": (int, 1, True),
    "codebook_dim": (int, 1, True),
    "commitment": (float, 0.0, True),
    "codebook_update": (str, None, True),
    "dead_code_steps": (int, 0, True),
    "dip_type": (str, None, True),
    "lambda_od": (float, 0.0, True),
    "lambda_d": (float, 0.0, True),
    "latent_dim": (int, 1, True),
    "seed": (int, 0, True),
    "steps": (int, 1, True),
    "batch_size": (int, 1, True),
    "lr": (float, 0.0, False),
}


#: Largest value of an integer axis: the records' int64 columns (``steps``, ``seed``, ...).
INT_MAX = 2**63 - 1


def parse_list(text: str | Sequence[Any] | int | float, option: str, kind: type, axis: str | None = None) -> list[Any]:
    """``"1,4,8"`` -> ``[1.0, 4.0, 8.0]``; a bad item gives one clear line naming the option.

    Accepts a comma-separated string, a list (a config file's, the API's) or one value.
    ``kind`` is ``float``, ``int`` or ``str``: floats must be finite, ints whole and within
    int64 (``4.0`` is 4, ``4.5`` is an error), names strings; ``True`` / ``False`` are none
    of these. With ``axis`` (a RunSpec field), values are also checked against that axis's range.
    """
    if isinstance(text, str):
        items: list[Any] = [t.strip() for t in text.split(",")]
    elif isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [text]
    what = {int: "an integer", float: "a number", str: "a name"}.get(kind, kind.__name__)
    out = []
    for item in items:
        if item == "":
            raise PlanError(f"{option}: empty value in {text!r}")
        if isinstance(item, (bool, np_bool)) or (kind is str and not isinstance(item, str)) \
                or not isinstance(item, (str, numbers.Real)):
            raise PlanError(f"{option}: {item!r} is not {what}")
        try:
            if kind is int and not isinstance(item, (str, numbers.Integral)) and not float(item).is_integer():
                raise ValueError
            value = kind(item)
        except (TypeError, ValueError, OverflowError):
            raise PlanError(f"{option}: {item!r} is not {what}") from None
        if kind is float and value != value:
            raise PlanError(f"{option}: NaN is not allowed")
        if kind is float and value in (float("inf"), float("-inf")):
            raise PlanError(f"{option}: {item!r} is not a finite number")
        out.append(value)
    if axis is not None:
        check_range(option, axis, out)
    return out


#: Allowed values of the ``str`` axes that have a fixed set.
CHOICES: dict[str, tuple[str, ...]] = {
    "beta_schedule": ("constant", "linear", "cyclical"),
    "codebook_update": ("loss", "ema"),
    "dip_type": ("i", "ii"),
}


def check_range(option: str, field_name: str, values: Iterable[Any]) -> None:
    kind, minimum, inclusive = AXES[field_name]
    if kind is str:
        allowed = CHOICES.get(field_name)
        for v in values:
            if not isinstance(v, str) or not v:
                raise PlanError(f"{option}: {v!r} is not a name")
            if allowed is not None and v not in allowed:
                raise PlanError(f"{option}: {v!r} is not one of {', '.join(allowed)}")
        return
    for v in values:
        if isinstance(v, (bool, np_bool)) or not isinstance(v, numbers.Real) \
                or (kind is int and not isinstance(v, numbers.Integral) and not float(v).is_integer()):
            raise PlanError(f"{option}: {v!r} is not {'an integer' if kind is int else 'a number'}")
        if v != v or v in (float("inf"), float("-inf")):
            raise PlanError(f"{option}: {v!r} is not a finite number")
        if v < minimum or (not inclusive and v == minimum):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise PlanError(f"{option}: {v:g} is out of range (must be {bound})")
        if kind is int and v > INT_MAX:
            raise PlanError(f"{option}: {v} is out of range (must be <= {INT_MAX}, the largest int64)")


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
        axes[name] = parse_list(values, name, AXES[name][0], name)  # typed and checked, as from the CLI
    if not models:
        raise PlanError("no model given (try --model beta_vae)")
    specs_by_model = {m: manager.model(m) for m in models}
    for name in datasets:
        manager.dataset(name)
    registered = manager.specs.get("backends", {})
    protocol = {name: spec.model_protocol or name for name, spec in registered.items()}
    for m, mspec in specs_by_model.items():
        for b in backends:
            if protocol.get(b, b) not in mspec.backends:
                able = sorted(n for n, p in protocol.items() if p in mspec.backends) or sorted(mspec.backends)
                raise PlanError(f"model {m!r} is not implemented by the {b!r} backend (backends that run it: "
                                f"{', '.join(able) or 'none'})")
    for hp in MODEL_HYPERPARAMETERS:
        if hp in axes and not any(hp in fields_read(s.hyperparameters) for s in specs_by_model.values()):
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


def fields_read(hyperparameters: Sequence[str]) -> tuple[str, ...]:
    """The RunSpec fields a model with these ``ModelSpec.hyperparameters`` reads: a model
    that reads β also reads the β schedule."""
    out = tuple(hyperparameters)
    if "beta" in out:
        out += tuple(f for f in BETA_SCHEDULE_FIELDS if f not in out)
    return out


def normalise(spec: RunSpec, reads: Sequence[str], defaults: dict[str, Any], given: dict[str, Any]) -> RunSpec:
    """Keep the hyperparameters the model reads (given value, else its default), clear the rest.

    The β schedule has one canonical form per meaning: ``constant`` is stored as
    ``None`` with its other fields ``None`` (so β-VAE runs keep their ids); ``linear``
    keeps ``beta_start`` (default 0) and ``beta_warmup_steps`` (default ``steps``);
    ``cyclical`` keeps ``beta_start`` (default 0) and ``beta_cycles`` (default 4).
    DIP-VAE's ``lambda_d`` defaults to disentanglement_lib's study ratio:
    10·λ_od for type ``i``, λ_od for type ``ii``.
    """
    reads = fields_read(reads)
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
    schedule = updates.get("beta_schedule")
    if schedule in (None, "constant"):
        updates.update(dict.fromkeys(BETA_SCHEDULE_FIELDS))
    else:
        if updates.get("beta_start") is None:
            updates["beta_start"] = 0.0
        if schedule == "linear":
            updates["beta_cycles"] = None
            if updates.get("beta_warmup_steps") is None:
                updates["beta_warmup_steps"] = spec.steps
        else:  # cyclical
            updates["beta_warmup_steps"] = None
            if updates.get("beta_cycles") is None:
                updates["beta_cycles"] = 4
    if "lambda_d" in reads and updates.get("lambda_d") is None and updates.get("lambda_od") is not None:
        factor = 10.0 if updates.get("dip_type", "i") == "i" else 1.0
        updates["lambda_d"] = factor * float(updates["lambda_od"])
    for hp in ("beta", "capacity", "gamma", "beta_start", "commitment", "lambda_od", "lambda_d"):
        if updates.get(hp) is not None:
            updates[hp] = float(updates[hp])
    return replace(spec, **updates)
