"""Encoder throughput on a CPU by batch size: what `TrainedTorchModel.encode` should feed the net.

    python benchmarks/encode_batch.py --images 15000 --rounds 5 --threads 2 [--checkpoint DIR]

Encodes the same procedural dSprites images with the conv β-VAE encoder in batches
of each size, sizes in a rotated order every round, in one process; prints images/s
(median over rounds) and the ratio to the batch size used before (500). Evaluation,
the sampler metrics and the code table all encode through this path. ``--checkpoint``
loads a trained model (a run's artifact directory, or the one ``benchmarks/metrics.py
--checkpoint`` caches): trained weights can run slower than fresh ones (denormal
values), so measure with one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="32,64,128,256,500,1000")
    parser.add_argument("--checkpoint", default=None, help="a saved torch model directory (default: fresh weights)")
    args = parser.parse_args()

    from vaebench.plugins.runspec import RunSpec
    from vaebench.plugins.backends.torch import backend as torch_backend
    from vaebench.plugins.backends.torch.models import build_beta_vae
    from vaebench.plugins.datasets.dsprites import ProceduralDSprites

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    data = ProceduralDSprites()
    images, _ = data.sample(args.images, np.random.default_rng(0))
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    spec = RunSpec(model="beta_vae", beta=4.0)
    if args.checkpoint:
        trained = torch_backend.load_checkpoint(args.checkpoint)
    else:
        trained = torch_backend.TrainedTorchModel(build_beta_vae(spec, data.image_shape), spec, "cpu", "off", False)
    model = trained.model.eval()
    sizes = [int(s) for s in args.sizes.split(",")]

    def net(batch: int) -> float:
        """The network alone on a prepared tensor."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(x_all), batch):
                model.encode(x_all[start : start + batch])
        return len(x_all) / (time.perf_counter() - t0)

    def path(batch: int) -> float:
        """``TrainedTorchModel.encode`` on the NumPy images with this evaluation batch."""
        torch_backend.EVAL_BATCH["cpu"] = batch
        t0 = time.perf_counter()
        trained.encode(images)
        return len(images) / (time.perf_counter() - t0)

    ways = {"network": net, "encode()": path}
    for size in sizes:  # warm-up: thread pool, allocator, each shape's kernels
        for fn in ways.values():
            fn(size)
    rates: dict[tuple[str, int], list[float]] = {(w, s): [] for w in ways for s in sizes}
    for r in range(args.rounds):
        order = sizes[r % len(sizes):] + sizes[: r % len(sizes)]
        for size in order:
            for w, fn in ways.items():
                rates[w, size].append(fn(size))
    weights = f"trained weights ({args.checkpoint})" if args.checkpoint else "fresh weights"
    print(f"{args.images} images, {args.threads} thread(s), {weights}, median of {args.rounds} rounds")
    print("| batch | network images/s | vs 500 | `encode()` images/s | vs 500 |")
    print("|---:|---:|---:|---:|---:|")
    for size in sizes:
        cells = []
        for w in ways:
            med = statistics.median(rates[w, size])
            ref = statistics.median(rates[w, 500]) if 500 in sizes else None
            cells += [f"{med:,.0f}", f"{med / ref:.2f}×" if ref else ""]
        print(f"| {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
