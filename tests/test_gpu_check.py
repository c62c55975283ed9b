"""benchmarks/gpu_check.py: the GPU machine's one prepared run, kept working on a CPU.

The whole script runs end to end at ``--tiny`` sizes on the CPU (every section, the
same code the GPU run takes, at sizes that fit a test); its section runner records an
error with its traceback and goes on, and skips what the budget cannot fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

pytest.importorskip("jax", reason="gpu_check.py checks both backends")


def _load_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_on_the_cpu_writes_every_section(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", "cpu", "--tiny"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["grid.png", "results.json"], files  # flat, few files
    results = json.loads((out / "results.json").read_text())
    module = _load_module()
    sections = results["sections"]
    assert list(sections) == [name for name, _ in module.SECTIONS]
    problems = {k: v.get("error") or v.get("failures") or v.get("reason") for k, v in sections.items()
                if v["status"] != "ok"}
    assert not problems, problems
    # what the sections found, at tiny sizes on the CPU
    assert all(r["device"] == "cpu" for rows in sections["paths_torch"]["records"].values() for r in rows)
    assert sections["paths_torch_vectorized"]["records"]["vectorized_off"][0]["strategy"] == "vectorized"
    assert sections["equality"]["torch_lone_pickup"]["max_rel"] == 0.0  # exact on a CPU
    assert sections["probe_28"]["torch_fp32"]["projected_300k_s"] > 0
    assert {r["strategy"] for r in sections["grid_jax"]["rows"]} == {"vectorized", "sequential"}
    assert "reason" in sections["paths_compile"]  # no torch.compile at tiny sizes on a CPU
    assert results["summary"]["statuses"] == {k: "ok" for k in sections}


def test_a_section_that_raises_is_recorded_and_the_next_runs(tmp_path):
    module = _load_module()
    results = module.Results(str(tmp_path), budget_s=60.0, meta={})

    def broken(entry):
        entry["partial"] = "kept"
        raise RuntimeError("boom")

    results.run("first", broken, need_s=0)
    results.run("second", lambda entry: entry.update(found=1), need_s=0)
    results.run("third", lambda entry: entry.update(found=2), need_s=3600)  # does not fit the budget
    saved = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert saved["first"]["status"] == "error" and "RuntimeError: boom" in saved["first"]["error"]
    assert saved["first"]["partial"] == "kept" and "Traceback" in saved["first"]["error"]
    assert saved["second"]["status"] == "ok" and saved["second"]["found"] == 1
    assert saved["third"]["status"] == "skipped" and "found" not in saved["third"]


def test_the_rerun_chooses_probe_variants_steps_and_cap(tmp_path):
    """The lead's one rerun (``--only probe_28 ... --probe-variants``), at tiny sizes."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", "cpu", "--tiny", "--only", "probe_28",
                           "--probe-variants", "torch_fp32_host_data,torch_fp32", "--probe-steps", "4",
                           "--probe-cap-s", "50"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    probe = json.loads((out / "results.json").read_text())["sections"]["probe_28"]
    assert probe["status"] == "ok" and probe["setup"]["timed_steps"] == 4
    assert [k for k in probe if k.startswith("torch_")] == ["torch_fp32_host_data", "torch_fp32"]
    assert probe["torch_fp32_host_data"]["device_grid"] is False and probe["torch_fp32"]["device_grid"] is None
    assert probe["torch_fp32_host_data"]["final_loss"] == probe["torch_fp32"]["final_loss"]
    assert probe["device_grid_upload_s"] == {}  # no grid on a CPU unless asked


@pytest.mark.parametrize("args", [["--device", "tpu"], ["--only", "nosuch"], ["--probe-variants", "torch_fp32,nosuch"]])
def test_bad_options_are_a_one_line_usage_error(tmp_path, args):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out"), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
