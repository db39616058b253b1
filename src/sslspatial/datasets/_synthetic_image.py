"""The synthetic tissue's H&E-like image: stamped nuclei and cytoplasm per cell type, Beer-Lambert optical densities."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

_HEMATOXYLIN = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])  # optical density per RGB channel
_EOSIN = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])
_IMAGE_MARGIN = 10.0  # micrometres of blank slide around the tissue; also the image's translation


def _image_shape(extent_xy: tuple[float, float], pixel_size: float) -> tuple[int, int]:
    """Width and height in pixels of the image covering the tissue plus its blank margin."""
    width = int(np.ceil((extent_xy[0] + 2 * _IMAGE_MARGIN) / pixel_size))
    height = int(np.ceil((extent_xy[1] + 2 * _IMAGE_MARGIN) / pixel_size))
    return width, height


def _disc(radius_px: float) -> np.ndarray:
    """Anti-aliased disc kernel of the given radius in pixels (peak 1)."""
    half = int(np.ceil(radius_px)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    return np.clip(radius_px + 0.5 - np.hypot(xx, yy), 0.0, 1.0)


def _draw_he(xy, cell_type, type_look, tissue_boxes, extent_xy, pixel_size, rng) -> np.ndarray:
    """H&E-like RGB image (3, y, x) uint8 by Beer-Lambert optical densities of stamped nuclei and cytoplasm."""
    width, height = _image_shape(extent_xy, pixel_size)
    pix = (xy + _IMAGE_MARGIN) / pixel_size  # intrinsic coordinates; pixel j covers [j, j + 1)
    ix = np.clip(np.floor(pix[:, 0]).astype(np.int64), 0, width - 1)
    iy = np.clip(np.floor(pix[:, 1]).astype(np.int64), 0, height - 1)
    od = np.zeros((height, width, 3), dtype=np.float32)
    cytoplasm = np.zeros((height, width), dtype=np.float32)
    for t, look in enumerate(type_look):
        mask = cell_type == t
        if not mask.any():
            continue
        centres = np.zeros((height, width), dtype=np.float32)
        np.add.at(centres, (iy[mask], ix[mask]), 1.0)
        nucleus = np.clip(fftconvolve(centres, _disc(look["nucleus_radius"] / pixel_size), mode="same"), 0, 1)
        cytoplasm += fftconvolve(centres, _disc(look["cell_radius"] / pixel_size), mode="same")
        od += nucleus[..., None].astype(np.float32) * (look["darkness"] * look["stain"]).astype(np.float32)
    tissue = np.zeros((height, width), dtype=np.float32)
    for x_lo, x_hi, y_lo, y_hi in tissue_boxes:
        cols = slice(int((x_lo + _IMAGE_MARGIN) / pixel_size), int(np.ceil((x_hi + _IMAGE_MARGIN) / pixel_size)))
        rows = slice(int((y_lo + _IMAGE_MARGIN) / pixel_size), int(np.ceil((y_hi + _IMAGE_MARGIN) / pixel_size)))
        tissue[rows, cols] = 1.0
    eosin = 0.02 + 0.25 * tissue + 0.25 * np.clip(cytoplasm, 0, 1)
    od += eosin[..., None] * _EOSIN.astype(np.float32)
    od = gaussian_filter(od, sigma=(0.6, 0.6, 0))
    od += rng.normal(0.0, 0.03, size=od.shape).astype(np.float32)
    rgb = 255.0 * np.exp(-np.clip(od, 0, None))
    return np.moveaxis(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), -1, 0)


def _type_looks(n_types: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Per-type nucleus size, darkness and hematoxylin tint, spread so that types look different."""
    darkness = rng.permutation(np.linspace(0.7, 1.5, n_types))
    nucleus = rng.permutation(np.linspace(2.5, 4.5, n_types))
    looks = []
    for t in range(n_types):
        tint = _HEMATOXYLIN + rng.normal(0.0, 0.12, 3)
        tint = np.clip(tint, 0.05, None)
        looks.append(
            {
                "darkness": float(darkness[t]),
                "nucleus_radius": float(nucleus[t]),
                "cell_radius": float(nucleus[t] + 2.5),
                "stain": tint / np.linalg.norm(tint),
            }
        )
    return looks
