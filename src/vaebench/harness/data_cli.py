"""``vaebench data fetch NAME`` and ``vaebench data list``: the file-backed datasets
(``vaebench.plugins.datasets.catalog`` holds the table, ``.fetch`` the download).

``register(app)`` adds them to a Typer app (``vaebench.harness.cli`` calls it). Exit codes: 0 ok,
1 a download failed or did not verify (nothing of that file kept; a partial ``.part`` is kept
only when the connection broke, for the next run to resume), 2 bad usage (one line on stderr).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from vaebench.harness.output import console, err_console, fail, print_json

__all__ = ["data_app", "register"]

data_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode="rich",
    help="Datasets kept as files: fetch one from its published URL, list what is here.",
    epilog="Examples:\n\n  vaebench data list\n\n  vaebench data fetch smallnorb\n\n"
    "  vaebench data fetch cars3d --to /scratch/data\n\n  vaebench data fetch mpi3d_toy --url https://mirror.example/mpi3d",
)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


@data_app.command("fetch")
def fetch_command(
    name: str = typer.Argument(..., help="Dataset name (see `vaebench data list`)."),
    to: Optional[Path] = typer.Option(None, "--to", help="Parent folder to put it in \\[default: $VAEBENCH_DATA or ~/.cache/vaebench/data]; the index records where it went."),
    url: Optional[str] = typer.Option(None, "--url", help="Base URL of a mirror: each file is fetched from URL/<its published file name> (also $VAEBENCH_DATA_URL_<NAME>)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    """Download a dataset from its published URL, check its pinned sha256 (or published MD5), unpack it and record
    where it is. An interrupted download resumes where it stopped on the next run."""
    from vaebench.plugins.datasets.catalog import SOURCES
    from vaebench.plugins.datasets.fetch import FetchError, fetch

    if name not in SOURCES:
        fail(f"no dataset {name!r} to fetch; one of: {', '.join(sorted(SOURCES))}")
    if to is not None and to.exists() and not to.is_dir():
        fail(f"--to {to} is a file, not a folder")
    source = SOURCES[name]
    if source.unpinned and not as_json:
        err_console.print(f"note: {name}: {', '.join(source.unpinned)} has no pinned checksum (none published); "
                          "the download is not verified", markup=False, highlight=False, soft_wrap=True)
    shown: set[str] = set()

    def progress(filename: str, got: int, total: int | None) -> None:
        if filename not in shown and not as_json:
            shown.add(filename)
            err_console.print(f"downloading {filename}" + (f" ({_size(total)})" if total else ""),
                              markup=False, highlight=False)

    try:
        result = fetch(name, to=to, base_url=url, progress=progress)
    except FetchError as exc:
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"{name}: {exc}", code=1)
    if as_json:
        print_json({"name": result.name, "path": str(result.path), "bytes": result.bytes,
                    "downloaded": result.downloaded, "present": result.present, "unverified": result.unverified})
        return
    console.print(f"{name}: {escape(str(result.path))} ({_size(result.bytes)}; downloaded {len(result.downloaded)}, "
                  f"already here {len(result.present)})", highlight=False)


@data_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each fetchable dataset: present or not, where, its size on disk, whether its download is pinned."""
    from vaebench.plugins.datasets.catalog import SOURCES, data_root, read_index, tree_size

    index = read_index()
    rows: list[dict[str, Any]] = []
    for name, source in SOURCES.items():
        entry = index.get(name) if isinstance(index.get(name), dict) else None
        path = Path(entry["path"]) if entry and entry.get("path") else data_root() / source.folder
        present = path.exists() and any(path.iterdir()) if path.is_dir() else path.exists()
        rows.append({"name": name, "present": bool(present), "path": str(path),
                     "bytes": tree_size(path) if present else None,
                     "sha256_pinned": source.pinned_with == "sha256", "pinned": source.pinned_with, "licence": source.licence, "citation": source.citation})
    if as_json:
        print_json({"data_root": str(data_root()), "datasets": rows})
        return
    table = Table(title=f"datasets (index: {escape(str(data_root() / 'index.json'))})")
    for col in ("dataset", "present", "where", "size", "checksum"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r["name"]), "[green]yes[/]" if r["present"] else "[dim]no[/]", escape(r["path"]),
                      _size(r["bytes"]), f"{r['pinned']} pinned" if r["pinned"] else "[yellow]unpinned[/]")
    console.print(table)
    if os.environ.get("VAEBENCH_DATA") is None:
        console.print("[dim]set VAEBENCH_DATA to keep datasets elsewhere; `vaebench data fetch NAME` gets one[/]")


def register(app: typer.Typer) -> None:
    """Add ``data fetch`` and ``data list`` to ``app``."""
    app.add_typer(data_app, name="data")
