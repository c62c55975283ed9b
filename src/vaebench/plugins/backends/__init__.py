"""Training backends. A backend turns a RunSpec and a dataset into a trained model.

Interface (see ``docs/architecture.md``): a backend class with
``name``, ``resolve_device(device: str) -> DeviceInfo`` and
``train(spec, dataset, execution, on_progress) -> TrainedModel``. Backends are
named here by import path and imported only when a run asks for them.
"""

from __future__ import annotations

from typing import Any

from vaebench.plugins.specs import load_object

BACKENDS: dict[str, str] = {
    "torch": "vaebench.plugins.backends.torch.backend:TorchBackend",
    "jax": "vaebench.plugins.backends.jax.backend:JaxBackend",
}


def get_backend(name: str) -> Any:
    if name not in BACKENDS:
        have = ", ".join(sorted(BACKENDS))
        raise KeyError(f"unknown backend {name!r} (available: {have})")
    return load_object(BACKENDS[name])()


def load_trained(name: str, directory: str) -> Any:
    """Rebuild a trained model from a checkpoint directory written by backend ``name``'s
    ``save`` (safetensors + JSON); each backend module provides ``load_checkpoint(directory)``."""
    if name not in BACKENDS:
        have = ", ".join(sorted(BACKENDS))
        raise KeyError(f"unknown backend {name!r} (available: {have})")
    module = BACKENDS[name].split(":", 1)[0]
    return load_object(f"{module}:load_checkpoint")(directory)
