"""What a metric key is — its direction and category — from the installed plugins, else from
what the records themselves carry (``metric_directions`` / ``metric_categories``), so that a
registry ranks and groups its metrics the same without the metrics' plugins installed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from vaebench.plugins.manager import PluginManager, direction_of, metric_directions, plugin_manager
from vaebench.registry.schema import DEFAULT_LIKELIHOOD


@dataclass
class MetricInfo:
    """Metric name -> direction / category: the installed plugins' first, then the records'."""

    directions: dict[str, str] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)

    def direction(self, key: str) -> str:
        """``higher`` / ``lower`` / ``none`` for ``key`` (``mig``, ``mig.gap.posX``); ``higher``
        for a key neither a plugin nor a record declares."""
        return direction_of(key, self.directions) or "higher"

    def category(self, key: str) -> str | None:
        """``MetricSpec.category`` of ``key``'s metric, or ``None`` where nobody declares it."""
        return direction_of(key, self.categories)


def metric_info(recorded: Iterable[Mapping[str, Any]] = (), manager: PluginManager | None = None) -> MetricInfo:
    """:class:`MetricInfo` of the installed metrics, completed by ``recorded``: records (or
    rows) with ``metric_directions`` / ``metric_categories`` maps (metric name -> value)."""
    specs = plugin_manager(manager).specs["metrics"]
    info = MetricInfo(metric_directions(manager), {n: s.category for n, s in specs.items()})
    for row in recorded:
        for name, value in (row.get("metric_directions") or {}).items():
            info.directions.setdefault(name, value)
        for name, value in (row.get("metric_categories") or {}).items():
            info.categories.setdefault(name, value)
    return info


def likelihood(record: Mapping[str, Any]) -> str:
    """A record's model likelihood (``DEFAULT_LIKELIHOOD`` for one written before it was stored)."""
    return record.get("likelihood") or DEFAULT_LIKELIHOOD
