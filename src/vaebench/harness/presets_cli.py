"""``vaebench presets`` (list the study presets with their source and size) and
``vaebench presets show NAME`` (print a preset's TOML)."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from vaebench import api
from vaebench.harness.output import console, fail, manager as _manager, print_json


def preset_rows(manager: Any) -> list[dict[str, Any]]:
    """One row per registered preset: ``name``, ``plugin``, ``description``, ``source``,
    ``runs`` (planned here: the datasets and models this install lacks left out),
    ``per_model``, ``left_out`` and ``error`` (a preset that cannot be read or planned)."""
    from vaebench.harness.axes import PlanError
    from vaebench.plugins.manager import UnknownSpecError

    rows = []
    for name, spec in sorted(manager.specs["presets"].items()):
        row: dict[str, Any] = {"name": name, "plugin": manager.owner("presets", name), "description": spec.description,
                               "path": str(spec.path), "source": [], "runs": None, "per_model": {}, "left_out": [],
                               "error": ""}
        try:
            preset = api.load_preset(name, manager=manager)
            row["source"], row["left_out"] = preset.source, list(preset.left_out.values())
            specs = api.plan_grid(preset=preset, manager=manager)
            row["runs"] = len(specs)
            for s in specs:
                row["per_model"][s.model] = row["per_model"].get(s.model, 0) + 1
        except (api.InputError, PlanError, UnknownSpecError) as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def register(app: typer.Typer) -> None:
    """Add the ``presets`` command group to ``app``."""
    presets_app = typer.Typer(
        invoke_without_command=True, no_args_is_help=False, rich_markup_mode="rich",
        epilog="Examples:\n\n  vaebench presets\n\n  vaebench presets show locatello2019\n\n"
        "  vaebench run --preset locatello2019 --seeds 0,1 --steps 3000 --dataset dsprites --dry-run",
    )
    app.add_typer(presets_app, name="presets")

    @presets_app.callback()
    def presets(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """List the study presets (`vaebench run --preset NAME`): source and size (`presets show NAME`: its TOML)."""
        if ctx.invoked_subcommand is not None:
            return
        rows = preset_rows(_manager())
        if as_json:
            print_json(rows)
            return
        table = Table(title="presets (vaebench run --preset NAME)")
        for col in ("preset", "plugin", "runs here", "description", "source (paper)"):
            table.add_column(col)
        for r in rows:
            size = f"[red]{escape(r['error'])}[/]" if r["error"] else (
                f"{r['runs']:,}: " + ", ".join(f"{m} {n}" for m, n in r["per_model"].items()))
            if r["left_out"]:
                size += "".join(f"\n[dim]{escape(line)}[/]" for line in r["left_out"])
            source = r["source"][0] if r["source"] else ""
            if len(r["source"]) > 1:
                source += f"\n[dim]+ {len(r['source']) - 1} more (vaebench presets show {escape(r['name'])})[/]"
            table.add_row(escape(r["name"]), escape(r["plugin"]), size, escape(r["description"]), source)
        console.print(table)

    @presets_app.command("show", epilog="Example:\n\n  vaebench presets show burgess2018")
    def show(name: str = typer.Argument(..., metavar="NAME", help="A preset name (`vaebench presets`).")) -> None:
        """Print a preset's TOML file (its values, sources and notes) as it ships."""
        try:
            preset = api.load_preset(name, manager=_manager())
        except api.InputError as exc:
            fail(str(exc))
        typer.echo(preset.text, nl=False)
