"""Draw a crop of a SpatialData image under spatial panels (coordinates mapped to pixels via ``_io.get_image``).

An axis-aligned image (scale and translation, the usual case) is drawn in the coordinate system, so the axes keep the
coordinate unit; a rotated or sheared one is drawn in its pixels, with the spots mapped onto it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io._access import get_image, is_spatialdata

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..io._access import SectionImage


def resolve_per_section(value: str | Mapping[str, str] | None, section: str, what: str) -> str | None:
    """Return ``value`` for ``section``: a Mapping is looked up, ``"{section}"`` in a string is formatted."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if section not in value:
            raise KeyError(f"{what} has no entry for section {section!r}; it has {sorted(value)}.")
        return str(value[section])
    return str(value).replace("{section}", str(section))


def section_image(
    data: Any, image_key: str | Mapping[str, str], coordinate_system: str | Mapping[str, str] | None, section: str
) -> SectionImage:
    """Return the image of ``section`` and its coordinates-to-pixels map, with errors that name the fix."""
    if not is_spatialdata(data):
        raise TypeError("image_key= needs a SpatialData holding the image; an AnnData has no images.")
    key = resolve_per_section(image_key, section, "image_key")
    system = resolve_per_section(coordinate_system, section, "coordinate_system")
    if system is None:
        from spatialdata.transformations import get_transformation

        if key not in data.images:
            raise KeyError(f"image_key={key!r} is not an image of this SpatialData; images: {', '.join(data.images)}.")
        systems = list(get_transformation(data.images[key], get_all=True))
        if len(systems) == 1:
            system = systems[0]
        elif str(section) in systems:
            system = str(section)
        else:
            raise ValueError(
                f"Image {key!r} lives in several coordinate systems {systems}; pass coordinate_system= (a name, "
                "'{section}', or a dict section -> name)."
            )
    return get_image(data, key, system)


def _crop(image: SectionImage, pixels: np.ndarray, margin: float, max_pixels: int) -> tuple[np.ndarray, tuple]:
    """Return the (downsampled) RGB / grey crop around ``pixels`` and its pixel extent (left, right, bottom, top)."""
    arr = image.image
    _, height, width = arr.shape
    x0 = int(np.clip(np.floor(pixels[:, 0].min() - margin), 0, width - 1))
    x1 = int(np.clip(np.ceil(pixels[:, 0].max() + margin) + 1, x0 + 1, width))
    y0 = int(np.clip(np.floor(pixels[:, 1].min() - margin), 0, height - 1))
    y1 = int(np.clip(np.ceil(pixels[:, 1].max() + margin) + 1, y0 + 1, height))
    step = max(1, int(np.ceil(max(x1 - x0, y1 - y0) / max_pixels)))
    crop = np.asarray(arr[:, y0:y1:step, x0:x1:step])
    crop = np.moveaxis(crop[:3], 0, -1)
    if crop.dtype != np.uint8:
        crop = crop.astype(np.float64)
        hi = np.nanmax(crop) if crop.size else 1.0
        crop = np.clip(crop / (hi if hi > 0 else 1.0), 0, 1)
    if crop.shape[-1] == 1:
        crop = crop[..., 0]
    rows_drawn = crop.shape[0] * step
    cols_drawn = crop.shape[1] * step
    return crop, (x0 - 0.5, x0 + cols_drawn - 0.5, y0 + rows_drawn - 0.5, y0 - 0.5)


def _show(ax: Axes, crop: np.ndarray, extent: tuple) -> None:
    ax.imshow(crop, extent=extent, cmap="gray" if crop.ndim == 2 else None, interpolation="bilinear", zorder=0)


def draw_image_crop(ax: Axes, image: SectionImage, pixels: np.ndarray, margin: float, max_pixels: int = 900) -> tuple:
    """Draw the part of ``image`` around ``pixels`` (col, row) on ``ax``; return the (x0, x1, y0, y1) limits."""
    crop, extent = _crop(image, pixels, margin, max_pixels)
    _show(ax, crop, extent)
    return (
        float(pixels[:, 0].min() - margin),
        float(pixels[:, 0].max() + margin),
        float(pixels[:, 1].min() - margin),
        float(pixels[:, 1].max() + margin),
    )


def draw_image_under(
    ax: Axes,
    image: SectionImage,
    coords: np.ndarray,
    radius: float | None,
    margin: float,
    unit: str,
    max_pixels: int = 900,
) -> tuple[np.ndarray, float | None, tuple, bool, str]:
    """Draw the image around ``coords`` on ``ax`` and return how to draw the spots over it.

    Returns ``(coords, radius, limits, invert_y, unit)`` for :func:`~sslspatial.pl._common.spatial_panel`. For an
    axis-aligned image these are the coordinates, radius and unit as given (the image is placed by its extent in
    the coordinate system; ``invert_y`` is True when image rows run along +y). Otherwise the image is drawn in its
    pixels and the coordinates and radius are returned in pixels, with unit ``"pixels"``.
    """
    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    matrix = np.asarray(image.coords_to_pixels, dtype=np.float64)
    pixels = image.to_pixels(coords)
    aligned = abs(matrix[0, 1]) < 1e-12 and abs(matrix[1, 0]) < 1e-12
    if not aligned:
        radius_px = None if radius is None else radius * image.pixels_per_unit
        limits = draw_image_crop(ax, image, pixels, margin * image.pixels_per_unit, max_pixels)
        return pixels, radius_px, limits, True, "pixels"
    sx, sy, tx, ty = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    crop, (left, right, bottom, top) = _crop(image, pixels, margin * max(abs(sx), abs(sy)), max_pixels)
    _show(ax, crop, ((left - tx) / sx, (right - tx) / sx, (bottom - ty) / sy, (top - ty) / sy))
    limits = (
        float(coords[:, 0].min() - margin),
        float(coords[:, 0].max() + margin),
        float(coords[:, 1].min() - margin),
        float(coords[:, 1].max() + margin),
    )
    return coords, radius, limits, bool(sy > 0), unit
