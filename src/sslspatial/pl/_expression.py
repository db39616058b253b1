"""Predicted vs measured expression maps, and the distribution of per-gene correlations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._io import get_coordinates, get_sections, is_spatialdata
from ._common import (
    PathLike,
    as_list,
    as_table,
    check_save,
    finish,
    gene_values,
    new_figure,
    robust_limits,
    spatial_panel,
)
from ._image import draw_image_crop, section_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _prediction_source(data: Any, measured: AnnData, prediction: Any) -> tuple[AnnData, str | None]:
    """Return ``(table, layer)`` holding the predictions."""
    if isinstance(prediction, AnnData):
        return prediction, None
    if isinstance(prediction, str):
        if is_spatialdata(data) and prediction in data.tables:
            return data.tables[prediction], None
        if prediction in measured.layers:
            return measured, prediction
        tables = ", ".join(map(repr, data.tables)) if is_spatialdata(data) else "none (AnnData input)"
        raise KeyError(
            f"prediction={prediction!r} is neither a table of the SpatialData (tables: {tables}) nor a layer of the "
            f"measured table (layers: {', '.join(map(repr, measured.layers)) or 'none'})."
        )
    raise TypeError(
        "Pass prediction= as a table name, a layer name of the measured table, or an AnnData of predictions; got "
        f"{type(prediction).__name__}."
    )


def _radius_from_uns(table: AnnData, key: str = "spot_radius") -> float | None:
    geometry = table.uns.get("spot_geometry")
    if isinstance(geometry, Mapping) and key in geometry:
        return float(geometry[key])
    return None


def _aligned(values_of: AnnData, names: pd.Index, source: AnnData, what: str) -> np.ndarray:
    """Rows of ``source`` for ``names`` (obs names), erroring if some are missing."""
    pos = source.obs_names.get_indexer(names)
    if (pos < 0).any():
        raise KeyError(
            f"{int((pos < 0).sum())} observations of the prediction table (e.g. {names[pos < 0][0]!r}) have no "
            f"{what}: store obsm['spatial'] in the prediction table or pass the matching measured table."
        )
    return pos


def _frame(table: AnnData, data: Any, table_key: str | None, library_key: str | None, spatial_key: str) -> pd.DataFrame:
    """Coordinates and section of every observation of ``table`` (sections from obs, else '0')."""
    if table_key is not None:
        coords = get_coordinates(data, table_key, spatial_key)
        sections = get_sections(data, table_key, library_key)
    else:
        coords = np.asarray(table.obsm[spatial_key], dtype=np.float64)[:, :2]
        if library_key is not None and library_key in table.obs:
            sections = pd.Categorical(table.obs[library_key].astype(str))
        else:
            sections = get_sections(table, library_key=None)
    return pd.DataFrame(
        {"x": coords[:, 0], "y": coords[:, 1], "section": np.asarray(sections, dtype=str)}, index=table.obs_names
    )


def expression_maps(
    data: Any,
    genes: str | Sequence[str],
    *,
    prediction: str | AnnData,
    table_key: str = "table",
    layer: str | None = None,
    prediction_layer: str | None = None,
    library_key: str | None = None,
    sections: str | Sequence[str] | None = None,
    spatial_key: str = "spatial",
    image_key: str | Mapping[str, str] | None = None,
    coordinate_system: str | Mapping[str, str] | None = None,
    spot_radius: float | None = None,
    shared_scale: bool = True,
    percentile: float = 99.0,
    cmap: str = "viridis",
    point_size: float | None = None,
    invert_y: bool = True,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure:
    """Maps of measured and predicted expression side by side, one row per gene, a column pair per section.

    Parameters
    ----------
    data
        AnnData or SpatialData with the measured table (``table_key``).
    genes
        Gene name(s); one row each.
    prediction
        Where the predictions are: the name of a table of ``data`` (e.g. the table ``ss.tl.hist2expr`` writes), a
        layer of the measured table, or an AnnData of predictions. A prediction table may hold sections without
        measurements (image-only sections): their measured panel reads "not measured". Prediction observations
        without ``obsm[spatial_key]`` take the coordinates of the measured observation of the same name.
    table_key, layer
        Measured table and its layer (``None``: ``X``).
    prediction_layer
        Layer of the prediction table (``None``: ``X``).
    library_key
        Column of ``obs`` naming sections (else the table's region column, else one section).
    sections
        Sections to draw (default: all, measured ones first).
    spatial_key
        Key of the coordinates in ``obsm``.
    image_key
        Draw each section over this image of the SpatialData. ``"{section}"`` in the name is replaced by the section
        (e.g. ``"{section}_image"`` for ``ss.datasets.her2st``), or pass a dict section -> image name.
    coordinate_system
        Coordinate system of the coordinates (name, ``"{section}"``, or dict); default: the image's only one.
    spot_radius
        Draw spots as circles of this radius (coordinate units); default ``uns["spot_geometry"]["spot_radius"]``
        when present, else scatter dots.
    shared_scale
        One colour scale per gene for measured and predicted (else one per kind). Values above the ``percentile``
        of a scale are clipped.
    percentile
        Upper percentile of the colour scale.
    cmap, point_size, invert_y
        Colour map, scatter marker area (points^2, default automatic) and image-style y axis (rows down).
    save
        Write the figure to this PNG path.
    show
        Call ``plt.show()``.

    Returns
    -------
    The figure; panel titles read ``"<gene> · measured"`` / ``"<gene> · predicted"`` (plus ``· <section>``).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=500, n_genes=20, image=False, spot_layouts=("visium",))
    >>> table = sdata["table_visium"]
    >>> table.layers["pred"] = table.layers["true_mean"]
    >>> fig = ss.pl.expression_maps(sdata, table.var_names[:2], prediction="pred", table_key="table_visium")
    >>> len(fig.axes) >= 4
    True
    """
    check_save(save)
    genes = as_list(genes)
    if not genes:
        raise ValueError("Pass at least one gene in genes=.")
    measured = as_table(data, table_key)
    pred, pred_layer = _prediction_source(data, measured, prediction)
    pred_layer = pred_layer if prediction_layer is None else prediction_layer
    for gene in genes:  # raises naming the table before any drawing
        gene_values(measured, gene, layer, "measured table")
        gene_values(pred, gene, pred_layer, "prediction table")

    meas_frame = _frame(measured, data, table_key, library_key, spatial_key)
    if pred is measured:
        pred_frame = meas_frame
    else:
        pred_frame = _frame(pred, pred, None, library_key, spatial_key) if spatial_key in pred.obsm else None
        if pred_frame is None or (library_key is not None and library_key not in pred.obs):
            pos = _aligned(pred, pred.obs_names, measured, "measured counterpart")
            base = meas_frame.iloc[pos].set_index(pred.obs_names)
            pred_frame = base if pred_frame is None else pred_frame.assign(section=base["section"].to_numpy())
    order = list(dict.fromkeys([*pd.unique(meas_frame["section"]), *pd.unique(pred_frame["section"])]))
    if sections is not None:
        wanted = [str(s) for s in as_list(sections)]
        unknown = [s for s in wanted if s not in order]
        if unknown:
            raise KeyError(f"sections {unknown} not found; sections present: {order}.")
        order = wanted
    if spot_radius is None:
        spot_radius = _radius_from_uns(measured) or _radius_from_uns(pred)

    fig, axes = new_figure(len(genes), 2 * len(order), panel=(3.4, 3.2))
    images = {s: section_image(data, image_key, coordinate_system, s) for s in order} if image_key else {}
    for row, gene in enumerate(genes):
        values = {"measured": gene_values(measured, gene, layer), "predicted": gene_values(pred, gene, pred_layer)}
        frames = {"measured": meas_frame, "predicted": pred_frame}
        norms = _norms(values, frames, order, shared_scale, percentile)
        for col_pair, section in enumerate(order):
            for k, kind in enumerate(("measured", "predicted")):
                ax = axes[row, 2 * col_pair + k]
                title = f"{gene} · {kind}" + (f" · {section}" if len(order) > 1 else "")
                ax.set_title(title, fontsize="medium")
                mask = (frames[kind]["section"] == section).to_numpy()
                if not mask.any():
                    ax.text(0.5, 0.5, f"not {kind}", ha="center", va="center", transform=ax.transAxes, color="grey")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    continue
                coords = frames[kind][["x", "y"]].to_numpy()[mask]
                radius, limits = spot_radius, None
                if section in images:
                    image = images[section]
                    coords = image.to_pixels(coords)
                    radius = None if spot_radius is None else spot_radius * image.pixels_per_unit
                    margin = radius if radius is not None else 0.03 * float(np.ptp(coords, axis=0).max() or 1.0)
                    limits = draw_image_crop(ax, image, coords, margin)
                artist = spatial_panel(
                    ax,
                    coords,
                    values[kind][mask],
                    radius=radius,
                    cmap=cmap,
                    norm=norms[kind],
                    point_size=point_size,
                    invert_y=invert_y or section in images,
                    limits=limits,
                )
                if not shared_scale or (col_pair == len(order) - 1 and k == 1):
                    fig.colorbar(artist, ax=ax if not shared_scale else list(axes[row]), shrink=0.8)
    return finish(fig, None, save, show)


def _norms(values: dict, frames: dict, order: list[str], shared: bool, percentile: float) -> dict:
    from matplotlib.colors import Normalize

    def drawn(kind: str) -> np.ndarray:
        return values[kind][frames[kind]["section"].isin(order).to_numpy()]

    if shared:
        norm = Normalize(*robust_limits([drawn("measured"), drawn("predicted")], percentile), clip=True)
        return {"measured": norm, "predicted": norm}
    return {k: Normalize(*robust_limits([drawn(k)], percentile), clip=True) for k in values}
