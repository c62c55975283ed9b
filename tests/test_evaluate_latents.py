"""Scoring representations computed elsewhere: files in, named floats out."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import mutual_info_score

import vaebench


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    factors = rng.integers(0, 5, size=(n, 3))
    latents = np.c_[factors + rng.normal(0, 0.1, factors.shape), rng.normal(size=(n, 2))]
    return latents, factors


def _independent_mig(latents, factors, bins=20):
    """MIG straight from its definition, pair by pair with scikit-learn."""
    codes = np.stack([np.digitize(c, np.histogram(c, bins)[1][:-1]) for c in latents.T], axis=1)
    gaps = []
    for k in range(factors.shape[1]):
        mi = sorted((mutual_info_score(factors[:, k], codes[:, d]) for d in range(codes.shape[1])), reverse=True)
        gaps.append((mi[0] - mi[1]) / mutual_info_score(factors[:, k], factors[:, k]))
    return float(np.mean(gaps))


def test_python_api_scores_any_latents():
    z, f = _data()
    result = vaebench.evaluate_latents(z, f, metrics=["mig", "sap"], factor_names=["a", "b", "c"])
    assert result["errors"] == {}
    assert result["metrics"]["mig"] == pytest.approx(_independent_mig(z, f), abs=1e-12)
    assert set(result["metrics"]) >= {"mig.gap.a", "sap", "sap.continuous"}
    assert result["params"]["mig"]["n"] == 3000 and result["params"]["mig"]["bins"] == 20
    assert result["params"]["sap"]["train_fraction"] == pytest.approx(2 / 3)
    split = vaebench.evaluate_latents(z, f, metrics=["sap"], train_fraction=0.5)
    assert split["params"]["sap"]["train_fraction"] == 0.5


def test_cli_reads_npy_npz_and_parquet(cli, tmp_path):
    z, f = _data()
    np.save(tmp_path / "z.npy", z)
    np.savez(tmp_path / "f.npz", factors=f, other=np.zeros(3))
    pq.write_table(pa.table({"shape": f[:, 0], "scale": f[:, 1], "pos": f[:, 2]}), tmp_path / "f.parquet")
    pq.write_table(pa.table({"z": pa.array(z.tolist(), type=pa.list_(pa.float64()))}), tmp_path / "z.parquet")
    expected = _independent_mig(z, f)
    for zf, ff in (("z.npy", "f.npz"), ("z.parquet", "f.parquet")):
        out = cli("evaluate-latents", tmp_path / zf, tmp_path / ff, "--metrics", "mig", "--json")
        assert out.exit_code == 0, out.output
        data = json.loads(out.stdout)
        assert data["metrics"]["mig"] == pytest.approx(expected, abs=1e-12)
        assert data["n"] == 3000 and data["latent_dim"] == 5
    # Parquet column names name the factors.
    assert "mig.gap.shape" in data["metrics"]
    table = cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f.npz")
    assert table.exit_code == 0 and "mig" in table.stdout and "explicitness" in table.stdout


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    return result.stderr


def test_cli_bad_inputs_are_clear_errors(cli, tmp_path):
    z, f = _data(300)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "f.npy", f)
    np.save(tmp_path / "f_short.npy", f[:200])
    np.save(tmp_path / "z_nan.npy", np.where(np.arange(z.size).reshape(z.shape) == 7, np.nan, z))
    np.save(tmp_path / "z_1d.npy", z[:, :1])
    np.save(tmp_path / "f_float.npy", f + 0.5)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "300 rows but factors have 200" in _error(cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f_short.npy"))
    assert "NaN or inf" in _error(cli("evaluate-latents", tmp_path / "z_nan.npy", tmp_path / "f.npy"))
    assert "integer" in _error(cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f_float.npy"))
    assert "not found" in _error(cli("evaluate-latents", tmp_path / "none.npy", tmp_path / "f.npy"))
    # Never unpickles: an object array is refused, not loaded.
    assert "cannot read latents" in _error(cli("evaluate-latents", tmp_path / "obj.npy", tmp_path / "f.npy"))
    message = _error(cli("evaluate-latents", tmp_path / "z_1d.npy", tmp_path / "f.npy", "--metrics", "mig"))
    assert "error: mig: need at least 2 latent codes" in message and "Traceback" not in message
    assert "unknown metric 'nope'" in _error(cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f.npy", "--metrics", "nope"))
    assert "needs posterior" in _error(
        cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f.npy", "--metrics", "reconstruction")
    )
    assert "train_fraction" in _error(
        cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f.npy", "--train-fraction", "1.5")
    )


def test_constant_factor_is_excluded_not_an_error():
    z, f = _data(2000)
    f[:, 1] = 3
    result = vaebench.evaluate_latents(z, f, metrics=["mig"])
    assert result["errors"] == {}
    assert result["params"]["mig"]["excluded_factors"] == ["factor1"]
    assert "mig.gap.factor1" not in result["metrics"]


def test_cli_table_says_which_constant_factors_were_left_out(cli, tmp_path):
    z, f = _data(2000)
    f[:, 2] = 0
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "f.npy", f)
    out = cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f.npy", "--metrics", "mig",
              "--factor-names", "shape,scale,colour")
    assert out.exit_code == 0, out.output
    assert "mig left out colour" in out.stdout
    z, f = _data(2000)
    np.save(tmp_path / "f_varied.npy", f)
    varied = cli("evaluate-latents", tmp_path / "z.npy", tmp_path / "f_varied.npy", "--metrics", "mig")
    assert varied.exit_code == 0 and "left out" not in varied.stdout
