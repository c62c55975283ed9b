"""dSprites (Matthey et al. 2017): a procedural renderer and a loader for the original ``.npz``.

Factors (integer indices, row-major grid order, 3*6*40*32*32 = 737,280 combinations)::

    shape        3   0 = square, 1 = ellipse, 2 = heart
    scale        6   np.linspace(0.5, 1.0, 6)
    orientation 40   np.linspace(0, 2*pi, 40, endpoint=False)   (radians)
    posX        32   np.linspace(0, 1, 32)
    posY        32   np.linspace(0, 1, 32)

The original's constant ``color`` factor is dropped. Note that the original
dataset uses ``np.linspace(0, 2*pi, 40)`` *including* 2*pi (so its first and
last orientation coincide); :class:`ProceduralDSprites` uses
``endpoint=False``, i.e. steps of exactly 9 degrees, so orientation index 10
is a quarter turn, 20 a half turn.

Geometry of :class:`ProceduralDSprites` (variant ``"procedural-v1"``)
--------------------------------------------------------------------
Images are ``64 x 64 x 1`` binary (0/1). Pixel ``(row, col)`` has its centre
at continuous coordinate ``(row, col)`` and covers ``[row - 0.5, row + 0.5]``.

* Position: the sprite's centre (rotation centre; the area centroid for every
  shape) is at ``col = 15.5 + 31 * posX`` and ``row = 15.5 + 31 * posY``, i.e.
  ``col = 15.5 + posX_index`` and ``row = 15.5 + posY_index``: one pixel per
  index step, centres spanning 15.5 .. 46.5, symmetric about the frame centre
  31.5. Column grows with posX, row grows with posY (downwards).
* Sizes at scale 1 (all lengths are multiplied by the scale value):
  square of side 18 px (area 324 px^2); ellipse with semi-axes 10 px
  (horizontal at orientation 0) and 5 px (area ~157 px^2); heart
  ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0`` scaled by 8 px per unit (about
  18.2 px wide, 17.9 px tall, area ~234 px^2), drawn upright (lobes up) at
  orientation 0 and shifted so its area centroid is the sprite centre.
* Orientation rotates the sprite counter-clockwise as displayed (row axis
  pointing down) about its centre.
* The farthest foreground point from the centre is 9*sqrt(2) ~ 12.7 px (the
  square's corner), so every sprite at every position lies within
  rows/cols 2.8 .. 60.2: the outermost rows/columns are always empty.
* Rasterisation: each pixel is sampled at a 4 x 4 grid of sub-pixel points;
  a pixel is foreground iff strictly more than half (9 of 16) of its samples
  are inside the shape (deterministic, binary, no anti-aliasing in the
  output). Pixel areas at orientation 0, scale 1: square 324 (18 x 18),
  ellipse 156, heart 232; at scale 0.5: square 64 (8 x 8), ellipse 36,
  heart 56.

Rendering: the 3*6*40 = 720 sprites are rasterised once (lazily, cached on
the instance) into a bank of ``95 x 95`` canvases with the sprite centre at
canvas coordinate ``(46.5, 46.5)``; an image is the ``64 x 64`` window of its
sprite's canvas starting at ``(31 - posY_index, 31 - posX_index)``, so a
batch is one NumPy gather (integer-pixel translation).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from vaebench.plugins.datasets.base import (
    DatasetError,
    FactorDataset,
    FactorGridDataset,
    check_factors,
    flat_index,
    hash_files,
)

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "NPZ_FILENAME",
    "NPZ_URL",
    "NpzDSprites",
    "ProceduralDSprites",
    "load_dsprites",
]

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
NPZ_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
NPZ_URL = "https://github.com/google-deepmind/dsprites-dataset"

# --- geometry constants of "procedural-v1" (all hashed into digest()) -------
_IMG = 64
_POS_ORIGIN = 15.5  # centre (row/col) at position index 0
_POS_STEP = 1.0  # pixels per position index (must stay integral: 1)
_SQUARE_HALF = 9.0  # half side at scale 1
_ELLIPSE_AXES = (10.0, 5.0)  # (horizontal, vertical) semi-axes at scale 1
_HEART_UNIT = 8.0  # pixels per unit of the implicit heart curve at scale 1
_HEART_CENTROID_Y = 0.29348  # area centroid (y up) of (x²+y²-1)³ - x²y³ <= 0
_SUPERSAMPLE = 4  # samples per pixel per axis
_PATCH_HALF = 14  # sprite patch is 28 x 28 px around the centre
_CANVAS = _IMG + FACTOR_SIZES[3] - 1  # 95
_CANVAS_CENTRE = _POS_ORIGIN + (FACTOR_SIZES[3] - 1) * _POS_STEP  # 46.5


def _missing_file_message(path: str) -> str:
    return (
        f"dSprites file {path!r} is missing or unreadable: download {NPZ_FILENAME} from "
        f"{NPZ_URL} and pass its local path as the dataset option (--dataset-path PATH), "
        "or omit the path to use the procedural renderer"
    )


# --- procedural renderer ----------------------------------------------------


def _render_patches() -> np.ndarray:
    """Rasterise all 720 sprites -> ``(3, 6, 40, 28, 28)`` uint8 in {0, 1}, centre at (13.5, 13.5)."""
    ss = _SUPERSAMPLE
    p = 2 * _PATCH_HALF
    # Sub-pixel sample offsets, symmetric about the pixel centre.
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    # Coordinates of every sample relative to the sprite centre, in pixels.
    pix = np.arange(p) - (_PATCH_HALF - 0.5)
    coord = (pix[:, None] + sub[None, :]).reshape(-1)  # (p*ss,)
    dx = coord[None, :]  # column offset (right)
    dy = -coord[:, None]  # row offset flipped: y up
    scales = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
    thetas = np.linspace(0.0, 2.0 * np.pi, FACTOR_SIZES[2], endpoint=False)
    out = np.empty(FACTOR_SIZES[:3] + (p, p), dtype=np.uint8)
    threshold = (ss * ss) // 2  # foreground iff strictly more than half the samples are inside
    for oi, th in enumerate(thetas):
        c, s = np.cos(th), np.sin(th)
        # Inverse rotation: local = R(-theta) @ (dx, dy).
        u0 = c * dx + s * dy  # (p*ss, p*ss)
        v0 = -s * dx + c * dy
        for si, sc in enumerate(scales):
            u = u0 / sc
            v = v0 / sc
            square = (np.abs(u) <= _SQUARE_HALF) & (np.abs(v) <= _SQUARE_HALF)
            ellipse = (u / _ELLIPSE_AXES[0]) ** 2 + (v / _ELLIPSE_AXES[1]) ** 2 <= 1.0
            hx = u / _HEART_UNIT
            hy = v / _HEART_UNIT + _HEART_CENTROID_Y
            r = hx * hx + hy * hy - 1.0
            heart = r * r * r - hx * hx * hy * hy * hy <= 0.0
            for shi, inside in enumerate((square, ellipse, heart)):
                counts = inside.reshape(p, ss, p, ss).sum(axis=(1, 3))
                out[shi, si, oi] = counts > threshold
    return out


class ProceduralDSprites(FactorGridDataset):
    """dSprites rendered on the fly with NumPy (variant ``"procedural-v1"``).

    See the module docstring for the exact geometry. Thread-safe for reads
    once the sprite bank is built (first call to any rendering method).
    """

    name: str = "dsprites"
    variant: str = "procedural-v1"
    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES
    image_shape: tuple[int, int, int] = (_IMG, _IMG, 1)

    def __init__(self) -> None:
        self._patches: np.ndarray | None = None
        self._canvas: np.ndarray | None = None
        self._windows: np.ndarray | None = None
        self._digest: str | None = None
        #: Factor values per factor, e.g. ``factor_values[1]`` are the 6 scales.
        self.factor_values: tuple[np.ndarray, ...] = (
            np.arange(3, dtype=np.float64),
            np.linspace(0.5, 1.0, 6),
            np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False),
            np.linspace(0.0, 1.0, 32),
            np.linspace(0.0, 1.0, 32),
        )

    # -- bank ----------------------------------------------------------------
    def _build(self) -> None:
        patches = _render_patches()  # (3, 6, 40, 28, 28)
        n_sprites = int(np.prod(FACTOR_SIZES[:3]))
        canvas = np.zeros((n_sprites, _CANVAS, _CANVAS), dtype=np.uint8)
        # Patch pixel i has centre offset i - 13.5 from the sprite centre 46.5.
        start = int(_CANVAS_CENTRE - (_PATCH_HALF - 0.5))  # 33
        p = 2 * _PATCH_HALF
        canvas[:, start : start + p, start : start + p] = patches.reshape(n_sprites, p, p)
        self._patches = patches
        self._canvas = canvas
        # (720, 32, 32, 64, 64) read-only view: [sprite, row_off, col_off] -> image.
        self._windows = np.lib.stride_tricks.sliding_window_view(canvas, (_IMG, _IMG), axis=(1, 2))

    def sprite_bank(self) -> np.ndarray:
        """The rasterised sprites ``(3, 6, 40, 28, 28)`` uint8 in {0, 1}, centre at (13.5, 13.5)."""
        if self._patches is None:
            self._build()
        assert self._patches is not None
        return self._patches

    # -- protocol ------------------------------------------------------------
    def digest(self) -> str:
        """16 hex chars: sha256 of the sprite bank bytes and the geometry constants."""
        if self._digest is None:
            bank = self.sprite_bank()
            h = hashlib.sha256()
            geometry = {
                "variant": self.variant,
                "factor_sizes": list(FACTOR_SIZES),
                "image": _IMG,
                "pos_origin": _POS_ORIGIN,
                "pos_step": _POS_STEP,
                "square_half": _SQUARE_HALF,
                "ellipse_axes": list(_ELLIPSE_AXES),
                "heart_unit": _HEART_UNIT,
                "heart_centroid_y": _HEART_CENTROID_Y,
                "supersample": _SUPERSAMPLE,
                "coverage_rule": "more than half of the samples",
                "patch_half": _PATCH_HALF,
                "orientation_endpoint": False,
            }
            h.update(json.dumps(geometry, sort_keys=True).encode())
            h.update(str(bank.shape).encode())
            h.update(np.ascontiguousarray(bank).tobytes())
            self._digest = h.hexdigest()[:16]
        return self._digest

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 5)`` int -> images ``(N, 64, 64, 1)`` uint8 in {0, 1}."""
        f = check_factors(factors, FACTOR_SIZES)
        if self._windows is None:
            self._build()
        assert self._windows is not None
        sprite = (f[:, 0] * FACTOR_SIZES[1] + f[:, 1]) * FACTOR_SIZES[2] + f[:, 2]
        last = FACTOR_SIZES[3] - 1
        imgs = self._windows[sprite, last - f[:, 4], last - f[:, 3]]  # (N, 64, 64) copy
        return imgs.reshape(f.shape[0], _IMG, _IMG, 1)

    def __repr__(self) -> str:
        return f"ProceduralDSprites(variant={self.variant!r})"


# --- original npz -------------------------------------------------------------


class NpzDSprites(FactorGridDataset):
    """The original dSprites ``.npz`` (variant ``"npz"``), loaded fully into memory.

    Uses only the ``imgs`` ``(N, H, W)`` and ``latents_classes`` ``(N, 6)``
    entries (column 0, color, is dropped); the pickled ``metadata`` entry is
    never read. ``factor_sizes`` are ``max + 1`` per latent column and the
    rows must cover every combination exactly once (any row order).
    """

    name: str = "dsprites"
    variant: str = "npz"
    factor_names: tuple[str, ...] = FACTOR_NAMES

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._digest: str | None = None
        if not os.path.isfile(self.path):
            raise DatasetError(_missing_file_message(self.path))
        try:
            loaded = np.load(self.path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DatasetError(
                    f"dSprites file {self.path!r} is a single .npy array, not an .npz archive; "
                    f"expected the original {NPZ_FILENAME} from {NPZ_URL}"
                )
            with loaded as npz:
                keys = set(npz.files)
                missing = [k for k in ("imgs", "latents_classes") if k not in keys]
                if missing:
                    raise DatasetError(
                        f"dSprites file {self.path!r} lacks required entries {missing} "
                        f"(has {sorted(keys)}); expected the original {NPZ_FILENAME} from {NPZ_URL}"
                    )
                imgs = np.asarray(npz["imgs"])
                classes = np.asarray(npz["latents_classes"])
        except DatasetError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise DatasetError(
                _missing_file_message(self.path) + f" ({type(exc).__name__}: {exc})".replace("\n", " ")
            ) from None

        if imgs.ndim == 4 and imgs.shape[-1] == 1:
            imgs = imgs[..., 0]
        if imgs.ndim != 3:
            raise DatasetError(f"dSprites 'imgs' must be (N, H, W), got shape {imgs.shape} in {self.path!r}")
        if classes.ndim != 2 or classes.shape[1] != 6 or classes.dtype.kind not in "iu":
            raise DatasetError(
                f"dSprites 'latents_classes' must be (N, 6) integer, got {classes.shape} {classes.dtype} "
                f"in {self.path!r}"
            )
        n = imgs.shape[0]
        if classes.shape[0] != n or n == 0:
            raise DatasetError(
                f"dSprites 'imgs' has {n} rows but 'latents_classes' has {classes.shape[0]} in {self.path!r}"
            )
        latents = classes[:, 1:].astype(np.int64)
        if latents.min() < 0:
            raise DatasetError(f"dSprites 'latents_classes' has negative entries in {self.path!r}")
        sizes = tuple(int(s) for s in latents.max(axis=0) + 1)
        total = int(np.prod(sizes))
        if total != n:
            raise DatasetError(
                f"dSprites rows ({n}) do not match the factor grid {sizes} ({total} combinations) "
                f"in {self.path!r}"
            )
        flat = np.ravel_multi_index(tuple(latents.T), sizes)
        if np.array_equal(flat, np.arange(n)):
            self._lookup: np.ndarray | None = None
        else:
            counts = np.bincount(flat, minlength=total)
            if not np.all(counts == 1):
                raise DatasetError(
                    f"dSprites rows do not cover the factor grid {sizes} exactly once in {self.path!r}"
                )
            lookup = np.empty(total, dtype=np.int64)
            lookup[flat] = np.arange(n, dtype=np.int64)
            self._lookup = lookup

        if imgs.dtype == np.bool_:
            imgs = imgs.view(np.uint8)
        elif imgs.dtype != np.uint8:
            imgs = imgs.astype(np.uint8)
        self._imgs = imgs
        # The original stores 0/1; tolerate 0/255 files.
        self.pixel_scale = 1.0 if int(imgs.max()) <= 1 else 1.0 / 255.0
        self.factor_sizes: tuple[int, ...] = sizes
        self.image_shape: tuple[int, int, int] = (int(imgs.shape[1]), int(imgs.shape[2]), 1)

    def digest(self) -> str:
        """First 16 hex chars of the sha256 of the file's bytes (streamed, cached)."""
        if self._digest is None:
            self._digest = hash_files([self.path]).hexdigest()[:16]
        return self._digest

    def _rows(self, factors: np.ndarray) -> np.ndarray:
        flat = flat_index(factors, self.factor_sizes)
        return flat if self._lookup is None else self._lookup[flat]

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 5)`` int -> images ``(N, H, W, 1)`` uint8 as stored (0/1 for the original)."""
        rows = self._rows(factors)
        h, w, _ = self.image_shape
        return self._imgs[rows].reshape(rows.shape[0], h, w, 1)

    def __repr__(self) -> str:
        return f"NpzDSprites({self.path!r}, factor_sizes={self.factor_sizes})"


def load_dsprites(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """``None`` -> :class:`ProceduralDSprites`; a path -> :class:`NpzDSprites` of that file.

    Raises :class:`DatasetError` (one-line message naming the file to download)
    if the file is missing, unreadable or lacks the required entries.
    """
    if path is None or (isinstance(path, str) and path == ""):
        return ProceduralDSprites()
    return NpzDSprites(path)
