"""The report's "what the metrics see" figures and metric-correlation panel, on records written
directly with the real metrics' outputs (MIG, dci_fast on small synthetic codes): the numbers
behind each figure equal what the metric computed, the Spearman panel equals scipy's on the
same numbers, hostile names are escaped by construction.

Costs (one core): the module fixture (MIG + dci_fast on 600 rows, 4 records, one report) ~3 s;
each test then < 1 s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from vaebench.harness.cli import app
from vaebench.plugins.metrics.dci import dci
from vaebench.plugins.metrics.mig import mutual_info_gap
from vaebench.registry.store import write_record

from test_report import parse

HOSTILE = "<script>alert(1)</script>$x$"
FACTORS = ["shape", "scale", "posX"]
CONFIG_A, CONFIG_B = "aaaa0000c0f1", "bbbb0000c0f2"


def invoke(*args: Any):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def scored(seed: int, noise: float) -> tuple[dict[str, Any], dict[str, float]]:
    """Real MIG and dci_fast results on 600 synthetic rows: codes = factors + noise, one dim pure noise."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, 3, 600), rng.integers(0, 6, 600), rng.integers(0, 8, 600)], axis=1)
    codes = np.concatenate([factors + noise * rng.standard_normal(factors.shape), rng.standard_normal((600, 1))], 1)
    mig = mutual_info_gap(codes, factors, factor_names=FACTORS)
    d = dci(codes, factors, fast=True, n_jobs=1, factor_names=FACTORS, n_estimators=5)
    return {"mig": mig.params, "dci_fast": d.params}, {**mig.values, **d.values}


def record(run_id: str, config: str, seed: int, beta: float, noise: float, extra: dict[str, float],
           model: str = "beta_vae", dataset: str = "dsprites") -> dict[str, Any]:
    params, values = scored(seed, noise)
    signals = [{"step": s, "name": f"kl.dim{d}", "value": (d + 1) * s / 10.0 + seed} for s in (10, 20, 30)
               for d in range(4)]
    return {"run_id": run_id, "status": "ok", "model": model, "backend": "torch", "dataset": dataset,
            "dataset_variant": "v1", "dataset_digest": "d", "architecture": "conv", "latent_dim": 4, "steps": 30,
            "steps_done": 30, "batch_size": 8, "lr": 1e-3, "beta": beta, "seed": seed, "config_id": config,
            "metrics": {**values, **extra}, "metric_params": json.dumps(params), "signals": signals,
            "metric_categories": {k: "other" for k in extra},  # declared, so they are headline metrics
            "kl_per_dim": [0.1 * (d + 1) + seed for d in range(4)]}


RUNS = [  # run id, config, seed, β, noise, extra metrics (constant: left out; `lonely` in 2 runs only)
    ("aaaa00000001", CONFIG_A, 0, 1.0, 0.2, {"const": 1.0, "lonely": 3.0}),
    ("aaaa00000002", CONFIG_A, 1, 1.0, 0.9, {"const": 1.0, "lonely": 4.0}),
    ("aaaa00000003", CONFIG_B, 0, 8.0, 2.0, {"const": 1.0}),
    ("aaaa00000004", CONFIG_B, 1, 8.0, 4.0, {"const": 1.0}),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, dict[str, Any]], dict[str, Any]]:
    reg = tmp_path_factory.mktemp("mx") / "reg"
    recs = {}
    for run_id, config, seed, beta, noise, extra in RUNS:
        recs[run_id] = record(run_id, config, seed, beta, noise, extra)
        write_record(reg, recs[run_id])
    out = reg.parent / "out"
    res = invoke("report", "--out", out, "--registry", reg, "--json")
    assert res.exit_code == 0, res.stderr
    return reg, out, recs, json.loads(res.stdout)


def test_matrices_equal_what_the_metrics_computed(built) -> None:
    _, out, recs, summary = built
    html = (out / "index.html").read_text(encoding="utf-8")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for run_id, rec in recs.items():
        folder = out / "figures" / "runs" / run_id
        params, metrics = json.loads(rec["metric_params"]), rec["metrics"]
        data = json.loads((folder / "matrices.json").read_text(encoding="utf-8"))
        assert data["mig"]["mi_matrix"] == params["mig"]["mi_matrix"]
        assert data["mig"]["factor_names"] == FACTORS
        assert data["mig"]["gaps"] == {f: metrics[f"mig.gap.{f}"] for f in FACTORS}
        assert data["dci"]["metric"] == "dci_fast"
        assert data["dci"]["importance_matrix"] == params["dci_fast"]["importance_matrix"]
        assert data["kl_per_dim"]["steps"] == [10, 20, 30]
        assert data["kl_per_dim"]["over_training"] == [[(d + 1) * s / 10.0 + rec["seed"] for s in (10, 20, 30)]
                                                       for d in range(4)]
        src = f"figures/runs/{run_id}/matrices.png"
        assert f'<img src="{src}"' in html and f"]({src})" in markdown  # in both pages
        assert f'href="figures/runs/{run_id}/matrices.json"' in html
        with Image.open(folder / "matrices.png") as im:  # four panels drawn, not an empty canvas
            assert im.size[0] > 1200 and len(im.convert("RGB").getcolors(1 << 24)) > 500
    # per configuration: the element-wise mean over its seeds
    for config, members in ((CONFIG_A, ["aaaa00000001", "aaaa00000002"]), (CONFIG_B, ["aaaa00000003", "aaaa00000004"])):
        data = json.loads((out / "figures" / "configs" / config / "matrices.json").read_text(encoding="utf-8"))
        mats = [np.array(json.loads(recs[r]["metric_params"])["mig"]["mi_matrix"]) for r in members]
        assert data["n"] == 2
        np.testing.assert_allclose(data["mig"]["mi_matrix"], np.mean(mats, axis=0), rtol=1e-12)
        imps = [np.array(json.loads(recs[r]["metric_params"])["dci_fast"]["importance_matrix"]) for r in members]
        np.testing.assert_allclose(data["dci"]["importance_matrix"], np.mean(imps, axis=0), rtol=1e-12)
        assert f'<img src="figures/configs/{config}/matrices.png"' in html
    assert "What the metrics see" in html and "## What the metrics see" in markdown
    assert all(Path(p).is_file() for p in summary["figures"])


def test_correlation_panel_is_scipy_spearman(built) -> None:
    _, out, recs, summary = built
    cells = [c for c in parse(out / "index.html").cells if "a" in c and "b" in c]
    metrics = sorted({c["a"] for c in cells})
    assert "const" not in metrics and "lonely" not in metrics and {"mig", "dci_fast"} <= set(metrics)
    checked = 0
    for c in cells:
        xs = [r["metrics"][c["a"]] for r in recs.values()]
        ys = [r["metrics"][c["b"]] for r in recs.values()]
        assert c["n"] == "4"
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            assert float(c["rho"]) == pytest.approx(spearmanr(xs, ys).statistic, abs=1e-12)
            checked += 1
    assert checked == len(metrics) ** 2 and checked >= 4
    notes = " ".join(summary["notes"])
    assert "const (the same value in all 4 runs)" in notes and "lonely (2 runs with a value (3 needed))" in notes
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "](figures/metric_correlation.png)" in markdown and "Left out of the correlation panel" in markdown


def test_hostile_names_escaped_in_the_new_sections(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    for run_id, config, seed, beta, noise, extra in RUNS[:3]:
        write_record(reg, record(run_id, config, seed, beta, noise, extra, model=HOSTILE, dataset=f"d<i>{HOSTILE}"))
    out = tmp_path / "out"
    res = invoke("report", "--out", out, "--registry", reg, "--json")
    assert res.exit_code == 0, res.stderr  # a `$` in a name does not break matplotlib's text either
    html = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    for text in (html, md):
        assert "<script" not in text.lower() and "<i>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;$x$ β=1 · config aaaa0000c0f1" in text  # a figure caption
    assert (out / "figures" / "configs" / CONFIG_A / "matrices.png").is_file()


def test_kl_per_dimension_over_training_from_a_real_run(tmp_path: Path, cli) -> None:
    """A trained run records its KL per latent dimension at each history point (signals
    ``kl.dim<d>``, summing to the history's KL); the report's per-run figure data carries
    those curves. (~6 s: a 30-step MLP run and a report.)"""
    reg, out = tmp_path / "reg", tmp_path / "out"
    res = cli("run", "--betas", "4", "--steps", "30", "--architecture", "mlp", "--batch-size", "16", "--latent-dim", "4",
              "--eval-samples", "512", "--metrics", "mig", "--device", "cpu", "--threads", "1", "--registry", reg, "--json")
    assert res.exit_code == 0, res.output
    (rec,) = json.loads(res.stdout)
    assert rec["status"] == "ok", rec["error"]
    kl = {h["step"]: h["kl"] for h in rec["history"]}
    by_step: dict[int, dict[int, float]] = {}
    for s in rec["signals"]:
        if s["name"].startswith("kl.dim"):
            by_step.setdefault(s["step"], {})[int(s["name"][len("kl.dim"):])] = s["value"]
    assert sorted(by_step) == sorted(kl) and all(sorted(v) == [0, 1, 2, 3] for v in by_step.values())
    for step, values in by_step.items():
        assert sum(values.values()) == pytest.approx(kl[step], rel=1e-5, abs=1e-6)
    res = cli("report", "--out", out, "--registry", reg)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "figures" / "runs" / rec["run_id"] / "matrices.json").read_text(encoding="utf-8"))
    assert data["kl_per_dim"]["steps"] == sorted(kl)
    assert data["kl_per_dim"]["over_training"] == [[by_step[s][d] for s in sorted(kl)] for d in range(4)]
