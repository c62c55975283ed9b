"""Finds plugins through the ``vaebench`` entry-point group and collects their specs.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails to
import (taking the CLI down with it) and silently skips a second plugin with the
same entry-point name, so entry points are loaded here one by one, each in its
own ``try``. Each plugin's registrations are staged and committed only when all of
its hooks succeeded: a plugin is either fully in or fully out, and a failure is
reported by plugin name and version (``vaebench plugins``) instead of raised.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable, Mapping

import pluggy

from vaebench.plugins import hookspecs
from vaebench.plugins.specs import BackendSpec, DatasetSpec, MetricSpec, ModelSpec

ENTRY_POINT_GROUP = "vaebench"

KINDS: dict[str, type] = {
    "models": ModelSpec, "metrics": MetricSpec, "datasets": DatasetSpec, "backends": BackendSpec,
}
_HOOKS = {
    "models": "vaebench_register_models",
    "metrics": "vaebench_register_metrics",
    "datasets": "vaebench_register_datasets",
    "backends": "vaebench_register_backends",
}


class PluginError(Exception):
    """A plugin could not be loaded or registered."""


class UnknownSpecError(KeyError):
    """A model, metric, dataset or backend name that no plugin registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want one plain line
        return str(self.args[0])


@dataclass
class PluginInfo:
    """One plugin as ``vaebench plugins`` shows it."""

    name: str
    package: str
    version: str
    status: str = "ok"  # "ok" or "error"
    error: str = ""
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})


class PluginManager:
    """Holds the loaded plugins and every registered spec, by kind and name."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("vaebench")
        self._pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.specs: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        self._owner: dict[tuple[str, str], str] = {}

    # -- loading ---------------------------------------------------------
    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> None:
        """Load every plugin of the ``vaebench`` group; failures are recorded, not raised."""
        if eps is None:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        seen: set[str] = set()
        # The built-in plugin goes first so a third-party duplicate is the one refused.
        for ep in sorted(eps, key=lambda e: (e.value.split(".")[0] != "vaebench", e.name)):
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            key = f"{package}:{ep.name}:{ep.value}"
            if key in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(key)
            info = PluginInfo(name=ep.name, package=package, version=version)
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any import failure must be isolated
                info.status, info.error = "error", f"import failed: {_one_line(exc)}"
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
        try:
            self._pm.register(plugin, name=info.name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with an unknown hook name
            info.status, info.error = "error", f"registration failed: {_one_line(exc)}"
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
            self.plugins.append(info)
            return
        for kind, specs in staged.items():
            for spec in specs:
                self.specs[kind][spec.name] = spec
                self._owner[(kind, spec.name)] = info.name
                info.registered[kind].append(spec.name)
        self.plugins.append(info)

    def _check_duplicates(self, staged: dict[str, list[Any]], info: PluginInfo) -> None:
        for kind, specs in staged.items():
            names: set[str] = set()
            for spec in specs:
                if spec.name in names:
                    raise PluginError(f"{kind[:-1]} {spec.name!r} registered twice by plugin {info.name!r}")
                names.add(spec.name)
                if spec.name in self.specs[kind]:
                    owner = self._owner[(kind, spec.name)]
                    raise PluginError(
                        f"duplicate {kind[:-1]} name {spec.name!r}: registered by plugin {owner!r} "
                        f"and by plugin {info.name!r} ({info.package})"
                    )

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

    def owner(self, kind: str, name: str) -> str:
        return self._owner[(kind, name)]

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.status != "ok"]


def _collector(kind: str, into: list[Any]):
    expected = KINDS[kind]

    def register(spec: Any) -> None:
        if not isinstance(spec, expected):
            raise PluginError(f"register() for {kind} expects a {expected.__name__}, got {type(spec).__name__}")
        into.append(spec)

    return register


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


def metric_direction(key: str, manager: PluginManager | None = None) -> str:
    """``higher`` / ``lower`` / ``none`` for a metric key (``mig``, ``mig.gap.posX``) from its
    plugin; ``higher`` for a key no registered metric declares."""
    return direction_of(key, metric_directions(manager)) or "higher"


def warn_failed_plugins(manager: PluginManager, stream: Any = None) -> None:
    """One stderr line per plugin that failed, so a broken plugin is never silent."""
    stream = stream or sys.stderr
    for p in manager.failed():
        print(f"warning: plugin {p.name!r} ({p.package} {p.version}) skipped: {p.error}", file=stream)
