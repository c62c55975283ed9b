"""Finds plugins through the ``vaebench`` entry-point group and collects their specs.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails to
import (taking the CLI down with it) and silently skips a second plugin with the
same entry-point name, so entry points are loaded here one by one, each in its
own ``try``. Each plugin's registrations are staged and committed only when all of
its hooks succeeded and its module passed the contract checks (no misspelt hook, no
hook function without ``@hookimpl``; specs check their own fields when made): a
plugin is either fully in or fully out, and a failure is reported by plugin name and
version (``vaebench plugins``) instead of raised. A name two plugins register is a
clash, not a failure: the first loaded (the built-in plugin loads first) keeps it, the
other plugin keeps everything else, and both carry a warning naming the two.

Which plugins load: ``VAEBENCH_PLUGINS`` (comma list: only these third-party plugins;
empty: none) and ``VAEBENCH_DISABLE_PLUGINS`` (comma list; the CLI's repeatable
``--disable-plugin NAME`` adds to it). The built-in plugin always loads.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable, Mapping

import pluggy

from vaebench.plugins import hookspecs
from vaebench.version import __version__
from vaebench.plugins.specs import (BackendSpec, DatasetSpec, ExecutorSpec, LoggerSpec, MetricSpec, ModelSpec,
                                    PresetSpec, ReferenceSpec, load_object)

ENTRY_POINT_GROUP = "vaebench"
#: Environment variables choosing what loads (comma lists of plugin names).
PLUGINS_ENV = "VAEBENCH_PLUGINS"
DISABLE_ENV = "VAEBENCH_DISABLE_PLUGINS"
#: The entry-point name of vaebench's own plugin, which cannot be disabled.
BUILTIN = "builtin"

KINDS: dict[str, type] = {
    "models": ModelSpec, "metrics": MetricSpec, "datasets": DatasetSpec, "backends": BackendSpec,
    "executors": ExecutorSpec, "presets": PresetSpec, "references": ReferenceSpec,
    "loggers": LoggerSpec,
}
_HOOKS = {
    "models": "vaebench_register_models",
    "metrics": "vaebench_register_metrics",
    "datasets": "vaebench_register_datasets",
    "backends": "vaebench_register_backends",
    "executors": "vaebench_register_executors",
    "presets": "vaebench_register_presets",
    "references": "vaebench_register_references",
    "loggers": "vaebench_register_loggers",
}


class PluginError(Exception):
    """A plugin could not be loaded or registered."""


class UnknownSpecError(KeyError):
    """A model, metric, dataset, backend or executor name that no plugin registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want one plain line
        return str(self.args[0])


@dataclass
class PluginInfo:
    """One plugin as ``vaebench plugins`` shows it."""

    name: str
    package: str
    version: str
    status: str = "ok"  # "ok", "error" or "disabled" (not loaded: error says why)
    error: str = ""
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    #: One line per name this plugin and another both register (the clash), on both plugins.
    warnings: list[str] = field(default_factory=list)
    #: The failure's full traceback (shown with ``--debug`` / ``VAEBENCH_DEBUG=1``).
    traceback: str = ""


@dataclass(frozen=True)
class PluginSelection:
    """Which third-party plugins load: ``only`` (``None``: all installed) less ``disabled``."""

    only: frozenset[str] | None = None
    disabled: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "PluginSelection":
        """``VAEBENCH_PLUGINS`` / ``VAEBENCH_DISABLE_PLUGINS`` of ``environ`` (default ``os.environ``)."""
        environ = os.environ if environ is None else environ
        only = environ.get(PLUGINS_ENV)
        return cls(only=None if only is None else frozenset(_split(only)),
                   disabled=frozenset(_split(environ.get(DISABLE_ENV, ""))))

    def skip_reason(self, name: str) -> str | None:
        """Why third-party plugin ``name`` is not loaded, or ``None`` when it is."""
        if name in self.disabled:
            return f"disabled ({DISABLE_ENV} / --disable-plugin)"
        if self.only is not None and name not in self.only:
            return f"not named in {PLUGINS_ENV}"
        return None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class PluginManager:
    """Holds the loaded plugins and every registered spec, by kind and name."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("vaebench")
        self._pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.specs: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        self._owner: dict[tuple[str, str], str] = {}
        #: One line per clash (a name two plugins register), each once.
        self.clashes: list[str] = []
        #: One line per oddity in the plugin selection (a name no plugin has, the built-in disabled).
        self.notes: list[str] = []

    # -- loading ---------------------------------------------------------
    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None,
                          selection: PluginSelection | None = None) -> None:
        """Load the plugins of the ``vaebench`` group that ``selection`` (default: the
        environment's) lets through; failures are recorded, not raised."""
        if eps is None:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        selection = PluginSelection.from_env() if selection is None else selection
        eps = list(eps)
        if BUILTIN in selection.disabled:
            self.notes.append(f"the built-in plugin {BUILTIN!r} cannot be disabled: loaded")
        present = {ep.name for ep in eps}
        for name in sorted((selection.disabled | (selection.only or frozenset())) - present - {BUILTIN}):
            self.notes.append(f"no installed plugin is named {name!r} ({PLUGINS_ENV} / {DISABLE_ENV})")
        seen: set[str] = set()
        # The built-in plugin goes first so that it keeps a name a third-party plugin also registers.
        for ep in sorted(eps, key=lambda e: (not _is_builtin(e), e.name)):
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            key = f"{package}:{ep.name}:{ep.value}"
            if key in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(key)
            info = PluginInfo(name=ep.name, package=package, version=version)
            skipped = None if _is_builtin(ep) else selection.skip_reason(ep.name)
            if skipped is not None:
                info.status, info.error = "disabled", skipped
                self.plugins.append(info)
                continue
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any import failure must be isolated
                info.status, info.error = "error", f"import failed: {_one_line(exc)}"
                info.traceback = traceback.format_exc()
                self.plugins.append(info)
                continue
            self._register(module, info)

    def register_plugin(self, plugin: object, name: str, package: str = "-", version: str = "-") -> PluginInfo:
        """Register an in-process plugin object (a module or any object with hookimpls)."""
        info = PluginInfo(name=name, package=package, version=version)
        self._register(plugin, info)
        return info

    def _register(self, plugin: object, info: PluginInfo) -> None:
        other = next((p for p in self.plugins if p.name == info.name and p.status == "ok"), None)
        if other is not None:
            info.status = "error"
            info.error = f"plugin name {info.name!r} already used by package {other.package}"
            self.plugins.append(info)
            return
        staged: dict[str, list[Any]] = {k: [] for k in KINDS}
        problem = hook_problem(plugin)
        if problem is not None:
            info.status, info.error = "error", problem
            self.plugins.append(info)
            return
        try:
            self._pm.register(plugin, name=info.name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with an unknown hook name
            info.status, info.error = "error", f"registration failed: {_one_line(exc)}"
            info.traceback = traceback.format_exc()
            self.plugins.append(info)
            return
        try:
            for kind, hook_name in _HOOKS.items():
                hook = getattr(self._pm.hook, hook_name)
                for impl in hook.get_hookimpls():
                    if impl.plugin_name != info.name:
                        continue
                    impl.function(register=_collector(kind, staged[kind]))
            self._check_duplicates(staged, info)
        except Exception as exc:  # noqa: BLE001
            self._pm.unregister(name=info.name)
            info.status, info.error = "error", f"registration failed: {_one_line(exc)}"
            info.traceback = traceback.format_exc()
            self.plugins.append(info)
            return
        for kind, specs in staged.items():
            for spec in specs:
                if spec.name in self.specs[kind]:
                    self._clash(kind, spec.name, info)
                    continue
                self.specs[kind][spec.name] = spec
                self._owner[(kind, spec.name)] = info.name
                info.registered[kind].append(spec.name)
        self.plugins.append(info)

    def _check_duplicates(self, staged: dict[str, list[Any]], info: PluginInfo) -> None:
        """A name one plugin registers twice is that plugin's error."""
        for kind, specs in staged.items():
            names: set[str] = set()
            for spec in specs:
                if spec.name in names:
                    raise PluginError(f"{kind[:-1]} {spec.name!r} registered twice by plugin {info.name!r}")
                names.add(spec.name)

    def _clash(self, kind: str, name: str, info: PluginInfo) -> None:
        """``info``'s plugin registers a name another plugin holds: the holder keeps it, both are told."""
        holder = next(p for p in self.plugins if p.name == self._owner[(kind, name)] and p.status == "ok")
        line = (f"{kind[:-1]} {name!r} is registered by plugin {holder.name!r} ({holder.package} {holder.version}) "
                f"and by plugin {info.name!r} ({info.package} {info.version}): plugin {holder.name!r} keeps it")
        self.clashes.append(line)
        holder.warnings.append(line)
        info.warnings.append(line)

    # -- lookup ----------------------------------------------------------
    def get(self, kind: str, name: str) -> Any:
        try:
            return self.specs[kind][name]
        except KeyError:
            have = ", ".join(sorted(self.specs[kind])) or "none"
            raise UnknownSpecError(f"unknown {kind[:-1]} {name!r} (available: {have})") from None

    def model(self, name: str) -> ModelSpec:
        return self.get("models", name)

    def metric(self, name: str) -> MetricSpec:
        return self.get("metrics", name)

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("datasets", name)

    def backend(self, name: str) -> BackendSpec:
        return self.get("backends", name)

    def executor(self, name: str) -> ExecutorSpec:
        return self.get("executors", name)

    def preset(self, name: str) -> PresetSpec:
        return self.get("presets", name)

    def reference(self, name: str) -> ReferenceSpec:
        return self.get("references", name)

    def logger(self, name: str) -> LoggerSpec:
        return self.get("loggers", name)

    def owner(self, kind: str, name: str) -> str:
        return self._owner[(kind, name)]

    def plugin(self, name: str) -> PluginInfo:
        """The loaded (``ok``) plugin named ``name``."""
        return next(p for p in self.plugins if p.name == name and p.status == "ok")

    def package_of(self, kind: str, name: str) -> str:
        """``package==version`` of the plugin that registered ``kind`` ``name``: vaebench's own
        (``vaebench==0.1.0``) for the built-in plugin; the plugin's name stands in for an
        unknown package and ``unknown`` for an unknown version (an in-process plugin)."""
        info = self.plugin(self.owner(kind, name))
        if info.name == BUILTIN:
            return f"vaebench=={__version__}"
        package = info.package if _known(info.package) else info.name
        return f"{package}=={info.version if _known(info.version) else 'unknown'}"

    def model_plugin(self, model: str) -> str | None:
        """The model's part of a run's identity (``RunSpec.model_plugin``): ``package==version``
        of the third-party plugin that registered ``model``; ``None`` for a built-in model
        (whose run ids never change) and for a plugin whose version is unknown."""
        info = self.plugin(self.owner("models", model))
        if info.name == BUILTIN or not (_known(info.package) and _known(info.version)):
            return None
        return f"{info.package}=={info.version}"

    def failed(self) -> list[PluginInfo]:
        """The plugins that failed to load or register (not the disabled ones)."""
        return [p for p in self.plugins if p.status == "error"]

    def unfound_paths(self) -> dict[str, list[str]]:
        """Plugin name -> one line per import path whose module cannot be found, without running
        any module (``importlib.util.find_spec``: only the path's parent packages are imported,
        which registering the plugin mostly did already): the cheap part of
        :meth:`import_problems` that plain ``vaebench plugins`` shows. A misspelt attribute or a
        module that raises is found by :meth:`import_problems` only."""
        import importlib.util

        out: dict[str, list[str]] = {}
        for kind, specs in self.specs.items():
            for name, spec in sorted(specs.items()):
                for where, path in spec.import_paths().items():
                    module = path.split(":", 1)[0]
                    try:
                        found = importlib.util.find_spec(module) is not None
                    except (ImportError, ValueError):  # a parent package missing, or an empty name
                        found = False
                    except Exception:  # noqa: BLE001 - a parent package that raises: import_problems says how
                        continue
                    if not found:
                        out.setdefault(self.owner(kind, name), []).append(
                            f"{kind[:-1]} {name!r}: {where} {path!r}: no module {module!r}")
        return out

    def import_problems(self) -> tuple[list[str], list[str]]:
        """``(problems, notes)``: every import path of every registered spec actually imported.
        A path whose own package or attribute is missing, or that raises, is a problem; a path
        whose module imports a framework not installed here (``jax``) is a note."""
        problems: list[str] = []
        notes: list[str] = []
        for kind, specs in self.specs.items():
            for name, spec in sorted(specs.items()):
                for where, path in spec.import_paths().items():
                    try:
                        load_object(path)
                    except ModuleNotFoundError as exc:
                        missing = (exc.name or "").split(".")[0]
                        line = f"{kind[:-1]} {name!r} (plugin {self.owner(kind, name)!r}): {where} {path!r}: "
                        if missing and missing != path.split(".")[0].split(":")[0]:
                            notes.append(line + f"needs {missing!r}, which is not installed here")
                        else:
                            problems.append(line + f"does not import: {_one_line(exc)}")
                    except (Exception, SystemExit) as exc:  # noqa: BLE001 - report any failure as one line
                        problems.append(f"{kind[:-1]} {name!r} (plugin {self.owner(kind, name)!r}): {where} "
                                        f"{path!r} does not import: {_one_line(exc)}")
        return problems, notes


def _collector(kind: str, into: list[Any]):
    expected = KINDS[kind]

    def register(spec: Any) -> None:
        if not isinstance(spec, expected):
            raise PluginError(f"register() for {kind} expects a {expected.__name__}, got {type(spec).__name__}")
        into.append(spec)

    return register


def _known(value: str) -> bool:
    """Whether a plugin's package or version is known (``-``: registered in-process without
    one; ``?``: an entry point without a distribution)."""
    return value not in ("", "-", "?")


def _is_builtin(ep: EntryPoint) -> bool:
    return ep.value.split(".")[0] == "vaebench"


def hook_problem(plugin: object) -> str | None:
    """A one-line reason when ``plugin`` (a module or object) has a function marked
    ``@hookimpl`` whose name (or ``specname``) is not a vaebench hook, a function named
    ``vaebench_*`` that is not a hook (a misspelling), or a hook function without the marker
    (pluggy would ignore each of them); ``None`` when every such function is a marked hook."""
    hooks = sorted(_HOOKS.values())
    for attr in dir(plugin):
        try:
            value = inspect.getattr_static(plugin, attr)
        except AttributeError:
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if not inspect.isfunction(value):
            continue
        marked = getattr(value, "vaebench_impl", None)
        name = (marked.get("specname") or attr) if isinstance(marked, dict) else attr
        named = isinstance(marked, dict) and (name != attr or not attr.startswith("vaebench_"))
        if named and name not in hooks:  # pluggy would ignore it
            close = difflib.get_close_matches(name, hooks, n=1) or difflib.get_close_matches(f"vaebench_{name}", hooks, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(hooks)}"
            return f"{attr!r} is marked @hookimpl but {name!r} is not a vaebench hook ({hint})"
        if not attr.startswith("vaebench_"):
            continue
        if attr not in hooks:
            close = difflib.get_close_matches(attr, hooks, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(hooks)}"
            return f"{attr!r} is not a vaebench hook ({hint})"
        if getattr(value, "vaebench_impl", None) is None:
            return (f"{attr!r} lacks the @hookimpl marker (from vaebench.plugin import hookimpl), "
                    "so it would never be called")
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


_MANAGER: PluginManager | None = None


def get_manager(reload: bool = False) -> PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _MANAGER
    if _MANAGER is None or reload:
        manager = PluginManager()
        manager.load_entry_points()
        _MANAGER = manager
    return _MANAGER


def plugin_manager(manager: PluginManager | None = None) -> PluginManager:
    """``manager``, or the process-wide one (:func:`get_manager`) where it is ``None``:
    the one place a caller not handed a manager (a script, a test) falls back to it."""
    return manager if manager is not None else get_manager()


def direction_of(key: str, directions: Mapping[str, str]) -> str | None:
    """The direction (``higher`` / ``lower`` / ``none``) of metric key ``key`` in ``directions``
    (metric name -> direction): its own, else its head's (``mig.gap.posX`` -> ``mig``);
    ``None`` when neither is there."""
    if key in directions:
        return directions[key]
    return directions.get(key.split(".", 1)[0])


def metric_directions(manager: PluginManager | None = None) -> dict[str, str]:
    """Metric name -> its plugin's declared direction, for every registered metric."""
    manager = plugin_manager(manager)
    return {name: spec.direction for name, spec in manager.specs["metrics"].items()}


def warn_failed_plugins(manager: PluginManager, stream: Any = None, debug: bool = False) -> None:
    """One stderr line per plugin that failed, per clash and per selection note, so a broken
    plugin is never silent; with ``debug``, a failure's traceback after its line."""
    stream = stream or sys.stderr
    for p in manager.failed():
        print(f"warning: plugin {p.name!r} ({p.package} {p.version}) skipped: {p.error}", file=stream)
        if debug and p.traceback:
            print(p.traceback.rstrip(), file=stream)
    for line in manager.clashes + manager.notes:
        print(f"warning: {line}", file=stream)
