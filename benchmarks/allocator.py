"""What keeping freed memory in the heap (glibc mallopt) gives CPU training.

    python benchmarks/allocator.py --steps 600 --repeats 3 --threads 2 --out benchmarks/RESULTS.md

The plain β-VAE loop of benchmarks/baseline_loop.py (batch 64, Adam, denormals
flushed as vaebench trains) runs in a fresh child process per measurement,
alternately with glibc's default thresholds and after
``vaebench.plugins.backends.allocator.retain_freed_memory()`` — the setting is
process-wide and cannot be undone, hence one process per measurement. Each row
gives training images/s, system CPU seconds and minor page faults (from
``getrusage``), median over the repeats, and the ratio of images/s to the
default in the same repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))


def child(retain: bool, steps: int, threads: int) -> None:
    if retain:
        from vaebench.plugins.backends.allocator import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("retain_freed_memory() did not apply (not glibc?)")
    import contextlib
    import io

    import torch

    sys.path.insert(0, HERE)
    import baseline_loop

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    data = baseline_loop.make_data(5000)
    before = resource.getrusage(resource.RUSAGE_SELF)
    with contextlib.redirect_stdout(io.StringIO()):  # the loop prints its loss every 100 steps
        ips = baseline_loop.train(steps, data=data)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "ips": ips,
        "sys_s": after.ru_stime - before.ru_stime,
        "user_s": after.ru_utime - before.ru_utime,
        "minflt": after.ru_minflt - before.ru_minflt,
    }))


def measure(retain: bool, steps: int, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "on" if retain else "off", "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child == "on", args.steps, args.threads)
        return
    started = datetime.now(timezone.utc)
    results: dict[str, list[dict[str, float]]] = {"glibc default": [], "retain_freed_memory": []}
    for _ in range(args.repeats):
        results["glibc default"].append(measure(False, args.steps, args.threads))
        results["retain_freed_memory"].append(measure(True, args.steps, args.threads))
    ratios = [r["ips"] / d["ips"] for d, r in zip(results["glibc default"], results["retain_freed_memory"])]
    rows = ["| heap | images/s | system s | minor page faults | vs default |", "|---|---:|---:|---:|---:|"]
    for name, runs in results.items():
        ratio = 1.0 if name == "glibc default" else statistics.median(ratios)
        rows.append(
            f"| {name} | {statistics.median(r['ips'] for r in runs):.0f} | "
            f"{statistics.median(r['sys_s'] for r in runs):.1f} | "
            f"{statistics.median(r['minflt'] for r in runs):,.0f} | {ratio:.2f}× |"
        )
    load = os.getloadavg()
    text = "\n".join([
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `python benchmarks/allocator.py --steps {args.steps} "
        f"--repeats {args.repeats} --threads {args.threads}` ({os.cpu_count()} cores, load average at the end "
        f"{load[0]:.2f}); median of {args.repeats} alternating child processes, ratio per repeat.",
        "",
        *rows,
        "",
    ])
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
