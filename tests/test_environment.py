"""The record's ``environment``: every installed package, the CPU, CUDA where present, the
thread settings; read once per process (the package list) and after training (threads).

Costs (2 shared cores): the unit tests under 1 s together; the fresh-interpreter checks
about 1 s (torch) and 3 s (JAX); the real run about 8 s (one mlp run of 20 steps in a
fresh interpreter, then ``vaebench show`` twice); the older record under 1 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata

import pyarrow.parquet as pq
import pytest

from conftest import run_vaebench
from vaebench.harness import environment as envmod


def test_the_package_list_is_every_installed_distribution_sorted():
    env = envmod.environment()
    packages = env["packages"].split(";")
    order = [p.split("==")[0] for p in packages]
    assert order == sorted(order) and len(order) == len(set(order))  # by name, one entry each
    names = {p.split("==")[0]: p.split("==")[1] for p in packages}
    # Checked against importlib.metadata one name at a time (not the listing the code walks).
    for name in ("torch", "numpy", "pyarrow", "duckdb", "pluggy", "scikit-learn", "vaebench"):
        assert names[name] == metadata.version(name), name
    assert len(names) >= 30
    assert env["packages_sha256"] == hashlib.sha256(env["packages"].encode()).hexdigest()[:16]
    # The main packages keep their own keys, as in records written before the list.
    assert env["torch"] == metadata.version("torch") and env["python"] == sys.version.split()[0]


def test_the_cpu_and_thread_settings(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        env = envmod.environment()
        assert env["torch_threads"] == "1"
        torch.set_num_threads(2)
        assert envmod.environment()["torch_threads"] == "2"  # read again for each record
    finally:
        torch.set_num_threads(before)
    assert env["torch_interop_threads"] == str(torch.get_num_interop_threads())
    assert env["OMP_NUM_THREADS"] == "3" and env["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
    assert "MKL_NUM_THREADS" not in env
    assert env["cpu_count"] == str(os.cpu_count())
    assert env["cpu_affinity"] == str(len(os.sched_getaffinity(0)))
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            models = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if models:
            assert env["cpu_model"] == models[0]
    if torch.version.cuda is None:  # a CPU build: no CUDA entries at all
        assert not {"torch_cuda", "cudnn", "gpus"} & set(env)


def test_reading_the_environment_imports_and_initialises_nothing():
    """In a fresh interpreter: no torch / jax import just for the record, and with torch
    imported, CUDA is not initialised by it."""
    code = (
        "import sys; from vaebench.harness.environment import environment; env = environment('jax');"
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules, 'imported';"
        "assert 'torch_threads' not in env and 'jax_backend' not in env;"
        "import torch; env = environment();"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'; assert 'gpus' not in env;"
        "print(len(env['packages'].split(';')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 30


def test_a_jax_run_records_jax_backend_and_devices():
    pytest.importorskip("jax", reason="jax not installed (pip install -e '.[jax]')")
    code = (
        "import jax, jax.numpy as jnp; jnp.zeros(2).block_until_ready();"
        "from vaebench.harness.environment import environment; import json;"
        "print(json.dumps([environment('jax'), environment('torch')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    jax_run, torch_run = json.loads(out.stdout)
    import jax

    assert jax_run["jax_backend"] == jax.default_backend()
    assert jax_run["jax_devices"].split(";") == [d.device_kind for d in jax.devices()]
    assert jax_run["jax_platform_version"] == jax.devices()[0].client.platform_version.strip()  # CUDA / cuDNN on a GPU
    assert "jax_backend" not in torch_run  # only a JAX run asks JAX for its devices


def test_a_runs_record_holds_the_environment_and_show_summarises_it(tmp_path):
    registry = tmp_path / "reg"
    run = run_vaebench("run", "--model", "beta_vae", "--betas", "4", "--architecture", "mlp", "--steps", "20",
                       "--batch-size", "16", "--eval-samples", "400", "--metrics", "kl", "--device", "cpu",
                       "--threads", "1", "--registry", str(registry))
    assert run.returncode == 0, run.stderr
    (path,) = (registry / "runs").glob("*.parquet")
    record = pq.read_table(path).to_pylist(maps_as_pydicts="strict")[0]
    env = record["environment"]
    assert f"torch=={metadata.version('torch')}" in env["packages"].split(";")
    # Read after training: the thread count the run trained with (--threads 1), whatever
    # the fresh interpreter started with.
    assert env["torch_threads"] == "1"
    assert env["cpu_count"] == str(os.cpu_count())

    # No min / max statistics for the environment map (the package list would be stored
    # three times); the other columns keep theirs.
    stats = {}
    meta = pq.ParquetFile(path).metadata.row_group(0)
    for i in range(meta.num_columns):
        stats[meta.column(i).path_in_schema] = meta.column(i).is_stats_set
    assert not stats["environment.key_value.value"] and not stats["environment.key_value.key"]
    assert stats["metrics.key_value.value"] and stats["beta"] and stats["run_id"]

    shown = run_vaebench("show", record["run_id"], "--registry", str(registry))
    assert shown.returncode == 0, shown.stderr
    count = len(env["packages"].split(";"))
    assert f"{count} installed" in shown.stdout and env["packages_sha256"] in shown.stdout
    assert "env.cpu_count" in shown.stdout and "env.torch_threads" in shown.stdout
    assert "numpy==" not in shown.stdout  # the list itself only with --json
    as_json = run_vaebench("show", record["run_id"], "--json", "--registry", str(registry))
    assert json.loads(as_json.stdout)["environment"]["packages"] == env["packages"]


def test_show_reads_a_record_written_before_the_package_list(tmp_path, cli):
    """An older record's environment (a few versions, no ``packages``) shows as it was."""
    from vaebench.registry import store

    record = {"run_id": "0123456789ab", "status": "ok", "model": "beta_vae", "backend": "torch",
              "dataset": "dsprites", "beta": 4.0, "seed": 0, "metrics": {"mig": 0.25},
              "environment": {"python": "3.11", "torch": "2.3.0"}}
    store.write_record(str(tmp_path), record)
    shown = cli("show", "0123456789ab", "--registry", tmp_path)
    assert shown.exit_code == 0, shown.output
    assert "env.torch" in shown.stdout and "2.3.0" in shown.stdout and "env.packages" not in shown.stdout
    as_json = json.loads(cli("show", "0123456789ab", "--json", "--registry", tmp_path).stdout)
    assert as_json["environment"] == {"python": "3.11", "torch": "2.3.0"}
