"""User-facing sub-spot geometry: a shapes element of sub-spots, each linked to its parent spot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from .. import _logging
from .._constants import check_key
from .._validate import check_absent
from ._subspots import make_subspot_shapes, subspot_offsets

__all__ = [
    "SpotGeometry",
    "graph_context_features",
    "nuclei_image",
    "n_subspots_of",
    "pseudo_spots",
    "spot_geometry",
    "subspots",
]

_LAYOUTS = ("hexagon", "square")


@dataclass
class SpotGeometry:
    """Centres (in the shapes element's own coordinates), common radius, ids and transformations of spot shapes."""

    centres: np.ndarray
    radius: float
    index: np.ndarray
    transformations: dict[str, Any]
    kind: str  # "circle" or "polygon"


def n_subspots_of(layout: str, n_per_side: int = 2) -> int:
    """Return K for a layout: 7 for ``"hexagon"``, ``n_per_side ** 2`` for ``"square"``.

    Examples
    --------
    >>> n_subspots_of("hexagon"), n_subspots_of("square", 3)
    (7, 9)
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"Unknown sub-spot layout {layout!r}: use one of {_LAYOUTS}.")
    return 7 if layout == "hexagon" else int(n_per_side) ** 2


def spot_geometry(sdata: Any, shapes_key: str, layout: str = "hexagon") -> SpotGeometry:
    """Read the spots of a shapes element: circles (points with a ``radius``) or polygons.

    Polygon spots get the radius of the equal-area disc (``"hexagon"`` layout) or half the side of the equal-area
    square (``"square"`` layout, so square bins are tiled exactly). Spots of unequal size use the median radius.

    Examples
    --------
    >>> geom = spot_geometry(sdata, "spots_visium")  # doctest: +SKIP
    """
    from spatialdata.transformations import get_transformation

    if shapes_key not in sdata.shapes:
        available = ", ".join(map(repr, sdata.shapes)) or "none"
        raise KeyError(f"shapes_key={shapes_key!r} is not a shapes element; available shapes: {available}.")
    gdf = sdata.shapes[shapes_key]
    if len(gdf) == 0:
        raise ValueError(f"Shapes element {shapes_key!r} is empty.")
    types = set(gdf.geometry.geom_type.unique())
    if types == {"Point"}:
        if "radius" not in gdf.columns:
            raise ValueError(
                f"Shapes element {shapes_key!r} holds points without a 'radius' column: sub-spots need spot "
                "circles (points with a radius) or polygons."
            )
        centres = np.c_[gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()]
        radii = gdf["radius"].to_numpy(dtype=np.float64)
        kind = "circle"
    elif types <= {"Polygon", "MultiPolygon"}:
        cent = gdf.geometry.centroid
        centres = np.c_[cent.x.to_numpy(), cent.y.to_numpy()]
        area = gdf.geometry.area.to_numpy(dtype=np.float64)
        radii = np.sqrt(area / np.pi) if layout == "hexagon" else np.sqrt(area) / 2.0
        kind = "polygon"
    else:
        raise ValueError(
            f"Shapes element {shapes_key!r} holds {sorted(types)} geometries: sub-spots need spot circles "
            "(points with a 'radius' column) or polygons."
        )
    if not np.all(np.isfinite(centres)) or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(f"Shapes element {shapes_key!r} has non-finite centres or non-positive radii.")
    radius = float(np.median(radii))
    if np.max(np.abs(radii - radius)) > 0.01 * radius:
        _logging.warning(f"Spots of {shapes_key!r} differ in size; sub-spots use the median radius {radius:.4g}.")
    transformations = dict(get_transformation(gdf, get_all=True))
    return SpotGeometry(centres.astype(np.float64), radius, gdf.index.to_numpy(), transformations, kind)


def subspots(
    sdata: Any,
    *,
    shapes_key: str,
    layout: Literal["hexagon", "square"] = "hexagon",
    n_per_side: int = 2,
    key_added: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write the sub-spots of a spot shapes element as a new shapes element.

    For each spot, K sub-spot circles: ``"hexagon"`` (Visium) one at the centre and six at ``2 r / 3`` (radius
    ``r / 3``), ``"square"`` an ``n_per_side x n_per_side`` grid tiling the spot's square (radius ``r / n``); see
    :func:`sslspatial.pp._subspots.subspot_offsets`. The new element has the spot element's transformations, rows
    ordered spot by spot (``row = s * K + k``), index ``f"{spot_id}_{k}"`` and columns ``spot`` (the parent spot's
    index in ``shapes_key``) and ``subspot`` (k).

    Parameters
    ----------
    sdata
        SpatialData holding the spots.
    shapes_key
        Spot shapes: circles (points with a ``radius`` column) or polygons (e.g. square bins).
    layout
        ``"hexagon"`` (K = 7) or ``"square"`` (K = ``n_per_side ** 2``).
    n_per_side
        Grid side of the ``"square"`` layout.
    key_added
        Name of the new element (default ``f"{shapes_key}_subspots"``).
    overwrite
        Replace an existing element of that name.

    Returns
    -------
    The name of the new shapes element.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=300, spot_layouts=("st",), image=False)
    >>> ss.pp.subspots(sdata, shapes_key="spots_st", layout="square")
    'spots_st_subspots'
    >>> len(sdata.shapes["spots_st_subspots"]) == 4 * len(sdata.shapes["spots_st"])
    True
    """
    key = check_key(key_added or f"{shapes_key}_subspots", "key_added")
    n_subspots_of(layout, n_per_side)
    check_absent(key in sdata.shapes and not overwrite, f"shapes[{key!r}]")
    geom = spot_geometry(sdata, shapes_key, layout)
    gdf = make_subspot_shapes(geom.centres, geom.radius, layout, n_per_side, geom.index, geom.transformations)
    sdata.shapes[key] = gdf
    return key


def subspot_centres(geom: SpotGeometry, layout: str, n_per_side: int = 2) -> np.ndarray:
    """Sub-spot centres ``(n_spots, K, 2)`` in the shapes element's own coordinates."""
    offsets, _ = subspot_offsets(layout, geom.radius, n_per_side)
    return geom.centres[:, None, :] + offsets[None, :, :]


def pseudo_spots(
    coords: np.ndarray,
    counts: np.ndarray,
    spot_size: float,
    layout: Literal["hexagon", "square"] = "square",
    n_per_side: int = 2,
) -> dict[str, np.ndarray]:
    """Bin single cells (or transcripts) into pseudo-spots with known sub-spot profiles, for benchmarks.

    ``"square"``: contiguous square bins of side ``spot_size`` (radius ``spot_size / 2``) on a grid anchored at the
    minimum coordinates, each split ``n_per_side x n_per_side``. ``"hexagon"``: circles of diameter ``spot_size`` on
    a hexagonal lattice of pitch ``spot_size * sqrt(3) / 2`` (so every point is covered; it goes to the nearest centre),
    with the 7 hexagonal sub-spots. Sub-spot profiles are the sums of the points each contains (nearest sub-spot
    centre), so they add up to the spot exactly. Empty spots are dropped.

    Returns
    -------
    dict with ``centres`` (S, 2), ``radius`` (float, as 0-d array), ``spots`` (S, G) and ``subspots`` (S * K, G)
    counts, ``n_points`` (S * K,) points per sub-spot.

    Examples
    --------
    >>> out = pseudo_spots(np.array([[0.2, 0.2], [0.9, 0.9]]), np.eye(2), 1.0)
    >>> out["spots"].tolist(), out["subspots"].tolist()
    ([[1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    """
    from ._subspots import assign_to_subspots

    pts = np.asarray(coords, dtype=np.float64)
    x = np.asarray(counts, dtype=np.float64)
    k = n_subspots_of(layout, n_per_side)
    r = spot_size / 2.0
    lo = pts.min(0)
    rel = pts - lo  # the grid is anchored at 0 in these coordinates, so a point on the first edge is exactly r away
    hi = rel.max(0)
    if layout == "square":
        gx = r + spot_size * np.arange(int(np.ceil(hi[0] / spot_size)) + 1)
        gy = r + spot_size * np.arange(int(np.ceil(hi[1] / spot_size)) + 1)
        shape = "square"
    else:
        pitch = spot_size * np.sqrt(3) / 2
        gx = pitch * np.arange(int(np.ceil(hi[0] / pitch)) + 2)
        gy = pitch * np.sqrt(3) / 2 * np.arange(int(np.ceil(hi[1] / (pitch * np.sqrt(3) / 2))) + 2)
        shape = "circle"
    xx, yy = np.meshgrid(gx, gy)
    if layout == "hexagon":
        xx = xx + (np.arange(len(gy))[:, None] % 2) * pitch / 2
    grid = np.c_[xx.ravel(), yy.ravel()]
    spot, sub = assign_to_subspots(rel, grid, r, layout, n_per_side, spot_shape=shape)
    centres = grid + lo
    if (spot < 0).any():
        raise RuntimeError("Some points fell outside every pseudo-spot; this is a bug.")
    used, new_spot = np.unique(spot, return_inverse=True)
    flat = new_spot * k + sub
    subspots = np.zeros((len(used) * k, x.shape[1]))
    np.add.at(subspots, flat, x)
    n_points = np.bincount(flat, minlength=len(used) * k)
    spots = subspots.reshape(len(used), k, -1).sum(1)
    return {
        "centres": centres[used],
        "radius": np.asarray(r),
        "spots": spots,
        "subspots": subspots,
        "n_points": n_points,
    }


def nuclei_image(
    coords: np.ndarray,
    um_per_px: float = 1.0,
    sigma: float = 3.0,
    margin: float = 60.0,
    coordinate_system: str = "global",
) -> Any:
    """Render cell centroids as a stand-in nuclear stain: one Gaussian blob per cell, blue-purple on white, RGB uint8.

    For benchmarks and tests on single-cell data binned into pseudo-spots (:func:`pseudo_spots`): a DAPI or
    haematoxylin image tells where the cells are, nothing of what they express, and this image holds exactly that.

    Parameters
    ----------
    coords
        ``(n, 2)`` cell centroids (x, y), e.g. in µm.
    um_per_px
        Pixel size in coordinate units.
    sigma
        Blob standard deviation in coordinate units (about a nucleus radius).
    margin
        Border around the cells, in coordinate units.
    coordinate_system
        Name of the coordinate system the image maps to (an affine from pixels to ``coords``).

    Returns
    -------
    A ``spatialdata`` image element ``(3, y, x)``.

    Examples
    --------
    >>> img = nuclei_image(np.array([[10.0, 10.0], [30.0, 12.0]]), margin=10.0)
    >>> img.shape, img.values[:, 10, 10].tolist(), int(img.values.max())  # (c, y, x); a cell at (10, 10) µm
    ((3, 22, 40), [115, 77, 191], 255)
    """
    from scipy.ndimage import gaussian_filter
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine

    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0 or not np.isfinite(xy).all():
        raise ValueError(f"coords must be a non-empty (n, 2) array of finite cell centroids, got shape {xy.shape}.")
    if um_per_px <= 0 or sigma <= 0 or margin < 0:
        raise ValueError(f"um_per_px ({um_per_px}) and sigma ({sigma}) must be positive and margin ({margin}) >= 0.")
    lo = xy.min(0) - margin
    size = np.ceil((xy.max(0) + margin - lo) / um_per_px).astype(int)
    density = np.zeros((size[1], size[0]))
    col, row = ((xy - lo) / um_per_px).astype(int).T
    np.add.at(density, (row, col), 1.0)
    s = sigma / um_per_px
    stain = np.clip(gaussian_filter(density, s) * 2 * np.pi * s**2, 0, 1)  # 1 at the centre of an isolated cell
    absorbed = np.array([0.55, 0.7, 0.25])  # red and green absorbed, blue passes: purple-blue nuclei
    rgb = np.round(255 * (1 - absorbed[:, None, None] * stain[None])).astype(np.uint8)
    affine = Affine(np.array([[um_per_px, 0, lo[0]], [0, um_per_px, lo[1]], [0, 0, 1.0]]), input_axes=("x", "y"),
                    output_axes=("x", "y"))  # fmt: skip
    return Image2DModel.parse(rgb, dims=("c", "y", "x"), transformations={coordinate_system: affine})


def graph_context_features(
    adjacency: sp.spmatrix,
    centres: np.ndarray,
    subspot_centres: np.ndarray,
    representation: np.ndarray,
    bandwidth: float | None = None,
) -> np.ndarray:
    """Directional graph context of each sub-spot: a Gaussian-kernel average of its spot's neighbours.

    For sub-spot ``k`` of spot ``n`` at position ``p_nk``, ``c_nk = sum_m w_nkm e_m / sum_m w_nkm`` over the graph
    neighbours ``m`` of ``n`` (the spot itself excluded), with ``w_nkm = exp(-|p_nk - centre_m|^2 / (2 h^2))``. Returns
    ``[c_nk, c_nk - mean_k c_nk]`` flattened to ``(n_spots, K * 2 * d)``: which neighbours lie on the sub-spot's side.

    Parameters
    ----------
    adjacency
        Spot graph ``(n, n)``.
    centres
        Spot centres ``(n, 2)``.
    subspot_centres
        Sub-spot centres ``(n, K, 2)``, same units.
    representation
        Spot representation ``(n, d)`` (e.g. principal components of log-normalised profiles).
    bandwidth
        Kernel width ``h``; default half the median edge length.

    Examples
    --------
    >>> adj = sp.csr_matrix(np.array([[0, 1], [1, 0]]))
    >>> c = graph_context_features(adj, np.array([[0.0, 0], [1, 0]]), np.zeros((2, 1, 2)), np.array([[1.0], [3.0]]))
    >>> c.tolist()
    [[3.0, 0.0], [1.0, 0.0]]
    """
    adj = sp.csr_matrix(adjacency, dtype=np.float64)
    adj.setdiag(0)
    adj.eliminate_zeros()
    coo = adj.tocoo()
    rows, cols = coo.row, coo.col
    if bandwidth is None:
        edge = np.linalg.norm(centres[rows] - centres[cols], axis=1)
        bandwidth = 0.5 * float(np.median(edge)) if edge.size else 1.0
    n, k, _ = subspot_centres.shape
    d = representation.shape[1]
    num = np.zeros((n, k, d))
    den = np.zeros((n, k))
    for j in range(k):
        dist2 = ((subspot_centres[rows, j] - centres[cols]) ** 2).sum(-1)
        w = np.exp(-dist2 / (2 * bandwidth**2))
        np.add.at(den[:, j], rows, w)
        np.add.at(num[:, j], rows, w[:, None] * representation[cols])
    ctx = num / np.maximum(den, 1e-300)[..., None]
    ctx[den == 0] = 0.0
    return np.concatenate([ctx, ctx - ctx.mean(1, keepdims=True)], axis=-1).reshape(n, -1).astype(np.float32)
