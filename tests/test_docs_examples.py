"""The plugin examples of ``docs/plugins.md`` and the README's plugin snippet, run, so that
they cannot rot: each ``python`` block is executed in a fresh namespace; a block that
defines hooks is registered on an in-process ``PluginManager`` (``vaebench.testing``) and
what it registers goes through the kit (a model built and its ``loss_terms`` called on 4
images; a metric computed on a tiny ``EvaluationContext``; a dataset sampled; a backend
trained 4 steps; an executor handed a two-point grid). A README snippet that names its code by import path is registered with
that path pointing at the metric of the docs (it must import nothing that does not exist
apart from that).

Cost: about 8 s (the backend example trains twice for 4 steps).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
import types
from pathlib import Path

import pytest

from vaebench.testing import check_backend, check_dataset, check_metric, check_model, plugin_manager

from conftest import ROOT

HOOKS = ("vaebench_register_models", "vaebench_register_metrics", "vaebench_register_datasets",
         "vaebench_register_backends", "vaebench_register_executors", "vaebench_register_references",
         "vaebench_register_loggers")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


DOC_BLOCKS = python_blocks(ROOT / "docs" / "plugins.md")


def run_block(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, name, "exec"), module.__dict__)
    return module


def exercise(module: types.ModuleType) -> dict[str, list[str]]:
    """Register ``module`` if it defines hooks and put each registered spec through the kit."""
    if not any(h in module.__dict__ for h in HOOKS):
        return {}
    base = plugin_manager()
    manager = plugin_manager(module)
    added = {kind: sorted(set(manager.specs[kind]) - set(base.specs[kind])) for kind in manager.specs}
    for name in added["datasets"]:
        check_dataset(manager.dataset(name))
    for name in added["models"]:
        dataset = added["datasets"][0] if added["datasets"] else "dsprites"
        check_model(manager.model(name), manager=manager, dataset=dataset, batch_size=4)
    for name in added["metrics"]:
        check_metric(manager.metric(name))
    for name in added["backends"]:
        check_backend(manager.backend(name), manager=manager)
    for name in added["executors"]:
        run_executor(manager, name)
    for name in added["references"]:  # the pack reads and checks
        from vaebench.harness.references import load_pack

        assert load_pack(name, manager).entries
    for name in added["loggers"]:  # a 5-step run logged to it: recorded ok, its lines printed
        run_logger(manager, name)
    return added


def run_logger(manager, name: str) -> None:
    from vaebench import api

    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()) as out:
        result = api.run_grid("beta_vae", registry=str(Path(scratch) / "registry"), metrics=["kl"], device="cpu",
                              eval_samples=300, manager=manager, architectures="mlp", steps=[5], batch_size=[16],
                              log_to=[name], log_every=1)
    assert [r["status"] for r in result.records] == ["ok"]
    assert f"end {result.records[0]['run_id']} ok" in out.getvalue()


def run_executor(manager, name: str) -> None:
    """A two-point grid (5 steps) handed to executor ``name`` in a scratch directory: it must
    return an ``ExecutorResult`` whose records (if any) are of those points."""
    from vaebench import api

    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        result = api.run_grid("beta_vae", registry=str(Path(scratch) / "registry"), metrics=["kl"], device="cpu",
                              eval_samples=300, manager=manager, executor=name, betas=[1.0, 4.0], steps=[5],
                              batch_size=[16])
        planned = {s.run_id for s in api.plan_grid("beta_vae", manager=manager, betas=[1.0, 4.0], steps=[5],
                                                   batch_size=[16])}
        assert {r["run_id"] for r in result.records} <= planned and result.executor == name


def test_the_page_has_an_example_for_every_hook():
    assert len(DOC_BLOCKS) >= 6
    for hook in HOOKS:
        assert any(hook in block for block in DOC_BLOCKS), hook


@pytest.mark.parametrize("index", range(len(DOC_BLOCKS)))
def test_docs_example_runs_and_passes_the_kit(index):
    module = run_block(DOC_BLOCKS[index], f"docs_plugins_block_{index}")
    exercise(module)


def test_docs_model_reads_its_own_hyperparameter():
    block = next(b for b in DOC_BLOCKS if "vaebench_register_models" in b)
    manager = plugin_manager(run_block(block, "docs_model"))
    model = check_model(manager.model("gauss_vae"), manager=manager, hyperparameters={"sigma": 0.3})
    assert model.sigma == 0.3


def test_readme_plugin_snippets_run():
    blocks = [b for b in python_blocks(ROOT / "README.md") if "vaebench.plugin" in b]
    assert blocks, "the README's plugin snippet is gone"
    metric_block = next(b for b in DOC_BLOCKS if "best_factor_corr" in b)
    docs_metric = run_block(metric_block, "docs_metric_for_readme")
    for i, code in enumerate(blocks):
        module = run_block(code, f"readme_block_{i}")
        # The snippet names its code by import path ("my_pkg.metric:compute"), as a package
        # does; stand the docs' metric in for it, then register it as written.
        fake = types.ModuleType("my_pkg")
        fake.metric = types.SimpleNamespace(
            compute=lambda ctx: {"my_metric": docs_metric.best_factor_corr(ctx)["best_factor_corr"]})
        fake.model = types.SimpleNamespace(build=run_block(next(b for b in DOC_BLOCKS if "gauss_vae" in b),
                                                           "docs_model_for_readme").build)
        sys.modules["my_pkg"], sys.modules["my_pkg.metric"], sys.modules["my_pkg.model"] = fake, fake.metric, fake.model
        try:
            added = exercise(module)
        finally:
            for key in ("my_pkg", "my_pkg.metric", "my_pkg.model"):
                sys.modules.pop(key, None)
        assert any(added.values()), f"README block {i} registers nothing"
