"""How `vaebench leaderboard` scales with the number of one-row record files, against the
same rows in one Parquet file (what a compaction command would leave).

    python benchmarks/registry_scale.py --sizes 100,1000,5000 --repeats 3 --out benchmarks/RESULTS.md

For each size N: one real record (a 20-step run trained here) is written N times with
new run ids, seeds and β values through ``store.write_record`` (the registry as `run`
leaves it); the records' contents do not matter for timing, only their count and shape.
Then, median of ``--repeats``, alternating:

(a) ``query.leaderboard(root)``: what `vaebench leaderboard` runs — list the files, open
    DuckDB's view over them, rank;
(b) the same ``query.rank`` SQL over one Parquet file holding the same N rows.

The ratio (a) / (b) is the cost of one file per run at that size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
from report import emit  # noqa: E402

from vaebench.plugins.runspec import RunSpec  # noqa: E402
from vaebench.harness.runner import run_grid  # noqa: E402
from vaebench.plugins.backends.base import ExecutionOptions  # noqa: E402
from vaebench.plugins.manager import get_manager  # noqa: E402
from vaebench.registry import query, store  # noqa: E402
from vaebench.registry.schema import RECORD_SCHEMA  # noqa: E402


def _template(workdir: str) -> dict:
    spec = RunSpec(model="beta_vae", beta=4.0, architecture="mlp", steps=20, batch_size=16)
    (record,) = run_grid([spec], get_manager(), os.path.join(workdir, "template"),
                         ExecutionOptions(device="cpu", threads=1, eval_samples=400, figures=False),
                         ["mig", "kl", "reconstruction"]).records
    return record


def _fill(root: str, template: dict, n: int) -> None:
    for i in range(n):
        # MIG set per group (β) so that the ranking is well defined and can be compared.
        metrics = {**template["metrics"], "mig": 0.05 * (1 + i % 8) + 1e-6 * i}
        store.write_record(root, {**template, "run_id": f"{i:016x}", "seed": i % 5, "beta": float(1 + i % 8),
                                  "config_id": f"{i % 8:012x}", "metrics": metrics})


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    workdir = tempfile.mkdtemp(prefix="vaebench-registry-scale-")
    rows = ["| records | (a) one file per run, s | (b) one file, s | (a) / (b) |", "|---:|---:|---:|---:|"]
    try:
        template = _template(workdir)
        for n in (int(s) for s in args.sizes.split(",")):
            root = os.path.join(workdir, f"reg{n}")
            _fill(root, template, n)
            compacted = os.path.join(workdir, f"all{n}.parquet")
            tables = [pq.read_table(p) for p in store.run_files(root)]
            pq.write_table(pa.concat_tables(tables, promote_options="default"), compacted)

            def one_file() -> None:
                con = duckdb.connect(":memory:")
                try:
                    con.from_arrow(RECORD_SCHEMA.empty_table()).to_table(query._EMPTY_TABLE)
                    query._build_view(con, [compacted])
                    query.rank(con, "mig")
                finally:
                    con.close()

            expected = query.leaderboard(root, "mig").table
            con = duckdb.connect(":memory:")
            con.from_arrow(RECORD_SCHEMA.empty_table()).to_table(query._EMPTY_TABLE)
            query._build_view(con, [compacted])
            same = [(r["config_id"], r["n"], r["seeds"], round(r["mean"], 9)) for r in query.rank(con, "mig").to_pylist()]
            assert same == [(r["config_id"], r["n"], r["seeds"], round(r["mean"], 9)) for r in expected.to_pylist()]
            con.close()
            a, b = [], []
            for _ in range(args.repeats):
                a.append(_timed(lambda: query.leaderboard(root, "mig")))
                b.append(_timed(one_file))
            ma, mb = statistics.median(a), statistics.median(b)
            rows.append(f"| {n:,} | {ma:.3f} | {mb:.3f} | {ma / mb:.1f}× |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()[0]
    emit("\n".join([
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `python benchmarks/registry_scale.py --sizes {args.sizes} "
        f"--repeats {args.repeats}` (duckdb {duckdb.__version__}, pyarrow {pa.__version__}, {os.cpu_count()} cores, "
        f"load average at the end {load:.2f}); median of {args.repeats} alternating repeats.",
        "",
        *rows,
    ]), args.out)


if __name__ == "__main__":
    main()
