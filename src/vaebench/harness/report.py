"""``vaebench report``: one page about a selection of runs, as HTML and Markdown.

:func:`write_report` writes ``DIR/index.html`` and ``DIR/report.md`` with

- the β trade-off: every headline metric the runs have against β (log axis),
  mean ± sample std over seeds, one line per configuration minus seed and β
  (labelled by model), one panel per metric, disentanglement metrics (those
  whose plugin needs factors) first, then reconstruction / image quality;
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

Figures are PNG/GIF files under ``DIR/figures/``, linked by relative paths,
not data URIs: ``report.md`` shows the same files (Markdown renderers,
GitHub's among them, drop ``data:`` images), and a grid of hundreds of runs'
traversal GIFs inlined as base64 (a third larger) would make one HTML file of
tens of MB. The page has inline CSS, no scripts and no external resources,
so ``DIR`` copied anywhere still works offline.

Every string from the registry or the user is escaped (``html.escape``; in
Markdown also ``|``), and artifacts are only copied from the registry's own
``artifacts/<run_id>/`` directory, and only when they are real PNG/GIF files.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vaebench.harness.compare import summarise_metric
from vaebench.harness.output import fmt
from vaebench.registry.selection import Selection, check_prefixes, fetch_runs, parse_selection
from vaebench.registry.store import artifact_path

__all__ = ["ReportError", "ReportResult", "headline_metrics", "tradeoff_series", "write_report"]

#: Record columns a report needs besides ``selection.RUN_COLUMNS``.
EXTRA_COLUMNS = ("spec_json", "error", "steps", "steps_done", "history", "artifacts")
#: Leaderboard grouping columns shown (``config_id`` last); columns no row sets are dropped.
BOARD_COLUMNS = ("model", "dataset", "dataset_variant", "beta", "capacity", "gamma", "latent_dim", "config_id")
HEADERS = {"dataset_variant": "variant", "beta": "β", "capacity": "C", "gamma": "γ", "latent_dim": "D",
           "config_id": "config"}
ARROWS = {"higher": "↑", "lower": "↓"}
DIRECTION_TEXT = {"higher": "↑ higher is better", "lower": "↓ lower is better", "none": "no better direction"}
#: Spec fields that never separate two lines of the trade-off figure (a line is a config minus these).
_LINE_IGNORES = ("seed", "beta", "dataset_path")
_RUN_ID = re.compile(r"[0-9a-f]{6,64}")
_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"GIF87a": ".gif", b"GIF89a": ".gif"}


class ReportError(ValueError):
    """A usage problem (one line): no runs selected, an output path that is a file."""


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


# --------------------------------------------------------------------------- data


def headline_metrics(runs: Sequence[Mapping[str, Any]], specs: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(disentanglement, quality)``: the registered metric names the ok runs hold, in plugin order.

    A metric whose plugin needs ``factors`` is a disentanglement metric; every
    other one (reconstruction, KL, SSIM, PSNR, Fréchet distance, ...) is quality.
    Dotted extras (``mig.gap.posX``) and keys no installed plugin declares are left out.
    """
    present = {k for r in runs if r["status"] == "ok" for k in r["metrics"]}
    names = [name for name in specs if name in present]
    return ([n for n in names if "factors" in specs[n].needs], [n for n in names if "factors" not in specs[n].needs])


def _line_key(run: Mapping[str, Any]) -> str:
    """The run's configuration minus seed and β, canonical JSON (one line of the trade-off)."""
    try:
        spec = json.loads(run.get("spec_json") or "")
    except ValueError:
        spec = None
    if not isinstance(spec, dict):
        from vaebench.harness.compare import CONFIG_COLUMNS

        spec = {c: run.get(c) for c in CONFIG_COLUMNS if c != "device"}
    return json.dumps({k: v for k, v in spec.items() if k not in _LINE_IGNORES}, sort_keys=True, default=str)


def _labels(keys: Sequence[str]) -> dict[str, str]:
    """Line labels: the model, plus the fields that tell apart lines of the same model."""
    specs = {k: json.loads(k) for k in keys}
    out: dict[str, str] = {}
    for key, spec in specs.items():
        model = str(spec.get("model"))
        same = [s for s in specs.values() if s.get("model") == spec.get("model")]
        differ = sorted({f for s in same for f in set(s) | set(spec) if s.get(f) != spec.get(f)} - {"model"})
        extra = ", ".join(f"{f}={fmt(spec.get(f))}" for f in differ)
        out[key] = f"{model} ({extra})" if extra else model
    return out


def tradeoff_series(runs: Sequence[Mapping[str, Any]], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Line label -> points ``{"beta", "mean", "std", "n"}`` (β ascending) of ``metric``.

    Runs are grouped by configuration minus seed and β; mean / std / n are
    :func:`compare.summarise_metric` (ok runs, finite values, sample std).
    Only ok runs count; runs without β (or β ≤ 0, which a log axis cannot show) are left out.
    """
    groups: dict[str, dict[float, list[Mapping[str, Any]]]] = {}
    for r in runs:
        beta = r.get("beta")
        if r["status"] != "ok":
            continue
        if beta is None or not math.isfinite(beta) or beta <= 0:
            continue
        groups.setdefault(_line_key(r), {}).setdefault(float(beta), []).append(r)
    labels = _labels(list(groups))
    out: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(groups, key=lambda k: labels[k]):
        points = []
        for beta in sorted(groups[key]):
            s = summarise_metric(groups[key][beta], metric)
            if s["mean"] is not None:
                points.append({"beta": beta, **s})
        if points:
            out[labels[key]] = points
    return out


def _board(con: Any, selection: Selection, metrics: Sequence[str], order_by: str | None,
           direction: Callable[[str], str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Leaderboard rows over ``selection``: group columns, ``runs``, ``n_diverged`` and per metric
    ``{mean, std, n, tier}``; ordered as ``vaebench leaderboard --metric order_by`` orders them."""
    from vaebench.harness.targets import tier
    from vaebench.registry.query import DEFAULT_BY, rank

    first = order_by or (metrics[0] if metrics else "mig")
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for metric in dict.fromkeys([first, *metrics]):
        table = rank(con, metric, DEFAULT_BY, descending=direction(metric) != "lower", selection=selection)
        for row in table.to_pylist():
            key = tuple(row[c] for c in DEFAULT_BY)
            entry = rows.setdefault(key, {**{c: row[c] for c in DEFAULT_BY}, "runs": len(row["seeds"]),
                                          "n_diverged": row["n_diverged"], "metrics": {}})
            entry["metrics"][metric] = {"mean": row["mean"], "std": row["std"], "n": row["n"],
                                        "tier": tier(metric, row["mean"])}
    # Unset columns only take width; so do the dataset columns when one dataset is reported (the header names it).
    columns = [c for c in BOARD_COLUMNS if any(r[c] is not None for r in rows.values())
               and not (c in ("dataset", "dataset_variant") and len({r[c] for r in rows.values()}) == 1)]
    return columns, list(rows.values())


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_beta_axis(ax: Any, betas: Sequence[float]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ticks = sorted(set(betas))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{b:g}" for b in ticks])
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] / 2, ticks[0] * 2)


def plot_tradeoff(runs: Sequence[Mapping[str, Any]], groups: Sequence[tuple[str, Sequence[str]]],
                  direction: Callable[[str], str], path: Path) -> bool:
    """The β trade-off figure: one panel per metric, groups (title, metrics) starting new rows.
    Returns False (nothing written) when no run has both a β and one of the metrics."""
    panels: list[tuple[str, str, dict[str, list[dict[str, Any]]]]] = []
    for title, metrics in groups:
        for m in metrics:
            series = tradeoff_series(runs, m)
            if series:
                panels.append((title, m, series))
    if not panels:
        return False
    plt = _pyplot()
    ncols = min(4, max(sum(p[0] == t for p in panels) for t, _ in groups))
    layout: list[list[Any]] = []
    for title, _ in groups:
        mine = [p for p in panels if p[0] == title]
        for i in range(0, len(mine), ncols):
            layout.append(mine[i:i + ncols])
    labels = sorted({label for p in panels for label in p[2]})
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(len(layout), ncols, figsize=(3.6 * ncols, 2.9 * len(layout) + 0.7), squeeze=False)
    for r, row in enumerate(layout):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row):
                ax.set_visible(False)
                continue
            group, metric, series = row[c]
            betas: list[float] = []
            for label, points in series.items():
                xs = [p["beta"] for p in points]
                betas += xs
                ax.errorbar(xs, [p["mean"] for p in points], yerr=[p["std"] or 0.0 for p in points],
                            marker="o", markersize=4, capsize=3, linewidth=1.4, color=colors[label], label=label)
            _log_beta_axis(ax, betas)
            d = direction(metric)
            ax.set_title(f"{metric}  ({DIRECTION_TEXT.get(d, d)})", fontsize=9)
            ax.set_xlabel("β (log scale)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(group, fontsize=8, fontweight="bold")
    handles = [plt.Line2D([], [], color=colors[label], marker="o", label=label) for label in labels]
    fig.legend(handles=handles, loc="upper center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def capacity_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """config_id -> runs with a capacity and a history carrying C(step), seed order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: (str(r["config_id"]), r["seed"] if r["seed"] is not None else -1)):
        history = r.get("history") or []
        if r.get("capacity") is not None and any(h.get("capacity") is not None for h in history):
            out.setdefault(str(r["config_id"]), []).append(r)
    return out


def plot_capacity(groups: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> bool:
    """KL (training batches) vs step with the target C(step), one panel per configuration."""
    if not groups:
        return False
    plt = _pyplot()
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False)
    for i, (config, runs) in enumerate(groups.items()):
        ax = axes[i // ncols][i % ncols]
        target_drawn = False
        for j, r in enumerate(runs):
            points = [h for h in r["history"] if h.get("kl") is not None and math.isfinite(h["kl"])]
            status = "" if r["status"] == "ok" else f" ({r['status']})"
            ax.plot([h["step"] for h in points], [h["kl"] for h in points], color=plt.get_cmap("tab10")(j % 10),
                    linewidth=1.3, label=f"KL, seed {r['seed']}{status}")
            if not target_drawn:
                cap = [h for h in r["history"] if h.get("capacity") is not None]
                ax.plot([h["step"] for h in cap], [h["capacity"] for h in cap], "k--", linewidth=1.3,
                        label="target C(step)")
                target_drawn = True
        first = runs[0]
        ax.set_title(f"{first['model']}  C_max={fmt(first['capacity'])} nats, γ={fmt(first['gamma'])}\n"
                     f"config {config}", fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("KL (nats)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for k in range(len(groups), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _copy_artifact(registry: Path, run: Mapping[str, Any], key: str, dest_dir: Path, name: str) -> tuple[Path | None, str | None]:
    """Copy artifact ``key`` of ``run`` into ``dest_dir``: ``(copied path, None)`` or ``(None, why not)``.

    Only files inside ``<registry>/artifacts/<run_id>/`` are copied (``store.artifact_path``:
    a moved registry still finds its file there), and only real PNG / GIF files.
    """
    recorded = (run.get("artifacts") or {}).get(key)
    if not recorded:
        return None, "not recorded"
    run_id = str(run["run_id"])
    if not _RUN_ID.fullmatch(run_id):
        return None, "invalid run id"
    source = artifact_path(registry, run_id, recorded)
    if source is None:
        return None, f"file missing ({recorded})"
    try:
        with open(source, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return None, f"cannot read {source.name} ({exc.strerror or exc})"
    suffix = next((s for magic, s in _MAGIC.items() if head.startswith(magic)), None)
    if suffix is None:
        return None, f"{source.name} is not a PNG or GIF file"
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{name}{suffix}"
    shutil.copyfile(source, target)
    return target, None


# --------------------------------------------------------------------------- rendering helpers


def _h(value: Any) -> str:
    """A value for HTML text or an attribute, formatted with ``output.fmt`` and escaped."""
    return html.escape(value if isinstance(value, str) else fmt(value), quote=True)


def _md(value: Any) -> str:
    """A Markdown table cell: escaped like HTML (Markdown passes HTML through), ``|`` and newlines too."""
    text = value if isinstance(value, str) else fmt(value)
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _href(path: Path, base: Path) -> str:
    return html.escape(quote(path.relative_to(base).as_posix()), quote=True)


def _mean_std(cell: Mapping[str, Any] | None, n_max: int) -> str:
    if not cell or cell["mean"] is None:
        return "-"
    text = fmt(cell["mean"]) + (f" ± {fmt(cell['std'])}" if cell["std"] is not None else "")
    if cell["n"] < n_max:
        text += f" (n={cell['n']})"
    return text


def _run_label(r: Mapping[str, Any]) -> str:
    parts = [str(r["model"])]
    for key, name in (("beta", "β"), ("capacity", "C"), ("gamma", "γ"), ("seed", "seed")):
        if r.get(key) is not None:
            parts.append(f"{name}={fmt(r[key])}")
    return " ".join(parts)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1400px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:24px;margin:8px 0 4px}h3{font-size:15px;margin:16px 0 6px}h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #d9dde4;padding-bottom:4px}
.meta{color:#5a6472;font-size:13px}.meta code{background:#eceff3;padding:1px 4px;border-radius:3px}
nav a{margin-right:14px;color:#2456a6;text-decoration:none}
.wrap{overflow-x:auto;background:#fff;border:1px solid #d9dde4;border-radius:6px}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{padding:5px 9px;border-bottom:1px solid #eceff3;text-align:right;white-space:nowrap;vertical-align:top}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}
td.l,th.l{text-align:left}td.err{white-space:normal;min-width:260px;text-align:left;color:#8a1c1c}
tr:nth-child(even) td{background:#fafbfc}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.pass{background:#dcf3e2;color:#17643a}.changed{background:#fff1cc;color:#7a5600}
.fail,.error,.failed{background:#fbdddd;color:#8a1c1c}.diverged{background:#ffe4cc;color:#8a4300}.ok{background:#e4ecf7;color:#234b80}
.tier{font-size:11px;color:#17643a;font-weight:600;margin-left:4px}
figure{margin:10px 0;background:#fff;border:1px solid #d9dde4;border-radius:6px;padding:10px}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12.5px;color:#3b4450;margin-top:6px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:14px}
.card{background:#fff;border:1px solid #d9dde4;border-radius:6px;padding:10px}
.card img{max-width:100%;height:auto;display:block}.card .cap{font-size:12.5px;margin-bottom:6px}
.note{color:#7a5600;background:#fff8e1;border:1px solid #f0dea0;border-radius:6px;padding:6px 10px;margin:6px 0}
.muted{color:#6b7480}.sd{font-size:11px;color:#6b7480}
"""


@dataclass
class _Page:
    """Sections rendered twice: HTML (``html``) and Markdown (``md``)."""

    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)

    def section(self, anchor: str, title: str) -> None:
        self.html.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        self.md.append(f"\n## {_md(title)}\n")

    def note(self, text: str) -> None:
        self.html.append(f'<p class="note">{html.escape(text)}</p>')
        self.md.append(f"> {_md(text)}\n")

    def para(self, text: str) -> None:
        self.html.append(f'<p class="muted">{html.escape(text)}</p>')
        self.md.append(f"{_md(text)}\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], left: Sequence[int] = ()) -> None:
        """``rows``: cells ``(html, markdown)``; the HTML is already escaped by the caller."""
        th = "".join(f'<th class="{"l" if i in left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
        body = "".join("<tr>" + "".join(c[0] for c in row) + "</tr>" for row in rows)
        self.html.append(f'<div class="wrap"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>')
        self.md.append("| " + " | ".join(_md(h) for h in headers) + " |")
        self.md.append("|" + "|".join(":--" if i in left else "--:" for i in range(len(headers))) + "|")
        for row in rows:
            self.md.append("| " + " | ".join(c[1] for c in row) + " |")
        self.md.append("")

    def figure(self, path: Path, base: Path, alt: str, caption: str) -> None:
        self.html.append(f'<figure><img src="{_href(path, base)}" alt="{html.escape(alt)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        self.md.append(f"![{_md(alt)}]({quote(path.relative_to(base).as_posix())})\n\n{_md(caption)}\n")


def _td(value: Any, cls: str = "", title: str | None = None, data: Mapping[str, Any] | None = None) -> tuple[str, str]:
    attrs = f' class="{cls}"' if cls else ""
    if title is not None:
        attrs += f' title="{html.escape(title, quote=True)}"'
    for k, v in (data or {}).items():
        attrs += f' data-{k}="{html.escape(repr(v) if isinstance(v, float) else str(v), quote=True)}"'
    return f"<td{attrs}>{_h(value)}</td>", _md(value)


def _pill(text: str, cls: str) -> tuple[str, str]:
    return f'<td class="l"><span class="pill {cls}">{html.escape(text)}</span></td>', f"**{_md(text)}**"


# --------------------------------------------------------------------------- the report


def write_report(
    registry: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    selection: str | Mapping[str, Any] | Selection | None = None,
    targets: str | os.PathLike[str] | None = None,
    baseline: str | Mapping[str, Any] | Selection | None = None,
    metric: str | None = None,
) -> ReportResult:
    """Write ``out_dir/index.html``, ``out_dir/report.md`` and ``out_dir/figures/`` for the runs
    of ``registry`` matching ``selection`` (the syntax of ``vaebench compare``; None: every run).

    ``targets``: a targets TOML (``vaebench check``'s format) whose verdicts the
    report shows; ``baseline`` selects the baseline runs of its max_regression
    checks. ``metric`` orders the leaderboard (default: the first disentanglement
    metric present). Raises :class:`ReportError` / ``ValueError`` (no run
    selected, an ambiguous run id prefix, ``out_dir`` not a directory),
    ``targets.TargetsError`` (a bad targets file) and ``store.RegistryError``
    (an unreadable registry), each with a one-line message; nothing is written then.
    Missed targets are not errors: they are in the report and ``.targets``.
    """
    from vaebench.api import metric_direction
    from vaebench.harness import targets as tg
    from vaebench.plugins.manager import get_manager
    from vaebench.registry.readonly import open_readonly
    from vaebench.registry.store import RegistryError

    sel = parse_selection(selection)
    base_sel = parse_selection(baseline) if baseline is not None else None
    parsed = tg.load_targets(targets, baseline=base_sel is not None) if targets is not None else None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    root = Path(registry)
    if not root.is_dir():
        raise RegistryError(f"registry {root} does not exist (run `vaebench run` first or pass --registry)")
    specs = get_manager().specs["metrics"]
    con, skipped = open_readonly(root)
    try:
        check_prefixes(con, sel)
        if base_sel is not None:
            check_prefixes(con, base_sel)
        runs = fetch_runs(con, sel, extra=EXTRA_COLUMNS)
        if not runs:
            raise ReportError(f"selection {sel} matches no runs" if not sel.empty else f"registry {root} holds no runs")
        disentangle, quality = headline_metrics(runs, specs)
        metrics = disentangle + quality
        if metric is not None and metric not in metrics:
            raise ReportError(f"--metric: {metric!r} is not among the selected runs' metrics "
                              f"({', '.join(metrics) or 'none'})")
        board_cols, board = _board(con, sel, metrics, metric or (metrics[0] if metrics else None), metric_direction)
        verdicts = tg.check_targets(con, parsed, sel, base_sel) if parsed is not None else []
    finally:
        con.close()

    return _stage_and_publish(out, lambda stage: _render(
        stage, root, sel, runs, skipped, verdicts, parsed, targets, metric, metrics, disentangle, quality,
        board_cols, board))


def _stage_and_publish(out: Path, render: Callable[[Path], ReportResult]) -> ReportResult:
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


def _render(out: Path, root: Path, sel: Selection, runs: Sequence[Mapping[str, Any]], skipped: list[tuple[Path, str]],
            verdicts: list[Any], parsed: Any, targets: str | os.PathLike[str] | None, metric: str | None,
            metrics: list[str], disentangle: list[str], quality: list[str], board_cols: Any, board: Any) -> ReportResult:
    """Write the report's files into ``out`` (an empty directory)."""
    from vaebench.api import metric_direction
    from vaebench.harness import targets as tg

    figures_dir = out / "figures"
    figures_dir.mkdir()
    result = ReportResult(out_dir=out, html=out / "index.html", markdown=out / "report.md", skipped=skipped,
                          targets=verdicts)
    result.counts = {s: sum(r["status"] == s for r in runs) for s in ("ok", "diverged", "failed")}
    result.counts["total"] = len(runs)
    page = _Page()

    # ---- targets
    if parsed is not None:
        met = sum(r.passed for r in verdicts)
        page.section("targets", f"Targets: {met} of {len(verdicts)} met")
        page.para(f"From {Path(str(targets)).name}, over the selected runs. A missed target does not change "
                  f"this report's exit status; vaebench check is the CI gate. Regressions: {tg.TEST_NAME}.")
        rows = []
        for r in verdicts:
            cells = tg.describe(r)
            cls = "pass" if r.verdict == "pass" else "changed" if r.passed else "error" if r.verdict.startswith("error") else "fail"
            rows.append([
                _td(r.name, "l"), _td(f"{r.metric} {ARROWS.get(r.direction, '')}".strip(), "l"),
                _td(cells["value"], data={"value": r.value} if r.value is not None else None),
                _td(cells["reference"]), _pill(r.verdict, cls), _td(cells["runs"]), _td(cells["detail"], "err"),
            ])
        page.table(["target", "metric", "value", "threshold / baseline", "verdict", "n runs", "detail"], rows, left=(0, 1, 4, 6))

    # ---- β trade-off
    page.section("tradeoff", "β trade-off")
    direction = metric_direction
    tradeoff = figures_dir / "beta_tradeoff.png"
    groups = [("disentanglement", disentangle), ("reconstruction / quality", quality)]
    if plot_tradeoff(runs, groups, direction, tradeoff):
        result.figures.append(tradeoff)
        page.figure(tradeoff, out, "β trade-off",
                    "Each metric against β (log scale): mean ± sample std over seeds of the ok runs, one line per "
                    "configuration minus seed and β. Top rows: disentanglement metrics; then reconstruction and image "
                    "quality. The panel titles give each metric's direction.")
    else:
        tradeoff.unlink(missing_ok=True)
        msg = "No β trade-off: no ok run in the selection has a β > 0 and a metric."
        page.note(msg)
        result.notes.append(msg)

    # ---- capacity
    cap_groups = capacity_runs(runs)
    if cap_groups:
        page.section("capacity", "Capacity curves")
        cap = figures_dir / "capacity.png"
        plot_capacity(cap_groups, cap)
        result.figures.append(cap)
        page.figure(cap, out, "capacity curves",
                    "KL of the training batches (solid, one line per seed) and the target capacity C(step) "
                    "(dashed), from each run's recorded history: one panel per configuration.")

    # ---- leaderboard
    order = metric or (metrics[0] if metrics else None)
    page.section("leaderboard", "Leaderboard")
    if order is not None:
        page.para(f"Mean ± sample std over the ok runs of each configuration (vaebench leaderboard's numbers), "
                  f"ordered by {order} ({DIRECTION_TEXT.get(direction(order), '')}). (n=k): fewer runs have that "
                  f"metric. Tiers are those the metric plugins declare.")
    label_cols = [i for i, c in enumerate(board_cols) if c in ("model", "dataset", "dataset_variant", "config_id")]
    for group, names in (("Disentanglement", disentangle), ("Reconstruction / quality", quality)):
        if not names and metrics:
            continue
        rows = []
        for row in board:
            n_max = max((c["n"] for c in row["metrics"].values()), default=0)
            cells = [_td(row[c], "l" if i in label_cols else "") for i, c in enumerate(board_cols)]
            cells += [_td(row["runs"]), _td(row["n_diverged"])]
            for m in names:
                cell = row["metrics"].get(m)
                data = ({"metric": m, "mean": cell["mean"], "std": cell["std"], "n": cell["n"]}
                        if cell and cell["mean"] is not None else None)
                h, md = _td(_mean_std(cell, n_max), data=data)
                if cell and cell["mean"] is not None:
                    # the same text, std on a second line so wide tables fit a screen
                    extra = "" if cell["n"] >= n_max else f" (n={cell['n']})"
                    std = f"± {fmt(cell['std'])}" if cell["std"] is not None else ""
                    tier_html = f'<span class="tier">{html.escape(cell["tier"])}</span>' if cell["tier"] else ""
                    h = (h[: h.index(">") + 1] + f"{_h(cell['mean'])}{tier_html}"
                         f'<br><span class="sd">{_h(std + extra)}</span></td>')
                    if cell["tier"]:
                        md += f" *{_md(cell['tier'])}*"
                cells.append((h, md))
            rows.append(cells)
        if metrics:
            page.html.append(f"<h3>{html.escape(group)}</h3>")
            page.md.append(f"### {group}\n")
        page.table([HEADERS.get(c, c) for c in board_cols] + ["runs", "diverged/failed"]
                   + [f"{m} {ARROWS.get(direction(m), '')}".strip() for m in names], rows, left=label_cols)
        if not metrics:
            break

    # ---- runs
    page.section("runs", f"Runs ({len(runs)})")
    ordered = sorted(runs, key=lambda r: (str(r["model"]), r["beta"] or 0.0, r["capacity"] or 0.0,
                                          r["gamma"] or 0.0, str(r["config_id"]), r["seed"] or 0, r["run_id"]))
    rows = []
    for r in ordered:
        cells = [_td(r["run_id"], "l"), _td(r["model"], "l"), _td(r["beta"]), _td(r["capacity"]), _td(r["gamma"]),
                 _td(r["seed"]), _pill(r["status"], r["status"]), _td(f"{fmt(r['steps_done'])}/{fmt(r['steps'])}")]
        for m in metrics:
            v = r["metrics"].get(m) if r["status"] == "ok" else None
            cells.append(_td(v, data={"run": r["run_id"], "metric": m, "value": v} if v is not None else None))
        cells.append(_td(r["error"] or "", "err"))
        rows.append(cells)
    page.table(["run", "model", "β", "C", "γ", "seed", "status", "steps"] + metrics + ["error / note"], rows,
               left=(0, 1, 6, 8 + len(metrics)))

    bad = [r for r in ordered if r["status"] != "ok"]
    page.section("problems", "Diverged and failed runs")
    if bad:
        page.para(f"{len(bad)} of {len(runs)} runs did not finish ok; they are excluded from every mean above "
                  "(the leaderboard counts them under diverged/failed).")
        page.table(["run", "configuration", "status", "at step", "error"],
                   [[_td(r["run_id"], "l"), _td(_run_label(r), "l"), _pill(r["status"], r["status"]),
                     _td(f"{fmt(r['steps_done'])}/{fmt(r['steps'])}"), _td(r["error"] or "(no message recorded)", "err")]
                    for r in bad], left=(0, 1, 2, 4))
    else:
        page.para("None: every selected run finished ok.")

    # ---- traversals
    page.section("traversals", "Latent traversals")
    cards_html, cards_md, missing = [], [], []
    for r in ordered:
        safe = r["run_id"] if _RUN_ID.fullmatch(str(r["run_id"])) else None
        label = f"{r['run_id']} · {_run_label(r)}"
        if safe is None:
            missing.append(f"{r['run_id']!r}: invalid run id")
            continue
        dest = figures_dir / "runs" / safe
        png, why = _copy_artifact(root, r, "traversal_png", dest, "traversal")
        if png is None:
            missing.append(f"{r['run_id']} ({_run_label(r)}, {r['status']}): traversal {why}")
            continue
        result.figures.append(png)
        gif, _ = _copy_artifact(root, r, "traversal_gif", dest, "traversal")
        if gif is not None:
            result.figures.append(gif)
        link = f' · <a href="{_href(gif, out)}">animated GIF</a>' if gif else ""
        cards_html.append(f'<div class="card"><div class="cap"><code>{_h(r["run_id"])}</code> · {_h(_run_label(r))}'
                          f'{link}</div><a href="{_href(png, out)}"><img src="{_href(png, out)}" alt="{_h("traversal " + label)}"></a></div>')
        md_link = f" · [animated GIF]({quote(gif.relative_to(out).as_posix())})" if gif else ""
        cards_md.append(f"**{_md(r['run_id'])}** · {_md(_run_label(r))}{md_link}\n\n"
                        f"![{_md('traversal ' + label)}]({quote(png.relative_to(out).as_posix())})\n")
    page.para("Each row sweeps one latent code over [-3, 3] around a held-out image's code; rows are sorted by KL.")
    if cards_html:
        page.html.append('<div class="grid">' + "".join(cards_html) + "</div>")
        page.md.extend(cards_md)
    for text in missing:
        page.note("No traversal for " + text)
    result.notes += ["no traversal for " + m for m in missing]
    if skipped:
        page.section("skipped", "Unreadable records")
        for path, why in skipped:
            page.note(f"skipped {path}: {why}")

    _write(result, page, sel, root, runs, metrics)
    return result


def _write(result: ReportResult, page: _Page, sel: Selection, root: Path, runs: Sequence[Mapping[str, Any]],
           metrics: Sequence[str]) -> None:
    import vaebench

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    c = result.counts
    status = f"{c['total']} runs: {c['ok']} ok, {c['diverged']} diverged, {c['failed']} failed"
    datasets = ", ".join(sorted({f"{r['dataset']} ({r['dataset_variant']})" for r in runs}))
    title = f"vaebench report: {sel}"
    sections = [("targets", "Targets"), ("tradeoff", "β trade-off"), ("capacity", "Capacity"),
                ("leaderboard", "Leaderboard"), ("runs", "Runs"), ("problems", "Diverged / failed"),
                ("traversals", "Traversals")]
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in sections if f'id="{a}"' in "".join(page.html))
    head = (f'<h1>{html.escape(title)}</h1><p class="meta">Selection <code>{html.escape(str(sel))}</code> · '
            f"registry <code>{html.escape(str(root))}</code> · {html.escape(status)} · datasets "
            f"{html.escape(datasets)} · generated {now} by vaebench {html.escape(vaebench.__version__)}</p>"
            f"<nav>{nav}</nav>")
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><main>{head}\n"
           + "\n".join(page.html) + "\n</main></body></html>\n")
    md = (f"# {_md(title)}\n\nSelection: {_md(str(sel))} · registry: {_md(str(root))} · {_md(status)} · "
          f"datasets {_md(datasets)} · generated {now} by vaebench {_md(vaebench.__version__)}\n"
          + "\n".join(page.md) + "\n")
    result.html.write_text(doc, encoding="utf-8")
    result.markdown.write_text(md, encoding="utf-8")
