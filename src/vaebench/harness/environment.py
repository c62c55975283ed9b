"""What a record says about the machine and software that produced it.

The record's ``environment`` column is a ``map<string, string>``; :func:`environment`
fills it with:

- ``python``, ``platform``, ``git_revision`` and the versions of the main packages
  under their own names (``torch``, ``jax``, ``numpy`` ...: :data:`PACKAGES`), as
  before;
- ``packages``: every installed distribution as ``name==version``, names normalised
  (PEP 503) and sorted, joined by ``;`` (one entry rather than one per package, so a
  record's map stays small and ``vaebench show`` short), and ``packages_sha256``, the
  first 16 hex digits of its SHA-256, so two records' environments compare by one value;
- ``cpu_model`` (``/proc/cpuinfo``'s model name, where there is one), ``cpu_count``
  (``os.cpu_count``) and ``cpu_affinity`` (the cores this process may run on);
- ``torch_cuda`` / ``cudnn`` (the CUDA and cuDNN versions torch was built with; absent
  for a CPU build), ``gpus`` (``;``-joined device names, only when the process has
  already initialised CUDA: never initialised just for this), ``torch_threads`` /
  ``torch_interop_threads``;
- ``jax_backend`` / ``jax_devices`` / ``jax_platform_version`` for a JAX run (the last: the
  backend's own version string, e.g. the CUDA and cuDNN a GPU run's XLA plugin uses;
  ``cpu`` on a CPU);
- ``XLA_FLAGS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``
  (:data:`THREAD_VARIABLES`) where they are set.

Everything but the thread settings and devices is gathered once per process
(:func:`static_environment`: about 20 ms with ~160 packages installed, most of it the
git revision); the rest is
read again for each record, since a run sets its own thread count.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("vaebench", "torch", "jax", "flax", "optax", "numpy", "scikit-learn", "pyarrow", "duckdb")

#: Environment variables that set the thread pools of XLA, OpenMP and BLAS (recorded where set).
THREAD_VARIABLES = ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


def installed_packages() -> list[str]:
    """Every distribution on ``sys.path`` as ``name==version`` (PEP 503 name, sorted; the
    first of two copies of one name wins, as for ``import``)."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = name_and_version(dist)
        if name and version:
            seen.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def name_and_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the header of ``dist``'s METADATA (PKG-INFO for an egg),
    read line by line: 20x faster than ``dist.metadata``'s full parse (5 against 100 ms for
    ~160 distributions), which made up nearly all of a record's environment cost."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():  # the end of the header block
            break
        if line.startswith("Name:"):
            name = line[5:].strip()
        elif line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            break
    return name, version


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.lru_cache(maxsize=1)
def static_environment() -> dict[str, str]:
    """What does not change while the process lives: Python, platform, git revision,
    package versions, the CPU; gathered once per process."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    rev = git_revision()
    if rev:
        env["git_revision"] = rev
    packages = ";".join(installed_packages())
    env["packages"] = packages
    env["packages_sha256"] = hashlib.sha256(packages.encode()).hexdigest()[:16]
    model = cpu_model()
    if model:
        env["cpu_model"] = model
    env["cpu_count"] = str(os.cpu_count() or 0)
    return env


def torch_environment() -> dict[str, str]:
    """torch's CUDA / cuDNN build versions, thread pools and (when this process has already
    initialised CUDA) its GPUs; empty when torch has not been imported (nothing is imported
    or initialised here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    env = {"torch_threads": str(torch.get_num_threads()), "torch_interop_threads": str(torch.get_num_interop_threads())}
    if torch.version.cuda:
        env["torch_cuda"] = str(torch.version.cuda)
        try:
            cudnn = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001 - a cuDNN that cannot be loaded is just not recorded
            cudnn = None
        if cudnn:
            env["cudnn"] = str(cudnn)
        if torch.cuda.is_initialized():
            env["gpus"] = ";".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return env


def jax_environment() -> dict[str, str]:
    """JAX's default backend, its devices and its platform version (a JAX run has initialised
    them already)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return {}
    try:
        devices = jax.devices()
        env = {"jax_backend": jax.default_backend(),
               "jax_devices": ";".join(getattr(d, "device_kind", str(d)) for d in devices)}
        version = getattr(getattr(devices[0], "client", None), "platform_version", None) if devices else None
        if version:
            env["jax_platform_version"] = str(version).strip()
        return env
    except Exception:  # noqa: BLE001 - a backend that fails to start is not this record's business
        return {}


def environment(backend: str | None = None) -> dict[str, str]:
    """The record's ``environment`` map (string values; the module docstring lists the keys).
    ``backend``: the run's backend; JAX's devices are read only for a ``jax`` run."""
    env = dict(static_environment())
    env["cpu_affinity"] = str(cpu_cores())
    env.update(torch_environment())
    if backend == "jax":
        env.update(jax_environment())
    env.update({name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ})
    return env
