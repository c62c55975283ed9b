"""Harness tax on one run: `vaebench run` (progress bar and recording on) vs the plain loop.

    python benchmarks/single_run.py --steps 400 --repeats 3

Alternates the baseline loop (benchmarks/baseline_loop.py) and a one-point
`vaebench run` in the same process, same model, batch 64 and thread count, and
prints training images/s for each and their ratio (vaebench / baseline; ≥ 1.0
means no tax). vaebench's figure is the record's `images_per_second`: training
only (data rendering included), evaluation excluded; the baseline excludes its
data preparation. Both run with the heap setting vaebench applies on the CPU
(see main); benchmarks/allocator.py measures that setting on its own.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from typer.testing import CliRunner

import baseline_loop
from vaebench.harness.cli import app
from vaebench.plugins.backends.allocator import retain_freed_memory


def vaebench_images_per_second(steps: int, threads: int) -> float:
    import json

    with tempfile.TemporaryDirectory() as registry:
        result = CliRunner().invoke(
            app,
            ["run", "--model", "beta_vae", "--betas", "4", "--steps", str(steps), "--device", "cpu",
             "--threads", str(threads), "--eval-samples", "500", "--metrics", "kl", "--registry", registry, "--json"],
            catch_exceptions=False,
        )
        (record,) = json.loads(result.stdout)
        return record["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both \\[default: all cores]")
    args = parser.parse_args()
    # vaebench's first run raises glibc's heap thresholds for the whole process, and
    # that cannot be undone; applying it up front keeps every baseline pair alike.
    # Its own gain is measured by benchmarks/allocator.py (one process per side).
    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    data = baseline_loop.make_data()
    base, ours = [], []
    for _ in range(args.repeats):
        base.append(baseline_loop.train(args.steps, data=data))
        ours.append(vaebench_images_per_second(args.steps, threads))
    b, o = statistics.median(base), statistics.median(ours)
    # Each pair ran back to back, so the per-pair ratio is the least disturbed by other load.
    ratios = [v / w for v, w in zip(ours, base)]
    print(f"threads={threads} steps={args.steps} repeats={args.repeats}")
    print(f"baseline loop   {b:8.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in base)})")
    print(f"vaebench run    {o:8.0f} images/s  (runs: {', '.join(f'{v:.0f}' for v in ours)})")
    print(f"ratio vaebench/baseline: median of pairs {statistics.median(ratios):.2f} "
          f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
