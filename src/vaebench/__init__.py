"""vaebench: train beta-VAE grids, score disentanglement, rank runs with DuckDB.

Public API (importing this module stays light: no torch/jax import)::

    import vaebench
    records = vaebench.run_grid(models=["beta_vae"], betas=[1, 4, 8], steps=300)
    table = vaebench.leaderboard(metric="mig")      # pyarrow.Table
    table.to_pandas()

Plugins mark their hook implementations with :data:`hookimpl`; plugin authors import
it, and everything else they need, from :mod:`vaebench.plugin`.
"""

from __future__ import annotations

from typing import Any

import pluggy

from vaebench.version import __version__

hookimpl = pluggy.HookimplMarker("vaebench")

#: The API functions the package re-exports lazily (``vaebench.api`` holds them all).
API_NAMES = ("run_grid", "continue_run", "leaderboard", "show", "plan_grid", "evaluate_latents", "report", "query",
             "compare", "check", "traverse", "samples", "dry_run")

__all__ = ["__version__", "hookimpl", *API_NAMES]


def __getattr__(name: str) -> Any:  # lazy: keep `import vaebench` cheap
    if name in API_NAMES:
        from vaebench import api

        return getattr(api, name)
    raise AttributeError(name)
