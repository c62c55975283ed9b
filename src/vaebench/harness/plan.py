"""Grid planning: lists of values -> RunSpecs, each with a stable content hash.

The grid is the Cartesian product of every list given. A model reads only the
hyperparameters its spec names (``beta_vae`` reads β; ``beta_vae_capacity``
reads C, γ and the ramp length); the others are set to ``None`` before hashing,
so two grid points that differ only in a value the model ignores are one run.
A third-party plugin's model carries its plugin's ``package==version``
(``RunSpec.model_plugin``), so a new version of the plugin plans new runs.
RunSpec itself lives in :mod:`vaebench.plugins.runspec` (backends read it).
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, Mapping, Sequence

from vaebench.harness.axes import INT_MAX, AxisTable, PlanError, axis_table, parse_list
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.runspec import BETA_SCHEDULE_FIELDS, MODEL_HYPERPARAMETERS, RunSpec
from vaebench.plugins.specs import Hyperparameter

__all__ = ["INT_MAX", "PlanError", "parse_list", "plan_grid", "normalise", "GRID_ORDER"]

#: The order the axes vary in, the last fastest (then any other axis, in the order given):
#: the order ``vaebench run`` always planned in.
GRID_ORDER = ("beta", "capacity", "gamma", "capacity_steps", "seed", "latent_dim", "steps", "batch_size", "lr",
              *MODEL_HYPERPARAMETERS[4:])


def plan_grid(
    manager: PluginManager,
    models: Sequence[str],
    axes: Mapping[str, Any] | None = None,
    datasets: Sequence[str] = ("dsprites",),
    backends: Sequence[str] = ("torch",),
    architectures: Sequence[str] = ("conv",),
    dataset_path: str | None = None,
    per_model: Mapping[str, Mapping[str, Any]] | None = None,
    table: AxisTable | None = None,
) -> list[RunSpec]:
    """Expand the product of all lists into de-duplicated RunSpecs, in grid order.

    ``axes`` maps an axis (a hyperparameter's name or alias: ``beta`` / ``betas``,
    ``seed``, a plugin's ``sigma``) to its values: a list, one value or a string
    ``"1,4,8"`` / ``"1:16:5:log"`` (:func:`parse_list`). ``per_model`` maps a model
    to its own lists, ``{"factor_vae": {"gamma": [10, 40]}}``: for that model they
    replace the top-level list of the same axis (per-model wins). Raises
    :class:`PlanError` for out-of-range values, unknown names, or an axis that no
    selected model reads (``--capacities`` with only ``beta_vae``).
    """
    table = table or axis_table(manager)
    top = _typed_axes(table, axes or {}, "")
    own = {model: _typed_axes(table, given or {}, f"{model}.") for model, given in (per_model or {}).items()}
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
    reads = {m: table.model_reads(m) for m in models}
    model_plugins = {m: manager.model_plugin(m) for m in models}  # a third-party model's version is in its run id
    for model, given in own.items():
        if model not in specs_by_model:
            raise PlanError(f"per-model values for {model!r}, which is not a selected model (models: {', '.join(models)})")
        for name in given:
            if not table.is_shared(name) and name not in reads[model]:
                raise PlanError(f"{model}.{name}: model {model!r} does not read {name!r} "
                                f"(it reads: {', '.join(reads[model]) or 'none'})")
    for name in top:
        if not table.is_shared(name) and not any(name in r for r in reads.values()):
            raise PlanError(f"no selected model reads {name!r} (models: {', '.join(models)})")

    plan: list[RunSpec] = []
    seen: set[str] = set()
    for model, dataset, backend, arch in itertools.product(models, datasets, backends, architectures):
        mspec = specs_by_model[model]
        lists = _model_lists(model, reads[model], {**top, **own.get(model, {})}, table)
        names = list(lists)
        for combo in itertools.product(*(lists[n] for n in names)):
            values = dict(zip(names, combo))
            spec = RunSpec(model=model, dataset=dataset, dataset_path=dataset_path, backend=backend, architecture=arch,
                           model_plugin=model_plugins[model])
            spec = replace(spec, **{k: v for k, v in values.items() if table.is_shared(k)})
            spec = normalise(spec, reads[model], mspec.defaults, values)
            if spec.run_id not in seen:
                seen.add(spec.run_id)
                plan.append(spec)
    return plan


def _typed_axes(table: AxisTable, given: Mapping[str, Any], prefix: str) -> dict[str, list[Any]]:
    """``given`` (spellings -> values) by axis name, each list typed and checked by the
    axis's declaration (the first registered); empty and ``None`` lists left out."""
    out: dict[str, list[Any]] = {}
    for spelling, values in given.items():
        if values is None or (isinstance(values, (list, tuple)) and len(values) == 0):
            continue
        name = table.name(spelling)
        if name is None:
            raise PlanError(f"unknown grid axis {prefix}{spelling!r} (known: {', '.join(sorted(table.axes))})")
        if name in out:
            raise PlanError(f"{prefix}{spelling}: axis {name!r} given twice")
        out[name] = table.parse(name, values, prefix + name)
    return out


def _model_lists(model: str, reads: Mapping[str, Hyperparameter], lists: Mapping[str, list[Any]],
                 table: AxisTable) -> dict[str, list[Any]]:
    """The lists one model's grid points take, in :data:`GRID_ORDER`: the shared axes and
    the ones it reads, each re-checked by the model's own declaration."""
    out: dict[str, list[Any]] = {}
    for name, values in lists.items():
        if table.is_shared(name):
            out[name] = values
        elif name in reads:
            decl = reads[name]
            retype = decl is not table.axes[name] or name in table.loose
            out[name] = parse_list(values, f"{name} (model {model})", decl.type, decl) if retype else values
    rank = {n: i for i, n in enumerate(GRID_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def normalise(spec: RunSpec, reads: Mapping[str, Hyperparameter], defaults: Mapping[str, Any],
              given: Mapping[str, Any]) -> RunSpec:
    """Keep the hyperparameters the model reads (``reads``: its declarations by name;
    the given value, else the model's ``defaults`` entry, else the declaration's default),
    clear the rest. A float hyperparameter is stored as a float (4 and 4.0 are one run).
    Hyperparameters that are no RunSpec field go to ``extra_hyperparameters`` (unset: left out).

    The β schedule has one canonical form per meaning: ``constant`` is stored as
    ``None`` with its other fields ``None`` (so β-VAE runs keep their ids); ``linear``
    keeps ``beta_start`` (default 0) and ``beta_warmup_steps`` (default ``steps``);
    ``cyclical`` keeps ``beta_start`` (default 0) and ``beta_cycles`` (default 4).
    ``capacity_steps`` defaults to ``steps``. DIP-VAE's ``lambda_d`` defaults to
    disentanglement_lib's study ratio: 10·λ_od for type ``i``, λ_od for type ``ii``.
    """
    def value(name: str) -> Any:
        if given.get(name) is not None:
            return given[name]
        return defaults[name] if name in defaults else reads[name].default

    updates: dict[str, Any] = {}
    for hp in MODEL_HYPERPARAMETERS:
        if hp not in reads:
            updates[hp] = None
        elif hp == "capacity_steps" and value(hp) is None:
            updates[hp] = spec.steps  # ramp over the whole budget unless told otherwise
        else:
            updates[hp] = value(hp)
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
    extra = {name: value(name) for name in reads if name not in MODEL_HYPERPARAMETERS}
    updates["extra_hyperparameters"] = {k: v for k, v in extra.items() if v is not None}
    for target in (updates, updates["extra_hyperparameters"]):
        for name, v in target.items():
            if v is not None and name in reads and reads[name].type is float:
                target[name] = float(v)
    return replace(spec, **updates)
