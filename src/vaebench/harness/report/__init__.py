"""``vaebench report``: one page about a selection of runs, as HTML and Markdown.

:func:`write_report` writes ``DIR/index.html`` and ``DIR/report.md`` with

- the β trade-off: every headline metric the runs have against β (log axis),
  mean ± sample std over seeds, one line per configuration minus seed and β
  (labelled by model), one panel per metric, one row of panels per metric category
  (``MetricSpec.category``, else the category the records carry): disentanglement,
  reconstruction, image quality, other;
- the capacity curves of runs with a capacity (``beta_vae_capacity``): the
  training KL against the target C(step), both from the run's ``history``, one
  panel per configuration, one KL line per seed;
- the leaderboard: ``registry.query.rank`` per metric (the numbers ``vaebench
  leaderboard`` prints) over the same selection, with the tiers metric plugins
  declare; every run with its status and headline metrics;
- target verdicts (``harness.targets``) when a targets file is given;
- diverged and failed runs with their errors;
- each run's traversal grid (PNG, and the animated GIF beside it), copied from
  the run's artifacts; a missing one is noted.

Three rooms: ``gather.py`` reads the selection (runs, leaderboard rows, target verdicts),
``figures.py`` draws and copies the figures, ``render.py`` writes the pages (HTML through
the Jinja2 templates in ``templates/``, autoescaped; Markdown). The files are written into
a temporary directory beside ``DIR``'s contents and moved in at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaebench.harness.report import figures, render
from vaebench.harness.report.gather import Gathered, ReportError, gather, headline_metrics, tradeoff_series
from vaebench.registry.selection import Selection

__all__ = ["ReportError", "ReportResult", "headline_metrics", "tradeoff_series", "write_report"]


@dataclass
class ReportResult:
    """What :func:`write_report` wrote; :meth:`to_dict` is ``vaebench report --json``."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    targets: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "html": str(self.html), "markdown": str(self.markdown),
            "figures": [str(p) for p in self.figures], "runs": self.counts,
            "targets": [t.to_dict() for t in self.targets], "notes": self.notes,
            "skipped": [f"{p}: {why}" for p, why in self.skipped],
        }


def write_report(
    registry: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    selection: str | Mapping[str, Any] | Selection | None = None,
    targets: str | os.PathLike[str] | None = None,
    baseline: str | Mapping[str, Any] | Selection | None = None,
    metric: str | None = None,
    reference: str | None = None,
) -> ReportResult:
    """Write ``out_dir/index.html``, ``out_dir/report.md`` and ``out_dir/figures/`` for the runs
    of ``registry`` matching ``selection`` (the syntax of ``vaebench compare``; None: every run).

    ``targets``: a targets TOML (``vaebench check``'s format) whose verdicts the
    report shows; ``baseline`` selects the baseline runs of its max_regression
    checks. ``metric`` orders the leaderboard (default: the first disentanglement
    metric present); ``reference`` a reference pack to set its means against. Raises :class:`ReportError` / ``ValueError`` (no run
    selected, an ambiguous run id prefix, ``out_dir`` not a directory),
    ``targets.TargetsError`` (a bad targets file) and ``store.RegistryError``
    (an unreadable registry), each with a one-line message; nothing is written then.
    Missed targets are not errors: they are in the report and ``.targets``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    data = gather(registry, selection, targets, baseline, metric, reference)
    return stage_and_publish(out, lambda stage: _render(stage, data))


def stage_and_publish(out: Path, render: Callable[[Path], ReportResult]) -> ReportResult:
    """Run ``render`` into a temporary directory in ``out`` (created), then move what it
    wrote into place (other files in ``out`` are left alone): a report that fails half
    way leaves ``out`` as it was, and removes it if it created it. An OS error (a full
    disk) is a one-line :class:`ReportError`."""
    created = not out.exists()
    stage = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".report.", suffix=".partial", dir=out))
        result = render(stage)
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        for path in sorted(files, key=lambda p: p.parent == stage):  # index.html and report.md last
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    except BaseException as exc:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ReportError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
        raise
    shutil.rmtree(stage, ignore_errors=True)
    result.out_dir, result.html, result.markdown = out, out / "index.html", out / "report.md"
    result.figures = [out / p.relative_to(stage) for p in result.figures]
    return result


def _render(out: Path, data: Gathered) -> ReportResult:
    """Write the report's files into ``out`` (an empty directory)."""
    runs = data.runs
    result = ReportResult(out_dir=out, html=out / "index.html", markdown=out / "report.md", skipped=data.skipped,
                          targets=data.verdicts)
    result.counts = {s: sum(r["status"] == s for r in runs) for s in ("ok", "diverged", "failed")}
    result.counts["total"] = len(runs)
    drawn = figures.write_figures(data, render.order_runs(runs), out / "figures", data.direction)
    result.figures = drawn.files()
    page, result.notes = render.blocks(data, drawn, out, data.direction)
    head = render.header(data, result.counts)
    result.html.write_text(render.to_html(head, page), encoding="utf-8")
    result.markdown.write_text(render.to_markdown(head, page), encoding="utf-8")
    return result
