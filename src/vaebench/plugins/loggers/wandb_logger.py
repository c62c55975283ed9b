"""``--log-to wandb[:PROJECT]``: Weights & Biases runs, offline unless told.

Mode ``WANDB_MODE`` (default ``offline``: nothing leaves the machine; ``wandb sync`` uploads
later), files in ``<registry>/wandb`` (``WANDB_DIR`` wins), project ``PROJECT`` (default
``vaebench``), grouped by the grid's id, named by the run id. Config = the RunSpec's
fields; live values at their steps; the record's final numbers in the run's summary
(``final/<name>``); the images as ``wandb.Image``; tags ``run_id:<id>`` and
``config_id:<id>``. Console capture and system statistics are off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import wandb

from vaebench.plugins.contract import LoggerContext
from vaebench.plugins.loggers.common import final_values, home, images, run_params


class WandbLogger:
    """The :class:`~vaebench.plugins.contract.Logger` of W&B (see the module)."""

    def __init__(self, context: LoggerContext) -> None:
        self.project = context.target or "vaebench"
        self.dir = Path(os.environ.get("WANDB_DIR") or home(context.registry, "wandb"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        self.runs: dict[str, Any] = {}

    def start_run(self, spec: Any, context: LoggerContext) -> None:
        params = run_params(spec)
        self.runs[spec.run_id] = wandb.init(
            project=self.project, dir=str(self.dir), mode=self.mode, group=context.grid_id, name=spec.run_id,
            config=params, tags=[f"run_id:{spec.run_id}", f"config_id:{spec.config_id}"], reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))

    def log(self, run_id: str, step: int, values: dict[str, float]) -> None:
        self.runs[run_id].log({f"train/{k}": float(v) for k, v in values.items()}, step=step)

    def end_run(self, record: dict[str, Any], artifacts: dict[str, str]) -> None:
        run = self.runs.pop(record["run_id"])
        try:
            run.summary.update({f"final/{k}": v for k, v in final_values(record).items()})
            run.summary["status"] = str(record.get("status"))
            shown = {name: wandb.Image(path) for name, path in images(artifacts).items()}
            if shown:
                run.log(shown, step=int(record.get("steps_done") or 0))
        finally:
            run.finish(exit_code=0 if record.get("status") == "ok" else 1)

    def close(self) -> None:
        for run in self.runs.values():
            run.finish(exit_code=1)
        self.runs.clear()


def make(context: LoggerContext) -> WandbLogger:
    return WandbLogger(context)
