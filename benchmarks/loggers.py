"""What watching a grid in a tracker costs: the same small grid with and without ``--log-to``.

    python benchmarks/loggers.py --steps 200 --rounds 2 --out benchmarks/RESULTS.md

One invocation, one process: the grid (mlp β-VAE on dSprites, β = 1 and 4, seed 0, batch
64, one thread, sequential, the cheap ``kl`` metric, figures on) runs with no logger, then
with each logger of ``--loggers`` (default ``mlflow,tensorboard``; ``wandb`` too where
asked) at the default interval (``--log-every`` unset: ``harness.loggers.LOG_EVERY`` steps)
and, with ``--also-every N``, at ``--log-every N``, the conditions alternated for ``--rounds`` rounds so that a
neighbour's load on the shared CPUs falls on all of them alike. Training time is the
records' ``train_seconds`` summed over the grid (the loggers' calls are made from the
training loop's progress reports, so their cost lands there); the ratio is against the
no-logger grids of the same rounds. End to end adds evaluation, figures, the loggers'
start and the wait for their queue at the grid's end. Each grid writes into a fresh
registry (MLflow's SQLite store, TensorBoard's and W&B's offline files inside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

from vaebench import api
from vaebench.harness.loggers import LOG_EVERY


def installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def one_grid(root: str, steps: int, log_to: list[str], log_every: int | None) -> dict[str, float]:
    registry = tempfile.mkdtemp(dir=root)
    start = time.perf_counter()
    result = api.run_grid("beta_vae", registry=registry, betas=[1, 4], seeds=[0], steps=steps, batch_sizes=64,
                          architectures="mlp", eval_samples=1024, metrics=["kl"], device="cpu", threads=1,
                          strategy="sequential", log_to=log_to or None, log_every=log_every)
    wall = time.perf_counter() - start
    bad = [r["run_id"] for r in result.records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"runs not ok: {bad}")
    return {"train": sum(r["train_seconds"] for r in result.records), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loggers", default="mlflow,tensorboard", help="comma list (those installed are run)")
    parser.add_argument("--also-every", type=int, default=None,
                        help="also run each logger at this --log-every (e.g. 10: every progress report)")
    parser.add_argument("--out", help="append a section to this Markdown file")
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["WANDB_MODE"] = "offline"
    loggers = [n for n in args.loggers.split(",") if n and installed(n)]
    conditions: list[tuple[str, list[str], int | None]] = [("none", [], None)]
    for name in loggers:
        conditions.append((f"{name} (every {LOG_EVERY})", [name], None))
        if args.also_every:
            conditions.append((f"{name} (every {args.also_every})", [name], args.also_every))
    times: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in conditions}
    with tempfile.TemporaryDirectory() as root:
        one_grid(root, 20, [], None)  # warm-up: imports, the dataset render
        for r in range(args.rounds):
            for label, log_to, every in (conditions if r % 2 == 0 else conditions[::-1]):
                times[label].append(one_grid(root, args.steps, log_to, every))
                print(f"round {r + 1} {label}: {times[label][-1]}", file=sys.stderr)
    base_train = statistics.median(t["train"] for t in times["none"])
    base_wall = statistics.median(t["wall"] for t in times["none"])
    rows = []
    for label, _, _ in conditions:
        train = statistics.median(t["train"] for t in times[label])
        wall = statistics.median(t["wall"] for t in times[label])
        rows.append((label, train, train / base_train, wall, wall / base_wall))
    table = ["| logger | training (s, 2 runs) | vs none | end to end (s) | vs none |", "|---|---|---|---|---|"]
    table += [f"| {lab} | {t:.2f} | {rt:.3f}× | {w:.2f} | {rw:.3f}× |" for lab, t, rt, w, rw in rows]
    print("\n".join(table))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"steps": args.steps, "rounds": args.rounds, "times": times,
                       "machine": f"{platform.node()}, {os.cpu_count()} CPUs"}, fh, indent=1)
    if args.out:
        day = datetime.now(timezone.utc).date().isoformat()
        with open(args.out, "a") as fh:
            fh.write(f"\n## Loggers: the same grid with and without `--log-to` (`benchmarks/loggers.py`, {day})\n\n"
                     f"    python benchmarks/loggers.py --steps {args.steps} --rounds {args.rounds} --loggers {args.loggers}"
                     + (f" --also-every {args.also_every}" if args.also_every else "") + " --out benchmarks/RESULTS.md\n\n"
                     f"{platform.node()}, {os.cpu_count()} CPUs shared with other jobs; mlp β-VAE on dSprites, β = 1, 4, "
                     f"{args.steps} steps × batch 64, one thread, sequential; medians of {args.rounds} alternated rounds.\n\n"
                     + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
