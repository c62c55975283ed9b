"""The JAX backend (Flax NNX + optax): device selection, a jit-compiled training
step, batched evaluation, checkpoints. Same contract as the torch backend
(``backends.base``): same batches for a seed, same history, same divergence rule.

The training step is one XLA program: the model's optional ``before_step`` (VQ-VAE's
dead-code reset), forward pass, loss, gradients, Adam update, and the updates of the
model's non-parameter state (VQ-VAE's EMA codebook). The loss is the model's
``loss_terms``, which combines its terms with the shared objectives of
:mod:`vaebench.plugins.objectives`; their β and capacity schedules are
traceable, so the step number is a traced ``int32`` argument and the step is compiled
once per model graph and batch shape, not once per step.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from dataclasses import asdict
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.allocator import retain_freed_memory
from vaebench.plugins.backends.base import (
    DeviceError,
    DeviceGrids,
    DeviceInfo,
    TRAINING_STATE,
    ExecutionOptions,
    ProgressCallback,
    ResumePoint,
    checkpoint_due,
    cpu_name,
    device_grid_wanted,
    draw_grid_indices,
    grid_chunks,
    group_key,
    load_training_meta,
    parse_device,
    restart_note,
    save_training_meta,
    write_partial,
    write_signals,
)
from vaebench.plugins.backends.jax.nets import ConvTranspose2x

#: Loss history keeps at most this many points per run (as the torch backend).
HISTORY_POINTS = 200
#: Rows per evaluation / encoding call, by device type: a GPU gets the torch backend's
#: CUDA batch (1,024; the sampler metrics encode up to 737,280 dSprites images).
EVAL_BATCH = {"cpu": 512, "cuda": 1024}


def eval_batch(device: str) -> int:
    """Evaluation batch for a device string (``cpu``, ``cuda:1``, ...)."""
    return EVAL_BATCH.get(device.split(":", 1)[0], EVAL_BATCH["cpu"])


def _gpus() -> list[Any]:
    try:
        return list(jax.devices("gpu"))
    except RuntimeError:  # no GPU platform in this jaxlib
        return []


def _resolve(device: str) -> tuple[DeviceInfo, Any]:
    gpus = _gpus()
    hint = "JAX sees no GPU here (install jax[cuda12] or use --device cpu or auto)"
    index = parse_device(device, len(gpus), hint)
    if index is None:
        return DeviceInfo("cpu", cpu_name()), jax.devices("cpu")[0]
    return DeviceInfo(f"cuda:{index}", gpus[index].device_kind), gpus[index]


def _training_device(execution: ExecutionOptions) -> tuple[DeviceInfo, Any]:
    """The device a training call runs on, noting what a CPU run ignores; on the CPU,
    freed memory stays in the heap (``allocator.retain_freed_memory``: XLA's per-step
    buffers otherwise cost ~22 k page faults a step)."""
    info, jax_device = _resolve(execution.device)
    if info.device == "cpu":
        retain_freed_memory()
        if execution.threads and execution.threads < (os.cpu_count() or 1):
            execution.notes.append(f"the JAX backend ignores --threads {execution.threads} (XLA uses all CPU cores)")
    return info, jax_device


def resolve_device(device: str) -> DeviceInfo:
    """``auto`` -> ``cuda:0`` when JAX sees a GPU, else ``cpu``; validates ``cuda:N`` (``gpu`` = ``cuda``)."""
    return _resolve(device)[0]


@partial(jax.jit, donate_argnums=0)
def _put_rows(grid: jax.Array, rows: jax.Array, start: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(grid, rows, start, 0)


def _upload_grid(dataset: Any, jax_device: Any) -> jax.Array:
    """``dataset``'s whole grid ``(N, H, W, C)`` uint8 on ``jax_device``, filled chunk by
    chunk in place (the buffer is donated), so the device holds it once."""
    with jax.default_device(jax_device):
        grid = jnp.zeros((int(dataset.grid_size), *dataset.image_shape), jnp.uint8)
        for start, images in grid_chunks(dataset):
            grid = _put_rows(grid, jax.device_put(images, jax_device), np.int32(start))
    return grid


#: The grids kept on devices in this process (``ExecutionOptions.device_grid``).
DEVICE_GRIDS = DeviceGrids(_upload_grid)


def device_grid(dataset: Any, jax_device: Any, wanted: bool | None) -> jax.Array | None:
    """``dataset``'s whole grid on ``jax_device`` (``base.device_grid_wanted``: by default on
    a GPU where it fits), uploaded once per process; ``None``: batches come from the host."""
    on_gpu = jax_device.platform != "cpu"
    memory = None
    if on_gpu:
        try:
            memory = (jax_device.memory_stats() or {}).get("bytes_limit")
        except Exception:  # noqa: BLE001 - not every platform reports it
            memory = None
    if not device_grid_wanted(dataset, on_gpu, wanted, memory):
        return None
    return DEVICE_GRIDS.get(dataset, jax_device)


@partial(jax.jit, static_argnums=2)
def _gather(grid: jax.Array, index: jax.Array, scale: float) -> jax.Array:
    x = jnp.take(grid, index, axis=0).astype(jnp.float32)
    return x * np.float32(scale) if scale != 1 else x


def device_batches(
    dataset: Any, n: int, rngs: Sequence[np.random.Generator], jax_device: Any, stacked: bool = True,
    compact: bool | None = None, grid: jax.Array | None = None,
) -> tuple[jax.Array, list[np.ndarray]]:
    """One batch per generator, drawn as ``dataset.sample(n, rng)`` draws it: images
    ``(len(rngs), n, H, W, C)`` float32 on ``jax_device`` (without ``stacked``, one
    generator's ``(n, H, W, C)``) and each batch's factors. With ``grid``
    (:func:`device_grid`) only the drawn indices travel and the batch is gathered on the
    device; otherwise on a GPU a factor-grid dataset's uint8 images (``sample_uint8``, a
    quarter of the bytes) travel. Each way they become the same float32 values (as the
    torch backend's ``draw_batches``; ``compact`` forces the uint8 copy)."""
    if grid is not None:
        index, factors = draw_grid_indices(dataset, n, rngs)
        index = jax.device_put(index.astype(np.int32) if stacked else index[0].astype(np.int32), jax_device)
        return _gather(grid, index, float(np.float32(getattr(dataset, "pixel_scale", 1.0)))), factors
    on_gpu = jax_device.platform != "cpu"
    compact = (on_gpu if compact is None else compact) and hasattr(dataset, "sample_uint8")
    draws = [dataset.sample_uint8(n, rng) if compact else dataset.sample(n, rng) for rng in rngs]
    images = np.stack([d[0] for d in draws]) if stacked else draws[0][0]
    if not compact:
        return jax.device_put(np.asarray(images, dtype=np.float32), jax_device), [d[1] for d in draws]
    x = jax.device_put(images, jax_device).astype(jnp.float32)
    scale = np.float32(getattr(dataset, "pixel_scale", 1.0))
    return (x * scale if scale != 1 else x), [d[1] for d in draws]


# -- the compiled steps ----------------------------------------------------------------


def loss_and_grads(
    graphdef: Any, params: Any, others: Any, x: jax.Array, step: jax.Array, key: jax.Array | None = None,
    factors: jax.Array | None = None, eps: jax.Array | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(gradients, updated non-parameter state, terms)`` of the model's ``loss_terms``
    for one batch (traceable; the training step's core, exposed for the equivalence
    tests). ``terms``: ``loss``, ``recon``, ``kl``, ``capacity`` (or ``None``), ``signals``."""

    def loss_fn(p: Any) -> tuple[jax.Array, tuple[dict[str, Any], Any]]:
        # NNX variables may be changed only at the trace level they were created at, and a
        # model's state updates (EMA codebook) happen inside this trace: fresh variables.
        model = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, others))
        terms = model.loss_terms(x, step, key=key, factors=factors, eps=eps)
        _, _, new_others = nnx.split(model, nnx.Param, ...)
        kept = {k: terms[k] for k in ("loss", "recon", "kl", "capacity", "signals")}
        return terms["loss"], (kept, new_others)

    (_, (terms, new_others)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, new_others, terms


def _train_step(
    graphdef: Any, params: Any, others: Any, opt_state: Any, x: jax.Array, factors: Any, key: jax.Array,
    step: jax.Array, lr: jax.Array,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    step_key = jax.random.fold_in(key, step)
    model = nnx.merge(graphdef, params, others)
    if hasattr(model, "before_step"):  # may change parameters too (dead-code reset)
        model.before_step(x, step, step_key, factors)
        _, params, others = nnx.split(model, nnx.Param, ...)
    grads, others, values = loss_and_grads(graphdef, params, others, x, step, step_key, factors)
    updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), others, opt_state, values


_train_step_jit = jax.jit(_train_step, static_argnums=0, donate_argnums=(1, 2, 3))

#: (graphdef, batch shape, dtype, device) -> compiled training step. The graph holds the
#: architecture and the objective's hyperparameters; the learning rate, seed and step
#: count are arguments, so runs that differ only in those share one compilation.
#: Vectorized groups (``vectorized.py``) keep their compiled steps here too.
_COMPILED: dict[tuple[Any, ...], Any] = {}
_COMPILED_MAX = 8


def _compile_cached(cache_key: tuple[Any, ...], jitted: Any, *args: Any) -> tuple[Any, float]:
    """``jitted`` lowered and compiled ahead of time for ``args`` (cached under ``cache_key``),
    and the seconds spent tracing + compiling it (0 if cached)."""
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    if len(_COMPILED) >= _COMPILED_MAX:  # a long grid over β: keep the newest few
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[cache_key] = compiled
    return compiled, seconds


def _compiled_step(graphdef: Any, params: Any, others: Any, opt_state: Any, x: jax.Array, factors: Any,
                   key: jax.Array, step: Any, lr: Any, device: Any) -> tuple[Any, float]:
    """The AOT-compiled training step and the seconds spent tracing + compiling it (0 if cached)."""
    fshape = None if factors is None else (factors.shape, str(factors.dtype))
    cache_key = (graphdef, x.shape, str(x.dtype), fshape, str(device))
    return _compile_cached(cache_key, _train_step_jit, graphdef, params, others, opt_state, x, factors, key, step, lr)


# A conditional model without factors infers them (``encode``) or uses its default
# condition (``decode``); ``factors`` is then ``None``, a separate compilation.


@partial(jax.jit, static_argnums=(0, 4))
def _eval_batch(graphdef: Any, state: Any, x: jax.Array, factors: Any, want_recons: bool) -> tuple[jax.Array, ...]:
    m = nnx.merge(graphdef, state)
    if getattr(m, "needs_factors", False) and factors is None:
        factors = m.infer_factors(x)
    mu, logvar = m.encode(x, factors)
    logits = m.decode(mu, factors).astype(jnp.float32)
    out = (mu.astype(jnp.float32), logvar.astype(jnp.float32), m.recon_errors(x, logits))
    return out + (jax.nn.sigmoid(logits),) if want_recons else out


@partial(jax.jit, static_argnums=0)
def _encode_batch(graphdef: Any, state: Any, x: jax.Array, factors: Any) -> jax.Array:
    return nnx.merge(graphdef, state).encode(x, factors)[0].astype(jnp.float32)


@partial(jax.jit, static_argnums=0)
def _decode_batch(graphdef: Any, state: Any, z: jax.Array, factors: Any) -> jax.Array:
    return jax.nn.sigmoid(nnx.merge(graphdef, state).decode(z, factors).astype(jnp.float32))


def _set_compute_dtype(model: nnx.Module, dtype: Any) -> None:
    """Compute dense/conv layers in ``dtype`` (parameters stay float32): bf16 AMP."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (nnx.Linear, nnx.Conv, nnx.ConvTranspose, ConvTranspose2x)):
            node.dtype = dtype


def _effective_amp(device: str, amp: str, notes: list[str]) -> str:
    from vaebench.plugins.backends.base import AMP_MODES, amp_choices

    if amp not in AMP_MODES:
        raise DeviceError(f"unknown AMP mode {amp!r} (use {amp_choices()})")
    if amp == "fp16":
        notes.append("fp16 AMP is not implemented in the JAX backend; trained in float32")
        return "off"
    return amp


class TrainedJaxModel:
    """A trained JAX model with its training record (see ``backends.base.TrainedModel``).

    ``compile_seconds``: time spent tracing and compiling the training step (not
    part of ``train_seconds``; 0 when an earlier run of the same graph and batch
    shape had compiled it). ``notes`` is the run's notes list: the posterior-collapse
    check of :meth:`evaluate` adds its line there, as the torch backend's does.
    ``signals``: per history point, the model's training signals (scheduled β, VQ-VAE's
    perplexity, ...), as the torch backend's. A conditional model (``needs_factors``)
    takes factor rows ``(N, K)`` in :meth:`evaluate`, :meth:`encode` and :meth:`decode`;
    without them encoding infers them and decoding uses the model's default condition.
    """

    def __init__(self, model: nnx.Module, spec: Any, device: str, amp: str, compiled: bool,
                 jax_device: Any = None, notes: list[str] | None = None) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.jax_device = jax_device if jax_device is not None else jax.devices("cpu")[0]
        self.amp = amp
        self.compiled = compiled
        self.history: list[dict[str, float]] = []
        self.signals: list[dict[str, float]] = []
        self.notes: list[str] = notes if notes is not None else []
        self.steps_done = 0
        self.diverged = False
        self.train_seconds = 0.0
        self.compile_seconds = 0.0
        self.final_loss = math.nan
        #: ``(step, optax state, numpy generator, progress)`` at the last step: what continuing
        #: the run needs beyond the weights (``save`` writes it as ``training_state.*``);
        #: ``progress`` (seconds, history, signals so far) only in a periodic checkpoint.
        self.training_state: tuple[int, Any, np.random.Generator, dict | None] | None = None

    def _chunks(self, arrays: np.ndarray, factors: np.ndarray | None = None):
        """Chunks of at most :func:`eval_batch` rows on the device, zero-padded to a power of
        two >= 64 (at most 4 compiled shapes per function): ``(chunk, factor chunk or None,
        n_valid)``. Factors are passed only to a model that reads them."""
        if not getattr(self.model, "needs_factors", False):
            factors = None
        size = min(eval_batch(self.device), max(64, 1 << max(0, len(arrays) - 1).bit_length()))

        def pad(a: np.ndarray, dtype: Any) -> np.ndarray:
            a = np.asarray(a, dtype=dtype)
            return a if len(a) == size else np.concatenate([a, np.zeros((size - len(a), *a.shape[1:]), dtype)])

        for start in range(0, len(arrays), size):
            chunk = arrays[start : start + size]
            f = None if factors is None else jax.device_put(pad(factors[start : start + size], np.int32), self.jax_device)
            yield jax.device_put(pad(chunk, np.float32), self.jax_device), f, len(chunk)

    def evaluate(
        self, images: np.ndarray, reconstructions: bool = False, factors: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """``(means, logvars, recon_errors)``, plus the Bernoulli means ``(N, H, W, C)``
        decoded from the posterior means when ``reconstructions``."""
        graphdef, state = nnx.split(self.model)
        parts: list[list[np.ndarray]] = [[] for _ in range(4 if reconstructions else 3)]
        for x, f, n in self._chunks(images, factors):
            for acc, out in zip(parts, _eval_batch(graphdef, state, x, f, reconstructions)):
                acc.append(np.asarray(out[:n]))
        out = tuple(np.concatenate(p) for p in parts)
        return out

    def encode(self, images: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        graphdef, state = nnx.split(self.model)
        return np.concatenate(
            [np.asarray(_encode_batch(graphdef, state, x, f)[:n]) for x, f, n in self._chunks(images, factors)]
        )

    def decode(self, z: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Latents ``(N, D)`` -> Bernoulli means ``(N, H, W, C)`` in [0, 1]."""
        graphdef, state = nnx.split(self.model)
        return np.concatenate(
            [np.asarray(_decode_batch(graphdef, state, b, f)[:n]) for b, f, n in self._chunks(z, factors)]
        )

    def save(self, directory: str) -> dict[str, str]:
        """``model.safetensors`` (the flattened NNX state, names like ``encoder.conv1.kernel``)
        + ``config.json``; no pickle."""
        from safetensors.numpy import save_file

        os.makedirs(directory, exist_ok=True)
        weights = os.path.join(directory, "model.safetensors")
        config = os.path.join(directory, "config.json")
        save_file(flat_state(self.model), weights, metadata={"format": "flax.nnx", "run_id": self.spec.run_id})
        with open(config, "w") as fh:
            json.dump({
                "spec": asdict(self.spec), "backend": "jax", "latent_dim": int(self.model.latent_dim),
                "image_shape": list(getattr(self.model, "image_shape", ())) or None, "layout": "NHWC",
            }, fh, indent=2)
        artifacts = {"checkpoint": weights, "config": config, **write_signals(directory, self.signals)}
        if self.training_state is not None:
            step, opt_state, rng, progress = self.training_state
            path = os.path.join(directory, TRAINING_STATE + ".safetensors")
            save_file(_flat_tree(opt_state), path, metadata={"format": "optax", "run_id": self.spec.run_id})
            save_training_meta(directory, step, rng, **({"progress": progress} if progress else {}))
            artifacts["training_state"] = path
        return artifacts


def _flat_tree(tree: Any) -> dict[str, np.ndarray]:
    """An optax state (any pytree of arrays) as ``{key path: array}``."""
    return {jax.tree_util.keystr(path): np.array(leaf, order="C")
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _restore_tree(like: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`_flat_tree`: ``like``'s structure (a freshly initialised optax
    state of the same model) with the saved leaves; a missing leaf or a shape that
    differs is a ``ValueError``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    restored = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name not in arrays or tuple(arrays[name].shape) != tuple(np.shape(leaf)):
            raise ValueError(f"the checkpoint's training state does not match this model's optimizer at {name}")
        restored.append(jnp.asarray(arrays[name], dtype=jnp.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, restored)


def flat_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of ``model`` as ``{"dotted.path": array}``."""
    return {
        ".".join(str(p) for p in path): np.array(node.get_value(), order="C")  # 0-d stays 0-d
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Variable)
    }


def load_flat_state(model: nnx.Module, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`flat_state` (in place); every variable must be present with its shape."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            name = ".".join(str(p) for p in path)
            if name not in arrays:
                raise ValueError(f"checkpoint has no variable {name!r}")
            if tuple(arrays[name].shape) != tuple(node.get_value().shape):
                raise ValueError(f"checkpoint variable {name!r} has shape {arrays[name].shape}, model {node.get_value().shape}")
            node.set_value(jnp.asarray(arrays[name]))



class JaxBackend:
    name = "jax"
    #: ``train`` takes ``resume`` (``vaebench continue``); ``train_group`` takes ``resume``
    #: and ``checkpoint_dirs`` (periodic checkpoints of each member).
    supports_resume = True
    supports_group_resume = True

    def resolve_device(self, device: str) -> DeviceInfo:
        return resolve_device(device)

    def build(self, spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> nnx.Module:
        """The model of ``spec``; a factory that takes a ``dataset`` keyword gets it."""
        from vaebench.plugins.manager import get_manager

        return get_manager().model(spec.model).build("jax", spec, image_shape, dataset)

    def group_key(self, spec: Any) -> tuple | None:
        """Specs with equal keys can train together in :meth:`train_group`; ``None``: alone."""
        return group_key(spec)

    def train_group(
        self,
        specs: Sequence[Any],
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: Sequence[ProgressCallback | None] | None = None,
        resume: Sequence[ResumePoint | None] | None = None,
        checkpoint_dirs: Sequence[str | None] | None = None,
    ) -> list[TrainedJaxModel]:
        """Train grid points that differ only in β, C, γ, schedules or seed as one
        vmapped, jitted program (see ``vectorized.py``); one trained model per spec.
        ``resume`` (one point per member, one step for all) and ``checkpoint_dirs`` as in
        ``train``."""
        from vaebench.plugins.backends.jax.vectorized import train_group

        return train_group(self, specs, dataset, execution, on_progress, resume=resume,
                           checkpoint_dirs=checkpoint_dirs)

    def train(
        self,
        spec: Any,
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: ProgressCallback | None = None,
        model: nnx.Module | None = None,
        resume: ResumePoint | None = None,
    ) -> TrainedJaxModel:
        """Train ``spec`` on ``dataset`` with Adam; stops early (``diverged``) on a non-finite loss.
        With ``resume``, go on from its checkpoint at step ``resume.step + 1`` (weights, optax
        state and the batch stream as the parent left them; step keys need no state).

        Batches come from ``np.random.default_rng(spec.seed)`` (the torch backend's
        batches); step ``t``'s PRNG key is ``fold_in(key(spec.seed), t)`` (the
        reparameterisation noise is ``normal`` of it); parameters are initialised from
        ``nnx.Rngs(spec.seed)``.
        """
        info, jax_device = _training_device(execution)
        amp = _effective_amp(info.device, execution.amp, execution.notes)
        rng = np.random.default_rng(spec.seed)
        first = 1 if resume is None else resume.step + 1
        with jax.default_device(jax_device), interrupt.deferred():
            if model is None:
                model = self.build(spec, dataset.image_shape, dataset)
            if resume is not None:
                from safetensors.numpy import load_file

                load_flat_state(model, load_file(os.path.join(resume.directory, "model.safetensors")))
            if amp == "bf16":
                _set_compute_dtype(model, jnp.bfloat16)
            graphdef, params, others = nnx.split(model, nnx.Param, ...)
            params, others = jax.device_put((params, others), jax_device)
            opt_state = optax.adam(spec.lr).init(params)
            if resume is not None:
                if load_training_meta(resume.directory, resume.step, rng) is None:
                    rng = np.random.default_rng([spec.seed, resume.step])
                    execution.notes.append(restart_note(resume.step))
                else:
                    from safetensors.numpy import load_file

                    saved = load_file(os.path.join(resume.directory, TRAINING_STATE + ".safetensors"))
                    opt_state = jax.device_put(_restore_tree(opt_state, saved), jax_device)
            key = jax.device_put(jax.random.key(spec.seed), jax_device)

            trained = TrainedJaxModel(model, spec, info.device, amp, compiled=True, jax_device=jax_device,
                                      notes=execution.notes)
            if resume is not None:
                trained.history, trained.signals = list(resume.history), list(resume.signals)
                trained.steps_done = resume.step
            history_every = max(1, spec.steps // HISTORY_POINTS)
            report_every = max(1, execution.progress_every)

            conditional = bool(getattr(model, "needs_factors", False))
            grid = device_grid(dataset, jax_device, execution.device_grid)

            def batch() -> tuple[jax.Array, jax.Array | None]:
                x, (factors,) = device_batches(dataset, spec.batch_size, [rng], jax_device, stacked=False, grid=grid)
                f = jax.device_put(np.asarray(factors, dtype=np.int32), jax_device) if conditional else None
                return x, f

            x, f = batch()
            lr = np.float32(spec.lr)
            step_fn, trained.compile_seconds = _compiled_step(
                graphdef, params, others, opt_state, x, f, key, np.int32(first), lr, jax_device
            )
            start = time.perf_counter()
            for step in range(first, spec.steps + 1):
                if step > first:
                    x, f = batch()
                params, others, opt_state, terms = step_fn(params, others, opt_state, x, f, key, np.int32(step), lr)
                last = step == spec.steps
                if step % history_every == 0 or step % report_every == 0 or last:
                    values = {k: float(terms[k]) for k in ("loss", "recon", "kl")}
                    capacity = None if terms["capacity"] is None else float(terms["capacity"])
                    signals = {k: float(v) for k, v in terms["signals"].items()}
                    trained.steps_done = step
                    point = {"step": step, **values, "capacity": capacity}
                    if not all(math.isfinite(v) for v in values.values()):
                        trained.diverged = True
                        trained.final_loss = values["loss"]
                        trained.history.append(point)
                        if signals:
                            trained.signals.append({"step": step, **signals})
                        break
                    if step % history_every == 0 or last:
                        trained.history.append(point)
                        if signals:
                            trained.signals.append({"step": step, **signals})
                    trained.final_loss = values["loss"]
                    if on_progress is not None and (step % report_every == 0 or last):
                        elapsed = time.perf_counter() - start
                        on_progress(step, {**values,
                                           "images_per_second": (step - first + 1) * spec.batch_size / elapsed})
                if checkpoint_due(execution, step, spec.steps):
                    nnx.update(model, params, others)
                    trained.steps_done = step
                    seconds = time.perf_counter() - start + (resume.train_seconds if resume is not None else 0.0)
                    trained.training_state = (step, opt_state, rng, {
                        "train_seconds": seconds, "history": trained.history, "signals": trained.signals})
                    write_partial(trained, str(execution.checkpoint_dir))
                interrupt.check()
            jax.block_until_ready(params)
            trained.train_seconds = time.perf_counter() - start + (resume.train_seconds if resume is not None else 0.0)
            if not trained.diverged:
                trained.training_state = (trained.steps_done, opt_state, rng, None)
        nnx.update(model, params, others)
        if hasattr(model, "notes"):
            execution.notes.extend(f"{spec.model}: {note}" for note in model.notes())
        if amp == "bf16":
            _set_compute_dtype(model, None)  # evaluate in float32, as the torch backend does
        return trained


def load_checkpoint(directory: str) -> TrainedJaxModel:
    """Rebuild a trained model from ``model.safetensors`` + ``config.json`` (no pickle)."""
    from safetensors.numpy import load_file

    from vaebench.plugins.runspec import RunSpec

    with open(os.path.join(directory, "config.json")) as fh:
        config = json.load(fh)
    if config.get("backend") != "jax":
        raise ValueError(f"{directory} holds a {config.get('backend')!r} checkpoint, not a JAX one")
    spec = RunSpec.from_dict(config["spec"])
    from vaebench.plugins.manager import get_manager

    manager = get_manager()
    image_shape = config.get("image_shape")
    dataset = None
    # The dataset is loaded only where needed: no stored image shape, or a factory that
    # reads it (cvae: the number of labels).
    if not image_shape or "dataset" in inspect.signature(manager.model(spec.model).factory("jax")).parameters:
        dataset = manager.dataset(spec.dataset).loader()(path=spec.dataset_path)
        image_shape = image_shape or dataset.image_shape
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        model = JaxBackend().build(spec, tuple(image_shape), dataset)
        load_flat_state(model, load_file(os.path.join(directory, "model.safetensors")))
    return TrainedJaxModel(model, spec, "cpu", "off", False, jax_device=cpu)
