"""The README's test command is the one CI runs."""

from __future__ import annotations

from conftest import ROOT


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert "pytest" in command and "torch==2.13.0" in command
    assert command in (ROOT / "README.md").read_text()
