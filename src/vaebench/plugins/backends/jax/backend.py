"""The JAX backend (Flax NNX + optax): a lone run's jit-compiled training step, which
fills ``backends.loop.train_loop``, and checkpoints. Same contract as the torch backend
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

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.base import (
    BuiltinBackend,  # noqa: F401 - DeviceError: re-exported
    DeviceError, DeviceInfo, TRAINING_STATE, ExecutionOptions, ProgressCallback, ResumePoint,
    load_training_meta, restart_note
)
from vaebench.plugins.backends.jax.training import (  # noqa: F401 - re-exported: the backend's public names
    DEVICE_GRIDS, EVAL_BATCH, TrainedJaxModel, compile_cached, device_batches, device_grid, effective_amp,
    eval_batch, flat_state, load_flat_state, resolve_device, restore_tree, set_compute_dtype, training_device
)
from vaebench.plugins.backends.jax.vectorized import train_group
from vaebench.plugins.contract import capability
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.backends.loop import GroupStart, Readout, read_config, train_loop



# -- the compiled step -----------------------------------------------------------------


def loss_and_grads(
    graphdef: Any, params: Any, others: Any, x: jax.Array, step: jax.Array, key: jax.Array | None = None,
    factors: jax.Array | None = None, eps: jax.Array | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(gradients, updated non-parameter state, terms)`` of the model's ``loss_terms``
    for one batch (traceable; the training step's core, exposed for the equivalence
    tests). ``terms``: ``loss``, ``recon``, ``kl``, ``kl_per_dim`` ``(D,)``, ``capacity`` (or
    ``None``), ``signals``."""

    def loss_fn(p: Any) -> tuple[jax.Array, tuple[dict[str, Any], Any]]:
        # NNX variables may be changed only at the trace level they were created at, and a
        # model's state updates (EMA codebook) happen inside this trace: fresh variables.
        model = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, others))
        terms = model.loss_terms(x, step, key=key, factors=factors, eps=eps)
        _, _, new_others = nnx.split(model, nnx.Param, ...)
        kept = {k: terms[k] for k in ("loss", "recon", "kl", "kl_per_dim", "capacity", "signals")}
        return terms["loss"], (kept, new_others)

    (_, (terms, new_others)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, new_others, terms


def _train_step(
    graphdef: Any, params: Any, others: Any, opt_state: Any, x: jax.Array, factors: Any, key: jax.Array,
    step: jax.Array, lr: jax.Array,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    step_key = jax.random.fold_in(key, step)
    model = nnx.merge(graphdef, params, others)
    # may change parameters too (VQ-VAE's dead-code reset); the default does nothing
    capability(model, "before_step")(x, step, step_key, factors)
    _, params, others = nnx.split(model, nnx.Param, ...)
    grads, others, values = loss_and_grads(graphdef, params, others, x, step, step_key, factors)
    updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), others, opt_state, values


_train_step_jit = jax.jit(_train_step, static_argnums=0, donate_argnums=(1, 2, 3))


def _compiled_step(graphdef: Any, params: Any, others: Any, opt_state: Any, x: jax.Array, factors: Any,
                   key: jax.Array, step: Any, lr: Any, device: Any) -> tuple[Any, float]:
    """The AOT-compiled training step and the seconds spent tracing + compiling it (0 if cached)."""
    fshape = None if factors is None else (factors.shape, str(factors.dtype))
    cache_key = (graphdef, x.shape, str(x.dtype), fshape, str(device))
    return compile_cached(cache_key, _train_step_jit, graphdef, params, others, opt_state, x, factors, key, step, lr)


class LoneSteps:
    """A lone run's step for ``loop.train_loop`` (one member): draw a batch (the first one
    is drawn before, to compile the step for its shape), then the compiled step
    (``_train_step``) on the run's state; the model gets the state where the loop asks."""

    steps_per_call = 1

    def __init__(self, trained: TrainedJaxModel, opt_state: Any, rng: np.random.Generator, dataset: Any,
                 execution: ExecutionOptions, first: int) -> None:
        spec, jax_device = trained.spec, trained.jax_device
        self.trained, self.rng, self.dataset, self.jax_device = trained, rng, dataset, jax_device
        self.graphdef, params, others = nnx.split(trained.model, nnx.Param, ...)
        self.params, self.others = jax.device_put((params, others), jax_device)
        self.opt_state = opt_state if opt_state is not None else optax.adam(spec.lr).init(self.params)
        self.conditional = bool(capability(trained.model, "needs_factors"))
        self.gaussian = bool(capability(trained.model, "gaussian_posterior"))  # else no KL per dimension to record
        self.grid = device_grid(dataset, jax_device, execution.device_grid)
        self.key = jax.device_put(jax.random.key(spec.seed), jax_device)
        self.lr = np.float32(spec.lr)
        self.next = self.batch()
        self.step_fn, trained.compile_seconds = _compiled_step(
            self.graphdef, self.params, self.others, self.opt_state, *self.next, self.key, np.int32(first), self.lr,
            jax_device)
        self.terms: dict[str, Any] = {}

    def batch(self) -> tuple[jax.Array, jax.Array | None]:
        """One batch ``(B, H, W, C)`` on the device, and its factors where the model reads them."""
        x, (factors,) = device_batches(self.dataset, self.trained.spec.batch_size, [self.rng], self.jax_device,
                                       stacked=False, grid=self.grid)
        f = jax.device_put(np.asarray(factors, dtype=np.int32), self.jax_device) if self.conditional else None
        return x, f

    def run(self, step: int, count: int, live: Sequence[int]) -> None:
        for s in range(step, step + count):
            (x, f), self.next = self.next or self.batch(), None
            self.params, self.others, self.opt_state, self.terms = self.step_fn(
                self.params, self.others, self.opt_state, x, f, self.key, np.int32(s), self.lr)

    def read(self) -> Readout:
        t = self.terms
        return Readout([float(t["loss"])], [float(t["recon"])], [float(t["kl"])],
                       [None if t["capacity"] is None else float(t["capacity"])],
                       [{k: float(v) for k, v in t["signals"].items()}],
                       [np.asarray(t["kl_per_dim"], dtype=np.float64).tolist()] if self.gaussian else None)

    def keep(self, i: int) -> None:
        """The loop stops with the run: its model gets the state as it is now."""
        nnx.update(self.trained.model, self.params, self.others)

    def state(self, i: int, step: int, progress: dict[str, Any] | None) -> tuple[int, Any, np.random.Generator, Any]:
        nnx.update(self.trained.model, self.params, self.others)
        return step, self.opt_state, self.rng, progress

    def sync(self) -> None:
        jax.block_until_ready(self.params)


class JaxBackend(BuiltinBackend):
    name = "jax"
    model_protocol = "jax"

    def resolve_device(self, device: str) -> DeviceInfo:
        return resolve_device(device)

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
        return train_group(self.build, specs, dataset, execution, on_progress, resume=resume,
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
        info, jax_device = training_device(execution)
        amp = effective_amp(info.device, execution.amp, execution.notes)
        rng = np.random.default_rng(spec.seed)
        with jax.default_device(jax_device), interrupt.deferred():
            if model is None:
                model = self.build(spec, dataset.image_shape, dataset)
            opt_state = None
            if resume is not None:
                from safetensors.numpy import load_file

                load_flat_state(model, load_file(os.path.join(resume.directory, "model.safetensors")))
                if load_training_meta(resume.directory, resume.step, rng) is None:
                    rng = np.random.default_rng([spec.seed, resume.step])
                    execution.notes.append(restart_note(resume.step))
                else:
                    saved = load_file(os.path.join(resume.directory, TRAINING_STATE + ".safetensors"))
                    like = optax.adam(spec.lr).init(nnx.split(model, nnx.Param, ...)[1])
                    opt_state = jax.device_put(restore_tree(like, saved), jax_device)
            if amp == "bf16":
                set_compute_dtype(model, jnp.bfloat16)
            trained = TrainedJaxModel(model, spec, info.device, amp, compiled=True, jax_device=jax_device,
                                      notes=execution.notes)
            begin = GroupStart.of([resume], None, 1)
            steps = LoneSteps(trained, opt_state, rng, dataset, execution, begin.step + 1)
            train_loop(steps, [trained], begin, spec.steps, spec.batch_size, execution, [on_progress])
        execution.notes.extend(f"{spec.model}: {note}" for note in capability(model, "notes")())
        if amp == "bf16":
            set_compute_dtype(model, None)  # evaluate in float32, as the torch backend does
        return trained


def load_checkpoint(directory: str, manager: PluginManager | None = None) -> TrainedJaxModel:
    """Rebuild a trained model from ``model.safetensors`` + ``config.json`` (no pickle)."""
    from safetensors.numpy import load_file

    _, spec, image_shape, dataset = read_config(directory, "jax", manager)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        model = JaxBackend(manager).build(spec, image_shape, dataset)
        load_flat_state(model, load_file(os.path.join(directory, "model.safetensors")))
    return TrainedJaxModel(model, spec, "cpu", "off", False, jax_device=cpu)
