"""Tissue masks of H&E images and regular grids of pseudo-spots over the tissue."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..io._access import SectionImage, map_points
from ._patches import _as_array, _load


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def tissue_mask(image: SectionImage | Any, max_side: int = 1024) -> tuple[np.ndarray, int]:
    """Boolean tissue mask of an RGB image on a grid reduced by an integer ``step`` (returned with the mask).

    Tissue = pixels more saturated than the Otsu threshold of the saturation, clipped to [0.04, 0.1] (stained tissue is coloured, glass is
    grey / white), smoothed by a morphological opening and closing and with holes filled.

    Examples
    --------
    >>> img = np.full((3, 40, 40), 240, np.uint8); img[:, 10:30, 10:30] = [[[200]], [[80]], [[180]]]
    >>> mask, step = tissue_mask(img); bool(mask[20, 20]), bool(mask[2, 2]), step
    (True, False, 1)
    """
    array = _as_array(image)
    step = max(1, int(np.ceil(max(array.shape[1], array.shape[2]) / max_side)))
    small = array[:, ::step, ::step]
    small = np.asarray(small.compute() if hasattr(small, "compute") else _load(small, slice(None), slice(None)))
    rgb = small[:3].astype(np.float32)
    saturation = (rgb.max(0) - rgb.min(0)) / np.maximum(rgb.max(0), 1e-6)
    threshold = float(np.clip(_otsu(saturation.ravel()), 0.04, 0.1))  # glass: < 0.04; stained tissue: > 0.1
    mask = saturation > threshold
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, iterations=2), iterations=2)
    return ndimage.binary_fill_holes(mask), step


def tissue_grid(image: SectionImage, spacing: float, *, min_tissue: float = 0.5, max_side: int = 1024) -> np.ndarray:
    """Centres (coordinate units) of a square grid of pseudo-spots over the tissue of an image.

    Parameters
    ----------
    image
        The section image and its coordinates -> pixels map.
    spacing
        Grid step in coordinate units (e.g. the spot pitch of the training data).
    min_tissue
        Keep a grid point when the mask is tissue at its position (smoothed over half a step) at least this much.
    max_side
        Side of the reduced image the mask is computed on.

    Returns
    -------
    ``(n, 2)`` centres, x then y.

    Examples
    --------
    >>> from sslspatial.io._access import SectionImage
    >>> img = np.full((3, 40, 40), 240, np.uint8); img[:, 10:30, 10:30] = [[[200]], [[80]], [[180]]]
    >>> tissue_grid(SectionImage(img, np.eye(3)), 5.0).shape[0] > 0
    True
    """
    if not np.isfinite(spacing) or spacing <= 0:
        raise ValueError(f"Grid spacing must be positive, got {spacing}.")
    mask, step = tissue_mask(image, max_side)
    height, width = _as_array(image).shape[1:]
    corners_px = np.array([[0, 0], [width, 0], [0, height], [width, height]], float)
    corners = map_points(corners_px, np.linalg.inv(image.coords_to_pixels))
    lo, hi = corners.min(0), corners.max(0)
    xs = np.arange(lo[0] + spacing / 2, hi[0], spacing)
    ys = np.arange(lo[1] + spacing / 2, hi[1], spacing)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    px = image.to_pixels(grid) / step
    smooth = ndimage.uniform_filter(
        mask.astype(np.float32), size=max(1, int(spacing * image.pixels_per_unit / step / 2))
    )
    col = np.clip(px[:, 0].astype(int), 0, mask.shape[1] - 1)
    row = np.clip(px[:, 1].astype(int), 0, mask.shape[0] - 1)
    inside = (px[:, 0] >= 0) & (px[:, 1] >= 0) & (px[:, 0] < mask.shape[1]) & (px[:, 1] < mask.shape[0])
    return grid[inside & (smooth[row, col] >= min_tissue)]
