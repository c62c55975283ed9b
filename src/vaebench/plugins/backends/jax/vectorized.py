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

import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.base import (
    TRAINING_STATE,
    ExecutionOptions,
    GroupStart,
    ProgressCallback,
    ResumePoint,
    check_group,
    checkpoint_due,
    load_training_meta,
    write_partial,
)
from vaebench.plugins.backends.jax.models import GaussianVAE, gaussian_objective

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
    ``loss``, ``recon``, ``kl`` ``(M,)`` (nats per image), ``capacity`` and ``signals``
    (per member: array scalar or ``None``, dict of array scalars).
    """

    def forward(p: Any, o: Any, xi: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        model = nnx.merge(graphdef, p, o)
        eps = model.noise(jax.random.fold_in(key, step), xi.shape[0])
        recon, kl, _ = model.terms(xi, eps)
        return recon, kl

    def total(p: Any) -> tuple[jax.Array, dict[str, Any]]:
        recon, kl = jax.vmap(forward)(p, others, x, keys)
        outs = [gaussian_objective(name, dict(hp), recon[i], kl[i], step) for i, (name, hp) in enumerate(objectives)]
        losses = jnp.stack([loss for loss, _, _ in outs])
        terms = {"loss": losses, "recon": recon, "kl": kl, "capacity": tuple(c for _, c, _ in outs),
                 "signals": tuple(s for _, _, s in outs)}
        return losses.sum(), terms

    (_, terms), grads = jax.value_and_grad(total, has_aux=True)(params)
    updates, opt_state = jax.vmap(optax.adam(lr).update)(grads, opt_state, params)
    return optax.apply_updates(params, updates), others, opt_state, terms


_group_step_jit = jax.jit(_group_step, static_argnums=(0, 1), donate_argnums=(2, 3, 4))


def _member(tree: Any, i: int) -> Any:
    """Member ``i``'s slice of a stacked pytree (new arrays: safe from donation)."""
    return jax.tree.map(lambda a: a[i], tree)


def train_group(
    backend: Any,
    specs: Sequence[Any],
    dataset: Any,
    execution: ExecutionOptions,
    on_progress: Sequence[ProgressCallback | None] | None = None,
    resume: Sequence[ResumePoint | None] | None = None,
    checkpoint_dirs: Sequence[str | None] | None = None,
) -> list[Any]:
    """Train ``specs`` (one ``base.group_key``) together; one ``TrainedJaxModel`` per spec.

    ``backend`` builds the models. Each member's history, signals, ``steps_done``,
    ``diverged`` and ``final_loss`` are what its lone run would record; ``train_seconds``
    is the group's training time (or until the member diverged), ``compile_seconds``
    the group step's compilation (0 when cached), shared by every member. ``resume``: one
    point per member, all at one step (``base.GroupStart``), to go on from;
    ``checkpoint_dirs``: each member's periodic checkpoint directory.
    """
    from safetensors.numpy import load_file

    from vaebench.plugins.backends.jax.backend import (
        HISTORY_POINTS,
        TrainedJaxModel,
        _compile_cached,
        _effective_amp,
        _restore_tree,
        _set_compute_dtype,
        _training_device,
        device_batches,
        device_grid,
        load_flat_state,
    )

    check_group(specs)
    info, jax_device = _training_device(execution)
    amp = _effective_amp(info.device, execution.amp, execution.notes)
    first = specs[0]
    batch = first.batch_size
    begin = GroupStart.of(resume, checkpoint_dirs, len(specs))
    start_step, points, dirs, earlier = begin.step, begin.points, begin.dirs, begin.earlier
    rngs = [np.random.default_rng(spec.seed) for spec in specs]  # the lone run's batches
    with jax.default_device(jax_device), interrupt.deferred():
        models: list[GaussianVAE] = []
        for spec, point, rng in zip(specs, points, rngs):  # built and seeded as JaxBackend.train builds a lone run's model
            model = backend.build(spec, dataset.image_shape, dataset)
            if type(model) is not GaussianVAE:
                raise ValueError(f"model {spec.model!r} built a {type(model).__name__}, not a plain GaussianVAE")
            if point is not None:
                load_flat_state(model, load_file(os.path.join(point.directory, "model.safetensors")))
                if load_training_meta(point.directory, point.step, rng) is None:
                    raise ValueError(f"{point.directory} holds no training state to go on from")
            if amp == "bf16":
                _set_compute_dtype(model, jnp.bfloat16)
            models.append(model)
        # The architecture (and compute dtype) is shared; the objective is each member's own.
        graphdef = nnx.split(models[0], nnx.Param, ...)[0]
        objectives: Objectives = tuple((m.objective_name, m.hp_items) for m in models)
        states = [nnx.split(m, nnx.Param, ...)[1:] for m in models]
        params = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in states]), jax_device)
        others = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *[o for _, o in states]), jax_device)
        opt_state = jax.vmap(optax.adam(first.lr).init)(params)
        if start_step:
            like = _member(opt_state, 0)
            saved = [_restore_tree(like, load_file(os.path.join(p.directory, TRAINING_STATE + ".safetensors")))
                     for p in points if p is not None]
            opt_state = jax.device_put(jax.tree.map(lambda *a: jnp.stack(a), *saved), jax_device)
        keys = jax.device_put(jnp.stack([jax.random.key(spec.seed) for spec in specs]), jax_device)

        trained = [TrainedJaxModel(m, s, info.device, amp, compiled=True, jax_device=jax_device, notes=execution.notes)
                   for m, s in zip(models, specs)]
        begin.extend(trained)
        final_state: list[tuple[Any, Any] | None] = [None] * len(specs)  # a diverged member's state
        live = list(range(len(specs)))
        history_every = max(1, first.steps // HISTORY_POINTS)
        report_every = max(1, execution.progress_every)
        callbacks = list(on_progress or [None] * len(specs))

        grid = device_grid(dataset, jax_device, execution.device_grid)

        def batches() -> jax.Array:
            return device_batches(dataset, batch, rngs, jax_device, grid=grid)[0]  # (M, B, H, W, C)

        x = batches()
        lr = np.float32(first.lr)
        cache_key = ("group", graphdef, objectives, x.shape, str(x.dtype), str(jax_device))
        step_fn, compile_seconds = _compile_cached(
            cache_key, _group_step_jit, graphdef, objectives, params, others, opt_state, x, keys,
            np.int32(start_step + 1), lr
        )
        for run in trained:
            run.compile_seconds = compile_seconds

        def save_partials(step: int) -> None:
            """The periodic checkpoint of each live member due one after ``step``."""
            for i in live:
                if checkpoint_due(execution, step, first.steps, dirs[i]):
                    run = trained[i]
                    nnx.update(models[i], _member(params, i), _member(others, i))
                    run.steps_done = step
                    run.training_state = (step, _member(opt_state, i), rngs[i], {
                        "train_seconds": time.perf_counter() - start + earlier[i], "history": run.history,
                        "signals": run.signals})
                    write_partial(run, str(dirs[i]))
            interrupt.check()

        start = time.perf_counter()
        for step in range(start_step + 1, first.steps + 1):
            if step > start_step + 1:
                x = batches()
            params, others, opt_state, terms = step_fn(params, others, opt_state, x, keys, np.int32(step), lr)
            last = step == first.steps
            if not (step % history_every == 0 or step % report_every == 0 or last):
                save_partials(step)
                continue
            table = np.asarray(jnp.stack([terms["loss"], terms["recon"], terms["kl"]]), dtype=np.float64)
            elapsed = time.perf_counter() - start
            for i in list(live):
                run = trained[i]
                values = {"loss": float(table[0, i]), "recon": float(table[1, i]), "kl": float(table[2, i])}
                capacity = terms["capacity"][i]
                point = {"step": step, **values, "capacity": None if capacity is None else float(capacity)}
                signals = {k: float(v) for k, v in terms["signals"][i].items()}
                run.steps_done = step
                run.final_loss = values["loss"]
                finite = all(math.isfinite(v) for v in values.values())
                if not finite or step % history_every == 0 or last:
                    run.history.append(point)
                    if signals:
                        run.signals.append({"step": step, **signals})
                if not finite:  # where its lone run would stop: keep its state as it is now
                    run.diverged = True
                    run.train_seconds = elapsed + earlier[i]
                    final_state[i] = (_member(params, i), _member(others, i))
                    live.remove(i)
                elif callbacks[i] is not None and (step % report_every == 0 or last):
                    callbacks[i](step, {**values, "images_per_second": (step - start_step) * batch / elapsed})
            if not live:
                break
            save_partials(step)
        jax.block_until_ready(params)
        elapsed = time.perf_counter() - start
    for i, (model, run) in enumerate(zip(models, trained)):
        member_params, member_others = final_state[i] or (_member(params, i), _member(others, i))
        nnx.update(model, member_params, member_others)
        if not run.diverged:
            run.train_seconds = elapsed + earlier[i]
            run.training_state = (run.steps_done, _member(opt_state, i), rngs[i], None)
        if amp == "bf16":
            _set_compute_dtype(model, None)  # evaluate in float32, as a lone run does
    return trained
