"""Train several grid points as one vectorized program (``torch.func``).

Grid points that share the architecture, the data and the optimiser settings and
differ only in β, C, γ, their schedules or the seed (``base.group_key``) are
stacked: their parameters become tensors with a leading member axis
(``stack_module_state``), one forward pass runs every member under ``vmap``
(convolutions with batched weights become grouped convolutions), and one Adam
steps the stacked tensors. Adam is elementwise, so each member keeps its own
moment estimates, exactly as with its own optimiser; the members' losses are
summed, and the gradient of a sum with respect to one member's parameters is
that member's own gradient. Each member draws its batches from its own NumPy
generator and its reparameterisation noise from its own torch generator, seeded
as a lone run seeds them, so a member trains like the same run trained alone (to
float rounding: the grouped kernels add in a different order; see
``tests/test_grid_strategies.py``). The loss of each member is computed by
:func:`~vaebench.plugins.objectives.objective` with that member's
hyperparameters, the same call a lone run makes.

Each member's checkpoint holds what a lone run's holds (``TrainingState``): its slice
of the stacked Adam moments as the state of an Adam over its own parameters, its
batch generator, and its noise generator in the place of torch's global one. So a
member is continued (``vaebench continue``) or picked up from a periodic checkpoint
alone or in a group alike, and the group picks up members a lone run checkpointed.

On a GPU this keeps the device busy with one launch per layer for the whole
group instead of one per model; on a 2-core CPU it is slower than training the
models one after another (see ``benchmarks/RESULTS.md``), which is why the grid
runner chooses it only on a GPU unless asked (``--strategy vectorized``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.base import (
    ExecutionOptions,
    ProgressCallback,
    ResumePoint,
    check_group,
    checkpoint_due,
    GroupStart,
    write_partial,
)
from vaebench.plugins.backends.torch.models import GaussianVAE, gaussian_kl_per_dim
from vaebench.plugins.objectives import objective

def _generator_like_global(device: str) -> torch.Generator:
    """A generator in the state the global one for ``device`` is in now."""
    gen = torch.Generator(device=device)
    if device == "cpu":
        gen.set_state(torch.get_rng_state())
    else:
        gen.set_state(torch.cuda.get_rng_state(torch.device(device)))
    return gen


def _member_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module, i: int, lr: float) -> torch.optim.Optimizer:
    """An Adam over ``model``'s parameters holding member ``i``'s slice of the stacked
    ``optimizer``'s state: what the member's lone run would hold (parameters are stacked
    in ``model.parameters()`` order, so index ``j`` is the same tensor in both)."""
    from vaebench.plugins.backends.torch.backend import adam

    member = adam(list(model.parameters()), lr)
    stacked = optimizer.state_dict()
    state = {j: {k: (v.clone() if k == "step" else v[i].clone()) for k, v in values.items()}
             for j, values in stacked["state"].items()}
    member.load_state_dict({"state": state, "param_groups": copy.deepcopy(stacked["param_groups"])})
    return member


def _stack_optimizers(optimizer: torch.optim.Optimizer, members: Sequence[torch.optim.Optimizer]) -> None:
    """Load the members' Adam states (one step count) into the stacked ``optimizer``."""
    states = [m.state_dict()["state"] for m in members]
    stacked = {j: {k: (v if k == "step" else torch.stack([s[j][k] for s in states])) for k, v in values.items()}
               for j, values in states[0].items()}
    optimizer.load_state_dict({"state": stacked, "param_groups": optimizer.state_dict()["param_groups"]})


def train_group(
    backend: Any,
    specs: Sequence[Any],
    dataset: Any,
    execution: ExecutionOptions,
    on_progress: Sequence[ProgressCallback | None] | None,
    device: str,
    amp: str,
    autocast: Callable[[], Any],
    resume: Sequence[ResumePoint | None] | None = None,
    checkpoint_dirs: Sequence[str | None] | None = None,
) -> list[Any]:
    """Train ``specs`` (one ``base.group_key``) together; one ``TrainedTorchModel`` per spec.

    ``backend`` builds the models; ``autocast()`` gives the AMP context for ``amp``.
    A member whose loss turns non-finite is marked diverged at that check point, as
    a lone run would be, and leaves the summed loss; the others go on. ``resume``: one
    point per member, all at one step (``base.GroupStart``), to go on from;
    ``checkpoint_dirs``: each member's periodic checkpoint directory
    (``execution.checkpoint_every``).
    """
    from safetensors.torch import load_file

    from vaebench.plugins.backends.torch.backend import (
        HISTORY_POINTS,
        TrainedTorchModel,
        TrainingState,
        adam,
        device_grid,
        draw_batches,
    )

    check_group(specs)
    first = specs[0]
    begin = GroupStart.of(resume, checkpoint_dirs, len(specs))
    start_step, points, dirs, earlier = begin.step, begin.points, begin.dirs, begin.earlier
    models: list[GaussianVAE] = []
    generators: list[torch.Generator] = []
    rngs: list[np.random.Generator] = []
    restored: list[torch.optim.Optimizer] = []
    for spec, point in zip(specs, points):  # seeded exactly as TorchBackend._train seeds a lone run
        torch.manual_seed(spec.seed)
        rngs.append(np.random.default_rng(spec.seed))
        model = backend.build(spec, dataset.image_shape, dataset)
        if type(model) is not GaussianVAE:
            raise ValueError(f"model {spec.model!r} built a {type(model).__name__}, not a plain GaussianVAE")
        if point is not None:
            model.load_state_dict(load_file(os.path.join(point.directory, "model.safetensors")))
        models.append(model.to(device))
        if point is not None:  # sets rngs[-1] and torch's generators as the member left them
            member_optimizer = adam(list(models[-1].parameters()), spec.lr)
            if not TrainingState.restore(point.directory, point.step, {"adam": member_optimizer}, rngs[-1], device):
                raise ValueError(f"{point.directory} holds no training state to go on from")
            restored.append(member_optimizer)
        generators.append(_generator_like_global(device))
    params, buffers = stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")
    enc_keys = [k for k in params if k.startswith("encoder.")]
    dec_keys = [k for k in params if k.startswith("decoder.")]

    def member(p: dict[str, torch.Tensor], x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The same arithmetic as GaussianVAE.forward_with_sample + _gaussian_terms,
        # with the noise passed in so that each member draws its own.
        h = functional_call(template.encoder, {k[8:]: p[k] for k in enc_keys}, (x,))
        mu, logvar = h.chunk(2, dim=1)
        z = mu + eps * torch.exp(0.5 * logvar)
        logits = functional_call(template.decoder, {k[8:]: p[k] for k in dec_keys}, (z,))
        recon = template.recon_errors(x, logits.float()).mean()
        kl_per_dim = gaussian_kl_per_dim(mu.float(), logvar.float()).mean(0)
        return recon, kl_per_dim

    forward = vmap(member)
    compiled = False
    if execution.compile:
        try:
            forward, compiled = torch.compile(forward), True
        except Exception as exc:  # noqa: BLE001 - compile is an optimisation, never a failure
            execution.notes.append(f"torch.compile unavailable ({type(exc).__name__}); trained eagerly")
    optimizer = adam(list(params.values()), first.lr)
    if restored:
        _stack_optimizers(optimizer, restored)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    trained = [TrainedTorchModel(m, s, device, amp, compiled) for m, s in zip(models, specs)]
    begin.extend(trained)
    at_divergence: dict[int, dict[str, torch.Tensor]] = {}  # Adam's momentum would move them on

    def member_state(i: int, step: int, progress: dict[str, Any] | None = None) -> TrainingState:
        with torch.no_grad():
            models[i].load_state_dict({k: v[i] for k, v in params.items()} | {k: v[i] for k, v in buffers.items()})
        member_optimizer = _member_optimizer(optimizer, models[i], i, first.lr)
        return TrainingState(step, {"adam": member_optimizer}, rngs[i], device, scaler, progress, noise=generators[i])

    live = list(range(len(specs)))
    history_every = max(1, first.steps // HISTORY_POINTS)
    report_every = max(1, execution.progress_every)
    callbacks = list(on_progress or [None] * len(specs))
    batch, latent = first.batch_size, first.latent_dim
    grid = device_grid(dataset, device, execution.device_grid)
    start = time.perf_counter()
    for step in range(start_step + 1, first.steps + 1):
        x, _ = draw_batches(dataset, batch, rngs, device, grid=grid)  # (M, B, C, H, W)
        eps = torch.stack([torch.randn((batch, latent), generator=g, device=device) for g in generators])
        try:
            with autocast():
                recon, kl_per_dim = forward(params, x, eps)
        except Exception as exc:  # noqa: BLE001 - a failed compile surfaces at the first call
            if not compiled or step != start_step + 1:
                raise
            execution.notes.append(f"torch.compile failed at the first step ({type(exc).__name__}); trained eagerly")
            forward, compiled = vmap(member), False
            for run in trained:
                run.compiled = False
            with autocast():
                recon, kl_per_dim = forward(params, x, eps)
        kl = kl_per_dim.sum(1)
        losses, capacities = [], []
        for i, spec in enumerate(specs):
            loss, capacity = objective(models[i].objective_name, recon[i], kl[i], models[i].hp, step)
            losses.append(loss)
            capacities.append(capacity)
        optimizer.zero_grad(set_to_none=True)
        total = torch.stack([losses[i] for i in live]).sum()
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        last = step == first.steps
        if step % history_every == 0 or step % report_every == 0 or last:
            table = torch.stack([torch.stack(losses), recon, kl]).detach().float().cpu().tolist()
            elapsed = time.perf_counter() - start
            for i in list(live):
                values = {"loss": table[0][i], "recon": table[1][i], "kl": table[2][i]}
                run = trained[i]
                run.steps_done = step
                finite = all(math.isfinite(v) for v in values.values())
                if not finite or step % history_every == 0 or last:
                    run.history.append({"step": step, **values, "capacity": capacities[i]})
                    signals = models[i].beta_signal(step)  # what a lone run records (loss_terms)
                    if signals:
                        run.signals.append({"step": step, **signals})
                run.final_loss = values["loss"]
                if not finite:  # where its lone run would stop: keep its weights as they are now
                    run.diverged = True
                    run.train_seconds = elapsed + earlier[i]
                    at_divergence[i] = {k: v[i].detach().clone() for k, v in params.items()}
                    live.remove(i)
                elif callbacks[i] is not None and (step % report_every == 0 or last):
                    callbacks[i](step, {**values, "images_per_second": (step - start_step) * batch / elapsed})
            if not live:
                break
        for i in live:
            if checkpoint_due(execution, step, first.steps, dirs[i]):
                run = trained[i]
                run.steps_done = step
                run.training_state = member_state(i, step, progress={
                    "train_seconds": time.perf_counter() - start + earlier[i], "history": run.history,
                    "signals": run.signals})
                write_partial(run, str(dirs[i]))
        interrupt.check()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    for i, model in enumerate(models):
        if trained[i].diverged:
            with torch.no_grad():
                model.load_state_dict(at_divergence[i] | {k: v[i] for k, v in buffers.items()})
        else:
            trained[i].train_seconds = elapsed + earlier[i]
            trained[i].training_state = member_state(i, trained[i].steps_done)
    return trained
