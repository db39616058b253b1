"""Spot vs sub-spot maps for super-resolution, drawn as circles of their true radius."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from .._docs import inject_docs
from ..io._access import table_attrs
from ._common import (
    PathLike,
    as_list,
    check_save,
    finish,
    gene_values,
    median_nn_distance,
    new_figure,
    robust_limits,
    spatial_panel,
)
from ._spatial import coordinate_unit

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _check_table(table: Any, name: str, spatial_key: str) -> AnnData:
    if not isinstance(table, AnnData):
        raise TypeError(f"{name} must be an AnnData (e.g. sdata.tables['table_visium']), got {type(table).__name__}.")
    if spatial_key not in table.obsm:
        raise KeyError(
            f"{name} has no obsm[{spatial_key!r}]; store the centres there, or call ss._io.get_coordinates(sdata, "
            "table_key) on the SpatialData first."
        )
    return table


def _radius(table: AnnData, given: float | None, key: str, spatial_key: str, subset: np.ndarray) -> float:
    """The given radius, else ``uns['spot_geometry'][key]``, else half the median nearest-neighbour distance."""
    if given is not None:
        if not np.isfinite(given) or given <= 0:
            raise ValueError(f"{key} must be a finite number > 0, got {given!r}.")
        return float(given)
    geometry = table.uns.get("spot_geometry")
    if isinstance(geometry, Mapping) and key in geometry:
        return float(geometry[key])
    return 0.5 * median_nn_distance(np.asarray(table.obsm[spatial_key])[subset])


def _section_mask(table: AnnData, library_key: str | None, section: str | None, name: str) -> np.ndarray:
    if section is None:
        return np.ones(table.n_obs, dtype=bool)
    if library_key is None or library_key not in table.obs:
        raise KeyError(f"section={section!r} needs library_key= naming an obs column of {name}.")
    mask = (table.obs[library_key].astype(str) == str(section)).to_numpy()
    if not mask.any():
        values = sorted(table.obs[library_key].astype(str).unique())[:10]
        raise KeyError(f"{name} has no observation of section {section!r} (sections: {values}).")
    return mask


@inject_docs
def superres_maps(
    spot_table: AnnData,
    subspot_table: AnnData,
    gene: str | Sequence[str],
    *,
    truth_table: AnnData | None = None,
    spot_radius: float | None = None,
    subspot_radius: float | None = None,
    layer: str | None = None,
    subspot_layer: str | None = None,
    truth_layer: str | None = None,
    library_key: str | None = None,
    section: str | None = None,
    spatial_key: str = "spatial",
    parent_key: str = "spot",
    percentile: float = 99.0,
    cmap: str = "magma",
    invert_y: bool = True,
    unit: str | None = None,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure:
    """Maps of a gene at spot and at sub-spot resolution (and the sub-spot truth), each spot / sub-spot a circle.

    Parameters
    ----------
    spot_table
        Spot-level AnnData with ``obsm[spatial_key]`` (spot centres).
    subspot_table
        Sub-spot AnnData (e.g. the table ``ss.tl.superres`` writes) with ``obsm[spatial_key]``.
    gene
        Gene name(s); one row each.
    truth_table
        Optional sub-spot ground truth (e.g. ``table_subspots_visium`` of ``ss.datasets.synthetic_tissue``); drawn
        at its own coordinates.
    spot_radius, subspot_radius
        Circle radii in coordinate units; default ``uns["spot_geometry"]["spot_radius" / "subspot_radius"]`` of the
        table, else half the median nearest-neighbour distance.
    layer, subspot_layer, truth_layer
        Layers of the three tables (``None``: ``X``).
    library_key, section
        Draw only observations with ``obs[library_key] == section``; a sub-spot table without that column is
        restricted to the children (``obs[parent_key]``) of the selected spots.
    spatial_key
        Key of the coordinates in ``obsm``.
    parent_key
        obs column of the sub-spot table naming the parent spot.
    percentile
        Upper percentile of the colour scales.
    cmap, invert_y
        Colour map; image-style y axis (rows down).
    unit
        Axis unit (labelled ``"x (<unit>)"``); default from the spot table's ``uns`` (``"coordinate_unit"``, e.g.
        ``uns["spot_geometry"]["coordinate_unit"]`` of ``ss.datasets.synthetic_tissue``), else ``"coordinate units"``.
    %(save_show)s

    Returns
    -------
    The figure; panel titles ``"<gene> · spots"``, ``"<gene> · sub-spots"``, ``"<gene> · truth"``. The spot panel
    has its own colour scale; sub-spots and truth share one (they are at the same resolution).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=500, n_genes=20, image=False, spot_layouts=("visium",))
    >>> spots, subs = sdata["table_visium"], sdata["table_subspots_visium"]
    >>> fig = ss.pl.superres_maps(spots, subs, spots.var_names[0], truth_table=subs)
    >>> [ax.get_title().split(" · ")[1] for ax in fig.axes[:3]]
    ['spots', 'sub-spots', 'truth']
    """
    check_save(save)
    genes = as_list(gene)
    if not genes:
        raise ValueError("Pass at least one gene.")
    tables = {"spots": _check_table(spot_table, "spot_table", spatial_key)}
    tables["sub-spots"] = _check_table(subspot_table, "subspot_table", spatial_key)
    if truth_table is not None:
        tables["truth"] = _check_table(truth_table, "truth_table", spatial_key)
    layers = {"spots": layer, "sub-spots": subspot_layer, "truth": truth_layer}
    for gene_name in genes:
        for kind, table in tables.items():
            gene_values(table, gene_name, layers[kind], f"{kind} table")

    masks = {"spots": _section_mask(tables["spots"], library_key, section, "spot_table")}
    for kind in ("sub-spots", "truth"):
        if kind not in tables:
            continue
        table = tables[kind]
        if section is not None and (library_key is None or library_key not in table.obs) and parent_key in table.obs:
            chosen = set(tables["spots"].obs_names[masks["spots"]].astype(str))
            instance_key = table_attrs(tables["spots"]).get("instance_key")
            if instance_key in tables["spots"].obs:  # parents may be named by the SpatialData instance id
                chosen |= set(tables["spots"].obs[instance_key].astype(str)[masks["spots"]])
            masks[kind] = table.obs[parent_key].astype(str).isin(chosen).to_numpy()
        else:
            masks[kind] = _section_mask(table, library_key, section, kind)
    radii = {"spots": _radius(tables["spots"], spot_radius, "spot_radius", spatial_key, masks["spots"])}
    sub_r = _radius(tables["sub-spots"], subspot_radius, "subspot_radius", spatial_key, masks["sub-spots"])
    radii["sub-spots"] = sub_r
    if "truth" in tables:
        radii["truth"] = _radius(tables["truth"], subspot_radius, "subspot_radius", spatial_key, masks["truth"])

    coords = {k: np.asarray(t.obsm[spatial_key], dtype=np.float64)[masks[k], :2] for k, t in tables.items()}
    stacked = np.vstack([coords[k] for k in tables])
    pad = max(radii.values())
    limits = (
        stacked[:, 0].min() - pad,
        stacked[:, 0].max() + pad,
        stacked[:, 1].min() - pad,
        stacked[:, 1].max() + pad,
    )
    from matplotlib.colors import Normalize

    unit = coordinate_unit(None, tables["spots"], unit)
    fine_label = "sub-spots and truth" if "truth" in tables else "sub-spots"
    fig, axes = new_figure(len(genes), len(tables), panel=(3.8, 3.5))
    for row, gene_name in enumerate(genes):
        values = {k: gene_values(t, gene_name, layers[k])[masks[k]] for k, t in tables.items()}
        fine = [values[k] for k in ("sub-spots", "truth") if k in values]
        norms = {"spots": Normalize(*robust_limits([values["spots"]], percentile), clip=True)}
        fine_norm = Normalize(*robust_limits(fine, percentile), clip=True)
        norms.update(dict.fromkeys(("sub-spots", "truth"), fine_norm))
        for col, kind in enumerate(tables):
            ax = axes[row, col]
            artist = spatial_panel(
                ax,
                coords[kind],
                values[kind],
                radius=radii[kind],
                cmap=cmap,
                norm=norms[kind],
                invert_y=invert_y,
                limits=limits,
                unit=unit,
            )
            ax.set_facecolor("#f2f2f2")
            ax.set_title(f"{gene_name} · {kind}", fontsize="medium")
            if kind == "spots":
                fig.colorbar(artist, ax=ax, shrink=0.8, label=f"spots ({layer or 'X'})")
            elif col == len(tables) - 1:
                fig.colorbar(artist, ax=list(axes[row, 1:]), shrink=0.8, label=fine_label)
    return finish(fig, None, save, show)
