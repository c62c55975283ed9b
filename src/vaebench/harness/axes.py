"""The grid's axes, declared once: the table every surface reads.

A model declares its hyperparameters (:class:`~vaebench.plugins.specs.Hyperparameter`:
name, type, default, range or choices, help, aliases); the shared axes (seed,
latent_dim, steps, batch_size, lr) are declared here. :func:`axis_table` gathers them
from the registered models, and is the one source of the ``vaebench run`` options
(``--NAME VALUES`` for any axis, ``--hp NAME=VALUES``), the config-file keys, the API's
keyword arguments and the range / choices checks.

Value lists: ``"1,4,8"``, a list, one value, and per item a range ``START:STOP:N``
(N points, both ends included, linear) or ``START:STOP:N:log`` (log-spaced); see
:func:`parse_list`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Sequence

from vaebench.plugins.runspec import BETA_SCHEDULE_FIELDS, MODEL_HYPERPARAMETERS, RunSpec
from vaebench.plugins.specs import Hyperparameter

try:  # numpy's bool is no Python bool, and no number of an axis either
    from numpy import bool_ as np_bool
except ImportError:  # pragma: no cover - numpy is a dependency
    np_bool = bool


class PlanError(ValueError):
    """Invalid grid values; the message is one line for the user."""


#: Largest value of an integer axis: the records' int64 columns (``steps``, ``seed``, ...).
INT_MAX = 2**63 - 1

#: Most points one range may give.
MAX_RANGE_POINTS = 1000

#: The axes every model has (RunSpec fields), declared as a model declares its own.
SHARED_AXES: tuple[Hyperparameter, ...] = (
    Hyperparameter("seed", int, 0, minimum=0, help="Seeds.", aliases=("seeds",)),
    Hyperparameter("latent_dim", int, 10, minimum=1, help="Latent dimensions.", aliases=("latent_dims",)),
    Hyperparameter("steps", int, 3000, minimum=1, help="Training steps."),
    Hyperparameter("batch_size", int, 64, minimum=1, help="Batch size.", aliases=("batch_sizes",)),
    Hyperparameter("lr", float, 5e-4, minimum=0.0, inclusive=False, help="Adam learning rate.", aliases=("lrs",)),
)

#: What a range looks like, for help texts and errors.
RANGE_FORM = "START:STOP:N (N points, linear, both ends included) or START:STOP:N:log (log-spaced)"

#: Names no hyperparameter (or alias) may take: the RunSpec's other coordinates, and the
#: options of ``vaebench run`` / ``api.run_grid`` that are no grid axis.
RESERVED = (frozenset(f.name for f in fields(RunSpec)) - set(MODEL_HYPERPARAMETERS)) | {
    "models", "datasets", "backends", "architectures", "registry", "metrics", "resume", "device", "amp", "compile",
    "threads", "eval_samples", "progress", "strategy", "metric_options", "metric_option", "checkpoint_every",
    "fid_weights", "lpips_weights", "config", "dry_run", "json", "as_json", "hp", "per_model", "manager", "table",
}


def parse_list(
    text: str | Sequence[Any] | int | float, option: str, kind: type, axis: Hyperparameter | None = None
) -> list[Any]:
    """``"1,4,8"`` -> ``[1.0, 4.0, 8.0]``; a bad item gives one clear line naming the option.

    Accepts a comma-separated string, a list (a config file's, the API's) or one value.
    ``kind`` is ``float``, ``int`` or ``str``: floats must be finite, ints whole and within
    int64 (``4.0`` is 4, ``4.5`` is an error), names strings; ``True`` / ``False`` are none
    of these. A numeric item may be a range (:func:`expand_range`). With ``axis`` (a
    declaration), values are also checked against its range or choices.
    """
    items = split_items(text)
    what = {int: "an integer", float: "a number", str: "a name"}.get(kind, kind.__name__)
    out = []
    for item in items:
        if item == "":
            raise PlanError(f"{option}: empty value in {text!r}")
        if kind is not str and isinstance(item, str) and ":" in item:
            out.extend(expand_range(item, option, kind))
            continue
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
        check_values(option, axis, out)
    return out


def split_items(text: str | Sequence[Any] | int | float) -> list[Any]:
    """The items of a value list as given: a comma-separated string split (each stripped),
    a list or tuple as it is, one value as a list of it."""
    if isinstance(text, str):
        return [t.strip() for t in text.split(",")]
    return list(text) if isinstance(text, (list, tuple)) else [text]


def expand_range(text: str, option: str, kind: type) -> list[Any]:
    """``"1:16:5"`` -> ``[1, 4.75, 8.5, 12.25, 16]``; ``"1:16:5:log"`` -> ``[1, 2, 4, 8, 16]``.

    N points from START to STOP, both included, evenly spaced (``log``: evenly in log
    space; START and STOP > 0). Points are rounded to 12 significant digits (so
    ``1:16:5:log`` is exactly 1, 2, 4, 8, 16 and has the run ids of ``1,2,4,8,16``); on
    an ``int`` axis, to the nearest integer, repeated values dropped."""
    parts = [p.strip() for p in text.split(":")]
    bad = f"{option}: {text!r} is not a range {RANGE_FORM}"
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "log"):
        raise PlanError(bad)
    try:
        start, stop = float(parts[0]), float(parts[1])
        count = int(parts[2])
    except ValueError:
        raise PlanError(bad) from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise PlanError(f"{option}: {text!r}: START and STOP must be finite numbers")
    if not 2 <= count <= MAX_RANGE_POINTS:
        raise PlanError(f"{option}: {text!r}: N must be from 2 to {MAX_RANGE_POINTS}, got {count}")
    log = len(parts) == 4
    if log and (start <= 0 or stop <= 0):
        raise PlanError(f"{option}: {text!r}: a log range needs START and STOP > 0")
    points = []
    for i in range(count):
        t = i / (count - 1)
        value = start * (stop / start) ** t if log else start + (stop - start) * t
        points.append(float(f"{value:.12g}"))
    if kind is int:
        if max(abs(start), abs(stop)) > INT_MAX:
            raise PlanError(f"{option}: {text!r} is out of range (must be <= {INT_MAX}, the largest int64)")
        return list(dict.fromkeys(int(round(p)) for p in points))
    return points


def check_values(option: str, axis: Hyperparameter, values: Iterable[Any]) -> None:
    """Each of ``values`` is of ``axis.type``, finite, within int64 and allowed by ``axis``
    (:meth:`Hyperparameter.problem`); else :class:`PlanError` naming ``option``."""
    kind = axis.type
    for v in values:
        if kind is not str:
            if isinstance(v, (bool, np_bool)) or not isinstance(v, numbers.Real) \
                    or (kind is int and not isinstance(v, numbers.Integral) and not float(v).is_integer()):
                raise PlanError(f"{option}: {v!r} is not {'an integer' if kind is int else 'a number'}")
            if v != v or v in (float("inf"), float("-inf")):
                raise PlanError(f"{option}: {v!r} is not a finite number")
        problem = axis.problem(v)
        if problem is not None:
            raise PlanError(f"{option}: {problem}")
        if kind is int and v > INT_MAX:
            raise PlanError(f"{option}: {v} is out of range (must be <= {INT_MAX}, the largest int64)")


@dataclass
class AxisTable:
    """Every grid axis of the registered models: ``axes`` maps a name to its declaration
    (the first registered: shared axes, then the built-in models', then plugins');
    ``spellings`` maps each accepted spelling (name or alias; ``-`` read as ``_``) to the
    name; ``reads`` maps a model to the declarations it reads, by name; ``broken`` maps a
    model whose declarations cannot be used to why (raised when it is planned)."""

    axes: dict[str, Hyperparameter] = field(default_factory=dict)
    spellings: dict[str, str] = field(default_factory=dict)
    reads: dict[str, dict[str, Hyperparameter]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    #: Names two models declare differently (type, bound or choices: two plugins' ``sigma``):
    #: a list given for all models is split only (:meth:`parse`), then typed and checked by
    #: each model's own declaration (``plan``), so one package never breaks another's axis.
    loose: set[str] = field(default_factory=set)

    def name(self, spelling: str) -> str | None:
        """The axis ``spelling`` (``betas``, ``--capacity-steps``, ``sigma``) names, or ``None``."""
        return self.spellings.get(spelling.lstrip("-").replace("-", "_"))

    def model_reads(self, model: str) -> dict[str, Hyperparameter]:
        """The declarations ``model`` reads, by name; :class:`PlanError` for a broken one."""
        if model in self.broken:
            raise PlanError(self.broken[model])
        return self.reads.get(model, {})

    def is_shared(self, name: str) -> bool:
        return name in {a.name for a in SHARED_AXES}

    def parse(self, name: str, raw: Any, label: str) -> list[Any]:
        """``raw`` (a string, list or value given for axis ``name``) as a list, typed and
        checked by the axis's declaration; for a :attr:`loose` axis only split into items."""
        if name in self.loose:
            items = split_items(raw)
            if any(item == "" for item in items):
                raise PlanError(f"{label}: empty value in {raw!r}")
            return items
        decl = self.axes[name]
        return parse_list(raw, label, decl.type, decl)

    def add(self, decl: Hyperparameter) -> None:
        first = self.axes.get(decl.name)
        if first is not None:
            if (first.type, first.minimum, first.inclusive, first.choices) != \
                    (decl.type, decl.minimum, decl.inclusive, decl.choices):
                self.loose.add(decl.name)
            return
        self.axes[decl.name] = decl
        for spelling in (decl.name, *decl.aliases):
            if spelling not in RESERVED or decl in SHARED_AXES:
                self.spellings.setdefault(spelling, decl.name)  # a spelling taken first stays


def axis_table(manager: Any) -> AxisTable:
    """The :class:`AxisTable` of ``manager``'s registered models plus the shared axes."""
    table = AxisTable()
    for decl in SHARED_AXES:
        table.add(decl)
    models = manager.specs.get("models", {})
    declared: dict[str, Hyperparameter] = {}
    for mspec in models.values():
        for hp in mspec.hyperparameters:
            if isinstance(hp, Hyperparameter):
                declared.setdefault(hp.name, hp)
    for name, mspec in models.items():
        try:
            reads = resolve(mspec.hyperparameters, declared)
        except PlanError as exc:
            table.broken[name] = str(exc)
            continue
        table.reads[name] = reads
        for decl in reads.values():
            table.add(decl)
    return table


def resolve(hyperparameters: Sequence[Hyperparameter | str], declared: dict[str, Hyperparameter]) -> dict[str, Hyperparameter]:
    """A model's declarations by name: a plain name takes the declaration another model
    made (a plain ``"beta"`` brings the β schedule with it, as it always did), or is a
    float with no bound when nobody declares it."""
    out: dict[str, Hyperparameter] = {}
    for hp in hyperparameters:
        if isinstance(hp, str):
            names = (hp, *BETA_SCHEDULE_FIELDS) if hp == "beta" else (hp,)
            for name in names:
                out.setdefault(name, declared.get(name) or Hyperparameter(name))
        else:
            out[hp.name] = hp
    for name in out:
        if name in RESERVED:
            raise PlanError(f"hyperparameter {name!r} has the name of a run coordinate or option, not a model's own")
    return out
