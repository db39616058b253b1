"""What a spatial panel needs to explain itself: the coordinate unit, the image under the spots, category legends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..io._access import annotated_regions, is_spatialdata
from ..io._units import coordinate_unit  # noqa: F401 (the plots' import path)
from ._common import category_colours, spatial_panel

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _systems(element: Any) -> list[str]:
    from spatialdata.transformations import get_transformation

    return list(get_transformation(element, get_all=True))


def default_image(data: Any, table: AnnData, sections: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Return ``{section: (image_key, coordinate_system)}`` for the sections that have one image under them.

    A section that is an annotated region of ``table`` takes the image sharing a coordinate system with that
    element; other sections take the image sharing one with every annotated region. Sections where no image, or
    more than one, qualifies are left out (drawn without an image). An AnnData, or a SpatialData without images,
    gives ``{}``.
    """
    if not is_spatialdata(data) or not len(data.images):
        return {}
    regions = [r for r in annotated_regions(table) if r in data]
    if not regions:
        return {}
    image_systems = {name: set(_systems(image)) for name, image in data.images.items()}
    region_systems = {r: set(_systems(data[r])) for r in regions}
    shared = set.intersection(*region_systems.values())
    chosen: dict[str, tuple[str, str]] = {}
    for section in sections:
        systems = region_systems.get(str(section), shared)
        hits = [(name, sorted(systems & img)[0]) for name, img in image_systems.items() if systems & img]
        if len(hits) == 1:
            chosen[str(section)] = hits[0]
    return chosen


def categorical_colours(values: Any, table: AnnData | None, key: str) -> tuple[list[str], list[Any], np.ndarray]:
    """Return ``(categories, colours, codes)`` of categorical values (missing values get code -1)."""
    cats = pd.Series(values).astype("category")
    categories = [str(c) for c in cats.cat.categories]
    return categories, category_colours(table, key, categories), cats.cat.codes.to_numpy()


def category_legend(ax: Axes, categories: Sequence[str], colours: Sequence[Any], title: str | None = None) -> Any:
    """Add a legend of coloured dots, one per category, to the right of ``ax``; return it."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours[i], label=str(c)) for i, c in enumerate(categories)
    ]
    return ax.legend(
        handles=handles,
        title=title,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        fontsize="small",
        title_fontsize="small",
        ncols=1 if len(categories) <= 14 else 2,
    )


def category_map(
    ax: Axes,
    coords: np.ndarray,
    values: Any,
    *,
    key: str,
    table: AnnData | None = None,
    categories: Sequence[str] | None = None,
    colours: Sequence[Any] | None = None,
    unit: str = "coordinate units",
    image: Any = None,
    radius: float | None = None,
    point_size: float | None = None,
    legend_title: str | None = None,
) -> Any:
    """Draw categorical ``values`` at ``coords`` (over ``image``, a ``SectionImage``, when given) with a legend.

    ``categories`` / ``colours`` fix the colour of each category (e.g. to colour predicted labels like the true
    ones); by default scanpy's ``uns[f"{key}_colors"]`` of ``table`` or a palette. Returns the legend.
    """
    from ._image import draw_image_under

    if categories is None:
        categories, colours, codes = categorical_colours(values, table, key)
    else:
        categories = [str(c) for c in categories]
        lookup = {c: i for i, c in enumerate(categories)}
        codes = np.array([lookup.get(str(v), -1) for v in np.asarray(values, dtype=object)])
        colours = list(colours) if colours is not None else categorical_colours(categories, table, key)[1]
    rgba = [colours[c] if c >= 0 else "lightgrey" for c in codes]
    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    limits, invert_y = None, True
    if image is not None:
        margin = radius if radius is not None else 0.03 * float(np.ptp(coords, axis=0).max() or 1.0)
        coords, radius, limits, invert_y, unit = draw_image_under(ax, image, coords, radius, margin, unit)
    spatial_panel(
        ax, coords, colors=rgba, radius=radius, point_size=point_size, limits=limits, invert_y=invert_y, unit=unit
    )
    return category_legend(ax, categories, colours, legend_title)
