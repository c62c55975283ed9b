"""Disentanglement metrics: vaebench's implementations vs straightforward ones, same run.

    python benchmarks/metrics.py --n 10000 --repeats 3 --sampler-profile fast --out benchmarks/RESULTS.md

(``--sampler-profile reference`` measures the β-VAE / FactorVAE metrics at
disentanglement_lib's sizes, 10,000 / 5,000 points: ~2.9 M images encoded per
variant, 3-50 minutes per variant on a shared 2-core CPU (1-16 k images/s);
``--skip-dci`` leaves out the most expensive latent metric, ~250 s per variant at
``--n 10000``.)

What is measured. One conv β-VAE (β = 4, D = 10, batch 64) is trained briefly
(``--train-steps``, default 1,000, ~3 minutes, not timed; after 300 steps the
codes are still collapsed, std 0.01-0.1, below the FactorVAE metric's pruning
threshold 0.05; ``--checkpoint DIR`` caches the model between runs) with
``TorchBackend`` on procedural dSprites and
encodes ``n + n / 2`` held-out samples drawn with the harness's evaluation seed;
the factors are the real dSprites factors (3, 6, 40, 32, 32 values). Every metric
is then computed twice on the *same* codes, and the values are asserted equal:

* **vaebench**: the public functions of ``vaebench.plugins.metrics`` with their
  defaults (``n_jobs=-1``: all cores);
* **straightforward**: the same definition written the obvious way, transcribed
  from disentanglement_lib: per-column ``np.histogram`` + ``np.digitize`` and a
  ``D x K`` double loop of ``sklearn.metrics.mutual_info_score`` (MIG, modularity),
  the ``D x K`` one-code ``LinearSVC`` fits one after another (SAP), one
  logistic regression / gradient-boosting classifier per factor one after
  another (explicitness, DCI), the per-factor / per-value loop (IRS); the
  sampler metrics render and encode one batch of 64 pairs (β-VAE metric: two
  encoder calls of 64 images per point) or 64 points (FactorVAE metric) at a
  time, as disentanglement_lib does, instead of vaebench's ``encode_batch``
  (8,192 images) chunks. Classifier settings are identical (same
  ``random_state``), so fitted values agree exactly.

MIG, modularity and IRS use the first ``n`` rows; SAP, explicitness and DCI
train on the first ``n`` rows and test on the next ``n / 2`` (disentanglement_lib:
10,000 / 5,000). "Encoding" is the held-out set through the encoder: batches of 64
(straightforward) vs ``trained.encode`` (its device's evaluation batch, 64 on a
CPU); the codes are asserted
equal up to float32 rounding (different batch shapes may use different kernels),
and every metric is then scored on the same codes (``trained.encode``'s) by both
variants. "Whole suite" sums encoding and every metric measured.

Timing: for each metric the two variants alternate (order flipped every repeat);
the median of ``--repeats`` is reported for the encoding and the cheap metrics, a
single run each (``--heavy-repeats``, default 1) for DCI and the sampler metrics. The machine may
be shared: the 1-minute load average is recorded with every measurement, and only
ratios measured side by side are meaningful.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

HEADING = "## Metrics (issue: disentanglement metrics)"
BASELINE_ENCODE_BATCH = 64


# ============================================================ straightforward versions
def ref_discretize(x: np.ndarray, bins: int = 20) -> np.ndarray:
    """disentanglement_lib ``_histogram_discretize``: one column at a time."""
    out = np.zeros(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        out[:, j] = np.digitize(x[:, j], np.histogram(x[:, j], bins)[1][:-1])
    return out


def ref_mi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """disentanglement_lib ``discrete_mutual_info``: ``D x K`` calls to ``mutual_info_score``."""
    from sklearn.metrics import mutual_info_score

    m = np.zeros((a.shape[1], b.shape[1]))
    for d in range(a.shape[1]):
        for k in range(b.shape[1]):
            m[d, k] = mutual_info_score(b[:, k], a[:, d])
    return m


def ref_entropy(b: np.ndarray) -> np.ndarray:
    """disentanglement_lib ``discrete_entropy``."""
    from sklearn.metrics import mutual_info_score

    h = np.zeros(b.shape[1])
    for k in range(b.shape[1]):
        h[k] = mutual_info_score(b[:, k], b[:, k])
    return h


def base_mig(z: np.ndarray, v: np.ndarray) -> dict[str, float]:
    m = ref_mi(ref_discretize(z), v)
    h = ref_entropy(v)
    top = np.sort(m, axis=0)[::-1]
    return {"mig": float(np.mean((top[0] - top[1]) / h))}


def base_modularity(z: np.ndarray, v: np.ndarray) -> dict[str, float]:
    m = ref_mi(ref_discretize(z), v)
    squared = np.square(m)
    top = np.max(squared, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (np.sum(squared, axis=1) - top) / (top * (squared.shape[1] - 1.0))
    score[top == 0.0] = 0.0
    return {"modularity": float(np.mean(score))}


def base_explicitness(z: np.ndarray, v: np.ndarray, n_train: int) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import MultiLabelBinarizer

    from vaebench.plugins.metrics.modularity import logistic_ovr

    z_train, z_test = z[:n_train], z[n_train:]
    mean, std = z_train.mean(axis=0), z_train.std(axis=0)
    x_train, x_test = (z_train - mean) / std, (z_test - mean) / std
    train, test = [], []
    for k in range(v.shape[1]):  # one factor after another
        y_train, y_test = v[:n_train, k], v[n_train:, k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = logistic_ovr(0).fit(x_train, y_train)
        mlb = MultiLabelBinarizer()
        train.append(roc_auc_score(mlb.fit_transform(y_train[:, None]), clf.predict_proba(x_train)))
        test.append(roc_auc_score(mlb.fit_transform(y_test[:, None]), clf.predict_proba(x_test)))
    return {"explicitness": float(np.mean(test)), "explicitness.train": float(np.mean(train))}


def _top_two_gap(matrix: np.ndarray) -> float:
    ranked = np.sort(matrix, axis=0)
    return float(np.mean(ranked[-1, :] - ranked[-2, :]))


def base_sap(z: np.ndarray, v: np.ndarray, n_train: int) -> dict[str, float]:
    """disentanglement_lib ``compute_score_matrix`` (both variants), (D, N) layout, loops."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    mus, ys = z[:n_train].T, v[:n_train].T
    mus_test, ys_test = z[n_train:].T, v[n_train:].T
    discrete = np.zeros((mus.shape[0], ys.shape[0]))
    continuous = np.zeros((mus.shape[0], ys.shape[0]))
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            cov = np.cov(mus[i, :], ys[j, :], ddof=1)
            continuous[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            clf = LinearSVC(C=0.01, class_weight="balanced", dual=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(mus[i, :, None], ys[j, :])
            discrete[i, j] = np.mean(clf.predict(mus_test[i, :, None]) == ys_test[j, :])
    return {"sap": _top_two_gap(discrete), "sap.continuous": _top_two_gap(continuous)}


def base_irs(z: np.ndarray, v: np.ndarray, diff_quantile: float = 0.99) -> dict[str, float]:
    """disentanglement_lib ``compute_irs`` / ``scalable_disentanglement_score``."""
    active = np.var(z, axis=0) > 0
    latents = z[:, active]
    gen_factors = ref_discretize(v)
    max_deviations = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)
    cum = np.zeros((latents.shape[1], gen_factors.shape[1]))
    for i in range(gen_factors.shape[1]):
        unique = np.unique(gen_factors[:, i], axis=0)
        for value in unique:
            match = gen_factors[:, i] == value
            diffs = np.abs(latents[match, :] - np.mean(latents[match, :], axis=0))
            cum[:, i] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum[:, i] /= unique.shape[0]
    irs_matrix = 1.0 - cum / max_deviations[:, None]
    return {
        "irs": float(np.average(irs_matrix.max(axis=1), weights=max_deviations)),
        "irs.num_active_dims": float(np.count_nonzero(active)),
    }


def base_dci(z: np.ndarray, v: np.ndarray, n_train: int) -> dict[str, float]:
    """disentanglement_lib ``compute_importance_gbt`` + entropies, factors one after another."""
    from scipy.stats import entropy as scipy_entropy
    from sklearn.ensemble import GradientBoostingClassifier

    x_train, x_test = z[:n_train], z[n_train:]
    importance = np.zeros((z.shape[1], v.shape[1]))
    acc_train, acc_test = [], []
    for k in range(v.shape[1]):
        y_train, y_test = v[:n_train, k], v[n_train:, k]
        model = GradientBoostingClassifier(random_state=0).fit(x_train, y_train)
        importance[:, k] = np.abs(model.feature_importances_)
        acc_train.append(np.mean(model.predict(x_train) == y_train))
        acc_test.append(np.mean(model.predict(x_test) == y_test))
    r = importance
    per_code = 1.0 - scipy_entropy(r.T + 1e-11, base=r.shape[1])
    per_factor = 1.0 - scipy_entropy(r + 1e-11, base=r.shape[0])
    w = r if r.sum() > 0 else np.ones_like(r)
    return {
        "dci": float(np.sum(per_code * w.sum(axis=1) / w.sum())),
        "dci.completeness": float(np.sum(per_factor * w.sum(axis=0) / w.sum())),
        "dci.informativeness_train": float(np.mean(acc_train)),
        "dci.informativeness_test": float(np.mean(acc_test)),
    }


def base_beta_vae(dataset: Any, encode: Callable, sizes: dict[str, int], seed: int = 0) -> dict[str, float]:
    """disentanglement_lib ``compute_beta_vae_sklearn``: one point (64 pairs) at a time.

    Draws the same random numbers as vaebench (same generator, same order), then
    renders and encodes each point's two halves with two encoder calls of 64 images.
    """
    from sklearn.exceptions import ConvergenceWarning

    from vaebench.plugins.metrics.sampler import fixable_factors
    from vaebench.plugins.metrics.modularity import logistic_ovr

    k_count = len(dataset.factor_sizes)
    fixable = fixable_factors(tuple(dataset.factor_sizes), "beta_vae_metric")
    batch = sizes["batch_size"]
    rng = np.random.default_rng(seed)

    def points(num_points: int) -> tuple[np.ndarray, np.ndarray]:
        labels = fixable[rng.integers(fixable.size, size=num_points)]
        first = dataset.sample_factors(num_points * batch, rng).reshape(num_points, batch, k_count)
        second = dataset.sample_factors(num_points * batch, rng).reshape(num_points, batch, k_count)
        features = []
        for p in range(num_points):
            f1, f2 = first[p], second[p].copy()
            f2[:, labels[p]] = f1[:, labels[p]]
            z1 = np.asarray(encode(dataset.observations(f1)), dtype=np.float64)
            z2 = np.asarray(encode(dataset.observations(f2)), dtype=np.float64)
            features.append(np.mean(np.abs(z1 - z2), axis=0))
        return np.array(features), labels

    x_train, y_train = points(sizes["num_train"])
    clf = logistic_ovr(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    train_accuracy = float(np.mean(clf.predict(x_train) == y_train))
    x_eval, y_eval = points(sizes["num_eval"])
    eval_accuracy = float(np.mean(clf.predict(x_eval) == y_eval))
    return {"beta_vae_metric": eval_accuracy, "beta_vae_metric.train": train_accuracy}


def base_factor_vae(
    dataset: Any, encode: Callable, sizes: dict[str, int], seed: int = 0, prune_threshold: float = 0.05
) -> dict[str, float]:
    """disentanglement_lib ``compute_factor_vae``: one point (64 observations) at a time."""
    from vaebench.plugins.metrics.sampler import fixable_factors

    factor_sizes = tuple(dataset.factor_sizes)
    k_count = len(factor_sizes)
    fixable = fixable_factors(factor_sizes, "factor_vae_metric")
    batch = sizes["batch_size"]
    rng = np.random.default_rng(seed)
    pool = dataset.sample_factors(sizes["num_variance_estimate"], rng)
    codes = np.concatenate(
        [
            np.asarray(encode(dataset.observations(pool[i : i + batch])), dtype=np.float64)
            for i in range(0, pool.shape[0], batch)
        ]
    )
    global_variances = np.var(codes, axis=0, ddof=1)
    active = (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)
    active_idx = np.flatnonzero(active)
    d_count = codes.shape[1]
    num_active = float(active_idx.size)
    if not active.any():
        return {"factor_vae_metric": 0.0, "factor_vae_metric.train": 0.0, "factor_vae_metric.num_active_dims": 0.0}

    def votes(num_points: int) -> np.ndarray:
        labels = fixable[rng.integers(fixable.size, size=num_points)]
        factors = dataset.sample_factors(num_points * batch, rng).reshape(num_points, batch, k_count)
        table = np.zeros((k_count, d_count), dtype=np.int64)
        for p in range(num_points):
            f = factors[p].copy()
            f[:, labels[p]] = f[0, labels[p]]
            z = np.asarray(encode(dataset.observations(f)), dtype=np.float64)
            local = np.var(z, axis=0, ddof=1)
            argmin = np.argmin(local[active_idx] / global_variances[active_idx])
            table[labels[p], active_idx[argmin]] += 1
        return table

    train_votes = votes(sizes["num_train"])
    classifier = np.argmax(train_votes, axis=0)
    eval_votes = votes(sizes["num_eval"])
    cols = np.arange(d_count)
    return {
        "factor_vae_metric": float(eval_votes[classifier, cols].sum() / eval_votes.sum()),
        "factor_vae_metric.train": float(train_votes[classifier, cols].sum() / train_votes.sum()),
        "factor_vae_metric.num_active_dims": num_active,
    }


# ============================================================ harness
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_jiffies() -> tuple[int, dict[int, int]]:
    """``(busy jiffies of the whole machine, {pid: jiffies} of this process and its descendants)``.

    Linux only (``/proc``); ``(0, {})`` elsewhere. Descendants include joblib's
    worker processes, so "others" below is CPU used by processes that are not ours.
    """
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)
        stats: dict[int, tuple[int, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    rest = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]))  # ppid, utime + stime
        ours, frontier = {os.getpid()}, [os.getpid()]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in ours:
                    ours.add(child)
                    frontier.append(child)
        return busy, {pid: stats[pid][1] for pid in ours if pid in stats}
    except (OSError, ValueError, IndexError):
        return 0, {}


def _our_delta(before: dict[int, int], after: dict[int, int]) -> int:
    """Jiffies our processes used in between; a worker that exited meanwhile (joblib
    reaps idle workers) counts 0, not minus its lifetime (its last moments are lost)."""
    return sum(j - before.get(pid, 0) for pid, j in after.items())


@dataclass
class Row:
    name: str
    base_s: list[float] = field(default_factory=list)
    fast_s: list[float] = field(default_factory=list)
    extra_s: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    #: CPU cores used on average by processes other than this one (and its
    #: workers) during each measurement.
    others: list[float] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    max_abs_diff: float = 0.0
    note: str = ""

    @property
    def base(self) -> float:
        return statistics.median(self.base_s)

    @property
    def fast(self) -> float:
        return statistics.median(self.fast_s)

    @property
    def ratio(self) -> float:
        """Median of the per-repeat ratios (each pair ran back to back)."""
        return statistics.median(b / f for b, f in zip(self.base_s, self.fast_s))

    @property
    def ratio_range(self) -> str:
        ratios = [b / f for b, f in zip(self.base_s, self.fast_s)]
        return f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(
    row: Row, base: Callable[[], dict[str, float]], fast: Callable[[], dict[str, float]],
    repeats: int, tol: float, extra: Callable[[], dict[str, float]] | None = None,
) -> Row:
    """Alternate the variants ``repeats`` times; assert every shared value agrees to ``tol``.

    ``extra`` (optional, informational): a third variant timed in the same rotation.
    """
    variants: list[tuple[str, Callable[[], dict[str, float]]]] = [("base", base), ("fast", fast)]
    if extra is not None:
        variants.append(("extra", extra))
    for r in range(repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        got: dict[str, dict[str, float]] = {}
        for which, fn in order:
            row.loads.append(os.getloadavg()[0])
            busy0, ours0 = _busy_jiffies()
            seconds, got[which] = _timed(fn)
            busy1, ours1 = _busy_jiffies()
            others = max(0.0, ((busy1 - busy0) - _our_delta(ours0, ours1)) / _HZ / seconds)
            if seconds >= 0.5:  # /proc counts in jiffies (10 ms): shorter windows say nothing
                row.others.append(others)
            {"base": row.base_s, "fast": row.fast_s, "extra": row.extra_s}[which].append(seconds)
            print(f"    {row.name:18s} repeat {r + 1}: {which:5s} {seconds:9.3f} s  (others: {others:.2f} cores)", flush=True)
        for other in [k for k in got if k != "base"]:
            for key, want in got["base"].items():
                have = got[other][key]
                diff = abs(have - want)
                row.max_abs_diff = max(row.max_abs_diff, diff)
                assert diff <= tol, (
                    f"{row.name}: {key} {other} {have!r} != straightforward {want!r} (|diff| {diff:.3g} > {tol})"
                )
        row.values = {k: got["fast"][k] for k in got["base"]}
    return row


def _machine() -> dict[str, str]:
    from vaebench.plugins.backends.base import cpu_name

    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "?"

    import joblib
    import sklearn
    import torch

    return {
        "cpu": cpu_name(),
        "nproc": sh(["nproc"]),
        "python": platform.python_version(),
        "versions": f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"joblib {joblib.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)",
    }


def trained_model(data: Any, steps: int, checkpoint: str | None) -> tuple[Any, str]:
    from vaebench.plugins.runspec import RunSpec
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.backends.torch.backend import TorchBackend, load_checkpoint
    from vaebench.plugins.backends.torch.models import build_beta_vae

    spec = RunSpec(model="beta_vae", beta=4.0, steps=steps, batch_size=64)
    if checkpoint and os.path.exists(os.path.join(checkpoint, "config.json")):
        trained = load_checkpoint(checkpoint)
        if trained.spec == spec:
            import torch

            # What TorchBackend.train sets for the process on CPU (a real run encodes
            # right after training); a freshly loaded model would not have it.
            torch.set_flush_denormal(True)
            return trained, f"trained {steps} steps with TorchBackend (checkpoint cached in {checkpoint})"
    t0 = time.perf_counter()
    trained = TorchBackend().train(
        spec, data, ExecutionOptions(device="cpu", progress_every=steps), model=build_beta_vae(spec, data.image_shape)
    )
    assert not trained.diverged, "training diverged"
    note = f"trained {steps} steps in {time.perf_counter() - t0:.0f} s (final loss {trained.final_loss:.1f})"
    if checkpoint:
        trained.save(checkpoint)
    return trained, note


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def write_section(path: str, text: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it), leaving the rest intact."""
    old = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == HEADING), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text.rstrip("\n") + "\n" + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    with open(path, "w") as fh:
        fh.write(new)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="rows for MIG/modularity/IRS; training rows for SAP/DCI/explicitness (test: n/2 more)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of the cheap metrics (median reported)")
    parser.add_argument("--heavy-repeats", type=int, default=2, help="alternating repeats of the sampler metrics")
    parser.add_argument("--dci-repeats", type=int, default=1, help="alternating repeats of DCI")
    parser.add_argument("--whatif-encode-batch", type=int, default=0,
                        help="also time vaebench's sampler metrics with an encoder that batches at this size "
                        "(informational, not in the suite; default 0: skip)")
    parser.add_argument("--skip-dci", action="store_true", help="leave out DCI (~3-10 min for both variants at n = 10,000)")
    parser.add_argument("--sampler-profile", choices=("reference", "fast", "none"), default="fast",
                        help="sizes of the β-VAE / FactorVAE metrics (reference: 10,000 / 5,000 points; fast: 1,000 / 500)")
    parser.add_argument("--train-steps", type=int, default=1000, help="training steps of the β-VAE whose codes are scored")
    parser.add_argument("--checkpoint", default=None, help="directory to cache the trained model in (reused if the spec matches)")
    parser.add_argument("--out", default="benchmarks/RESULTS.md", help="markdown file whose metrics section is (re)written; '' to skip")
    args = parser.parse_args(argv)
    command = "python benchmarks/metrics.py " + " ".join(sys.argv[1:] if argv is None else argv)

    from vaebench.harness.evaluation import held_out
    from vaebench.plugins.datasets.dsprites import ProceduralDSprites
    from vaebench.plugins.metrics import beta_vae_metric as bvm
    from vaebench.plugins.metrics import factor_vae_metric as fvm
    from vaebench.plugins.metrics.dci import dci
    from vaebench.plugins.metrics.irs import irs
    from vaebench.plugins.metrics.mig import mutual_info_gap
    from vaebench.plugins.metrics.modularity import explicitness, modularity
    from vaebench.plugins.metrics.sap import sap_score

    started = _dt.datetime.now().astimezone()
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{started:%Y-%m-%d %H:%M %Z}  {uptime_start}", flush=True)
    machine = _machine()

    data = ProceduralDSprites()
    trained, train_note = trained_model(data, args.train_steps, args.checkpoint)
    print(f"model: {train_note}", flush=True)
    n, n_test = args.n, args.n // 2
    total = n + n_test
    images, factors = held_out(data, total)  # the held-out set vaebench scores runs on
    names = tuple(data.factor_names)
    frac = n / total

    rows: list[Row] = []
    encoded: dict[str, str] = {}
    # ---------------------------------------------------------------- encoding
    codes_box: dict[str, np.ndarray] = {}

    def enc_base() -> dict[str, float]:
        codes_box["base"] = np.concatenate(
            [trained.encode(images[i : i + BASELINE_ENCODE_BATCH]) for i in range(0, total, BASELINE_ENCODE_BATCH)]
        )
        return {}

    def enc_fast() -> dict[str, float]:
        codes_box["fast"] = trained.encode(images)
        return {}

    # warm-up (thread pool, allocator, the convolution primitives of both batch shapes)
    trained.encode(images[:1000])
    trained.encode(images[:BASELINE_ENCODE_BATCH])
    print(f"encoding {total} held-out images", flush=True)
    enc = compare(Row(f"encoding ({total})"), enc_base, enc_fast, args.repeats, 0.0)
    # Different batch shapes may take different convolution kernels: equal up to float32 rounding.
    code_diff = float(np.max(np.abs(codes_box["base"] - codes_box["fast"])))
    assert code_diff <= 1e-5 * max(1.0, float(np.max(np.abs(codes_box["fast"])))), f"codes differ by {code_diff}"
    enc.note = "codes identical" if code_diff == 0 else f"codes equal to float32 rounding (max abs diff {code_diff:.1e})"
    rows.append(enc)
    z = codes_box["fast"]  # float32, as the encoder returns them
    z64 = z.astype(np.float64)
    zn, vn = z[:n], factors[:n]
    print(f"codes {z.shape} {z.dtype}; per-code std {np.round(z.std(axis=0), 2).tolist()}", flush=True)

    # ---------------------------------------------------------------- latent-only metrics
    def only(result: Any, keys: tuple[str, ...]) -> dict[str, float]:
        return {k: float(result.values[k]) for k in keys}

    # Warm-up, untimed: imports, joblib's worker pool, first-call costs of both variants.
    small = slice(0, 900)
    mutual_info_gap(z[small], factors[small], factor_names=names)
    sap_score(z[small], factors[small], factor_names=names)
    explicitness(z[small], factors[small], factor_names=names)
    base_mig(z[small], factors[small])
    base_sap(z64[:300], factors[:300], 200)

    cheap = [
        ("mig", lambda: base_mig(zn, vn),
         lambda: only(mutual_info_gap(zn, vn, factor_names=names), ("mig",)), 1e-9),
        ("modularity", lambda: base_modularity(zn, vn),
         lambda: only(modularity(zn, vn, factor_names=names), ("modularity",)), 1e-9),
        ("irs", lambda: base_irs(z64[:n], vn),
         lambda: only(irs(zn, vn, factor_names=names), ("irs", "irs.num_active_dims")), 1e-9),
        ("explicitness", lambda: base_explicitness(z64, factors, n),
         lambda: only(explicitness(z, factors, train_fraction=frac, factor_names=names),
                      ("explicitness", "explicitness.train")), 1e-12),
        ("sap", lambda: base_sap(z64, factors, n),
         lambda: only(sap_score(z, factors, train_fraction=frac, factor_names=names),
                      ("sap", "sap.continuous")), 1e-9),
    ]
    for name, base, fast, tol in cheap:
        print(f"{name}", flush=True)
        rows.append(compare(Row(name), base, fast, args.repeats, tol))

    if not args.skip_dci:
        print("dci", flush=True)
        keys = ("dci", "dci.completeness", "dci.informativeness_train", "dci.informativeness_test")
        rows.append(compare(
            Row("dci"), lambda: base_dci(z64, factors, n),
            lambda: only(dci(z, factors, train_fraction=frac, factor_names=names), keys),
            args.dci_repeats, 1e-9,
        ))

    # ---------------------------------------------------------------- sampler metrics
    if args.sampler_profile != "none":
        prof = args.sampler_profile
        b_sizes = dict(bvm.PROFILES[prof])
        f_sizes = dict(fvm.PROFILES[prof])
        wb = args.whatif_encode_batch

        def small_batches(images: np.ndarray) -> np.ndarray:
            return np.concatenate([trained.encode(images[i : i + wb]) for i in range(0, len(images), wb)])

        def counted(name: str, result: Any, keys: tuple[str, ...]) -> dict[str, float]:
            p = result.params
            encoded[name] = f"{p['images_requested']:,} draws, {p['images_encoded']:,} images encoded"
            return only(result, keys)

        bkeys = ("beta_vae_metric", "beta_vae_metric.train")
        fkeys = ("factor_vae_metric", "factor_vae_metric.train", "factor_vae_metric.num_active_dims")
        print(f"beta_vae_metric ({prof}: {b_sizes})", flush=True)
        rows.append(compare(
            Row("beta_vae_metric"), lambda: base_beta_vae(data, trained.encode, b_sizes),
            lambda: counted("beta_vae_metric", bvm.beta_vae_metric(data, trained.encode, **b_sizes, seed=0), bkeys),
            args.heavy_repeats, 0.0,
            extra=(lambda: only(bvm.beta_vae_metric(data, small_batches, **b_sizes, seed=0), bkeys)) if wb else None,
        ))
        print(f"factor_vae_metric ({prof}: {f_sizes})", flush=True)
        rows.append(compare(
            Row("factor_vae_metric"), lambda: base_factor_vae(data, trained.encode, f_sizes),
            lambda: counted("factor_vae_metric", fvm.factor_vae_metric(data, trained.encode, **f_sizes, seed=0), fkeys),
            args.heavy_repeats, 0.0,
            extra=(lambda: only(fvm.factor_vae_metric(data, small_batches, **f_sizes, seed=0), fkeys)) if wb else None,
        ))

    # ---------------------------------------------------------------- report
    finished = _dt.datetime.now().astimezone()
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    base_total = sum(r.base for r in rows)
    fast_total = sum(r.fast for r in rows)
    goals = {"mig": 10.0, "modularity": 10.0}

    def span(values: list[float]) -> str:
        return f"{min(values):.1f}-{max(values):.1f}" if values else "n/a (runs < 0.5 s)"

    table = [
        "| metric | straightforward s | vaebench s | speed-up (range) | goal | runs | others' CPU (cores) | value (vaebench = straightforward) |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        goal = goals.get(r.name)
        goal_s = f"≥ {goal:.0f}×: {'met' if r.ratio >= goal else '**not met**'}" if goal else ""
        vals = ", ".join(f"{k} = {v:.6g}" for k, v in r.values.items()) or r.note
        if r.values and r.max_abs_diff > 0:
            vals += f" (max abs diff {r.max_abs_diff:.1e})"
        elif r.values:
            vals += " (identical)"
        spread = f" ({r.ratio_range})" if r.ratio_range else ""
        table.append(
            f"| {r.name} | {fmt_s(r.base)} | {fmt_s(r.fast)} | {r.ratio:.2f}×{spread} | {goal_s} | {len(r.base_s)} "
            f"| {span(r.others)} | {vals} |"
        )
    suite_ratio = base_total / fast_total
    table.append(
        f"| **whole suite** (sum of medians) | **{fmt_s(base_total)}** | **{fmt_s(fast_total)}** | **{suite_ratio:.2f}×** "
        f"| ≥ 2×: {'met' if suite_ratio >= 2.0 else '**not met**'} | | {span([x for r in rows for x in r.others])} | |"
    )
    whatif = [r for r in rows if r.extra_s]
    if whatif:
        table += [
            "",
            f"Informational (not in the suite): the same vaebench sampler metrics with an encoder that feeds the "
            f"network batches of {args.whatif_encode_batch} images (`trained.encode` itself uses its device's evaluation batch), "
            "timed in the same rotation, values asserted identical:",
            "",
            f"| metric | straightforward s | vaebench s | vaebench, encoder batch {args.whatif_encode_batch} s | "
            f"straightforward / vaebench-batch-{args.whatif_encode_batch} |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in whatif:
            ratio = statistics.median(b / e for b, e in zip(r.base_s, r.extra_s))
            table.append(
                f"| {r.name} | {fmt_s(r.base)} | {fmt_s(r.fast)} | {fmt_s(statistics.median(r.extra_s))} | {ratio:.2f}× |"
            )
    print()
    print("\n".join(table))

    measured = [r.name for r in rows]
    lines = [
        HEADING,
        "",
        f"Measured {started:%Y-%m-%d %H:%M %Z} to {finished:%H:%M} by `benchmarks/metrics.py`:",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {machine['cpu']}, `nproc` = {machine['nproc']}; Python {machine['python']}; {machine['versions']}.",
        f"`uptime` at start: `{uptime_start}`; at end: `{uptime_end}`. The load average does not say how much of "
        "the cores other jobs took during a given measurement, so that is measured: \"others' CPU\" is the number "
        "of cores used on average by processes other than this benchmark and its joblib workers while each "
        "measurement ran (from `/proc`, in 10 ms jiffies, so only for runs of at least 0.5 s; min-max over the row's runs). With 2 cores, anything above ~0.5 "
        "slows both variants, and multi-threaded / multi-process work (torch's 2 intra-op threads, joblib's 2 "
        "workers) much more than single-threaded work. Absolute seconds are therefore noisy; the two variants "
        "of a metric ran alternately (order flipped every repeat) in the same process, and \"speed-up\" is the "
        "median of the per-repeat ratios straightforward / vaebench, with their range.",
        "",
        f"Data: one conv β-VAE (β = 4, D = 10) {train_note} on procedural dSprites; {total:,} held-out samples "
        f"(MIG / modularity / IRS: first {n:,}; SAP / explicitness / DCI: {n:,} train + {n_test:,} test), "
        "factors = the dSprites factors (3, 6, 40, 32, 32 values). Values of both variants asserted equal "
        "(MI-based, IRS and DCI to 1e-9, explicitness to 1e-12, the sampler metrics exactly).",
        f"Sampler metrics: profile **{args.sampler_profile}**"
        + (f" (β-VAE metric {bvm.PROFILES[args.sampler_profile]}, FactorVAE metric {fvm.PROFILES[args.sampler_profile]})"
           if args.sampler_profile != "none" else "")
        + ("; the straightforward variant encodes every draw (disentanglement_lib), vaebench each distinct "
           "grid image once (`sampler.CodeTable`, a fresh table per call): "
           + "; ".join(f"{k}: {v}" for k, v in encoded.items()) + "."
           if encoded else ""),
        f"Encoding and cheap metrics: median of {args.repeats} alternating runs each; sampler metrics: "
        f"{args.heavy_repeats}; DCI: {args.dci_repeats}."
        + (" DCI skipped (`--skip-dci`)." if args.skip_dci else ""),
        "",
        *table,
        "",
        f"Whole suite = {' + '.join(measured)}.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        write_section(args.out, text)
        print(f"\nwrote section to {args.out}")


if __name__ == "__main__":
    main()
