"""Everything a vaebench plugin author imports, in one place.

A plugin imports from here and nowhere else in vaebench: the modules behind these names
(``vaebench.plugins.*``) are internal and may move; this namespace is the contract.
Importing it imports neither torch nor jax.

A plugin is a module named under the ``vaebench`` entry-point group of its package::

    [project.entry-points.vaebench]
    myplugin = "my_pkg.plugin"

that implements any of the hooks with :data:`hookimpl`, each handed a ``register``
callable::

    from vaebench.plugin import Hyperparameter, MetricSpec, ModelSpec, hookimpl

    @hookimpl
    def vaebench_register_models(register):
        register(ModelSpec(name="my_vae", description="...",
                           backends={"torch": "my_pkg.model:build"},   # imported when trained
                           hyperparameters=("beta", Hyperparameter("sigma", float, 0.1, minimum=0.0,
                                                                   help="decoder noise")),
                           defaults={"beta": 4.0}))

    @hookimpl
    def vaebench_register_metrics(register):
        register(MetricSpec(name="my_metric", description="...",
                            compute="my_pkg.metric:compute", direction="higher"))

- A **model**: ``ModelSpec.backends`` maps a backend to a factory ``factory(spec:
  RunSpec, image_shape: (H, W, C)) -> model``, reading its own hyperparameters with
  ``spec.hyperparameter(name)`` (each a grid axis: ``--hp sigma=0.1,0.3``); the model implements :class:`TorchModel`
  (an ``nn.Module``) or :class:`JaxModel` (an ``nnx.Module``). Optional members
  (``needs_factors``, ``notes()``, ...) have the defaults those Protocols declare. A model
  declaring the plain name ``"beta"`` gets the β schedule's axes too (``--beta-schedule``,
  ...) and applies them by reading β at each step with :func:`scheduled_beta`.
- A **metric**: ``compute(ctx: EvaluationContext) -> MetricResult | dict[str, float]``;
  raise :class:`MetricUnavailable` when it cannot be computed here.
- A **dataset**: ``DatasetSpec.load(path=None) -> FactorDataset``; raise
  :class:`DatasetError` with what to do when it cannot be loaded. Its optional members
  (``pixel_scale``, ``sample_uint8``, ``grid_uint8``) are :class:`DatasetCapabilities`'.
- A **backend**: ``BackendSpec.backend`` names a class implementing :class:`Backend`,
  constructed with the plugin manager whose models it builds; it trains a
  :class:`RunSpec` under :class:`ExecutionOptions` into a :class:`TrainedModel`.
- An **executor**: ``ExecutorSpec.executor`` names a factory ``factory(options) ->``
  :class:`Executor`, whose ``run(specs, job: GridJob) -> ExecutorResult`` trains, scores
  and records a grid's planned runs where it sends them (``--executor NAME``). A cluster
  executor splits them with :func:`split_tasks` into :class:`PointsTask` s (JSON), runs
  :func:`run_task` on each worker (which claims, trains, picks up and records the points),
  and returns a :class:`TaskRef` per submitted task; ``states``, ``cancel`` and ``log_tail``
  (:class:`ExecutorCapabilities`) serve ``vaebench status`` and ``vaebench cancel``.

Its companion is :mod:`vaebench.testing`, the conformance kit a plugin's own tests call
(``check_model``, ``check_metric``, ``check_dataset``, ``check_backend`` and
``plugin_manager``, an in-process manager with the plugin registered); ``docs/plugins.md``
is the hook reference, and ``vaebench plugins new NAME`` writes a ready package.

Heavy code is named by import path (``"package.module:attribute"``) and imported only
when used, so listing plugins stays cheap. ``examples/vaebench-plugin-example`` is a
complete, pip-installable plugin.
"""

from __future__ import annotations

from vaebench import hookimpl
from vaebench.plugins.backends.base import DeviceInfo, ExecutionOptions, ResumePoint
from vaebench.plugins.contract import (
    Backend,
    BackendCapabilities,
    DatasetCapabilities,
    Executor,
    ExecutorCapabilities,
    ExecutorResult,
    GridJob,
    JaxModel,
    Logger,
    LoggerContext,
    TaskRef,
    TaskState,
    ModelCapabilities,
    TorchModel,
    TrainedModel,
    VectorizedBackend,
)
from vaebench.harness.tasks import PointsTask, run_task, split_tasks, task_records
from vaebench.plugins.datasets.base import DatasetError, FactorDataset
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.objectives import scheduled_beta
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.specs import (
    BackendSpec,
    DatasetSpec,
    ExecutorSpec,
    Hyperparameter,
    LoggerSpec,
    MetricResult,
    MetricSpec,
    MetricUnavailable,
    ModelSpec,
    PresetSpec,
    ReferenceSpec,
)

__all__ = [
    # hooks
    "hookimpl",
    # what a plugin registers
    "ModelSpec", "Hyperparameter", "MetricSpec", "DatasetSpec", "BackendSpec", "ExecutorSpec", "PresetSpec", "ReferenceSpec",
    "LoggerSpec",
    # metrics
    "EvaluationContext", "MetricResult", "MetricUnavailable",
    # datasets
    "FactorDataset", "DatasetCapabilities", "DatasetError",
    # models and backends
    "TorchModel", "JaxModel", "ModelCapabilities",
    "Backend", "VectorizedBackend", "BackendCapabilities", "TrainedModel",
    "RunSpec", "ExecutionOptions", "DeviceInfo", "ResumePoint", "scheduled_beta",
    # executors
    "Executor", "ExecutorCapabilities", "GridJob", "ExecutorResult", "TaskRef", "TaskState",
    "PointsTask", "split_tasks", "run_task", "task_records",
    # loggers (--log-to)
    "Logger", "LoggerContext",
]
