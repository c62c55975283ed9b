"""What the evaluator hands every metric: one trained model's view of held-out data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class EvaluationContext:
    """Everything a metric may read; which parts it needs is declared in its spec.

    Attributes:
        means: posterior means ``(N, D)`` of ``N`` held-out observations.
        logvars: posterior log-variances ``(N, D)``.
        recon_errors: per-image reconstruction negative log-likelihood ``(N,)`` in
            nats (Bernoulli: BCE summed over pixels).
        factors: integer factor indices ``(N, K)`` of the same observations, or
            ``None`` for a dataset without factors.
        factor_names: ``K`` names matching the columns of ``factors``.
        factor_sizes: ``K`` numbers of values per factor.
        dataset: the dataset object (renders observations for chosen factors
            when its spec says ``has_sampler``).
        encode: images ``(M, H, W, C)`` float in [0, 1] -> posterior means ``(M, D)``.
        seed: the seed metrics must use for any randomness.
        options: per-run metric options (``{"mig": {"bins": 20}}``), from the CLI.
        images: the held-out observations ``(N, H, W, C)`` float32 in [0, 1] (metrics
            that need ``reconstructions``), else ``None``.
        reconstructions: ``(N, H, W, C)`` in [0, 1]: the decoder's Bernoulli means for
            the posterior means of ``images``.
        decode: latents ``(M, D)`` -> images ``(M, H, W, C)`` in [0, 1] (metrics that
            need ``generator``: samples from the prior are ``decode(N(0, I) draws)``).
        train_fraction: for metrics that fit a classifier on a train split (SAP, DCI,
            explicitness), the fraction of rows (the first ones) that train; ``None``
            keeps each metric's reference default (2/3: 10,000 train / 5,000 test).
    """

    means: np.ndarray
    logvars: np.ndarray
    recon_errors: np.ndarray
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    dataset: Any = None
    encode: Callable[[np.ndarray], np.ndarray] | None = None
    seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: np.ndarray | None = None
    reconstructions: np.ndarray | None = None
    decode: Callable[[np.ndarray], np.ndarray] | None = None
    train_fraction: float | None = None

    def options_for(self, metric: str) -> dict[str, Any]:
        return dict(self.options.get(metric, {}))
