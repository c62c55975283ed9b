"""The built-in ``local`` executor: a grid's runs train on this machine, by a strategy.

``--executor local`` (the default) picks the strategy (``--strategy``; ``auto`` by
device: ``strategies.choose_strategy``) and runs it, as every grid ran before executors
were plugins: the records are the same. Registered by the built-in plugin
(``plugins/builtin.py``) like any executor a plugin brings.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from vaebench.harness import strategies
from vaebench.plugins.contract import ExecutorResult, GridJob
from vaebench.plugins.runspec import RunSpec

#: Strategy name -> the function that trains a grid's runs with it (``auto`` resolved first).
RUNNERS = {
    "sequential": strategies.run_sequential,
    "processes": strategies.run_processes,
    "vectorized": strategies.run_vectorized,
}


class LocalExecutor:
    """Trains the runs in this process tree, with the grid's strategy."""

    detaches = False
    remote = False

    def run(self, specs: Sequence[RunSpec], job: GridJob) -> ExecutorResult:
        """``specs`` trained with ``job.strategy`` (``auto``: what it means here); records of
        the runs trained, in grid order (a point another writer held is left out)."""
        strategy = strategies.choose_strategy(job.strategy, specs, job.execution, job.manager)
        records = RUNNERS[strategy](list(specs), job.manager, job.registry, job.execution, job.metric_names,
                                    job.reporter, job.metric_options, job.datasets, claims=job.claims)
        return ExecutorResult(records=records, strategy=strategy)


def local_executor(options: Mapping[str, Any]) -> LocalExecutor:
    """The ``local`` executor's factory (it has no options)."""
    return LocalExecutor()
