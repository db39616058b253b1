"""Shared plumbing of the ``ss.pl`` plots: figures, saving, values from tables, spatial panels, colours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..io._access import get_table, is_spatialdata

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

PathLike = str | Path
DPI = 150


def pyplot():
    """Import pyplot lazily (keeps ``import sslspatial`` light and leaves the backend choice to the user)."""
    import matplotlib.pyplot as plt

    return plt


def new_figure(nrows: int, ncols: int, panel: tuple[float, float] = (4.0, 3.6), **kwargs: Any) -> tuple[Figure, Any]:
    """Return a figure and a 2-D array of axes with ``nrows x ncols`` panels of size ``panel`` inches."""
    plt = pyplot()
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False, layout="constrained", **kwargs
    )
    return fig, axes


def check_save(save: PathLike | None) -> Path | None:
    """Return ``save`` as a Path after checking its folder exists (before any drawing)."""
    if save is None:
        return None
    path = Path(save)
    if path.suffix == "":
        path = path.with_suffix(".png")
    if not path.parent.exists():
        raise FileNotFoundError(f"save={str(save)!r}: the folder {str(path.parent)!r} does not exist; create it first.")
    return path


def finish(fig: Figure, ax: Axes | None, save: PathLike | None, show: bool = False) -> Figure | Axes:
    """Save (PNG at 150 dpi) and/or show the figure; return ``ax`` when the caller passed one, else the figure."""
    path = check_save(save)
    if path is not None:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    if show:
        pyplot().show()
    return ax if ax is not None else fig


def as_table(data: Any, table_key: str) -> AnnData:
    """Return the AnnData of ``data`` (an AnnData, or the table ``table_key`` of a SpatialData)."""
    if not isinstance(data, AnnData) and not is_spatialdata(data):
        raise TypeError(f"Expected an AnnData or a SpatialData, got {type(data).__name__}.")
    return get_table(data, table_key)


def as_list(x: str | Sequence[str] | None) -> list[str]:
    """Return ``x`` as a list of strings (a single string becomes a one-element list)."""
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def dense_column(matrix: Any, j: int) -> np.ndarray:
    """Return column ``j`` of a dense / sparse / lazy matrix as a float64 vector."""
    col = matrix[:, j]
    if sp.issparse(col):
        col = col.toarray()
    return np.asarray(col, dtype=np.float64).ravel()


def gene_values(table: AnnData, gene: str, layer: str | None = None, what: str = "table") -> np.ndarray:
    """Return the values of ``gene`` (a var name) in ``X`` or ``layers[layer]`` of ``table``."""
    if gene not in table.var_names:
        close = [g for g in table.var_names[:2000] if g.lower() == str(gene).lower()]
        hint = f" Did you mean {close[0]!r}?" if close else f" First genes: {', '.join(map(str, table.var_names[:8]))}."
        raise KeyError(f"Gene {gene!r} is not in the var_names of the {what}.{hint}")
    if layer is not None and layer not in table.layers:
        raise KeyError(f"layer={layer!r} is not a layer of the {what}; layers: {', '.join(table.layers) or 'none'}.")
    matrix = table.X if layer is None else table.layers[layer]
    if matrix is None:
        raise ValueError(f"The {what} has no X; pass layer= to plot one of its layers.")
    return dense_column(matrix, int(table.var_names.get_loc(gene)))


def obs_values(table: AnnData, key: str, what: str = "key") -> pd.Series:
    """Return ``obs[key]`` or, failing that, the values of gene ``key``, as a Series indexed like ``obs``."""
    if key in table.obs:
        return table.obs[key]
    if key in table.var_names:
        return pd.Series(gene_values(table, key), index=table.obs_names, name=key)
    from .._constants import user_columns

    cols = ", ".join(map(repr, user_columns(table.obs)[:20])) or "none"
    raise KeyError(f"{what}={key!r} is neither an obs column nor a gene of the table (obs columns: {cols}).")


def labels_from(y: Any, name: str, table: AnnData | None = None) -> np.ndarray:
    """Return labels as an object array: an obs key of ``table``, or array-like values."""
    if isinstance(y, str):
        if table is None:
            raise TypeError(f"{name}={y!r} is a key; pass the AnnData / SpatialData as the first argument.")
        if y not in table.obs:
            from .._constants import user_columns

            cols = ", ".join(map(repr, user_columns(table.obs)[:20])) or "none"
            raise KeyError(f"{name}={y!r} is not a column of obs (columns: {cols}).")
        y = table.obs[y]
    values = np.asarray(pd.Series(y).astype(object).to_numpy(), dtype=object)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}.")
    return values


def palette(n: int) -> list[Any]:
    """Return ``n`` distinct colours (tab10 / tab20, then a sampled continuous map)."""
    plt = pyplot()
    if n <= 10:
        return list(plt.get_cmap("tab10").colors[:n])
    if n <= 20:
        return list(plt.get_cmap("tab20").colors[:n])
    return list(plt.get_cmap("gist_ncar")(np.linspace(0.02, 0.95, n)))


def category_colours(table: AnnData | None, key: str, categories: Sequence[Any]) -> list[Any]:
    """Return the colours of ``categories``: scanpy's ``uns[f"{key}_colors"]`` when it fits, else a palette."""
    if table is not None:
        stored = table.uns.get(f"{key}_colors")
        if stored is not None and len(stored) == len(categories):
            return list(stored)
    return palette(len(categories))


def robust_limits(values: Sequence[np.ndarray], percentile: float = 100.0) -> tuple[float, float]:
    """Return ``(vmin, vmax)`` over several arrays, ``vmax`` at ``percentile`` of the finite values."""
    finite = [np.asarray(v, dtype=np.float64) for v in values]
    finite = np.concatenate([v[np.isfinite(v)] for v in finite]) if finite else np.empty(0)
    if finite.size == 0:
        return 0.0, 1.0
    vmin = float(finite.min())
    vmax = float(np.percentile(finite, percentile)) if percentile < 100 else float(finite.max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    return vmin, vmax


def median_nn_distance(coords: np.ndarray) -> float:
    """Return the median distance from each point to its nearest other point (1.0 for fewer than two points)."""
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    if len(coords) < 2:
        return 1.0
    dist, _ = cKDTree(coords).query(coords, k=2)
    d = dist[:, 1][dist[:, 1] > 0]
    return float(np.median(d)) if d.size else 1.0


def auto_marker_size(n: int, ax: Axes) -> float:
    """Return a scatter marker area (points^2) so ``n`` points roughly tile an axes."""
    bbox = ax.get_window_extent().transformed(ax.figure.dpi_scale_trans.inverted())
    area_pt2 = bbox.width * bbox.height * 72.0**2
    return float(np.clip(0.6 * area_pt2 / max(n, 1), 0.5, 60.0))


def _with_grey_nan(cmap: Any) -> Any:
    """Return a copy of ``cmap`` (name or Colormap) drawing NaN light grey."""
    import matplotlib as mpl

    base = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    return base.with_extremes(bad="lightgrey")


def spatial_panel(
    ax: Axes,
    coords: np.ndarray,
    values: np.ndarray | None = None,
    *,
    radius: float | None = None,
    cmap: Any = "viridis",
    norm: Normalize | None = None,
    colors: Sequence[Any] | None = None,
    point_size: float | None = None,
    invert_y: bool = True,
    limits: tuple[float, float, float, float] | None = None,
    unit: str | None = None,
) -> Any:
    """Draw observations at ``coords``: circles of ``radius`` data units (EllipseCollection) or a scatter.

    ``values`` are mapped through ``cmap`` / ``norm``; ``colors`` (one per observation) are used as is. NaN values
    are drawn light grey. With ``unit``, the axes are labelled ``x (<unit>)`` / ``y (<unit>)`` and keep their ticks;
    without, ticks are hidden. Returns the artist (a ScalarMappable when ``values`` is given) for a colour bar.
    """
    from matplotlib.collections import EllipseCollection

    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    if radius is not None:
        diameter = np.full(len(coords), 2.0 * float(radius))
        artist = EllipseCollection(
            diameter, diameter, np.zeros(len(coords)), units="xy", offsets=coords, offset_transform=ax.transData
        )
        if values is not None:
            artist.set_array(np.ma.masked_invalid(np.asarray(values, dtype=np.float64)))
            artist.set_cmap(_with_grey_nan(cmap))
            artist.set_norm(norm)
        elif colors is not None:
            artist.set_facecolor(colors)
        artist.set_edgecolor("none")
        ax.add_collection(artist, autolim=False)
        pad = float(radius)
    else:
        size = point_size if point_size is not None else auto_marker_size(len(coords), ax)
        kwargs: dict[str, Any] = {"s": size, "linewidths": 0, "plotnonfinite": True}
        if values is not None:
            kwargs.update(c=np.asarray(values, dtype=np.float64), cmap=_with_grey_nan(cmap), norm=norm)
        elif colors is not None:
            kwargs.update(c=list(colors))
        artist = ax.scatter(coords[:, 0], coords[:, 1], **kwargs)
        pad = 0.02 * float(np.ptp(coords, axis=0).max()) if len(coords) else 1.0
    if limits is None and len(coords):
        limits = (
            coords[:, 0].min() - pad,
            coords[:, 0].max() + pad,
            coords[:, 1].min() - pad,
            coords[:, 1].max() + pad,
        )
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim((limits[3], limits[2]) if invert_y else (limits[2], limits[3]))
    ax.set_aspect("equal")
    if unit is None:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        label_axes(ax, unit)
    return artist


def label_axes(ax: Axes, unit: str) -> None:
    """Label a spatial panel's axes ``x (<unit>)`` / ``y (<unit>)`` with small tick labels."""
    ax.set_xlabel(f"x ({unit})", fontsize="small")
    ax.set_ylabel(f"y ({unit})", fontsize="small")
    ax.tick_params(labelsize="x-small", length=2)
