"""Training throughput of the torch and JAX backends: the conv β-VAE, batch 64, CPU.

    python benchmarks/backends.py --steps 200 --repeats 2 --threads 1
    python benchmarks/backends.py --steps 200 --repeats 2          # torch on all cores
    python benchmarks/backends.py --repeats 0 --group 4 --group-steps 20   # JAX group only

Each backend trains the same RunSpec (``beta_vae``, β = 4, Burgess conv
architecture, batch 64, Adam 5e-4, procedural dSprites rendered on the fly)
through its own ``Backend.train``, exactly as ``vaebench run`` does: first a
short warm-up run (torch: thread pools and allocator; JAX: the jit compilation,
whose time is reported separately), then ``--steps`` timed steps. Backends
alternate ``--repeats`` times, each run in a fresh interpreter (so neither
backend's thread pools, allocator or flush-to-zero state affect the other), and
the median images/s is reported, with the ratio JAX / torch (> 1: JAX is
faster). Images/s is ``steps · 64 / train_seconds``; ``train_seconds``
excludes compilation for JAX and includes data rendering for both. "cores
busy" is the worker's CPU time over wall time during the timed run.

``--threads`` sets torch's intra-op threads (default: all cores); XLA sizes its
own pool (on a 2-core machine it kept about one core busy for this model). On a
machine shared with other work, torch's multi-threaded (OpenMP) kernels can
slow down several-fold when their threads are descheduled, so compare with
``--threads 1`` there; figures are only comparable between runs on the same,
otherwise idle machine. Needs ``pip install 'vaebench[jax]'``.

``--group M`` adds one line: ``M`` β values (1, 2, ..., M; seeds 1..M) trained by the
JAX backend as one vectorized group (``JaxBackend.train_group``: ``jax.vmap``, one
jitted step) vs the same ``M`` runs trained one after another with
``JaxBackend.train``, ``--group-steps`` steps each, in one fresh process (each
compiled first by a 1-step warm-up; compile time excluded from both). Images/s =
``M · steps · 64 / train seconds``; the ratio is group / one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.backends.base import ExecutionOptions, cpu_name
from vaebench.plugins.datasets.dsprites import ProceduralDSprites


def _backend(name: str):
    if name == "torch":
        from vaebench.plugins.backends.torch.backend import TorchBackend
        from vaebench.plugins.backends.torch.models import build_beta_vae

        return TorchBackend(), build_beta_vae
    from vaebench.plugins.backends.jax.backend import JaxBackend
    from vaebench.plugins.backends.jax.models import build_beta_vae

    return JaxBackend(), build_beta_vae


def run(name: str, steps: int, batch_size: int, data, threads: int | None) -> tuple[float, float]:
    """One timed training run: ``(images/s, compile seconds)`` (compile: JAX only, 0 if cached)."""
    backend, factory = _backend(name)
    spec = RunSpec(model="beta_vae", beta=4.0, steps=steps, batch_size=batch_size)
    execution = ExecutionOptions(device="cpu", threads=threads, progress_every=steps)
    # The model is built from its factory directly, so no plugin registration is needed.
    trained = backend.train(spec, data, execution, model=factory(spec, data.image_shape))
    assert trained.steps_done == steps and not trained.diverged, (name, trained.steps_done)
    return steps * batch_size / trained.train_seconds, getattr(trained, "compile_seconds", 0.0)


def worker(name: str, args: argparse.Namespace) -> None:
    """One backend in this process: warm-up run, then one timed run; prints one JSON line."""
    data = ProceduralDSprites()
    data.sample(1, np.random.default_rng(0))  # render the sprite bank once, untimed
    _, compile_seconds = run(name, args.warmup, args.batch_size, data, args.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ips, _ = run(name, args.steps, args.batch_size, data, args.threads)
    cores_used = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    if name == "torch":
        import torch

        version, threads = torch.__version__, torch.get_num_threads()
    else:
        import jax

        version, threads = jax.__version__, None
    print(json.dumps({"backend": name, "images_per_second": ips, "compile_seconds": compile_seconds,
                      "version": version, "threads": threads, "cores_used": cores_used}))


def group_worker(args: argparse.Namespace) -> None:
    """JAX: ``--group`` β values as one vectorized group vs one after another; one JSON line."""
    from vaebench.plugins.backends.jax.backend import JaxBackend

    data = ProceduralDSprites()
    data.sample(1, np.random.default_rng(0))
    backend = JaxBackend()  # builds through the plugin registry, as `vaebench run` does

    def specs(steps: int) -> list[RunSpec]:
        return [RunSpec(model="beta_vae", beta=float(b), seed=b, steps=steps, batch_size=args.batch_size,
                        backend="jax") for b in range(1, args.group + 1)]

    def execution(steps: int) -> ExecutionOptions:
        return ExecutionOptions(device="cpu", progress_every=steps)

    steps = args.group_steps
    warm = backend.train_group(specs(1), data, execution(1))  # compiles the group step
    trained = backend.train_group(specs(steps), data, execution(steps))
    assert all(t.steps_done == steps and not t.diverged for t in trained)
    group_seconds = trained[0].train_seconds
    lone_seconds, lone_compile = 0.0, 0.0
    for spec, warm_spec in zip(specs(steps), specs(1)):
        lone_compile += backend.train(warm_spec, data, execution(1)).compile_seconds
        lone = backend.train(spec, data, execution(steps))
        assert lone.steps_done == steps and not lone.diverged
        lone_seconds += lone.train_seconds
    images = args.group * steps * args.batch_size
    print(json.dumps({"group_images_per_second": images / group_seconds, "lone_images_per_second": images / lone_seconds,
                      "group_compile_seconds": warm[0].compile_seconds, "lone_compile_seconds": lone_compile}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps per run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: all cores); XLA picks its own")
    parser.add_argument("--group", type=int, default=0,
                        help="also train this many β values as one JAX vectorized group vs one after another")
    parser.add_argument("--group-steps", type=int, default=20, help="steps per model in the --group comparison")
    parser.add_argument("--worker", choices=("torch", "jax", "jax-group"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "jax-group":
        group_worker(args)
        return
    if args.worker:
        worker(args.worker, args)
        return

    # Each measurement runs in a fresh interpreter: XLA's CPU thread pool keeps spinning
    # after a JAX step and slows torch in the same process several-fold.
    results: dict[str, list[dict]] = {"torch": [], "jax": []}
    forwarded = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    if args.threads:
        forwarded += ["--threads", str(args.threads)]
    for r in range(args.repeats):
        for name in ("torch", "jax"):
            out = subprocess.run([sys.executable, __file__, "--worker", name, *forwarded],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(result)
            print(f"  repeat {r + 1}: {name:5s} {result['images_per_second']:8.1f} images/s, "
                  f"{result['cores_used']:.2f} cores busy (CPU s / wall s), "
                  f"compile {result['compile_seconds']:.2f} s", flush=True)

    if args.repeats > 0:
        report(args, results)
    if args.group:
        out = subprocess.run([sys.executable, __file__, "--worker", "jax-group", "--group", str(args.group),
                              "--group-steps", str(args.group_steps), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True)
        g = json.loads(out.stdout.strip().splitlines()[-1])
        print()
        print(f"JAX, {args.group} β values × {args.group_steps} steps, batch {args.batch_size}, one process: "
              f"vectorized group {g['group_images_per_second']:.1f} images/s "
              f"(compile {g['group_compile_seconds']:.2f} s), one after another {g['lone_images_per_second']:.1f} "
              f"images/s (compile {g['lone_compile_seconds']:.2f} s in all): "
              f"{g['group_images_per_second'] / g['lone_images_per_second']:.2f}x; "
              f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")


def report(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    """The backends table: median images/s per backend, JAX's compile time, ratio to torch."""
    med = {k: statistics.median(x["images_per_second"] for x in v) for k, v in results.items()}
    comp = statistics.median(x["compile_seconds"] for x in results["jax"])
    torch_info, jax_info = results["torch"][0], results["jax"][0]
    print()
    print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    print(f"torch {torch_info['version']} ({torch_info['threads']} threads); jax {jax_info['version']} (XLA's own pool)")
    print(f"conv β-VAE (β = 4), batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"median of {args.repeats} fresh processes per backend")
    print()
    print(f"{'backend':8s} {'images/s':>10s} {'ms/step':>8s} {'jit compile s':>14s} {'vs torch':>9s}")
    for name in ("torch", "jax"):
        c = f"{comp:14.2f}" if name == "jax" else f"{'-':>14s}"
        print(f"{name:8s} {med[name]:10.1f} {1000 * args.batch_size / med[name]:8.1f} {c} {med[name] / med['torch']:8.2f}x")


if __name__ == "__main__":
    main()
