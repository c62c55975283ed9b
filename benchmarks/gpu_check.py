"""Every GPU check of issues 27 and 28 in one prepared run, results written as it goes.

    python benchmarks/gpu_check.py OUTDIR [--device cuda|cpu] [--tiny] [--budget-s 420]

(on the GPU machine: ``bash benchmarks/gpu_check.sh``, which installs what the machine
lacks and logs to ``$OUT/log.txt``). Sections, in the order they run:

- ``auto``: both backends' ``resolve_device("auto")`` and what ``--strategy auto``
  chooses for an 8-point β grid (``vectorized`` on a GPU).
- ``parity``: torch and JAX on the device with the same weights (``copy_torch_weights``)
  and the same noise: loss terms (TF32 on and off) and 10 Adam steps, as
  ``tests/test_jax_backend.py`` checks them on the CPU.
- ``dtype_probe``: what really ran: torch layer outputs' dtype and device seen by
  forward hooks while training with ``--amp off|bf16|fp16``; bf16 in JAX's compiled step.
- ``paths_torch`` / ``paths_torch_vectorized`` / ``paths_jax``: a tiny grid per model
  family through ``harness.runner.run_grid`` with ``--amp off|bf16|fp16``; every
  record's ``device``, ``amp`` and ``compiled`` checked against what was asked (a
  fallback must be explained by a note in the record).
- ``equality``: a vectorized member against its lone run on the device (same
  batches, its own CUDA generator: step-1 losses agree to rounding), and a run picked
  up from its periodic checkpoint against the uninterrupted run (lone torch, torch
  group, lone JAX).
- ``probe_28``: issue 28's group (β = 4, seeds 0, 1, 2, beta_vae, dSprites, batch 64,
  conv) for a fixed number of steps per variant (fp32, bf16, JAX, compiled): steps/s
  after warm-up and the projected wall time of 300,000 steps.
- ``grid_torch``: ``benchmarks/grid.py``'s measurement (:func:`grid.measure`, in this
  process): an 8-point β grid and a 16-point β × seed grid, ``vectorized`` against
  ``sequential``, same steps, end to end (evaluation and records included, figures
  off); images/s, step time, GPU utilisation (NVML, sampled in a thread), peak memory
  per member; a profile of the vectorized step.
- ``grid_jax``: the 8-point grid through ``jax.vmap``; ratio against torch.
- ``paths_compile``: ``--compile`` for a lone capacity run and a vectorized group.
- ``evaluation``: the metric suite of one trained model on the device (encoding at the
  device's evaluation batch, the sampler metrics' CodeTable) against the CPU.

Each section runs in its own ``try`` (an error is recorded with its traceback and the
next section runs) and only while the time budget (``--budget-s``, counted from the
start) leaves it the seconds it needs; otherwise it is recorded as ``skipped``.
``results.json`` is rewritten after every section (and inside long ones), so a run cut
off keeps what finished. ``--tiny`` shrinks every size so the whole script runs on a
CPU in well under a minute (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))

TORCH_MODELS = ("vae", "beta_vae", "beta_vae_capacity", "cvae", "beta_tcvae", "factor_vae", "dip_vae", "vq_vae")
JAX_MODELS = ("vae", "beta_vae", "beta_vae_capacity", "cvae", "vq_vae")
#: Models one vectorized group can hold together (``base.VECTORIZABLE_MODELS``).
GROUP_MODELS = ("vae", "beta_vae", "beta_vae_capacity")
BETAS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]

#: Sizes of every section: on the GPU machine, and ``--tiny`` (a CPU, well under a minute).
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "architecture": "conv", "paths_steps": 20, "batch": 64, "paths_eval": 1000,
        "paths_metrics": "kl,reconstruction,mig", "torch_models": TORCH_MODELS, "torch_group": GROUP_MODELS,
        "jax_paths": [("jax_off", JAX_MODELS, "off", "sequential"), ("jax_bf16", ("beta_vae", "vq_vae"), "bf16", "sequential"),
                      ("jax_fp16", ("beta_vae",), "fp16", "sequential"),
                      ("jax_vectorized_off", GROUP_MODELS, "off", "vectorized"),
                      ("jax_vectorized_bf16", GROUP_MODELS, "bf16", "vectorized")],
        "parity_models": ("vae", "beta_vae", "beta_vae_capacity"), "parity_precise": (False, True),
        "equal_betas": [1.0, 4.0], "equal_steps": 10, "equal_amps": {"torch": ("off", "bf16"), "jax": ("off",)},
        "probe_steps": 2000, "probe_warm": 200, "probe_cap_s": 60.0, "probe_batch": 64, "probe_seeds": [0, 1, 2],
        "probe_variants": ("torch_fp32", "torch_bf16", "jax_fp32", "jax_bf16", "torch_fp32_lone"),
        "grids": [("beta8", BETAS, [0]), ("beta8xseed2", BETAS, [0, 1])], "grid_steps": 300, "grid_eval": 1000,
        "grid_metrics": "kl,reconstruction,mig", "profile_steps": 20, "eval_train_steps": 1000, "eval_n": 10_000,
        "sampler": {}, "compile": True, "threads": None,
    },
    # Tiny: batch 8, and every JAX run at β = 4 in groups of 2, so that XLA:CPU compiles a
    # handful of programs (seconds each), not dozens. (Not the MLP: its 16 M parameters
    # made checkpoints the largest cost.)
    "tiny": {
        "architecture": "conv", "paths_steps": 3, "batch": 8, "paths_eval": 64, "paths_metrics": "kl,reconstruction",
        "torch_models": ("beta_vae", "vq_vae"), "torch_group": ("vae", "beta_vae"),
        "jax_paths": [("jax_off", ("beta_vae",), "off", "sequential"), ("jax_fp16", ("beta_vae",), "fp16", "sequential"),
                      ("jax_vectorized_off", ("beta_vae",), "off", "vectorized")],
        "parity_models": ("beta_vae",), "parity_precise": (True,),
        "equal_betas": [4.0], "equal_steps": 4, "equal_amps": {"torch": ("off", "bf16"), "jax": ("off",)},
        "probe_steps": 6, "probe_warm": 2, "probe_cap_s": 30.0, "probe_batch": 8, "probe_seeds": [0, 1],
        "probe_variants": ("torch_fp32", "jax_fp32", "torch_fp32_lone"),
        "grids": [("beta1xseed2", [4.0], [0, 1])], "grid_steps": 3, "grid_eval": 64, "grid_metrics": "kl",
        "profile_steps": 2, "eval_train_steps": 5, "eval_n": 200,
        "sampler": {"beta_vae_metric": {"num_train": 16, "num_eval": 8, "batch_size": 8},
                    "factor_vae_metric": {"num_train": 16, "num_eval": 8, "batch_size": 8,
                                          "num_variance_estimate": 64}},
        # torch.compile on a CPU takes ~30 s per graph (inductor's C++ build): not in the tiny run.
        "compile": False, "threads": 1,
    },
}

#: Seconds each section needs at the full sizes on the H200 (estimates, see the report in
#: benchmarks/RESULTS.md); a section starts only when the budget leaves it this much.
NEEDS = {
    "auto": 5, "parity": 20, "dtype_probe": 20, "paths_torch": 40, "paths_torch_vectorized": 15,
    "paths_jax": 45, "equality": 25, "probe_28": 40, "grid_torch": 60, "grid_jax": 45,
    "paths_compile": 60, "evaluation": 45,
}


# ----------------------------------------------------------------------------- plumbing


class Skip(Exception):
    """A section (or the rest of it) that cannot run here; its message is the reason."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Results:
    """``results.json`` in ``out``: ``meta``, ``sections`` (name -> status, seconds, what it
    found) and ``summary``; rewritten whole (temporary file + rename) on every :meth:`save`."""

    def __init__(self, out: str, budget_s: float, meta: dict[str, Any]) -> None:
        self.path = os.path.join(out, "results.json")
        self.start = time.monotonic()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"meta": meta, "sections": {}, "summary": {}}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def save(self) -> None:
        self.data["meta"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.data, fh, indent=1, default=_jsonable)
        os.replace(tmp, self.path)

    def run(self, name: str, fn: Callable[[dict[str, Any]], None], need_s: float) -> None:
        """Run section ``fn(entry)`` (it fills ``entry``; ``entry["failures"]``: checks that
        did not hold) unless the budget leaves less than ``need_s`` seconds."""
        entry: dict[str, Any] = {"status": "running", "started": _now()}
        self.data["sections"][name] = entry
        left = self.left()
        if left < need_s:
            entry.update(status="skipped", reason=f"{left:.0f} s of the budget left; the section needs ~{need_s:.0f} s")
            self.save()
            print(f"[gpu_check] {name}: skipped ({entry['reason']})", flush=True)
            return
        print(f"[gpu_check] {name}: start ({left:.0f} s of the budget left)", flush=True)
        self.save()
        t0, cpu0 = time.monotonic(), time.process_time()
        try:
            fn(entry)
            entry["status"] = "failed" if entry.get("failures") else "ok"
        except Skip as why:
            entry.update(status="skipped", reason=str(why))
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - one defect must not hide the others
            entry["status"] = "error"
            entry["error"] = traceback.format_exc()
        entry["seconds"] = round(time.monotonic() - t0, 2)
        entry["process_cpu_s"] = round(time.process_time() - cpu0, 2)
        self.save()
        print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']:.1f} s"
              + (f"\n{entry['error']}" if entry["status"] == "error" else "")
              + (f" failures: {entry['failures']}" if entry.get("failures") else ""), flush=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class GpuSampler:
    """GPU utilisation and memory in use, sampled every ``period`` s in a daemon thread
    (NVML through ``pynvml``; else ``nvidia-smi``). :meth:`window` summarises a span."""

    def __init__(self, period: float = 0.05) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (monotonic s, util %, MiB used)
        self.source = "none"
        self.error = ""
        self._stop = threading.Event()
        read = self._nvml() or self._smi()
        if read is None:
            return
        self._thread = threading.Thread(target=self._loop, args=(read, period), daemon=True)
        self._thread.start()

    def _nvml(self) -> Callable[[], tuple[float, float]] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            pynvml.nvmlDeviceGetUtilizationRates(handle)
        except Exception as exc:  # noqa: BLE001
            self.error = f"pynvml: {type(exc).__name__}: {exc}"
            return None
        self.source = "pynvml"

        def read() -> tuple[float, float]:
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            return float(rates.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

        return read

    def _smi(self) -> Callable[[], tuple[float, float]] | None:
        def read() -> tuple[float, float]:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits", "-i", "0"], capture_output=True, text=True,
                                 timeout=5).stdout
            util, mem = out.strip().splitlines()[0].split(",")
            return float(util), float(mem)

        try:
            read()
        except Exception as exc:  # noqa: BLE001
            self.error += f"; nvidia-smi: {type(exc).__name__}: {exc}"
            return None
        self.source = "nvidia-smi"
        return read

    def _loop(self, read: Callable[[], tuple[float, float]], period: float) -> None:
        while not self._stop.wait(period):
            try:
                util, mem = read()
            except Exception:  # noqa: BLE001
                continue
            self.samples.append((time.monotonic(), util, mem))

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Mean / max utilisation (%) and max memory in use (MiB) between two ``time.monotonic()``s."""
        rows = [s for s in self.samples if t0 <= s[0] <= t1]
        if not rows:
            return {"source": self.source, "samples": 0, **({"error": self.error} if self.error else {})}
        utils = [r[1] for r in rows]
        return {"source": self.source, "samples": len(rows), "util_mean_pct": round(sum(utils) / len(utils), 1),
                "util_max_pct": max(utils), "mem_used_max_mib": max(r[2] for r in rows)}

    def stop(self) -> None:
        self._stop.set()


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    """The columns of a record the checks read (no histories)."""
    keys = ("model", "backend", "status", "device", "device_name", "amp", "compiled", "strategy", "concurrent_runs",
            "steps_done", "train_seconds", "eval_seconds", "images_per_second", "final_loss", "error")
    out = {k: record.get(k) for k in keys}
    out["run_id"] = record["run_id"][:8]
    out["metrics"] = {k: v for k, v in (record.get("metrics") or {}).items() if "." not in k}
    return out


def _rel(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


class Context:
    """What the sections share: the options, sizes, dataset, sampler and a scratch directory."""

    def __init__(self, args: argparse.Namespace, results: Results) -> None:
        from vaebench.plugins.datasets.dsprites import ProceduralDSprites

        self.device = args.device
        self.on_gpu = args.device.startswith("cuda")
        self.size = SIZES["tiny" if args.tiny else "full"]
        self.tiny = bool(args.tiny)
        self.results = results
        self.out = args.out
        self.scratch = tempfile.mkdtemp(prefix="gpu_check_")
        self.dataset = ProceduralDSprites()
        self.sampler = GpuSampler() if self.on_gpu else None
        #: whether JAX may be used in this process (``_probe_jax``); its reason otherwise
        self.jax_ok, self.jax_why = True, ""

    def need_jax(self) -> None:
        if not self.jax_ok:
            raise Skip(self.jax_why)

    def execution(self, **kw: Any) -> Any:
        from vaebench.plugins.backends.base import ExecutionOptions

        base = {"device": self.device, "threads": self.size["threads"], "eval_samples": self.size["paths_eval"]}
        return ExecutionOptions(**{**base, **kw})

    def specs(self, models: Any, backend: str = "torch", **grid: Any) -> list[Any]:
        from vaebench.api import plan_grid

        grid.setdefault("steps", self.size["paths_steps"])
        grid.setdefault("architectures", self.size["architecture"])
        grid.setdefault("batch_sizes", self.size["batch"])
        return plan_grid(list(models) if not isinstance(models, str) else models, backends=backend, **grid)

    def run_grid(self, specs: list[Any], strategy: str, metrics: str, **execution: Any) -> tuple[Any, float]:
        from vaebench.harness.runner import run_grid
        from vaebench.plugins.manager import get_manager

        registry = tempfile.mkdtemp(prefix="registry_", dir=self.scratch)
        t0 = time.perf_counter()
        result = run_grid(specs, get_manager(), registry, self.execution(**execution), metrics.split(","),
                          strategy=strategy)
        return result, time.perf_counter() - t0

    def peak_reset(self) -> None:
        if self.on_gpu:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float | None:
        """torch's peak allocation since :meth:`peak_reset`, less the dataset grids the
        backend keeps on the device (``ExecutionOptions.device_grid``: 2.8 GiB for dSprites,
        held for the whole process, not by any run)."""
        if not self.on_gpu:
            return None
        import torch

        from vaebench.plugins.backends.torch.backend import DEVICE_GRIDS

        held = sum(g.nbytes for g in DEVICE_GRIDS.grids.values() if g.is_cuda)
        return round((torch.cuda.max_memory_allocated() - held) / 2**20, 1)

    def gpu(self, t0: float, t1: float) -> dict[str, Any] | None:
        return self.sampler.window(t0, t1) if self.sampler is not None else None


# ----------------------------------------------------------------------------- sections


def section_auto(ctx: Context, entry: dict[str, Any]) -> None:
    from vaebench.harness.strategies import choose_strategy
    from vaebench.plugins.backends import get_backend
    from vaebench.plugins.manager import get_manager

    manager = get_manager()
    entry["plugins"] = [(p.name, p.package, p.status, p.error) for p in manager.plugins]
    for backend in ("torch", "jax"):
        info = get_backend(backend, manager).resolve_device("auto")
        entry[f"{backend}_auto_device"] = [info.device, info.name]
        if ctx.on_gpu and not info.device.startswith("cuda"):
            entry.setdefault("failures", []).append(f"{backend}: device auto resolved to {info.device}")
        specs = ctx.specs("beta_vae", backend, betas=BETAS)
        chosen = choose_strategy("auto", specs, ctx.execution(device="auto"), manager)
        entry[f"{backend}_auto_strategy"] = chosen
        expected = "vectorized" if ctx.on_gpu else ("processes" if (os.cpu_count() or 1) >= 2 else "sequential")
        if ctx.on_gpu and chosen != expected:
            entry.setdefault("failures", []).append(f"{backend}: auto chose {chosen} on a GPU, not {expected}")


def section_parity(ctx: Context, entry: dict[str, Any]) -> None:
    """Torch and JAX on the device, same weights, same noise (tests/test_jax_backend.py's pairs)."""
    from functools import partial

    ctx.need_jax()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from vaebench.plugins.runspec import RunSpec
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.backends.jax import models as jm
    from flax import nnx

    from vaebench.plugins.backends.jax.backend import JaxBackend, loss_and_grads
    from vaebench.plugins.backends.jax.training import resolve as jax_resolve
    from vaebench.plugins.backends.torch import models as tm
    from vaebench.plugins.backends.torch.backend import TorchBackend, resolve_device

    tdev = resolve_device(ctx.device).device
    jdev = jax_resolve(ctx.device)[1]
    shape = ctx.dataset.image_shape
    hps = {"vae": {}, "beta_vae": {"beta": 4.0}, "beta_vae_capacity": {"capacity": 20.0, "gamma": 10.0,
                                                                       "capacity_steps": 10}}
    batch = ctx.size["batch"]
    x = ctx.dataset.sample(batch, np.random.default_rng(2))[0]
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(tdev)
    dim = 10  # the default latent_dim, so the JAX models' initialisers compile once for every section
    eps = np.random.default_rng(5).standard_normal((batch, dim)).astype(np.float32)
    rows = []
    real_randn_like = torch.randn_like
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.randn_like = lambda like, **kw: torch.from_numpy(eps).to(like.device, like.dtype)  # type: ignore[assignment]
        for precise in ctx.size["parity_precise"]:
            torch.backends.cuda.matmul.allow_tf32 = not precise and tf32[0]
            torch.backends.cudnn.allow_tf32 = not precise and tf32[1]
            for model in ctx.size["parity_models"]:
                spec = RunSpec(model=model, latent_dim=dim, architecture=ctx.size["architecture"], **hps[model])
                torch.manual_seed(0)
                t = getattr(tm, f"build_{model}")(spec, shape)
                last = [m for m in t.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
                with torch.no_grad():  # a KL worth comparing (as the tests' _pair)
                    last.weight[:dim].mul_(8.0)
                    last.bias[:dim].add_(torch.linspace(-3.0, 3.0, dim))
                with jax.default_device(jdev):
                    j = jm.copy_torch_weights(t, getattr(jm, f"build_{model}")(spec, shape))
                    t = t.to(tdev)
                    with torch.no_grad():
                        terms_t = t.loss_terms(xt, 5)
                    # jitted (one compilation, not one per eager primitive): the training step's core
                    graphdef, params, others = nnx.split(j, nnx.Param, ...)
                    with jax.default_matmul_precision("highest" if precise else "default"):
                        _, _, terms_j = jax.jit(partial(loss_and_grads, graphdef))(
                            params, others, jax.device_put(jnp.asarray(x), jdev), jnp.int32(5),
                            eps=jax.device_put(jnp.asarray(eps), jdev))
                row = {"model": model, "tf32_off_and_jax_highest": precise,
                       **{f"rel_{k}": _rel(terms_j[k], terms_t[k].item()) for k in ("loss", "recon", "kl")},
                       "torch_loss": terms_t["loss"].item(), "jax_loss": float(terms_j["loss"]),
                       "jax_device": str(list(terms_j["loss"].devices())[0])}
                rows.append(row)
                if precise and max(row["rel_loss"], row["rel_recon"], row["rel_kl"]) > 1e-4:
                    entry.setdefault("failures", []).append(f"{model}: loss terms differ by {row['rel_loss']:.2e}")
    finally:
        torch.randn_like = real_randn_like  # type: ignore[assignment]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    entry["loss_terms"] = rows

    # 10 Adam steps from the same start, same batches, torch fed JAX's noise (the CPU test's recipe).
    steps = ctx.size["equal_steps"]
    spec = ctx.specs("beta_vae", "torch", betas=4.0, steps=steps)[0]
    jspec = ctx.specs("beta_vae", "jax", betas=4.0, steps=steps)[0]
    torch.manual_seed(0)
    t = tm.build_beta_vae(spec, shape)
    with jax.default_device(jdev):
        j = jm.copy_torch_weights(t, jm.build_beta_vae(spec, shape))
    key, calls = jax.random.key(spec.seed), []

    def jax_noise(like: torch.Tensor, **kw: Any) -> torch.Tensor:
        calls.append(1)
        noise = jax.random.normal(jax.random.fold_in(key, len(calls)), tuple(like.shape), jnp.float32)
        return torch.from_numpy(np.array(noise)).to(like.device)

    execution = ExecutionOptions(device=ctx.device, progress_every=5, threads=ctx.size["threads"])
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.randn_like = jax_noise  # type: ignore[assignment]
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        th = TorchBackend().train(spec, ctx.dataset, execution, model=t).history
    finally:
        torch.randn_like = real_randn_like  # type: ignore[assignment]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    from vaebench.plugins.backends.jax.training import COMPILED

    known = set(COMPILED)
    with jax.default_matmul_precision("highest"):
        jh = JaxBackend().train(jspec, ctx.dataset, ExecutionOptions(device=ctx.device, progress_every=5), model=j).history
    for key in [k for k in COMPILED if k not in known]:  # the cache key has no precision: not for others
        del COMPILED[key]
    diffs = [max(_rel(b[k], a[k]) for k in ("loss", "recon", "kl")) for a, b in zip(th, jh)]
    entry["training_steps"] = {"steps": len(diffs), "max_rel_by_step": [float(f"{d:.3g}") for d in diffs],
                                  "torch_final": th[-1]["loss"], "jax_final": jh[-1]["loss"]}
    if len(diffs) != steps or max(diffs[:5]) > 1e-3:
        entry.setdefault("failures", []).append(f"training parity: first 5 steps differ by up to {max(diffs[:5]):.2e}")


def section_dtype_probe(ctx: Context, entry: dict[str, Any]) -> None:
    """Forward hooks on every conv / linear layer record the dtype and device they computed in."""
    import torch

    from vaebench.plugins.backends.torch.backend import TorchBackend

    backend = TorchBackend()
    spec = ctx.specs("beta_vae", betas=4.0, steps=3)[0]
    for amp in ("off", "bf16", "fp16"):
        model = backend.build(spec, ctx.dataset.image_shape, ctx.dataset)
        seen: set[tuple[str, str]] = set()
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                module.register_forward_hook(lambda m, i, o: seen.add((str(o.dtype), str(o.device))))
        execution = ctx.execution(amp=amp)
        trained = backend.train(spec, ctx.dataset, execution, model=model)
        entry[f"torch_{amp}"] = {"layer_outputs": sorted(seen), "recorded_amp": trained.amp, "notes": execution.notes}
        want = {"off": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}[trained.amp]
        if {d for d, _ in seen} != {want} or (ctx.on_gpu and trained.amp != amp):
            entry.setdefault("failures", []).append(f"torch --amp {amp}: recorded {trained.amp}, layers ran {sorted(seen)}")
        if ctx.on_gpu and not all(dev.startswith("cuda") for _, dev in seen):
            entry.setdefault("failures", []).append(f"torch --amp {amp}: layers ran on {sorted(seen)}")

    if not ctx.jax_ok:
        entry["jax"] = f"skipped: {ctx.jax_why}"
        return
    from vaebench.plugins.backends.jax import backend as jb
    from vaebench.plugins.backends.jax.training import COMPILED

    for amp in ("off", "bf16"):
        known = set(COMPILED)
        trained = jb.JaxBackend().train(ctx.specs("beta_vae", "jax", betas=4.0, steps=3)[0], ctx.dataset,
                                        ctx.execution(amp=amp))
        new = [key for key in COMPILED if key not in known]
        if not new:  # compiled by an earlier section (the same graph and batch shape): find it
            from flax import nnx

            graphdef = nnx.split(trained.model, nnx.Param, ...)[0]
            new = [key for key in COMPILED if key[0] == graphdef and key[1][0] == ctx.size["batch"]]
        text = COMPILED[new[-1]].as_text()
        ops = [line for line in text.splitlines() if "convolution(" in line or " dot(" in line]
        row = entry[f"jax_{amp}"] = {"recorded_amp": trained.amp, "conv_and_dot_ops": len(ops),
                                     "bf16_ops": sum("bf16[" in line for line in ops),
                                     "bf16_anywhere": "bf16[" in text, "device": str(next(iter(COMPILED)))[-40:]}
        # XLA:CPU computes bf16 products in float32 between converts; a GPU runs them in bf16.
        in_bf16 = row["bf16_ops"] > 0 if ctx.on_gpu else row["bf16_anywhere"]
        if (amp == "bf16") != in_bf16 or row["bf16_ops"] and amp == "off":
            entry.setdefault("failures", []).append(f"jax --amp {amp}: {row}")


def _check_records(ctx: Context, entry: dict[str, Any], label: str, records: list[dict[str, Any]], *, amp: str,
                   compiled: bool, strategy: str) -> None:
    """Each record: ok, on the device asked for, with the AMP and compilation asked for
    (or a note that says why not)."""
    rows = [_brief(r) for r in records]
    entry.setdefault("records", {})[label] = rows
    for r in rows:
        problems = []
        if r["status"] != "ok":
            problems.append(f"status {r['status']} ({r['error']})")
        if ctx.on_gpu != str(r["device"]).startswith("cuda"):
            problems.append(f"device {r['device']}")
        note = r["error"] or ""
        if r["amp"] != amp and not ("trained in float32" in note and (not ctx.on_gpu or r["backend"] == "jax")):
            problems.append(f"amp {r['amp']} (asked {amp}; note: {note!r})")
        if bool(r["compiled"]) != (compiled or r["backend"] == "jax") and "trained eagerly" not in note:
            problems.append(f"compiled {r['compiled']}")
        if r["strategy"] != strategy:
            problems.append(f"strategy {r['strategy']}")
        if problems:
            entry.setdefault("failures", []).append(f"{label} {r['model']}: " + "; ".join(problems))


def section_paths_torch(ctx: Context, entry: dict[str, Any]) -> None:
    for amp in ("off", "bf16", "fp16"):
        specs = ctx.specs(ctx.size["torch_models"])
        result, wall = ctx.run_grid(specs, "sequential", ctx.size["paths_metrics"], amp=amp, figures=amp == "off")
        _check_records(ctx, entry, f"torch_{amp}", result.records, amp=amp, compiled=False, strategy="sequential")
        entry[f"torch_{amp}_wall_s"] = round(wall, 2)
        if amp == "off":
            entry["figures"] = {r["model"]: sorted(k for k in (r.get("artifacts") or {}) if k not in ("checkpoint", "config"))
                                for r in result.records}
        ctx.results.save()


def section_paths_torch_vectorized(ctx: Context, entry: dict[str, Any]) -> None:
    for amp in ("off", "bf16", "fp16"):
        specs = ctx.specs(ctx.size["torch_group"], betas=4.0, seeds=[0, 1] if len(ctx.size["torch_group"]) < 3 else 0)
        result, wall = ctx.run_grid(specs, "vectorized", ctx.size["paths_metrics"], amp=amp, figures=False)
        _check_records(ctx, entry, f"vectorized_{amp}", result.records, amp=amp, compiled=False, strategy="vectorized")
        entry[f"vectorized_{amp}_wall_s"] = round(wall, 2)
        ctx.results.save()


def section_paths_jax(ctx: Context, entry: dict[str, Any]) -> None:
    ctx.need_jax()
    for label, models, amp, strategy in ctx.size["jax_paths"]:
        seeds = [0, 1] if strategy == "vectorized" and len(models) == 1 else 0
        specs = ctx.specs(models, "jax", betas=4.0, seeds=seeds)
        result, wall = ctx.run_grid(specs, strategy, ctx.size["paths_metrics"], amp=amp,
                                    figures=label == "jax_off" and ctx.size["compile"])
        _check_records(ctx, entry, label, result.records, amp=amp, compiled=True, strategy=strategy)
        entry[f"{label}_wall_s"] = round(wall, 2)
        ctx.results.save()


def _history_diff(a: list[dict[str, float]], b: list[dict[str, float]], after: int = 0) -> dict[str, Any]:
    pairs = [(p, q) for p, q in zip(a, b) if p["step"] > after]
    steps_equal = [p["step"] for p, _ in pairs] == [q["step"] for _, q in pairs] and len(a) == len(b)
    diffs = [_rel(q["loss"], p["loss"]) for p, q in pairs]
    return {"steps_equal": steps_equal, "first_rel": diffs[0] if diffs else None,
            "max_rel": max(diffs) if diffs else None}


def section_equality(ctx: Context, entry: dict[str, Any]) -> None:
    """Vectorized members against lone runs, and pick-ups from periodic checkpoints."""
    from vaebench.plugins.backends.base import partial_resume_point
    from vaebench.plugins.backends.jax.backend import JaxBackend
    from vaebench.plugins.backends.torch.backend import TorchBackend

    steps = ctx.size["equal_steps"]
    fail = entry.setdefault("failures", [])
    for name, backend in (("torch", TorchBackend()), ("jax", JaxBackend())):
        if name == "jax" and not ctx.jax_ok:
            entry["jax"] = f"skipped: {ctx.jax_why}"
            continue
        specs = ctx.specs("beta_vae", name, betas=ctx.size["equal_betas"], seeds=[0, 1], steps=steps)
        for amp in ctx.size["equal_amps"][name]:
            group = backend.train_group(specs, ctx.dataset, ctx.execution(amp=amp, progress_every=1))
            rows = []
            for spec, member in zip(specs, group):
                lone = backend.train(spec, ctx.dataset, ctx.execution(amp=amp, progress_every=1))
                rows.append({"beta": spec.beta, "seed": spec.seed, **_history_diff(lone.history, member.history)})
            entry[f"{name}_{amp}_member_vs_lone"] = rows
            bound = 1e-4 if amp == "off" else 2e-2
            bad = [r for r in rows if not r["steps_equal"] or r["first_rel"] is None or r["first_rel"] > bound]
            if bad:
                fail.append(f"{name} --amp {amp}: a member's step-1 loss is not its lone run's: {bad}")
            ctx.results.save()

        # A run picked up from its periodic checkpoint at step steps // 2 = the run in one go.
        spec, half = specs[1], steps // 2
        d = tempfile.mkdtemp(prefix=f"{name}_partial_", dir=ctx.scratch)
        whole = backend.train(spec, ctx.dataset, ctx.execution(checkpoint_every=half, checkpoint_dir=d,
                                                               progress_every=1))
        point = partial_resume_point(d)
        resumed = backend.train(spec, ctx.dataset, ctx.execution(progress_every=1), resume=point)
        row = {"at": point.step if point else None, **_history_diff(whole.history, resumed.history, after=half)}
        entry[f"{name}_lone_pickup"] = row
        if point is None or not row["steps_equal"] or (row["max_rel"] or 0) > 1e-4:
            fail.append(f"{name}: a lone run picked up at step {half} is not the run in one go: {row}")
        dirs = [tempfile.mkdtemp(prefix=f"{name}_member_", dir=ctx.scratch) for _ in specs]
        whole_group = backend.train_group(specs, ctx.dataset, ctx.execution(checkpoint_every=half, progress_every=1),
                                          checkpoint_dirs=dirs)
        points = [partial_resume_point(x) for x in dirs]
        resumed_group = backend.train_group(specs, ctx.dataset, ctx.execution(progress_every=1), resume=points,
                                            checkpoint_dirs=[None] * len(specs))
        rows = [_history_diff(a.history, b.history, after=half) for a, b in zip(whole_group, resumed_group)]
        entry[f"{name}_group_pickup"] = rows
        if any(not r["steps_equal"] or (r["max_rel"] or 0) > 1e-4 for r in rows):
            fail.append(f"{name}: a group picked up at step {half} is not the group in one go: {rows}")
        ctx.results.save()


def _rate(marks: list[tuple[int, float]], warm: int) -> tuple[float, int]:
    """Steps per second between the first progress mark at or after ``warm`` and the last."""
    after = [m for m in marks if m[0] >= warm]
    if len(after) < 2:
        after = marks[-2:] if len(marks) >= 2 else marks
    if len(after) < 2 or after[-1][1] <= after[0][1]:
        return math.nan, 0
    return (after[-1][0] - after[0][0]) / (after[-1][1] - after[0][1]), after[-1][0] - after[0][0]


def section_probe_28(ctx: Context, entry: dict[str, Any]) -> None:
    """Issue 28's group for a fixed number of steps per variant; projected 300,000-step wall time."""
    size = ctx.size
    t_start = time.monotonic()
    seeds, batch = size["probe_seeds"], size["probe_batch"]
    group = len(seeds)
    known = {label: (backend, options, members) for label, backend, options, members in PROBE_VARIANTS}
    variants = [(label, known[label][0](), known[label][1], group if known[label][2] else 1)
                for label in size["probe_variants"] if ctx.jax_ok or not label.startswith("jax")]
    entry["setup"] = {"model": "beta_vae", "beta": 4.0, "seeds": seeds, "batch": batch,
                      "architecture": size["architecture"], "dataset": "dsprites (procedural)",
                      "timed_steps": size["probe_steps"], "warm_up_steps": size["probe_warm"]}
    for label, backend, options, members in variants:
        left = size["probe_cap_s"] - (time.monotonic() - t_start)
        if left < (30 if "compiled" in label else 5):
            entry[label] = {"status": "skipped", "reason": f"{left:.0f} s left of the section's {size['probe_cap_s']} s"}
            continue
        entry[label] = _probe_variant(ctx, backend, options, seeds[:members], group)
        ctx.results.save()
    _probe_best(entry)
    entry["device_grid_upload_s"] = _grid_uploads()


def _grid_uploads() -> dict[str, float]:
    """Seconds each whole-grid upload of this process took (``ExecutionOptions.device_grid``)."""
    out = {}
    for name in ("torch", "jax"):
        module = sys.modules.get(f"vaebench.plugins.backends.{name}.backend")
        for key, seconds in (getattr(module, "DEVICE_GRIDS", None).seconds.items() if module else ()):
            out[f"{name}:{key[0]}:{key[-1]}"] = round(seconds, 2)
    return out


def _probe_variant(ctx: Context, backend: Any, options: dict[str, Any], seeds: list[int], group: int) -> dict[str, Any]:
    """Issue 28's beta_vae (β = 4) for ``probe_warm + probe_steps`` steps, one member per
    seed (one seed: a lone run); steps/s after the warm-up, from the progress callbacks."""
    size = ctx.size
    options = dict(options)
    steps, warm, batch, members = size["probe_steps"] + size["probe_warm"], size["probe_warm"], size["probe_batch"], len(seeds)
    if not ctx.tiny:  # a variant's own length (fused steps want aligned cadences)
        steps = options.pop("probe_total_steps", steps)
    options.pop("probe_total_steps", None)
    specs = ctx.specs("beta_vae", backend.name, betas=4.0, seeds=seeds, steps=steps, batch_sizes=batch)
    marks: list[tuple[int, float]] = []
    report = max(1, min(100, warm))
    callbacks = [(lambda step, values: marks.append((step, time.perf_counter())))] + [None] * (members - 1)
    benchmark = options.pop("cudnn_benchmark", False)
    execution = ctx.execution(progress_every=report, **options)
    ctx.peak_reset()
    if benchmark:
        import torch

        torch.backends.cudnn.benchmark = True
    t0 = time.monotonic()
    try:
        if members > 1:
            trained = backend.train_group(specs, ctx.dataset, execution, callbacks)
        else:
            trained = [backend.train(specs[0], ctx.dataset, execution, callbacks[0])]
    finally:
        if benchmark:
            torch.backends.cudnn.benchmark = False
    t1 = time.monotonic()
    rate, counted = _rate(marks, warm)
    row = {"members": members, "steps": steps, "fuse_steps": execution.fuse_steps,
           "compile_s": round(getattr(trained[0], "compile_seconds", 0.0), 2),
           "steps_per_s": round(rate, 1), "counted_steps": counted,
           "ms_per_step": round(1000 / rate, 3) if rate == rate and rate > 0 else None,
           "images_per_s": round(rate * batch * members, 0) if rate == rate else None,
           "amp": trained[0].amp, "compiled": trained[0].compiled, "notes": list(execution.notes),
           "device_grid": execution.device_grid, "cudnn_benchmark": benchmark,
           "final_loss": [round(t.final_loss, 2) for t in trained], "wall_s": round(t1 - t0, 2),
           "gpu": ctx.gpu(t0, t1), "peak_mib": ctx.peak_mib()}
    if rate == rate and rate > 0:
        one = 300_000 / rate
        row["projected_300k_s"] = round(one if members > 1 else group * one, 0)
        row["projected_300k_note"] = (f"{group} members in one group" if members > 1
                                      else f"{group} lone runs one after another")
    return row


#: probe_28's variants: label, backend class, execution options (``cudnn_benchmark``: the
#: run with ``torch.backends.cudnn.benchmark``), whether it is the whole group (else a lone
#: run). ``device_grid: False``: batches rendered on the host and copied each step, as
#: before the grid was kept on the device (the ratio of that speed-up).
def _backend(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from vaebench.plugins.backends.jax.backend import JaxBackend
        from vaebench.plugins.backends.torch.backend import TorchBackend

        return {"torch": TorchBackend, "jax": JaxBackend}[name]()
    return make


PROBE_VARIANTS: list[tuple[str, Callable[[], Any], dict[str, Any], bool]] = [
    ("torch_fp32", _backend("torch"), {}, True),
    ("torch_bf16", _backend("torch"), {"amp": "bf16"}, True),
    ("jax_fp32", _backend("jax"), {}, True),
    ("jax_bf16", _backend("jax"), {"amp": "bf16"}, True),
    ("torch_fp32_lone", _backend("torch"), {}, False),
    ("torch_fp32_host_data", _backend("torch"), {"device_grid": False}, True),
    ("jax_fp32_host_data", _backend("jax"), {"device_grid": False}, True),
    ("torch_fp32_cudnn_benchmark", _backend("torch"), {"cudnn_benchmark": True}, True),
    # fused steps (``ExecutionOptions.fuse_steps``: a lax.scan of 100 steps a program); the
    # loop fuses up to its cadences' common divisor, so these run 20,000 steps (a history
    # point every 100) with progress every 100
    ("jax_fp32_fused", _backend("jax"), {"fuse_steps": 100, "probe_total_steps": 20_000}, True),
    ("jax_bf16_fused", _backend("jax"), {"fuse_steps": 100, "amp": "bf16", "probe_total_steps": 20_000}, True),
    ("jax_fp32_unfused_aligned", _backend("jax"), {"fuse_steps": 1, "probe_total_steps": 4_000}, True),
]


def _probe_best(entry: dict[str, Any]) -> None:
    rows = {k: v for k, v in entry.items() if isinstance(v, dict) and "projected_300k_s" in v}
    entry.pop("best", None)
    if rows:
        best = min(rows, key=lambda k: rows[k]["projected_300k_s"])
        entry["best"] = {"variant": best, "projected_300k_min": round(rows[best]["projected_300k_s"] / 60, 1)}


def _grid_row(ctx: Context, label: str, strategy: str, specs: list[Any]) -> dict[str, Any]:
    import grid  # benchmarks/grid.py

    ctx.peak_reset()
    t0 = time.monotonic()
    m = grid.measure(strategy, specs, device=ctx.device, eval_samples=ctx.size["grid_eval"],
                     metrics=ctx.size["grid_metrics"], figures=False, threads=ctx.size["threads"])
    t1 = time.monotonic()
    records = m.pop("records")
    steps = specs[0].steps
    members = m["concurrent"]
    peak = ctx.peak_mib()
    return {
        "label": label, "strategy": m["strategy"], "runs": m["runs"], "steps": steps,
        "wall_s": round(m["wall"], 2), "train_s": round(m["train"], 2), "eval_s": round(m["eval"], 2),
        "other_s": round(m["wall"] - m["train"] - m["eval"], 2),
        "images_per_s_end_to_end": round(m["images"] / m["wall"], 0),
        "images_per_s_training": round(m["images"] / m["train"], 0) if m["train"] > 0 else None,
        # one step of the whole grid: the group's step, or the sum of the lone runs' steps
        "grid_step_ms": round(1000 * m["train"] / steps, 3),
        "peak_mib": peak, "peak_mib_per_member": round(peak / members, 1) if peak is not None else None,
        "gpu": ctx.gpu(t0, t1), "statuses": sorted({r["status"] for r in records}),
        "devices": sorted({r["device"] for r in records}), "amp": sorted({r["amp"] for r in records}),
    }


def _ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """vectorized against sequential, per grid: end to end and training only."""
    out = {}
    for grid_name in sorted({r["label"].split(":")[0] for r in rows}):
        by = {r["strategy"]: r for r in rows if r["label"].split(":")[0] == grid_name}
        if {"vectorized", "sequential"} <= set(by):
            v, s = by["vectorized"], by["sequential"]
            per_step_v, per_step_s = v["train_s"] / v["steps"], s["train_s"] / s["steps"]
            fixed_v, fixed_s = v["wall_s"] - v["train_s"], s["wall_s"] - s["train_s"]
            out[grid_name] = {
                "end_to_end": round(s["wall_s"] / v["wall_s"], 2),
                "training": round(s["train_s"] / v["train_s"], 2) if v["train_s"] > 0 else None,
                # the same grid at more steps: training grows, evaluation and records do not
                **{f"end_to_end_at_{n}_steps": round((fixed_s + n * per_step_s) / (fixed_v + n * per_step_v), 2)
                   for n in (3_000, 30_000)},
            }
    return out


def section_grid_torch(ctx: Context, entry: dict[str, Any]) -> None:
    from vaebench.plugins.backends.torch.backend import device_grid

    size = ctx.size
    rows = entry.setdefault("rows", [])
    # the whole dSprites grid goes to the device once per process (before the first row,
    # so that no row pays for it; each grid loads its own dataset object: the same grid)
    device_grid(ctx.dataset, ctx.device if ctx.on_gpu else "cpu", None)
    entry["device_grid_upload_s"] = _grid_uploads()
    for name, betas, seeds in size["grids"]:
        specs = ctx.specs("beta_vae", "torch", steps=size["grid_steps"], batch_sizes=ctx.size["batch"], betas=betas, seeds=seeds)
        for strategy in ("vectorized", "sequential"):
            rows.append(_grid_row(ctx, f"{name}:{strategy}", strategy, specs))
            entry["ratios"] = _ratios(rows)
            ctx.results.save()
    for name, r in entry["ratios"].items():
        if ctx.on_gpu and r["end_to_end"] < 5:
            entry.setdefault("notes", []).append(f"{name}: vectorized {r['end_to_end']}x sequential end to end "
                                                 f"(goal 5x), {r['training']}x in training")
    _, betas, seeds = size["grids"][-1]
    try:
        _profile_group(ctx, entry, betas, seeds)
    except Exception:  # noqa: BLE001 - the grids above stand without it
        entry["profile_error"] = traceback.format_exc()


def _profile_group(ctx: Context, entry: dict[str, Any], betas: list[float], seeds: list[int]) -> None:
    """Where a vectorized step's time goes: torch.profiler over a few steps of the group,
    and the host's batch rendering timed alone."""
    import numpy as np
    import torch

    from vaebench.plugins.backends.torch.backend import TorchBackend

    steps = ctx.size["profile_steps"]
    specs = ctx.specs("beta_vae", "torch", betas=betas, seeds=seeds, steps=steps, batch_sizes=ctx.size["batch"])
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if ctx.on_gpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        TorchBackend().train_group(specs, ctx.dataset, ctx.execution())
    averages = prof.key_averages()
    entry["profile"] = {
        "members": len(specs), "steps": steps,
        "by_self_cpu": averages.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=50),
        **({"by_self_device": averages.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=50)}
           if ctx.on_gpu else {}),
    }
    rngs = [np.random.default_rng(s) for s in range(len(specs))]
    t0 = time.perf_counter()
    for _ in range(steps):
        np.stack([ctx.dataset.sample(64, rng)[0] for rng in rngs])
    entry["profile"]["host_batch_rendering_ms_per_step"] = round(1000 * (time.perf_counter() - t0) / steps, 3)
    from vaebench.plugins.backends.torch.backend import device_grid, draw_batches

    grid = device_grid(ctx.dataset, ctx.device, None)
    if grid is not None:  # what the training loops do now on a GPU (synchronised: the device's time too)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            draw_batches(ctx.dataset, 64, rngs, ctx.device, grid=grid)
        torch.cuda.synchronize()
        entry["profile"]["device_grid_batch_ms_per_step"] = round(1000 * (time.perf_counter() - t0) / steps, 3)


def section_grid_jax(ctx: Context, entry: dict[str, Any]) -> None:
    ctx.need_jax()
    size = ctx.size
    rows = entry.setdefault("rows", [])
    name, betas, seeds = size["grids"][0]
    specs = ctx.specs("beta_vae", "jax", steps=size["grid_steps"], batch_sizes=ctx.size["batch"], betas=betas, seeds=seeds)
    for strategy in ("vectorized", "sequential"):
        rows.append(_grid_row(ctx, f"{name}:{strategy}", strategy, specs))
        entry["ratios"] = _ratios(rows)
        ctx.results.save()
    torch_rows = {r["label"]: r for r in ctx.results.data["sections"].get("grid_torch", {}).get("rows", [])}
    entry["jax_vs_torch"] = {
        r["label"]: {"training": round(r["images_per_s_training"] / torch_rows[r["label"]]["images_per_s_training"], 2),
                     "end_to_end": round(r["images_per_s_end_to_end"] / torch_rows[r["label"]]["images_per_s_end_to_end"], 2)}
        for r in rows if r["label"] in torch_rows and r["images_per_s_training"]
        and torch_rows[r["label"]]["images_per_s_training"]}


def section_paths_compile(ctx: Context, entry: dict[str, Any]) -> None:
    if not ctx.size["compile"]:
        entry["reason"] = "--tiny: torch.compile takes ~30 s per graph on a CPU (inductor's C++ build)"
        return
    from torch._dynamo.utils import counters

    for label, models, axes, strategy in (
        ("compile_lone_capacity", ("beta_vae_capacity",), {}, "sequential"),
        ("compile_vectorized", ("beta_vae",), {"betas": 4.0, "seeds": [0, 1, 2]}, "vectorized"),
    ):
        before = {k: dict(v) for k, v in counters.items()}
        specs = ctx.specs(models, "torch", **axes)
        result, wall = ctx.run_grid(specs, strategy, ctx.size["paths_metrics"], compile=True, figures=False)
        _check_records(ctx, entry, label, result.records, amp="off", compiled=True, strategy=strategy)
        after = {k: dict(v) for k, v in counters.items()}
        entry[f"{label}_dynamo"] = {
            group: {k: v - before.get(group, {}).get(k, 0) for k, v in values.items()
                    if v != before.get(group, {}).get(k, 0)}
            for group, values in after.items() if group in ("frames", "stats", "graph_break", "recompiles")}
        entry[f"{label}_wall_s"] = round(wall, 2)
        ctx.results.save()
    # issue 28's group compiled (its graph is cached now): the throughput probe's variant
    from vaebench.plugins.backends.torch.backend import TorchBackend

    probe = ctx.results.data["sections"].setdefault("probe_28", {})
    probe["torch_fp32_compiled"] = entry["probe_28_compiled"] = _probe_variant(
        ctx, TorchBackend(), {"compile": True}, ctx.size["probe_seeds"], len(ctx.size["probe_seeds"]))
    _probe_best(probe)


def section_evaluation(ctx: Context, entry: dict[str, Any]) -> None:
    """One trained β-VAE's metric suite on the device and on the CPU, same weights."""
    import numpy as np
    import torch

    from vaebench.harness.evaluation import evaluate, held_out
    from vaebench.plugins.backends.torch.backend import TorchBackend, load_checkpoint
    from vaebench.plugins.manager import get_manager

    manager = get_manager()
    names = ["mig", "sap", "modularity", "explicitness", "irs", "beta_vae_metric", "factor_vae_metric"]
    metric_specs = [manager.metric(n) for n in names]
    spec = ctx.specs("beta_vae", betas=4.0, steps=ctx.size["eval_train_steps"])[0]
    trained = TorchBackend().train(spec, ctx.dataset, ctx.execution())
    directory = os.path.join(ctx.scratch, "eval_model")
    trained.save(directory)
    on_cpu = load_checkpoint(directory)  # the same weights on the CPU
    n = ctx.size["eval_n"]
    images, _ = held_out(ctx.dataset, n)
    # the CPU's encoding rate decides whether the reference sampler sizes fit in the budget
    t0 = time.perf_counter()
    codes_cpu = on_cpu.encode(images)
    cpu_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    codes_dev = trained.encode(images)
    dev_rate = n / (time.perf_counter() - t0)
    entry["encoding"] = {"n": n, "cpu_images_per_s": round(cpu_rate), "device_images_per_s": round(dev_rate),
                         "codes_max_rel_diff": _rel(codes_dev, codes_cpu), "device": trained.device,
                         "device_batch": _eval_batch_of(trained), "cpu_batch": _eval_batch_of(on_cpu),
                         "torch_threads": torch.get_num_threads()}
    options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in ctx.size["sampler"].items()}
    # the reference sizes encode up to dSprites' 737,280 grid images on each device
    cpu_estimate = 800_000 / cpu_rate + 20
    if not options and cpu_estimate > ctx.results.left() - 30:
        options = {m: {"profile": "fast"} for m in ("beta_vae_metric", "factor_vae_metric")}
        entry["sampler_note"] = (f"reference sizes would take ~{cpu_estimate:.0f} s on the CPU, "
                                 f"{ctx.results.left():.0f} s of budget left: profile fast on both")
    entry["sampler_options"] = options or "reference (default)"
    # warm-up (imports, first calls of each metric) outside the timings, at tiny sizes
    tiny = {k: dict(v) for k, v in SIZES["tiny"]["sampler"].items()}
    evaluate(on_cpu, spec, ctx.dataset, metric_specs, ctx.execution(eval_samples=200), tiny)
    for label, model in (("device", trained), ("cpu", on_cpu)):
        execution = ctx.execution(eval_samples=n)
        t0 = time.perf_counter()
        values, params, _ = evaluate(model, spec, ctx.dataset, metric_specs, execution, options)
        seconds = time.perf_counter() - t0
        timing = {m: {k: (params.get(m) or {}).get(k) for k in ("images_requested", "images_encoded")}
                  for m in ("beta_vae_metric", "factor_vae_metric")}
        entry[label] = {"seconds": round(seconds, 2), "values": {k: v for k, v in values.items() if "." not in k},
                        "errors": {k: v["error"] for k, v in params.items() if isinstance(v, dict) and "error" in v},
                        "sampler_encoded": timing}
        ctx.results.save()
    entry["cpu_over_device"] = round(entry["cpu"]["seconds"] / entry["device"]["seconds"], 2)
    diffs = {k: abs(entry["device"]["values"][k] - entry["cpu"]["values"].get(k, np.nan))
             for k in entry["device"]["values"]}
    entry["value_abs_diff"] = diffs
    errors = entry["device"]["errors"] or entry["cpu"]["errors"]
    if errors:
        entry.setdefault("failures", []).append(f"metric errors: {errors}")


def _eval_batch_of(trained: Any) -> int:
    from vaebench.plugins.backends.torch.backend import eval_batch

    return eval_batch(trained.device)


# ----------------------------------------------------------------------------- summary & figure


def summarise(results: Results) -> None:
    s = results.data["sections"]
    summary: dict[str, Any] = {"statuses": {k: v["status"] for k, v in s.items()},
                               "failures": {k: v["failures"] for k, v in s.items() if v.get("failures")},
                               "errors": {k: v["error"].strip().splitlines()[-1] for k, v in s.items()
                                          if v.get("status") == "error"}}
    if "ratios" in s.get("grid_torch", {}):
        summary["torch_vectorized_over_sequential"] = s["grid_torch"]["ratios"]
    if "ratios" in s.get("grid_jax", {}):
        summary["jax_vectorized_over_sequential"] = s["grid_jax"]["ratios"]
        summary["jax_vs_torch"] = s["grid_jax"].get("jax_vs_torch")
    if "best" in s.get("probe_28", {}):
        summary["probe_28_best"] = s["probe_28"]["best"]
    if "cpu_over_device" in s.get("evaluation", {}):
        summary["evaluation_cpu_over_device"] = s["evaluation"]["cpu_over_device"]
    results.data["summary"] = summary
    results.save()


def figure(results: Results, out: str) -> None:
    """``grid.png``: images/s per grid and strategy (training and end to end), both backends."""
    rows = [(name, r) for name in ("grid_torch", "grid_jax") for r in results.data["sections"].get(name, {}).get("rows", [])]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{name[5:]} {r['label']}" for name, r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    y = list(range(len(rows)))
    ax.barh([v - 0.2 for v in y], [r["images_per_s_training"] or 0 for _, r in rows], height=0.4, label="training")
    ax.barh([v + 0.2 for v in y], [r["images_per_s_end_to_end"] for _, r in rows], height=0.4, label="end to end")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("images / s (grid total)")
    ax.legend(fontsize=8)
    ax.set_title(f"{results.data['meta'].get('device_name', '')}: β grids, vectorized vs sequential", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "grid.png"), dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    meta: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "started": _now(), "device": args.device,
        "tiny": args.tiny, "budget_s": args.budget_s, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "env": {k: os.environ.get(k) for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                                               "JAX_PLATFORMS", "PYTHONPATH")},
    }
    try:
        import vaebench

        meta["vaebench"] = vaebench.__file__
    except Exception as exc:  # noqa: BLE001
        meta["vaebench"] = f"import failed: {exc}"
    try:
        meta["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                     text=True, timeout=10).stdout.strip()
    except Exception as exc:  # noqa: BLE001 - a copy of the tree without .git or git
        meta["git"] = f"unknown ({type(exc).__name__})"
    for name in ("flax", "optax", "duckdb", "pyarrow", "sklearn"):
        try:
            meta[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001
            meta[name] = f"unavailable: {type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        meta["device_name"] = torch.cuda.get_device_name(0)
        meta["cuda"] = torch.version.cuda
        meta["bf16_supported"] = torch.cuda.is_bf16_supported()
    return meta


def _probe_jax(device: str) -> tuple[bool, str, dict[str, Any]]:
    """Whether JAX can share this process with torch on ``device``, tried first in a child
    process (a clash of their CUDA libraries could kill the process, losing every
    section): torch on the GPU, then JAX's devices and one array on its GPU."""
    code = ("import torch; torch.ones(1, device='cuda' if {gpu} else 'cpu').sum().item(); import jax, "
            "jax.numpy as jnp; d = jax.devices({platform}); x = jax.device_put(jnp.ones(4), d[0]); "
            "print('JAX', jax.__version__, [str(v) for v in d], float(x.sum()))")
    gpu = device.startswith("cuda")
    code = code.format(gpu=gpu, platform=repr("gpu") if gpu else repr("cpu"))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return False, "JAX with torch in one process: the probe did not finish in 180 s", {}
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    line = next((x for x in tail if x.startswith("JAX ")), "")
    if proc.returncode != 0 or not line:
        return False, f"JAX with torch in one process failed (exit {proc.returncode}): {' | '.join(tail[-3:])}", {}
    return True, "", {"jax_probe": line}


SECTIONS: list[tuple[str, Callable[[Context, dict[str, Any]], None]]] = [
    ("auto", section_auto), ("parity", section_parity), ("dtype_probe", section_dtype_probe),
    ("paths_torch", section_paths_torch), ("paths_torch_vectorized", section_paths_torch_vectorized),
    ("paths_jax", section_paths_jax), ("equality", section_equality), ("probe_28", section_probe_28),
    ("grid_torch", section_grid_torch), ("grid_jax", section_grid_jax), ("paths_compile", section_paths_compile),
    ("evaluation", section_evaluation),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for results.json and grid.png (created)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the whole script in well under a minute on a CPU")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="seconds from the start after which no section starts unless it fits (default 420)")
    parser.add_argument("--only", default=None, help="comma-separated section names to run (default: all)")
    parser.add_argument("--probe-variants", default=None,
                        help="probe_28's variants, comma-separated (default: the size's; known: "
                             + ", ".join(label for label, *_ in PROBE_VARIANTS) + ")")
    parser.add_argument("--probe-steps", type=int, default=None, help="probe_28's timed steps per variant")
    parser.add_argument("--probe-cap-s", type=float, default=None, help="probe_28's seconds for all its variants")
    args = parser.parse_args(argv)
    if args.probe_variants:
        unknown = set(args.probe_variants.split(",")) - {label for label, *_ in PROBE_VARIANTS}
        if unknown:
            parser.error(f"unknown probe variant(s) {sorted(unknown)}")
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        parser.error(f"--device must be cuda, cuda:N or cpu, not {args.device!r}")
    names = [n for n, _ in SECTIONS]
    only = args.only.split(",") if args.only else names
    if set(only) - set(names):
        parser.error(f"unknown section(s) {sorted(set(only) - set(names))}; known: {', '.join(names)}")
    # JAX and torch share the GPU: no preallocation of 75% of it by XLA, and a cap on its pool.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.35")
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, HERE)  # benchmarks/grid.py
    os.makedirs(args.out, exist_ok=True)
    results = Results(args.out, args.budget_s, {})
    results.data["meta"] = _meta(args)
    results.save()
    jax_ok, jax_why, found = _probe_jax(args.device) if args.device != "cpu" else (True, "", {})
    results.data["meta"].update(found, jax_ok=jax_ok, **({"jax_problem": jax_why} if jax_why else {}))
    results.save()
    ctx = Context(args, results)
    ctx.size = {**ctx.size, **{k: v for k, v in (
        ("probe_variants", tuple(args.probe_variants.split(",")) if args.probe_variants else None),
        ("probe_steps", args.probe_steps), ("probe_cap_s", args.probe_cap_s)) if v is not None}}
    ctx.jax_ok, ctx.jax_why = jax_ok, jax_why
    if ctx.sampler is not None:
        results.data["meta"]["gpu_sampler"] = {"source": ctx.sampler.source, "error": ctx.sampler.error}
    try:
        for name, fn in SECTIONS:
            if name in only:
                need = NEEDS[name] if not args.tiny else 0
                results.run(name, lambda entry, fn=fn: fn(ctx, entry), need)
                summarise(results)
        try:
            figure(results, args.out)
        except Exception:  # noqa: BLE001
            results.data["summary"]["figure_error"] = traceback.format_exc()
    finally:
        if ctx.sampler is not None:
            ctx.sampler.stop()
        summarise(results)
        import shutil

        shutil.rmtree(ctx.scratch, ignore_errors=True)
    print(json.dumps(results.data["summary"], indent=1, default=_jsonable), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
