"""The report's pages: one list of blocks (sections, notes, tables, figures, traversal cards)
built from the gathered data and the figures written, rendered twice — HTML through the
Jinja2 templates beside this module (``templates/``, autoescaped: every string from the
registry or the user is escaped there) and Markdown (cells escaped like HTML, since
Markdown passes HTML through, plus ``|`` and newlines).

Figures are linked by relative paths, not data URIs: ``report.md`` shows the same files
(Markdown renderers, GitHub's among them, drop ``data:`` images), and a grid of hundreds of
runs' traversal GIFs inlined as base64 would make one HTML file of tens of MB. The page has
inline CSS, no scripts and no external resources, so the report copied anywhere still
works offline.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vaebench.harness.output import ARROWS, DIRECTION_TEXT, fmt
from vaebench.harness.report.figures import Figures
from vaebench.harness.report.gather import GROUP_TITLES, Gathered
from vaebench.version import __version__

HEADERS = {"dataset_variant": "variant", "beta": "β", "capacity": "C", "gamma": "γ", "latent_dim": "D",
           "config_id": "config"}
#: The sections the navigation links to, in page order, where present.
SECTIONS = (("targets", "Targets"), ("tradeoff", "β trade-off"), ("capacity", "Capacity"),
            ("matrices", "What the metrics see"), ("correlation", "Metric correlation"),
            ("leaderboard", "Leaderboard"), ("runs", "Runs"), ("problems", "Diverged / failed"),
            ("traversals", "Traversals"))


@dataclass
class Cell:
    """A table cell: ``text`` (plain; escaped when rendered), its CSS class, ``data-*``
    attributes (values as strings), a status ``pill`` class, and for a leaderboard mean the
    ``tier`` and the ``sub`` line (± std) shown under it; ``md`` is the Markdown text
    when it differs from ``text``."""

    text: str
    cls: str = ""
    data: dict[str, str] = field(default_factory=dict)
    pill: str | None = None
    tier: str | None = None
    sub: str | None = None
    md: str | None = None


@dataclass
class Block:
    """One piece of the page: ``kind`` is section | note | para | h3 | table | figure | cards."""

    kind: str
    text: str = ""
    anchor: str = ""
    headers: Sequence[str] = ()
    left: Sequence[int] = ()
    rows: Sequence[Sequence[Cell]] = ()
    src: str = ""
    cards: Sequence[Mapping[str, Any]] = ()
    caption: str = ""
    #: a figure's data file (relative link) and its link text, or ""
    link: str = ""
    link_text: str = ""


def md(value: Any) -> str:
    """A Markdown table cell: escaped like HTML (Markdown passes HTML through), ``|`` and newlines too."""
    text = value if isinstance(value, str) else fmt(value)
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def relative(path: Path, base: Path) -> str:
    """``path`` relative to the report's directory, URL-quoted (for ``src`` / ``href`` / Markdown links)."""
    return quote(path.relative_to(base).as_posix())


def cell(value: Any, cls: str = "", data: Mapping[str, Any] | None = None) -> Cell:
    """A plain cell: ``value`` formatted with ``output.fmt``; ``data`` becomes ``data-*``
    attributes (floats as their ``repr``, exact)."""
    text = value if isinstance(value, str) else fmt(value)
    return Cell(text, cls, {k: repr(v) if isinstance(v, float) else str(v) for k, v in (data or {}).items()})


def pill(text: str, cls: str) -> Cell:
    return Cell(text, "l", pill=cls)


def mean_std(entry: Mapping[str, Any] | None, n_max: int) -> str:
    if not entry or entry["mean"] is None:
        return "-"
    text = fmt(entry["mean"]) + (f" ± {fmt(entry['std'])}" if entry["std"] is not None else "")
    if entry["n"] < n_max:
        text += f" (n={entry['n']})"
    return text


def run_label(r: Mapping[str, Any]) -> str:
    parts = [str(r["model"])]
    for key, name in (("beta", "β"), ("capacity", "C"), ("gamma", "γ"), ("seed", "seed")):
        if r.get(key) is not None:
            parts.append(f"{name}={fmt(r[key])}")
    return " ".join(parts)


def order_runs(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The runs in the order the report lists them: model, β, C, γ, configuration, seed."""
    return sorted(runs, key=lambda r: (str(r["model"]), r["beta"] or 0.0, r["capacity"] or 0.0,
                                       r["gamma"] or 0.0, str(r["config_id"]), r["seed"] or 0, r["run_id"]))


# --------------------------------------------------------------------------- blocks


def blocks(data: Gathered, figures: Figures, out: Path, direction: Callable[[str], str]) -> tuple[list[Block], list[str]]:
    """The page's blocks and the notes for ``ReportResult.notes``."""
    from vaebench.harness import targets as tg

    page: list[Block] = []
    notes: list[str] = []
    runs, metrics = data.runs, data.metrics

    def section(anchor: str, title: str) -> None:
        page.append(Block("section", title, anchor=anchor))

    def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], left: Sequence[int] = ()) -> None:
        page.append(Block("table", headers=list(headers), rows=rows, left=tuple(left)))

    def figure(path: Path, alt: str, caption: str, data_file: Path | None = None) -> None:
        page.append(Block("figure", alt, src=relative(path, out), caption=caption,
                          link=relative(data_file, out) if data_file is not None else "",
                          link_text="numbers (JSON)" if data_file is not None else ""))

    # ---- targets
    if data.targets_file is not None:
        verdicts = data.verdicts
        met = sum(r.passed for r in verdicts)
        section("targets", f"Targets: {met} of {len(verdicts)} met")
        page.append(Block("para", f"From {Path(data.targets_file).name}, over the selected runs. A missed target does "
                                  f"not change this report's exit status; vaebench check is the CI gate. "
                                  f"Regressions: {tg.TEST_NAME}."))
        rows = []
        for r in verdicts:
            cells = tg.describe(r)
            cls = ("pass" if r.verdict == "pass" else "changed" if r.passed
                   else "error" if r.verdict.startswith("error") else "fail")
            rows.append([
                cell(r.name, "l"), cell(f"{r.metric} {ARROWS.get(r.direction, '')}".strip(), "l"),
                cell(cells["value"], data={"value": r.value} if r.value is not None else None),
                cell(cells["reference"]), pill(r.verdict, cls), cell(cells["runs"]), cell(cells["detail"], "err"),
            ])
        table(["target", "metric", "value", "threshold / baseline", "verdict", "n runs", "detail"], rows,
              left=(0, 1, 4, 6))

    # ---- β trade-off
    section("tradeoff", "β trade-off")
    if figures.tradeoff is not None:
        figure(figures.tradeoff, "β trade-off",
               "Each metric against β (log scale): mean ± sample std over seeds of the ok runs, one line per "
               "configuration minus seed and β. One row of panels per metric category (MetricSpec.category): "
               "disentanglement, reconstruction, image quality, other. The panel titles give each metric's direction.")
    else:
        msg = "No β trade-off: no ok run in the selection has a β > 0 and a metric."
        page.append(Block("note", msg))
        notes.append(msg)

    # ---- capacity
    if figures.capacity is not None:
        section("capacity", "Capacity curves")
        figure(figures.capacity, "capacity curves",
               "KL of the training batches (solid, one line per seed) and the target capacity C(step) "
               "(dashed), from each run's recorded history: one panel per configuration.")

    # ---- what the metrics see, and how the metrics agree
    explained_blocks(figures, figure, section, page, notes)

    # ---- leaderboard
    order = data.order
    section("leaderboard", "Leaderboard")
    if order is not None:
        page.append(Block("para", f"Mean ± sample std over the ok runs of each configuration (vaebench leaderboard's "
                                  f"numbers), ordered by {order} ({DIRECTION_TEXT.get(direction(order), '')}). "
                                  f"(n=k): fewer runs have that metric. Tiers are those the metric plugins declare. "
                                  f"[low–high]: a 95% bootstrap interval of the mean over seeds (none under 2 seeds)."))
        if data.seeds_needed is not None:
            from vaebench.harness.standings import describe_seeds_needed

            line = describe_seeds_needed(data.seeds_needed)
            page.append(Block("para", line[0].upper() + line[1:] + "."))
        if data.reference is not None:
            page.append(Block("para", f"vs {data.reference}: where each configuration's mean {order} stands against "
                                      f"the reference pack {data.reference} (vaebench list references), or why it "
                                      f"is not compared."))
    if data.board_note:
        page.append(Block("note", data.board_note))
        notes.append(data.board_note)
    board_cols = data.board_columns
    label_cols = [i for i, c in enumerate(board_cols) if c in ("likelihood", "model", "dataset", "dataset_variant", "config_id")]
    for group, names in [(GROUP_TITLES.get(c, c), n) for c, n in data.groups] or [("", [])]:
        rows = []
        for row in data.board:
            n_max = max((c["n"] for c in row["metrics"].values()), default=0)
            cells = [cell(row[c], "l" if i in label_cols else "") for i, c in enumerate(board_cols)]
            cells += [cell(row["runs"]), cell(row["n_diverged"])]
            for m in names:
                entry = row["metrics"].get(m)
                if entry and entry["mean"] is not None:
                    c = cell(mean_std(entry, n_max), data={"metric": m, "mean": entry["mean"], "std": entry["std"],
                                                           "n": entry["n"]})
                    # the same text, std on a second line so wide tables fit a screen
                    extra = "" if entry["n"] >= n_max else f" (n={entry['n']})"
                    std = f"± {fmt(entry['std'])}" if entry["std"] is not None else ""
                    ci = f" [{fmt(entry['ci95'][0])}–{fmt(entry['ci95'][1])}]" if entry.get("ci95") else ""
                    c.md, c.text = md(c.text + ci) + (f" *{md(entry['tier'])}*" if entry["tier"] else ""), fmt(entry["mean"])
                    c.tier, c.sub = entry["tier"], std + ci + extra
                else:
                    c = cell(mean_std(entry, n_max))
                cells.append(c)
            if data.reference is not None:
                cells.append(cell((row.get("reference") or {}).get("text", ""), "l"))
            rows.append(cells)
        if metrics:
            page.append(Block("h3", group))
        table([HEADERS.get(c, c) for c in board_cols] + ["runs", "diverged/failed"]
              + [f"{m} {ARROWS.get(direction(m), '')}".strip() for m in names]
              + ([f"vs {data.reference}"] if data.reference is not None else []), rows, left=label_cols)
        if not metrics:
            break

    # ---- runs
    section("runs", f"Runs ({len(runs)})")
    ordered = order_runs(runs)
    rows = []
    for r in ordered:
        cells = [cell(r["run_id"], "l"), cell(r["model"], "l"), cell(r["beta"]), cell(r["capacity"]), cell(r["gamma"]),
                 cell(r["seed"]), pill(r["status"], r["status"]), cell(f"{fmt(r['steps_done'])}/{fmt(r['steps'])}")]
        for m in metrics:
            v = r["metrics"].get(m) if r["status"] == "ok" else None
            cells.append(cell(v, data={"run": r["run_id"], "metric": m, "value": v} if v is not None else None))
        cells.append(cell(r["error"] or "", "err"))
        rows.append(cells)
    table(["run", "model", "β", "C", "γ", "seed", "status", "steps"] + metrics + ["error / note"], rows,
          left=(0, 1, 6, 8 + len(metrics)))

    bad = [r for r in ordered if r["status"] != "ok"]
    section("problems", "Diverged and failed runs")
    if bad:
        page.append(Block("para", f"{len(bad)} of {len(runs)} runs did not finish ok; they are excluded from every "
                                  "mean above (the leaderboard counts them under diverged/failed)."))
        table(["run", "configuration", "status", "at step", "error"],
              [[cell(r["run_id"], "l"), cell(run_label(r), "l"), pill(r["status"], r["status"]),
                cell(f"{fmt(r['steps_done'])}/{fmt(r['steps'])}"), cell(r["error"] or "(no message recorded)", "err")]
               for r in bad], left=(0, 1, 2, 4))
    else:
        page.append(Block("para", "None: every selected run finished ok."))

    # ---- traversals
    section("traversals", "Latent traversals")
    cards, missing = [], []
    for t in figures.traversals:
        r = t.run
        if t.invalid_id:
            missing.append(f"{r['run_id']!r}: invalid run id")
        elif t.png is None:
            missing.append(f"{r['run_id']} ({run_label(r)}, {r['status']}): {t.missing}")
        else:
            cards.append({"run_id": str(r["run_id"]), "label": run_label(r), "png": relative(t.png, out),
                          "gif": relative(t.gif, out) if t.gif is not None else None,
                          "alt": f"traversal {r['run_id']} · {run_label(r)}"})
    page.append(Block("para", "Each row sweeps one latent code over [-3, 3] around a held-out image's code; rows are "
                              "sorted by KL."))
    if cards:
        page.append(Block("cards", cards=cards))
    for text in missing:
        page.append(Block("note", "No traversal for " + text))
    notes += ["no traversal for " + m for m in missing]
    if data.skipped:
        section("skipped", "Unreadable records")
        for path, why in data.skipped:
            page.append(Block("note", f"skipped {path}: {why}"))
    return page, notes


def explained_blocks(figures: Figures, figure: Callable[..., None], section: Callable[[str, str], None],
                     page: list[Block], notes: list[str]) -> None:
    """The "what the metrics see" section (per configuration, then per run) and the
    metric-correlation panel (a figure and a table of ρ with ``n``)."""
    if figures.explained:
        section("matrices", "What the metrics see")
        page.append(Block("para", "MIG's mutual information I(z_d; v_k) between each latent dimension (rows, z0 …) and "
                                  "each ground-truth factor (columns), in nats, as MIG computed it (plug-in estimate "
                                  "over binned codes); DCI's importance matrix (each factor's gradient-boosting "
                                  "feature importances over the latent dimensions), where dci or dci_fast ran; "
                                  "MIG's gap per factor (lead of the best dimension over the runner-up, divided by "
                                  "the factor's entropy; MIG is their mean); the KL of each latent dimension over "
                                  "training where the model recorded it (signals kl.dim<d>), else its final value. "
                                  "Read from the records, not recomputed. First the mean over each configuration's "
                                  "ok runs, then each run."))
        configs = [e for e in figures.explained if e.run is None]
        runs = [e for e in figures.explained if e.run is not None]
        for title, items in (("Per configuration (mean over seeds)", configs), ("Per run", runs)):
            if items:
                page.append(Block("h3", title))
            for e in items:
                what = f"run {e.run['run_id']}" if e.run is not None else f"configuration {e.config_id}"
                figure(e.png, f"what the metrics see: {e.data.label}",
                       f"{e.data.label}" + (f": mean over {e.data.n} runs." if e.run is None else "."), e.json)
                if e.data.mi is None and e.data.gaps:
                    page.append(Block("note", f"No MI matrix recorded for {what} (only MIG's gaps)."))
    corr = figures.correlation
    if corr is None:
        return
    section("correlation", "Metric correlation")
    if len(corr.metrics) >= 2 and figures.correlation_png is not None:
        figure(figures.correlation_png, "Spearman correlation between metrics",
               "Spearman's rank correlation between each pair of headline metrics over the selected ok runs that "
               "have both (as Locatello et al. 2019 compare disentanglement metrics); n: the runs in each pair. "
               "A pair with fewer than 3 runs, or a constant metric among them, has no ρ (–).")
        rows = []
        for i, a in enumerate(corr.metrics):
            cells = [cell(a, "l")]
            for j, b in enumerate(corr.metrics):
                rho = corr.rho[i][j]
                cells.append(cell("–" if rho is None else f"{rho:+.2f}",
                                  data={"a": a, "b": b, "n": corr.n[i][j], **({"rho": rho} if rho is not None else {})}))
            rows.append(cells)
        add_table(page, ["metric", *corr.metrics], rows, left=(0,))
    else:
        msg = "No metric-correlation panel: fewer than 2 metrics vary over at least 3 ok runs."
        page.append(Block("note", msg))
        notes.append(msg)
    if corr.left_out:
        msg = "Left out of the correlation panel: " + "; ".join(f"{m} ({why})" for m, why in corr.left_out.items()) + "."
        page.append(Block("note", msg))
        notes.append(msg)


def add_table(page: list[Block], headers: Sequence[str], rows: Sequence[Sequence[Cell]],
              left: Sequence[int] = ()) -> None:
    page.append(Block("table", headers=list(headers), rows=rows, left=tuple(left)))


# --------------------------------------------------------------------------- pages


@lru_cache(maxsize=1)
def environment() -> Any:
    """The Jinja2 environment of ``templates/``: autoescape on, trailing newlines kept."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("vaebench.harness.report", "templates"),
        autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )


@dataclass
class Header:
    """What the top of both pages says."""

    title: str
    selection: str
    registry: str
    status: str
    datasets: str
    generated: str
    version: str = __version__


def header(data: Gathered, counts: Mapping[str, int]) -> Header:
    status = f"{counts['total']} runs: {counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed"
    datasets = ", ".join(sorted({f"{r['dataset']} ({r['dataset_variant']})" for r in data.runs}))
    return Header(title=f"vaebench report: {data.selection}", selection=str(data.selection), registry=str(data.root),
                  status=status, datasets=datasets,
                  generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def to_html(head: Header, page: Sequence[Block]) -> str:
    """``index.html`` (``templates/index.html.j2``)."""
    anchors = {b.anchor for b in page if b.kind == "section"}
    nav = [(a, t) for a, t in SECTIONS if a in anchors]
    return environment().get_template("index.html.j2").render(head=head, nav=nav, blocks=page)


def to_markdown(head: Header, page: Sequence[Block]) -> str:
    """``report.md``: the same blocks as the HTML, the same figure files."""
    lines: list[str] = []
    for b in page:
        if b.kind == "section":
            lines.append(f"\n## {md(b.text)}\n")
        elif b.kind == "note":
            lines.append(f"> {md(b.text)}\n")
        elif b.kind == "para":
            lines.append(f"{md(b.text)}\n")
        elif b.kind == "h3":
            lines.append(f"### {md(b.text)}\n")
        elif b.kind == "table":
            lines.append("| " + " | ".join(md(h) for h in b.headers) + " |")
            lines.append("|" + "|".join(":--" if i in b.left else "--:" for i in range(len(b.headers))) + "|")
            for row in b.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            lines.append("")
        elif b.kind == "figure":
            link = f" [{md(b.link_text)}]({b.link})" if b.link else ""
            lines.append(f"![{md(b.text)}]({b.src})\n\n{md(b.caption)}{link}\n")
        elif b.kind == "cards":
            for c in b.cards:
                link = f" · [animated GIF]({c['gif']})" if c["gif"] else ""
                lines.append(f"**{md(c['run_id'])}** · {md(c['label'])}{link}\n\n![{md(c['alt'])}]({c['png']})\n")
        else:
            raise ValueError(f"unknown block {b.kind!r}")
    return (f"# {md(head.title)}\n\nSelection: {md(head.selection)} · registry: {md(head.registry)} · "
            f"{md(head.status)} · datasets {md(head.datasets)} · generated {head.generated} by vaebench "
            f"{md(head.version)}\n" + "\n".join(lines) + "\n")


def _md_cell(c: Cell) -> str:
    if c.md is not None:
        return c.md
    return f"**{md(c.text)}**" if c.pill is not None else md(c.text)
