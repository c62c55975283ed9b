"""`vaebench continue`: a recorded run trained further from its checkpoint, recorded as a
new run that names its parent, and trained exactly as one uninterrupted run would be."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from vaebench.harness.plan import plan_grid
from vaebench.plugins.runspec import RunSpec
from vaebench.harness.runner import ContinueError, continue_run, continued_spec, run_grid
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.manager import get_manager
from vaebench.registry.store import read_record

EXECUTION = dict(device="cpu", threads=1, eval_samples=400, progress_every=5, figures=False)
METRICS = ["mig", "reconstruction", "kl"]


def _record(spec: RunSpec, registry: Path) -> dict:
    (record,) = run_grid([spec], get_manager(), str(registry), ExecutionOptions(**EXECUTION), METRICS,
                         strategy="sequential").records
    assert record["status"] == "ok", record["error"]
    return record


@pytest.mark.parametrize("backend,model", [("torch", "beta_vae"), ("torch", "factor_vae"), ("torch", "vq_vae"),
                                           ("jax", "beta_vae"), ("jax", "vq_vae")])
def test_a_continued_run_equals_one_trained_in_one_go(tmp_path, backend, model):
    """20 steps + 20 more from the checkpoint == 40 steps: Adam's moments (and FactorVAE's
    discriminator optimizer, VQ-VAE's codebook buffers) and the RNG streams go on."""
    hp = {"beta_vae": {"beta": [4.0]}, "factor_vae": {"gamma": [10.0]}, "vq_vae": {}}[model]
    manager = get_manager()
    (parent_spec,) = plan_grid(manager, [model], {"steps": [20], "seed": [5], "batch_size": [16], **hp},
                               architectures=["mlp"], backends=[backend])
    whole_spec = RunSpec(**{**json.loads(parent_spec.to_json()), "steps": 40})
    parent = _record(parent_spec, tmp_path / "a")
    whole = _record(whole_spec, tmp_path / "b")
    child = continue_run(parent, 20, manager, str(tmp_path / "a"), ExecutionOptions(**EXECUTION), METRICS)

    assert child["status"] == "ok", child["error"]
    assert child["parent_run_id"] == parent["run_id"] and child["run_id"] not in (parent["run_id"], whole["run_id"])
    assert json.loads(child["spec_json"])["start_step"] == 20 and child["steps"] == child["steps_done"] == 40
    assert child["final_loss"] == whole["final_loss"]
    assert child["metrics"] == whole["metrics"]
    assert [h["loss"] for h in child["history"]] == [h["loss"] for h in whole["history"]]
    assert [h["step"] for h in child["history"]] == list(range(1, 41))
    assert child["train_seconds"] > parent["train_seconds"]
    # the parent's record stays as it was
    assert read_record(str(tmp_path / "a"), parent["run_id"])["steps_done"] == 20


def test_a_checkpoint_without_training_state_continues_with_a_note(tmp_path):
    spec = RunSpec(model="beta_vae", beta=4.0, architecture="mlp", steps=20, batch_size=16)
    parent = _record(spec, tmp_path)
    directory = (tmp_path / parent["artifacts"]["checkpoint"]).parent
    for name in ("training_state.json", "training_state.safetensors"):
        (directory / name).unlink()  # as a checkpoint written before training states were saved
    child = continue_run(parent, 20, get_manager(), str(tmp_path), ExecutionOptions(**EXECUTION), METRICS)
    assert child["status"] == "ok" and child["steps_done"] == 40
    assert "without the parent's optimizer and RNG state" in child["error"]
    whole = _record(RunSpec(model="beta_vae", beta=4.0, architecture="mlp", steps=40, batch_size=16), tmp_path / "w")
    assert child["final_loss"] != whole["final_loss"]  # Adam restarted: not the uninterrupted run


def _parent(spec: RunSpec, steps_done: int | None = None, status: str = "ok") -> dict:
    return {"run_id": spec.run_id, "status": status, "spec_json": spec.to_json(),
            "steps_done": spec.steps if steps_done is None else steps_done}


def test_schedules_that_default_to_the_run_length_are_pinned_to_the_parents():
    manager = get_manager()
    capacity = continued_spec(_parent(RunSpec(model="beta_vae_capacity", capacity=25.0, gamma=100.0, steps=1000)),
                              500, manager)
    assert (capacity.steps, capacity.start_step, capacity.capacity_steps) == (1500, 1000, 1000)
    explicit = continued_spec(_parent(RunSpec(model="beta_vae_capacity", capacity=25.0, gamma=100.0, steps=1000,
                                              capacity_steps=3000)), 500, manager)
    assert explicit.capacity_steps == 3000
    warm = continued_spec(_parent(RunSpec(model="beta_vae", beta=4.0, beta_schedule="linear", beta_start=1.0,
                                          steps=800)), 200, manager)
    assert (warm.beta_warmup_steps, warm.steps) == (800, 1000)
    plain = continued_spec(_parent(RunSpec(model="beta_vae", beta=4.0, steps=800)), 200, manager)
    assert plain.capacity_steps is None and plain.beta_warmup_steps is None
    # a continued run of a continued run starts at its parent's end
    again = continued_spec(_parent(plain), 300, manager)
    assert (again.start_step, again.steps) == (1000, 1300)


@pytest.mark.parametrize(
    "parent,steps,message",
    [
        (_parent(RunSpec(model="beta_vae", beta=4.0, beta_schedule="cyclical", steps=800)), 100, "cyclical"),
        (_parent(RunSpec(model="beta_vae", beta=4.0), status="diverged"), 100, "is diverged"),
        (_parent(RunSpec(model="beta_vae", beta=4.0)), 0, "at least 1"),
    ],
)
def test_what_cannot_be_continued_says_why(parent, steps, message):
    with pytest.raises(ContinueError, match=message):
        continued_spec(parent, steps, get_manager())


def test_continue_command(cli, tmp_path):
    registry = tmp_path / "reg"
    result = cli("run", "--betas", "4", "--architecture", "mlp", "--metrics", "mig,reconstruction", *TINY,
                 "--registry", registry, "--json")
    assert result.exit_code == 0, result.output
    (parent,) = json.loads(result.stdout)
    before = sorted((registry / "runs").glob("*.parquet"))

    for args, fragment in [
        (["abcdef", "--steps", "10"], "no run matches 'abcdef'"),
        ([parent["run_id"][:8], "--steps", "0"], "at least 1"),
        ([parent["run_id"][:8], "--steps", "10", "--amp", "fp8"], "AMP"),
        ([parent["run_id"][:8], "--steps", "10", "--metrics", "nope"], "unknown metric 'nope'"),
        ([parent["run_id"][:8], "--steps", "10", "--device", "cuda:7"], "cuda"),
    ]:
        bad = cli("continue", *args, "--registry", registry)
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.startswith("error:") and fragment in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    assert sorted((registry / "runs").glob("*.parquet")) == before

    result = cli("continue", parent["run_id"][:8], "--steps", "10", "--device", "cpu", "--threads", "1",
                 "--eval-samples", "500", "--registry", registry, "--json")
    assert result.exit_code == 0, result.output
    child = json.loads(result.stdout)
    assert child["parent_run_id"] == parent["run_id"] and child["steps_done"] == 40
    # scored with the parent's metrics, not the defaults
    assert set(json.loads(child["metric_params"])) - {"_eval"} == {"mig", "reconstruction"}
    assert "training_state" in child["artifacts"] and (registry / child["artifacts"]["traversal_png"]).exists()
    assert f"continuing {parent['run_id']} from step 30 to 40" in result.stderr
    assert len(list((registry / "runs").glob("*.parquet"))) == 2
    # the continued run can itself be continued, from Python too
    import vaebench

    again = vaebench.continue_run(child["run_id"][:10], 5, registry=str(registry), device="cpu", threads=1,
                                  eval_samples=500)
    assert again["status"] == "ok" and again["steps_done"] == 45 and again["parent_run_id"] == child["run_id"]
    assert np.isfinite(again["final_loss"])


class _Interrupt:
    """A reporter that stops training at a step the way Ctrl-C does (KeyboardInterrupt)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def start_run(self, spec, index, total): ...
    def phase(self, run_id, text): ...
    def end_run(self, record): ...
    def skipped(self, spec, status): ...

    def progress(self, run_id, step, values):
        if step >= self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_an_interrupted_run_picks_up_from_its_periodic_checkpoint(tmp_path, backend):
    (spec,) = plan_grid(get_manager(), ["beta_vae"], {"steps": [40], "batch_size": [16], "beta": [4.0]},
                        architectures=["mlp"], backends=[backend])
    execution = ExecutionOptions(**EXECUTION, checkpoint_every=10)
    registry = tmp_path / "reg"
    with pytest.raises(KeyboardInterrupt):
        run_grid([spec], get_manager(), str(registry), execution, METRICS, strategy="sequential",
                 reporter=_Interrupt(at=25))
    partial = registry / "artifacts" / spec.run_id / "partial"
    assert json.loads((partial / "training_state.json").read_text())["step"] == 20
    assert not list((registry / "runs").glob("*.parquet"))  # nothing recorded for the interrupted run

    from vaebench.harness.cli import app
    from typer.testing import CliRunner

    dry = CliRunner().invoke(app, ["run", "--betas", "4", "--steps", "40", "--batch-size", "16", "--architecture", "mlp",
                                   "--backend", backend, "--registry", str(registry), "--dry-run"])
    assert f"{spec.run_id}" in dry.stdout and "interrupted at step 20: picked up from there" in dry.stdout

    (record,) = run_grid([spec], get_manager(), str(registry), ExecutionOptions(**EXECUTION, checkpoint_every=10),
                         METRICS, strategy="sequential").records
    whole = _record(spec, tmp_path / "whole")
    assert record["status"] == "ok" and "picked up from its periodic checkpoint at step 20" in record["error"]
    assert record["final_loss"] == whole["final_loss"] and record["metrics"] == whole["metrics"]
    assert [h["step"] for h in record["history"]] == list(range(1, 41))
    assert [h["loss"] for h in record["history"]] == [h["loss"] for h in whole["history"]]
    assert not partial.exists()  # recorded: the periodic checkpoint is gone


def test_checkpoint_every_is_checked(cli, tmp_path):
    result = cli("run", "--checkpoint-every", "-5", *TINY[:2], "--registry", tmp_path / "reg")
    assert result.exit_code == 2 and "--checkpoint-every" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "reg").exists()


def _group_specs(backend: str, steps: int) -> list[RunSpec]:
    return plan_grid(get_manager(), ["beta_vae"], {"steps": [steps], "batch_size": [8], "beta": [1.0, 4.0],
                                                   "seed": [3]}, architectures=["mlp"], backends=[backend])


def _grid(specs, registry: Path, **kw) -> list[dict]:
    records = run_grid(specs, get_manager(), str(registry), ExecutionOptions(**EXECUTION, **kw), METRICS,
                       strategy="vectorized").records
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    return records


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_an_interrupted_vectorized_group_picks_up_exactly(tmp_path, backend):
    """Each member of a vectorized group writes its periodic checkpoint; the group run again
    goes on from them and records what the uninterrupted group records, float for float."""
    specs = _group_specs(backend, 20)
    registry = tmp_path / "reg"
    with pytest.raises(KeyboardInterrupt):
        run_grid(specs, get_manager(), str(registry), ExecutionOptions(**EXECUTION, checkpoint_every=5), METRICS,
                 strategy="vectorized", reporter=_Interrupt(at=13))
    for spec in specs:
        partial = registry / "artifacts" / spec.run_id / "partial"
        assert json.loads((partial / "training_state.json").read_text())["step"] == 10
    records = _grid(specs, registry, checkpoint_every=5)
    whole = _grid(specs, tmp_path / "whole")
    for record, ref in zip(records, whole):
        assert "picked up from its periodic checkpoint at step 10" in record["error"]
        assert record["strategy"] == "vectorized" and record["steps_done"] == 20
        assert [h["step"] for h in record["history"]] == list(range(1, 21))
        assert [h["loss"] for h in record["history"]] == [h["loss"] for h in ref["history"]]
        assert record["final_loss"] == ref["final_loss"] and record["metrics"] == ref["metrics"]
        assert not (registry / "artifacts" / record["run_id"] / "partial").exists()
    assert records[0]["final_loss"] != records[1]["final_loss"]  # two different members


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_vectorized_member_continues_from_its_own_training_state(tmp_path, backend):
    """A member of a vectorized group saved its slice of the group's Adam moments and its
    RNG streams: continued alone for 10 steps it follows the group trained 20 steps
    (to the rounding of batched against plain kernels), with no restart note."""
    parents = _grid(_group_specs(backend, 10), tmp_path / "a")
    whole = _grid(_group_specs(backend, 20), tmp_path / "b")
    for parent, ref in zip(parents, whole):
        assert (tmp_path / "a" / parent["artifacts"]["training_state"]).exists()
        child = continue_run(parent, 10, get_manager(), str(tmp_path / "a"), ExecutionOptions(**EXECUTION), METRICS)
        assert child["status"] == "ok" and "restarted" not in (child["error"] or "")
        np.testing.assert_allclose([h["loss"] for h in child["history"]], [h["loss"] for h in ref["history"]],
                                   rtol=2e-4)


def test_members_checkpointed_at_different_steps_are_picked_up_on_their_own(tmp_path):
    """A group whose members stopped at different steps cannot go on as one program: the
    member with a periodic checkpoint is picked up alone, the other trains from the start."""
    specs = _group_specs("torch", 20)
    registry = tmp_path / "reg"
    with pytest.raises(KeyboardInterrupt):
        run_grid(specs, get_manager(), str(registry), ExecutionOptions(**EXECUTION, checkpoint_every=5), METRICS,
                 strategy="vectorized", reporter=_Interrupt(at=13))
    import shutil

    shutil.rmtree(registry / "artifacts" / specs[1].run_id / "partial")
    first, second = _grid(specs, registry, checkpoint_every=5)
    assert "picked up from its periodic checkpoint at step 10" in first["error"]
    assert "picked up" not in (second["error"] or "")
    assert first["steps_done"] == second["steps_done"] == 20
    assert first["strategy"] == second["strategy"] == "sequential"
