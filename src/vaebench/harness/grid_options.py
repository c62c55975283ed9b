"""How ``vaebench run`` reads its grid axes from a config file and the command line.

Every axis comes from the axis table (:func:`vaebench.harness.axes.axis_table`): no
option is written here per hyperparameter. Sources, later winning for the same axis:

1. the config file's top-level keys (``betas = [1, 4]``, ``gamma = [10, 40]``);
2. the command line's shared options (``--seeds``, ``--steps``, ...), a model
   hyperparameter's own flag (``--NAME VALUES`` or an alias: ``--betas``,
   ``--codebook-size``, a plugin's ``--sigma``) and ``--hp NAME=VALUES``.

Per-model lists: the config's ``[models.MODEL]`` (or ``[run.models.MODEL]``) tables and
``--hp MODEL.NAME=VALUES``; for that model they replace the top-level list of the same
axis (per-model wins). A list given on the command line replaces the config's lists of
that axis, its per-model ones included. The lists are typed and checked here, so a bad value names the
option the user wrote (``--betas: 'x' is not a number``).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from vaebench.harness.axes import AxisTable, PlanError, parse_list


def flag_values(args: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``["--betas", "1,4", "--gamma=10"]`` -> ``("--betas", "1,4"), ("--gamma", "10")``.
    A flag always takes the next word as its value (``--beta-start -1`` is a value)."""
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or len(token) == 2:
            raise PlanError(f"unexpected argument {token!r} (options look like --NAME VALUES)")
        flag, eq, value = token.partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise PlanError(f"{flag}: expected a value, e.g. {flag} 1,4,8")
            value = args[i + 1]
            i += 1
        i += 1
        yield flag, value


def hp_items(items: Sequence[str]) -> Iterator[tuple[str | None, str, str]]:
    """``--hp NAME=VALUES`` / ``--hp MODEL.NAME=VALUES`` -> ``(model or None, NAME, VALUES)``."""
    for item in items:
        key, eq, values = item.partition("=")
        model, dot, name = key.strip().rpartition(".")
        if not eq or not name or (dot and not model):
            raise PlanError(f"--hp {item!r}: expected NAME=VALUES or MODEL.NAME=VALUES, e.g. sigma=0.1,0.3")
        yield (model or None), name.strip(), values


def read_grid(
    table: AxisTable,
    config: Mapping[str, Any],
    config_models: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    extra_args: Sequence[str],
    hp: Sequence[str],
) -> tuple[dict[str, list[Any]], dict[str, dict[str, list[Any]]]]:
    """``(axes, per_model)`` for ``api.plan_grid``: ``config`` (the config file's keys that
    name an axis), ``config_models`` (its per-model tables), ``options`` (the shared
    options given on the command line, by parameter name), ``extra_args`` (the words
    typer did not know: model hyperparameter flags) and ``hp`` (``--hp`` items).
    Raises :class:`PlanError` (one line) for an unknown name or a bad value."""
    axes: dict[str, list[Any]] = {}
    per_model: dict[str, dict[str, list[Any]]] = {}

    def put(into: dict[str, list[Any]], spelling: str, raw: Any, label: str, unknown: str,
            model: str | None = None) -> None:
        name = table.name(spelling)
        if name is None:
            raise PlanError(unknown)
        own = table.reads.get(model, {}).get(name) if model is not None else None
        into[name] = parse_list(raw, label, own.type, own) if own is not None else table.parse(name, raw, label)

    see = "see `vaebench list models`"
    for key, raw in config.items():
        put(axes, key, raw, "--" + key.replace("_", "-"), f"config: unknown key {key!r}")
    for model, values in (config_models or {}).items():
        if not isinstance(values, Mapping):
            raise PlanError(f"config: models.{model} must be a table of lists, e.g. [models.{model}] gamma = [10, 40]")
        for key, raw in values.items():
            key = str(key).replace("-", "_")
            put(per_model.setdefault(str(model), {}), key, raw, f"models.{model}.{key}",
                f"config: models.{model}: unknown hyperparameter {key!r} ({see})", model=str(model))
    given: dict[str, list[Any]] = {}  # the command line's top-level lists
    for key, raw in options.items():
        put(given, key, raw, "--" + key.replace("_", "-"), f"unknown option --{key}")
    for flag, raw in flag_values(extra_args):
        put(given, flag, raw, flag, f"no such option: {flag} (a model hyperparameter is --NAME VALUES or "
                                    f"--hp NAME=VALUES for one a registered model declares; {see})")
    hps = list(hp_items(hp))
    for model, name, raw in hps:
        if model is None:
            put(given, name, raw, f"--hp {name}", f"--hp {name}: no registered model declares a hyperparameter "
                                                  f"{name!r} ({see})")
    axes.update(given)
    for lists in per_model.values():  # the command line wins over the config, its per-model lists included
        for name in given:
            lists.pop(name, None)
    for model, name, raw in hps:
        if model is None:
            continue
        label = f"--hp {model}.{name}"
        put(per_model.setdefault(model, {}), name, raw, label,
            f"{label}: no registered model declares a hyperparameter {name!r} ({see})", model=model)
    return axes, {model: lists for model, lists in per_model.items() if lists}


def read_executor_options(
    name: str, declared: Mapping[str, tuple[type, Any, str]], config: Mapping[str, Any] | None,
    extra_args: Sequence[str],
) -> tuple[dict[str, Any], list[str]]:
    """``(options, the words left)`` of executor ``name``: each option it declares
    (``ExecutorSpec.options``: name -> ``(type, default, help)``) is a flag ``--NAME VALUE``
    (``_`` written ``-``; a ``bool`` one ``--NAME`` / ``--no-NAME``), winning over the config
    file's ``[executor.NAME]`` table (``config``). The words of other flags are left for
    :func:`read_grid`. Values are typed here; ``ExecutorSpec.check_options`` checks them.
    Raises :class:`PlanError` for a value not of the option's type."""
    options: dict[str, Any] = {}
    for key, value in (config or {}).items():
        options[str(key).replace("-", "_")] = value
    flags = {"--" + key.replace("_", "-"): key for key in declared}
    negations = {"--no-" + key.replace("_", "-"): key for key, (kind, _, _) in declared.items() if kind is bool}
    rest: list[str] = []
    i = 0
    while i < len(extra_args):
        token = extra_args[i]
        flag, eq, value = token.partition("=")
        key = flags.get(flag)
        if flag in negations and not eq:
            options[negations[flag]] = False
            i += 1
            continue
        if key is None:
            rest.append(token)
            if not eq and i + 1 < len(extra_args) and token.startswith("--"):
                rest.append(extra_args[i + 1])  # its value, which may start with "--" no more than read_grid allows
                i += 1
            i += 1
            continue
        kind = declared[key][0]
        if kind is bool and not eq:
            options[key] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(extra_args):
                raise PlanError(f"{flag}: expected a value (an option of the {name} executor)")
            value = extra_args[i + 1]
            i += 1
        i += 1
        options[key] = _typed(value, kind, flag)
    return options, rest


def _typed(raw: str, kind: type, flag: str) -> Any:
    """``raw`` (a command-line word) as a ``kind`` (str, int, float or bool)."""
    if kind is str:
        return raw
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if raw.lower() not in words:
            raise PlanError(f"{flag}: expected true or false, got {raw!r}")
        return words[raw.lower()]
    try:
        return kind(raw)
    except ValueError:
        raise PlanError(f"{flag}: expected {'a whole number' if kind is int else 'a number'}, got {raw!r}") from None
