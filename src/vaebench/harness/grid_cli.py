"""``vaebench status`` and ``vaebench cancel``: a submitted grid's state and its tasks'
cancellation (``harness.watch``), and the watch ``vaebench run`` keeps after submitting.

``register(app)`` adds the commands to a Typer app (``vaebench.harness.cli`` calls it). Exit
codes: 0 ok, 1 a watched grid's run failed, 2 bad usage or input (one line on stderr).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import typer

from vaebench import api
from vaebench.harness.output import DEFAULT_REGISTRY, REGISTRY_HELP, console, err_console, fail, print_json

__all__ = ["register", "watch_grid", "watch_attached", "how_to_watch"]

#: Seconds between two reads of a watched grid.
EVERY = 3.0


def how_to_watch(grid_id: str, registry: str) -> str:
    """The commands that watch and cancel grid ``grid_id`` again (one line)."""
    from vaebench.registry.location import display

    where = "" if registry == DEFAULT_REGISTRY else f" --registry {display(registry)}"
    return f"watch: vaebench status {grid_id}{where}   cancel: vaebench cancel {grid_id}{where}"


def watch_grid(manifest: Any, registry: str, manager: Any, live: bool = True, every: float = EVERY) -> Any:
    """Watch ``manifest``'s grid until every point is recorded (settling lost points),
    refreshing its table on stderr when ``live``; returns the last ``GridState``. Ctrl-C
    (``KeyboardInterrupt``) leaves the tasks running and propagates."""
    from rich.live import Live

    from vaebench.harness import watch

    if not live:
        return watch.watch(registry, manifest, manager, every=every)
    with Live(console=err_console, auto_refresh=False, transient=False) as shown:
        def show(state: Any) -> None:
            shown.update(watch.state_table(state), refresh=True)

        return watch.watch(registry, manifest, manager, every=every, show=show)


def watch_attached(manifest: Any, registry: str, manager: Any, live: bool = True) -> Any:
    """:func:`watch_grid` with SIGINT / SIGTERM detaching: the tasks go on, how to watch and
    cancel them is said, and the command exits 130 / 143."""
    from vaebench.plugins.backends import interrupt

    with interrupt.installed():
        try:
            return watch_grid(manifest, registry, manager, live=live)
        except KeyboardInterrupt as exc:
            name = getattr(exc, "name", "SIGINT")
            if live and not err_console.is_terminal:
                err_console.print()  # the table's last line ends without one
            err_console.print(f"{name}: detached from grid {manifest.grid_id}; its tasks keep running",
                              highlight=False)
            err_console.print(how_to_watch(manifest.grid_id, registry), highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None


def register(app: typer.Typer, exit_for: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """Add ``status`` and ``cancel`` to ``app``; ``exit_for(records)``: how a watched grid's
    failed runs end the command (``status --watch``)."""

    @app.command("status", epilog="Examples:\n\n  vaebench status\n\n  vaebench status 20261204T2201\n\n"
                 "  vaebench status 4242 --watch\n\n  vaebench status --json")
    def status(
        selection: Optional[str] = typer.Argument(None, metavar="SELECTION", help="A grid id (or prefix), a scheduler job id, or a run id prefix. \\[default: the latest grid]"),
        registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
        keep_watching: bool = typer.Option(False, "--watch", help="Refresh until every point is recorded."),
    ) -> None:
        """A submitted grid's state: each point recorded, training (with its checkpoint's step),
        queued, or lost (its task died: its failed record is written, with the scheduler's reason
        and the log's tail)."""
        from vaebench.harness import watch
        from vaebench.harness.output import manager

        m = manager()
        try:
            if keep_watching:
                state = watch_attached(api.find_grid(selection, registry), registry, m, live=not as_json)
            else:
                state = api.status(selection, registry, manager=m)
        except api.InputError as exc:
            fail(str(exc))
        if as_json:
            print_json(state.to_json())
        elif not keep_watching:
            console.print(watch.state_table(state))
        if state.settled:
            err_console.print(f"{len(state.settled)} lost point(s) recorded as failed: "
                              f"{', '.join(state.settled)}", highlight=False)
        if keep_watching and exit_for is not None:
            exit_for(state.records())

    @app.command("cancel", epilog="Examples:\n\n  vaebench cancel 20261204T2201\n\n  vaebench cancel 4242")
    def cancel(
        selection: Optional[str] = typer.Argument(None, metavar="SELECTION", help="A grid id (or prefix), a scheduler job id, or a run id prefix. \\[default: the latest grid]"),
        registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the jobs cancelled as JSON."),
    ) -> None:
        """Cancel a submitted grid's tasks that are still queued or running (records written stay)."""
        from vaebench.harness.output import manager

        try:
            manifest, jobs = api.cancel(selection, registry, manager=manager())
        except api.InputError as exc:
            fail(str(exc))
        if as_json:
            print_json({"grid_id": manifest.grid_id, "executor": manifest.executor, "cancelled": jobs})
        elif jobs:
            console.print(f"grid {manifest.grid_id}: cancelled {len(jobs)} task(s) of {manifest.executor}: "
                          f"{', '.join(jobs)}", highlight=False)
        else:
            console.print(f"grid {manifest.grid_id}: nothing to cancel (no task queued or running)", highlight=False)
