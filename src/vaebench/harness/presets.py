"""Study presets: TOML files in the ``vaebench run --config`` shape plus a ``[preset]`` table.

A preset file holds a ``[run]`` table (the shared grid: ``model``, ``dataset``, ``seeds``,
``steps``, ``batch_size``, ``lr``, ``latent_dim``, ``architecture``), per-model lists in
``[models.MODEL]`` tables, and ``[preset]``: ``name``, ``description``, ``source`` (a list:
the paper and the exact repository files, with commits, the values came from) and ``notes``
(a list: what the study has that vaebench cannot express, left out). Plugins register them
with ``vaebench_register_presets`` (:class:`vaebench.plugins.specs.PresetSpec`).

Order of precedence when a preset is used: the preset's values are the base, a ``--config``
file's replace them, explicit options replace both (:func:`grid_arguments`). A dataset or
model the preset names that no installed plugin registers is left out of the plan with a
note (:attr:`Preset.left_out`), so a preset written for the whole study plans what this
install can run.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

#: ``[run]`` keys of a preset that are not grid axes: the plan's name lists and run options.
NAME_KEYS = {"model": "models", "models": "models", "dataset": "datasets", "datasets": "datasets",
             "backend": "backends", "architecture": "architectures"}
RUN_OPTION_KEYS = frozenset({"device", "amp", "eval_samples", "metrics", "strategy", "compile", "threads",
                             "checkpoint_every", "dataset_path", "metric_options"})


class PresetError(ValueError):
    """A preset that cannot be read or used (one line)."""


@dataclass(frozen=True)
class Preset:
    """A preset read from its TOML file.

    ``run``: the ``[run]`` table (the per-model tables taken out), key spellings as written;
    ``models``: ``{model: {hyperparameter: list}}``; ``left_out``: ``{"datasets" | "models":
    one line}`` naming the preset's ones that this install does not register (left out of the plan)."""

    name: str
    description: str
    source: list[str]
    notes: list[str]
    path: str
    text: str
    run: dict[str, Any]
    models: dict[str, dict[str, Any]]
    plugin: str = ""
    left_out: dict[str, str] = field(default_factory=dict)

    def names(self, key: str) -> list[str]:
        """The preset's list for ``models`` / ``datasets`` / ``backends`` / ``architectures``."""
        for spelling, plural in NAME_KEYS.items():
            if plural == key and spelling in self.run:
                value = self.run[spelling]
                return [str(v) for v in (value if isinstance(value, list) else str(value).split(","))]
        return []

    def options(self) -> dict[str, Any]:
        """The preset's run options (``eval_samples``, ``metrics``, ...), not grid axes."""
        return {k: v for k, v in self.run.items() if k in RUN_OPTION_KEYS}


def read_preset(path: str, *, name: str | None = None, plugin: str = "") -> Preset:
    """Read and check the preset file ``path`` (``name``: the name it is registered under,
    which the file's ``[preset] name`` must match). Raises :class:`PresetError`."""
    try:
        with open(path, "rb") as fh:
            raw_bytes = fh.read()
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except FileNotFoundError:
        raise PresetError(f"preset file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"preset file {path} is not valid TOML: {exc}") from None
    meta, run = raw.get("preset"), raw.get("run")
    if not isinstance(meta, dict) or not isinstance(run, dict):
        raise PresetError(f"preset file {path}: needs a [preset] table (name, description, source) and a [run] table")
    for key in ("name", "description"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise PresetError(f"preset file {path}: [preset] {key} must be a non-empty string")
    if name is not None and meta["name"] != name:
        raise PresetError(f"preset file {path}: [preset] name {meta['name']!r} is registered as {name!r}")
    source, notes = meta.get("source", []), meta.get("notes", [])
    if not (isinstance(source, list) and source and all(isinstance(s, str) for s in source)):
        raise PresetError(f"preset file {path}: [preset] source must be a non-empty list of strings (citations)")
    if not (isinstance(notes, list) and all(isinstance(s, str) for s in notes)):
        raise PresetError(f"preset file {path}: [preset] notes must be a list of strings")
    run = dict(run)
    models = run.pop("models", None)
    if models is None:
        models = raw.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise PresetError(f"preset file {path}: [models.MODEL] must be tables of lists")
    return Preset(name=meta["name"], description=meta["description"], source=list(source), notes=list(notes),
                  path=str(path), text=raw_bytes.decode("utf-8"), run={k.replace("-", "_"): v for k, v in run.items()},
                  models={str(m): dict(v) for m, v in models.items()}, plugin=plugin)


def load_preset(manager: Any, name: str) -> Preset:
    """The preset ``name`` registered with ``manager``, its datasets and models that
    ``manager`` does not register left out (``Preset.left_out`` says which). Raises
    :class:`PresetError` for an unknown name or a bad file."""
    specs = manager.specs.get("presets", {})
    if name not in specs:
        raise PresetError(f"unknown preset {name!r} (available: {', '.join(sorted(specs)) or 'none'}; "
                          "see `vaebench presets`)")
    spec = specs[name]
    preset = read_preset(str(spec.path), name=name, plugin=manager.owner("presets", name))
    left_out: dict[str, str] = {}
    run = dict(preset.run)
    for key, kind in (("datasets", "datasets"), ("models", "models")):
        wanted = preset.names(key)
        missing = [n for n in wanted if n not in manager.specs[kind]]
        if not missing:
            continue
        kept = [n for n in wanted if n in manager.specs[kind]]
        if not kept:
            raise PresetError(f"preset {name!r}: none of its {kind} ({', '.join(wanted)}) is registered here")
        left_out[kind] = (f"preset {name}: {kind} {', '.join(missing)} not registered here: left out "
                          f"({len(kept)} of {len(wanted)} kept; `vaebench list {kind}`)")
        for spelling, plural in NAME_KEYS.items():
            if plural == key:
                run.pop(spelling, None)
        run[key[:-1]] = kept
    models = {m: v for m, v in preset.models.items() if m in manager.specs["models"]}
    return Preset(**{**preset.__dict__, "run": run, "models": models, "left_out": left_out})


def grid_arguments(
    preset: Preset,
    table: Any,
    *,
    models: Sequence[str] | None,
    datasets: Sequence[str] | None,
    backends: Sequence[str] | None,
    architectures: Sequence[str] | None,
    per_model: Mapping[str, Mapping[str, Any]] | None,
    axes: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of ``plan.plan_grid`` for ``preset`` with the given values on
    top (``None``: not given). A given axis (by any spelling ``table`` knows) replaces the
    preset's list of that axis, its per-model lists included; a given per-model list
    replaces the preset's for that model and axis. Raises :class:`PresetError` for a key
    of the preset that is neither an axis nor a run option."""
    def canonical(key: str, where: str) -> str:
        found = table.name(key)
        if found is None:
            raise PresetError(f"preset {preset.name}: {where}: unknown key {key!r} (see `vaebench list models`)")
        return found

    given_axes = {canonical(k, "given"): v for k, v in axes.items()}
    out_axes: dict[str, Any] = {}
    for key, value in preset.run.items():
        if key in NAME_KEYS or key in RUN_OPTION_KEYS:
            continue
        name = canonical(key, "[run]")
        if name not in given_axes:
            out_axes[name] = value
    out_axes.update(given_axes)
    chosen = list(models) if models else preset.names("models") or ["beta_vae"]
    merged: dict[str, dict[str, Any]] = {}
    for model, values in preset.models.items():
        if model not in chosen:  # --model beta_vae with a many-model preset: the others' lists unused
            continue
        kept = {canonical(k, f"[models.{model}]"): v for k, v in values.items()}
        merged[model] = {k: v for k, v in kept.items() if k not in given_axes}
    for model, values in (per_model or {}).items():
        merged.setdefault(model, {}).update({canonical(k, f"per_model {model}"): v for k, v in values.items()})
    return {
        "models": chosen,
        "datasets": list(datasets) if datasets else preset.names("datasets") or ["dsprites"],
        "backends": list(backends) if backends else preset.names("backends") or ["torch"],
        "architectures": list(architectures) if architectures else preset.names("architectures") or ["conv"],
        "per_model": {m: v for m, v in merged.items() if v},
        "axes": out_axes,
    }
