"""What limits CPU training of the conv β-VAE, and what compile / channels-last / fused Adam give.

    python benchmarks/cpu_training.py --steps 60 --repeats 3 --out benchmarks/RESULTS.md

1. Variants of the baseline step (benchmarks/baseline_loop.py's model, batch 64,
   Adam, BCE-with-logits summed, KL summed) timed alternately in one process, each
   as images/s and as a ratio to the plain eager step: eager; channels-last memory
   format; `Adam(fused=True)`; `Adam(foreach=False)`; `torch.compile` (default mode;
   compile time reported apart). At 1 thread and at all cores.
2. A `torch.profiler` table of one training step (self CPU time per op, top 12),
   after warm-up: where the time of a step goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import baseline_loop  # noqa: E402
from report import emit  # noqa: E402

BATCH = 64


def make_step(variant: str, data: torch.Tensor):
    torch.manual_seed(0)
    model = baseline_loop.BetaVAE()
    opt_kwargs = {"fused": True} if variant == "fused adam" else {"foreach": False} if variant == "foreach=False" else {}
    channels_last = variant == "channels-last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, **opt_kwargs)

    bf16 = variant == "bf16 autocast"

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, mu, logvar = (t.float() for t in model(x))
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / BATCH
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum() / BATCH
        return recon + 4.0 * kl

    forward = torch.compile(loss_of) if variant == "torch.compile" else loss_of

    def step() -> None:
        x = data[torch.randint(0, len(data), (BATCH,))].float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = forward(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def variants_table(steps: int, repeats: int, threads: int, data: torch.Tensor) -> tuple[list[str], float]:
    torch.set_num_threads(threads)
    names = ["eager", "channels-last", "fused adam", "foreach=False", "torch.compile", "bf16 autocast"]
    steps_fns, compile_s = {}, 0.0
    for name in names:
        fn = make_step(name, data)
        t0 = time.perf_counter()
        for _ in range(3):  # warm-up (and compilation)
            fn()
        if name == "torch.compile":
            compile_s = time.perf_counter() - t0
        steps_fns[name] = fn
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(steps):
                steps_fns[name]()
            times[name].append(time.perf_counter() - t0)
    ratios = {n: statistics.median(e / t for e, t in zip(times["eager"], times[n])) for n in names}
    rows = []
    for n in names:
        ips = steps * BATCH / statistics.median(times[n])
        rows.append(f"| {threads} | {n} | {ips:.0f} | {ratios[n]:.2f}× |")
    return rows, compile_s


def profile_table(data: torch.Tensor, threads: int) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    fn = make_step("eager", data)
    for _ in range(5):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = ["| op | self CPU ms / step | share |", "|---|---:|---:|"]
    for e in events[:12]:
        rows.append(f"| `{e.key}` | {e.self_cpu_time_total / 10 / 1000:.2f} | {100 * e.self_cpu_time_total / total:.1f}% |")
    rows.append(f"| all ops | {total / 10 / 1000:.2f} | 100% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # as vaebench trains (see docs/architecture.md)
    data = baseline_loop.make_data(5000)
    started = datetime.now(timezone.utc)
    cores = os.cpu_count() or 1
    rows = ["| threads | variant | images/s | vs eager |", "|---:|---|---:|---:|"]
    compile_times = []
    for threads in sorted({1, cores}):
        r, c = variants_table(args.steps, args.repeats, threads, data)
        rows += r
        compile_times.append(f"{c:.1f} s at {threads} thread(s)")
    prof = profile_table(data, cores)
    load = os.getloadavg()
    try:  # read as vaebench.plugins.backends.base.cpu_name reads the model name
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        flags = ""
    bf16_hw = [f for f in ("amx_bf16", "avx512_bf16") if f" {f}" in flags] or ["none"]
    text = "\n".join([
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `python benchmarks/cpu_training.py --steps {args.steps} "
        f"--repeats {args.repeats}` (torch {torch.__version__}, {cores} cores, load average at the end "
        f"{load[0]:.2f}; CPU bf16 support: {', '.join(bf16_hw)}); median of {args.repeats} alternating repeats; torch.compile's first 3 steps "
        f"(compilation included): {', '.join(compile_times)}.",
        "",
        *rows,
        "",
        f"Profile of one eager training step at {cores} threads (torch.profiler, mean of 10 steps):",
        "",
        *prof,
        "",
    ])
    emit(text, args.out)


if __name__ == "__main__":
    main()
