"""The report's figures, written under ``DIR/figures/``: the β trade-off and the capacity
curves (matplotlib, Agg), what the metrics see (per configuration and per run: MIG's MI
matrix, DCI's importance matrix, MIG's per-factor gaps, KL per latent dimension; each with
its data as ``matrices.json`` beside it), the metric-correlation panel, and each run's
traversal copied from its artifacts.

Artifacts are only copied from the registry's own ``artifacts/<run_id>/`` directory, and
only when they are real PNG/GIF files.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaebench.harness.output import DIRECTION_TEXT, fmt
from vaebench.harness.report.gather import GROUP_TITLES, RUN_ID, Gathered, capacity_runs, tradeoff_series
from vaebench.harness.report.matrices import Correlation, Explained, explain_configs, explain_run, metric_correlation
from vaebench.registry.store import artifact_path

_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"GIF87a": ".gif", b"GIF89a": ".gif"}


@dataclass
class Traversal:
    """A run's traversal as the report shows it: the copied PNG (and GIF), or why there is none."""

    run: Mapping[str, Any]
    png: Path | None = None
    gif: Path | None = None
    #: why there is no traversal (``None``: there is one)
    missing: str | None = None
    #: the record's run id is not a run id (nothing was looked for)
    invalid_id: bool = False


@dataclass
class Explanation:
    """One "what the metrics see" figure: a configuration's mean (``run`` is ``None``) or a run's."""

    data: Explained
    png: Path
    json: Path
    config_id: str
    run: Mapping[str, Any] | None = None


@dataclass
class Figures:
    """What :func:`write_figures` wrote (``None``: not drawn)."""

    tradeoff: Path | None = None
    capacity: Path | None = None
    traversals: list[Traversal] = field(default_factory=list)
    #: per configuration (means over its ok runs), then per run, in the report's order
    explained: list[Explanation] = field(default_factory=list)
    correlation: Correlation | None = None
    correlation_png: Path | None = None

    def files(self) -> list[Path]:
        """Every image written, in the order the report shows them (the ``matrices.json`` beside
        each matrices figure is not an image and not listed)."""
        out = [p for p in (self.tradeoff, self.capacity) if p is not None]
        for e in self.explained:
            out.append(e.png)
        if self.correlation_png is not None:
            out.append(self.correlation_png)
        for t in self.traversals:
            out += [p for p in (t.png, t.gif) if p is not None]
        return out


def write_figures(data: Gathered, ordered: Sequence[Mapping[str, Any]], figures_dir: Path,
                  direction: Callable[[str], str]) -> Figures:
    """Draw and copy the report's figures into ``figures_dir`` (created); traversals of
    ``ordered`` (the runs in the report's order)."""
    figures_dir.mkdir()
    out = Figures()
    tradeoff = figures_dir / "beta_tradeoff.png"
    groups = [(GROUP_TITLES.get(category, category).lower(), names) for category, names in data.groups]
    if plot_tradeoff(data.runs, groups, direction, tradeoff):
        out.tradeoff = tradeoff
    else:
        tradeoff.unlink(missing_ok=True)
    cap_groups = capacity_runs(data.runs)
    if cap_groups:
        out.capacity = figures_dir / "capacity.png"
        plot_capacity(cap_groups, out.capacity)
    label = run_title
    for config, mean in explain_configs(ordered, label):
        dest = figures_dir / "configs" / config if RUN_ID.fullmatch(config) else None
        if dest is not None:
            out.explained.append(_explanation(mean, dest, config, None))
    for r in ordered:
        if r["status"] == "ok" and RUN_ID.fullmatch(str(r["run_id"])):
            one = explain_run(r, f"{label(r)} · run {r['run_id']}")
            if not one.empty:
                out.explained.append(_explanation(one, figures_dir / "runs" / str(r["run_id"]), str(r["config_id"]), r))
    out.correlation = metric_correlation(data.runs, data.metrics)
    if len(out.correlation.metrics) >= 2:
        out.correlation_png = figures_dir / "metric_correlation.png"
        plot_correlation(out.correlation, out.correlation_png)
    for r in ordered:
        if not RUN_ID.fullmatch(str(r["run_id"])):
            out.traversals.append(Traversal(r, missing="invalid run id", invalid_id=True))
            continue
        dest = figures_dir / "runs" / str(r["run_id"])
        png, why = _copy_artifact(data.root, r, "traversal_png", dest, "traversal")
        if png is None:
            out.traversals.append(Traversal(r, missing=f"traversal {why}"))
            continue
        gif, _ = _copy_artifact(data.root, r, "traversal_gif", dest, "traversal")
        out.traversals.append(Traversal(r, png=png, gif=gif))
    return out


def run_title(r: Mapping[str, Any]) -> str:
    """A short title of a run's configuration: model, β, C, γ."""
    parts = [str(r["model"])]
    for key, name in (("beta", "β"), ("capacity", "C"), ("gamma", "γ")):
        if r.get(key) is not None:
            parts.append(f"{name}={fmt(r[key])}")
    return " ".join(parts)


def plain(text: Any) -> str:
    """``text`` as matplotlib draws it literally: ``$`` escaped (no mathtext from a registry string)."""
    return str(text).replace("$", r"\$")


def _explanation(data: Explained, dest: Path, config: str, run: Mapping[str, Any] | None) -> Explanation:
    """Draw ``data`` as ``dest/matrices.png`` with its numbers as ``dest/matrices.json``."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    png, js = dest / "matrices.png", dest / "matrices.json"
    plot_explained(data, png)
    js.write_text(json.dumps(data.to_dict(), indent=1), encoding="utf-8")
    return Explanation(data=data, png=png, json=js, config_id=config, run=run)


def _heatmap(fig: Any, ax: Any, matrix: Sequence[Sequence[float]], columns: Sequence[str], title: str,
             unit: str, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
             rows: Sequence[str] | None = None, annotate: bool = False) -> None:
    """A labelled heat map of ``matrix`` (rows x columns) with a colour bar in ``unit``."""
    import numpy as np

    m = np.array(matrix, dtype=float)
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([plain(c) for c in columns], rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(m.shape[0]))
    ax.set_yticklabels([plain(r) for r in rows] if rows is not None else [f"z{d}" for d in range(m.shape[0])],
                       fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(unit, fontsize=7)
    if annotate:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(v) and abs(v) > 0.5 else "black")


def plot_explained(data: Explained, path: Path) -> None:
    """One row of panels: MIG's MI matrix (latent dimension x factor, nats), DCI's importance
    matrix, MIG's gap per factor, KL per latent dimension over training (else its final
    value); a panel without data is left out."""
    import numpy as np

    plt = _pyplot()
    panels = [p for p, ok in (("mi", data.mi is not None), ("dci", data.importance is not None),
                              ("gaps", bool(data.gaps)),
                              ("kl", data.kl_over_training is not None or data.kl_final is not None)) if ok]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    mean = f" (mean of {data.n} runs)" if data.n > 1 else ""
    for ax, panel in zip(axes[0], panels):
        if panel == "mi":
            _heatmap(fig, ax, data.mi, data.mi_factors, f"MIG: I(z_d; v_k){mean}", "mutual information (nats)",
                     vmin=0.0)
            ax.set_xlabel("factor", fontsize=8)
            ax.set_ylabel("latent dimension", fontsize=8)
        elif panel == "dci":
            _heatmap(fig, ax, data.importance, data.importance_factors, f"{data.importance_metric}: importance R[d, k]",
                     "feature importance", cmap="magma", vmin=0.0)
            ax.set_xlabel("factor", fontsize=8)
            ax.set_ylabel("latent dimension", fontsize=8)
        elif panel == "gaps":
            names = list(data.gaps)
            bars = ax.bar(range(len(names)), [data.gaps[f] for f in names], color="#1f77b4")
            ax.bar_label(bars, fmt="%.3f", fontsize=6)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([plain(f) for f in names], rotation=35, ha="right", fontsize=7)
            ax.set_ylim(0, max(1.0, max(data.gaps.values())))
            ax.set_title("MIG gap per factor: (I₁ − I₂) / H(v)", fontsize=9)
            ax.set_xlabel("factor", fontsize=8)
            ax.set_ylabel("normalised gap", fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        else:
            if data.kl_over_training is not None:
                curves = np.array(data.kl_over_training, dtype=float)
                for d, curve in enumerate(curves):
                    ax.plot(data.kl_steps, curve, linewidth=1.2, color=plt.get_cmap("tab10")(d % 10), label=f"z{d}")
                ax.set_xlabel("training step", fontsize=8)
                ax.set_title("KL per latent dimension over training", fontsize=9)
                ax.legend(fontsize=6, ncol=2)
            else:
                ax.bar(range(len(data.kl_final)), data.kl_final, color="#1f77b4")
                ax.set_xticks(range(len(data.kl_final)))
                ax.set_xticklabels([f"z{d}" for d in range(len(data.kl_final))], fontsize=7)
                ax.set_xlabel("latent dimension", fontsize=8)
                ax.set_title("KL per latent dimension (final; none recorded over training)", fontsize=8)
            ax.set_ylabel("KL (nats)", fontsize=8)
            ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle(plain(data.label), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_correlation(corr: Correlation, path: Path) -> None:
    """Spearman's ρ between metrics (metric x metric), annotated, diverging colours in [-1, 1]."""
    plt = _pyplot()
    k = len(corr.metrics)
    size = 2.0 + 0.55 * k
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    matrix = [[float("nan") if v is None else v for v in row] for row in corr.rho]
    _heatmap(fig, ax, matrix, corr.metrics, "Spearman's ρ between metrics over the selected runs", "Spearman's ρ",
             cmap="RdBu_r", vmin=-1.0, vmax=1.0, rows=corr.metrics, annotate=k <= 16)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


class _Figures:
    """The few pyplot calls the report makes, on Figures of their own: pyplot is never
    imported, so the process's backend (a notebook's inline one) is left as it is
    (``harness/figures.py`` draws the same way)."""

    @staticmethod
    def subplots(*args: Any, figsize: Any = None, **kwargs: Any) -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to do: a Figure of its own is not held by pyplot."""

    @staticmethod
    def get_cmap(name: str) -> Any:
        import matplotlib

        return matplotlib.colormaps[name]

    @property
    def Line2D(self) -> Any:  # noqa: N802 - pyplot's name
        from matplotlib.lines import Line2D

        return Line2D


def _pyplot() -> _Figures:
    return _Figures()


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
    if not RUN_ID.fullmatch(run_id):
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
