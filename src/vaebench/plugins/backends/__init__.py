"""Training backends. A backend turns a RunSpec and a dataset into a trained model.

Backends are plugins: a ``BackendSpec`` registered through the
``vaebench_register_backends`` hook (the built-in plugin registers ``torch`` and
``jax``) names the backend class by import path, imported only when a run or a
command uses it. The interface is in ``docs/architecture.md`` ("Backend interface")
and ``BackendSpec``'s docstring.
"""

from __future__ import annotations

from typing import Any


def _spec(name: str, manager: Any = None) -> Any:
    if manager is None:
        from vaebench.plugins.manager import get_manager

        manager = get_manager()
    return manager.backend(name)


def get_backend(name: str, manager: Any = None) -> Any:
    """An instance of the backend registered as ``name`` (``UnknownSpecError`` naming the
    registered ones otherwise; ``ImportError`` when its framework is not installed)."""
    return _spec(name, manager).backend_class()()


def load_trained(name: str, directory: str, manager: Any = None) -> Any:
    """Rebuild a trained model from a checkpoint directory written by backend ``name``'s
    ``save`` (safetensors + JSON), with the backend's ``load_checkpoint``."""
    return _spec(name, manager).checkpoint_loader()(directory)
