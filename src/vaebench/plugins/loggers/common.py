"""What every built-in logger sends: a run's parameters, its final numbers, its images."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from vaebench.registry import location

#: Record artifact keys that are images (``harness.figures``), logged by every tracker.
IMAGE_KEYS = ("traversal_png", "reconstructions_png", "samples_png", "class_samples_png")


def run_params(spec: Any) -> dict[str, str]:
    """The RunSpec's fields as flat ``name -> str`` (its canonical JSON; nested values as JSON),
    plus ``run_id`` and ``config_id``."""
    data = json.loads(spec.to_json())
    out = {k: v if isinstance(v, str) else json.dumps(v) for k, v in sorted(data.items())}
    out.update(run_id=spec.run_id, config_id=spec.config_id)
    return out


def final_values(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's numbers as ``name -> float`` (finite only): each metric key (``mig``,
    ``mig.gap.posX`` ...), ``final_loss``, ``train_seconds``, ``eval_seconds``,
    ``images_per_second`` and ``eval.kl.dim<i>`` (the KL of latent dimension i on the
    evaluation images, nats; the live ``kl.dim<i>`` is the training batch's)."""
    out: dict[str, float] = {}
    for key, value in (record.get("metrics") or {}).items():
        out[str(key)] = value
    for key in ("final_loss", "train_seconds", "eval_seconds", "images_per_second"):
        out[key] = record.get(key)
    for i, value in enumerate(record.get("kl_per_dim") or ()):
        out[f"eval.kl.dim{i}"] = value
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def images(artifacts: Mapping[str, str]) -> dict[str, str]:
    """``{name: path}`` of the run's images among ``artifacts`` (``traversal``, ``reconstructions``,
    ``samples``, ``class_samples``), those that exist."""
    return {key.removesuffix("_png"): path for key, path in artifacts.items()
            if key in IMAGE_KEYS and os.path.isfile(path)}


def home(registry: str, name: str) -> Path:
    """``<registry>/<name>`` for a local registry, ``./<name>`` beside a remote one."""
    return Path(name) if location.is_remote(registry) else location.local_path(registry) / name
