"""What every CLI command shares: consoles, the one-line error exit, JSON output, number
formatting and how a metric's direction reads."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from vaebench.harness.messages import DEBUG_ENV, debug_enabled, debug_traceback
from vaebench.registry import DEFAULT_REGISTRY

# Piped output (files, CI logs) gets room for a leaderboard rather than Rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

REGISTRY_HELP = "Registry directory holding one Parquet record per run."

#: How a metric's declared direction reads: an arrow (table headers) and in words (titles).
ARROWS = {"higher": "↑", "lower": "↓"}
DIRECTION_TEXT = {"higher": "↑ higher is better", "lower": "↓ lower is better", "none": "no better direction"}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr (one line) and exit with ``code`` (2: bad usage/input).
    With :func:`debug_enabled`, the traceback of the exception being handled comes first."""
    debug_traceback()
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def manager(warn: bool = True):
    """The plugin manager; one stderr warning line per plugin that failed to load (its
    traceback too with :func:`debug_enabled`) and per name two plugins register."""
    from vaebench.plugins.manager import get_manager, warn_failed_plugins

    m = get_manager()
    if warn:
        warn_failed_plugins(m, debug=debug_enabled())
    return m


def json_safe(data: Any) -> Any:
    """``data`` with every NaN / infinite float (a metric that returned NaN) as ``None``, so
    that what is printed is valid JSON (``null``), never a bare ``NaN``."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def print_json(data: Any) -> None:
    """Print ``data`` as JSON (non-finite floats as ``null``; dates and the like as text)."""
    sys.stdout.write(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False) + "\n")


def names(value: Any) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]``."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def fmt(value: Any) -> str:
    """A table cell: ``-`` for missing, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
