"""Train several grid points as one vectorized JAX program (``jax.vmap``).

Grid points that share the architecture, the data and the optimiser settings and
differ only in β, C, γ, their schedules or the seed (``base.group_key``) are
stacked: each member's NNX state, built and seeded exactly as a lone run builds it,
becomes one array per variable with a leading member axis ``M``. One jitted step
trains the whole group:

- the forward pass (noise, encoder, decoder, reconstruction and KL terms) is the
  model's own code under ``jax.vmap`` over the member axis: each member sees its own
  batch and its own noise, ``normal(fold_in(key(seed), step))`` as in a lone run;
- each member's loss is :func:`~vaebench.plugins.backends.jax.models.gaussian_objective`
  with that member's own objective and static hyperparameters — the call its lone
  run makes, so β, C, γ and β schedules are compiled in as constants, as they are for
  a lone run (one compilation per group, as one per lone run);
- the gradient is taken of the sum of the members' losses: members share no
  parameter, so the gradient with respect to one member's parameters is its own
  loss's gradient, and a member whose loss turns non-finite cannot reach another
  member's gradient (the backward pass of a vmapped forward is per member too). Its
  NaNs stay in its own slice; the grid records it as diverged at the check point
  where a lone run would stop, with its state as it was there;
- Adam is ``jax.vmap(optax.adam(lr).update)``: each member has its own optax state
  (moments and step count).

The members' objectives are not a ``lax.switch`` over a member index: under ``vmap``
a switch evaluates every branch for every member, and the gradient of an unselected
branch with a huge constant (β = 1e308 is ``inf`` in float32) is ``0 · inf = NaN``,
which would leak one member's divergence into the others.

So a member trains like the same run trained alone, to float rounding: the batched
convolutions and matrix products add in a different order
(``tests/test_grid_strategies.py``).

Each member's checkpoint holds what a lone run's holds: its weights, its slice of the
stacked optax state and its batch generator (step keys need no state). So a member
is continued or picked up from a periodic checkpoint alone or in a group alike.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.base import (
    FUSED_STEPS, TRAINING_STATE, ExecutionOptions, ProgressCallback, ResumePoint, check_group, load_training_meta
)
from vaebench.plugins.backends.device_grid import draw_grid_indices
from vaebench.plugins.backends.jax.models import GaussianVAE, gaussian_objective
from vaebench.plugins.backends.jax.training import (
    TrainedJaxModel, compile_cached, device_batches, device_grid, effective_amp, gather_images, load_flat_state,
    pixel_scale, restore_tree, set_compute_dtype, training_device
)
from vaebench.plugins.backends.loop import GroupStart, Readout, fusable_steps, train_loop

#: ``(objective name, hyperparameter items)`` per member: static, part of the compiled step.
Objectives = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


def _group_step(
    graphdef: Any, objectives: Objectives, params: Any, others: Any, opt_state: Any, x: jax.Array,
    keys: jax.Array, step: jax.Array, lr: jax.Array,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """One training step of ``M`` stacked members.

    ``params``, ``others``, ``opt_state``: pytrees of arrays with a leading member axis;
    ``x`` ``(M, B, H, W, C)`` in [0, 1]; ``keys`` ``(M,)`` PRNG keys (``key(seed)``);
    ``step`` int32 (1-based); ``lr`` float32. Returns the updated states and the terms:
    ``loss``, ``recon``, ``kl`` ``(M,)`` (nats per image), ``kl_per_dim`` ``(M, D)``, ``capacity`` and ``signals``
    (per member: array scalar or ``None``, dict of array scalars).
    """

    def forward(p: Any, o: Any, xi: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        model = nnx.merge(graphdef, p, o)
        eps = model.noise(jax.random.fold_in(key, step), xi.shape[0])
        return model.terms(xi, eps)

    def total(p: Any) -> tuple[jax.Array, dict[str, Any]]:
        recon, kl, kl_per_dim = jax.vmap(forward)(p, others, x, keys)
        outs = [gaussian_objective(name, dict(hp), recon[i], kl[i], step) for i, (name, hp) in enumerate(objectives)]
        losses = jnp.stack([loss for loss, _, _ in outs])
        terms = {"loss": losses, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim,
                 "capacity": tuple(c for _, c, _ in outs),
                 "signals": tuple(s for _, _, s in outs)}
        return losses.sum(), terms

    (_, terms), grads = jax.value_and_grad(total, has_aux=True)(params)
    updates, opt_state = jax.vmap(optax.adam(lr).update)(grads, opt_state, params)
    return optax.apply_updates(params, updates), others, opt_state, terms


_group_step_jit = jax.jit(_group_step, static_argnums=(0, 1), donate_argnums=(2, 3, 4))


def _group_steps(
    graphdef: Any, objectives: Objectives, params: Any, others: Any, opt_state: Any, grid: jax.Array,
    index: jax.Array, keys: jax.Array, first: jax.Array, lr: jax.Array, scale: float,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``K`` steps of :func:`_group_step` as one program (``lax.scan``): step ``first + k``
    trains on grid rows ``index[k]`` (``index`` ``(K, M, B)`` int32, drawn on the host as
    the lone runs draw them; ``grid`` ``(N, H, W, C)`` uint8 on the device). Returns the
    states after the last step and that step's terms."""

    def body(carry: tuple[Any, Any, Any], item: tuple[jax.Array, jax.Array]) -> tuple[tuple[Any, Any, Any], Any]:
        k, rows = item
        x = gather_images(grid, rows, scale)
        p, o, s, terms = _group_step(graphdef, objectives, *carry, x, keys, first + k, lr)
        return (p, o, s), terms

    count = index.shape[0]
    (params, others, opt_state), terms = jax.lax.scan(
        body, (params, others, opt_state), (jnp.arange(count, dtype=jnp.int32), index))
    return params, others, opt_state, jax.tree.map(lambda a: a[-1], terms)


_group_steps_jit = jax.jit(_group_steps, static_argnums=(0, 1, 10), donate_argnums=(2, 3, 4))


def _member(tree: Any, i: int) -> Any:
    """Member ``i``'s slice of a stacked pytree (new arrays: safe from donation)."""
    return jax.tree.map(lambda a: a[i], tree)


class GroupSteps:
    """A vectorized group's step for ``loop.train_loop``: each member's batch, then the
    compiled group step (``_group_step``) on the stacked state; a member's model gets its
    slice where the loop asks (a checkpoint, its divergence, the end)."""

    def __init__(self, models: list[GaussianVAE], trained: list[TrainedJaxModel], rngs: list[np.random.Generator],
                 points: Sequence[ResumePoint | None], dataset: Any, execution: ExecutionOptions, first: int) -> None:
        from safetensors.numpy import load_file

        spec, jax_device = trained[0].spec, trained[0].jax_device
        self.models, self.trained, self.rngs, self.dataset, self.jax_device = models, trained, rngs, dataset, jax_device
        # The architecture (and compute dtype) is shared; the objective is each member's own.
        graphdef = nnx.split(models[0], nnx.Param, ...)[0]
        objectives: Objectives = tuple((m.objective_name, m.hp_items) for m in models)
        states = [nnx.split(m, nnx.Param, ...)[1:] for m in models]
        self.params = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in states]), jax_device)
        self.others = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *[o for _, o in states]), jax_device)
        self.opt_state = jax.vmap(optax.adam(spec.lr).init)(self.params)
        if first > 1:
            like = _member(self.opt_state, 0)
            saved = [restore_tree(like, load_file(os.path.join(p.directory, TRAINING_STATE + ".safetensors")))
                     for p in points if p is not None]
            self.opt_state = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *saved), jax_device)
        self.keys = jax.device_put(jnp.stack([jax.random.key(s.seed) for s in (t.spec for t in trained)]), jax_device)
        self.grid = device_grid(dataset, jax_device, execution.device_grid)
        self.batch_size, self.lr = spec.batch_size, np.float32(spec.lr)
        self.next: jax.Array | None = self.batch()
        cache_key = ("group", graphdef, objectives, self.next.shape, str(self.next.dtype), str(jax_device))
        self.step_fn, compile_seconds = compile_cached(
            cache_key, _group_step_jit, graphdef, objectives, self.params, self.others, self.opt_state, self.next,
            self.keys, np.int32(first), self.lr)
        self.graphdef, self.objectives = graphdef, objectives
        #: With the grid on the device, ``steps_per_call`` steps (``loop.fusable_steps``) run
        #: as one program (:func:`_group_steps`); its compilation counts in ``compile_seconds``.
        self.steps_per_call = 1
        if self.grid is not None:
            cap = execution.fuse_steps or (FUSED_STEPS if jax_device.platform != "cpu" else 1)
            self.steps_per_call = fusable_steps(spec.steps, execution, cap)
        self.fused = None
        if self.steps_per_call > 1:
            self.scale = pixel_scale(dataset)
            index = jnp.zeros((self.steps_per_call, len(trained), self.batch_size), jnp.int32)
            self.fused, seconds = compile_cached(
                ("group", self.steps_per_call, *cache_key[1:]), _group_steps_jit, graphdef, objectives, self.params,
                self.others, self.opt_state, self.grid, index, self.keys, np.int32(first), self.lr, self.scale)
            compile_seconds += seconds
        for run in trained:
            run.compile_seconds = compile_seconds
        self.terms: dict[str, Any] = {}

    def batch(self) -> jax.Array:
        """Each member's batch: ``(M, B, H, W, C)`` on the device."""
        return device_batches(self.dataset, self.batch_size, self.rngs, self.jax_device, grid=self.grid)[0]

    def run(self, step: int, count: int, live: Sequence[int]) -> None:
        """A full call after the first (whose first batch was drawn before compiling) runs as
        the fused program on indices drawn now; anything else one compiled step a step."""
        if self.fused is not None and count == self.steps_per_call and self.next is None:
            rows = [draw_grid_indices(self.dataset, self.batch_size, self.rngs)[0] for _ in range(count)]
            index = jax.device_put(np.stack(rows).astype(np.int32), self.jax_device)
            self.params, self.others, self.opt_state, self.terms = self.fused(
                self.params, self.others, self.opt_state, self.grid, index, self.keys, np.int32(step), self.lr)
            return
        for s in range(step, step + count):
            x, self.next = self.next if self.next is not None else self.batch(), None
            self.params, self.others, self.opt_state, self.terms = self.step_fn(
                self.params, self.others, self.opt_state, x, self.keys, np.int32(s), self.lr)

    def read(self) -> Readout:
        t = self.terms
        table = np.asarray(jnp.stack([t["loss"], t["recon"], t["kl"]]), dtype=np.float64)
        return Readout(table[0].tolist(), table[1].tolist(), table[2].tolist(),
                       [None if c is None else float(c) for c in t["capacity"]],
                       [{k: float(v) for k, v in s.items()} for s in t["signals"]],
                       np.asarray(t["kl_per_dim"], dtype=np.float64).tolist())

    def keep(self, i: int) -> None:
        """Its model keeps its state as it is now (the group's later steps go on with NaNs)."""
        nnx.update(self.models[i], _member(self.params, i), _member(self.others, i))

    def state(self, i: int, step: int, progress: dict[str, Any] | None) -> tuple[int, Any, np.random.Generator, Any]:
        nnx.update(self.models[i], _member(self.params, i), _member(self.others, i))
        return step, _member(self.opt_state, i), self.rngs[i], progress

    def sync(self) -> None:
        jax.block_until_ready(self.params)


def train_group(
    build: Callable[..., nnx.Module],
    specs: Sequence[Any],
    dataset: Any,
    execution: ExecutionOptions,
    on_progress: Sequence[ProgressCallback | None] | None = None,
    resume: Sequence[ResumePoint | None] | None = None,
    checkpoint_dirs: Sequence[str | None] | None = None,
) -> list[TrainedJaxModel]:
    """Train ``specs`` (one ``base.group_key``) together; one ``TrainedJaxModel`` per spec.

    ``build(spec, image_shape, dataset)`` builds the models (``JaxBackend.build``). Each
    member's history, signals, ``steps_done``, ``diverged`` and ``final_loss`` are what its
    lone run would record; ``train_seconds`` is the group's training time (or until the
    member diverged), ``compile_seconds`` the group step's compilation (0 when cached),
    shared by every member. ``resume``: one point per member, all at one step
    (``loop.GroupStart``), to go on from; ``checkpoint_dirs``: each member's periodic
    checkpoint directory.
    """
    from safetensors.numpy import load_file

    check_group(specs)
    info, jax_device = training_device(execution)
    amp = effective_amp(info.device, execution.amp, execution.notes)
    begin = GroupStart.of(resume, checkpoint_dirs, len(specs))
    rngs = [np.random.default_rng(spec.seed) for spec in specs]  # the lone run's batches
    with jax.default_device(jax_device), interrupt.deferred():
        models: list[GaussianVAE] = []
        for spec, point, rng in zip(specs, begin.points, rngs):  # built and seeded as JaxBackend.train builds a lone run's model
            model = build(spec, dataset.image_shape, dataset)
            if type(model) is not GaussianVAE:
                raise ValueError(f"model {spec.model!r} built a {type(model).__name__}, not a plain GaussianVAE")
            if point is not None:
                load_flat_state(model, load_file(os.path.join(point.directory, "model.safetensors")))
                if load_training_meta(point.directory, point.step, rng) is None:
                    raise ValueError(f"{point.directory} holds no training state to go on from")
            if amp == "bf16":
                set_compute_dtype(model, jnp.bfloat16)
            models.append(model)
        trained = [TrainedJaxModel(m, s, info.device, amp, compiled=True, jax_device=jax_device, notes=execution.notes)
                   for m, s in zip(models, specs)]
        steps = GroupSteps(models, trained, rngs, begin.points, dataset, execution, begin.step + 1)
        train_loop(steps, trained, begin, specs[0].steps, specs[0].batch_size, execution, on_progress)
    if amp == "bf16":
        for model in models:
            set_compute_dtype(model, None)  # evaluate in float32, as a lone run does
    return trained
