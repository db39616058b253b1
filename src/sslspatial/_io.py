"""Old import path of :mod:`sslspatial.io` (``from sslspatial import _io``): every name now lives in ``io/``.

Kept so that code written against ``sslspatial._io`` keeps working; new code imports from ``sslspatial.io`` (public
``persist``, ``read_backed``, ``sort_spatially``) or its private submodules (``io._access``, ...).
"""

from ._types import DataLike
from .io._access import (
    SectionImage,
    affine_2d,
    annotated_regions,
    get_coordinates,
    get_image,
    get_sections,
    get_table,
    is_spatialdata,
    linear_scale,
    map_points,
    require_spatialdata,
    section_key,
    table_attrs,
)
from .io._persist import persist

__all__ = [
    "DataLike", "SectionImage", "affine_2d", "annotated_regions", "get_coordinates", "get_image", "get_sections",
    "get_table", "is_spatialdata", "linear_scale", "map_points", "persist", "require_spatialdata", "section_key",
    "table_attrs",
]  # fmt: skip
