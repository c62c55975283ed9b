"""The torch backend: device selection, the training loop, batched evaluation, checkpoints.

The loop is written by hand because it is the product's own: it renders batches
on the fly from the dataset, checks for divergence, reports progress and keeps a
compact loss history, at no cost over a plain PyTorch loop (see benchmarks/).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
import torch

from vaebench.plugins.backends import interrupt
from vaebench.plugins.backends.allocator import retain_freed_memory
from vaebench.plugins.backends.base import (
    DeviceError,
    DeviceGrids,
    DeviceInfo,
    ExecutionOptions,
    ProgressCallback,
    TRAINING_STATE,
    ResumePoint,
    checkpoint_due,
    cpu_has_native_bf16,
    cpu_name,
    device_grid_wanted,
    draw_grid_indices,
    grid_chunks,
    load_training_meta,
    parse_device,
    restart_note,
    save_training_meta,
    write_partial,
    write_signals,
)

#: Loss history keeps at most this many points per run.
HISTORY_POINTS = 200
#: Images per forward pass when evaluating / encoding, by device type. On a CPU small
#: batches keep the activations in cache: batches of 64 encoded 1.8x faster than 500
#: on 2 cores (``benchmarks/encode_batch.py``, RESULTS.md; 128 was as fast in that
#: script but 1.7x slower than 64 inside ``benchmarks/metrics.py``); a GPU wants
#: large ones to fill the device.
EVAL_BATCH = {"cpu": 64, "cuda": 1024}


def eval_batch(device: str) -> int:
    """Evaluation batch size for a torch device string (``cpu``, ``cuda:1``, ...)."""
    return EVAL_BATCH.get(device.split(":", 1)[0], EVAL_BATCH["cpu"])


def resolve_device(device: str) -> DeviceInfo:
    """``auto`` -> ``cuda:0`` when CUDA is available, else ``cpu``; validates ``cuda:N``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = parse_device(device, count, "torch sees no CUDA device here (use --device cpu or auto)")
    if index is None:
        return DeviceInfo("cpu", cpu_name())
    return DeviceInfo(f"cuda:{index}", torch.cuda.get_device_name(index))


def _autocast(device: str, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _effective_amp(device: str, amp: str, notes: list[str]) -> str:
    from vaebench.plugins.backends.base import AMP_MODES, amp_choices

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


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam as every torch training loop here builds it: the fused kernel (one pass over
    each parameter instead of a chain of foreach ops; the same update rule), measured
    in benchmarks/cpu_training.py."""
    return torch.optim.Adam(params, lr=lr, fused=True)


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
    retain_freed_memory()
    # Denormal floats appear in the weights/activations of these VAEs after ~1k steps
    # and make CPU convolutions up to 20x slower (measured: 1,200 -> 69 images/s at
    # beta = 1); flushing them to zero costs nothing in accuracy. The setting is
    # process-wide (numpy too), so it is restored when training ends.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


#: Whether page-locked host memory can be had here (set to False at the first failure).
_PINNED = [True]


def _host_to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    """``x`` copied to ``device`` through pinned memory (PyTorch's caching host allocator
    keeps the block until the copy is done), so the copy is asynchronous; a plain copy
    where pinning fails."""
    if _PINNED[0]:
        try:
            return x.pin_memory().to(device, non_blocking=True)
        except RuntimeError:
            _PINNED[0] = False
    return x.to(device)


def _upload_grid(dataset: Any, device: str) -> torch.Tensor:
    """``dataset``'s whole grid ``(N, H, W, C)`` uint8 on ``device``, copied chunk by chunk."""
    grid = torch.empty((int(dataset.grid_size), *dataset.image_shape), dtype=torch.uint8, device=device)
    for start, images in grid_chunks(dataset):
        grid[start : start + len(images)].copy_(torch.from_numpy(images))
    return grid


#: The grids kept on devices in this process (``ExecutionOptions.device_grid``).
DEVICE_GRIDS = DeviceGrids(_upload_grid)


def device_grid(dataset: Any, device: str, wanted: bool | None) -> torch.Tensor | None:
    """``dataset``'s whole grid on ``device`` (``base.device_grid_wanted``: by default on a
    GPU where it fits), uploaded once per process; ``None``: batches are drawn on the host."""
    if device != "cpu":
        device = resolve_device(device).device  # one name per device ("cuda" -> "cuda:0"): one upload
    memory = torch.cuda.get_device_properties(torch.device(device)).total_memory if device.startswith("cuda") else None
    if not device_grid_wanted(dataset, device != "cpu", wanted, memory):
        return None
    return DEVICE_GRIDS.get(dataset, device)


def draw_batches(
    dataset: Any, n: int, rngs: Sequence[np.random.Generator], device: str, compact: bool | None = None,
    grid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """One batch per generator, drawn as ``dataset.sample(n, rng)`` draws it: images
    ``(len(rngs), n, C, H, W)`` float32 on ``device`` and each batch's factors ``(n, K)``.

    With ``grid`` (:func:`device_grid`: the dataset's whole grid on ``device``) only the
    drawn indices travel and the batch is gathered there. Otherwise on a CPU the sampled
    float32 images are used as they are; on a GPU a factor-grid dataset's uint8 images
    (``sample_uint8``, a quarter of the bytes) are copied through pinned memory, so the
    copy runs asynchronously instead of waiting for the steps queued before it. Each way
    the images are the same float32 values. ``compact`` forces the uint8 copy (default:
    on any device but the CPU)."""
    if grid is not None:
        index, factors = draw_grid_indices(dataset, n, rngs)
        flat = torch.from_numpy(index.reshape(-1))
        if device != "cpu":
            flat = _host_to_device(flat, device)
        # (M, n, H, W, C) -> (M, n, C, H, W) with the host path's strides (NumPy's transpose
        # and ascontiguousarray: a single channel keeps stride 1, which the convolutions
        # read as channels-last), so that the same kernels run and the records are equal.
        x = grid.index_select(0, flat).view(len(rngs), n, *grid.shape[1:]).permute(0, 1, 4, 2, 3)
        x = x.contiguous().float()
        scale = np.float32(getattr(dataset, "pixel_scale", 1.0))
        if scale != 1:
            x.mul_(torch.tensor(scale, device=x.device))
        return x, factors
    compact = (device != "cpu" if compact is None else compact) and hasattr(dataset, "sample_uint8")
    draws = [dataset.sample_uint8(n, rng) if compact else dataset.sample(n, rng) for rng in rngs]
    images = draws[0][0][None] if len(draws) == 1 else np.stack([d[0] for d in draws])
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3)))
    if device != "cpu":
        x = _host_to_device(x, device)
    if compact:
        x = x.float()
        scale = np.float32(getattr(dataset, "pixel_scale", 1.0))
        if scale != 1:
            x.mul_(torch.tensor(scale, device=x.device))
    return x, [d[1] for d in draws]


def _factor_tensor(factors: np.ndarray | None, device: str) -> torch.Tensor | None:
    return None if factors is None else torch.from_numpy(np.ascontiguousarray(factors, dtype=np.int64)).to(device)


class TrainedTorchModel:
    """A trained torch model with its training record (see ``backends.base.TrainedModel``).

    ``signals``: per history point, ``{"step": ..., name: value}`` for the training
    signals the model reports (``loss_terms``'s ``signals``: the scheduled β, the TC
    estimate, codebook perplexity, discriminator loss, ...); written next to the
    checkpoint as ``signals.json`` (artifact ``signals``).

    A model that reads factors (``needs_factors``) takes them as ``factors`` ``(N, K)``
    in :meth:`evaluate`, :meth:`encode` and :meth:`decode`; without them, encoding
    infers them (``model.infer_factors``) and decoding uses the model's default.
    """

    def __init__(self, model: torch.nn.Module, spec: Any, device: str, amp: str, compiled: bool) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.amp = amp
        self.compiled = compiled
        self.history: list[dict[str, float]] = []
        self.signals: list[dict[str, float]] = []
        self.steps_done = 0
        self.diverged = False
        self.train_seconds = 0.0
        self.final_loss = math.nan
        #: What continuing this run needs beyond the weights (``save`` writes it as
        #: ``training_state.safetensors`` + ``.json``): set by the training loop.
        self.training_state: TrainingState | None = None

    @property
    def _conditional(self) -> bool:
        return bool(getattr(self.model, "needs_factors", False))

    def _batches(self, images: np.ndarray, factors: np.ndarray | None = None):
        size = eval_batch(self.device)
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            x = torch.from_numpy(np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))).to(self.device)
            f = None if factors is None else _factor_tensor(factors[start : start + size], self.device)
            yield x, f

    def _encode(self, x: torch.Tensor, f: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(mu, logvar, factors used)``; a conditional model infers missing factors."""
        if not self._conditional:
            mu, logvar = self.model.encode(x)
            return mu, logvar, None
        if f is None:
            f = self.model.infer_factors(x)
        mu, logvar = self.model.encode(x, factors=f)
        return mu, logvar, f

    def _decode(self, z: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
        return self.model.decode(z, factors=f) if self._conditional else self.model.decode(z)

    @torch.inference_mode()
    def evaluate(
        self, images: np.ndarray, reconstructions: bool = False, factors: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """``(means, logvars, recon NLL)``, plus the reconstructions ``(N, H, W, C)`` when asked."""
        self.model.eval()
        mus, logvars, errors, recons = [], [], [], []
        for x, f in self._batches(images, factors):
            mu, logvar, f = self._encode(x, f)
            logits = self._decode(mu, f).float()
            errors.append(self.model.recon_errors(x, logits).cpu())
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
            if reconstructions:
                recons.append(torch.sigmoid(logits).permute(0, 2, 3, 1).cpu())
        out = (torch.cat(mus).numpy(), torch.cat(logvars).numpy(), torch.cat(errors).numpy())
        return out + (torch.cat(recons).numpy(),) if reconstructions else out

    @torch.inference_mode()
    def encode(self, images: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        self.model.eval()
        return torch.cat([self._encode(x, f)[0].float().cpu() for x, f in self._batches(images, factors)]).numpy()

    @torch.inference_mode()
    def decode(self, z: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Latents ``(N, D)`` -> Bernoulli means ``(N, H, W, C)`` in [0, 1]."""
        self.model.eval()
        zt = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        logits = self._decode(zt, _factor_tensor(factors, self.device))
        return torch.sigmoid(logits.float()).permute(0, 2, 3, 1).cpu().numpy()

    def save(self, directory: str) -> dict[str, str]:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        weights = os.path.join(directory, "model.safetensors")
        config = os.path.join(directory, "config.json")
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, weights, metadata={"format": "pt", "run_id": self.spec.run_id})
        with open(config, "w") as fh:
            json.dump({"spec": asdict(self.spec), "backend": "torch", "latent_dim": self.model.latent_dim}, fh, indent=2)
        artifacts = {"checkpoint": weights, "config": config, **write_signals(directory, self.signals)}
        if self.training_state is not None:
            artifacts["training_state"] = self.training_state.save(directory, self.spec.run_id)
        return artifacts


class TrainingState:
    """What continuing a run needs besides its weights: each optimizer's moments and step
    counts (Adam's ``state_dict``), the fp16 loss scaler, and the RNG states at the last
    step (numpy's batch generator, torch's CPU / CUDA generators). With them a run
    continued for N steps trains exactly as the same run would have without stopping.

    Written as ``training_state.safetensors`` (the tensors) and ``training_state.json``
    (``base.save_training_meta``: step, numpy's state, parameter groups, scaler): no pickle.
    """

    def __init__(self, step: int, optimizers: dict[str, torch.optim.Optimizer], rng: np.random.Generator,
                 device: str, scaler: Any = None, progress: dict[str, Any] | None = None,
                 noise: torch.Generator | None = None) -> None:
        self.step = step
        #: a periodic checkpoint's seconds, history and signals so far (``base.partial_resume_point``)
        self.progress = progress
        self.optimizers = optimizers
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = rng.bit_generator.state  # a copy: the state at the last step
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.startswith("cuda") else None
        if noise is not None:  # a vectorized member's own noise generator stands for the global one
            if device.startswith("cuda"):
                self.cuda_rng = noise.get_state()
            else:
                self.torch_rng = noise.get_state()
        self.scaler = scaler.state_dict() if scaler is not None else None

    def save(self, directory: str, run_id: str) -> str:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {"rng.torch": self.torch_rng}
        if self.cuda_rng is not None:
            tensors["rng.cuda"] = self.cuda_rng.cpu()
        groups = {}
        for name, optimizer in self.optimizers.items():
            state = optimizer.state_dict()
            groups[name] = state["param_groups"]
            for index, values in state["state"].items():
                for key, value in values.items():
                    tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        path = os.path.join(directory, TRAINING_STATE + ".safetensors")
        save_file(tensors, path, metadata={"format": "pt", "run_id": run_id})
        save_training_meta(directory, self.step, self.rng, param_groups=groups, scaler=self.scaler,
                           **({"progress": self.progress} if self.progress else {}))
        return path

    @staticmethod
    def restore(directory: str, step: int, optimizers: dict[str, torch.optim.Optimizer], rng: np.random.Generator,
                device: str, scaler: Any = None) -> bool:
        """Load what :meth:`save` wrote into ``optimizers``, ``rng``, torch's generators and
        ``scaler``; ``False`` when ``directory`` holds no training state (a checkpoint
        written before vaebench saved it). A state of another step or model is a
        ``ValueError``."""
        from safetensors.torch import load_file

        meta = load_training_meta(directory, step, rng)
        if meta is None:
            return False
        tensors = load_file(os.path.join(directory, TRAINING_STATE + ".safetensors"))
        for name, optimizer in optimizers.items():
            if name not in meta["param_groups"]:
                raise ValueError(f"the checkpoint's training state has no optimizer {name!r}")
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                owner, _, rest = key.partition(".")
                if owner == name:
                    index, _, field_name = rest.partition(".")
                    state.setdefault(int(index), {})[field_name] = value
            optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"][name]})
        torch.set_rng_state(tensors["rng.torch"])
        if device.startswith("cuda") and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        return True


def _scalar(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class TorchBackend:
    name = "torch"
    #: ``train`` takes ``resume`` (``vaebench continue``); ``train_group`` takes ``resume``
    #: and ``checkpoint_dirs`` (periodic checkpoints of each member).
    supports_resume = True
    supports_group_resume = True

    def resolve_device(self, device: str) -> DeviceInfo:
        return resolve_device(device)

    def build(self, spec: Any, image_shape: tuple[int, int, int], dataset: Any = None) -> torch.nn.Module:
        """The model of ``spec``; a factory that takes a ``dataset`` keyword gets it."""
        from vaebench.plugins.manager import get_manager

        return get_manager().model(spec.model).build("torch", spec, image_shape, dataset)

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
        from vaebench.plugins.backends.torch.vectorized import train_group

        info = resolve_device(execution.device)
        with _training_mode(info.device, execution.threads), interrupt.deferred():
            amp = _effective_amp(info.device, execution.amp, execution.notes)
            return train_group(
                self, specs, dataset, execution, on_progress, info.device, amp, lambda: _autocast(info.device, amp),
                resume=resume, checkpoint_dirs=checkpoint_dirs,
            )

    def group_key(self, spec: Any) -> tuple | None:
        """Specs with equal keys can train together in :meth:`train_group`; ``None``: alone."""
        from vaebench.plugins.backends.base import group_key

        return group_key(spec)

    def _train(
        self, spec: Any, dataset: Any, execution: ExecutionOptions, on_progress: ProgressCallback | None,
        model: torch.nn.Module | None, device: str, resume: ResumePoint | None = None,
    ) -> TrainedTorchModel:
        amp = _effective_amp(device, execution.amp, execution.notes)
        first = 1 if resume is None else resume.step + 1
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
        aux_optimizers = model.auxiliary_optimizers() if hasattr(model, "auxiliary_optimizers") else {}
        aux_params = {id(p) for opt in aux_optimizers.values() for g in opt.param_groups for p in g["params"]}
        optimizer = adam([p for p in model.parameters() if id(p) not in aux_params], spec.lr)
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        optimizers = {"adam": optimizer, **aux_optimizers}
        if resume is not None and not TrainingState.restore(resume.directory, resume.step, optimizers, rng, device, scaler):
            # A checkpoint from before training states were saved: the weights go on, the rest restarts.
            rng = np.random.default_rng([spec.seed, resume.step])
            torch.manual_seed(int(rng.integers(2**62)))
            execution.notes.append(restart_note(resume.step))
        conditional = bool(getattr(model, "needs_factors", False))
        step_fn = model.loss_terms
        compiled = False
        if execution.compile:
            try:
                step_fn = torch.compile(model.loss_terms)
                compiled = True
            except Exception as exc:  # noqa: BLE001 - compile is an optimisation, never a failure
                execution.notes.append(f"torch.compile unavailable ({type(exc).__name__}); trained eagerly")
        trained = TrainedTorchModel(model, spec, device, amp, compiled)
        if resume is not None:
            trained.history, trained.signals = list(resume.history), list(resume.signals)
            trained.steps_done = resume.step
        history_every = max(1, spec.steps // HISTORY_POINTS)
        report_every = max(1, execution.progress_every)
        grid = device_grid(dataset, device, execution.device_grid)
        model.train()
        start = time.perf_counter()
        for step in range(first, spec.steps + 1):
            batch, (factors,) = draw_batches(dataset, spec.batch_size, [rng], device, grid=grid)
            x = batch[0]
            kwargs = {"factors": _factor_tensor(factors, device)} if conditional else {}
            try:
                with _autocast(device, amp):
                    terms = step_fn(x, step, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a failed compile surfaces at the first call
                if not compiled or step != first:
                    raise
                execution.notes.append(f"torch.compile failed at the first step ({type(exc).__name__}); trained eagerly")
                step_fn, compiled, trained.compiled = model.loss_terms, False, False
                with _autocast(device, amp):
                    terms = step_fn(x, step, **kwargs)
            loss = terms["loss"]
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
            else:
                loss.backward()
                optimizer.step()
            aux_losses = terms.get("aux_losses") or {}
            for name, aux_opt in aux_optimizers.items():
                aux_opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(aux_losses[name]).backward()
                    scaler.step(aux_opt)
                else:
                    aux_losses[name].backward()
                    aux_opt.step()
            if scaler is not None:
                scaler.update()
            last = step == spec.steps
            if step % history_every == 0 or step % report_every == 0 or last:
                values = {k: float(terms[k].detach()) for k in ("loss", "recon", "kl")}
                trained.steps_done = step
                signals = terms.get("signals") or {}
                if not all(math.isfinite(v) for v in values.values()):
                    trained.diverged = True
                    trained.final_loss = values["loss"]
                    trained.history.append({"step": step, **values, "capacity": terms["capacity"]})
                    if signals:
                        trained.signals.append({"step": step, **{k: _scalar(v) for k, v in signals.items()}})
                    break
                if step % history_every == 0 or last:
                    trained.history.append({"step": step, **values, "capacity": terms["capacity"]})
                    if signals:
                        trained.signals.append({"step": step, **{k: _scalar(v) for k, v in signals.items()}})
                trained.final_loss = values["loss"]
                if on_progress is not None and (step % report_every == 0 or last):
                    elapsed = time.perf_counter() - start
                    on_progress(step, {**values, "images_per_second": (step - first + 1) * spec.batch_size / elapsed})
            if checkpoint_due(execution, step, spec.steps):
                seconds = time.perf_counter() - start + (resume.train_seconds if resume is not None else 0.0)
                trained.steps_done = step
                trained.training_state = TrainingState(step, optimizers, rng, device, scaler, progress={
                    "train_seconds": seconds, "history": trained.history, "signals": trained.signals})
                write_partial(trained, str(execution.checkpoint_dir))
            interrupt.check()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        trained.train_seconds = time.perf_counter() - start + (resume.train_seconds if resume is not None else 0.0)
        if not trained.diverged:
            trained.training_state = TrainingState(trained.steps_done, optimizers, rng, device, scaler)
        if hasattr(model, "notes"):
            execution.notes.extend(f"{spec.model}: {note}" for note in model.notes())
        return trained


def load_checkpoint(directory: str) -> TrainedTorchModel:
    """Rebuild a trained model from ``model.safetensors`` + ``config.json`` (no pickle)."""
    from safetensors.torch import load_file

    from vaebench.plugins.runspec import RunSpec

    with open(os.path.join(directory, "config.json")) as fh:
        config = json.load(fh)
    spec = RunSpec.from_dict(config["spec"])
    from vaebench.plugins.manager import get_manager

    dataset_spec = get_manager().dataset(spec.dataset)
    dataset = dataset_spec.loader()(path=spec.dataset_path)
    backend = TorchBackend()
    model = backend.build(spec, dataset.image_shape, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")))
    return TrainedTorchModel(model, spec, "cpu", "off", False)
