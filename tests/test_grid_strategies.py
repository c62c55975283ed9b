"""Grid strategies: a vectorized group trains each member as it would train alone,
worker processes give the same records as sequential runs, and ``auto`` chooses by
device and thread budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaebench.plugins.runspec import RunSpec
from vaebench.harness.runner import run_grid
from vaebench.harness.strategies import choose_strategy, vectorized_groups
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.backends.torch.backend import TorchBackend
from vaebench.plugins.manager import PluginManager, get_manager

from conftest import TINY


@pytest.fixture(scope="module")
def dsprites():
    return get_manager().dataset("dsprites").loader()(path=None)


def _curve(trained) -> np.ndarray:
    return np.array([[h["step"], h["loss"], h["recon"], h["kl"]] for h in trained.history])


def _assert_same_signals(group_member, alone, rtol: float = 2e-4) -> None:
    """The scheduled β (where there is one) equal; the KL per dimension (``kl.dim<d>``, at
    every history point, summing to the history's KL) equal up to the grouped kernels'
    rounding."""
    g, a = group_member.signals, alone.signals
    assert [sorted(s) for s in g] == [sorted(s) for s in a] and [s["step"] for s in g] == [h["step"] for h in alone.history]
    for gs, as_, h in zip(g, a, alone.history):
        dims = sorted(k for k in as_ if k.startswith("kl.dim"))
        assert len(dims) == alone.spec.latent_dim
        assert {k: v for k, v in gs.items() if k not in dims} == {k: v for k, v in as_.items() if k not in dims}
        np.testing.assert_allclose([gs[k] for k in dims], [as_[k] for k in dims], rtol=rtol, atol=1e-6)
        assert sum(as_[k] for k in dims) == pytest.approx(h["kl"], rel=1e-5, abs=1e-6)


def test_vectorized_group_trains_each_member_like_a_lone_run(dsprites):
    # Two different models and seeds in one group: each follows its lone run step by step.
    specs = [
        RunSpec(model="beta_vae", beta=4.0, seed=1, steps=15, batch_size=16),
        RunSpec(model="beta_vae_capacity", capacity=10.0, gamma=100.0, capacity_steps=15, seed=2, steps=15,
                batch_size=16),
        RunSpec(model="beta_vae", beta=4.0, beta_schedule="linear", beta_start=1.0, beta_warmup_steps=10,
                seed=3, steps=15, batch_size=16),
    ]
    backend = TorchBackend()
    execution = ExecutionOptions(device="cpu", threads=1, progress_every=1)
    group = backend.train_group(specs, dsprites, execution)
    alone = [backend.train(s, dsprites, ExecutionOptions(device="cpu", threads=1, progress_every=1)) for s in specs]
    held_out = dsprites.sample(64, np.random.default_rng(99))[0]
    for g, a in zip(group, alone):
        assert len(g.history) == len(a.history) == 15
        # Same batches, noise and optimiser state: equal up to the grouped kernels' rounding.
        np.testing.assert_allclose(_curve(g), _curve(a), rtol=2e-4)
        assert [h["capacity"] for h in g.history] == [h["capacity"] for h in a.history]
        # The trained models agree as models. (Not weight by weight: Adam divides by
        # sqrt(v), so the rounding of a near-zero gradient can move a weight by ~lr.)
        gm, glv, gerr = g.evaluate(held_out)
        am, alv, aerr = a.evaluate(held_out)
        np.testing.assert_allclose(gerr, aerr, rtol=1e-3)
        np.testing.assert_allclose(gm, am, atol=0.02 * am.std())
        _assert_same_signals(g, a)
    assert [p["beta"] for p in group[2].signals][:3] == pytest.approx([1.3, 1.6, 1.9])
    assert group[2].signals[-1]["beta"] == 4.0 and not any("beta" in s for s in group[0].signals)
    # The loss moved: the members really trained (and differently from each other).
    assert group[0].history[-1]["loss"] < group[0].history[0]["loss"]
    assert abs(group[0].history[-1]["kl"] - group[1].history[-1]["kl"]) > 1e-3


def test_a_diverged_member_is_recorded_and_the_others_go_on(tmp_path):
    # β = 1e308 overflows β·KL on the first step; its group mate must not notice.
    specs = [
        RunSpec(model="beta_vae", beta=1e308, steps=20, batch_size=8),
        RunSpec(model="beta_vae", beta=1.0, steps=20, batch_size=8),
    ]
    execution = ExecutionOptions(device="cpu", threads=1, eval_samples=300, progress_every=5)
    result = run_grid(specs, get_manager(), str(tmp_path / "vec"), execution, ["kl", "mig"], strategy="vectorized")
    assert result.strategy == "vectorized"
    bad, good = result.records
    assert bad["status"] == "diverged" and "non-finite loss" in bad["error"] and bad["steps_done"] <= 5
    assert good["status"] == "ok" and good["steps_done"] == 20 and 0.0 <= good["metrics"]["mig"] <= 1.0
    assert {r["strategy"] for r in result.records} == {"vectorized"}
    assert {r["concurrent_runs"] for r in result.records} == {2}
    # The survivor trained exactly as it does alone (same final loss to rounding).
    lone = run_grid(specs[1:], get_manager(), str(tmp_path / "seq"), execution, ["kl"], strategy="sequential")
    assert lone.records[0]["strategy"] == "sequential" and lone.records[0]["concurrent_runs"] == 1
    assert good["final_loss"] == pytest.approx(lone.records[0]["final_loss"], rel=1e-4)


def test_groups_hold_only_what_can_train_together():
    a = RunSpec(model="beta_vae", beta=1.0, seed=0)
    b = RunSpec(model="beta_vae", beta=4.0, seed=1)
    c = RunSpec(model="beta_vae_capacity", capacity=5.0, gamma=100.0)
    longer = RunSpec(model="beta_vae", beta=8.0, steps=5000)  # another run length: another program
    tc = RunSpec(model="beta_tcvae", beta=6.0)  # not a plain Gaussian VAE objective
    groups, alone = vectorized_groups([a, b, c, longer, tc])
    assert groups == [[a, b, c]]
    assert set(alone) == {longer, tc}


def test_auto_chooses_by_device_and_thread_budget(monkeypatch):
    import vaebench.harness.strategies as strategies

    specs = [RunSpec(model="beta_vae", beta=b) for b in (1.0, 4.0)]
    manager = get_manager()
    cpu = ExecutionOptions(device="cpu")
    monkeypatch.setattr(strategies, "cpu_cores", lambda: 2)
    assert choose_strategy("auto", specs, cpu, manager) == "processes"
    assert choose_strategy("auto", specs[:1], cpu, manager) == "sequential"
    assert choose_strategy("auto", specs, ExecutionOptions(device="cpu", threads=1), manager) == "sequential"
    # Plugins registered in this process only are invisible to worker processes.
    private = PluginManager()
    private.load_entry_points()
    assert choose_strategy("auto", specs, cpu, private) == "sequential"
    with pytest.raises(ValueError, match="entry points"):
        choose_strategy("processes", specs, cpu, private)
    monkeypatch.setattr(strategies, "cpu_cores", lambda: 1)
    assert choose_strategy("auto", specs, cpu, manager) == "sequential"
    assert choose_strategy("vectorized", specs, cpu, manager) == "vectorized"
    with pytest.raises(ValueError, match="unknown strategy"):
        choose_strategy("threads", specs, cpu, manager)


def test_worker_processes_record_what_sequential_runs_record(cli, tmp_path):
    # Two workers with one thread each train exactly what one thread trains alone.
    common = ["run", "--model", "beta_vae", "--betas", "1,4", "--metrics", "kl,mig", "--json",
              *[a for a in TINY if a not in ("--threads", "1")]]
    par = cli(*common, "--threads", "2", "--strategy", "processes", "--registry", tmp_path / "par")
    seq = cli(*common, "--threads", "1", "--strategy", "sequential", "--registry", tmp_path / "seq")
    assert par.exit_code == 0 and seq.exit_code == 0, par.output + seq.output
    par_records, seq_records = json.loads(par.stdout), json.loads(seq.stdout)
    assert [r["run_id"] for r in par_records] == [r["run_id"] for r in seq_records]
    for p, s in zip(par_records, seq_records):
        assert p["status"] == s["status"] == "ok"
        assert (p["strategy"], p["concurrent_runs"], p["threads"]) == ("processes", 2, 1)
        assert (s["strategy"], s["concurrent_runs"]) == ("sequential", 1)
        assert p["final_loss"] == s["final_loss"]
        assert p["metrics"] == s["metrics"]
    listed = cli("query", "SELECT run_id, strategy FROM runs ORDER BY run_id", "--registry", tmp_path / "par", "--json")
    assert {row["strategy"] for row in json.loads(listed.stdout)} == {"processes"}


def test_unknown_strategy_is_a_usage_error(cli, tmp_path):
    result = cli("run", "--betas", "1", "--strategy", "threads", "--registry", tmp_path, *TINY)
    assert result.exit_code == 2
    assert "unknown strategy 'threads'" in result.output


# ------------------------------------------------------------------ JAX: jax.vmap groups


def test_jax_vectorized_group_trains_each_member_like_a_lone_run(dsprites):
    pytest.importorskip("jax", reason="the JAX backend needs jax (pip install 'vaebench[jax]')")
    from vaebench.plugins.backends.jax.backend import JaxBackend, flat_state

    # Different models, seeds and a β schedule in one group: each follows its lone run.
    specs = [
        RunSpec(model="beta_vae", beta=4.0, beta_schedule="linear", beta_start=1.0, beta_warmup_steps=8, seed=1,
                steps=12, batch_size=16, backend="jax"),
        RunSpec(model="beta_vae_capacity", capacity=10.0, gamma=100.0, capacity_steps=12, seed=2, steps=12,
                batch_size=16, backend="jax"),
    ]
    backend = JaxBackend()
    assert backend.group_key(specs[0]) == backend.group_key(specs[1]) is not None
    seen: list[list[int]] = [[], []]
    callbacks = [lambda step, values, i=i: seen[i].append(step) for i in range(2)]
    group = backend.train_group(specs, dsprites, ExecutionOptions(device="cpu", progress_every=4), callbacks)
    alone = [backend.train(s, dsprites, ExecutionOptions(device="cpu", progress_every=4)) for s in specs]
    assert seen == [[4, 8, 12], [4, 8, 12]]
    for g, a in zip(group, alone):
        assert g.steps_done == a.steps_done == 12 and not g.diverged and g.compiled
        assert len(g.history) == len(a.history) == 12
        # Same batches, noise, initial weights and Adam state: equal up to the batched kernels' rounding.
        np.testing.assert_allclose(_curve(g), _curve(a), rtol=2e-4)
        assert [h["capacity"] for h in g.history] == pytest.approx([h["capacity"] for h in a.history])
        _assert_same_signals(g, a)
        ours, theirs = flat_state(g.model), flat_state(a.model)
        for name in theirs:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-3, atol=1e-5, err_msg=name)
    assert [s["beta"] for s in group[0].signals][:2] == pytest.approx([1.375, 1.75])  # the linear β ramp
    assert group[1].history[0]["capacity"] == pytest.approx(10.0 / 12)
    assert group[0].history[-1]["loss"] < group[0].history[0]["loss"]
    assert abs(group[0].history[-1]["kl"] - group[1].history[-1]["kl"]) > 1e-3


def test_jax_diverged_member_is_recorded_and_the_other_trains_as_alone(tmp_path):
    pytest.importorskip("jax", reason="the JAX backend needs jax (pip install 'vaebench[jax]')")
    # β = 1e308 is inf in float32: the first step's loss is not finite. The MLP keeps the
    # test cheap (XLA:CPU's batched convolutions are slow; the test above covers them).
    common = dict(model="beta_vae", steps=20, batch_size=8, architecture="mlp", backend="jax")
    specs = [RunSpec(beta=1e308, **common), RunSpec(beta=1.0, seed=3, **common)]
    execution = ExecutionOptions(device="cpu", eval_samples=300, progress_every=5)
    result = run_grid(specs, get_manager(), str(tmp_path / "vec"), execution, ["kl"], strategy="vectorized")
    bad, good = result.records
    assert bad["status"] == "diverged" and "non-finite loss" in bad["error"]
    assert good["status"] == "ok" and good["steps_done"] == 20 and good["metrics"]["kl"] > 0
    assert {(r["strategy"], r["concurrent_runs"], r["backend"]) for r in result.records} == {("vectorized", 2, "jax")}
    # Each member is recorded as its lone run is: the same check point for the diverged one
    # (20 steps keep a history point per step: step 1), the same training for the other.
    lone_bad, lone_good = run_grid(specs, get_manager(), str(tmp_path / "seq"), execution, ["kl"],
                                   strategy="sequential").records
    assert (bad["status"], bad["steps_done"], bad["error"]) == (lone_bad["status"], 1, lone_bad["error"])
    assert lone_bad["steps_done"] == 1
    assert good["final_loss"] == pytest.approx(lone_good["final_loss"], rel=1e-4)
    assert good["metrics"]["kl"] == pytest.approx(lone_good["metrics"]["kl"], rel=1e-3)


def test_jax_and_torch_specs_never_share_a_group():
    pytest.importorskip("jax", reason="the JAX backend needs jax (pip install 'vaebench[jax]')")
    t1, t2 = RunSpec(model="beta_vae", beta=1.0), RunSpec(model="beta_vae", beta=4.0)
    j1, j2 = (RunSpec(model="beta_vae", beta=b, backend="jax") for b in (1.0, 4.0))
    j3 = RunSpec(model="beta_vae_capacity", capacity=5.0, gamma=100.0, seed=7, backend="jax")
    vq = RunSpec(model="vq_vae", backend="jax")  # not a plain Gaussian VAE: alone
    groups, alone = vectorized_groups([t1, j1, t2, j2, vq, j3])
    assert groups == [[t1, t2], [j1, j2, j3]]
    assert alone == [vq]
