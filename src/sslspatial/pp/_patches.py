"""Image patches around spots: geometry (coordinates -> pixels), vectorised crops, value ranges, colour normalisation.

Pixel convention (spatialdata's): pixel ``(row, col)`` covers the square ``[col, col + 1) x [row, row + 1)`` of the
image's intrinsic frame, so a patch of ``s`` pixels centred at the continuous position ``(cx, cy)`` starts at column
``floor(cx - s / 2 + 0.5)`` and row ``floor(cy - s / 2 + 0.5)``. Patches are axis-aligned in the pixel frame (a
rotation in the transformation changes where the centre lands, not the patch orientation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..io._access import SectionImage

_MAX_BOX_PIXELS = 2**24  # largest bounding box loaded at once from a lazy image (per channel)


def _as_array(image: Any) -> Any:
    """Return the (c, y, x) array behind an image: numpy stays numpy, xarray gives its (possibly dask) data."""
    if isinstance(image, SectionImage):
        image = image.image
    if isinstance(image, np.ndarray):
        return image
    data = getattr(image, "data", image)
    if isinstance(data, memoryview):  # not an xarray
        return np.asarray(image)
    return data


def _load(array: Any, rows: slice, cols: slice) -> np.ndarray:
    block = array[:, rows, cols]
    if hasattr(block, "compute"):
        block = block.compute()
    return np.asarray(block)


def patch_starts(centres_px: np.ndarray, size_px: int) -> np.ndarray:
    """Return the integer ``(col, row)`` of the top-left pixel of each ``size_px`` patch centred at ``centres_px``.

    Parameters
    ----------
    centres_px
        ``(n, 2)`` continuous pixel positions ``(col, row)``.
    size_px
        Patch side in pixels.

    Returns
    -------
    ``(n, 2)`` int64 array.

    Examples
    --------
    >>> patch_starts(np.array([[10.0, 20.0]]), 4)
    array([[ 8, 18]])
    """
    centres_px = np.asarray(centres_px, dtype=np.float64)
    return np.floor(centres_px - size_px / 2 + 0.5).astype(np.int64)


def crop_patches(image_array: Any, centres_px: np.ndarray, size_px: int, *, pad_value: float = 0) -> np.ndarray:
    """Cut square patches of ``size_px`` pixels centred at pixel positions, padding outside the image.

    Vectorised (one gather per block of nearby patches). Lazy (dask / xarray) images are read only over the
    bounding box of the requested patches, split into smaller boxes when the patches are far apart, so a whole-slide
    image is never loaded.

    Parameters
    ----------
    image_array
        Image of shape ``(channels, height, width)``: numpy, dask, xarray or a :class:`~sslspatial._io.SectionImage`.
    centres_px
        ``(n, 2)`` patch centres as continuous pixel positions ``(col, row)`` (see the module docstring).
    size_px
        Patch side in pixels (positive integer).
    pad_value
        Value of pixels outside the image.

    Returns
    -------
    Array ``(n, channels, size_px, size_px)`` with the image's dtype.

    Examples
    --------
    >>> img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    >>> crop_patches(img, np.array([[1.0, 1.0]]), 2)[0, 0]
    array([[0, 1],
           [4, 5]], dtype=uint8)
    """
    array = _as_array(image_array)
    if len(array.shape) != 3:
        raise ValueError(f"Expected an image of shape (channels, height, width), got shape {tuple(array.shape)}.")
    size_px = int(size_px)
    if size_px < 1:
        raise ValueError(f"size_px must be a positive number of pixels, got {size_px}.")
    centres_px = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(centres_px).all():
        raise ValueError("Patch centres contain NaN or infinite values.")
    starts = patch_starts(centres_px, size_px)
    out = np.empty((len(starts), array.shape[0], size_px, size_px), dtype=array.dtype)
    if len(starts) == 0:
        return out
    _crop_into(array, starts, size_px, pad_value, np.arange(len(starts)), out, lazy=not isinstance(array, np.ndarray))
    return out


def _crop_into(array, starts, size, pad_value, index, out, *, lazy: bool) -> None:
    height, width = array.shape[1], array.shape[2]
    sub = starts[index]
    c0, r0 = sub.min(0)
    c1, r1 = sub.max(0) + size
    lo_r, hi_r, lo_c, hi_c = max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)
    box = max(hi_r - lo_r, 0) * max(hi_c - lo_c, 0)
    if lazy and len(index) > 1 and box > max(_MAX_BOX_PIXELS, 4 * len(index) * size * size):
        axis = 0 if (c1 - c0) >= (r1 - r0) else 1  # split along the longer side at the median
        order = np.argsort(sub[:, axis], kind="stable")
        half = len(order) // 2
        for part in (order[:half], order[half:]):
            _crop_into(array, starts, size, pad_value, index[part], out, lazy=lazy)
        return
    if hi_r <= lo_r or hi_c <= lo_c:  # every patch of this block lies outside the image
        out[index] = pad_value
        return
    block = _load(array, slice(lo_r, hi_r), slice(lo_c, hi_c)) if lazy else array
    off_r, off_c = (lo_r, lo_c) if lazy else (0, 0)
    ramp = np.arange(size)
    rows = sub[:, 1, None] + ramp  # (m, s) absolute rows
    cols = sub[:, 0, None] + ramp
    valid_r = (rows >= lo_r) & (rows < hi_r)
    valid_c = (cols >= lo_c) & (cols < hi_c)
    rr = np.clip(rows, lo_r, hi_r - 1) - off_r
    cc = np.clip(cols, lo_c, hi_c - 1) - off_c
    patches = block[:, rr[:, :, None], cc[:, None, :]]  # (c, m, s, s)
    patches = np.moveaxis(patches, 0, 1)
    outside = ~(valid_r[:, :, None] & valid_c[:, None, :])
    if outside.any():
        patches = patches.copy()
        patches[np.broadcast_to(outside[:, None], patches.shape)] = pad_value
    out[index] = patches


def check_image_values(image: Any, value_range: tuple[float, float] | None, *, name: str = "image") -> tuple:
    """Validate an RGB image's channels and dtype and return the ``(low, high)`` range its values map from.

    Parameters
    ----------
    image
        ``(c, y, x)`` image (or :class:`~sslspatial._io.SectionImage`).
    value_range
        Range of the pixel values, mapped to ``[0, 1]``. Required unless the image is RGB ``uint8``.
    name
        Name used in error messages.

    Returns
    -------
    ``(low, high)``.

    Examples
    --------
    >>> check_image_values(np.zeros((3, 4, 4), np.uint8), None)
    (0.0, 255.0)
    """
    array = _as_array(image)
    n_channels, dtype = array.shape[0], np.dtype(array.dtype)
    if value_range is None:
        if n_channels != 3:
            raise ValueError(
                f"{name} has {n_channels} channel(s), not RGB. Histology models expect 3 channels: pass "
                "value_range=(low, high) to state the range (single channels are then repeated to RGB), or convert "
                "the image to RGB."
            )
        if dtype != np.uint8:
            raise ValueError(
                f"{name} has dtype {dtype}, not uint8, so its value range is unknown: pass value_range=(low, high), "
                "e.g. (0, 1) for float images or (0, 65535) for uint16."
            )
        return (0.0, 255.0)
    low, high = (float(v) for v in value_range)
    if not np.isfinite([low, high]).all() or high <= low:
        raise ValueError(f"value_range must be two finite numbers (low, high) with high > low, got {value_range}.")
    if n_channels not in (1, 3):
        raise ValueError(f"{name} has {n_channels} channels; expected 1 (greyscale) or 3 (RGB).")
    return (low, high)


def to_unit_range(patches: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Scale patches to float32 in ``[0, 1]`` from ``value_range`` (clipped); greyscale is repeated to RGB.

    Examples
    --------
    >>> to_unit_range(np.array([[[[0, 255]]]], np.uint8), (0, 255)).tolist()
    [[[[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]]]
    """
    low, high = value_range
    x = (np.asarray(patches, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    x = np.clip(x, 0.0, 1.0)
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return x


@dataclass
class ColourStats:
    """Per-channel mean and standard deviation of tissue pixels (Reinhard-style colour normalisation)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, patches: np.ndarray) -> ColourStats:
        """Statistics of ``(n, 3, s, s)`` patches in ``[0, 1]``, over pixels that are not blank background."""
        pixels = np.moveaxis(patches, 1, -1).reshape(-1, patches.shape[1])
        tissue = pixels[pixels.mean(1) < 0.85]
        if len(tissue) < 100:
            tissue = pixels
        return cls(tissue.mean(0).astype(np.float32), tissue.std(0).astype(np.float32) + 1e-3)


def colour_normalize(patches: np.ndarray, source: ColourStats, target: ColourStats | None = None) -> np.ndarray:
    """Match each channel's mean / std of ``source`` statistics to ``target`` (default: a typical H&E look).

    Examples
    --------
    >>> p = np.full((1, 3, 2, 2), 0.5, np.float32)
    >>> s = ColourStats(np.full(3, 0.5, np.float32), np.full(3, 0.1, np.float32))
    >>> float(colour_normalize(p, s, s).mean())
    0.5
    """
    target = target or ColourStats(np.array([0.70, 0.50, 0.68], np.float32), np.array([0.15, 0.18, 0.12], np.float32))
    shape = (1, -1, 1, 1)
    x = (patches - source.mean.reshape(shape)) / source.std.reshape(shape) * target.std.reshape(shape)
    return np.clip(x + target.mean.reshape(shape), 0.0, 1.0).astype(np.float32)


def resize_patches(patches: np.ndarray, out_px: int) -> np.ndarray:
    """Resize ``(n, c, s, s)`` float patches to ``out_px`` pixels (antialiased bilinear)."""
    if patches.shape[-1] == out_px:
        return patches
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    return F.interpolate(t, size=(out_px, out_px), mode="bilinear", antialias=True, align_corners=False).numpy()


def size_in_pixels(image: SectionImage | Any, size: float, unit: Literal["coords", "px"] = "coords") -> int:
    """Return a patch side in pixels from a size in coordinate units (e.g. µm) or pixels."""
    if unit not in ("coords", "px"):
        raise ValueError(f"unit={unit!r} is not one of 'coords' (coordinate units, e.g. µm) or 'px'.")
    if not np.isfinite(size) or size <= 0:
        raise ValueError(f"Patch size must be a positive number, got {size}.")
    scale = image.pixels_per_unit if isinstance(image, SectionImage) and unit == "coords" else 1.0
    return max(int(round(size * scale)), 1)


def section_patches(
    image: SectionImage | Any,
    centres: np.ndarray,
    size: float,
    *,
    unit: Literal["coords", "px"] = "coords",
    out_px: int | None = None,
    value_range: tuple[float, float] | None = None,
    colour_stats: ColourStats | None = None,
    check_inside: bool = True,
) -> np.ndarray:
    """Float patches in ``[0, 1]`` around ``centres`` (coordinate units for a SectionImage, pixels for an array).

    Parameters
    ----------
    image
        A :class:`~sslspatial._io.SectionImage` (centres in its coordinate system) or a ``(c, y, x)`` array (centres
        in pixels ``(col, row)``).
    centres
        ``(n, 2)`` patch centres, x then y.
    size
        Patch side, in coordinate units (``unit="coords"``) or pixels (``unit="px"``).
    unit
        Unit of ``size``.
    out_px
        Resize patches to this many pixels (default: keep the cropped size).
    value_range
        Range of pixel values (required unless RGB uint8).
    colour_stats
        Source colour statistics: when given, patches are colour-normalised (:func:`colour_normalize`).
    check_inside
        Raise if a centre falls outside the image (a sign the transformation does not map the spots onto it).

    Returns
    -------
    ``(n, 3, p, p)`` float32.

    Examples
    --------
    >>> img = np.zeros((3, 50, 50), np.uint8)
    >>> section_patches(img, np.array([[25.0, 25.0]]), 10, unit="px", out_px=8).shape
    (1, 3, 8, 8)
    """
    vr = check_image_values(image, value_range)
    size_px = size_in_pixels(image, size, unit)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    px = image.to_pixels(centres) if isinstance(image, SectionImage) else centres
    if check_inside:
        check_centres_inside(image, px)
    patches = to_unit_range(crop_patches(image, px, size_px), vr)
    if colour_stats is not None:
        patches = colour_normalize(patches, colour_stats)
    return resize_patches(patches, out_px) if out_px else patches


def check_centres_inside(image: Any, centres_px: np.ndarray, what: str = "spots") -> None:
    """Raise if any pixel centre lies outside the image, naming how many and the likely fix."""
    array = _as_array(image)
    height, width = array.shape[1], array.shape[2]
    outside = (centres_px[:, 0] < 0) | (centres_px[:, 0] > width) | (centres_px[:, 1] < 0) | (centres_px[:, 1] > height)
    if outside.any():
        example = centres_px[np.flatnonzero(outside)[0]]
        raise ValueError(
            f"{int(outside.sum())} of {len(centres_px)} {what} fall outside their image ({width} x {height} px; e.g. "
            f"one maps to pixel (col, row) = ({example[0]:.1f}, {example[1]:.1f})). Check the image's spatialdata "
            "transformation to the spots' coordinate system (set_transformation), or the image paired with the region."
        )
