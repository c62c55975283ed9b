"""What researchers look at: latent traversals, reconstructions and prior samples as images.

Everything works through a trained model's numpy interface (``encode`` images
``(N, H, W, C)`` -> means ``(N, D)``; ``decode`` latents ``(M, D)`` -> images
``(M, H, W, C)`` in [0, 1]), so every backend gets the same figures. Images are
composed into grids with NumPy and written with matplotlib (PNG) and Pillow (GIF,
which matplotlib already depends on).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from vaebench.plugins.contract import capability

#: Sweep of a traversal: each code from -3 to 3 around the base code, 10 steps.
DEFAULT_RANGE = (-3.0, 3.0)
DEFAULT_STEPS = 10
#: A dimension whose KL (nats) is below this carries no information: no factor label.
INACTIVE_KL = 0.01
#: A row label also names a factor when the code holds at least this fraction of its entropy.
SHARED_FRACTION = 0.25


def tile(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """Images ``(R, C, H, W, ch)`` -> one ``(R·(H+pad)+pad, C·(W+pad)+pad, ch)`` canvas (white gutters)."""
    r, c, h, w, ch = images.shape
    canvas = np.ones((r * (h + pad) + pad, c * (w + pad) + pad, ch), dtype=np.float32)
    for i in range(r):
        y = pad + i * (h + pad)
        row = canvas[y : y + h]
        for j in range(c):
            x = pad + j * (w + pad)
            row[:, x : x + w] = images[i, j]
    return canvas


def traversal_images(
    model: Any, base: np.ndarray, dims: Sequence[int], value_range: tuple[float, float] = DEFAULT_RANGE,
    steps: int = DEFAULT_STEPS,
) -> np.ndarray:
    """Decode ``base`` ``(D,)`` with code ``d`` swept over ``value_range`` for each ``d`` in
    ``dims``: ``(len(dims), steps, H, W, C)`` in [0, 1], one batched decode."""
    values = np.linspace(value_range[0], value_range[1], steps)
    z = np.repeat(np.asarray(base, dtype=np.float32)[None, None, :], len(dims), 0).repeat(steps, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = base[d] + values
    images = model.decode(z.reshape(-1, z.shape[-1]))
    return images.reshape(len(dims), steps, *images.shape[1:])


def dims_by_kl(kl_per_dim: Sequence[float]) -> list[int]:
    """Latent dimensions, most informative (largest KL) first."""
    return [int(d) for d in np.argsort(-np.asarray(kl_per_dim), kind="stable")]


def most_informative_factor(
    mi_matrix: Sequence[Sequence[float]] | None, factor_names: Sequence[str],
    factor_entropy: Sequence[float] | None = None,
) -> dict[int, str]:
    """Row labels from MIG's ``(D, K)`` MI matrix (nats): for each latent dimension, the
    factor it shares most MI with.

    With ``factor_entropy`` ``(K,)`` (nats, MIG's params) each label also gives the fraction
    of that factor's entropy the code holds (MI / H, the normalisation MIG uses) and names,
    after it, every other factor of which the code holds at least :data:`SHARED_FRACTION`:
    a code sweeping from a small ellipse to a large square reads ``scale 0.63, shape 0.40``
    instead of passing for a pure scale code.
    """
    if not mi_matrix:
        return {}
    mi = np.asarray(mi_matrix, dtype=np.float64)
    top = np.argmax(mi, axis=1)
    if factor_entropy is None:
        return {d: factor_names[int(top[d])] for d in range(mi.shape[0])}
    h = np.asarray(factor_entropy, dtype=np.float64)
    fraction = np.divide(mi, h, out=np.zeros_like(mi), where=h > 0)  # constant factors: 0
    labels = {}
    for d in range(mi.shape[0]):
        shared = [int(k) for k in np.argsort(-fraction[d], kind="stable")
                  if k != top[d] and fraction[d, k] >= SHARED_FRACTION]
        labels[d] = ", ".join(f"{factor_names[k]} {fraction[d, k]:.2f}" for k in [int(top[d]), *shared])
    return labels


def factor_labels(mig_params: Mapping[str, Any] | None, factor_names: Sequence[str]) -> dict[int, str]:
    """Traversal row labels from a run's MIG params (``mi_matrix``, ``factor_entropy``)."""
    mig = mig_params or {}
    return most_informative_factor(mig.get("mi_matrix"), factor_names, mig.get("factor_entropy"))


def _imshow_grid(canvas: np.ndarray, path: str, title: str, row_labels: Sequence[str] = (), row_height: float = 0.0) -> None:
    # A Figure of its own, not pyplot's: the process's backend (a notebook's inline one)
    # is left as the user set it, and nothing is kept in pyplot's figure list.
    from matplotlib.figure import Figure

    h, w = canvas.shape[:2]
    scale = 1.0 / 60  # inches per canvas pixel: a 64-px image is ~107 px at 100 dpi
    margin = 2.6 if row_labels else 0.2
    fig = Figure(figsize=(w * scale + margin, h * scale + 0.6), dpi=100)
    ax = fig.add_axes((margin / (w * scale + margin), 0.0, w * scale / (w * scale + margin), h * scale / (h * scale + 0.6)))
    image = canvas[..., 0] if canvas.shape[-1] == 1 else canvas
    ax.imshow(image, cmap="gray" if canvas.shape[-1] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(i + 0.5) * row_height + 1 for i in range(len(row_labels))] if row_labels else [])
    ax.set_yticklabels(row_labels, fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(title, fontsize=9, y=1.0 - 0.15 / (h * scale + 0.6))
    fig.savefig(path)


def write_traversal(
    model: Any, base: np.ndarray, kl_per_dim: Sequence[float], out_dir: str, *,
    dims: Sequence[int] | None = None, value_range: tuple[float, float] = DEFAULT_RANGE, steps: int = DEFAULT_STEPS,
    factor_of_dim: dict[int, str] | None = None, title: str = "latent traversal",
) -> dict[str, str]:
    """Traversal grid PNG (one row per dimension, sorted by KL, labelled with KL and the
    factor it is most informative about) and a GIF animating the sweep. Returns artifact paths."""
    os.makedirs(out_dir, exist_ok=True)
    dims = list(dims) if dims is not None else dims_by_kl(kl_per_dim)
    grid = traversal_images(model, base, dims, value_range, steps)
    labels = []
    for d in dims:
        label = f"z{d}  KL {kl_per_dim[d]:.2f}" if d < len(kl_per_dim) else f"z{d}"
        if d < len(kl_per_dim) and kl_per_dim[d] < INACTIVE_KL:
            label += "  (inactive)"
        elif factor_of_dim and d in factor_of_dim:
            label += f"  ~{factor_of_dim[d]}"
        labels.append(label)
    png = os.path.join(out_dir, "traversal.png")
    pad = 2
    _imshow_grid(tile(grid, pad), png, f"{title}: each row sweeps one code over [{value_range[0]:g}, {value_range[1]:g}]",
                 labels, row_height=grid.shape[2] + pad)
    gif = os.path.join(out_dir, "traversal.gif")
    _write_gif(grid, gif)
    return {"traversal_png": png, "traversal_gif": gif}


def _write_gif(grid: np.ndarray, path: str, frame_ms: int = 120) -> None:
    """Animate the sweep: frame t shows every row's image at step t (there and back)."""
    from PIL import Image

    rows, steps = grid.shape[:2]
    order = list(range(steps)) + list(range(steps - 2, 0, -1))
    frames = []
    for t in order:
        column = tile(grid[:, t : t + 1], pad=2)
        array = (np.clip(column, 0, 1) * 255).astype(np.uint8)
        array = array[..., 0] if array.shape[-1] == 1 else array
        frames.append(Image.fromarray(array).resize((array.shape[1] * 2, array.shape[0] * 2), Image.NEAREST))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)


def write_reconstructions(model: Any, images: np.ndarray, out_dir: str, n: int = 10) -> dict[str, str]:
    """Inputs (top row) beside their reconstructions (bottom row), decoded from the posterior means."""
    os.makedirs(out_dir, exist_ok=True)
    x = images[:n]
    recon = model.decode(model.encode(x))
    path = os.path.join(out_dir, "reconstructions.png")
    _imshow_grid(tile(np.stack([x, recon])), path, "inputs (top) and reconstructions (bottom)")
    return {"reconstructions_png": path}


def write_samples(model: Any, latent_dim: int, out_dir: str, n: int = 64, seed: int = 0) -> dict[str, str]:
    """``n`` decoded samples from the prior N(0, I), in a square-ish grid."""
    os.makedirs(out_dir, exist_ok=True)
    z = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    images = model.decode(z)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    padded = np.ones((rows * cols, *images.shape[1:]), dtype=np.float32)
    padded[:n] = images
    path = os.path.join(out_dir, "samples.png")
    _imshow_grid(tile(padded.reshape(rows, cols, *images.shape[1:])), path, f"{n} samples from the prior N(0, I)")
    return {"samples_png": path}


def write_class_samples(
    model: Any, latent_dim: int, num_classes: int, factor_index: int, num_factors: int, out_dir: str,
    per_class: int = 8, seed: int = 0, class_names: Sequence[str] | None = None,
) -> dict[str, str]:
    """Conditional generation: one row per class, the same ``per_class`` prior draws in every
    row, so columns differ only by the label the decoder is given."""
    os.makedirs(out_dir, exist_ok=True)
    z = np.random.default_rng(seed).standard_normal((per_class, latent_dim)).astype(np.float32)
    zz = np.tile(z, (num_classes, 1))
    factors = np.zeros((num_classes * per_class, num_factors), dtype=np.int64)
    factors[:, factor_index] = np.repeat(np.arange(num_classes), per_class)
    images = model.decode(zz, factors=factors)
    grid = images.reshape(num_classes, per_class, *images.shape[1:])
    labels = list(class_names) if class_names else [f"class {c}" for c in range(num_classes)]
    path = os.path.join(out_dir, "class_samples.png")
    _imshow_grid(tile(grid), path, "samples per class (same z in each column)", labels, row_height=grid.shape[2] + 2)
    return {"class_samples_png": path}


def write_run_figures(
    model: Any, images: np.ndarray, kl_per_dim: Sequence[float], out_dir: str,
    mig_params: Mapping[str, Any] | None = None, factor_names: Sequence[str] = (), seed: int = 0,
) -> dict[str, str]:
    """All of a run's figures; ``images`` ``(N, H, W, C)`` are held-out inputs (the first is the
    traversal's base), ``mig_params`` the run's MIG params (row labels). Returns artifact name -> path."""
    base = model.encode(images[:1])[0]
    artifacts = write_traversal(model, base, kl_per_dim, out_dir,
                                factor_of_dim=factor_labels(mig_params, factor_names))
    artifacts.update(write_reconstructions(model, images, out_dir))
    artifacts.update(write_samples(model, len(kl_per_dim), out_dir, seed=seed))
    net = capability(model, "model")
    if capability(net, "needs_factors") and capability(net, "num_classes"):
        name = factor_names[net.factor_index] if net.factor_index < len(factor_names) else "label"
        artifacts.update(write_class_samples(
            model, len(kl_per_dim), net.num_classes, net.factor_index, net.num_factors, out_dir, seed=seed,
            class_names=[f"{name}={c}" for c in range(net.num_classes)],
        ))
    return artifacts
