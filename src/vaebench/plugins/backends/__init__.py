"""Training backends. A backend turns a RunSpec and a dataset into a trained model.

Backends are plugins: a ``BackendSpec`` registered through the
``vaebench_register_backends`` hook (the built-in plugin registers ``torch`` and
``jax``) names the backend class by import path, imported only when a run or a
command uses it. The interface is the ``Backend`` Protocol (``plugins/contract.py``),
described in ``docs/architecture.md`` ("Backend interface").
"""

from __future__ import annotations

from typing import Any

from vaebench.plugins.manager import PluginManager, plugin_manager


def get_backend(name: str, manager: PluginManager | None = None) -> Any:
    """An instance of the backend registered as ``name`` on ``manager`` (default: the
    process-wide one), constructed with that manager, whose models it builds
    (``UnknownSpecError`` naming the registered ones otherwise; ``ImportError`` when its
    framework is not installed)."""
    manager = plugin_manager(manager)
    return manager.backend(name).backend_class()(manager)


def load_trained(name: str, directory: str, manager: PluginManager | None = None) -> Any:
    """Rebuild a trained model from a checkpoint directory written by backend ``name``'s
    ``save`` (safetensors + JSON), with the backend's ``load_checkpoint(directory,
    manager)``: the model is built through ``manager`` (default: the process-wide one)."""
    manager = plugin_manager(manager)
    return manager.backend(name).checkpoint_loader()(directory, manager)
