"""Sub-spot geometry: where the sub-spots of a spot lie and which sub-spot a point falls in.

Shared by the synthetic tissue (ground-truth sub-spot profiles) and by super-resolution (soScope-style sub-spots).
All coordinates are in the units of the spot centres (micrometres for the synthetic data); ``x`` is the first
column and ``y`` the second, as in ``obsm["spatial"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import geopandas as gpd
import numpy as np
from scipy.spatial import cKDTree
from shapely import points as shapely_points

__all__ = ["assign_to_subspots", "make_subspot_shapes", "subspot_offsets"]

_LAYOUTS = ("hexagon", "square")
_SPOT_SHAPES = ("circle", "square")


#: Sub-spot layouts: hexagonal (K = 7) or a square grid (K = n x n); the checks use :data:`LAYOUTS`.
Layout = Literal["hexagon", "square"]
LAYOUTS = get_args(Layout)


def _check_geometry(layout: str, spot_radius: float, n_per_side: int) -> None:
    if layout not in _LAYOUTS:
        raise ValueError(f"Unknown sub-spot layout {layout!r}: use one of {_LAYOUTS}.")
    if isinstance(n_per_side, bool) or not isinstance(n_per_side, int | np.integer) or n_per_side < 1:
        raise ValueError(f"`n_per_side` must be an integer >= 1, got {n_per_side!r}.")
    if not np.isfinite(spot_radius) or spot_radius <= 0:
        raise ValueError(f"`spot_radius` must be a finite number > 0, got {spot_radius!r}.")


def _check_xy(arr: Any, name: str) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != 2:
        raise ValueError(f"`{name}` must be an array of shape (n, 2) with x, y columns, got shape {out.shape}.")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"`{name}` contains NaN or infinite coordinates: drop or fix those rows first.")
    return out


def subspot_offsets(layout: Layout, spot_radius: float, n_per_side: int = 2) -> tuple[np.ndarray, float]:
    """Offsets of the sub-spot centres from the spot centre, and the sub-spot radius.

    Parameters
    ----------
    layout
        ``"hexagon"``: 7 sub-spots, one at the centre and six at distance ``2 r / 3`` at angles 0°, 60°, …, 300°
        measured from the +x axis towards +y (counter-clockwise with y up; clockwise on an image, where y points
        down). Sub-spot radius ``r / 3``, so neighbouring sub-spots touch (the soScope / BayesSpace layout).
        ``"square"``: ``n_per_side ** 2`` sub-spots at the centres of an ``n x n`` grid tiling the spot's bounding
        square of side ``2 r``, offsets ``((i + 0.5) / n - 0.5) * 2 r``, ordered row-major over y then x
        (``k = i_y * n + i_x``, x varying fastest). Sub-spot radius ``r / n``.
    spot_radius
        Spot radius ``r`` (> 0), in coordinate units.
    n_per_side
        Grid side for ``"square"`` (ignored for ``"hexagon"``).

    Returns
    -------
    offsets
        Array (K, 2) of (x, y) offsets.
    subspot_radius
        Radius of each sub-spot.

    Examples
    --------
    >>> offsets, r_sub = subspot_offsets("square", spot_radius=1.0, n_per_side=2)
    >>> offsets.tolist(), r_sub
    ([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]], 0.5)
    """
    _check_geometry(layout, spot_radius, n_per_side)
    r = float(spot_radius)
    if layout == "hexagon":
        angles = np.deg2rad(np.arange(6) * 60.0)
        ring = (2.0 * r / 3.0) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        ring[np.abs(ring) < 1e-12 * r] = 0.0  # exact zeros instead of cos(90°) round-off
        offsets = np.vstack([np.zeros((1, 2)), ring])
        return offsets, r / 3.0
    n = int(n_per_side)
    centres = ((np.arange(n) + 0.5) / n - 0.5) * 2.0 * r
    yy, xx = np.meshgrid(centres, centres, indexing="ij")  # row-major over y, then x
    offsets = np.stack([xx.ravel(), yy.ravel()], axis=1)
    return offsets, r / n


def assign_to_subspots(
    points: np.ndarray,
    spot_centers: np.ndarray,
    spot_radius: float,
    layout: Layout,
    n_per_side: int = 2,
    spot_shape: Literal["circle", "square"] = "circle",
) -> tuple[np.ndarray, np.ndarray]:
    """Assign points (e.g. cell centroids) to the spot and the sub-spot that contain them.

    A point lies in a ``"circle"`` spot if its Euclidean distance to the centre is ``<= spot_radius``, in a
    ``"square"`` spot if it lies in the axis-aligned square of side ``2 * spot_radius`` (Chebyshev distance
    ``<= spot_radius``). When spots overlap, the nearest centre wins. Inside a spot, a point goes to the nearest
    sub-spot centre (ties to the lower sub-spot index), so every point of a spot has exactly one sub-spot and
    sub-spot sums add up to the spot sum exactly.

    Parameters
    ----------
    points
        Array (N, 2) of x, y coordinates.
    spot_centers
        Array (S, 2) of spot centres, same units.
    spot_radius
        Spot radius (> 0).
    layout, n_per_side
        Sub-spot layout, see :func:`subspot_offsets`.
    spot_shape
        ``"circle"`` (Visium, ST) or ``"square"`` (binned data).

    Returns
    -------
    spot
        int64 array (N,): index of the containing spot, ``-1`` outside every spot.
    subspot
        int64 array (N,): index of the sub-spot in ``0..K-1``, ``-1`` outside every spot.

    Examples
    --------
    >>> spot, sub = assign_to_subspots([[0.4, 0.3], [5.0, 5.0]], [[0.0, 0.0]], 1.0, "square")
    >>> spot.tolist(), sub.tolist()
    ([0, -1], [3, -1])
    """
    _check_geometry(layout, spot_radius, n_per_side)
    if spot_shape not in _SPOT_SHAPES:
        raise ValueError(f"Unknown `spot_shape` {spot_shape!r}: use one of {_SPOT_SHAPES}.")
    pts = _check_xy(points, "points")
    centres = _check_xy(spot_centers, "spot_centers")
    n = pts.shape[0]
    spot = np.full(n, -1, dtype=np.int64)
    sub = np.full(n, -1, dtype=np.int64)
    if n == 0 or centres.shape[0] == 0:
        return spot, sub
    r = float(spot_radius)
    p = 2.0 if spot_shape == "circle" else np.inf
    # The upper bound only prunes the search; membership is decided by the closed test `dist <= r` below.
    dist, idx = cKDTree(centres).query(pts, k=1, p=p, distance_upper_bound=np.nextafter(r, np.inf) * (1 + 1e-12))
    inside = np.isfinite(dist) & (dist <= r)
    if not inside.any():
        return spot, sub
    offsets, _ = subspot_offsets(layout, r, n_per_side)
    rel = pts[inside] - centres[idx[inside]]
    d2 = ((rel[:, None, :] - offsets[None, :, :]) ** 2).sum(-1)  # (n_inside, K); K <= n_per_side**2, small
    spot[inside] = idx[inside]
    sub[inside] = np.argmin(d2, axis=1)
    return spot, sub


def make_subspot_shapes(
    spot_centers: np.ndarray,
    spot_radius: float,
    layout: Layout,
    n_per_side: int = 2,
    spot_index: Sequence[Any] | None = None,
    transformations: Mapping[str, Any] | None = None,
) -> gpd.GeoDataFrame:
    """Circles for all sub-spots of all spots, as a GeoDataFrame ready for a SpatialData shapes element.

    Rows are ordered spot by spot, sub-spot ``k = 0..K-1`` within each spot (``row = s * K + k``).

    Parameters
    ----------
    spot_centers
        Array (S, 2) of spot centres (x, y).
    spot_radius, layout, n_per_side
        Spot radius and sub-spot layout, see :func:`subspot_offsets`.
    spot_index
        Identifiers of the S parent spots (e.g. the spot shapes' index or the spot table's instance ids); defaults
        to ``0..S-1``.
    transformations
        If given (e.g. ``spatialdata.transformations.get_transformation(spots, get_all=True)``), the result is
        parsed with :class:`spatialdata.models.ShapesModel` under these transformations, so it lands in the same
        coordinate systems as the parent spots.

    Returns
    -------
    GeoDataFrame with Point geometry and columns ``radius``, ``spot`` (parent spot id) and ``subspot``
    (``0..K-1``), indexed by the strings ``f"{spot}_{k}"``.

    Examples
    --------
    >>> gdf = make_subspot_shapes([[0.0, 0.0], [10.0, 0.0]], 3.0, "hexagon")
    >>> len(gdf), gdf.index[8], float(gdf.radius.iloc[0])
    (14, '1_1', 1.0)
    """
    _check_geometry(layout, spot_radius, n_per_side)
    centres = _check_xy(spot_centers, "spot_centers")
    n_spots = centres.shape[0]
    ids = np.arange(n_spots) if spot_index is None else np.asarray(spot_index)
    if ids.shape != (n_spots,):
        raise ValueError(f"`spot_index` has {ids.shape[0] if ids.ndim else 0} entries for {n_spots} spot centres.")
    if len(set(ids.tolist())) != n_spots:
        raise ValueError("`spot_index` contains duplicate ids: pass one unique id per spot.")
    offsets, r_sub = subspot_offsets(layout, spot_radius, n_per_side)
    k = offsets.shape[0]
    xy = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    parent = np.repeat(ids, k)
    subspot = np.tile(np.arange(k, dtype=np.int64), n_spots)
    index = [f"{s}_{j}" for s, j in zip(parent.tolist(), subspot.tolist(), strict=True)]
    gdf = gpd.GeoDataFrame(
        {"radius": np.full(n_spots * k, r_sub), "spot": parent, "subspot": subspot},
        geometry=shapely_points(xy),
        index=index,
    )
    if transformations is not None:
        from spatialdata.models import ShapesModel

        gdf = ShapesModel.parse(gdf, transformations=dict(transformations))
    return gdf
