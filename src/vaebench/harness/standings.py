"""What a leaderboard row says besides its mean: the bootstrap interval over its seeds, where it
stands against a reference pack, and how many seeds tell the top two configs apart.

Shared by ``vaebench leaderboard`` (``api.leaderboard_result``) and the report (``gather.py``),
so both print the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vaebench.harness.references import ReferencePack, refusal, standing
from vaebench.harness.seed_noise import CONFIDENCE, bootstrap_ci, seeds_needed
from vaebench.harness.targets import estimator_settings

__all__ = ["CI_LABEL", "annotate", "describe_seeds_needed", "row_label", "top_two_seeds_needed"]

#: Leaderboard columns that are statistics, not the config.
STAT_COLUMNS = ("mean", "std", "n", "n_diverged", "seeds", "tier")


def annotate(rows: Sequence[Mapping[str, Any]], groups: Mapping[tuple[Any, ...], Sequence[tuple[float, str | None]]],
             by: Sequence[str], metric: str, pack: ReferencePack | None = None) -> list[dict[str, Any]]:
    """One dict per leaderboard row: ``ci95`` (``[low, high]`` bootstrap interval of the mean over
    the row's seeds, ``seed_noise.bootstrap_ci``; ``None`` under 2 seeds) and, with ``pack``,
    ``reference``: ``{"pack", "summary", "source", "standing": {...}, "text"}`` when the row
    compares, ``{"pack", "refused": why, "text"}`` when its runs recorded other estimator settings,
    ``{"pack", "text": why}`` when the pack has no entry for it. ``groups`` is
    ``registry.query.group_values`` over the same ``by`` columns."""
    out = []
    for row in rows:
        runs = groups.get(tuple(row.get(c) for c in by), [])
        ci = bootstrap_ci([v for v, _ in runs])
        extra: dict[str, Any] = {"ci95": None if ci is None else [ci[0], ci[1]]}
        if pack is not None:
            entry, why = pack.find(row, metric)
            if entry is None:
                extra["reference"] = {"pack": pack.name, "text": why}
            else:
                recorded = [estimator_settings({"metric_params": params}, metric) for _, params in runs]
                problem = refusal(entry, recorded)
                if problem is not None:
                    extra["reference"] = {"pack": pack.name, "refused": problem, "text": f"refused: {problem}"}
                else:
                    stand = standing(row.get("mean"), entry)
                    extra["reference"] = {"pack": pack.name, "summary": entry.summary(), "source": entry.source,
                                          "median": entry.median, "range": list(entry.range) if entry.range else None,
                                          "mean": entry.mean, "std": entry.std, "n_seeds": entry.n_seeds,
                                          "values": list(entry.values), "standing": stand,
                                          "text": f"{stand['text']} ({entry.summary()})"}
        out.append(extra)
    return out


def row_label(row: Mapping[str, Any]) -> str:
    """A config in a few words: ``beta_vae dsprites beta=4`` (its non-null config columns)."""
    parts = [str(row[c]) for c in ("model", "dataset") if row.get(c) is not None]
    parts += [f"{k}={v}" for k, v in row.items()
              if k not in ("model", "dataset", "config_id", *STAT_COLUMNS) and v is not None and not isinstance(v, (list, dict))]
    return " ".join(parts) or str(row.get("config_id"))


def top_pair(rows: Sequence[Mapping[str, Any]], within: Sequence[str] = ()) -> tuple[int, int] | None:
    """Indices of a leaderboard's top two rows with a mean, the second one sharing the first's
    values of ``within`` (``("likelihood",)`` where a reconstruction metric is ranked per
    likelihood: NLLs of different likelihoods are never compared); ``None`` when there is
    no such pair."""
    ranked = [i for i, r in enumerate(rows) if r.get("mean") is not None]
    if not ranked:
        return None
    first = ranked[0]
    same = [i for i in ranked[1:] if all(rows[i].get(k) == rows[first].get(k) for k in within)]
    return (first, same[0]) if same else None


def top_two_seeds_needed(rows: Sequence[Mapping[str, Any]], within: Sequence[str] = ()) -> dict[str, Any] | None:
    """``seed_noise.seeds_needed`` for a leaderboard's top two (:func:`top_pair`):
    ``{"a", "b" (row labels), "rows" (their indices), "seeds" (per config, or None), "effect"
    (Cohen's d), "alpha", "power", "why"}``; ``None`` when there is no pair."""
    pair = top_pair(rows, within)
    if pair is None:
        return None
    a, b = rows[pair[0]], rows[pair[1]]
    est = seeds_needed(a["mean"], a.get("std"), b["mean"], b.get("std"))
    # Name each by what sets it apart from the other (model and dataset always).
    differ = [k for k in a if k not in STAT_COLUMNS and k != "config_id" and a.get(k) != b.get(k)]
    keep = ("model", "dataset", *differ)
    label_a, label_b = (row_label({k: r.get(k) for k in keep}) for r in (a, b))
    if label_a == label_b:
        label_a, label_b = row_label(a), row_label(b)
    return {"a": label_a, "b": label_b, "rows": list(pair), "seeds": est.seeds, "effect": est.effect,
            "alpha": est.alpha, "power": est.power, "why": est.why}


def describe_seeds_needed(est: Mapping[str, Any] | None) -> str:
    """One line for people: how many seeds per config tell the top two apart."""
    if est is None:
        return ""
    head = f"seeds needed to tell {est['a']} from {est['b']} (t-test, α={est['alpha']}, power {est['power']}): "
    if est["seeds"] is None:
        return head + f"unknown: {est['why']}"
    effect = f"Cohen's d {est['effect']:.2f}" if est["effect"] is not None else est["why"]
    return head + f"{est['seeds']} per config ({effect})"


#: How the interval is named in tables.
CI_LABEL = f"{int(CONFIDENCE * 100)}% CI"
