"""What a record says about the machine and software that produced it."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("vaebench", "torch", "jax", "flax", "optax", "numpy", "scikit-learn", "pyarrow", "duckdb")


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The commit of the vaebench source tree, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rev = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, check=False
    )
    return rev + ("-dirty" if dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """Package versions, Python, platform and git revision (string values for the record's map)."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    rev = git_revision()
    if rev:
        env["git_revision"] = rev
    return env
