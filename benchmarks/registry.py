"""A lab-sized registry: leaderboard over 100,000 records before and after `vaebench registry
compact`, on a local path and on a loopback S3 server; many writers at once; two `vaebench run`
processes racing on one grid.

    python benchmarks/registry.py --records 100000 --s3-records 2000 --out benchmarks/RESULTS.md

Sections (each side by side with its baseline, in the same run):

1. **Scale, local.** ``--records`` synthetic records with realistic contents (22 metric keys,
   metric parameters as JSON, 30 history points, 30 signal points, environment and provenance
   maps; about 300 bytes of Parquet each once compacted) are written as the one-record files
   `run` leaves (``<run_id>.<attempt>.parquet``; written with pyarrow directly, no fsync: the
   fill is not what is measured). Timed: ``query.leaderboard`` (what `vaebench leaderboard`
   runs: list, check, view, rank) over the one-record files; ``compaction.compact``; the same
   leaderboard after. Baseline: the same ``query.rank`` SQL over one plain Parquet file of the
   same rows (no listing, no checks, no attempt rule).
2. **Scale, S3.** A moto server on 127.0.0.1 (``ThreadedMotoServer``): ``--s3-records``
   one-record files put into a bucket, leaderboard before and after compaction; then the local
   registry's compacted parts (all ``--records``) copied into the bucket and ranked there,
   first call (files fetched) and later calls.
3. **Writers.** 8 processes x ``--writer-records`` records each through ``store.write_record``
   into one registry (local, then S3), started together; then ``maintenance.verify``: records
   found, problems (duplicates, corrupt files), lost.
4. **Race.** Two `vaebench run` processes started together on the same 20-point grid (tiny
   runs) into one local registry: attempts recorded per run id (claims: each point once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
from report import emit  # noqa: E402

from vaebench.registry import compaction, location, maintenance, query, scan, store  # noqa: E402
from vaebench.registry.schema import RECORD_SCHEMA  # noqa: E402

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
METRICS = ["mig", "sap", "dci", "dci.informativeness", "dci.completeness", "modularity", "explicitness", "irs",
           "beta_vae_metric", "factor_vae_metric", "reconstruction", "kl", "active_dims", "ssim", "psnr",
           "fd_domain", "kd_domain"] + [f"mig.gap.{f}" for f in ("shape", "scale", "orientation", "posX", "posY")]


def records(n: int, offset: int = 0, seed: int = 0) -> pa.Table:
    """``n`` synthetic records (run ids ``offset`` .. ``offset + n - 1``) as one table."""
    rng = random.Random(seed)
    rows = []
    for i in range(offset, offset + n):
        beta = float(1 + i % 8)
        rows.append(dict(
            schema_version=2, run_id=f"{i:016x}", attempt=store.new_attempt(T0 + dt.timedelta(seconds=i)),
            status="ok" if i % 50 else "diverged", started_at=T0, finished_at=T0 + dt.timedelta(seconds=i),
            model=("beta_vae", "beta_tcvae", "factor_vae")[i % 3], backend="torch",
            dataset=("dsprites", "shapes3d")[i % 2], dataset_variant="procedural", architecture="conv",
            likelihood="bernoulli", beta=beta, latent_dim=10, seed=i % 50, steps=300000, batch_size=64, lr=1e-4,
            spec_json=json.dumps({"model": "beta_vae", "beta": beta, "seed": i % 50, "steps": 300000}),
            config_id=f"{i % 97:012x}", device="cuda", threads=1, strategy="vectorized", concurrent_runs=3,
            steps_done=300000, train_seconds=400.0, eval_seconds=30.0, final_loss=30.0 + rng.random(),
            metrics=[(m, rng.random()) for m in METRICS],
            metric_params=json.dumps({m: {"n": 10000, "bins": 20} for m in METRICS}),
            metric_directions=[(m, "higher") for m in METRICS[:10]], kl_per_dim=[rng.random() for _ in range(10)],
            history=[{"step": s * 10000, "loss": 30.0, "recon": 25.0, "kl": 5.0, "capacity": None} for s in range(30)],
            signals=[{"step": s * 10000, "name": "beta", "value": beta} for s in range(30)],
            environment=[(k, "v" * 12) for k in ("python", "torch", "numpy", "platform", "git_revision", "cpu")],
            provenance=[("vaebench", "vaebench==0.1.0"), ("model", "vaebench==0.1.0")]))
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def fill(root: str, table: pa.Table) -> None:
    """Write each row of ``table`` as a one-record file of ``root`` (local or remote)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    remote = location.is_remote(root)
    fs, base = location.filesystem(root)
    if not remote:
        os.makedirs(f"{base}/runs", exist_ok=True)

    def put(i: int) -> None:
        row = table.slice(i, 1)
        name = store.file_name(row["run_id"][0].as_py(), row["attempt"][0].as_py())
        if remote:
            buf = io.BytesIO()
            pq.write_table(row, buf)
            fs.pipe_file(f"{base}/runs/{name}", buf.getvalue())
        else:
            pq.write_table(row, f"{base}/runs/{name}")

    with ThreadPoolExecutor(16 if remote else 2) as pool:
        list(pool.map(put, range(table.num_rows)))


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def baseline_rank(path: str) -> float:
    """The leaderboard's SQL over one plain Parquet file (no listing, no checks)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.sql(f"CREATE VIEW runs AS SELECT * FROM read_parquet('{path}')")
    t = time.perf_counter()
    query.rank(con, "mig")
    seconds = time.perf_counter() - t
    con.close()
    return seconds


def _writer(root: str, index: int, n: int, start: float, endpoint: str | None) -> None:
    if endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    table = records(n, offset=1_000_000 + index * n, seed=index)
    while time.time() < start:
        time.sleep(0.001)
    for row in store.table_rows(table):
        store.write_record(root, row)


def writers(root: str, procs: int, n: int) -> dict:
    """``procs`` processes x ``n`` records into ``root`` at once; verify afterwards."""
    ctx = mp.get_context("spawn")
    start = time.time() + 3.0
    ps = [ctx.Process(target=_writer, args=(root, i, n, start, os.environ.get("AWS_ENDPOINT_URL")))
          for i in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    seconds = time.time() - start
    reads = scan.read_files(root)
    keys = [k for r in reads for k in r.keys()]
    report = maintenance.verify(root, min_age=0, reads=reads)
    return {"written": procs * n, "seconds": round(seconds, 1), "found": len(keys), "distinct": len(set(keys)),
            "lost": procs * n - len(set(keys)), "duplicated": len(keys) - len(set(keys)),
            "corrupt": sum(not r.usable for r in reads), "problems": len(report.problems),
            "exit_codes": [p.exitcode for p in ps]}


def race(workdir: str, points: int) -> dict:
    """Two `vaebench run` processes on the same grid into one registry; attempts per point."""
    reg = os.path.join(workdir, "race")
    seeds = ",".join(str(s) for s in range(points // 2))
    cmd = [sys.executable, "-m", "vaebench.harness.cli", "run", "--model", "beta_vae", "--betas", "1,4",
           "--seeds", seeds, "--steps", "10", "--batch-size", "16", "--eval-samples", "256", "--architecture", "mlp",
           "--metrics", "kl", "--strategy", "sequential", "--threads", "1", "--registry", reg, "--json"]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - t
    con, _ = query.open_runs(reg, attempts="all")
    attempts = Counter(run_id for (run_id,) in con.sql("SELECT run_id FROM runs").fetchall())
    con.close()
    trained = [len(json.loads(o)) if o.strip() else 0 for o, _ in outs]
    return {"points": points, "seconds": round(seconds, 1), "trained_per_process": trained,
            "recorded_runs": len(attempts), "max_attempts_per_run": max(attempts.values(), default=0),
            "exit_codes": [p.returncode for p in procs]}


def s3_server():
    from moto.server import ThreadedMotoServer
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    location.clear_cache()
    import boto3

    boto3.client("s3").create_bucket(Bucket="lab")
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--s3-records", type=int, default=2_000)
    ap.add_argument("--writer-records", type=int, default=200)
    ap.add_argument("--race-points", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: scale,s3,writers,race")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = tempfile.mkdtemp(prefix="vaebench-registry-bench-")
    lines = [f"## Registry at lab scale (benchmarks/registry.py, {dt.date.today()})", "",
             f"`python benchmarks/registry.py --records {args.records} --s3-records {args.s3_records}` "
             f"on {os.cpu_count()} cores; median of {args.repeats} where repeated.", ""]
    results: dict = {}
    try:
        local = os.path.join(work, "local")
        if "scale" not in skip or "s3" not in skip:
            t = time.perf_counter()
            table = records(args.records)
            print(f"generated {args.records} records in {time.perf_counter() - t:.1f} s", flush=True)
        if "scale" not in skip:
            plain = os.path.join(work, "plain.parquet")
            pq.write_table(table, plain)
            t = time.perf_counter()
            fill(local, table)
            print(f"wrote {args.records} one-record files in {time.perf_counter() - t:.1f} s", flush=True)
            before, _ = timed(lambda: query.leaderboard(local), 1)
            t = time.perf_counter()
            result = compaction.compact(local)
            compact_s = time.perf_counter() - t
            after, board = timed(lambda: query.leaderboard(local), args.repeats)
            base = statistics.median(baseline_rank(plain) for _ in range(args.repeats))
            results["scale"] = dict(records=args.records, before=before, compact=compact_s, parts=len(result.written),
                                    after=after, baseline=base, rows=board.table.num_rows)
            lines += ["| local, N records | leaderboard, one-record files | compact | leaderboard, compacted | "
                      "baseline: rank SQL over one Parquet file | after / baseline |", "|---|---|---|---|---|---|",
                      f"| {args.records:,} | {before:.2f} s | {compact_s:.1f} s ({len(result.written)} parts) | "
                      f"{after:.3f} s | {base:.3f} s | {after / base:.1f}x |", ""]
        if "s3" not in skip:
            server = s3_server()
            try:
                url = "s3://lab/bench"
                fill(url, table.slice(0, args.s3_records))
                before, _ = timed(lambda: query.leaderboard(url), 1)
                t = time.perf_counter()
                compaction.compact(url)
                compact_s = time.perf_counter() - t
                after, _ = timed(lambda: query.leaderboard(url), args.repeats)
                big = "s3://lab/big"
                fs, _ = location.filesystem(big)
                for part in store.compacted_files(local):
                    rel = os.path.relpath(part, local)
                    fs.put(str(part), f"lab/big/{rel}")
                first, _ = timed(lambda: query.leaderboard(big), 1)
                later, board = timed(lambda: query.leaderboard(big), args.repeats)
                results["s3"] = dict(records=args.s3_records, before=before, compact=compact_s, after=after,
                                     big_first=first, big_later=later, big_rows=board.table.num_rows)
                lines += ["| S3 (moto, loopback) | leaderboard, one-record files | compact | leaderboard, compacted |",
                          "|---|---|---|---|",
                          f"| {args.s3_records:,} records | {before:.2f} s | {compact_s:.1f} s | {after:.3f} s |",
                          f"| {args.records:,} records, compacted | | | first call {first:.2f} s, then {later:.3f} s |", ""]
                if "writers" not in skip:
                    results["writers_s3"] = writers("s3://lab/writers", 8, args.writer_records)
            finally:
                server.stop()
        if "writers" not in skip:
            results["writers_local"] = writers(os.path.join(work, "writers"), 8, args.writer_records)
            lines += ["| 8 writers x {n} records | written | found | lost | duplicated | corrupt / problems (verify) | "
                      "seconds |".format(n=args.writer_records), "|---|---|---|---|---|---|---|"]
            for name in ("writers_local", "writers_s3"):
                if name in results:
                    w = results[name]
                    lines.append(f"| {name.split('_')[1]} | {w['written']} | {w['found']} | {w['lost']} | "
                                 f"{w['duplicated']} | {w['corrupt']} / {w['problems']} | {w['seconds']} |")
            lines.append("")
        if "race" not in skip:
            r = race(work, args.race_points)
            results["race"] = r
            lines += [f"Race: two `vaebench run` processes on one {r['points']}-point grid: recorded runs "
                      f"{r['recorded_runs']}, most attempts of one run {r['max_attempts_per_run']} (1 = each point "
                      f"trained once), trained per process {r['trained_per_process']}, {r['seconds']} s, exit codes "
                      f"{r['exit_codes']}.", ""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines.append("```json\n" + json.dumps(results, indent=1, default=str) + "\n```")
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
