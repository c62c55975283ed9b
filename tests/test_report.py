"""vaebench report: a registry of really trained tiny runs, the real CLI, the files it writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY
from vaebench.harness.cli import app
from vaebench.harness.output import fmt
from vaebench.harness.seed_noise import bootstrap_ci
from vaebench.registry.store import write_record

CHROMIUM = Path("/usr/bin/chromium")
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: Any):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 β × 2 seeds of beta_vae, one beta_vae_capacity run and one run that diverges (lr 1e6)."""
    reg = tmp_path_factory.mktemp("report") / "reg"
    for args in (
        ["--model", "beta_vae", "--betas", "1,8", "--seeds", "0,1"],
        ["--model", "beta_vae_capacity", "--capacities", "5", "--gamma", "100"],
        ["--model", "beta_vae", "--betas", "4", "--lr", "1e6"],
    ):
        res = invoke("run", *args, *TINY, "--registry", reg)
        assert res.exit_code == 0, res.stderr
    return reg


def tab10_blue(image: Image.Image) -> int:
    """Pixels of matplotlib's first line colour (31, 119, 180): the lines and markers of the first series."""
    colors = image.convert("RGB").getcolors(1 << 24) or []
    return sum(n for n, (r, g, b) in colors if abs(r - 31) < 20 and abs(g - 119) < 20 and abs(b - 180) < 20)


def records(reg: Path) -> list[dict[str, Any]]:
    """Every record, read straight from the Parquet files (not through the report's code)."""
    out = []
    for path in sorted((reg / "runs").glob("*.parquet")):
        (row,) = pq.read_table(path).to_pylist()
        row["metrics"] = dict(row["metrics"] or [])
        row["artifacts"] = dict(row["artifacts"] or [])
        out.append(row)
    return out


class Cells(HTMLParser):
    """Every <td> with its data-* attributes and text; every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.links: list[str] = []
        self._td: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "td":
            self._td = {**{k[5:]: v for k, v in a.items() if k.startswith("data-")}, "text": ""}
            self.cells.append(self._td)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._td = None

    def handle_data(self, data: str) -> None:
        if self._td is not None:
            self._td["text"] += data


def parse(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text(encoding="utf-8"))
    return cells


@pytest.fixture(scope="module")
def report(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("out") / "report"
    res = invoke("report", "--out", out, "--registry", registry, "--json")
    assert res.exit_code == 0, res.stderr
    return out, json.loads(res.stdout)


def test_report_writes_figures_and_pages(registry: Path, report: tuple[Path, dict[str, Any]]) -> None:
    out, summary = report
    assert summary["runs"] == {"ok": 5, "diverged": 1, "failed": 0, "total": 6}
    assert Path(summary["html"]) == out / "index.html" and Path(summary["markdown"]) == out / "report.md"
    figures = [Path(p) for p in summary["figures"]]
    assert out / "figures" / "beta_tradeoff.png" in figures and out / "figures" / "capacity.png" in figures
    ok = [r for r in records(registry) if r["status"] == "ok"]
    for r in ok:  # every ok run's traversal, copied byte for byte
        copied = out / "figures" / "runs" / r["run_id"] / "traversal.png"
        assert copied in figures and copied.read_bytes() == (registry / r["artifacts"]["traversal_png"]).read_bytes()
    for path in figures:
        assert path.is_file() and path.stat().st_size > 0
        with Image.open(path) as im:
            im.verify()
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG)
    with Image.open(out / "figures" / "beta_tradeoff.png") as im:
        assert im.size[0] > 800 and tab10_blue(im) > 1500  # 11 panels of lines (about 7,700 px), not empty axes
    diverged = next(r for r in records(registry) if r["status"] == "diverged")
    assert any(diverged["run_id"] in n and "traversal not recorded" in n for n in summary["notes"])


def test_tables_hold_the_registry_numbers(registry: Path, report: tuple[Path, dict[str, Any]]) -> None:
    out, _ = report
    recs = records(registry)
    cells = parse(out / "index.html").cells
    markdown = (out / "report.md").read_text(encoding="utf-8")

    # runs table: each ok run's headline metrics, exactly (repr round-trips a float)
    per_run = {(c["run"], c["metric"]): c for c in cells if "run" in c}
    checked = 0
    for r in recs:
        for key in ("mig", "sap", "reconstruction", "kl", "ssim", "psnr"):
            if r["status"] != "ok":
                assert (r["run_id"], key) not in per_run
                continue
            cell = per_run[(r["run_id"], key)]
            assert float(cell["value"]) == r["metrics"][key] and cell["text"] == fmt(r["metrics"][key])
            checked += 1
        md_row = next(line for line in markdown.splitlines() if line.startswith(f"| {r['run_id']} |"))
        assert r["status"] in md_row
        if r["status"] == "ok":
            assert f"| {fmt(r['metrics']['mig'])} |" in md_row
        else:
            assert r["error"] in md_row  # diverged: its error is in the table
    assert checked == 5 * 6

    # leaderboard: mean / sample std / n over the seeds of each config, as computed here
    board = [c for c in cells if "mean" in c]
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_config.setdefault(r["config_id"], []).append(r)
    beta8 = by_config[next(r["config_id"] for r in recs if r["beta"] == 8.0)]
    assert len(beta8) == 2
    for key in ("mig", "reconstruction"):
        values = [r["metrics"][key] for r in beta8]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        (cell,) = [c for c in board if c["metric"] == key and float(c["mean"]) == pytest.approx(mean, rel=1e-12)]
        assert float(cell["std"]) == pytest.approx(std, rel=1e-9) and cell["n"] == "2"
        low, high = bootstrap_ci(values)  # the 95% bootstrap interval over the seeds, after the std
        assert cell["text"] == f"{fmt(mean)}± {fmt(std)} [{fmt(low)}–{fmt(high)}]"  # std on its own line
        assert f"{fmt(mean)} ± {fmt(std)}" in markdown
    # the diverged config is there with its count, and no made-up numbers
    assert re.search(r"\| beta_vae \| 4 \|[^\n]*\| 1 \| 1 \| - \|", markdown), markdown

    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Diverged and failed runs" in html and "non-finite loss at step" in html
    assert "mig ↑" in html and "reconstruction ↓" in html


def test_tradeoff_series_matches_the_records(registry: Path) -> None:
    from vaebench.harness.report import tradeoff_series

    recs = records(registry)
    series = tradeoff_series(recs, "mig")
    assert list(series) == ["beta_vae"]  # the capacity run has no β; the diverged run never counts
    points = series["beta_vae"]
    assert [p["beta"] for p in points] == [1.0, 8.0]
    for p in points:
        values = [r["metrics"]["mig"] for r in recs if r["beta"] == p["beta"] and r["status"] == "ok"]
        assert p["n"] == 2 and p["mean"] == pytest.approx(statistics.fmean(values))
        assert p["std"] == pytest.approx(statistics.stdev(values))


def test_page_is_self_contained(report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = report
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    html = (moved / "index.html").read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html and "https://" not in html
    links = parse(moved / "index.html").links
    files = [link for link in links if not link.startswith("#")]
    assert len(files) >= 2 + 2 * 5
    for link in files:
        assert not link.startswith("/") and ".." not in link
        assert (moved / link).is_file(), link
    for link in re.findall(r"\]\(([^)]+)\)", (moved / "report.md").read_text(encoding="utf-8")):
        assert (moved / link).is_file(), link


def test_targets_shown_and_report_exits_0(registry: Path, tmp_path: Path) -> None:
    targets = tmp_path / "targets.toml"
    targets.write_text(
        '[[target]]\nname = "beta8 MIG"\nselect = { model = "beta_vae", beta = 8 }\nmetric = "mig"\nthreshold = 0.9\n\n'
        '[[target]]\nname = "recon"\nselect = { model = "beta_vae" }\nmetric = "reconstruction"\nthreshold = 1e9\n'
    )
    out = tmp_path / "r"
    res = invoke("report", "model=beta_vae", "--out", out, "--targets", targets, "--registry", registry, "--json")
    assert res.exit_code == 0, res.stderr  # a missed target is reported, not an exit status
    summary = json.loads(res.stdout)
    assert [t["verdict"] for t in summary["targets"]] == ["fail", "pass"]
    assert summary["runs"]["total"] == 5  # the selection: no capacity run
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Targets: 1 of 2 met" in html and "beta8 MIG" in html and 'class="pill fail"' in html
    assert not (out / "figures" / "capacity.png").exists() and "Capacity curves" not in html
    values = [c for c in parse(out / "index.html").cells if "value" in c and "run" not in c]
    mig8 = [r["metrics"]["mig"] for r in records(registry) if r["beta"] == 8.0 and r["status"] == "ok"]
    assert float(values[0]["value"]) == pytest.approx(statistics.fmean(mig8))
    assert "Targets: 1 of 2 met" in (out / "report.md").read_text(encoding="utf-8")

    bad = tmp_path / "bad.toml"
    bad.write_text('[[target]]\nselect = { beta = 4 }\nmetric = "nosuch"\nthreshold = 1\n')
    res = invoke("report", "--out", tmp_path / "never", "--targets", bad, "--registry", registry)
    assert res.exit_code == 2 and "unknown metric 'nosuch'" in one_line_error(res)
    assert not (tmp_path / "never").exists()  # nothing written on a usage error


def one_line_error(res) -> str:
    err = res.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


def test_usage_errors_exit_2(registry: Path, tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    for args, message in [
        (("beta=3", "--out", tmp_path / "o", "--registry", registry), "selection beta=3 matches no runs"),
        (("colour=red", "--out", tmp_path / "o", "--registry", registry), "unknown selection key 'colour'"),
        (("--out", tmp_path / "o", "--registry", tmp_path / "missing"), "does not exist"),
        (("--out", file, "--registry", registry), "exists and is not a directory"),
        (("--out", tmp_path / "o", "--registry", registry, "--metric", "nosuch"), "'nosuch' is not among"),
        (("--out", tmp_path / "o", "--registry", tmp_path), "holds no runs"),
    ]:
        res = invoke("report", *args)
        assert res.exit_code == 2, (args, res.stdout, res.stderr)
        assert message in one_line_error(res)
    assert not (tmp_path / "o").exists()


HOSTILE = "<script>alert(1)</script>"


def test_hostile_strings_are_escaped(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    base = {"model": HOSTILE, "backend": "torch", "dataset": "dsprites", "dataset_variant": "v<b>1</b>",
            "dataset_digest": "d", "architecture": "conv", "latent_dim": 10, "steps": 10, "batch_size": 8, "lr": 1e-3,
            "config_id": "c0nf"}
    write_record(reg, {**base, "run_id": "aaaa00000001", "status": "ok", "beta": 2.0, "seed": 0,
                       "metrics": {"mig": 0.25, "reconstruction": 40.0},
                       "artifacts": {"traversal_png": "/etc/passwd"}})  # never copied: not the run's own file
    write_record(reg, {**base, "run_id": "aaaa00000002", "status": "failed", "beta": 2.0, "seed": 1,
                       "error": "RuntimeError: <img src=x onerror=alert(2)> | pipe"})
    out = tmp_path / "out"
    res = invoke("report", f"model={HOSTILE}", "--out", out, "--registry", reg, "--json")
    assert res.exit_code == 0, res.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    for text in (html, md):
        assert "<script" not in text.lower() and "<img src=x" not in text and "<b>1" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "\\| pipe" in md  # a | in a value does not split a Markdown table cell
    assert not list((out / "figures").rglob("*passwd*")) and not (out / "figures" / "runs").exists()
    assert any("aaaa00000001" in n and "file missing" in n for n in json.loads(res.stdout)["notes"])


#: Appended to a copy of the page (the report itself has no scripts): after load, each <img> is
#: marked data-loaded="true" when it decoded (naturalWidth > 0), "false" when it is broken.
PROBE = ('<script>window.addEventListener("load", () => { for (const im of document.images) '
         'im.setAttribute("data-loaded", String(im.complete && im.naturalWidth > 0)); '
         'document.body.setAttribute("data-probed", "1"); });</script>')


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page`` (file://, offline), console messages logged to stderr."""
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", *args,
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )


def image_states(page: Path, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """``({img src: "true" | "false"}, console lines)`` of ``page`` loaded with :data:`PROBE`."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = chromium(probe, tmp_path, "--dump-dom")
    assert 'data-probed="1"' in done.stdout, done.stderr[-2000:]
    states = {}
    for tag in re.findall(r"<img [^>]*>", done.stdout):
        src, loaded = re.search(r'src="([^"]*)"', tag), re.search(r'data-loaded="(\w+)"', tag)
        states[src.group(1) if src else tag] = loaded.group(1) if loaded else "unmarked"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return states, console


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium; .ci/run does as root)")
def test_page_renders_in_headless_chromium(report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Offline (file://, a copy elsewhere): every image loads, no console message, a screenshot
    with text, tables and figures. The probe is checked to see a broken image. ~5 s."""
    out, summary = report
    page_dir = tmp_path / "copy"
    shutil.copytree(out, page_dir)
    states, console = image_states(page_dir / "index.html", tmp_path)
    assert len(states) >= 2 + 5 + 5 + 1, states  # trade-off, capacity, configs' and runs' matrices, traversals
    assert any("matrices.png" in s for s in states) and any("metric_correlation" in s for s in states)
    assert set(states.values()) == {"true"}, {s: v for s, v in states.items() if v != "true"}
    assert console == [], console
    # the probe can fail: a missing figure is seen as a broken image
    (page_dir / "figures" / "metric_correlation.png").unlink()
    broken, _ = image_states(page_dir / "index.html", tmp_path)
    assert {s for s, v in broken.items() if v != "true"} == {"figures/metric_correlation.png"}

    shot = Path(os.environ.get("VAEBENCH_SCREENSHOT", tmp_path / "page.png"))
    chromium(out / "index.html", tmp_path, f"--screenshot={shot}", "--window-size=1400,3000")
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1400, 3000)
        assert len(rgb.getcolors(1 << 24)) > 1000  # text, tables and figures, not a blank page
        # the figures' line colour shows only if the figure files loaded (about 4,300 px at this size)
        assert tab10_blue(rgb) > 2000


def test_every_markdown_block_escapes_its_text() -> None:
    """Each text-bearing block kind of report.md escapes HTML (a metric category from a plugin
    becomes an h3 heading: it was written raw)."""
    from vaebench.harness.report.render import Block, Cell, Header, to_markdown

    hostile = "<img src=x onerror=alert(1)>"
    page = [Block("section", hostile, anchor="s"), Block("note", hostile), Block("para", hostile),
            Block("h3", hostile), Block("table", headers=[hostile], rows=[[Cell(hostile)]])]
    text = to_markdown(Header(hostile, hostile, hostile, hostile, hostile, "now"), page)
    assert "<img" not in text and text.count("&lt;img src=x onerror=alert(1)&gt;") == 11, text
