"""Shared fixtures: a CLI runner and tiny run budgets that still train for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vaebench
from vaebench.harness.cli import app
from vaebench.plugins import builtin
from vaebench.plugins.manager import PluginManager, get_manager

ROOT = Path(__file__).resolve().parents[1]

#: Tiny but real: trains the conv β-VAE for a few dozen steps and scores 500 observations.
TINY = ["--steps", "30", "--batch-size", "16", "--eval-samples", "500", "--device", "cpu", "--threads", "1"]


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def run_vaebench(*args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console entry in a fresh interpreter (real entry-point discovery)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    code = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Empty caches and no weights in the environment: only installed packages could provide
    weights (``tmp_path`` returned)."""
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VAEBENCH_FID_WEIGHTS", raising=False)
    monkeypatch.delenv("VAEBENCH_LPIPS_WEIGHTS", raising=False)
    return tmp_path


@pytest.fixture
def manager() -> PluginManager:
    """A fresh in-process plugin manager holding the built-in plugin only."""
    m = PluginManager()
    info = m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__)
    assert info.status == "ok", info.error
    return m


def backend_installed(backend: str) -> bool:
    """Whether the registered backend ``backend``'s framework imports here."""
    try:
        get_manager().backend(backend).backend_class()
    except ImportError:
        return False
    return True


def wait_until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    """Poll ``predicate`` every 0.1 s; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
