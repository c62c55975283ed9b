"""The same 4-point grid through the `local`, `slurm` and `ray` executors on this machine.

    python benchmarks/cluster.py --steps 200 --out benchmarks/RESULTS.md

Each executor runs the same grid (β = 1, 2, 3, 4; the mlp β-VAE on dSprites, batch 64,
``--steps``, MIG only, 2,048 held-out observations) into a fresh registry, timed end to end
from the call to the last record (``slurm``: submitted with ``--detach``, then the registry is
polled every 0.25 s, as `vaebench status` does; ``ray``: a local Ray cluster, started inside
the timed call, as `vaebench run --executor ray` does without ``--ray-address``;
``ray-running``: a cluster started before with ``ray start --head`` (2 CPUs), reached with
``--ray-address auto``, as on a lab's cluster).

**Overhead per point** is what the executor adds before a point's training can start: the
gap between the moment a slot for the point was free and the point's ``started_at`` (the
moment its run began in the worker: after the scheduler started the task, Python and
vaebench were imported, the plugins loaded and the point claimed). Slots: the grid's
concurrency (this machine's 2 cores: `local`'s processes strategy runs 2 workers, Slurm 2
one-CPU array tasks, Ray 2 one-CPU tasks). The first two points' slots are free at
submission; a later point's slot is free when the point before it in that slot finished
(``finished_at``), so queueing behind another point is not counted as overhead. **To the first step** adds the run's own time before training, which the record does not
split off: ``finished_at − started_at − train_seconds − eval_seconds`` is its set-up (dataset
and model, in the worker) plus its write-out (figures, checkpoint, record), so overhead +
that is an upper bound on the time from a free slot to the first training step (the
issue's "submission to first training step"). The baseline is `local` (the processes
strategy) in the same invocation.
Needs a running Slurm (``.ci/slurm.sh``) and ray installed; a missing engine is reported and
skipped.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(__file__))
from report import emit  # noqa: E402

BETAS = [1.0, 2.0, 3.0, 4.0]
SLOTS = 2


def overheads(records: list[dict], submitted: datetime, slots: int = SLOTS) -> list[float]:
    """Seconds each point waited beyond what ``slots`` concurrent slots forced (see the module)."""
    free = [submitted.timestamp()] * slots
    heapq.heapify(free)
    out = []
    for r in sorted(records, key=lambda r: r["started_at"]):
        slot = heapq.heappop(free)
        out.append(max(0.0, r["started_at"].timestamp() - slot))
        heapq.heappush(free, r["finished_at"].timestamp())
    return out


def run(executor: str, steps: int, options: dict) -> dict:
    """One grid through ``executor``; its wall seconds, records and per-point overhead."""
    from vaebench import api
    from vaebench.registry import store

    registry = tempfile.mkdtemp(prefix=f"vaebench-cluster-{executor}-")
    try:
        submitted = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        result = api.run_grid(
            "beta_vae", registry=registry, betas=BETAS, steps=[steps], architectures=["mlp"], metrics=["mig"],
            eval_samples=2048, strategy="processes" if executor == "local" else "auto", executor=executor,
            executor_options=options,
        )
        run_ids = [t for task in result.tasks for t in task.run_ids] or [r["run_id"] for r in result.records]
        records: dict[str, dict] = {r["run_id"]: r for r in result.records}
        deadline = time.monotonic() + 1800
        while len(records) < len(BETAS) and time.monotonic() < deadline:
            for run_id in run_ids:
                if run_id not in records:
                    try:
                        records[run_id] = store.read_attempts(registry, run_id)[-1]
                    except store.RegistryError:  # not recorded yet
                        pass
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        done = sorted(records.values(), key=lambda r: r["started_at"])  # overheads' own order
        over = overheads(done, submitted)
        own = [(r["finished_at"] - r["started_at"]).total_seconds() - (r["train_seconds"] or 0.0)
               - (r["eval_seconds"] or 0.0) for r in done]
        first = [o + w for o, w in zip(over, own)]
        return {"executor": executor, "wall": wall, "points": len(done), "ok": sum(r["status"] == "ok" for r in done),
                "overhead_mean": statistics.mean(over) if over else None, "overhead_max": max(over, default=None),
                "outside_mean": statistics.mean(own) if own else None,
                "first_step_mean": statistics.mean(first) if first else None,
                "train_mean": statistics.mean(r["train_seconds"] or 0.0 for r in done) if done else None}
    finally:
        shutil.rmtree(registry, ignore_errors=True)


def ray_cluster(start: bool) -> None:
    """``ray start --head`` (2 CPUs, no dashboard) or ``ray stop``: the running-cluster case."""
    import subprocess

    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    command = ([ray, "start", "--head", "--num-cpus", str(SLOTS), "--include-dashboard=false", "--disable-usage-stats"]
               if start else [ray, "stop", "--force"])
    subprocess.run(command, check=start, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--executors", default="local,slurm,ray,ray-running",
                        help="ray: a local cluster started by the call (inside the timing); ray-running: "
                             "one started before (ray start --head), reached with --ray-address auto")
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--json", dest="json_out", help="Also write the figures as JSON here.")
    parser.add_argument("--out", help="Append the Markdown section to this file.")
    args = parser.parse_args()
    options = {"local": {}, "slurm": {"partition": args.partition, "mem": "2G", "cpus_per_task": 1},
               "ray": {"num_cpus": 1}, "ray-running": {"num_cpus": 1, "ray_address": "auto"}}
    rows, skipped = [], []
    for name in args.executors.split(","):
        try:
            if name == "ray-running":
                ray_cluster(start=True)
            try:
                rows.append(run(name.split("-")[0], args.steps, options[name]) | {"executor": name})
            finally:
                if name == "ray-running":
                    ray_cluster(start=False)
        except (ValueError, ImportError, OSError) as exc:
            skipped.append(f"{name}: {str(exc).splitlines()[0]}")
        print(json.dumps(rows[-1] if rows else {}, default=str), flush=True)
    base = next((r for r in rows if r["executor"] == "local"), None)
    lines = [
        f"## Executors: one 4-point grid through local, slurm and ray (`benchmarks/cluster.py`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d})", "",
        f"{platform.node()}, {os.cpu_count()} CPUs; mlp β-VAE on dSprites, β = 1..4, {args.steps} steps × batch 64, "
        "MIG on 2,048 observations; 2 slots (2 worker processes / 2 one-CPU Slurm array tasks / 2 one-CPU Ray tasks). "
        "Overhead per point: from a free slot to the run's start in its worker; set-up + write-out: the run's "
        "own time outside training and scoring; to the first step ≤ their sum (the module docstring).", "",
        "| executor | end to end (s) | vs local | overhead per point, mean (s) | max (s) | set-up + write-out (s) "
        "| to first step ≤ (s) | train per point (s) | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['wall'] / base['wall']:.2f}×" if base else "-"
        lines.append(f"| {r['executor']} | {r['wall']:.1f} | {ratio} | {r['overhead_mean']:.2f} | "
                     f"{r['overhead_max']:.2f} | {r['outside_mean']:.2f} | {r['first_step_mean']:.2f} | "
                     f"{r['train_mean']:.1f} | {r['ok']}/{len(BETAS)} |")
    if skipped:
        lines += ["", "Not measured: " + "; ".join(skipped)]
    emit("\n".join(lines) + "\n", args.out)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"steps": args.steps, "rows": rows, "skipped": skipped}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
