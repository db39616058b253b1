"""``ss.pp.build_graph``: per-section spatial neighbour graphs, delegated to squidpy's mode-specific builders."""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _logging as logg
from .._constants import Key, check_key
from .._types import DataLike
from .._validate import ArgumentError, check_absent, check_choice, check_numbers, storable_key
from .._warnings import quiet_call
from ..io import _access as _io

GraphMethod = Literal["radius", "knn", "delaunay", "grid"]
GRAPH_METHODS = get_args(GraphMethod)
#: ``build_graph`` warns, with a suggested radius, when more than this share of the cells has no neighbour.
MAX_ISOLATED_SHARE = 0.05
#: The suggested radius is the median distance to this many nearest neighbours (a mean degree of about 6).
_HINT_NEIGHBOURS = 6
_MAX_PLAUSIBLE_DEGREE = 50


@quiet_call
def build_graph(
    data: DataLike,
    *,
    method: GraphMethod = "radius",
    radius: float | tuple[float, float] | None = None,
    n_neighs: int = 6,
    n_rings: int = 1,
    library_key: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    spatial_key: str = Key.SPATIAL,
    coordinate_system: str | None = None,
    key_added: str = Key.SPATIAL,
    overwrite: bool = False,
    copy: bool = False,
) -> tuple[sp.csr_matrix, sp.csr_matrix] | None:
    """Build a symmetric spatial neighbour graph, section by section.

    The graph is built by squidpy's mode-specific builders (:func:`squidpy.gr.spatial_neighbors_radius`,
    ``_knn``, ``_delaunay``, ``_grid``) separately for each section, so no edge ever joins two sections, then made
    symmetric (an edge in either direction becomes an edge in both), which message passing needs. Results use
    squidpy's keys, so ``sq.gr.nhood_enrichment`` and ``sq.pl.spatial_scatter`` work on them.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used (written in place).
    method
        ``"radius"``: all pairs closer than ``radius``; ``"knn"``: the ``n_neighs`` nearest neighbours;
        ``"delaunay"``: Delaunay triangulation (optionally pruned to edges shorter than ``radius``);
        ``"grid"``: Visium (``n_neighs=6``) or ST / square (``n_neighs=4``) array neighbours, ``n_rings`` rings.
    radius
        In the units of the coordinates (micrometres for most single-cell data here; pixels for images). Required
        for ``"radius"``; a ``(min, max)`` pair keeps only edges with lengths in that interval.
    n_neighs
        Neighbours for ``"knn"``; 6 (hexagonal) or 4 (square) for ``"grid"``.
    n_rings
        Rings of grid neighbours for ``"grid"``.
    library_key
        Column of ``obs`` naming the section of each observation. For a SpatialData table annotating several
        regions, the region column is used when this is ``None``.
    table_key
        Table of a SpatialData.
    spatial_key
        ``obsm`` key of the coordinates; for SpatialData they are derived from the annotated element if missing.
    coordinate_system
        Coordinate system for derived coordinates (SpatialData only).
    key_added
        Results go to ``obsp[f"{key_added}_connectivities"]``, ``obsp[f"{key_added}_distances"]`` and
        ``uns[f"{key_added}_neighbors"]`` (with the parameters and degree statistics).
    overwrite
        Replace a graph already stored under ``key_added`` (else :class:`~sslspatial.OutputExistsError`, raised
        before any work). Not needed with ``copy=True``, which writes nothing.
    copy
        Return ``(connectivities, distances)`` instead of writing them.

    Returns
    -------
    ``None``, or the CSR ``(connectivities, distances)`` when ``copy=True``.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000)
    >>> ss.pp.build_graph(sdata, method="radius", radius=30.0)
    >>> sdata.tables["table"].obsp["spatial_connectivities"].shape
    (1000, 1000)
    """
    check_choice(method, GRAPH_METHODS, "method")
    check_key(key_added, "key_added")
    check_numbers({"radius": radius, "n_neighs": n_neighs, "n_rings": n_rings})
    table = _io.get_table(data, table_key)
    conn_key, dist_key, uns_key = Key.graph(key_added)
    if not copy and not overwrite:
        check_absent(conn_key in table.obsp, f"obsp[{conn_key!r}]")
    coords = _io.get_coordinates(data, table_key, spatial_key, coordinate_system)
    sections_key = _io.section_key(table, library_key)
    section_codes = None if sections_key is None else table.obs[sections_key].astype(str).to_numpy()
    if method == "radius" and radius is None:
        hint = radius_hint(coords, section_codes, coordinate_unit(data, table))
        raise ArgumentError("radius", None, "a distance in the units of the coordinates", hint["radius"], hint["text"])
    if method == "knn":
        _check_knn_sections(section_codes, table.n_obs, int(n_neighs))

    connectivities, distances = _squidpy_graph(table, coords, sections_key, method, radius, n_neighs, n_rings)
    connectivities, distances = _symmetrise(connectivities), _symmetrise(distances)
    sections = _io.get_sections(table, library_key=sections_key)
    stats = degree_statistics(connectivities, sections)
    if stats["n_isolated"] > MAX_ISOLATED_SHARE * table.n_obs and method in ("radius", "delaunay"):
        hint = radius_hint(coords, section_codes, coordinate_unit(data, table))
        warnings.warn(
            f"{stats['n_isolated']} of {table.n_obs} cells ({stats['n_isolated'] / table.n_obs:.0%}) have no "
            f"neighbour within radius={_format_radius(radius)} (mean degree {stats['mean_degree']:.2f}). {hint['text']}",
            UserWarning,
            stacklevel=3,
        )
    else:
        _warn_on_degree(stats, method, radius)
    if copy:
        return connectivities, distances

    table.obsp[conn_key] = connectivities
    table.obsp[dist_key] = distances
    params = {"method": method, "n_neighs": int(n_neighs), "n_rings": int(n_rings), "library_key": sections_key}
    if radius is not None:
        params["radius"] = np.atleast_1d(np.asarray(radius, dtype=float))
    table.uns[uns_key] = {
        "connectivities_key": conn_key,
        "distances_key": dist_key,
        "params": params,
        "degree": stats,
    }
    logg.info(
        f"Built a {method} graph over {len(sections.categories)} section(s): mean degree {stats['mean_degree']:.2f}, "
        f"{stats['n_isolated']} isolated observations -> obsp[{conn_key!r}]."
    )
    return None


def _squidpy_graph(table, coords, sections_key, method, radius, n_neighs, n_rings):
    """Call the squidpy builder on a light-weight AnnData holding only what it needs (the user's object is untouched)."""
    import anndata as ad
    import squidpy as sq

    obs = pd.DataFrame(index=pd.RangeIndex(table.n_obs).astype(str))
    if sections_key is not None:
        obs["section"] = pd.Categorical(table.obs[sections_key].astype(str).to_numpy())
    shell = ad.AnnData(obs=obs, obsm={"spatial": coords})
    library_key = "section" if sections_key is not None else None
    common = {"spatial_key": "spatial", "library_key": library_key, "copy": True}
    from .._warnings import quiet

    with quiet(), warnings.catch_warnings():  # squidpy's INFO "Creating graph using ..." is nothing to act on
        warnings.simplefilter("ignore", category=FutureWarning)
        if method == "radius":
            result = sq.gr.spatial_neighbors_radius(shell, radius=radius, **common)
        elif method == "knn":
            result = sq.gr.spatial_neighbors_knn(shell, n_neighs=int(n_neighs), **common)
        elif method == "delaunay":
            result = sq.gr.spatial_neighbors_delaunay(shell, radius=radius, **common)
        else:
            result = sq.gr.spatial_neighbors_grid(shell, n_neighs=int(n_neighs), n_rings=int(n_rings), **common)
    return sp.csr_matrix(result.connectivities), sp.csr_matrix(result.distances)


def _symmetrise(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.maximum(matrix.T).tocsr()
    out.setdiag(0)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def degree_statistics(connectivities: sp.spmatrix, sections: pd.Categorical) -> dict:
    """Return mean / median / max degree, isolated observations and the mean degree per section.

    Examples
    --------
    >>> import scipy.sparse as sp, pandas as pd
    >>> stats = degree_statistics(sp.csr_matrix([[0, 1], [1, 0]]), pd.Categorical(["a", "a"]))
    >>> stats["mean_degree"], stats["n_isolated"]
    (1.0, 0)
    """
    degree = np.diff(sp.csr_matrix(connectivities).indptr)
    per_section = pd.Series(degree).groupby(np.asarray(sections), observed=True).mean()
    return {
        "mean_degree": float(degree.mean()),
        "median_degree": float(np.median(degree)),
        "max_degree": int(degree.max()) if degree.size else 0,
        "n_isolated": int((degree == 0).sum()),
        "mean_degree_per_section": {storable_key(k): float(v) for k, v in per_section.items()},
    }


def _warn_on_degree(stats: dict, method: str, radius) -> None:
    hint = " Check that `radius` is in the units of the coordinates." if method in ("radius", "delaunay") else ""
    if stats["mean_degree"] == 0:
        warnings.warn(f"The {method} graph has no edges (mean degree 0).{hint}", UserWarning, stacklevel=3)
    elif stats["mean_degree"] > _MAX_PLAUSIBLE_DEGREE:
        warnings.warn(
            f"The {method} graph has an implausibly large mean degree ({stats['mean_degree']:.0f}).{hint}",
            UserWarning,
            stacklevel=3,
        )
    if 0 < stats["n_isolated"]:
        logg.warning(f"{stats['n_isolated']} observations have no neighbour in the {method} graph.")


def _format_radius(radius) -> str:
    values = np.atleast_1d(np.asarray(radius, dtype=float))
    return ", ".join(f"{v:g}" for v in values)


def coordinate_unit(data, table) -> str:
    """The coordinates' unit for messages (``"pixels"``, ``"µm"``; ``"coordinate units"`` when nothing says)."""
    from ..io._units import coordinate_unit as unit_of

    return unit_of(data, table)


def radius_hint(coords: np.ndarray, sections: np.ndarray | None, unit: str) -> dict:
    """A radius for about six neighbours per cell, from the nearest-neighbour distances within each section.

    Returns ``{"radius": float, "text": str}``; the text gives the median nearest-neighbour distance, the suggested
    radius and the unit.

    Examples
    --------
    >>> xy = np.c_[np.arange(10.0) * 2, np.zeros(10)]
    >>> radius_hint(xy, None, "µm")["radius"]
    8.4
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(coords, dtype=float)[:, :2]
    groups = [np.arange(len(xy))] if sections is None else [np.flatnonzero(sections == s) for s in np.unique(sections)]
    nearest, kth = [], []
    for idx in groups:
        if idx.size < 2:
            continue
        k = min(_HINT_NEIGHBOURS, idx.size - 1)
        dist, _ = cKDTree(xy[idx]).query(xy[idx], k=k + 1)
        nearest.append(dist[:, 1])
        kth.append(dist[:, k])
    if not nearest:
        return {"radius": None, "text": "No section has two cells, so no radius can connect them."}
    median_nn = float(np.median(np.concatenate(nearest)))
    suggested = 1.05 * float(np.median(np.concatenate(kth)))  # a little above, so ties at that distance count
    scale = 10.0 ** (np.floor(np.log10(suggested)) - 1) if suggested > 0 else 1.0
    suggested = float(np.ceil(suggested / scale) * scale)  # two significant digits, rounded up
    text = (
        f"The coordinates are in {unit}; the median nearest-neighbour distance is {median_nn:.3g} {unit}, and "
        f"radius={suggested:g} gives about {_HINT_NEIGHBOURS} neighbours per cell."
    )
    return {"radius": suggested, "text": text}


def _check_knn_sections(sections: np.ndarray | None, n_obs: int, n_neighs: int) -> None:
    """Refuse a kNN graph over a section with too few cells, naming the section and the fix."""
    names, counts = (
        (np.array(["all"]), np.array([n_obs])) if sections is None else np.unique(sections, return_counts=True)
    )
    smallest = int(counts.argmin())
    if counts[smallest] < 2:
        where = "The table has" if sections is None else f"Section {names[smallest]!r} has"
        raise ValueError(
            f"{where} {counts[smallest]} cell: a kNN graph needs at least 2 cells per section. Drop that section "
            "(e.g. `adata = adata[adata.obs[library_key] != name].copy()`) or pass another library_key."
        )
    if counts[smallest] <= n_neighs:
        where = "the table" if sections is None else f"section {names[smallest]!r}"
        raise ArgumentError(
            "n_neighs",
            n_neighs,
            f"smaller than the number of cells of every section ({where} has {counts[smallest]})",
            int(counts[smallest]) - 1,
        )
