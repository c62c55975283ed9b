"""The plugin contract: small hooks, each handed a ``register`` callable.

A plugin module (named under the ``vaebench`` entry-point group) implements any
of these with ``@hookimpl``, imported like everything else a plugin uses from the
public namespace ``vaebench.plugin``::

    from vaebench.plugin import MetricSpec, hookimpl

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="my_metric", description="...", compute="my_pkg.m:compute"))

The hook shapes never change; new capabilities arrive as new hooks.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from vaebench.plugins.specs import (BackendSpec, DatasetSpec, ExecutorSpec, LoggerSpec, MetricSpec, ModelSpec, PresetSpec,
                                    ReferenceSpec)

hookspec = pluggy.HookspecMarker("vaebench")


@hookspec
def vaebench_register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register model specs by calling ``register(ModelSpec(...))``."""


@hookspec
def vaebench_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    """Register metric specs by calling ``register(MetricSpec(...))``."""


@hookspec
def vaebench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register dataset specs by calling ``register(DatasetSpec(...))``."""


@hookspec
def vaebench_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register training backends by calling ``register(BackendSpec(...))``."""


@hookspec
def vaebench_register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    """Register grid executors (where a grid's runs train) by calling ``register(ExecutorSpec(...))``."""


@hookspec
def vaebench_register_presets(register: Callable[[PresetSpec], None]) -> None:
    """Register study presets (TOML files, ``vaebench run --preset NAME``) by calling ``register(PresetSpec(...))``."""


@hookspec
def vaebench_register_references(register: Callable[[ReferenceSpec], None]) -> None:
    """Register reference packs (published values to set a run against) by calling ``register(ReferenceSpec(...))``."""


@hookspec
def vaebench_register_loggers(register: Callable[[LoggerSpec], None]) -> None:
    """Register experiment trackers (``--log-to NAME[:TARGET]``) by calling ``register(LoggerSpec(...))``."""
