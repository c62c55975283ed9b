"""The JAX backend (Flax NNX + optax): device selection, a jit-compiled training
step, batched evaluation, checkpoints. Same contract as the torch backend
(``backends.base``): same batches for a seed, same history, same divergence rule.

The training step is one XLA program: forward pass, loss, gradients, Adam update.
The loss is the shared :func:`vaebench.plugins.models.objectives.objective`, which
takes the step as a Python int (it drives the capacity schedule,
:func:`~vaebench.plugins.models.objectives.capacity_at`), so it cannot be traced
with a step that changes every iteration. Instead the step computes the
network's batch-mean ``recon`` and ``kl`` and their vector-Jacobian product, asks
the objective on the host (``jax.pure_callback``) for the loss and its partial
derivatives ``(∂L/∂recon, ∂L/∂kl)`` by forward-mode dual numbers, and pulls those
back through the network: the chain rule, exactly, with the objective's formula
written once (``objective()`` uses only ``+``, ``-``, ``*`` and ``abs``, which the
dual numbers implement). Compiled once per model graph and batch shape, not once
per step. Cost of the callback on CPU: ~0.2 ms per step (measured on a shared
2-core machine, against 100-200 ms for the step at batch 64); on a GPU it is a
device-to-host round trip in the middle of each step.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vaebench.plugins.backends.base import (
    DeviceError,
    DeviceInfo,
    ExecutionOptions,
    ProgressCallback,
    cpu_name,
    parse_device,
    write_signals,
)
from vaebench.plugins.backends.jax.nets import ConvTranspose2x

#: Loss history keeps at most this many points per run (as the torch backend).
HISTORY_POINTS = 200
EVAL_BATCH = 512


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


def resolve_device(device: str) -> DeviceInfo:
    """``auto`` -> ``cuda:0`` when JAX sees a GPU, else ``cpu``; validates ``cuda:N`` (``gpu`` = ``cuda``)."""
    return _resolve(device)[0]


# -- the objective's partial derivatives, on the host ---------------------------------


class _Dual:
    """A float32 value with its derivatives with respect to ``(recon, kl)``.

    Implements what ``objective()`` may use on its inputs: ``+``, ``-``, ``*``,
    ``/``, unary ``-`` and ``abs`` (whose derivative at 0 is 0, as torch's).
    """

    __slots__ = ("v", "d")

    def __init__(self, v: Any, d: tuple[Any, Any]) -> None:
        self.v, self.d = np.float32(v), d

    @staticmethod
    def lift(o: Any) -> "_Dual":
        return o if isinstance(o, _Dual) else _Dual(o, (np.float32(0), np.float32(0)))

    def __add__(self, o: Any) -> "_Dual":
        o = _Dual.lift(o)
        return _Dual(self.v + o.v, (self.d[0] + o.d[0], self.d[1] + o.d[1]))

    __radd__ = __add__

    def __neg__(self) -> "_Dual":
        return _Dual(-self.v, (-self.d[0], -self.d[1]))

    def __sub__(self, o: Any) -> "_Dual":
        return self + (-_Dual.lift(o))

    def __rsub__(self, o: Any) -> "_Dual":
        return _Dual.lift(o) + (-self)

    def __mul__(self, o: Any) -> "_Dual":
        o = _Dual.lift(o)
        return _Dual(self.v * o.v, (self.d[0] * o.v + self.v * o.d[0], self.d[1] * o.v + self.v * o.d[1]))

    __rmul__ = __mul__

    def __truediv__(self, o: Any) -> "_Dual":
        o = _Dual.lift(o)
        q = self.v / o.v
        return _Dual(q, ((self.d[0] - q * o.d[0]) / o.v, (self.d[1] - q * o.d[1]) / o.v))

    def __rtruediv__(self, o: Any) -> "_Dual":
        return _Dual.lift(o) / self

    def __abs__(self) -> "_Dual":
        s = np.sign(self.v)
        return _Dual(abs(self.v), (s * self.d[0], s * self.d[1]))


def objective_partials(objective_fn: Any, recon: Any, kl: Any, step: Any) -> np.ndarray:
    """``[loss, ∂loss/∂recon, ∂loss/∂kl]`` (float32) of ``objective_fn(recon, kl, step)[0]``."""
    with np.errstate(over="ignore", invalid="ignore"):
        loss, _ = objective_fn(
            _Dual(recon, (np.float32(1), np.float32(0))), _Dual(kl, (np.float32(0), np.float32(1))), int(step)
        )
        loss = _Dual.lift(loss)
        return np.array([loss.v, loss.d[0], loss.d[1]], dtype=np.float32)


# -- the compiled steps ----------------------------------------------------------------


def loss_and_grads(
    graphdef: Any, params: Any, others: Any, x: jax.Array, eps: jax.Array, step: jax.Array
) -> tuple[Any, dict[str, jax.Array]]:
    """Gradients of the objective and ``{loss, recon, kl}`` for one batch and noise ``eps``
    (traceable; the training step's core, exposed for the equivalence tests)."""

    def terms(p: Any) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        recon, kl, kl_per_dim = nnx.merge(graphdef, p, others).terms(x, eps)
        return (recon, kl), kl_per_dim

    (recon, kl), pullback, _ = jax.vjp(terms, params, has_aux=True)
    # The objective reads only static attributes; merge with shapes, not tracers, so the
    # callback (kept by the compiled step) holds no tracer.
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (params, others))
    objective_fn = nnx.merge(graphdef, *shapes).objective
    out = jax.pure_callback(
        partial(objective_partials, objective_fn), jax.ShapeDtypeStruct((3,), jnp.float32), recon, kl, step
    )
    (grads,) = pullback((out[1].astype(recon.dtype), out[2].astype(kl.dtype)))
    return grads, {"loss": out[0], "recon": recon, "kl": kl}


def _train_step(
    graphdef: Any, params: Any, others: Any, opt_state: Any, x: jax.Array, key: jax.Array, step: jax.Array,
    lr: jax.Array,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    latent_dim = nnx.merge(graphdef, params, others).latent_dim  # static
    eps = jax.random.normal(jax.random.fold_in(key, step), (x.shape[0], latent_dim), jnp.float32)
    grads, values = loss_and_grads(graphdef, params, others, x, eps, step)
    updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, values


_train_step_jit = jax.jit(_train_step, static_argnums=0, donate_argnums=(1, 3))

#: (graphdef, batch shape, dtype, device) -> compiled training step. The graph holds the
#: architecture and the objective's hyperparameters; the learning rate, seed and step
#: count are arguments, so runs that differ only in those share one compilation.
_COMPILED: dict[tuple[Any, ...], Any] = {}
_COMPILED_MAX = 8


def _compiled_step(graphdef: Any, params: Any, others: Any, opt_state: Any, x: jax.Array,
                   key: jax.Array, step: Any, lr: Any, device: Any) -> tuple[Any, float]:
    """The AOT-compiled training step and the seconds spent tracing + compiling it (0 if cached)."""
    cache_key = (graphdef, x.shape, str(x.dtype), str(device))
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    t0 = time.perf_counter()
    compiled = _train_step_jit.lower(graphdef, params, others, opt_state, x, key, step, lr).compile()
    seconds = time.perf_counter() - t0
    if len(_COMPILED) >= _COMPILED_MAX:  # a long grid over β: keep the newest few
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[cache_key] = compiled
    return compiled, seconds


@partial(jax.jit, static_argnums=(0, 3))
def _eval_batch(graphdef: Any, state: Any, x: jax.Array, want_recons: bool) -> tuple[jax.Array, ...]:
    m = nnx.merge(graphdef, state)
    mu, logvar = m.encode(x)
    logits = m.decode(mu).astype(jnp.float32)
    out = (mu.astype(jnp.float32), logvar.astype(jnp.float32), m.recon_errors(x, logits))
    return out + (jax.nn.sigmoid(logits),) if want_recons else out


@partial(jax.jit, static_argnums=0)
def _encode_batch(graphdef: Any, state: Any, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state).encode(x)[0].astype(jnp.float32)


@partial(jax.jit, static_argnums=0)
def _decode_batch(graphdef: Any, state: Any, z: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(nnx.merge(graphdef, state).decode(z).astype(jnp.float32))


def _set_compute_dtype(model: nnx.Module, dtype: Any) -> None:
    """Compute dense/conv layers in ``dtype`` (parameters stay float32): bf16 AMP."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (nnx.Linear, nnx.Conv, nnx.ConvTranspose, ConvTranspose2x)):
            node.dtype = dtype


def _effective_amp(device: str, amp: str, notes: list[str]) -> str:
    if amp not in ("off", "bf16", "fp16"):
        raise DeviceError(f"unknown AMP mode {amp!r} (use off, bf16 or fp16)")
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
    ``signals`` stays empty (no JAX model reports training signals). No JAX model
    reads factors: the ``factors`` arguments exist for the torch backend's
    signature and are ignored.
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

    def _chunks(self, arrays: np.ndarray):
        """Chunks of at most ``EVAL_BATCH`` rows on the device, zero-padded to a power of
        two >= 64 (at most 4 compiled shapes per function): ``(chunk, n_valid)``."""
        size = min(EVAL_BATCH, max(64, 1 << max(0, len(arrays) - 1).bit_length()))
        for start in range(0, len(arrays), size):
            chunk = np.asarray(arrays[start : start + size], dtype=np.float32)
            n = len(chunk)
            if n < size:
                chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), np.float32)])
            yield jax.device_put(chunk, self.jax_device), n

    def evaluate(
        self, images: np.ndarray, reconstructions: bool = False, factors: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """``(means, logvars, recon_errors)``, plus the Bernoulli means ``(N, H, W, C)``
        decoded from the posterior means when ``reconstructions``.

        Also checks the held-out posterior for collapse (no active dimension, or
        KL < 0.01 nats) and notes it; skipped for models without a Gaussian posterior.
        """
        graphdef, state = nnx.split(self.model)
        parts: list[list[np.ndarray]] = [[] for _ in range(4 if reconstructions else 3)]
        for x, n in self._chunks(images):
            for acc, out in zip(parts, _eval_batch(graphdef, state, x, reconstructions)):
                acc.append(np.asarray(out[:n]))
        out = tuple(np.concatenate(p) for p in parts)
        if getattr(self.model, "gaussian_posterior", True):
            from vaebench.plugins.models.diagnostics import posterior_collapse_note

            note = posterior_collapse_note(out[0], out[1])
            if note and note not in self.notes:
                self.notes.append(note)
        return out

    def encode(self, images: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        graphdef, state = nnx.split(self.model)
        return np.concatenate([np.asarray(_encode_batch(graphdef, state, x)[:n]) for x, n in self._chunks(images)])

    def decode(self, z: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Latents ``(N, D)`` -> Bernoulli means ``(N, H, W, C)`` in [0, 1]."""
        graphdef, state = nnx.split(self.model)
        return np.concatenate([np.asarray(_decode_batch(graphdef, state, b)[:n]) for b, n in self._chunks(z)])

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
        return {"checkpoint": weights, "config": config, **write_signals(directory, self.signals)}


def flat_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of ``model`` as ``{"dotted.path": array}``."""
    return {
        ".".join(str(p) for p in path): np.ascontiguousarray(np.asarray(node.get_value()))
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

    def resolve_device(self, device: str) -> DeviceInfo:
        return resolve_device(device)

    def build(self, spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> nnx.Module:
        """The model of ``spec``; a factory that takes a ``dataset`` keyword gets it."""
        from vaebench.plugins.manager import get_manager

        return get_manager().model(spec.model).build("jax", spec, image_shape, dataset)

    def train(
        self,
        spec: Any,
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: ProgressCallback | None = None,
        model: nnx.Module | None = None,
    ) -> TrainedJaxModel:
        """Train ``spec`` on ``dataset`` with Adam; stops early (``diverged``) on a non-finite loss.

        Batches come from ``np.random.default_rng(spec.seed)`` (the torch backend's
        batches); the reparameterisation noise of step ``t`` is
        ``normal(fold_in(key(spec.seed), t))``; parameters are initialised from
        ``nnx.Rngs(spec.seed)``.
        """
        info, jax_device = _resolve(execution.device)
        if info.device == "cpu" and execution.threads and execution.threads < (os.cpu_count() or 1):
            execution.notes.append(f"the JAX backend ignores --threads {execution.threads} (XLA uses all CPU cores)")
        amp = _effective_amp(info.device, execution.amp, execution.notes)
        rng = np.random.default_rng(spec.seed)
        with jax.default_device(jax_device):
            if model is None:
                model = self.build(spec, dataset.image_shape, dataset)
            if amp == "bf16":
                _set_compute_dtype(model, jnp.bfloat16)
            graphdef, params, others = nnx.split(model, nnx.Param, ...)
            params, others = jax.device_put((params, others), jax_device)
            opt_state = optax.adam(spec.lr).init(params)
            key = jax.device_put(jax.random.key(spec.seed), jax_device)

            trained = TrainedJaxModel(model, spec, info.device, amp, compiled=True, jax_device=jax_device,
                                      notes=execution.notes)
            history_every = max(1, spec.steps // HISTORY_POINTS)
            report_every = max(1, execution.progress_every)

            images, _ = dataset.sample(spec.batch_size, rng)
            x = jax.device_put(np.asarray(images, dtype=np.float32), jax_device)
            lr = np.float32(spec.lr)
            step_fn, trained.compile_seconds = _compiled_step(
                graphdef, params, others, opt_state, x, key, np.int32(1), lr, jax_device
            )
            start = time.perf_counter()
            for step in range(1, spec.steps + 1):
                if step > 1:
                    images, _ = dataset.sample(spec.batch_size, rng)
                    x = jax.device_put(np.asarray(images, dtype=np.float32), jax_device)
                params, opt_state, terms = step_fn(params, others, opt_state, x, key, np.int32(step), lr)
                last = step == spec.steps
                if step % history_every == 0 or step % report_every == 0 or last:
                    values = {k: float(terms[k]) for k in ("loss", "recon", "kl")}
                    capacity = model.objective(0.0, 0.0, step)[1]  # the schedule's C at this step
                    trained.steps_done = step
                    if not all(math.isfinite(v) for v in values.values()):
                        trained.diverged = True
                        trained.final_loss = values["loss"]
                        trained.history.append({"step": step, **values, "capacity": capacity})
                        break
                    if step % history_every == 0 or last:
                        trained.history.append({"step": step, **values, "capacity": capacity})
                    trained.final_loss = values["loss"]
                    if on_progress is not None and (step % report_every == 0 or last):
                        elapsed = time.perf_counter() - start
                        on_progress(step, {**values, "images_per_second": step * spec.batch_size / elapsed})
            jax.block_until_ready(params)
            trained.train_seconds = time.perf_counter() - start
        nnx.update(model, params)
        if amp == "bf16":
            _set_compute_dtype(model, None)  # evaluate in float32, as the torch backend does
        return trained


def load_checkpoint(directory: str) -> TrainedJaxModel:
    """Rebuild a trained model from ``model.safetensors`` + ``config.json`` (no pickle)."""
    from safetensors.numpy import load_file

    from vaebench.harness.plan import RunSpec

    with open(os.path.join(directory, "config.json")) as fh:
        config = json.load(fh)
    if config.get("backend") != "jax":
        raise ValueError(f"{directory} holds a {config.get('backend')!r} checkpoint, not a JAX one")
    spec = RunSpec.from_dict(config["spec"])
    image_shape = config.get("image_shape")
    if not image_shape:
        from vaebench.plugins.manager import get_manager

        image_shape = get_manager().dataset(spec.dataset).loader()(path=spec.dataset_path).image_shape
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        model = JaxBackend().build(spec, tuple(image_shape))
        load_flat_state(model, load_file(os.path.join(directory, "model.safetensors")))
    return TrainedJaxModel(model, spec, "cpu", "off", False, jax_device=cpu)
