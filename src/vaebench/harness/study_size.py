"""A planned study's size before it runs: runs per model and dataset, total steps and
images, and an estimated training time from the throughput the registry has recorded.

The estimate: each planned run takes ``steps * batch_size`` images at the median
``images_per_second`` of the registry's ``ok`` records with the same model, architecture
and device kind (``cpu`` / ``cuda``); where the model has none, the median of that
architecture's records on the device kind (any model). The runs are counted one after
another (the recorded per-run throughput; a grid that trains runs side by side, or a
cluster, finishes sooner). No records of a device kind: no estimate for it, said so —
except this machine's: with no record of its throughput, :func:`probe` measures it now
(:data:`PROBE_STEPS` steps of one planned run per architecture, nothing recorded).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any, Sequence

#: Runs listed one by one by ``vaebench run --dry-run`` before the listing is cut short.
LIST_LIMIT = 50
#: Runs shown when a study is bigger than :data:`LIST_LIMIT`.
LIST_HEAD = 10
#: Training steps of the throughput probe; the rate is timed over its last 20 steps (progress
#: reports every 10), so the warm-up of the first ones (threads, the dataset's lazy parts:
#: seconds on a CPU) is left out.
PROBE_STEPS = 50


def device_kind(device: str | None) -> str:
    """``"cuda"`` for ``cuda`` / ``cuda:N``, else ``"cpu"``."""
    return "cuda" if str(device or "").startswith("cuda") else "cpu"


def recorded_throughput(registry: str) -> list[dict[str, Any]]:
    """``[{model, architecture, kind, device_name, images_per_second}]`` of the registry's
    ``ok`` records with a positive throughput (images per second, one run's)."""
    import duckdb

    from vaebench.registry.query import open_runs

    sql = ("SELECT model, architecture, device, device_name, images_per_second FROM runs "
           "WHERE status = 'ok' AND images_per_second > 0")
    con, _ = open_runs(registry)
    try:
        try:
            rows = con.sql(sql).fetchall()
        except duckdb.Error:  # a file the fast path let through: read every file first (as recorded_runs does)
            con.close()
            con, _ = open_runs(registry, validate=True)
            rows = con.sql(sql).fetchall()
    finally:
        con.close()
    return [{"model": m, "architecture": a, "kind": device_kind(d), "device_name": n or "", "images_per_second": float(i)}
            for m, a, d, n, i in rows]


def estimate(specs: Sequence[Any], records: Sequence[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The time ``specs`` take on device ``kind`` at ``records``' median throughput, or
    ``None`` when no record is of that kind. ``seconds``: the estimate (the runs one after
    another); ``records``: how many records it rests on; ``runs_estimated``: the runs with
    a throughput (the rest have no record of their architecture)."""
    on = [r for r in records if r["kind"] == kind]
    if not on:
        return None
    by_model: dict[tuple[str, str], list[float]] = {}
    by_arch: dict[str, list[float]] = {}
    for r in on:
        by_model.setdefault((r["model"], r["architecture"]), []).append(r["images_per_second"])
        by_arch.setdefault(r["architecture"], []).append(r["images_per_second"])
    seconds, used, done, other = 0.0, set(), 0, set()
    for spec in specs:
        key = (spec.model, spec.architecture)
        ips = by_model.get(key)
        if ips:
            used.add(key)
        else:
            ips = by_arch.get(spec.architecture)
            if not ips:
                continue
            other.add(spec.model)
            used.update(k for k in by_model if k[1] == spec.architecture)
        seconds += spec.steps * spec.batch_size / statistics.median(ips)
        done += 1
    names = Counter(r["device_name"] for r in on if r["device_name"])
    return {
        "device": kind,
        "device_name": names.most_common(1)[0][0] if names else "",
        "records": sum(len(by_model[k]) for k in used),
        "seconds": seconds,
        "runs_estimated": done,
        "models_from_other_records": sorted(other),
    }


def probe(specs: Sequence[Any], manager: Any, device: str = "cpu") -> list[dict[str, Any]]:
    """This machine's throughput measured now: the first planned run of each architecture
    trained :data:`PROBE_STEPS` steps on ``device`` (its dataset loaded, nothing recorded or
    written), as :func:`recorded_throughput` rows (``device_name``: ``"measured now"``). A
    run that cannot train here is left out."""
    from dataclasses import replace

    from vaebench.plugins.backends import get_backend
    from vaebench.plugins.backends.base import ExecutionOptions

    rows = []
    for spec in {s.architecture: s for s in reversed(list(specs))}.values():
        short = replace(spec, steps=PROBE_STEPS, start_step=None)
        seen: list[tuple[int, float]] = []  # (step, clock) of each progress report
        try:
            backend = get_backend(short.backend, manager)
            dataset = manager.dataset(short.dataset).loader()(path=short.dataset_path)
            backend.train(short, dataset, ExecutionOptions(device=device, figures=False, progress_every=10),
                          on_progress=lambda step, values: seen.append((step, time.perf_counter())))
        except Exception:  # noqa: BLE001 - no estimate for it, said by the summary
            continue
        first, last = seen[-3:][0] if len(seen) >= 3 else None, seen[-1] if seen else None
        if first is not None and last[1] > first[1]:  # the steady rate, warm-up left out
            rows.append({"model": spec.model, "architecture": spec.architecture, "kind": device_kind(device),
                         "device_name": "measured now",
                         "images_per_second": (last[0] - first[0]) * short.batch_size / (last[1] - first[1])})
    return rows


def study_summary(specs: Sequence[Any], registry: str, device: str = "auto", manager: Any = None) -> dict[str, Any]:
    """The size of the planned ``specs`` and its estimated time (JSON-ready): ``runs``,
    ``per_model`` and ``per_dataset`` run counts, ``steps`` (total optimisation steps),
    ``images`` (total training images: steps x batch size), and ``estimates``: one per
    device kind the registry has records of, this machine's (``device``; ``auto``: cuda
    when torch sees a GPU) first, each marked ``this_machine``. With ``manager`` and no
    record of this machine's throughput, it is measured now (:func:`probe`)."""
    here = device_kind(device)
    if device == "auto":
        import torch

        here = "cuda" if torch.cuda.is_available() else "cpu"
    records = recorded_throughput(registry)
    if manager is not None and specs and not any(r["kind"] == here for r in records):
        records = records + probe(specs, manager, "cuda" if here == "cuda" else "cpu")
    estimates = []
    for kind in [here] + [k for k in ("cuda", "cpu") if k != here]:
        found = estimate(specs, records, kind)
        if found is not None:
            estimates.append({**found, "this_machine": kind == here})
    return {
        "runs": len(specs),
        "per_model": dict(Counter(s.model for s in specs)),
        "per_dataset": dict(Counter(s.dataset for s in specs)),
        "steps": sum(int(s.steps) for s in specs),
        "images": sum(int(s.steps) * int(s.batch_size) for s in specs),
        "this_machine": here,
        "estimates": estimates,
    }


def duration(seconds: float) -> str:
    """``seconds`` as ``"3 d 4 h"``, ``"2 h 5 min"``, ``"4 min"`` or ``"12 s"``."""
    s = int(round(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{secs} s"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as ``vaebench run --dry-run`` prints it, one string per line."""
    counts = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
    lines = [
        f"{summary['runs']} run(s): per model {counts(summary['per_model'])}; per dataset {counts(summary['per_dataset'])}",
        f"{summary['steps']:,} steps, {summary['images']:,} images",
    ]
    for e in summary["estimates"]:
        where = "this machine" if e["this_machine"] else "a GPU" if e["device"] == "cuda" else "a CPU"
        name = f"{e['device']}, {e['device_name']}" if e["device_name"] else e["device"]
        part = "" if e["runs_estimated"] == summary["runs"] else f" ({e['runs_estimated']} of the runs; the rest: no record of their architecture)"
        other = f"; {', '.join(e['models_from_other_records'])} from other models' records" if e["models_from_other_records"] else ""
        source = (f"measured now over {PROBE_STEPS} steps" if e["device_name"] == "measured now"
                  else f"from {e['records']} record(s)")
        name = e["device"] if e["device_name"] == "measured now" else name
        lines.append(f"estimated training time on {where} ({name}, {source}{other}): "
                     f"{duration(e['seconds'])}, one run after another{part}")
    if not any(e["this_machine"] for e in summary["estimates"]):
        lines.append(f"no estimate on this machine ({summary['this_machine']}): no record of its throughput and "
                     "none could be measured now; train a few short runs first (e.g. --steps 200)")
    return lines
