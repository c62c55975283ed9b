"""What keeping freed memory in the heap (glibc mallopt) gives CPU training, per backend.

    python benchmarks/allocator.py --steps 300 --repeats 3 --out benchmarks/RESULTS.md

vaebench's own training call (``TorchBackend().train`` / ``JaxBackend().train``,
conv β-VAE, β = 4, batch 64, all cores) runs in a fresh child process per
measurement, alternately with glibc's default heap thresholds (the backend's
``retain_freed_memory`` call replaced by a no-op) and as vaebench runs it. The
setting is process-wide and cannot be undone, hence one process per measurement.
A 3-step run first warms up (and compiles, for JAX); the timed run follows in the
same process. Each row gives training images/s, system CPU seconds and minor page
faults of the timed run (``getrusage``), median over the repeats, and the median
over repeats of the ratio of images/s to the default side in the same repeat.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import emit  # noqa: E402


def child(backend_name: str, retain: bool, steps: int) -> None:
    from vaebench.plugins.runspec import RunSpec
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.datasets.dsprites import ProceduralDSprites

    module = importlib.import_module(f"vaebench.plugins.backends.{backend_name}.backend")
    if not retain:
        module.retain_freed_memory = lambda: False
    backend = module.TorchBackend() if backend_name == "torch" else module.JaxBackend()
    data = ProceduralDSprites()
    options = ExecutionOptions(device="cpu", progress_every=10_000)
    spec = dict(model="beta_vae", beta=4.0, batch_size=64, backend=backend_name)
    backend.train(RunSpec(steps=3, **spec), data, options)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    trained = backend.train(RunSpec(steps=steps, **spec), data, options)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "ips": steps * 64 / trained.train_seconds,
        "wall_s": time.perf_counter() - start,
        "sys_s": after.ru_stime - before.ru_stime,
        "minflt": after.ru_minflt - before.ru_minflt,
    }))


def measure(backend: str, retain: bool, steps: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", backend, "--retain" if retain else "--default", "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="torch,jax")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--retain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.retain, args.steps)
        return
    started = datetime.now(timezone.utc)
    rows = [
        "| backend | heap | images/s | system s | minor page faults | vs default |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for backend in args.backends.split(","):
        default, retained = [], []
        for _ in range(args.repeats):
            default.append(measure(backend, False, args.steps))
            retained.append(measure(backend, True, args.steps))
        ratio = statistics.median(r["ips"] / d["ips"] for d, r in zip(default, retained))
        for name, runs, vs in (("glibc default", default, 1.0), ("retain_freed_memory", retained, ratio)):
            rows.append(
                f"| {backend} | {name} | {statistics.median(r['ips'] for r in runs):.0f} | "
                f"{statistics.median(r['sys_s'] for r in runs):.1f} | "
                f"{statistics.median(r['minflt'] for r in runs):,.0f} | {vs:.2f}× |"
            )
    load = os.getloadavg()
    text = "\n".join([
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `python benchmarks/allocator.py --steps {args.steps} "
        f"--repeats {args.repeats} --backends {args.backends}` ({os.cpu_count()} cores, load average at the end "
        f"{load[0]:.2f}); {args.steps} timed steps per child process, median of {args.repeats} alternating repeats.",
        "",
        *rows,
        "",
    ])
    emit(text, args.out)


if __name__ == "__main__":
    main()
