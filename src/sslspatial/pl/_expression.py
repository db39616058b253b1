"""Predicted vs measured expression maps, and the distribution of per-gene correlations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import inject_docs
from .._types import DataLike
from .._validate import check_choice
from ..io._access import get_coordinates, get_image, get_sections, is_spatialdata
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
from ._image import draw_image_under, section_image
from ._spatial import coordinate_unit, default_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The transform of ``ss.tl.hist2expr``'s predictions, as its ``uns[key_added]["target"]`` names it.
LOG_TARGET = "log1p(x / total * 1e4)"


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


@inject_docs
def expression_maps(
    data: DataLike,
    genes: str | Sequence[str],
    *,
    prediction: str | AnnData,
    table_key: str = "table",
    layer: str | None = None,
    prediction_layer: str | None = None,
    library_key: str | None = None,
    sections: str | Sequence[str] | None = None,
    spatial_key: str = "spatial",
    image_key: str | Mapping[str, str] | None = "auto",
    coordinate_system: str | Mapping[str, str] | None = None,
    spot_radius: float | None = None,
    scale: str = "shared",
    transform: str = "auto",
    shared_scale: bool | None = None,
    percentile: float = 99.0,
    unit: str | None = None,
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
        (e.g. ``"{section}_image"`` for ``ss.datasets.her2st``), or pass a dict section -> image name. Default
        ``"auto"``: the image sharing a coordinate system with the section's spots, where exactly one does (none for
        an AnnData); ``None`` draws no image.
    coordinate_system
        Coordinate system of the coordinates (name, ``"{section}"``, or dict); default: the image's only one.
    spot_radius
        Draw spots as circles of this radius (coordinate units); default ``uns["spot_geometry"]["spot_radius"]``
        when present, else scatter dots.
    scale
        Colour scales of each gene row. ``"shared"`` (default): one scale and one colour bar for measured and
        predicted, so a colour means the same value in both (a prediction compressed in range looks flatter, as it
        is). ``"separate"``: each kind its own scale and colour bar (shared across sections), to compare patterns of
        a compressed prediction. ``"quantile"``: each kind's values are replaced by their quantile among that kind's
        drawn values, on one 0-1 colour bar: patterns compare directly, magnitudes are lost.
    transform
        Put measured and predicted values on the same transform before drawing. ``"auto"`` (default): when the
        prediction table records log-normalised values (``uns[...]["target"]`` of ``ss.tl.hist2expr``) and the
        measured values are counts (non-negative integers), the measured values are shown as
        ``log1p(counts / total * 1e4)``, the predictions' transform (the total is each observation's sum over all
        genes of the measured table); otherwise both are drawn as they are. ``"log1p"``: transform the measured
        values that way regardless; ``"none"``: never.
    shared_scale
        Deprecated alias: ``True`` is ``scale="shared"``, ``False`` ``scale="separate"``.
    percentile
        Upper percentile of the ``"separate"`` and ``"shared"`` colour scales (values above it are clipped).
    unit
        Axis unit of the coordinates; default from the table (``uns["coordinate_unit"]`` or a dict entry
        ``"coordinate_unit"`` in ``uns``), else ``"coordinate units"``. An image that is rotated relative to the
        coordinates is drawn in its pixels, and the axes then read ``"pixels"``.
    cmap, point_size, invert_y
        Colour map, scatter marker area (points^2, default automatic) and image-style y axis (rows down).
    %(save_show)s

    Returns
    -------
    The figure; panel titles read ``"<gene> · measured"`` / ``"<gene> · predicted, r = <Pearson r>"`` (plus
    ``· <section>``; r over the observations measured and predicted in the drawn sections), axes ``"x (<unit>)"``
    / ``"y (<unit>)"``, each colour bar is labelled with the values' transform.

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

    if shared_scale is not None:
        scale = "shared" if shared_scale else "separate"
    check_choice(scale, ["separate", "quantile", "shared"], "scale")
    check_choice(transform, ["auto", "log1p", "none"], "transform")
    images = _images(data, measured, image_key, coordinate_system, order)
    unit = coordinate_unit(data, measured, unit)
    frames = {"measured": meas_frame, "predicted": pred_frame}
    raw = {
        g: {"measured": gene_values(measured, g, layer), "predicted": gene_values(pred, g, pred_layer)} for g in genes
    }
    log_measured = transform == "log1p" or (transform == "auto" and _log_normalised(pred) and _measured_counts(raw))
    if log_measured:
        total = _totals(measured, layer)
        raw = {g: {**v, "measured": np.log1p(v["measured"] / total * 1e4)} for g, v in raw.items()}
    value_label = "log1p(counts / total × 10⁴)" if log_measured or _log_normalised(pred) else "expression"
    labels = {
        k: f"{k}: {value_label}" if lay in (None, k) else f"{k} ({lay}): {value_label}"
        for k, lay in (("measured", layer), ("predicted", pred_layer))
    }
    fig, axes = new_figure(len(genes), 2 * len(order), panel=(3.6, 3.2))
    for row, gene in enumerate(genes):
        values = raw[gene]
        r = _pearson(values, frames, order)
        if scale == "quantile":
            values = {k: _quantiles(v, frames[k]["section"].isin(order).to_numpy()) for k, v in values.items()}
        norms = _norms(values, frames, order, scale, percentile)
        for col_pair, section in enumerate(order):
            for k, kind in enumerate(("measured", "predicted")):
                ax = axes[row, 2 * col_pair + k]
                title = f"{gene} · {kind}" + (f", r = {r:.2f}" if kind == "predicted" and np.isfinite(r) else "")
                title += f" · {section}" if len(order) > 1 else ""
                ax.set_title(title, fontsize="medium")
                mask = (frames[kind]["section"] == section).to_numpy()
                if not mask.any():
                    ax.text(0.5, 0.5, f"not {kind}", ha="center", va="center", transform=ax.transAxes, color="grey")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    continue
                coords = frames[kind][["x", "y"]].to_numpy()[mask]
                radius, limits, flip, panel_unit = spot_radius, None, invert_y, unit
                if section in images:
                    margin = spot_radius if spot_radius is not None else 0.03 * float(np.ptp(coords, axis=0).max() or 1)
                    coords, radius, limits, flip, panel_unit = draw_image_under(
                        ax, images[section], coords, spot_radius, margin, unit
                    )
                artist = spatial_panel(
                    ax,
                    coords,
                    values[kind][mask],
                    radius=radius,
                    cmap=cmap,
                    norm=norms[kind],
                    point_size=point_size,
                    invert_y=flip,
                    limits=limits,
                    unit=panel_unit,
                )
                if scale == "separate":
                    fig.colorbar(artist, ax=ax, shrink=0.8, label=labels[kind])
                elif col_pair == len(order) - 1 and k == 1:
                    label = f"quantile within kind ({value_label})" if scale == "quantile" else value_label
                    fig.colorbar(artist, ax=list(axes[row]), shrink=0.8, label=label)
    return finish(fig, None, save, show)


def _images(data: Any, table: AnnData, image_key: Any, coordinate_system: Any, order: list[str]) -> dict:
    """The image of each section (``SectionImage``), from ``image_key`` or found automatically."""
    if image_key is None:
        return {}
    if isinstance(image_key, str) and image_key == "auto":
        found = default_image(data, table, order)
        return {s: get_image(data, key, system) for s, (key, system) in found.items()}
    return {s: section_image(data, image_key, coordinate_system, s) for s in order}


def _quantiles(values: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Replace the drawn finite values by their quantile (0-1, ties averaged) among themselves; others NaN."""
    from scipy.stats import rankdata

    out = np.full(len(values), np.nan)
    keep = drawn & np.isfinite(values)
    if keep.sum() == 1:
        out[keep] = 0.5
    elif keep.any():
        out[keep] = (rankdata(values[keep]) - 1.0) / (keep.sum() - 1.0)
    return out


def _norms(values: dict, frames: dict, order: list[str], scale: str, percentile: float) -> dict:
    from matplotlib.colors import Normalize

    def drawn(kind: str) -> np.ndarray:
        return values[kind][frames[kind]["section"].isin(order).to_numpy()]

    if scale == "quantile":
        norm = Normalize(0.0, 1.0, clip=True)
        return {"measured": norm, "predicted": norm}
    if scale == "shared":
        norm = Normalize(*robust_limits([drawn("measured"), drawn("predicted")], percentile), clip=True)
        return {"measured": norm, "predicted": norm}
    return {k: Normalize(*robust_limits([drawn(k)], percentile), clip=True) for k in values}


def _is_counts(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool((finite >= 0).all()) and bool(np.allclose(finite, np.round(finite)))


def _measured_counts(raw: dict) -> bool:
    return _is_counts(np.concatenate([v["measured"] for v in raw.values()]))


def _totals(table: AnnData, layer: str | None) -> np.ndarray:
    matrix = table.X if layer is None else table.layers[layer]
    total = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    return np.maximum(total, 1e-8)


def _log_normalised(pred: AnnData) -> bool:
    """Whether the prediction table says its values are ``log1p(x / total * 1e4)`` (``ss.tl.hist2expr``'s output)."""
    return any(
        isinstance(v, Mapping) and (v.get("function") == "hist2expr" or v.get("target") == LOG_TARGET)
        for v in pred.uns.values()
    )


def _pearson(values: dict, frames: dict, order: list[str]) -> float:
    """Pearson r between measured and predicted values of the observations present in both, in the drawn sections."""
    measured = pd.Series(values["measured"], index=frames["measured"].index)[frames["measured"]["section"].isin(order)]
    predicted = pd.Series(values["predicted"], index=frames["predicted"].index)
    both = measured.index.intersection(predicted.index)
    a, b = measured.loc[both].to_numpy(float), predicted.loc[both].to_numpy(float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])
