"""``--log-to tensorboard[:DIR]``: TensorBoard event files, one directory per run.

``DIR/<run_id>`` (default ``<registry>/tensorboard/<run_id>``; a rerun adds an event file
beside the earlier one), written with ``torch.utils.tensorboard.SummaryWriter`` (which
needs the ``tensorboard`` package: ``vaebench[tensorboard]``): live values as scalars
``train/<name>``, the record's final numbers as ``final/<name>`` at the last step, the
RunSpec as text ``spec``, and the images (``traversal``, ``reconstructions``, ``samples``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorboard  # noqa: F401 - torch's writer needs it; checked when the grid is
from torch.utils.tensorboard import SummaryWriter

from vaebench.plugins.contract import LoggerContext
from vaebench.plugins.loggers.common import final_values, home, images, run_params


class TensorBoardLogger:
    """The :class:`~vaebench.plugins.contract.Logger` of TensorBoard (see the module)."""

    def __init__(self, context: LoggerContext) -> None:
        self.root = Path(context.target) if context.target else home(context.registry, "tensorboard")
        self.writers: dict[str, SummaryWriter] = {}

    def start_run(self, spec: Any, context: LoggerContext) -> None:
        writer = SummaryWriter(log_dir=str(self.root / spec.run_id))
        writer.add_text("spec", "```\n" + json.dumps(run_params(spec), indent=1) + "\n```", 0)
        self.writers[spec.run_id] = writer

    def log(self, run_id: str, step: int, values: dict[str, float]) -> None:
        writer = self.writers[run_id]
        for key, value in values.items():
            writer.add_scalar(f"train/{key}", float(value), step)

    def end_run(self, record: dict[str, Any], artifacts: dict[str, str]) -> None:
        from PIL import Image

        writer = self.writers.pop(record["run_id"])
        step = int(record.get("steps_done") or 0)
        try:
            for key, value in final_values(record).items():
                writer.add_scalar(f"final/{key}", value, step)
            for name, path in images(artifacts).items():
                with Image.open(path) as img:
                    writer.add_image(name, np.asarray(img.convert("RGB")), step, dataformats="HWC")
        finally:
            writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def make(context: LoggerContext) -> TensorBoardLogger:
    return TensorBoardLogger(context)
