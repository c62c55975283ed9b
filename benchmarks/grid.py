"""An 8-point β grid: the plain baseline loop run 8 times vs `vaebench run` with each strategy.

    python benchmarks/grid.py --steps 300 --out benchmarks/RESULTS.md
    python benchmarks/grid.py --workers-sizes 2,3,5 --steps 300 --out benchmarks/RESULTS.md

The second form compares, for grids of each size, the worker layout of
``harness/workers.plan_workers`` with the old one (one worker per core: the last runs of
an odd grid train alone while a core idles; ``VAEBENCH_WORKERS`` = cores), alternately,
end to end, on the processes strategy.

(a) the baseline (benchmarks/baseline_loop.py) trains the 8 models one after another
in this process, torch on all cores (its default); (b) `vaebench run --betas
1,...,8 --strategy S` runs in a fresh process for each strategy S, progress bar,
records, checkpoints and figures on, and is timed end to end (start-up, training,
evaluation, recording). Grid images/s = 8 × steps × 64 / wall seconds; the ratio is
against (a) measured in the same invocation. The baseline's figure counts training
only (no start-up, no evaluation), so the ratios are conservative for vaebench.

For each strategy the records also say where the time went: training (the records'
``train_seconds``; for concurrent runs the span of the grid's training), evaluation
(``eval_seconds``) and the rest (process start-up, checkpoints, figures, records).

``--device cuda`` runs (b) on the GPU (the baseline loop stays on the CPU; ``--no-baseline``
leaves it out). :func:`measure` is the same measurement in this process (no start-up),
for any grid of specs; ``benchmarks/gpu_check.py`` uses it on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import torch

sys.path.insert(0, os.path.dirname(__file__))
import baseline_loop  # noqa: E402
from report import emit  # noqa: E402

BETAS = [1, 2, 3, 4, 5, 6, 7, 8]


def baseline(steps: int) -> dict:
    data = baseline_loop.make_data()
    start = time.perf_counter()
    for beta in BETAS:
        baseline_loop.train(steps, beta=float(beta), seed=beta, data=data)
    wall = time.perf_counter() - start
    return {"wall": wall, "train": wall, "eval": 0.0}


def summarise(records: list[dict], wall: float) -> dict:
    """Where a grid's ``wall`` seconds went, from its records: ``train`` (the records'
    ``train_seconds``; for runs that trained at once, the span of the grid's training),
    ``eval`` (``eval_seconds``, likewise) and the rest (start-up, checkpoints, figures, records)."""
    assert records and all(r["status"] == "ok" for r in records), [(r["run_id"], r["status"], r["error"])
                                                                   for r in records]
    train = sum(r["train_seconds"] for r in records)
    evaluate = sum(r["eval_seconds"] for r in records)
    concurrent = records[0]["concurrent_runs"]
    if concurrent > 1:  # runs overlapped: count the grid's span, not the sum
        train, evaluate = train / concurrent, evaluate / concurrent
    return {"wall": wall, "train": train, "eval": evaluate, "threads": records[0]["threads"],
            "concurrent": concurrent}


def layouts(sizes: list[int], steps: int, eval_samples: int, metrics: str, repeats: int) -> str:
    """Grids of ``sizes`` points, planned layout vs one worker per core, alternately."""
    cores = len(os.sched_getaffinity(0))
    lines = ["| grid | old: workers × threads | old wall s | new: workers × threads | new wall s | speed-up |",
             "|---:|---|---:|---|---:|---:|"]
    for size in sizes:
        betas = list(range(1, size + 1))
        walls: dict[str, list[float]] = {"old": [], "new": []}
        shape: dict[str, str] = {}
        for repeat in range(repeats):
            for variant in (("old", "new") if repeat % 2 == 0 else ("new", "old")):
                env = {k: v for k, v in os.environ.items() if k != "VAEBENCH_WORKERS"}
                if variant == "old":
                    env["VAEBENCH_WORKERS"] = str(cores)
                with tempfile.TemporaryDirectory() as registry:
                    cmd = [sys.executable, "-m", "vaebench.harness.cli", "run", "--model", "beta_vae", "--betas",
                           ",".join(map(str, betas)), "--steps", str(steps), "--device", "cpu", "--strategy",
                           "processes", "--eval-samples", str(eval_samples), "--metrics", metrics,
                           "--registry", registry, "--json"]
                    start = time.perf_counter()
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    walls[variant].append(time.perf_counter() - start)
                    if proc.returncode != 0:
                        raise SystemExit(f"{variant}: vaebench run failed:\n{proc.stderr[-2000:]}")
                    records = json.loads(proc.stdout)
                shape[variant] = f"{records[0]['concurrent_runs']} × {records[0]['threads']}"
        old, new = (sorted(walls[v])[len(walls[v]) // 2] for v in ("old", "new"))
        ratios = sorted(o / n for o, n in zip(walls["old"], walls["new"]))
        lines.append(f"| {size} | {shape['old']} | {old:.1f} | {shape['new']} | {new:.1f} | "
                     f"{old / new:.2f}× ({', '.join(f'{r:.2f}' for r in ratios)}) |")
    load = os.getloadavg()
    return "\n".join([
        f"`python benchmarks/grid.py --workers-sizes {','.join(map(str, sizes))} --steps {steps} --eval-samples "
        f"{eval_samples} --metrics {metrics} --repeats {repeats}` ({cores} cores; load average at the end "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}): wall s = median of {repeats} alternating runs; "
        "speed-up = old / new medians (per-repeat ratios).", "", *lines, ""])


def vaebench(strategy: str, steps: int, eval_samples: int, metrics: str, device: str = "cpu") -> dict:
    with tempfile.TemporaryDirectory() as registry:
        cmd = [sys.executable, "-m", "vaebench.harness.cli", "run", "--model", "beta_vae",
               "--betas", ",".join(map(str, BETAS)), "--steps", str(steps), "--device", device,
               "--strategy", strategy, "--eval-samples", str(eval_samples), "--metrics", metrics,
               "--registry", registry, "--json"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{strategy}: vaebench run failed:\n{proc.stderr[-2000:]}")
        records = json.loads(proc.stdout)
    assert len(records) == len(BETAS), records
    return summarise(records, wall)


def measure(strategy: str, specs: list, *, device: str = "cpu", eval_samples: int = 1000,
            metrics: str = "kl,reconstruction,mig", figures: bool = True, threads: int | None = None) -> dict:
    """The grid ``specs`` (``vaebench.plan_grid``) run end to end with ``strategy`` in this
    process (``harness.runner.run_grid``: training, evaluation, checkpoints, records into
    a temporary registry): :func:`summarise` of its records, plus ``strategy`` (what
    ``auto`` resolved to), ``runs``, ``images`` (steps × batch summed over the runs) and
    the records themselves (``records``)."""
    from vaebench.harness.runner import run_grid
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.manager import get_manager

    execution = ExecutionOptions(device=device, eval_samples=eval_samples, figures=figures, threads=threads)
    with tempfile.TemporaryDirectory() as registry:
        start = time.perf_counter()
        result = run_grid(specs, get_manager(), registry, execution, metrics.split(","), strategy=strategy)
        wall = time.perf_counter() - start
    records = result.records
    return {**summarise(records, wall), "strategy": result.strategy, "runs": len(records),
            "images": sum(r["steps_done"] * r["batch_size"] for r in records), "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--strategies", default="sequential,processes,vectorized")
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--metrics", default="kl,reconstruction,mig", help="metrics each run computes")
    parser.add_argument("--device", default="cpu", help="device of the vaebench runs (b): cpu, cuda, ...")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the baseline loop (a)")
    parser.add_argument("--out", default=None, help="append a section to this Markdown file")
    parser.add_argument("--workers-sizes", default=None,
                        help="compare worker layouts on grids of these sizes instead (e.g. 2,3,5)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.workers_sizes:
        emit(layouts([int(n) for n in args.workers_sizes.split(",")], args.steps, args.eval_samples, args.metrics,
                     args.repeats), args.out)
        return
    images = len(BETAS) * args.steps * 64
    started = datetime.now(timezone.utc)
    rows = [] if args.no_baseline else [("(a) baseline loop × 8, sequential", baseline(args.steps))]
    for strategy in args.strategies.split(","):
        rows.append((f"(b) vaebench --strategy {strategy}", vaebench(strategy, args.steps, args.eval_samples,
                                                                       args.metrics, args.device)))
    base = rows[0][1]["wall"]
    lines = [
        "| grid of 8 | wall s | grid images/s | vs first row | train s | evaluate s | other s | threads × runs at once |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows:
        other = r["wall"] - r["train"] - r["eval"]
        layout = f"{r.get('threads') or torch.get_num_threads()} × {r.get('concurrent', 1)}"
        lines.append(f"| {name} | {r['wall']:.1f} | {images / r['wall']:.0f} | {base / r['wall']:.2f}× | "
                     f"{r['train']:.1f} | {r['eval']:.1f} | {other:.1f} | {layout} |")
    load = os.getloadavg()
    text = "\n".join([
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `python benchmarks/grid.py --steps {args.steps} "
        f"--eval-samples {args.eval_samples} --metrics {args.metrics} --device {args.device}"
        f"{' --no-baseline' if args.no_baseline else ''}` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"load average at the end {load[0]:.2f}): β = {', '.join(map(str, BETAS))}, {args.steps} steps × batch 64 "
        f"each ({images:,} images in all).",
        "",
        *lines,
        "",
    ])
    emit(text, args.out)


if __name__ == "__main__":
    main()
