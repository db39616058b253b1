"""Embeddings (UMAP / PCA / raw 2-D) coloured by cell type, domain or a gene, optionally beside spatial maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._docs import inject_docs
from .._types import DataLike
from .._validate import check_choice
from ..io._access import get_coordinates
from ._common import (
    PathLike,
    as_list,
    as_table,
    category_colours,
    check_save,
    finish,
    new_figure,
    obs_values,
    robust_limits,
    spatial_panel,
)
from ._spatial import coordinate_unit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_AXIS_NAMES = {"umap": "UMAP", "pca": "PC"}


def embedding_coordinates(
    x: np.ndarray,
    method: str = "umap",
    n_neighbors: int = 15,
    random_state: int = 0,
    neighbors_kwargs: dict[str, Any] | None = None,
) -> np.ndarray:
    """Return 2-D coordinates of an embedding: UMAP (scanpy, on a private AnnData), PCA, or its first two columns.

    Examples
    --------
    >>> import numpy as np
    >>> embedding_coordinates(np.arange(12.0).reshape(4, 3), method="none")[:, 1]
    array([ 1.,  4.,  7., 10.])
    """
    check_choice(method, ["umap", "pca", "none"], "method")
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"The embedding must have at least 2 dimensions, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("The embedding holds NaN or infinite values; recompute it or drop those observations.")
    if method == "none":
        return x[:, :2].copy()
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=random_state).fit_transform(x)
    import scanpy as sc

    if len(x) < 4:
        raise ValueError(f"UMAP needs at least 4 observations, got {len(x)}; use method='pca' or 'none'.")
    private = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(x))]), obsm={"rep": x.astype(np.float32)})
    kwargs = {"n_neighbors": min(n_neighbors, len(x) - 1), "random_state": random_state, **(neighbors_kwargs or {})}
    sc.pp.neighbors(private, use_rep="rep", **kwargs)
    sc.tl.umap(private, random_state=random_state)
    return np.asarray(private.obsm["X_umap"], dtype=np.float64)


def _is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)


def _draw(
    ax: Axes, xy: np.ndarray, values: pd.Series | None, key: str | None, table: AnnData, *, spatial: bool, **kw: Any
) -> None:
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    common = {
        "point_size": kw["point_size"],
        "invert_y": kw["invert_y"] if spatial else False,
        "unit": kw["unit"] if spatial else None,
    }
    if values is None:
        spatial_panel(ax, xy, colors=["#4C72B0"] * len(xy), **common)
    elif _is_categorical(values):
        cats = values.astype("category")
        categories = list(cats.cat.categories)
        colours = category_colours(table, str(key), categories)
        codes = cats.cat.codes.to_numpy()
        rgba = np.array([colours[c] if c >= 0 else "lightgrey" for c in codes], dtype=object)
        spatial_panel(ax, xy, colors=list(rgba), **common)
        if kw["legend"]:
            handles = [
                Line2D([], [], marker="o", linestyle="", color=colours[i], label=str(c))
                for i, c in enumerate(categories)
            ]
            ax.legend(
                handles=handles,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
                fontsize="small",
                ncols=1 if len(categories) <= 14 else 2,
            )
    else:
        numbers = values.to_numpy(dtype=np.float64)
        norm = Normalize(*robust_limits([numbers], kw["percentile"]), clip=True)
        artist = spatial_panel(ax, xy, numbers, cmap=kw["cmap"], norm=norm, **common)
        ax.figure.colorbar(artist, ax=ax, shrink=0.8, label=str(key))
    if not spatial:
        ax.set_aspect("auto")


@inject_docs
def embedding(
    data: DataLike,
    basis: str = "X_pretrain_mask",
    color: str | Sequence[str] | None = None,
    *,
    method: str = "umap",
    table_key: str = "table",
    spatial: bool = False,
    spatial_key: str = "spatial",
    n_neighbors: int = 15,
    random_state: int = 0,
    neighbors_kwargs: dict[str, Any] | None = None,
    point_size: float | None = None,
    cmap: str = "viridis",
    percentile: float = 99.0,
    legend: bool = True,
    invert_y: bool = True,
    unit: str | None = None,
    ax: Axes | None = None,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure | Axes:
    """Plot an embedding in 2-D coloured by obs columns or genes, optionally with the same colours in space.

    Parameters
    ----------
    data
        AnnData or SpatialData (table ``table_key``) with the embedding in ``obsm[basis]``. Never modified: UMAP is
        computed on a private AnnData holding only the embedding.
    basis
        obsm key of the embedding, e.g. ``"X_pretrain_mask"``.
    color
        obs column(s) (categorical: legend with scanpy's ``uns[f"{key}_colors"]`` when present; numeric: colour
        bar) or gene name(s); one column of panels each.
    method
        ``"umap"`` (scanpy neighbours + UMAP), ``"pca"`` (first two principal components) or ``"none"`` (the first
        two dimensions of the basis as they are, e.g. for ``basis="X_umap"``).
    table_key
        Table of a SpatialData.
    spatial
        Add a second row with the observations at their coordinates (``obsm[spatial_key]``), same colours.
    spatial_key
        Key of the coordinates in ``obsm``.
    n_neighbors, random_state
        UMAP neighbours and seed (also the PCA seed).
    neighbors_kwargs
        Extra arguments of :func:`scanpy.pp.neighbors` for UMAP, e.g. ``{"method": "gauss"}`` (skips the ~15 s
        numba compilation of UMAP's connectivities on the first call of a session).
    point_size, cmap, percentile, legend, invert_y
        Marker area (points^2, default automatic), colour map and its upper percentile for numeric colours,
        legend for categories, and image-style y axis on spatial panels.
    unit
        Axis unit of the spatial panels (labelled ``"x (<unit>)"``); default from the table's ``uns`` (see
        :func:`~sslspatial.pl.expression_maps`), else ``"coordinate units"``.
    ax
        Draw into this axes (only for a single panel: one colour and ``spatial=False``).
    %(save_show)s

    Returns
    -------
    The figure, or ``ax`` when given. Panels are titled by their colour key (spatial ones ``"<key> · spatial"``).

    Examples
    --------
    >>> import numpy as np, anndata, pandas as pd
    >>> import sslspatial as ss
    >>> rng = np.random.default_rng(0)
    >>> adata = anndata.AnnData(np.ones((60, 2)), obs=pd.DataFrame({"cell_type": rng.choice(["a", "b"], 60)}))
    >>> adata.obsm["X_pretrain_mask"] = rng.normal(size=(60, 8))
    >>> adata.obsm["spatial"] = rng.uniform(size=(60, 2))
    >>> fig = ss.pl.embedding(adata, color="cell_type", method="pca", spatial=True)
    >>> [a.get_title() for a in fig.axes]
    ['cell_type', 'cell_type · spatial']
    """
    check_save(save)
    check_choice(method, ["umap", "pca", "none"], "method")
    table = as_table(data, table_key)
    if basis not in table.obsm:
        keys = ", ".join(map(repr, table.obsm)) or "none"
        raise KeyError(
            f"basis={basis!r} is not in obsm (keys: {keys}). Compute it first, e.g. `ss.tl.pretrain_mask(...)` "
            "writes obsm['X_pretrain_mask']."
        )
    keys = as_list(color) or [None]
    colours = {k: (obs_values(table, k, "color") if k is not None else None) for k in keys}
    coords = get_coordinates(data, table_key, spatial_key) if spatial else None
    n_panels = len(keys) * (2 if spatial else 1)
    if ax is not None and n_panels > 1:
        raise ValueError(f"ax= takes a single panel, but this plot has {n_panels}; drop ax= or use one color.")
    basis_values = table.obsm[basis]
    basis_values = basis_values.to_numpy() if isinstance(basis_values, pd.DataFrame) else basis_values
    xy = embedding_coordinates(basis_values, method, n_neighbors, random_state, neighbors_kwargs)

    if ax is None:
        fig, axes = new_figure(2 if spatial else 1, len(keys), panel=(4.6, 3.8))
    else:
        fig, axes = ax.figure, np.array([[ax]])
    style = {"point_size": point_size, "cmap": cmap, "percentile": percentile, "legend": legend, "invert_y": invert_y}
    style["unit"] = coordinate_unit(data, table, unit)
    prefix = _AXIS_NAMES.get(method, f"{basis}[")
    for col, key in enumerate(keys):
        target = axes[0, col]
        _draw(target, xy, colours[key], key, table, spatial=False, **style)
        target.set_title(key if key is not None else basis, fontsize="medium")
        suffix = "]" if method == "none" else ""
        target.set_xlabel(f"{prefix}{0 if method == 'none' else 1}{suffix}")
        target.set_ylabel(f"{prefix}{1 if method == 'none' else 2}{suffix}")
        if spatial:
            below = axes[1, col]
            _draw(below, coords, colours[key], key, table, spatial=True, **style)
            below.set_title(f"{key if key is not None else 'observations'} · spatial", fontsize="medium")
    return finish(fig, ax, save, show)
