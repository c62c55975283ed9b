"""Colour, noisy and scream dSprites, built as disentanglement_lib builds them.

Source: google-research/disentanglement_lib,
``disentanglement_lib/data/ground_truth/dsprites.py`` at commit
86a644d4ed35c771560dc3360756363d35477357 (classes ``ColorDSprites``,
``NoisyDSprites``, ``ScreamDSprites``; registered there as ``color_dsprites``,
``noisy_dsprites``, ``scream_dsprites`` in ``named_data.py``). Each variant
takes a binary dSprites image (the sprite mask, :mod:`.dsprites`: rendered, or
the original ``.npz``) and makes a ``64 x 64 x 3`` RGB image:

* colour: ``mask * colour``, one RGB colour per image drawn uniformly in
  ``[0.5, 1]`` per channel; the background stays black.
* noisy: ``min(mask + noise, 1)`` with noise uniform in ``[0, 1]`` per pixel and
  channel: sprite pixels are 1 (white), the background is noise.
* scream: a random ``64 x 64`` crop of the Scream painting (thumbnailed into a
  350 x 274 box), its colour shifted as ``(crop + c) / 2`` with ``c`` uniform in
  ``[0, 1]`` per channel, and the crop inverted (``1 - x``) under the sprite.
  Crop offsets are drawn as disentanglement_lib draws them
  (``randint(0, H - 64)``, ``randint(0, W - 64)``, then ``c``).

Differences from disentanglement_lib, both so that a dataset is reproducible:

* Randomness per observation: disentanglement_lib draws a fresh colour / noise /
  crop each time an observation is sampled. Here observation ``i`` of the factor
  grid (row-major flat index, as :meth:`FactorGridDataset.index_of`) draws from
  ``np.random.default_rng([seed, i])`` (``seed`` = :data:`NUISANCE_SEED`, 0), so
  ``observations(factors)`` is a function of the factors: the sampler, the held-out
  set and the sampler-based metrics see the same image for the same grid point,
  every time and on every machine. The nuisance (colour, noise, crop) still
  varies independently of the five factors across the grid.
* Pixels are quantised to 1/255 (uint8 ``round(255 x)``; ``pixel_scale = 1/255``),
  so batches travel as uint8 like 3D Shapes'. Scream's inversion is exact in
  uint8: a sprite pixel is ``255 - background``.

The Scream image cannot ship (no download at run time; the painting's photograph
is not ours to bundle). By default the scream background is a procedural texture
(:func:`scream_texture`: fixed-seed smooth noise bent into swirling colour bands,
orange/red sky over dark blue, ``274 x 350 x 3``, the size of disentanglement_lib's
thumbnail box) — *not* the painting: results on it are not comparable to
published scream-dSprites numbers, and its variant says so
(``"procedural-v1+scream-texture-v1"``). A user who has the original
``scream.jpg`` (disentanglement_lib's ``bin/dlib_download_data`` fetches
https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg) passes it as
``--dataset-path``; it is read with Pillow (a dependency of matplotlib),
thumbnailed into 350 x 274 as disentanglement_lib does, variant
``"procedural-v1+scream-jpg"``. For colour and noisy dSprites ``--dataset-path`` is
the original dSprites ``.npz`` as for ``dsprites``.

Factors are dSprites' five (shape, scale, orientation, posX, posY), same sizes
and values. Every variant's whole grid is 737,280 x 12,288 bytes (9.1 GB), above
the GPU-resident grid limit, so batches are rendered on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from vaebench.plugins.datasets.base import DatasetError, FactorDataset, FactorGridDataset, check_factors
from vaebench.plugins.datasets.dsprites import FACTOR_NAMES, ProceduralDSprites, load_dsprites

__all__ = [
    "NUISANCE_SEED",
    "SCREAM_TEXTURE_SEED",
    "SCREAM_THUMBNAIL",
    "ColorDSprites",
    "NoisyDSprites",
    "ScreamDSprites",
    "load_color_dsprites",
    "load_noisy_dsprites",
    "load_scream_dsprites",
    "read_scream_image",
    "scream_texture",
]

#: Seed of the per-observation draws (colour, noise, crop): observation ``i`` uses ``default_rng([NUISANCE_SEED, i])``.
NUISANCE_SEED = 0
#: Seed of the procedural scream texture.
SCREAM_TEXTURE_SEED = 1893
#: disentanglement_lib's ``scream.thumbnail((350, 274, 3))`` box, (width, height).
SCREAM_THUMBNAIL = (350, 274)
_SOURCE = "google-research/disentanglement_lib@86a644d4ed35c771560dc3360756363d35477357:disentanglement_lib/data/ground_truth/dsprites.py"


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 ``round(255 x)``."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


class _DSpritesVariant(FactorGridDataset):
    """A dSprites variant: the base dataset's mask painted per observation (``_paint``)."""

    name: str = ""
    kind: str = ""
    factor_names: tuple[str, ...] = FACTOR_NAMES
    pixel_scale: float = 1.0 / 255.0

    def __init__(self, base: FactorGridDataset | None = None, seed: int = NUISANCE_SEED) -> None:
        self.base = base if base is not None else ProceduralDSprites()
        self.seed = int(seed)
        self.factor_sizes: tuple[int, ...] = tuple(self.base.factor_sizes)
        h, w, _ = self.base.image_shape
        self.image_shape: tuple[int, int, int] = (int(h), int(w), 3)
        self.variant: str = f"{self.base.variant}+{self.kind}"
        self.factor_values = getattr(self.base, "factor_values", None)
        self._digest: str | None = None

    def _paint(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_digest(self, h: Any) -> None:
        """Hash anything beyond the base data and the seed (the scream background)."""

    def observations_uint8(self, factors: np.ndarray) -> np.ndarray:
        """Factor indices ``(N, 5)`` int -> images ``(N, H, W, 3)`` uint8 (``/ 255`` gives [0, 1])."""
        f = check_factors(factors, self.factor_sizes)
        masks = self.base.observations_uint8(f)[..., 0] > 0  # (N, H, W) bool
        index = self.index_of(f)
        out = np.empty((f.shape[0],) + self.image_shape, dtype=np.uint8)
        for i in range(f.shape[0]):
            out[i] = self._paint(masks[i], np.random.default_rng([self.seed, int(index[i])]))
        return out

    def digest(self) -> str:
        """16 hex chars: sha256 of the source, the kind, the seed, the base's digest (and the background)."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(json.dumps({"source": _SOURCE, "kind": self.kind, "seed": self.seed,
                                 "quantised": "uint8 round(255 x)"}, sort_keys=True).encode())
            h.update(self.base.digest().encode())
            self._extra_digest(h)
            self._digest = h.hexdigest()[:16]
        return self._digest

    def __repr__(self) -> str:
        return f"{type(self).__name__}(variant={self.variant!r}, seed={self.seed})"


class ColorDSprites(_DSpritesVariant):
    """Colour dSprites: the sprite in one RGB colour uniform in ``[0.5, 1]^3`` per image, black background."""

    name = "color_dsprites"
    kind = "color-v1"

    def _paint(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        colour = _to_uint8(rng.uniform(0.5, 1.0, 3))  # (3,) in 128..255
        return mask[..., None].astype(np.uint8) * colour


class NoisyDSprites(_DSpritesVariant):
    """Noisy dSprites: sprite pixels white (1), background uniform noise in ``[0, 1]`` per pixel and channel."""

    name = "noisy_dsprites"
    kind = "noisy-v1"

    def _paint(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = _to_uint8(rng.uniform(0.0, 1.0, mask.shape + (3,)))
        return np.where(mask[..., None], np.uint8(255), noise)


class ScreamDSprites(_DSpritesVariant):
    """Scream dSprites: a colour-shifted random crop of the background image, inverted under the sprite.

    ``background``: ``(H, W, 3)`` float in [0, 1], larger than the image in both axes
    (default :func:`scream_texture`); ``background_kind`` names it in the variant.
    """

    name = "scream_dsprites"

    def __init__(self, base: FactorGridDataset | None = None, seed: int = NUISANCE_SEED,
                 background: np.ndarray | None = None, background_kind: str = "texture-v1") -> None:
        self.kind = f"scream-{background_kind}"
        super().__init__(base, seed)
        bg = scream_texture() if background is None else np.asarray(background, dtype=np.float64)
        h, w, _ = self.image_shape
        if bg.ndim != 3 or bg.shape[2] != 3 or bg.shape[0] <= h or bg.shape[1] <= w:
            raise DatasetError(f"scream background must be (H, W, 3) larger than {h} x {w}, got {bg.shape}")
        self.background = bg

    def _extra_digest(self, h: Any) -> None:
        h.update(str(self.background.shape).encode())
        h.update(np.ascontiguousarray(self.background).tobytes())

    def _paint(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = mask.shape
        # disentanglement_lib's order: x_crop (rows), y_crop (columns), then the colour shift.
        r0 = int(rng.integers(0, self.background.shape[0] - h))
        c0 = int(rng.integers(0, self.background.shape[1] - w))
        shift = rng.uniform(0.0, 1.0, 3)
        back = _to_uint8((self.background[r0 : r0 + h, c0 : c0 + w] + shift) / 2.0)
        return np.where(mask[..., None], np.uint8(255) - back, back)


def _smooth_noise(rng: np.random.Generator, cells: int, shape: tuple[int, int]) -> np.ndarray:
    """Gaussian values on a ``(cells + 1)^2`` lattice, bilinearly interpolated to ``shape``."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    ys = np.linspace(0.0, cells, shape[0])
    xs = np.linspace(0.0, cells, shape[1])
    y0 = np.minimum(ys.astype(np.int64), cells - 1)
    x0 = np.minimum(xs.astype(np.int64), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def scream_texture(seed: int = SCREAM_TEXTURE_SEED) -> np.ndarray:
    """The procedural stand-in for the Scream painting: ``(274, 350, 3)`` float64 in [0, 1]
    (uint8 levels ``/ 255``). Smooth noise bends horizontal bands into swirls; the top
    blends orange and red (sky), the bottom dark blue (water), the border between them
    wavy; fine per-pixel noise on top. Deterministic for ``seed``. Not the painting."""
    w, h = SCREAM_THUMBNAIL
    rng = np.random.default_rng(seed)
    n1 = _smooth_noise(rng, 5, (h, w))
    n2 = _smooth_noise(rng, 11, (h, w))
    y = np.linspace(0.0, 1.0, h)[:, None]
    x = np.linspace(0.0, 1.0, w)[None, :]
    phase = 7.0 * y + 1.2 * n1 + 0.5 * np.sin(2 * np.pi * (1.5 * x + 0.4 * n2))
    bands = 0.5 + 0.5 * np.sin(2 * np.pi * phase)  # (h, w) in [0, 1]
    sky_a, sky_b = np.array([0.95, 0.60, 0.15]), np.array([0.80, 0.20, 0.10])
    sea_a, sea_b = np.array([0.15, 0.25, 0.55]), np.array([0.05, 0.08, 0.20])
    t = (1.0 / (1.0 + np.exp(-12.0 * (y - 0.5 + 0.08 * n1))))[..., None]  # 0 sky .. 1 sea
    b = bands[..., None]
    colour = (1 - t) * (sky_a * (1 - b) + sky_b * b) + t * (sea_a * (1 - b) + sea_b * b)
    colour = colour + 0.04 * rng.standard_normal((h, w, 3))
    return _to_uint8(colour).astype(np.float64) / 255.0


def read_scream_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``scream.jpg`` (any image Pillow reads) as disentanglement_lib does: RGB,
    thumbnailed into 350 x 274 (aspect kept), ``(H, W, 3)`` float64 ``/ 255``.
    Raises a one-line :class:`DatasetError` when it is missing or unreadable."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DatasetError(f"scream image {p!r} is missing: pass the Scream painting's scream.jpg as "
                           "--dataset-path, or omit it to use the procedural texture")
    try:
        from PIL import Image

        with Image.open(p) as img:
            img = img.convert("RGB")
            img.thumbnail(SCREAM_THUMBNAIL)
            arr = np.asarray(img, dtype=np.float64) / 255.0
    except Exception as exc:  # Pillow raises OSError, ValueError, DecompressionBombError ...
        raise DatasetError(f"scream image {p!r} is unreadable ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    return arr


def _no_path(path: str | os.PathLike[str] | None) -> bool:
    return path is None or (isinstance(path, str) and path == "")


def load_color_dsprites(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """Colour dSprites on the rendered dSprites, or on the original ``.npz`` at ``path``."""
    return ColorDSprites(load_dsprites(path))  # type: ignore[arg-type]


def load_noisy_dsprites(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """Noisy dSprites on the rendered dSprites, or on the original ``.npz`` at ``path``."""
    return NoisyDSprites(load_dsprites(path))  # type: ignore[arg-type]


def load_scream_dsprites(path: str | os.PathLike[str] | None = None) -> FactorDataset:
    """Scream dSprites on the rendered dSprites: background the procedural texture, or
    the image at ``path`` (the original ``scream.jpg``)."""
    if _no_path(path):
        return ScreamDSprites()
    return ScreamDSprites(background=read_scream_image(path), background_kind="jpg")  # type: ignore[arg-type]
