"""Patches cut once per section at the resolution the model uses, and kept for the whole run.

Training draws every spot's patch once per epoch (and again with test-time augmentation), so cutting it from the
image each time costs, at full resolution, more than the model itself: a 100 µm her2st spot at 1.5 diameters is a
218 px crop of a 9,300 x 9,900 px image, resampled to the model's 32 px. Here each spot's patch is cut **once**:

- from the coarsest level of a multiscale (pyramid) image whose patch side is still at least the model's
  ``patch_px`` (:func:`working_level`), so a lazy whole-slide image is read at the resolution the model uses;
- mapped to ``[0, 1]``, colour-normalised (when the section has colour statistics), resampled to ``patch_px``
  (antialiased bilinear: an area average when shrinking), exactly as the patches were before;
- stored as ``uint8`` (``round(255 * value)``: at most 1/510 off the float patch; 3 x patch_px x patch_px bytes per
  spot, 3 kB at 32 px), on the :class:`~sslspatial.data._patch_loader.PatchSection` itself, so every epoch, the
  validation and the predictions (and the rotations / flips of the augmentations, applied to the cached patches)
  reuse it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..pp._patches import colour_normalize, crop_patches, resize_patches, to_unit_range

#: spots cut per block while filling a cache (bounds the memory of the full-resolution crops)
CHUNK = 128


def pyramid_levels(element: Any) -> list[tuple[Any, float, float]]:
    """The coarser levels of a multiscale image, finest first: ``(array, x factor, y factor)`` to level 0.

    Parameters
    ----------
    element
        A SpatialData image element: a multiscale ``DataTree`` (levels ``scale0``, ``scale1``, ...) or a single-scale
        array (no coarser levels).

    Returns
    -------
    ``[(level_array, fx, fy), ...]`` for levels 1, 2, ...: pixel ``j`` of a level covers level-0 pixels
    ``[j * f, (j + 1) * f)``, so level-0 continuous positions map to the level by dividing by ``(fx, fy)``.
    Empty for a single-scale image.

    Examples
    --------
    >>> pyramid_levels(np.zeros((3, 8, 8), np.uint8))
    []
    """
    if "scale0" not in getattr(element, "children", {}):
        return []
    from spatialdata._utils import get_pyramid_levels

    levels = get_pyramid_levels(element)
    h0, w0 = levels[0].shape[-2:]
    return [(level, w0 / level.shape[-1], h0 / level.shape[-2]) for level in levels[1:]]


def working_level(section: Any, patch_px: int) -> tuple[Any, np.ndarray, int, float]:
    """The image level patches of ``section`` are cut from: the coarsest whose patch side is ``>= patch_px``.

    Parameters
    ----------
    section
        A :class:`~sslspatial.data._patch_loader.PatchSection` (``levels``: its image's coarser pyramid levels).
    patch_px
        Side of the patches the model sees.

    Returns
    -------
    ``(image, centres_px, size_px, factor)``: the level's array, the spot centres and the patch side in its pixels,
    and its linear factor to level 0 (1.0: the section's own image).
    """
    best = (section.image, section.centres_px, int(section.size_px), 1.0)
    for array, fx, fy in getattr(section, "levels", None) or []:
        factor = max(fx, fy)
        size = int(round(section.size_px / factor))
        if size >= patch_px and factor > best[3]:
            best = (array, section.centres_px / np.array([fx, fy]), size, factor)
    return best


def cut_patches(section: Any, patch_px: int, chunk: int | None = None) -> np.ndarray:
    """Every spot's patch of ``section`` as ``uint8`` ``(n, 3, patch_px, patch_px)``, values ``round(255 * x)``.

    ``x`` is the float patch the model is fed: the crop mapped to ``[0, 1]`` from the section's value range,
    colour-normalised if the section has colour statistics, resampled to ``patch_px``.

    Parameters
    ----------
    section
        A :class:`~sslspatial.data._patch_loader.PatchSection`.
    patch_px
        Side of the output patches.
    chunk
        Spots cut per block (spatially contiguous, so a lazy image is read over small boxes); default
        :data:`CHUNK`.
    """
    chunk = chunk or CHUNK
    image, centres, size_px, _ = working_level(section, patch_px)
    out = np.empty((len(centres), 3, patch_px, patch_px), np.uint8)
    order = np.lexsort((centres[:, 0], np.floor(centres[:, 1] / max(size_px, 1))))  # row bands, then columns
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        x = to_unit_range(crop_patches(image, centres[idx], size_px), section.value_range)
        if section.colour is not None:
            x = colour_normalize(x, section.colour)
        x = resize_patches(x, patch_px)
        out[idx] = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def cached_patches(section: Any, patch_px: int) -> np.ndarray:
    """The ``uint8`` patches of every spot of ``section`` (:func:`cut_patches`), cut on the first call only.

    The cache lives on the section and is rebuilt only when what it depends on changes (the image, the centres, the
    patch side, the value range, the colour statistics or ``patch_px``): a section copied with other centres (e.g.
    ``dataclasses.replace``) starts without one. ``section.cache_seconds`` accumulates the time spent cutting.
    """
    key = (int(patch_px), int(section.size_px), id(section.image), id(section.centres_px),
           tuple(section.value_range), id(section.colour))  # fmt: skip
    cache = section.patch_cache
    if cache is None or cache[0] != key:
        t0 = time.perf_counter()
        section.patch_cache = cache = (key, cut_patches(section, patch_px))
        section.cache_seconds += time.perf_counter() - t0
    return cache[1]


def as_float(patches: np.ndarray) -> np.ndarray:
    """Cached ``uint8`` patches as the float32 ``[0, 1]`` values the model takes."""
    return patches.astype(np.float32) * np.float32(1.0 / 255.0)
