"""What the JAX backend's lone runs (``backend.py``) and vectorized groups
(``vectorized.py``) share: the device, batches (drawn on the host or gathered from a
grid kept on the device), the cache of compiled training steps, AMP, the trained model
and the (de)serialisation of its weights and optax state."""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vaebench.plugins.backends import allocator
from vaebench.plugins.backends.base import (
    AMP_MODES, amp_choices,
    DeviceError, DeviceInfo, TRAINING_STATE, ExecutionOptions, cpu_name, parse_device, save_training_meta
)
from vaebench.plugins.backends.device_grid import DeviceGrids, device_grid_wanted, draw_grid_indices, grid_chunks
from vaebench.plugins.backends.jax.nets import ConvTranspose2x
from vaebench.plugins.backends.loop import TrainedRecord, write_config
from vaebench.plugins.contract import capability

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


def resolve(device: str) -> tuple[DeviceInfo, Any]:
    gpus = _gpus()
    hint = "JAX sees no GPU here (install jax[cuda12] or use --device cpu or auto)"
    index = parse_device(device, len(gpus), hint)
    if index is None:
        return DeviceInfo("cpu", cpu_name()), jax.devices("cpu")[0]
    return DeviceInfo(f"cuda:{index}", gpus[index].device_kind), gpus[index]


def training_device(execution: ExecutionOptions) -> tuple[DeviceInfo, Any]:
    """The device a training call runs on, noting what a CPU run ignores; on the CPU,
    freed memory stays in the heap (``allocator.retain_freed_memory``: XLA's per-step
    buffers otherwise cost ~22 k page faults a step)."""
    info, jax_device = resolve(execution.device)
    if info.device == "cpu":
        allocator.retain_freed_memory()
        if execution.threads and execution.threads < (os.cpu_count() or 1):
            execution.notes.append(f"the JAX backend ignores --threads {execution.threads} (XLA uses all CPU cores)")
    return info, jax_device


def resolve_device(device: str) -> DeviceInfo:
    """``auto`` -> ``cuda:0`` when JAX sees a GPU, else ``cpu``; validates ``cuda:N`` (``gpu`` = ``cuda``)."""
    return resolve(device)[0]


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
    """``dataset``'s whole grid on ``jax_device`` (``device_grid.device_grid_wanted``: by default on
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
def gather_images(grid: jax.Array, index: jax.Array, scale: float) -> jax.Array:
    """Grid rows ``index`` (any shape ``S``) as float32 images ``(*S, H, W, C)`` times
    ``scale`` (the dataset's ``pixel_scale``); traceable inside a larger program."""
    x = jnp.take(grid, index, axis=0).astype(jnp.float32)
    return x * np.float32(scale) if scale != 1 else x


def pixel_scale(dataset: Any) -> float:
    """The dataset's ``pixel_scale`` (1 when it has none) as the float32 value batches use."""
    return float(np.float32(capability(dataset, "pixel_scale")))


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
        return gather_images(grid, index, pixel_scale(dataset)), factors
    on_gpu = jax_device.platform != "cpu"
    sample_uint8 = capability(dataset, "sample_uint8")
    compact = (on_gpu if compact is None else compact) and sample_uint8 is not None
    draws = [sample_uint8(n, rng) if compact else dataset.sample(n, rng) for rng in rngs]
    images = np.stack([d[0] for d in draws]) if stacked else draws[0][0]
    if not compact:
        return jax.device_put(np.asarray(images, dtype=np.float32), jax_device), [d[1] for d in draws]
    x = jax.device_put(images, jax_device).astype(jnp.float32)
    scale = np.float32(capability(dataset, "pixel_scale"))
    return (x * scale if scale != 1 else x), [d[1] for d in draws]



#: (graphdef, batch shape, dtype, device) -> compiled training step. The graph holds the
#: architecture and the objective's hyperparameters; the learning rate, seed and step
#: count are arguments, so runs that differ only in those share one compilation.
#: Vectorized groups (``vectorized.py``) keep their compiled steps here too.
COMPILED: dict[tuple[Any, ...], Any] = {}
COMPILED_MAX = 8


def compile_cached(cache_key: tuple[Any, ...], jitted: Any, *args: Any) -> tuple[Any, float]:
    """``jitted`` lowered and compiled ahead of time for ``args`` (cached under ``cache_key``),
    and the seconds spent tracing + compiling it (0 if cached)."""
    if cache_key in COMPILED:
        return COMPILED[cache_key], 0.0
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    if len(COMPILED) >= COMPILED_MAX:  # a long grid over β: keep the newest few
        COMPILED.pop(next(iter(COMPILED)))
    COMPILED[cache_key] = compiled
    return compiled, seconds

# condition (``decode``); ``factors`` is then ``None``, a separate compilation.


@partial(jax.jit, static_argnums=(0, 4))
def _eval_batch(graphdef: Any, state: Any, x: jax.Array, factors: Any, want_recons: bool) -> tuple[jax.Array, ...]:
    m = nnx.merge(graphdef, state)
    if capability(m, "needs_factors") and factors is None:
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


def set_compute_dtype(model: nnx.Module, dtype: Any) -> None:
    """Compute dense/conv layers in ``dtype`` (parameters stay float32): bf16 AMP."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (nnx.Linear, nnx.Conv, nnx.ConvTranspose, ConvTranspose2x)):
            node.dtype = dtype


def effective_amp(device: str, amp: str, notes: list[str]) -> str:
    if amp not in AMP_MODES:
        raise DeviceError(f"unknown AMP mode {amp!r} (use {amp_choices()})")
    if amp == "fp16":
        notes.append("fp16 AMP is not implemented in the JAX backend; trained in float32")
        return "off"
    return amp


class TrainedJaxModel(TrainedRecord):
    """A trained JAX model with its training record (``loop.TrainedRecord``).

    ``compile_seconds``: time spent tracing and compiling the training step (not
    part of ``train_seconds``; 0 when an earlier run of the same graph and batch
    shape had compiled it). ``notes`` is the run's notes list: the posterior-collapse
    check of :meth:`evaluate` adds its line there, as the torch backend's does.
    A conditional model (``needs_factors``) takes factor rows ``(N, K)`` in
    :meth:`evaluate`, :meth:`encode` and :meth:`decode`; without them encoding infers
    them and decoding uses the model's default condition. ``training_state``:
    ``(step, optax state, numpy generator, progress)`` at the last step (``save``
    writes it as ``training_state.*``; ``progress`` only in a periodic checkpoint).
    """

    def __init__(self, model: nnx.Module, spec: Any, device: str, amp: str, compiled: bool,
                 jax_device: Any = None, notes: list[str] | None = None,
                 image_shape: Sequence[int] | None = None) -> None:
        super().__init__(spec, device, amp, compiled, image_shape or capability(model, "image_shape"))
        self.model = model
        self.jax_device = jax_device if jax_device is not None else jax.devices("cpu")[0]
        self.notes: list[str] = notes if notes is not None else []
        self.compile_seconds = 0.0
        self.training_state: tuple[int, Any, np.random.Generator, dict | None] | None = None

    def _chunks(self, arrays: np.ndarray, factors: np.ndarray | None = None):
        """Chunks of at most :func:`eval_batch` rows on the device, zero-padded to a power of
        two >= 64 (at most 4 compiled shapes per function): ``(chunk, factor chunk or None,
        n_valid)``. Factors are passed only to a model that reads them."""
        if not capability(self.model, "needs_factors"):
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
        save_file(flat_state(self.model), weights, metadata={"format": "flax.nnx", "run_id": self.spec.run_id})
        artifacts = {"checkpoint": weights, **write_config(directory, self, "jax", self.model.latent_dim, "NHWC")}
        if self.training_state is not None:
            step, opt_state, rng, progress = self.training_state
            path = os.path.join(directory, TRAINING_STATE + ".safetensors")
            save_file(flat_tree(opt_state), path, metadata={"format": "optax", "run_id": self.spec.run_id})
            save_training_meta(directory, step, rng, **({"progress": progress} if progress else {}))
            artifacts["training_state"] = path
        return artifacts


def flat_tree(tree: Any) -> dict[str, np.ndarray]:
    """An optax state (any pytree of arrays) as ``{key path: array}``."""
    return {jax.tree_util.keystr(path): np.array(leaf, order="C")
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_tree(like: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`flat_tree`: ``like``'s structure (a freshly initialised optax
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
