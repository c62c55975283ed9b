"""What a third-party plugin's metrics, datasets and models leave in a run's record: a
metric that raises, returns a bare float, NaN or keys not its own; a dataset whose images
or factors break the dataset protocol; a model's likelihood; each metric's direction and
category carried by the record itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import vaebench
from vaebench.testing import SpecsPlugin
from vaebench.harness.evaluation import score, score_notes
from vaebench.plugins import manager as manager_module
from vaebench.plugins import builtin
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.specs import MetricResult, MetricSpec


def boom(ctx):
    raise RuntimeError("estimator exploded\nsecond line")


def bare(ctx):
    return 0.25


def nan_metric(ctx):
    return {"nan_metric": float("nan"), "nan_metric.extra": 1.0}


def greedy(ctx):
    return MetricResult({"greedy": 2.0, "kl": 99.0, "other": 3.0})


def lowish(ctx):
    return {"lowish": 0.5}


METRICS = [
    MetricSpec(name="boom", description="raises", compute=boom),
    MetricSpec(name="bare", description="a bare float", compute=bare),
    MetricSpec(name="nan_metric", description="NaN", compute=nan_metric),
    MetricSpec(name="greedy", description="keys not its own", compute=greedy),
]




def install(monkeypatch, **specs) -> PluginManager:
    """A fresh manager with the built-ins and one in-process plugin, made the process's."""
    m = PluginManager()
    assert m.register_plugin(builtin, "builtin", package="vaebench", version=vaebench.__version__).status == "ok"
    info = m.register_plugin(SpecsPlugin(**specs), "authored", package="authored-pkg", version="0.1")
    assert info.status == "ok", info.error
    monkeypatch.setattr(manager_module, "_MANAGER", m)
    return m


def _ctx() -> EvaluationContext:
    z = np.random.default_rng(0).normal(size=(50, 3))
    return EvaluationContext(means=z, logvars=np.zeros_like(z), recon_errors=np.ones(50))


def test_score_words_what_a_metric_did_wrong():
    kl = MetricSpec(name="kl", description="kl", compute="vaebench.plugins.metrics.posterior:kl")
    values, params = score(_ctx(), [kl, *METRICS])
    assert "boom" not in values and "estimator exploded" in params["boom"]["error"]
    assert values["bare"] == 0.25  # a bare float is {name: value}
    assert math.isnan(values["nan_metric"]) and values["nan_metric.extra"] == 1.0
    assert values["greedy"] == 2.0 and "other" not in values
    assert values["kl"] != 99.0  # never overwrites another metric's value
    notes = score_notes(params)
    assert notes[0].startswith("metric boom failed: ") and "\n" not in notes[0] and "second line" not in notes[0]
    assert "metric nan_metric returned non-finite values: nan_metric" in notes
    assert any(n.startswith("metric greedy keys refused: kl, other") for n in notes)
    assert len(notes) == 3


TINY_RUN = ["--steps", "8", "--batch-size", "8", "--eval-samples", "200", "--device", "cpu", "--threads", "1",
            "--architecture", "mlp", "--strategy", "sequential"]


def strict_json(text: str):
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` (not JSON)."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_metric_problems_reach_console_show_and_valid_json(monkeypatch, tmp_path, cli):
    install(monkeypatch, metrics=METRICS)
    registry = tmp_path / "reg"
    res = cli("run", "--model", "beta_vae", *TINY_RUN, "--metrics", "kl,boom,bare,nan_metric,greedy",
              "--registry", registry)
    assert res.exit_code == 0, res.output
    line = next(l for l in res.stderr.splitlines() if l.startswith("ok"))
    assert "metric boom failed: " in line and "estimator exploded" in line  # the run stays ok
    (record,) = strict_json(cli("query", "SELECT * FROM runs", "--registry", registry, "--json").stdout)
    assert record["status"] == "ok"
    assert record["metrics"]["bare"] == 0.25 and record["metrics"]["nan_metric"] is None
    assert record["metrics"]["kl"] != 99.0 and "other" not in record["metrics"]
    shown = cli("show", record["run_id"][:8], "--registry", registry)
    assert "metric boom failed" in shown.stdout and "metric greedy keys refused" in shown.stdout
    assert "non-finite" in shown.stdout
    strict_json(cli("show", record["run_id"][:8], "--registry", registry, "--json").stdout)
    strict_json(cli("leaderboard", "--metric", "nan_metric", "--registry", registry, "--json").stdout)


class TinyDataset:
    """A 2-factor 8x8 dataset; ``fault`` breaks one part of the protocol."""

    name = "tiny"
    variant = "test"
    image_shape = (8, 8, 1)

    def __init__(self, fault: str = "") -> None:
        self.fault = fault
        self.factor_names = ("a", "b") if fault != "fewer_names" else ("a",)
        self.factor_sizes = (2, 3) if fault != "fewer_names" else (2,)

    def digest(self) -> str:
        return "tiny-" + self.fault

    def sample_factors(self, n, rng):
        return rng.integers(0, (2, 3), size=(n, 2))

    def observations(self, factors):
        f = np.asarray(factors)
        images = np.zeros((len(f), 8, 8, 1), np.float32)
        images[:, : f[0, 0] + 2, : f[0, 1] + 2] = 1.0
        if self.fault == "no_channel":
            return images[..., 0]
        if self.fault == "uint8_range":
            return images * 255.0
        return images

    def sample(self, n, rng):
        f = self.sample_factors(n, rng)
        images = self.observations(f)
        if self.fault == "extra_column":
            f = np.concatenate([f, f[:, :1]], axis=1)
        return images, f


def load_tiny(path=None, fault=""):
    return TinyDataset(fault)


@pytest.mark.parametrize(("fault", "says"), [
    ("no_channel", "images must be (N, H, W, C), got shape (8, 8, 8) (add the channel axis"),
    ("uint8_range", "images must be in [0, 1], got values in [0, 255] (divide 0..255 images by 255)"),
    ("extra_column", "factors must be (8, 2) (one column per factor name), got shape (8, 3)"),
    ("fewer_names", "the spec declares num_factors=2 but the dataset has 1 factor_names"),
])
def test_a_broken_dataset_is_one_line_exit_2_before_training(monkeypatch, tmp_path, cli, fault, says):
    from vaebench.plugins.specs import DatasetSpec

    spec = DatasetSpec(name="tiny", description="tiny", load=lambda path=None: load_tiny(path, fault), num_factors=2)
    install(monkeypatch, datasets=[spec])
    registry = tmp_path / "reg"
    res = cli("run", "--model", "beta_vae", "--dataset", "tiny", *TINY_RUN, "--metrics", "kl", "--registry", registry)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: dataset 'tiny': ") and says in line
    assert not list(registry.rglob("*.parquet"))  # nothing trained, nothing recorded


# ------------------------------------------------- likelihood, direction and category in records
def build_gauss_vae(spec, image_shape):
    from vaebench.plugins.backends.torch.models import GaussianVAE

    return GaussianVAE(image_shape, spec.latent_dim, spec.architecture, "beta_vae", {"beta": spec.beta})


def spread(ctx):
    """A lower-is-better metric whose value differs between runs."""
    return float(np.abs(ctx.means).mean())


def authored_specs():
    from vaebench.plugins.specs import ModelSpec

    model = ModelSpec(name="gauss_vae", description="declares a Gaussian likelihood (test)",
                      backends={"torch": build_gauss_vae}, hyperparameters=("beta",), defaults={"beta": 1.0},
                      likelihood="gaussian")
    metric = MetricSpec(name="spread", description="mean |z| (test)", compute=spread, direction="lower",
                        category="other")
    return {"models": [model], "metrics": [metric]}


@pytest.fixture(scope="module")
def mixed_registry(tmp_path_factory):
    """Two runs, a Bernoulli and a Gaussian model, scored with a plugin metric that is then uninstalled."""
    from vaebench import api

    registry = tmp_path_factory.mktemp("mixed")
    with pytest.MonkeyPatch.context() as mp:
        m = install(mp, **authored_specs())
        result = api.run_grid(["beta_vae", "gauss_vae"], registry=str(registry), manager=m, steps=8, batch_sizes=8,
                              eval_samples=200, device="cpu", threads=1, architectures="mlp", strategy="sequential",
                              metrics=["kl", "reconstruction", "spread"])
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    return registry, result.records


def test_list_shows_likelihood_and_category(monkeypatch, cli):
    install(monkeypatch, **authored_specs())
    models = {r["name"]: r for r in strict_json(cli("list", "models", "--json").stdout)}
    assert models["gauss_vae"]["likelihood"] == "gaussian" and models["beta_vae"]["likelihood"] == "bernoulli"
    metrics = {r["name"]: r for r in strict_json(cli("list", "metrics", "--json").stdout)}
    assert (metrics["spread"]["category"], metrics["mig"]["category"], metrics["ssim"]["category"],
            metrics["reconstruction"]["category"]) == ("other", "disentanglement", "image_quality", "reconstruction")
    with pytest.raises(ValueError, match="category 'disentanglment' is not one of"):
        MetricSpec(name="typo", description="x", compute="x:y", category="disentanglment")
    with pytest.raises(ValueError, match="likelihood must be a lowercase name"):
        authored_specs()["models"][0].__class__(name="m", description="x", backends={}, likelihood="Gaussian")


def test_records_carry_likelihood_direction_and_category(mixed_registry):
    _, records = mixed_registry
    by_model = {r["model"]: r for r in records}
    assert by_model["gauss_vae"]["likelihood"] == "gaussian" and by_model["beta_vae"]["likelihood"] == "bernoulli"
    for r in records:
        assert dict(r["metric_directions"]) == {"kl": "none", "reconstruction": "lower", "spread": "lower"}
        assert dict(r["metric_categories"]) == {"kl": "other", "reconstruction": "reconstruction", "spread": "other"}


def test_uninstalled_metric_ranks_by_its_recorded_direction(mixed_registry, cli):
    registry, records = mixed_registry  # the process's manager: the built-ins only, no `spread`
    rows = strict_json(cli("leaderboard", "--metric", "spread", "--registry", registry, "--json").stdout)
    means = [r["mean"] for r in rows]
    assert len(means) == 2 and means == sorted(means)  # lower is better: ascending
    out = cli("leaderboard", "--metric", "spread", "--registry", registry).stdout
    assert "↓ lower is better" in out
    res = cli("report", "--metric", "spread", "--out", registry / "rep", "--registry", registry)
    assert res.exit_code == 0, res.output
    from vaebench.harness.report.gather import gather

    groups = dict(gather(registry).groups)
    assert groups["reconstruction"] == ["reconstruction"] and set(groups["other"]) == {"kl", "spread"}
    md = (registry / "rep" / "report.md").read_text()
    assert "spread ↓" in md and "Reconstruction" in md and "Other" in md


def test_reconstruction_is_never_ranked_across_likelihoods(mixed_registry, cli):
    registry, _ = mixed_registry
    res = cli("leaderboard", "--metric", "reconstruction", "--registry", registry, "--json")
    assert "reconstruction is ranked within each likelihood (bernoulli, gaussian)" in res.stderr
    rows = strict_json(res.stdout)
    assert [r["likelihood"] for r in rows] == ["bernoulli", "gaussian"]
    # one run per likelihood: no two rows to tell apart (it paired bernoulli with gaussian)
    assert [r["seeds_needed"] for r in rows] == [None, None]
    text = cli("leaderboard", "--metric", "reconstruction", "--registry", registry)
    assert "seeds needed" not in text.stdout + text.stderr
    mig = strict_json(cli("leaderboard", "--metric", "kl", "--registry", registry, "--json").stdout)
    assert "likelihood" not in mig[0]  # other metrics rank as before
    cmp = strict_json(cli("compare", "model=beta_vae", "model=gauss_vae", "--registry", registry, "--json").stdout)
    row = next(r for r in cmp["metrics"] if r["metric"] == "reconstruction")
    assert row["delta"] is None and row["better"] is None and "bernoulli, gaussian" in row["note"]
    assert next(r for r in cmp["metrics"] if r["metric"] == "kl")["delta"] is not None
    assert next(c for c in cmp["config"] if c["column"] == "likelihood")["differs"]
    # the report ranks it the same way, and says so
    res = cli("report", "--metric", "reconstruction", "--out", registry / "rec", "--registry", registry)
    assert res.exit_code == 0, res.output
    from vaebench.harness.report.gather import gather

    board = gather(registry, metric="reconstruction")
    assert board.board_columns[0] == "likelihood" and [r["likelihood"] for r in board.board] == ["bernoulli", "gaussian"]
    md = (registry / "rec" / "report.md").read_text()
    assert "reconstruction is ranked within each likelihood (bernoulli, gaussian)" in md
    assert gather(registry, metric="kl").board_note == "" and "likelihood" not in gather(registry, metric="kl").board_columns


def test_a_record_without_likelihood_reads_as_bernoulli(mixed_registry, tmp_path):
    import pyarrow.parquet as pq

    from vaebench.registry import query

    registry, records = mixed_registry
    src = next(registry.rglob(f"{records[1]['run_id']}.*.parquet"))
    old = tmp_path / "old"
    (old / src.parent.relative_to(registry)).mkdir(parents=True)
    table = pq.read_table(src)
    pq.write_table(table.drop_columns(["likelihood", "metric_directions", "metric_categories"]),
                   old / src.relative_to(registry))
    con, skipped = query.open_runs(old)
    assert skipped == []
    assert con.sql("SELECT likelihood, metric_directions FROM runs").fetchall() == [("bernoulli", None)]
