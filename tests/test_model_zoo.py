"""The model zoo (cvae, vq_vae, beta_tcvae, factor_vae, dip_vae) and β schedules: each
objective does what it promises, trains through the torch backend, checkpoints
round-trip, and runs are recorded through run_grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from vaebench.harness.plan import PlanError, plan_grid
from vaebench.plugins.runspec import RunSpec
from vaebench.harness.progress import summary_table
from vaebench.harness.evaluation import evaluate
from vaebench.harness.runner import run_grid
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.backends.torch.backend import TorchBackend, TrainedTorchModel, load_checkpoint
from vaebench.plugins.backends.torch.models import (
    VQVAE,
    build_dip_vae,
    build_factor_vae,
    build_vae,
    covariance,
    tc_decomposition,
)
from vaebench.plugins.datasets.dsprites import ProceduralDSprites
from vaebench.plugins.manager import get_manager
from vaebench.plugins.metrics import collapse
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.metrics.collapse import posterior_collapse_note
from vaebench.plugins.objectives import beta_at, dip_regulariser, objective
from vaebench.registry.query import open_runs

DATA = ProceduralDSprites()
ZOO = ["cvae", "vq_vae", "beta_tcvae", "factor_vae", "dip_vae"]


def _execution(**kw) -> ExecutionOptions:
    return ExecutionOptions(device="cpu", threads=1, progress_every=5, **kw)


def _spec(model: str, steps: int = 12, **values) -> RunSpec:
    """The normalised spec plan_grid makes (model defaults filled in), batch 16."""
    axes = {"steps": [steps], "batch_size": [16], **{k: [v] for k, v in values.items()}}
    (spec,) = plan_grid(get_manager(), [model], axes)
    return spec


def _train(spec: RunSpec, dataset=DATA, **kw):
    execution = _execution(**kw)
    return TorchBackend().train(spec, dataset, execution), execution


class FixedBatch:
    """The same 16 observations at every step (with dSprites' factors)."""

    def __init__(self, n: int = 16) -> None:
        self.images, self.factors = DATA.sample(n, np.random.default_rng(0))
        self.image_shape, self.factor_names, self.factor_sizes = DATA.image_shape, DATA.factor_names, DATA.factor_sizes

    def sample(self, n, rng):
        return self.images[:n], self.factors[:n]


# ----------------------------------------------------------------- plan: fields, ids, defaults


def test_new_fields_keep_old_run_ids_and_normalise():
    assert RunSpec(model="beta_vae", beta=4.0).run_id == "a1b61ae31bb4de9d"  # the pinned id of test_plan
    assert "beta_schedule" not in RunSpec(model="beta_vae", beta=4.0).to_json()
    # constant is the canonical no-schedule: same run as no schedule at all
    (a,) = plan_grid(get_manager(), ["beta_vae"], {"beta_schedule": ["constant"], "beta_start": [1.0]})
    (b,) = plan_grid(get_manager(), ["beta_vae"], {})
    assert a.run_id == b.run_id and a.beta_schedule is None and a.beta_start is None
    (lin,) = plan_grid(get_manager(), ["beta_vae"], {"beta_schedule": ["linear"], "steps": [300]})
    assert (lin.beta_start, lin.beta_warmup_steps, lin.beta_cycles) == (0.0, 300, None)
    (cyc,) = plan_grid(get_manager(), ["beta_vae"], {"beta_schedule": ["cyclical"]})
    assert (cyc.beta_cycles, cyc.beta_warmup_steps) == (4, None)
    assert RunSpec.from_dict(json.loads(cyc.to_json())) == cyc
    # disentanglement_lib's study ratios for λ_d
    assert _spec("dip_vae").lambda_d == 100.0 and _spec("dip_vae", dip_type="ii").lambda_d == 10.0
    assert _spec("dip_vae", lambda_od=2.0).lambda_d == 20.0
    vq = _spec("vq_vae")
    assert (vq.codebook_size, vq.commitment, vq.codebook_update, vq.beta) == (512, 0.25, "loss", None)
    with pytest.raises(PlanError, match="no selected model reads 'beta_schedule'"):
        plan_grid(get_manager(), ["vae"], {"beta_schedule": ["linear"]})
    with pytest.raises(PlanError, match="not one of"):
        plan_grid(get_manager(), ["dip_vae"], {"dip_type": ["iii"]})


# ----------------------------------------------------------------- β schedules


def test_beta_schedule_values():
    lin = {"beta": 4.0, "beta_schedule": "linear", "beta_start": 1.0, "beta_warmup_steps": 10}
    assert [beta_at(s, lin) for s in (0, 5, 10, 20)] == [1.0, 2.5, 4.0, 4.0]
    cyc = {"beta": 4.0, "beta_schedule": "cyclical", "beta_start": 0.0, "beta_cycles": 4, "steps": 100}
    # period 25 steps; β rises over the first half of each cycle (R = 0.5), then holds
    assert beta_at(1, cyc) == 0.0 and beta_at(26, cyc) == 0.0 and beta_at(51, cyc) == 0.0
    assert beta_at(7, cyc) == pytest.approx(4.0 * (6 / 25) / 0.5)
    assert beta_at(13, cyc) == pytest.approx(4.0 * (12 / 25) / 0.5)
    assert beta_at(14, cyc) == 4.0 and beta_at(25, cyc) == 4.0
    assert beta_at(3, {"beta": 4.0}) == 4.0 and beta_at(3, {"beta": 4.0, "beta_schedule": "constant"}) == 4.0
    loss, _ = objective("beta_vae", 100.0, 7.0, lin, 5)
    assert loss == 100.0 + 2.5 * 7.0


def test_scheduled_beta_is_recorded_at_every_history_point():
    spec = _spec("beta_vae", steps=20, beta_schedule="linear", beta_start=1.0, beta_warmup_steps=10)
    trained, _ = _train(spec)
    assert [s["step"] for s in trained.signals] == [h["step"] for h in trained.history]
    for s in trained.signals:
        assert s["beta"] == pytest.approx(1.0 + 3.0 * min(1.0, s["step"] / 10))


# ----------------------------------------------------------------- β-TCVAE


def test_mws_tc_estimate_is_zero_for_a_factorised_posterior_and_not_otherwise():
    m, d, sd = 1000, 4, 0.5
    tcs, correlated, mis = [], [], []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        mu = torch.randn(m, d, generator=g)
        logvar = torch.full((m, d), 2 * math.log(sd))
        z = mu + sd * torch.randn(m, d, generator=g)
        parts = tc_decomposition(z, mu, logvar, DATA_SIZE)
        tcs.append(float(parts["tc"]))
        mis.append(float(parts["mi"]))
        mu_c = mu.clone()
        mu_c[:, 1] = 0.95 * mu[:, 0] + 0.3 * mu[:, 1]
        zc = mu_c + sd * torch.randn(m, d, generator=g)
        correlated.append(float(tc_decomposition(zc, mu_c, logvar, DATA_SIZE)["tc"]))
    # independent dimensions: TC = 0; the estimate is small and unbiased up to O(1/M)
    assert abs(np.mean(tcs)) < 0.1
    # MI of z = μ + 0.5·ε with μ ~ N(0, I): 4 · ½ log(1 + 1/0.25)
    assert np.mean(mis) == pytest.approx(2 * math.log(5), abs=0.2)
    # a correlated pair: TC = −½ log(1 − ρ²), ρ = 0.95 / sqrt(1.25 · 1.2425)
    rho = 0.95 / math.sqrt(1.25 * 1.2425)
    assert np.mean(correlated) == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.1)


DATA_SIZE = 737_280


def test_beta_tcvae_records_a_finite_tc_and_uses_the_dataset_size():
    trained, _ = _train(_spec("beta_tcvae", steps=10))
    assert trained.model.dataset_size == DATA_SIZE
    assert trained.signals and all(math.isfinite(s["tc"]) and s["beta"] == 6.0 for s in trained.signals)
    assert all(math.isfinite(s["mi"]) and math.isfinite(s["dwkl"]) for s in trained.signals)


# ----------------------------------------------------------------- FactorVAE


class _TiedEncoder(nn.Module):
    """Every latent dimension is the same function of the image: a maximally correlated
    q(z), which the discriminator can tell from its dimension-permuted copy."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.lin = nn.Linear(64 * 64, 1)

    def forward(self, x):
        s = 30.0 * self.lin(x.flatten(1))
        return torch.cat([s.expand(-1, self.latent_dim), torch.full_like(s.expand(-1, self.latent_dim), -8.0)], 1)


def test_factor_vae_discriminator_learns_on_fixed_data():
    torch.manual_seed(0)
    spec = RunSpec(model="factor_vae", gamma=0.0, steps=30, batch_size=16)  # γ = 0: the VAE ignores D
    model = build_factor_vae(spec, DATA.image_shape)
    model.encoder = _TiedEncoder(spec.latent_dim)
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    execution = _execution()
    trained = TorchBackend().train(spec, FixedBatch(), execution, model=model)
    losses = [s["disc_loss"] for s in trained.signals]
    assert len(losses) == 30 and losses[0] == pytest.approx(math.log(2), abs=0.02)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert trained.signals[-1]["disc_accuracy"] > 0.8
    assert all(not torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))


def test_factor_vae_trains_vae_and_discriminator_with_separate_optimizers():
    trained, _ = _train(_spec("factor_vae", steps=6))
    (opt,) = trained.model.auxiliary_optimizers().values()
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.5, 0.9)
    assert all(math.isfinite(s["tc"]) and 0 < s["disc_loss"] for s in trained.signals)


# ----------------------------------------------------------------- DIP-VAE


def test_dip_regulariser_matches_its_closed_form():
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.5]])
    off = 2 * (0.5**2 + 0.3**2)
    diag = (2.0 - 1) ** 2 + 0.0 + (0.5 - 1) ** 2
    assert dip_regulariser(cov, 10.0, 100.0) == pytest.approx(10 * off + 100 * diag)
    extra = np.array([0.1, 0.2, 0.3])  # type ii: E[σ²] joins the diagonal only
    diag_ii = (2.1 - 1) ** 2 + (1.2 - 1) ** 2 + (0.8 - 1) ** 2
    assert dip_regulariser(cov, 10.0, 10.0, extra) == pytest.approx(10 * off + 10 * diag_ii)
    assert float(dip_regulariser(torch.tensor(cov), 10.0, 100.0)) == pytest.approx(10 * off + 100 * diag)
    mu = torch.from_numpy(np.random.default_rng(0).normal(size=(50, 3)))
    np.testing.assert_allclose(covariance(mu).numpy(), np.cov(mu.numpy().T, bias=True), atol=1e-12)


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_dip_vae_loss_is_elbo_plus_regulariser(dip_type):
    spec = _spec("dip_vae", dip_type=dip_type)
    torch.manual_seed(0)
    model = build_dip_vae(spec, DATA.image_shape)
    x = torch.from_numpy(DATA.sample(16, np.random.default_rng(1))[0].transpose(0, 3, 1, 2).copy())
    torch.manual_seed(1)
    terms = model.loss_terms(x, 1)
    mu, logvar = model.encode(x)
    extra = logvar.exp().mean(0) if dip_type == "ii" else None
    reg = dip_regulariser(covariance(mu), spec.lambda_od, spec.lambda_d, extra)
    assert terms["signals"]["dip_reg"].item() == pytest.approx(reg.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx((terms["recon"] + terms["kl"] + reg).item(), rel=1e-5)


# ----------------------------------------------------------------- VQ-VAE


@pytest.mark.parametrize("update,reset", [("loss", 0), ("ema", 10)])
def test_vq_vae_perplexity_and_code_usage(update, reset):
    spec = _spec("vq_vae", steps=20, codebook_size=64, codebook_update=update, dead_code_steps=reset)
    trained, _ = _train(spec)
    assert trained.model.latent_dim == spec.latent_dim * spec.codebook_dim
    for s in trained.signals:
        assert 1.0 <= s["perplexity"] <= 64 and 0.0 < s["code_usage"] <= 1.0
    if update == "ema":
        assert trained.signals[-1]["codebook"] == 0.0  # no codebook loss under EMA
        assert "codebook" not in dict(trained.model.named_parameters())
    # encode gives the pre-quantisation encoding; decode quantises it
    images = DATA.observations(DATA.sample_factors(8, np.random.default_rng(0)))
    z = trained.encode(images)
    assert z.shape == (8, spec.latent_dim * spec.codebook_dim)
    means, logvars, _ = trained.evaluate(images)
    assert np.all(logvars == 0) and means.shape == z.shape


def test_vq_vae_codebook_collapse_is_noted():
    model = VQVAE(DATA.image_shape, 10, "conv", {"codebook_size": 512, "codebook_dim": 8, "commitment": 0.25})
    counts = torch.zeros(512)
    counts[:20] = 5.0
    model._recent.append(counts)
    (note,) = model.notes()
    assert "codebook collapse: 20 of 512 codes (4%)" in note
    counts[:100] = 1.0
    model._recent.append(counts)
    assert model.notes() == []


# ----------------------------------------------------------------- cvae


def test_cvae_decoder_depends_on_the_label_and_training_sees_factors():
    spec = _spec("cvae", condition="shape")
    trained, _ = _train(spec)
    assert trained.model.factor_index == 0 and trained.model.num_classes == 3
    z = np.random.default_rng(0).normal(size=(4, spec.latent_dim)).astype(np.float32)
    square, heart = np.zeros((4, 5), np.int64), np.zeros((4, 5), np.int64)
    heart[:, 0] = 2
    a, b = trained.decode(z, factors=square), trained.decode(z, factors=heart)
    assert np.abs(a - b).max() > 1e-4
    # the encoder sees the label too; without labels it infers them (argmax ELBO)
    images, factors = DATA.sample(8, np.random.default_rng(2))
    other = factors.copy()
    other[:, 0] = (other[:, 0] + 1) % 3
    assert np.abs(trained.encode(images, factors=factors) - trained.encode(images, factors=other)).max() > 1e-5
    inferred = trained.model.infer_factors(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_array_equal(trained.encode(images), trained.encode(images, factors=inferred.numpy()))


def test_cvae_condition_must_be_a_factor():
    with pytest.raises(ValueError, match="not a factor of dsprites"):
        _train(_spec("cvae", steps=1, condition="digit"))


# ----------------------------------------------------------------- posterior collapse


def test_posterior_collapse_is_flagged():
    assert posterior_collapse_note(np.zeros((100, 4)), np.zeros((100, 4))).startswith("posterior collapse: 0 active")
    rng = np.random.default_rng(0)
    assert posterior_collapse_note(rng.normal(size=(100, 4)), np.full((100, 4), -2.0)) is None
    # a model whose encoder outputs the prior for every image, scored by the metric
    model = build_vae(RunSpec(model="vae"), DATA.image_shape)
    last = model.encoder.dense[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    trained = TrainedTorchModel(model, RunSpec(model="vae"), "cpu", "off", False)
    means, logvars, errors = trained.evaluate(DATA.sample(20, rng)[0])
    result = collapse.compute(EvaluationContext(means=means, logvars=logvars, recon_errors=errors))
    assert result.values == {"posterior_collapsed": 1.0} and result.params["active_dims"] == 0
    ok = EvaluationContext(means=rng.normal(size=(50, 4)), logvars=np.full((50, 4), -2.0), recon_errors=errors)
    assert collapse.compute(ok).values == {"posterior_collapsed": 0.0}
    # Whatever the backend and the metrics chosen, evaluation notes it for the record and
    # the summary flags it.
    execution = _execution(eval_samples=50)
    evaluate(trained, RunSpec(model="vae"), DATA, [], execution)
    assert [n for n in execution.notes if n.startswith("posterior collapse: 0 active dimensions")]
    record = {"run_id": "x" * 16, "model": "vae", "seed": 0, "status": "ok", "metrics": {},
              "error": "; ".join(execution.notes)}
    console = Console(width=200, record=True)
    console.print(summary_table([record]))
    assert "ok, collapsed" in console.export_text()


# ----------------------------------------------------------------- checkpoints and run_grid


@pytest.mark.parametrize("model", ZOO)
def test_checkpoint_round_trip(model, tmp_path):
    spec = _spec(model, steps=4, beta_schedule="cyclical") if model in ("cvae", "beta_tcvae") else _spec(model, steps=4)
    trained, _ = _train(spec)
    artifacts = trained.save(str(tmp_path / "ckpt"))
    assert set(artifacts) == {"checkpoint", "config", "signals", "training_state"}
    restored = load_checkpoint(str(tmp_path / "ckpt"))
    assert restored.spec == spec
    images, factors = DATA.sample(12, np.random.default_rng(0))
    np.testing.assert_array_equal(restored.encode(images), trained.encode(images))
    z = trained.encode(images)
    np.testing.assert_array_equal(restored.decode(z), trained.decode(z))
    if model == "cvae":
        np.testing.assert_array_equal(restored.encode(images, factors), trained.encode(images, factors))


def test_zoo_runs_are_recorded_through_run_grid(tmp_path):
    m = get_manager()
    specs = [s for name in ZOO for s in plan_grid(m, [name], {"steps": [8], "batch_size": [16]})]
    execution = _execution(eval_samples=200, figures=False)
    result = run_grid(specs, m, str(tmp_path), execution, metric_names=["reconstruction", "kl", "active_dims", "mig"])
    assert [r["model"] for r in result.records] == ZOO
    for r in result.records:
        assert r["status"] == "ok", (r["model"], r["error"])
        assert math.isfinite(r["metrics"]["reconstruction"]) and 0.0 <= r["metrics"]["mig"] <= 1.0
        assert json.loads(r["spec_json"])["model"] == r["model"]
        with open(tmp_path / r["artifacts"]["signals"]) as fh:
            signals = json.load(fh)["history"]
        assert signals and signals[-1]["step"] == 8
        # the record carries the same signals, one row per name and step
        assert r["signals"] == [
            {"step": p["step"], "name": k, "value": v} for p in signals for k, v in p.items() if k != "step"
        ]
    by_model = {r["model"]: r for r in result.records}
    assert {s["name"] for s in by_model["vq_vae"]["signals"]} >= {"perplexity"}
    assert {s["name"] for s in by_model["beta_tcvae"]["signals"]} >= {"tc"}
    # every model records its KL per latent dimension at each history point; the cvae
    # (constant β) nothing else
    # (VQ-VAE, with no Gaussian posterior, has no KL to record)
    for r in result.records:
        dims = {s["name"] for s in r["signals"] if s["name"].startswith("kl.dim")}
        want = set() if r["model"] == "vq_vae" else {f"kl.dim{d}" for d in range(r["latent_dim"])}
        assert dims == want, r["model"]
    assert {s["name"] for s in by_model["cvae"]["signals"]} == {f"kl.dim{d}" for d in range(by_model["cvae"]["latent_dim"])}
    # ... and SQL reads them back from the Parquet files
    con, skipped = open_runs(str(tmp_path))
    try:
        got = con.execute(
            "SELECT s.value FROM (SELECT unnest(signals) AS s FROM runs WHERE model = ?) "
            "WHERE s.name = 'perplexity' ORDER BY s.step DESC LIMIT 1",
            ["vq_vae"],
        ).fetchall()
    finally:
        con.close()
    want = [s["value"] for s in by_model["vq_vae"]["signals"] if s["name"] == "perplexity"][-1]
    assert skipped == [] and got == [(pytest.approx(want),)]
    vq = result.records[1]
    assert len(vq["kl_per_dim"]) == 10 * 8  # the metrics see z_e: 10 slots x 8 code dimensions
    # 8 steps of 16 images use a few of the 512 codes: the collapse warning is in the record
    assert "vq_vae: codebook collapse" in vq["error"]
