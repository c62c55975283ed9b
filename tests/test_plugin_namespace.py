"""The public plugin namespace ``vaebench.plugin`` and the typed contract behind it.

- every name in ``vaebench.plugin.__all__`` imports, and the namespace holds nothing else;
- importing it imports neither torch nor jax (a fresh interpreter), so listing plugins
  stays cheap;
- the example plugin imports nothing of vaebench but ``vaebench.plugin`` (read with ``ast``);
- optional members of the contract are read with their declared defaults
  (``contract.capability``);
- a model registered only on an in-process ``PluginManager`` (not the process-wide one)
  trains through ``run_grid`` on each backend and its checkpoint loads back through that
  manager: backends build models through the manager they are given.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import vaebench.plugin
from vaebench.harness.plan import plan_grid
from vaebench.harness.evaluation import held_out
from vaebench.harness.runner import run_grid
from vaebench.plugins.backends import get_backend, load_trained
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.contract import CAPABILITIES, capability
from vaebench.plugins.manager import PluginManager, UnknownSpecError, get_manager

from conftest import ROOT, backend_installed

EXAMPLE_SOURCE = ROOT / "examples" / "vaebench-plugin-example" / "src"


def test_every_public_name_imports_and_nothing_else_is_public():
    names = vaebench.plugin.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(vaebench.plugin, name) is not None, name
    namespace = {}
    exec("from vaebench.plugin import *", namespace)
    assert set(names) <= set(namespace)
    public = {n for n in vars(vaebench.plugin) if not n.startswith("_")} - {"annotations"}
    assert public == set(names), public ^ set(names)
    # the names the brief of a plugin author needs
    assert {"hookimpl", "ModelSpec", "MetricSpec", "DatasetSpec", "BackendSpec", "MetricResult",
            "MetricUnavailable", "EvaluationContext", "FactorDataset", "TrainedModel", "RunSpec",
            "ExecutionOptions", "DeviceInfo", "Backend", "TorchModel", "JaxModel"} <= set(names)


def test_the_public_namespace_imports_no_framework():
    code = ("import json, sys, vaebench.plugin; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'jax', 'flax', 'optax'})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def _vaebench_imports(path) -> list[str]:
    """``module`` of every ``import vaebench...`` / ``from vaebench... import`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        found += [m for m in modules if m == "vaebench" or m.startswith("vaebench.")]
    return found


def test_the_example_plugin_imports_only_the_public_namespace():
    sources = sorted(EXAMPLE_SOURCE.rglob("*.py"))
    assert len(sources) >= 3
    imports = {str(p.relative_to(EXAMPLE_SOURCE)): _vaebench_imports(p) for p in sources}
    users = {p: found for p, found in imports.items() if not p.endswith("__init__.py")}  # __init__: a version
    assert all(users.values()), imports  # each module uses vaebench, through vaebench.plugin
    outside = {p: [m for m in found if m != "vaebench.plugin"] for p, found in imports.items()}
    assert not any(outside.values()), outside


# -- capabilities ----------------------------------------------------------------------------


class Bare:
    """Implements none of the contract's optional members."""


def test_capability_reads_a_declared_member_or_the_contracts_default():
    bare = Bare()
    assert capability(bare, "supports_resume") is False
    assert capability(bare, "supports_vectorized") is False
    assert capability(bare, "needs_factors") is False
    assert capability(bare, "gaussian_posterior") is True
    assert capability(bare, "num_classes") is None
    assert capability(bare, "notes")() == []
    assert capability(bare, "auxiliary_optimizers")() == {}
    assert capability(bare, "before_step")(None, 0, None) is None
    assert capability(None, "needs_factors") is False and capability(None, "notes")() == []
    assert tuple(capability(bare, "signals")) == ()

    class Declared:
        needs_factors = True
        supports_resume = True

        def notes(self):
            return ["mine"]

    assert capability(Declared(), "needs_factors") is True
    assert capability(Declared(), "supports_resume") is True
    assert capability(Declared(), "notes")() == ["mine"]
    with pytest.raises(KeyError):
        capability(bare, "latent_dim")  # required, not optional: no default


def test_the_builtin_backends_declare_their_capabilities():
    assert set(CAPABILITIES) >= {"supports_resume", "supports_vectorized", "supports_group_resume"}
    backend = get_backend("torch")
    assert [capability(backend, n) for n in ("supports_resume", "supports_vectorized", "supports_group_resume")] == [
        True, True, True]


# -- models built through the manager a backend is given -------------------------------------


class InProcessPlugin:
    """``beta_vae``'s factories under another name, registered on one manager only."""

    @vaebench.plugin.hookimpl
    def vaebench_register_models(self, register):
        builtin = get_manager().model("beta_vae")
        register(dataclasses.replace(builtin, name="inprocess_vae", description="beta_vae, registered in-process"))




@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_model_on_an_in_process_manager_trains_and_its_checkpoint_loads_through_it(backend, tmp_path):
    if not backend_installed(backend):
        pytest.skip(f"backend {backend} not installed")
    manager = PluginManager()
    manager.load_entry_points()
    info = manager.register_plugin(InProcessPlugin(), "inprocess")
    assert (info.status, info.registered["models"]) == ("ok", ["inprocess_vae"])
    assert "inprocess_vae" not in get_manager().specs["models"]  # only this manager has it

    (spec,) = plan_grid(manager, ["inprocess_vae"], {"steps": [4], "batch_size": [16]}, backends=[backend])
    execution = ExecutionOptions(device="cpu", threads=1, eval_samples=64, figures=False)
    (record,) = run_grid([spec], manager, str(tmp_path), execution, metric_names=["reconstruction"]).records
    assert (record["status"], record["steps_done"]) == ("ok", 4), record["error"]

    directory = str((tmp_path / record["artifacts"]["checkpoint"]).parent)
    restored = load_trained(backend, directory, manager)
    assert restored.spec == spec
    images, _ = held_out(manager.dataset(spec.dataset).loader()(), 64)
    errors = restored.evaluate(images)[2]
    assert errors.shape == (64,)
    np.testing.assert_allclose(errors.mean(), record["metrics"]["reconstruction"], rtol=1e-5)
    with pytest.raises(UnknownSpecError, match="inprocess_vae"):
        load_trained(backend, directory)  # the process-wide manager cannot build it
