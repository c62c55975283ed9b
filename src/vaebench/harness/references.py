"""Reference packs: published values of a metric, and where a config's mean stands among them.

A pack (``ReferenceSpec``: a TOML or JSON file, or the same content as a mapping; never
pickle) holds ``description`` and a list ``entries``, each::

    model = "beta_vae"            # vaebench's model name
    dataset = "dsprites"          # vaebench's dataset name
    setting = { beta = 4.0 }      # the hyperparameters that select the config (record columns)
    metric = "mig"                # the metric key, as vaebench records it
    estimator = { bins = 20, n = 10000 }   # the estimator settings the values assume, named as
                                  # the metric's recorded params name them (metric_params[metric])
    values = [0.11, 0.09, ...]    # per-seed values as published, and/or
    median = 0.1                  # the published median, and/or
    range = [0.05, 0.2]           # the published [low, high], and/or
    mean = 0.4                    # the published mean ± std over n_seeds seeds
    std = 0.01
    n_seeds = 10
    source = "paper, table or figure; or repository file + commit"

A config's mean stands as a percentile among ``values`` (the share of published values below
it, ties counting half), else inside / below / above ``range``, else as ``z = (mean - published
mean) / published std`` (no distribution assumed: the published numbers and the arithmetic), else
above / below ``median``.
A config whose runs recorded other estimator settings than the entry's (or none) is refused
for that comparison, with one line saying why: values of differently-estimated metrics are
not comparable.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Reference", "ReferenceError", "ReferencePack", "load_pack", "standing"]

ENTRY_KEYS = ("model", "dataset", "setting", "metric", "estimator", "values", "median", "range", "mean", "std",
              "n_seeds", "source")


class ReferenceError(ValueError):
    """A reference pack that cannot be used (unknown, unreadable, malformed): one line, exit 2."""


@dataclass(frozen=True)
class Reference:
    """One published distribution of ``metric`` for ``model`` on ``dataset`` at ``setting``."""

    model: str
    dataset: str
    setting: dict[str, Any]
    metric: str
    estimator: dict[str, Any]
    source: str
    values: tuple[float, ...] = ()
    median: float | None = None
    range: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None
    n_seeds: int | None = None

    def summary(self) -> str:
        """The published values in a few words: ``median 0.1, range 0.05–0.2, 50 seeds``."""
        parts = []
        if self.median is not None:
            parts.append(f"median {self.median:.3g}")
        if self.range is not None:
            parts.append(f"range {self.range[0]:.3g}–{self.range[1]:.3g}")
        if self.mean is not None:
            parts.append(f"mean {self.mean:.3g}" + (f" ± {self.std:.3g}" if self.std is not None else ""))
        if self.values:
            parts.append(f"{len(self.values)} seeds")
        elif self.n_seeds is not None:
            parts.append(f"{self.n_seeds} seeds")
        return ", ".join(parts)


@dataclass(frozen=True)
class ReferencePack:
    name: str
    description: str
    entries: tuple[Reference, ...] = field(default_factory=tuple)

    def find(self, row: Mapping[str, Any], metric: str) -> tuple[Reference | None, str]:
        """The entry for a leaderboard ``row`` (its model, dataset and setting columns) and
        ``metric``, and ``""``; or ``(None, why not)``."""
        for entry in self.entries:
            if entry.metric != metric or row.get("model") != entry.model or row.get("dataset") != entry.dataset:
                continue
            if all(_same(row.get(k), v) for k, v in entry.setting.items()):
                return entry, ""
        if "model" not in row or "dataset" not in row:
            return None, "group by model and dataset to compare with a reference"
        return None, "no reference for this model/dataset/setting"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReferenceError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _entry(raw: Any, where: str) -> Reference:
    if not isinstance(raw, Mapping):
        raise ReferenceError(f"{where}: an entry is a table, not {type(raw).__name__}")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise ReferenceError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(ENTRY_KEYS)})")
    for key in ("model", "dataset", "metric", "source"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ReferenceError(f"{where}: {key} must be a non-empty string")
    for key in ("setting", "estimator"):
        if not isinstance(raw.get(key, {}), Mapping):
            raise ReferenceError(f"{where}: {key} must be a table")
    if not raw.get("estimator"):
        raise ReferenceError(f"{where}: estimator must name the settings the values assume (e.g. bins, n)")
    values = tuple(_number(v, f"{where}: values") for v in raw.get("values", ()))
    median = _number(raw["median"], f"{where}: median") if "median" in raw else None
    bounds = None
    if "range" in raw:
        pair = raw["range"]
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ReferenceError(f"{where}: range must be [low, high]")
        bounds = (_number(pair[0], f"{where}: range"), _number(pair[1], f"{where}: range"))
        if bounds[0] > bounds[1]:
            raise ReferenceError(f"{where}: range low {bounds[0]} is above high {bounds[1]}")
    mean = _number(raw["mean"], f"{where}: mean") if "mean" in raw else None
    std = _number(raw["std"], f"{where}: std") if "std" in raw else None
    if std is not None and (mean is None or std < 0):
        raise ReferenceError(f"{where}: std needs a mean and is >= 0")
    n_seeds = raw.get("n_seeds")
    if n_seeds is not None and (isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1):
        raise ReferenceError(f"{where}: n_seeds must be a positive integer")
    if not values and median is None and bounds is None and mean is None:
        raise ReferenceError(f"{where}: give values, median, range or mean")
    return Reference(model=raw["model"], dataset=raw["dataset"], setting=dict(raw.get("setting", {})),
                     metric=raw["metric"], estimator=dict(raw["estimator"]), source=raw["source"],
                     values=values, median=median, range=bounds, mean=mean, std=std, n_seeds=n_seeds)


def _read(path: str, name: str) -> Mapping[str, Any]:
    """The content of a pack file: a filesystem path or ``package:relative/file``."""
    if ":" in path and not Path(path).exists() and not (len(path) > 1 and path[1] == ":"):
        from importlib import resources

        package, _, relative = path.partition(":")
        try:
            target: Any = resources.files(package).joinpath(relative)
            text = target.read_text(encoding="utf-8")
        except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
            raise ReferenceError(f"reference {name!r}: cannot read {path}: {exc}") from None
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ReferenceError(f"reference {name!r}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        elif path.endswith(".toml"):
            data = tomllib.loads(text)
        else:
            raise ReferenceError(f"reference {name!r}: {path}: a pack is a .toml or .json file")
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        if isinstance(exc, ReferenceError):
            raise
        raise ReferenceError(f"reference {name!r}: {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, Mapping):
        raise ReferenceError(f"reference {name!r}: {path}: the pack is a table with a list 'entries'")
    return data


def load_pack(name: str, manager: Any = None) -> ReferencePack:
    """The reference pack a plugin registered as ``name`` (``ReferenceSpec``), read and checked.
    Raises :class:`ReferenceError` (one line) for an unknown name or a malformed pack."""
    from vaebench.plugins.manager import UnknownSpecError, plugin_manager

    manager = plugin_manager(manager)
    try:
        spec = manager.reference(name)
    except UnknownSpecError as exc:
        raise ReferenceError(f"--reference: {exc}") from None
    data = spec.data if spec.data is not None else _read(spec.path, name)
    entries = data.get("entries", [])
    if not isinstance(entries, list):
        raise ReferenceError(f"reference {name!r}: entries must be a list")
    return ReferencePack(name=name, description=str(data.get("description", spec.description)),
                         entries=tuple(_entry(e, f"reference {name!r} entry {i + 1}") for i, e in enumerate(entries)))


def refusal(entry: Reference, recorded: Sequence[Mapping[str, Any] | None]) -> str | None:
    """Why a config whose runs recorded the estimator settings ``recorded`` (one per run:
    ``targets.estimator_settings``, ``None`` where the run recorded none) cannot be set against
    ``entry``, or ``None``. Every key of ``entry.estimator`` must be recorded, equal, by every run."""
    if not recorded:
        return "no run with the metric"
    for key, want in sorted(entry.estimator.items()):
        have = {json.dumps(None if r is None else r.get(key)) for r in recorded}
        if have != {json.dumps(want)} and not (len(have) == 1 and _same(json.loads(next(iter(have))), want)):
            shown = ", ".join(sorted(have)).replace("null", "not recorded")
            return f"{entry.metric} estimator setting {key} is {shown} here, {json.dumps(want)} in the reference"
    return None


def standing(value: float | None, entry: Reference) -> dict[str, Any]:
    """Where ``value`` (a config's mean) stands against ``entry``: ``{"percentile": p}``
    (0–100, the share of per-seed values below, ties counting half), else ``{"range": "inside"
    | "below" | "above"}``, else ``{"z": (value - mean) / std}`` (``None`` when the published std
    is 0) and ``{"mean": "above" | "below" | "equal"}``, else ``{"median": "above" | "below" |
    "equal"}``; plus ``text``."""
    if value is None or not math.isfinite(value):
        return {"text": "no value"}
    if entry.values:
        below = sum(v < value for v in entry.values) + 0.5 * sum(v == value for v in entry.values)
        pct = 100.0 * below / len(entry.values)
        return {"percentile": pct, "text": f"{pct:.0f}th percentile of {len(entry.values)} seeds"}
    if entry.range is not None:
        low, high = entry.range
        where = "below" if value < low else "above" if value > high else "inside"
        return {"range": where, "text": f"{where} the published range"}
    if entry.mean is not None:
        where = "above" if value > entry.mean else "below" if value < entry.mean else "equal"
        if entry.std:
            z = (value - entry.mean) / entry.std
            return {"z": z, "mean": where, "text": f"z {z:+.1f} against the published mean ± std"}
        return {"z": None, "mean": where, "text": f"{where} the published mean"}
    assert entry.median is not None
    where = "above" if value > entry.median else "below" if value < entry.median else "equal"
    return {"median": where, "text": f"{where} the published median"}
