"""What the torch backend's lone runs (``backend.py``) and vectorized groups
(``vectorized.py``) share: the device, the optimizer, batches (drawn on the host or
gathered from a grid kept on the device), the trained model and its training state."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Sequence

import numpy as np
import torch

from vaebench.plugins.backends.base import (
    DeviceInfo, TRAINING_STATE, cpu_name, load_training_meta, parse_device, save_training_meta
)
from vaebench.plugins.backends.device_grid import DeviceGrids, device_grid_wanted, draw_grid_indices, grid_chunks
from vaebench.plugins.backends.loop import TrainedRecord, write_config
from vaebench.plugins.contract import capability

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


def autocast(device: str, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam as every torch training loop here builds it: the fused kernel (one pass over
    each parameter instead of a chain of foreach ops; the same update rule), measured
    in benchmarks/cpu_training.py."""
    return torch.optim.Adam(params, lr=lr, fused=True)



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
    """``dataset``'s whole grid on ``device`` (``device_grid.device_grid_wanted``: by default on a
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
        scale = np.float32(capability(dataset, "pixel_scale"))
        if scale != 1:
            x.mul_(torch.tensor(scale, device=x.device))
        return x, factors
    sample_uint8 = capability(dataset, "sample_uint8")
    compact = (device != "cpu" if compact is None else compact) and sample_uint8 is not None
    draws = [sample_uint8(n, rng) if compact else dataset.sample(n, rng) for rng in rngs]
    images = draws[0][0][None] if len(draws) == 1 else np.stack([d[0] for d in draws])
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3)))
    if device != "cpu":
        x = _host_to_device(x, device)
    if compact:
        x = x.float()
        scale = np.float32(capability(dataset, "pixel_scale"))
        if scale != 1:
            x.mul_(torch.tensor(scale, device=x.device))
    return x, [d[1] for d in draws]


def factor_tensor(factors: np.ndarray | None, device: str) -> torch.Tensor | None:
    return None if factors is None else torch.from_numpy(np.ascontiguousarray(factors, dtype=np.int64)).to(device)


class TrainedTorchModel(TrainedRecord):
    """A trained torch model with its training record (``loop.TrainedRecord``; its
    ``signals`` are ``loss_terms``'s: the scheduled β, the TC estimate, codebook
    perplexity, discriminator loss, ...).

    A model that reads factors (``needs_factors``) takes them as ``factors`` ``(N, K)``
    in :meth:`evaluate`, :meth:`encode` and :meth:`decode`; without them, encoding
    infers them (``model.infer_factors``) and decoding uses the model's default.
    """

    def __init__(self, model: torch.nn.Module, spec: Any, device: str, amp: str, compiled: bool,
                 image_shape: Sequence[int] | None = None) -> None:
        super().__init__(spec, device, amp, compiled, image_shape)
        self.model = model
        #: What continuing this run needs beyond the weights (``save`` writes it as
        #: ``training_state.safetensors`` + ``.json``): set by the training loop.
        self.training_state: TrainingState | None = None

    @property
    def _conditional(self) -> bool:
        return bool(capability(self.model, "needs_factors"))

    def _batches(self, images: np.ndarray, factors: np.ndarray | None = None):
        size = eval_batch(self.device)
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            x = torch.from_numpy(np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))).to(self.device)
            f = None if factors is None else factor_tensor(factors[start : start + size], self.device)
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
        logits = self._decode(zt, factor_tensor(factors, self.device))
        return torch.sigmoid(logits.float()).permute(0, 2, 3, 1).cpu().numpy()

    def save(self, directory: str) -> dict[str, str]:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        weights = os.path.join(directory, "model.safetensors")
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, weights, metadata={"format": "pt", "run_id": self.spec.run_id})
        artifacts = {"checkpoint": weights, **write_config(directory, self, "torch", self.model.latent_dim, "NCHW")}
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
