"""The one adapter between AnnData / SpatialData and the rest of the package.

Every ``pp`` / ``tl`` function goes through these helpers to find the table, the coordinates and the section of each
observation, and the image of a section with its pixel <-> coordinate transformation; results are written back in
memory, and to the zarr store only through :func:`persist`.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._constants import Key, check_key
from ._validate import check_coordinates

if TYPE_CHECKING:
    from spatialdata import SpatialData

DataLike = Any  # AnnData | SpatialData (spatialdata is imported lazily)


def is_spatialdata(data: Any) -> bool:
    """Return whether ``data`` is a :class:`spatialdata.SpatialData` (without importing spatialdata eagerly)."""
    return type(data).__name__ == "SpatialData" and hasattr(data, "tables")


def require_spatialdata(data: Any, function: str, needs: str) -> None:
    """Raise a ``TypeError`` naming the converter when a SpatialData-only function gets something else.

    Examples
    --------
    >>> require_spatialdata(object(), "superres", "spot shapes")
    Traceback (most recent call last):
    ...
    TypeError: superres needs a SpatialData with spot shapes, got object.
    """
    if is_spatialdata(data):
        return
    hint = ""
    if type(data).__name__ == "AnnData":
        hint = (
            " For a squidpy / scanpy Visium AnnData (obsm['spatial'], uns['spatial'] images) convert it with "
            "`sdata = spatialdata_io.experimental.from_legacy_anndata(adata)`, or build one with "
            "`spatialdata.SpatialData(images=..., shapes=..., tables={'table': adata})`."
        )
    raise TypeError(f"{function} needs a SpatialData with {needs}, got {type(data).__name__}.{hint}")


def get_table(data: DataLike, table_key: str = Key.DEFAULT_TABLE) -> AnnData:
    """Return the table of ``data`` (the object itself for AnnData), checked to be non-empty.

    Parameters
    ----------
    data
        An AnnData, or a SpatialData holding the table under ``table_key``.
    table_key
        Name of the table in ``data.tables``; for an AnnData anything but the default warns that it is ignored.

    Returns
    -------
    The table itself (not a copy): writing into it writes into ``data``.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=500)
    >>> ss._io.get_table(sdata, "table").n_obs
    500
    """
    if isinstance(data, AnnData):
        if table_key != Key.DEFAULT_TABLE:
            from ._warnings import warn

            warn(
                f"table_key={table_key!r} is ignored: data is an AnnData, which is its own table (table_key selects a "
                "table of a SpatialData)."
            )
        table = data
    elif is_spatialdata(data):
        if table_key not in data.tables:
            available = ", ".join(repr(k) for k in data.tables) or "none"
            raise KeyError(
                f"table_key={table_key!r} is not a table of this SpatialData; available tables: {available}."
            )
        table = data.tables[table_key]
    else:
        raise TypeError(f"Expected an AnnData or a SpatialData, got {type(data).__name__}.")
    if table.n_obs == 0:
        raise ValueError("The table is empty (0 observations): there is nothing to compute on.")
    if table.n_vars == 0:
        raise ValueError("The table has no variables (0 genes / features).")
    return table


def table_attrs(table: AnnData) -> dict[str, Any]:
    """Return the SpatialData annotation of a table (``region``, ``region_key``, ``instance_key``), or ``{}``."""
    attrs = table.uns.get("spatialdata_attrs", {})
    return dict(attrs) if attrs else {}


def annotated_regions(table: AnnData) -> list[str]:
    """Return the names of the spatial elements a table annotates (empty for a plain AnnData)."""
    region = table_attrs(table).get("region")
    if region is None:
        return []
    return [region] if isinstance(region, str) else list(region)


def get_coordinates(
    data: DataLike,
    table_key: str = Key.DEFAULT_TABLE,
    spatial_key: str = Key.SPATIAL,
    coordinate_system: str | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Return the 2-D coordinates of the table's observations, writing them to ``obsm[spatial_key]`` if derived.

    Without ``coordinate_system``, coordinates are read from ``obsm[spatial_key]`` when present; otherwise, for a
    SpatialData table, they are the centroids of the shapes / points / labels instances the table annotates, in the
    first coordinate system of each element, and are stored in ``obsm[spatial_key]`` so squidpy finds them.

    With ``coordinate_system`` and a SpatialData table annotating elements, the coordinates are always those
    elements' centroids mapped into ``coordinate_system`` by their spatialdata transformations (``obsm`` does not
    record which coordinate system it is in, so it cannot be trusted for a named one): e.g. spots whose shapes are
    scaled and translated onto an image land where the image's own transformation puts them. ``obsm`` is then only
    written when it was missing (and all rows were asked for). A table annotating no element falls back to ``obsm``.

    Parameters
    ----------
    data
        AnnData or SpatialData.
    table_key
        Table of a SpatialData.
    spatial_key
        Key in ``obsm`` holding (or receiving) the coordinates.
    coordinate_system
        Coordinate system the coordinates are wanted in (see above); None: ``obsm``, or each element's first one.
    rows
        Positions of the observations wanted (default all). Only the elements these rows annotate are read, so each
        section may live in its own coordinate system.

    Returns
    -------
    Array of shape ``(n_obs, 2)`` (or ``(len(rows), 2)``), float64, x then y.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=500)
    >>> ss._io.get_coordinates(sdata).shape
    (500, 2)
    >>> ss._io.get_coordinates(sdata, coordinate_system="global", rows=np.arange(3)).shape
    (3, 2)
    """
    table = get_table(data, table_key)
    selected = np.arange(table.n_obs) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
    annotated = is_spatialdata(data) and bool(annotated_regions(table))
    if spatial_key in table.obsm and not (coordinate_system is not None and annotated):
        coords = np.asarray(table.obsm[spatial_key])[selected]
        check_coordinates(coords, f"obsm[{spatial_key!r}]")
        return np.asarray(coords[:, :2], dtype=np.float64)
    if not annotated:
        raise KeyError(
            f"No coordinates: obsm[{spatial_key!r}] is missing. Store the (n_obs, 2) cell / spot positions there, "
            "or pass a SpatialData whose table annotates a shapes, points or labels element."
        )
    coords = _centroids_of_annotated_elements(data, table, coordinate_system, selected)
    check_coordinates(coords, f"centroids of {annotated_regions(table)}")
    if spatial_key not in table.obsm and rows is None:
        table.obsm[check_key(spatial_key, "spatial_key")] = coords
    return coords


def _centroids_of_annotated_elements(
    sdata: SpatialData, table: AnnData, coordinate_system: str | None, rows: np.ndarray | None = None
) -> np.ndarray:
    """Centroids of the instances annotated by ``rows`` of the table, transformed into ``coordinate_system``."""
    from spatialdata import get_centroids
    from spatialdata.transformations import get_transformation

    attrs = table_attrs(table)
    region_key, instance_key = attrs["region_key"], attrs["instance_key"]
    rows = np.arange(table.n_obs) if rows is None else rows
    coords = np.full((len(rows), 2), np.nan)
    regions = table.obs[region_key].astype(str).to_numpy()[rows]
    ids_all = table.obs[instance_key].to_numpy()[rows]
    for region in annotated_regions(table):
        here = np.flatnonzero(regions == region)
        if here.size == 0:
            continue
        if region not in sdata:
            raise KeyError(f"The table annotates element {region!r}, which is not in the SpatialData.")
        element = sdata[region]
        systems = list(get_transformation(element, get_all=True))
        cs = coordinate_system or systems[0]
        if cs not in systems:
            raise ValueError(
                f"Element {region!r} has no transformation to coordinate system {cs!r} (it has {systems})."
            )
        centroids = get_centroids(element, coordinate_system=cs)
        centroids = centroids.compute() if hasattr(centroids, "compute") else centroids
        lookup = centroids.reindex(pd.Index(ids_all[here]))
        coords[here] = lookup[["x", "y"]].to_numpy(dtype=np.float64)
    return coords


def get_sections(data: DataLike, table_key: str = Key.DEFAULT_TABLE, library_key: str | None = None) -> pd.Categorical:
    """Return the section (library) of each observation.

    The section is ``obs[library_key]`` when given; otherwise, for a SpatialData table annotating several regions,
    the region column; otherwise every observation belongs to one section ``"0"``.

    Parameters
    ----------
    data
        AnnData or SpatialData.
    table_key
        Table of a SpatialData.
    library_key
        Column of ``obs`` naming the section of each observation.

    Returns
    -------
    A categorical of length ``n_obs``.

    Examples
    --------
    >>> import anndata, numpy as np, pandas as pd
    >>> adata = anndata.AnnData(np.ones((3, 1)), obs=pd.DataFrame({"s": ["a", "b", "a"]}, index=list("xyz")))
    >>> list(get_sections(adata, library_key="s").categories)
    ['a', 'b']
    """
    table = get_table(data, table_key)
    key = section_key(table, library_key)
    if key is None:
        return pd.Categorical(np.repeat("0", table.n_obs))
    return pd.Categorical(table.obs[key].astype(str))


def section_key(table: AnnData, library_key: str | None) -> str | None:
    """Return the ``obs`` column naming sections: ``library_key``, else a multi-valued region column, else None."""
    if library_key is not None:
        if library_key not in table.obs:
            cols = ", ".join(map(repr, table.obs.columns[:20]))
            raise KeyError(f"library_key={library_key!r} is not a column of obs (columns: {cols}).")
        if table.obs[library_key].isna().any():
            raise ValueError(f"obs[{library_key!r}] has missing values; every observation needs a section.")
        return library_key
    region_key = table_attrs(table).get("region_key")
    if region_key is not None and region_key in table.obs and table.obs[region_key].nunique() > 1:
        return region_key
    return None


def affine_2d(transformation: Any) -> np.ndarray:
    """The 3x3 matrix of a spatialdata transformation on the ``x``, ``y`` axes (its ``to_affine_matrix``).

    The one place the package turns a transformation into a matrix; :func:`map_points` and :func:`linear_scale`
    apply it.

    Examples
    --------
    >>> from spatialdata.transformations import Scale
    >>> affine_2d(Scale([2.0, 3.0], axes=("x", "y"))).tolist()
    [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]
    """
    matrix = transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.asarray(matrix, dtype=np.float64)


def map_points(points: np.ndarray, transformation: Any) -> np.ndarray:
    """Map ``(n, 2)`` points (x, y) by a spatialdata transformation (or a 3x3 affine matrix).

    Examples
    --------
    >>> from spatialdata.transformations import Translation
    >>> map_points(np.array([[1.0, 1.0]]), Translation([10.0, 0.0], axes=("x", "y"))).tolist()
    [[11.0, 1.0]]
    """
    matrix = transformation if isinstance(transformation, np.ndarray) else affine_2d(transformation)
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def linear_scale(transformation: Any) -> float:
    """Mean linear scale factor of a spatialdata transformation (or a 3x3 affine matrix): ``sqrt(|det|)``.

    Examples
    --------
    >>> from spatialdata.transformations import Scale
    >>> round(linear_scale(Scale([2.0, 8.0], axes=("x", "y"))), 6)
    4.0
    """
    matrix = transformation if isinstance(transformation, np.ndarray) else affine_2d(transformation)
    return float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))


@dataclass
class SectionImage:
    """An image of a section and its affine map from coordinates to pixels.

    Attributes
    ----------
    image
        Array of shape ``(channels, height, width)`` (lazy xarray/dask is allowed).
    coords_to_pixels
        3x3 affine matrix mapping homogeneous ``(x, y, 1)`` coordinates to ``(col, row, 1)`` pixel positions.
    """

    image: Any
    coords_to_pixels: np.ndarray

    def to_pixels(self, coords: np.ndarray) -> np.ndarray:
        """Map ``(n, 2)`` coordinates (x, y) to ``(n, 2)`` pixel positions (col, row)."""
        return map_points(coords, self.coords_to_pixels)

    @property
    def pixels_per_unit(self) -> float:
        """Mean linear scale from coordinate units to pixels."""
        return linear_scale(self.coords_to_pixels)


def get_image(sdata: SpatialData, image_key: str, coordinate_system: str) -> SectionImage:
    """Return an image (highest resolution) and the affine map from ``coordinate_system`` to its pixels.

    Parameters
    ----------
    sdata
        The SpatialData holding the image.
    image_key
        Name of the image element.
    coordinate_system
        The coordinate system the spots / cells live in.

    Returns
    -------
    The image and its coordinates-to-pixels transformation.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=500)
    >>> img = ss._io.get_image(sdata, "he", "global")
    >>> img.image.shape[0]
    3
    """
    from spatialdata.transformations import get_transformation

    if image_key not in sdata.images:
        available = ", ".join(map(repr, sdata.images)) or "none"
        raise KeyError(f"image_key={image_key!r} is not an image of this SpatialData; available images: {available}.")
    element = sdata.images[image_key]
    transformations = get_transformation(element, get_all=True)
    if coordinate_system not in transformations:
        raise ValueError(
            f"Image {image_key!r} has no transformation to coordinate system {coordinate_system!r} "
            f"(it has {sorted(transformations)}). Add one with spatialdata.transformations.set_transformation."
        )
    pixels_to_coords = affine_2d(transformations[coordinate_system])
    if not hasattr(element, "dims") or "scale0" in getattr(element, "children", {}):  # multiscale: full resolution
        from spatialdata._utils import get_pyramid_levels

        element = get_pyramid_levels(element, n=0)
    return SectionImage(image=element, coords_to_pixels=np.linalg.inv(pixels_to_coords))


def persist(sdata: SpatialData, element_names: str | list[str]) -> None:
    """Write elements of an in-memory SpatialData to its zarr store without ever losing the previous version.

    A new element is simply written. An element that already exists on disk is first written in full under a
    temporary name; only then is the old directory moved aside, the new one moved into place (two renames), and the
    old one deleted. If writing fails at any point, the store still reads back with the old element intact (a new
    element that fails half way is removed). Tables are checked first for names that zarr cannot store (a ``"/"`` in
    a column or ``uns`` key), so such a table is refused before anything is written. Under distributed training
    only the main process writes.

    Parameters
    ----------
    sdata
        A SpatialData backed by a zarr store (``sdata.path`` is set, e.g. after ``sdata.write`` or ``read_zarr``).
    element_names
        Element(s) to write.

    Examples
    --------
    >>> sdata.write("tissue.zarr")  # doctest: +SKIP
    >>> ss.pp.build_graph(sdata, method="knn")  # doctest: +SKIP
    >>> ss.io.persist(sdata, "table")  # doctest: +SKIP
    """
    names = [element_names] if isinstance(element_names, str) else list(element_names)
    if sdata.path is None:
        raise ValueError("This SpatialData is not backed by a zarr store: call `sdata.write(path)` first.")
    from ._devices import is_main_process
    from ._validate import check_storable

    if not is_main_process():  # the extra processes of distributed training write nothing
        return
    for name in names:  # every table checked before anything is written
        if name in sdata.tables:
            check_storable(sdata.tables[name], f"table {name!r}")
    from ._warnings import quiet

    with quiet():  # zarr's autosharding notice, once per array, is nothing a user can act on
        for name in names:
            _persist_one(sdata, name)


def _element_dir(sdata: SpatialData, name: str) -> tuple[str, Path]:
    for element_type, element_name, _ in sdata.gen_elements():
        if element_name == name:
            return element_type, Path(sdata.path) / element_type / name
    raise KeyError(f"Element {name!r} is not in the SpatialData.")


def _persist_one(sdata: SpatialData, name: str) -> None:
    element_type, target = _element_dir(sdata, name)
    if not target.exists():
        try:
            sdata.write_element(name)
        except BaseException:  # a half-written new element would make the store unreadable
            shutil.rmtree(target, ignore_errors=True)
            if sdata.has_consolidated_metadata():  # consolidated from what is on disk, without the element
                sdata.write_consolidated_metadata()
            raise
        return
    tmp_name = f"{name}.tmp-{uuid.uuid4().hex[:8]}"
    element = sdata[name]
    getattr(sdata, element_type)[tmp_name] = element
    try:
        sdata.write_element(tmp_name)
    except BaseException:
        _forget(sdata, element_type, tmp_name)
        shutil.rmtree(target.parent / tmp_name, ignore_errors=True)
        raise
    _forget(sdata, element_type, tmp_name)
    backup = target.parent / f"{name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(backup)
    (target.parent / tmp_name).rename(target)
    shutil.rmtree(backup, ignore_errors=True)
    if sdata.has_consolidated_metadata():
        sdata.write_consolidated_metadata()


def _forget(sdata: SpatialData, element_type: str, name: str) -> None:
    container = getattr(sdata, element_type)
    if name in container:
        del container[name]
