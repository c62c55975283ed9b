"""Training throughput of the torch and JAX backends: the conv β-VAE, batch 64, CPU.

    python benchmarks/backends.py --steps 200 --repeats 2

Each backend trains the same RunSpec (``beta_vae``, β = 4, Burgess conv
architecture, batch 64, Adam 5e-4, procedural dSprites rendered on the fly)
through its own ``Backend.train``, exactly as ``vaebench run`` does: first a
short warm-up run (torch: thread pools and allocator; JAX: the jit compilation,
whose time is reported separately), then ``--steps`` timed steps. Backends
alternate ``--repeats`` times and the median images/s is reported, with the
ratio JAX / torch (> 1: JAX is faster). Images/s is ``steps · 64 /
train_seconds``; ``train_seconds`` excludes compilation for JAX and includes
data rendering for both.

Both use every core by default (torch's intra-op pool, XLA's Eigen pool); the
figures are only comparable between runs on the same, otherwise idle machine.
Needs ``pip install 'vaebench[jax]'``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from vaebench.harness.plan import RunSpec
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps per backend")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    args = parser.parse_args()

    import jax
    import torch

    data = ProceduralDSprites()
    data.sample(1, np.random.default_rng(0))  # render the sprite bank once, untimed
    compile_seconds = {}
    t0 = time.perf_counter()
    for name in ("torch", "jax"):
        _, compile_seconds[name] = run(name, args.warmup, args.batch_size, data, args.threads)
    print(f"warm-up ({args.warmup} steps each) done in {time.perf_counter() - t0:.1f} s")

    ips: dict[str, list[float]] = {"torch": [], "jax": []}
    for r in range(args.repeats):
        for name in ("torch", "jax"):
            value, _ = run(name, args.steps, args.batch_size, data, args.threads)
            ips[name].append(value)
            print(f"  repeat {r + 1}: {name:5s} {value:8.1f} images/s")

    med = {k: statistics.median(v) for k, v in ips.items()}
    print()
    print(f"CPU: {cpu_name()}; os.cpu_count() = {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); jax {jax.__version__}")
    print(f"conv β-VAE, batch {args.batch_size}, {args.steps} timed steps, median of {args.repeats}")
    print()
    print(f"{'backend':8s} {'images/s':>10s} {'s/step':>8s} {'compile s':>10s} {'vs torch':>9s}")
    for name in ("torch", "jax"):
        comp = f"{compile_seconds[name]:10.2f}" if name == "jax" else f"{'-':>10s}"
        print(f"{name:8s} {med[name]:10.1f} {args.batch_size / med[name]:8.4f} {comp} {med[name] / med['torch']:8.2f}x")


if __name__ == "__main__":
    main()
