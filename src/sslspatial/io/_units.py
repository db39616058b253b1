"""The unit of a table's coordinates (``"µm"``, ``"pixels"``, ...), for axis labels and messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anndata import AnnData

from ._access import annotated_regions, is_spatialdata

#: Spellings of common units, normalised for axis labels.
_UNIT_NAMES = {"um": "µm", "micron": "µm", "microns": "µm", "micrometer": "µm", "micrometre": "µm", "µm": "µm"}
_UNIT_NAMES |= {"px": "pixels", "pixel": "pixels", "pixels": "pixels", "mm": "mm", "nm": "nm"}


def _normalise_unit(unit: Any) -> str:
    text = str(unit).strip()
    return _UNIT_NAMES.get(text.lower(), text)


def coordinate_unit(data: Any = None, table: AnnData | None = None, unit: str | None = None) -> str:
    """Return the unit of a table's coordinates, for axis labels.

    Looked up in this order: ``unit`` (given by the caller); ``table.uns["coordinate_unit"]``; a
    ``"coordinate_unit"`` entry of a dict in ``table.uns`` (as the readers of ``ss.datasets`` write, e.g.
    ``uns["synthetic"]`` or ``uns["osmfish"]``); the same in the other tables of a SpatialData that annotate the
    same elements (e.g. for the table ``ss.tl.hist2expr`` writes); ``data.attrs["coordinate_unit"]``; ``"pixels"``
    when the annotated elements share a coordinate system with an image placed there by an identity transformation.
    Spellings are normalised (``"um"`` -> ``"µm"``, ``"pixel"`` -> ``"pixels"``). When none says,
    ``"coordinate units"``.

    Examples
    --------
    >>> import anndata, numpy as np
    >>> coordinate_unit(table=anndata.AnnData(np.ones((2, 1)), uns={"osmfish": {"coordinate_unit": "um"}}))
    'µm'
    """
    if unit is not None:
        return _normalise_unit(unit)
    if table is not None:
        if "coordinate_unit" in table.uns:
            return _normalise_unit(table.uns["coordinate_unit"])
        for value in table.uns.values():
            if isinstance(value, Mapping) and "coordinate_unit" in value:
                return _normalise_unit(value["coordinate_unit"])
    if table is not None and is_spatialdata(data):  # a table written by a tool: ask the tables of its regions
        regions = set(annotated_regions(table))
        for other in data.tables.values():
            if other is not table and regions & set(annotated_regions(other)):
                found = coordinate_unit(None, other)
                if found != "coordinate units":
                    return found
    attrs = getattr(data, "attrs", None) if is_spatialdata(data) else None
    if isinstance(attrs, Mapping) and "coordinate_unit" in attrs:
        return _normalise_unit(attrs["coordinate_unit"])
    if table is not None and is_spatialdata(data) and _in_image_pixels(data, table):
        return "pixels"
    return "coordinate units"


def _in_image_pixels(data: Any, table: AnnData) -> bool:
    """Whether the coordinates are an image's pixels.

    True when every annotated element and an image are both placed unscaled (identity transformations) in one
    coordinate system.
    """
    from spatialdata.transformations import Identity, get_transformation

    regions = [r for r in annotated_regions(table) if r in data]
    if not regions or not len(data.images):
        return False
    pixel_systems = {
        system
        for image in data.images.values()
        for system, transformation in get_transformation(image, get_all=True).items()
        if isinstance(transformation, Identity)
    }

    def unscaled(element: Any) -> set[str]:
        return {s for s, t in get_transformation(element, get_all=True).items() if isinstance(t, Identity)}

    return all(unscaled(data[r]) & pixel_systems for r in regions)
