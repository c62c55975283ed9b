"""Benchmark the procedural dSprites renderer, single-threaded.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/dsprites_render.py [--batches 200] [--batch-size 64]

Times ``sample_factors`` + ``observations`` (float32) and ``observations_uint8``
on random batches (the sprite bank is built before timing; its build time is
printed separately) and prints images/s. Training needs ~600 images/s.
"""

from __future__ import annotations

import argparse
import os

# Keep NumPy (and any BLAS it links) single-threaded.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from vaebench.plugins.datasets.dsprites import ProceduralDSprites  # noqa: E402


def _time(fn, batches: int, batch_size: int, seed: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` images/s for ``fn(factors)`` over ``batches`` random batches."""
    ds_rng = np.random.default_rng(seed)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            fn(ds_rng, batch_size)
        best = min(best, time.perf_counter() - t0)
    return batches * batch_size / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ds = ProceduralDSprites()
    t0 = time.perf_counter()
    ds.sprite_bank()
    build = time.perf_counter() - t0
    print(f"sprite bank build (720 sprites, once): {build * 1e3:.1f} ms; digest {ds.digest()}")

    def f32(rng: np.random.Generator, n: int) -> None:
        ds.sample(n, rng)

    def u8(rng: np.random.Generator, n: int) -> None:
        ds.observations_uint8(ds.sample_factors(n, rng))

    for label, fn in [("sample() float32", f32), ("observations_uint8", u8)]:
        rate = _time(fn, args.batches, args.batch_size, args.seed)
        print(
            f"{label:>20}: {rate:,.0f} images/s "
            f"({args.batches} batches of {args.batch_size}, best of 3, single thread)"
        )


if __name__ == "__main__":
    main()
