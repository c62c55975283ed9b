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
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from vaebench.plugins.backends.base import ExecutionOptions, ProgressCallback, ResumePoint, check_group
from vaebench.plugins.backends.loop import GroupStart, Readout, train_loop
from vaebench.plugins.backends.torch.models import GaussianVAE, gaussian_kl_per_dim
from vaebench.plugins.backends.torch.training import (
    TrainedTorchModel, TrainingState, adam, autocast, device_grid, draw_batches
)
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


class GroupSteps:
    """A vectorized group's step for ``loop.train_loop``: each member's batch and noise, one
    vmapped forward pass, each member's objective, one Adam over the stacked parameters
    on the summed loss of the members not diverged. ``torch.compile`` of the forward pass
    (``execution.compile``) falls back to the eager one where it fails, with a note."""

    steps_per_call = 1

    def __init__(self, models: list[GaussianVAE], trained: list[TrainedTorchModel], rngs: list[np.random.Generator],
                 generators: list[torch.Generator], restored: list[torch.optim.Optimizer], dataset: Any,
                 execution: ExecutionOptions, first_step: int) -> None:
        spec, device = trained[0].spec, trained[0].device
        self.models, self.trained, self.rngs, self.generators = models, trained, rngs, generators
        self.dataset, self.execution, self.first_step, self.device = dataset, execution, first_step, device
        self.params, self.buffers = stack_module_state(models)
        template = copy.deepcopy(models[0]).to("meta")
        enc_keys = [k for k in self.params if k.startswith("encoder.")]
        dec_keys = [k for k in self.params if k.startswith("decoder.")]

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

        self.eager = self.forward = vmap(member)
        if execution.compile:
            try:
                self.forward = torch.compile(self.eager)
                for run in trained:
                    run.compiled = True
            except Exception as exc:  # noqa: BLE001 - compile is an optimisation, never a failure
                execution.notes.append(f"torch.compile unavailable ({type(exc).__name__}); trained eagerly")
        self.optimizer = adam(list(self.params.values()), spec.lr)
        if restored:
            _stack_optimizers(self.optimizer, restored)
        self.scaler = torch.amp.GradScaler("cuda") if trained[0].amp == "fp16" else None
        self.grid = device_grid(dataset, device, execution.device_grid)
        self.batch, self.latent = spec.batch_size, spec.latent_dim
        self.last: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[Any], torch.Tensor] | None = None
        self.step_done = first_step - 1

    def run(self, step: int, count: int, live: Sequence[int]) -> None:
        for s in range(step, step + count):
            self.last = self.one(s, live)

    def one(self, step: int, live: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[Any],
                                                           torch.Tensor]:
        device, amp, batch = self.device, self.trained[0].amp, self.batch
        x, _ = draw_batches(self.dataset, batch, self.rngs, device, grid=self.grid)  # (M, B, C, H, W)
        eps = torch.stack([torch.randn((batch, self.latent), generator=g, device=device) for g in self.generators])
        try:
            with autocast(device, amp):
                recon, kl_per_dim = self.forward(self.params, x, eps)
        except Exception as exc:  # noqa: BLE001 - a failed compile surfaces at the first call
            if not self.trained[0].compiled or step != self.first_step:
                raise
            self.execution.notes.append(f"torch.compile failed at the first step ({type(exc).__name__}); trained eagerly")
            self.forward = self.eager
            for run in self.trained:
                run.compiled = False
            with autocast(device, amp):
                recon, kl_per_dim = self.forward(self.params, x, eps)
        kl = kl_per_dim.sum(1)
        losses, capacities = [], []
        for i, model in enumerate(self.models):
            loss, capacity = objective(model.objective_name, recon[i], kl[i], model.hp, step)
            losses.append(loss)
            capacities.append(capacity)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.stack([losses[i] for i in live]).sum()
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        self.step_done = step
        return losses, recon, kl, capacities, kl_per_dim

    def read(self) -> Readout:
        assert self.last is not None
        losses, recon, kl, capacities, kl_per_dim = self.last
        table = torch.stack([torch.stack(losses), recon, kl]).detach().float().cpu().tolist()
        signals = [m.beta_signal(self.step_done) for m in self.models]  # what a lone run records (loss_terms)
        return Readout(table[0], table[1], table[2], capacities, signals, kl_per_dim.detach().float().cpu().tolist())

    def load(self, i: int, params: dict[str, torch.Tensor]) -> None:
        """Member ``i``'s model gets ``params`` (its slice of the stacked ones) and its buffers."""
        with torch.no_grad():
            self.models[i].load_state_dict(params | {k: v[i] for k, v in self.buffers.items()})

    def keep(self, i: int) -> None:
        """Adam's momentum would move a diverged member on: its model keeps its weights now."""
        self.load(i, {k: v[i].detach().clone() for k, v in self.params.items()})

    def state(self, i: int, step: int, progress: dict[str, Any] | None) -> TrainingState:
        self.load(i, {k: v[i] for k, v in self.params.items()})
        member_optimizer = _member_optimizer(self.optimizer, self.models[i], i, self.trained[i].spec.lr)
        return TrainingState(step, {"adam": member_optimizer}, self.rngs[i], self.device, self.scaler, progress,
                             noise=self.generators[i])

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)


def train_group(
    build: Callable[..., torch.nn.Module],
    specs: Sequence[Any],
    dataset: Any,
    execution: ExecutionOptions,
    on_progress: Sequence[ProgressCallback | None] | None,
    device: str,
    amp: str,
    resume: Sequence[ResumePoint | None] | None = None,
    checkpoint_dirs: Sequence[str | None] | None = None,
) -> list[TrainedTorchModel]:
    """Train ``specs`` (one ``base.group_key``) together; one ``TrainedTorchModel`` per spec.

    ``build(spec, image_shape, dataset)`` builds the models (``TorchBackend.build``); ``amp``:
    the AMP mode in effect. A member whose loss turns non-finite is marked diverged at
    that check point, as a lone run would be, and leaves the summed loss; the others go
    on. ``resume``: one point per member, all at one step (``loop.GroupStart``), to go on
    from; ``checkpoint_dirs``: each member's periodic checkpoint directory
    (``execution.checkpoint_every``).
    """
    from safetensors.torch import load_file

    check_group(specs)
    begin = GroupStart.of(resume, checkpoint_dirs, len(specs))
    models: list[GaussianVAE] = []
    generators: list[torch.Generator] = []
    rngs: list[np.random.Generator] = []
    restored: list[torch.optim.Optimizer] = []
    for spec, point in zip(specs, begin.points):  # seeded exactly as TorchBackend._train seeds a lone run
        torch.manual_seed(spec.seed)
        rngs.append(np.random.default_rng(spec.seed))
        model = build(spec, dataset.image_shape, dataset)
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
    trained = [TrainedTorchModel(m, s, device, amp, False, dataset.image_shape) for m, s in zip(models, specs)]
    steps = GroupSteps(models, trained, rngs, generators, restored, dataset, execution, begin.step + 1)
    train_loop(steps, trained, begin, specs[0].steps, specs[0].batch_size, execution, on_progress)
    return trained
