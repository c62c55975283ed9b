"""The torch backend: the AMP and CPU settings of training, a lone run's step, checkpoints.

The loop (``backends.loop.train_loop``) renders batches on the fly from the dataset,
checks for divergence, reports progress and keeps a compact loss history, at no cost
over a plain PyTorch loop (see benchmarks/); this module fills it with a lone run's
step, ``vectorized.py`` with a vectorized group's.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends import allocator
from vaebench.plugins.backends.base import (
    BuiltinBackend,
    AMP_MODES, amp_choices,
    DeviceError, DeviceInfo, ExecutionOptions, ProgressCallback, ResumePoint, cpu_has_native_bf16,
    restart_note
)
from vaebench.plugins.backends.loop import GroupStart, Readout, read_config, train_loop
from vaebench.plugins.backends.torch.training import (  # noqa: F401 - re-exported: the backend's public names
    DEVICE_GRIDS, EVAL_BATCH, TrainedTorchModel, TrainingState, adam, autocast, device_grid, draw_batches,
    eval_batch, factor_tensor, resolve_device
)
from vaebench.plugins.backends.torch.vectorized import train_group
from vaebench.plugins.contract import capability
from vaebench.plugins.manager import PluginManager


def _effective_amp(device: str, amp: str, notes: list[str]) -> str:
    if amp not in AMP_MODES:
        raise DeviceError(f"unknown AMP mode {amp!r} (use {amp_choices()})")
    if amp == "fp16" and not device.startswith("cuda"):
        notes.append("fp16 AMP needs CUDA; trained in float32")
        return "off"
    if amp == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        notes.append("this GPU has no bf16; trained in float32")
        return "off"
    if amp == "bf16" and device == "cpu" and cpu_has_native_bf16() is False:
        # Without AVX512-BF16 / AMX, oneDNN emulates bf16 convolutions: the conv β-VAE
        # trained at 47 against 447 images/s in float32 on an AVX2 EPYC (RESULTS.md).
        notes.append("this CPU has no bf16 instructions (AVX512-BF16 or AMX), where bf16 "
                     "autocast runs about 10x slower; trained in float32")
        return "off"
    return amp


@contextlib.contextmanager
def _training_mode(device: str, threads: int | None):
    """Thread count, and on the CPU flushed denormals and a heap that keeps freed memory
    (``allocator.retain_freed_memory``: 1.4x on the conv β-VAE; left in place, it is
    process-wide and irreversible), for the duration of training."""
    if threads:
        torch.set_num_threads(threads)
    if device != "cpu":
        yield
        return
    allocator.retain_freed_memory()
    # Denormal floats appear in the weights/activations of these VAEs after ~1k steps
    # and make CPU convolutions up to 20x slower (measured: 1,200 -> 69 images/s at
    # beta = 1); flushing them to zero costs nothing in accuracy. The setting is
    # process-wide (numpy too), so it is restored when training ends.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _scalar(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class LoneSteps:
    """A lone run's step for ``loop.train_loop`` (one member): draw a batch, the model's
    ``loss_terms`` under autocast, Adam on the main loss and each auxiliary optimizer on
    its own loss (FactorVAE's discriminator), the fp16 loss scaler. A compiled step that
    fails at its first call falls back to the eager one, with a note."""

    steps_per_call = 1

    def __init__(self, trained: TrainedTorchModel, optimizers: dict[str, torch.optim.Optimizer], scaler: Any,
                 rng: np.random.Generator, dataset: Any, execution: ExecutionOptions, first: int,
                 step_fn: Any) -> None:
        self.trained, self.model, self.device = trained, trained.model, trained.device
        self.optimizers, self.scaler, self.rng = optimizers, scaler, rng
        self.dataset, self.execution, self.first = dataset, execution, first
        self.conditional = bool(capability(self.model, "needs_factors"))
        self.gaussian = bool(capability(self.model, "gaussian_posterior"))  # else no KL per dimension to record
        self.step_fn = step_fn  # the model's ``loss_terms``, or its compiled form
        self.grid = device_grid(dataset, self.device, execution.device_grid)
        self.terms: dict[str, Any] = {}
        self.model.train()

    def run(self, step: int, count: int, live: Sequence[int]) -> None:
        for s in range(step, step + count):
            self.terms = self.one(s)

    def one(self, step: int) -> dict[str, Any]:
        spec, device, trained = self.trained.spec, self.device, self.trained
        batch, (factors,) = draw_batches(self.dataset, spec.batch_size, [self.rng], device, grid=self.grid)
        kwargs = {"factors": factor_tensor(factors, device)} if self.conditional else {}
        try:
            with autocast(device, trained.amp):
                terms = self.step_fn(batch[0], step, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a failed compile surfaces at the first call
            if not trained.compiled or step != self.first:
                raise
            self.execution.notes.append(f"torch.compile failed at the first step ({type(exc).__name__}); trained eagerly")
            self.step_fn, trained.compiled = self.model.loss_terms, False
            with autocast(device, trained.amp):
                terms = self.step_fn(batch[0], step, **kwargs)
        aux_losses = terms.get("aux_losses") or {}
        for name, optimizer in self.optimizers.items():  # the main Adam first, then the model's own
            optimizer.zero_grad(set_to_none=True)
            loss = terms["loss"] if name == "adam" else aux_losses[name]
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
            else:
                loss.backward()
                optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        return terms

    def read(self) -> Readout:
        t = self.terms
        capacity = t["capacity"]
        return Readout([float(t["loss"].detach())], [float(t["recon"].detach())], [float(t["kl"].detach())],
                       [capacity if capacity is None else _scalar(capacity)],
                       [{k: _scalar(v) for k, v in (t.get("signals") or {}).items()}],
                       [t["kl_per_dim"].detach().float().cpu().tolist()] if self.gaussian else None)

    def keep(self, i: int) -> None:
        """The loop stops with the run: its weights stay as they are."""

    def state(self, i: int, step: int, progress: dict[str, Any] | None) -> TrainingState:
        return TrainingState(step, self.optimizers, self.rng, self.device, self.scaler, progress=progress)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)


class TorchBackend(BuiltinBackend):
    name = "torch"
    model_protocol = "torch"

    def resolve_device(self, device: str) -> DeviceInfo:
        return resolve_device(device)

    def train(
        self,
        spec: Any,
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: ProgressCallback | None = None,
        model: torch.nn.Module | None = None,
        resume: ResumePoint | None = None,
    ) -> TrainedTorchModel:
        """Train ``spec`` on ``dataset`` with Adam; stops early (``diverged``) on a non-finite loss.

        With ``resume``, start from its checkpoint at step ``resume.step + 1`` and train to
        ``spec.steps``: weights, optimizer moments and RNG states as the parent left them
        (where its checkpoint holds them; otherwise Adam restarts and batches come from a
        stream seeded by (seed, step), and a note says so)."""
        info = resolve_device(execution.device)
        with _training_mode(info.device, execution.threads), interrupt.deferred():
            return self._train(spec, dataset, execution, on_progress, model, info.device, resume)

    def train_group(
        self,
        specs: Sequence[Any],
        dataset: Any,
        execution: ExecutionOptions,
        on_progress: Sequence[ProgressCallback | None] | None = None,
        resume: Sequence[ResumePoint | None] | None = None,
        checkpoint_dirs: Sequence[str | None] | None = None,
    ) -> list[TrainedTorchModel]:
        """Train grid points that differ only in β, C, γ, schedules or seed as one
        vectorized program (see ``vectorized.py``); one trained model per spec. ``resume``
        (one point per member, one step for all) and ``checkpoint_dirs`` as in ``train``."""
        info = resolve_device(execution.device)
        with _training_mode(info.device, execution.threads), interrupt.deferred():
            amp = _effective_amp(info.device, execution.amp, execution.notes)
            return train_group(self.build, specs, dataset, execution, on_progress, info.device, amp,
                               resume=resume, checkpoint_dirs=checkpoint_dirs)

    def _train(
        self, spec: Any, dataset: Any, execution: ExecutionOptions, on_progress: ProgressCallback | None,
        model: torch.nn.Module | None, device: str, resume: ResumePoint | None = None,
    ) -> TrainedTorchModel:
        amp = _effective_amp(device, execution.amp, execution.notes)
        torch.manual_seed(spec.seed)
        rng = np.random.default_rng(spec.seed)
        if model is None:
            model = self.build(spec, dataset.image_shape, dataset)
        if resume is not None:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(os.path.join(resume.directory, "model.safetensors")))
        model = model.to(device)
        # Optimizers a model owns (FactorVAE's discriminator); their parameters are
        # left out of the main Adam. See the model protocol in models.py.
        aux_optimizers = capability(model, "auxiliary_optimizers")()
        aux_params = {id(p) for opt in aux_optimizers.values() for g in opt.param_groups for p in g["params"]}
        optimizer = adam([p for p in model.parameters() if id(p) not in aux_params], spec.lr)
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        optimizers = {"adam": optimizer, **aux_optimizers}
        if resume is not None and not TrainingState.restore(resume.directory, resume.step, optimizers, rng, device, scaler):
            # A checkpoint from before training states were saved: the weights go on, the rest restarts.
            rng = np.random.default_rng([spec.seed, resume.step])
            torch.manual_seed(int(rng.integers(2**62)))
            execution.notes.append(restart_note(resume.step))
        step_fn, compiled = model.loss_terms, False
        if execution.compile:
            try:
                step_fn, compiled = torch.compile(model.loss_terms), True
            except Exception as exc:  # noqa: BLE001 - compile is an optimisation, never a failure
                execution.notes.append(f"torch.compile unavailable ({type(exc).__name__}); trained eagerly")
        trained = TrainedTorchModel(model, spec, device, amp, compiled, dataset.image_shape)
        begin = GroupStart.of([resume], None, 1)
        steps = LoneSteps(trained, optimizers, scaler, rng, dataset, execution, begin.step + 1, step_fn)
        train_loop(steps, [trained], begin, spec.steps, spec.batch_size, execution, [on_progress])
        execution.notes.extend(f"{spec.model}: {note}" for note in capability(model, "notes")())
        return trained


def load_checkpoint(directory: str, manager: PluginManager | None = None) -> TrainedTorchModel:
    """Rebuild a trained model from ``model.safetensors`` + ``config.json`` (no pickle); the
    image shape comes from ``config.json`` (a checkpoint written before it stored one:
    from the dataset)."""
    from safetensors.torch import load_file

    _, spec, image_shape, dataset = read_config(directory, "torch", manager)
    model = TorchBackend(manager).build(spec, image_shape, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")))
    return TrainedTorchModel(model, spec, "cpu", "off", False, image_shape)
