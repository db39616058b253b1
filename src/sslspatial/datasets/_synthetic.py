"""A synthetic tissue with known ground truth for every capability of the package.

Cells with types and spatial domains, negative binomial counts whose means depend on the cell type and on the
neighbourhood, an H&E-like image, and Visium / ST spot and sub-spot tables aggregated exactly from the cells.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceT
from typing import Any

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree
from shapely import points as shapely_points
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale, Sequence, Translation

from sslspatial.pp._subspots import assign_to_subspots, make_subspot_shapes, subspot_offsets

from ._synthetic_image import _IMAGE_MARGIN, _draw_he, _image_shape, _type_looks

__all__ = ["synthetic_tissue"]

COORDINATE_SYSTEM = "global"
# layout -> (centre-to-centre distance, spot diameter) in micrometres at extent >= 1000, lattice, sub-spot layout
SPOT_LAYOUTS: dict[str, dict[str, Any]] = {
    "visium": {"pitch": 100.0, "diameter": 55.0, "lattice": "hexagonal", "subspot_layout": "hexagon", "n_per_side": 1},
    "st": {"pitch": 200.0, "diameter": 100.0, "lattice": "square", "subspot_layout": "square", "n_per_side": 2},
}
_N_NEIGHBOURS = 10


def _check_args(n_cells, n_genes, n_cell_types, n_domains, n_sections, extent, spot_layouts, image, pixel_size, effect):
    for name, value in [("n_cells", n_cells), ("n_genes", n_genes), ("n_cell_types", n_cell_types)]:
        if int(value) != value or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    for name, value in [("n_domains", n_domains), ("n_sections", n_sections)]:
        if int(value) != value or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if n_cells < 2 * n_sections:
        raise ValueError(f"`n_cells` ({n_cells}) must be at least 2 per section: raise it or lower `n_sections`.")
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"`extent` must be a positive number of micrometres, got {extent!r}.")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"`pixel_size` must be a positive number of micrometres per pixel, got {pixel_size!r}.")
    if not np.isfinite(effect):
        raise ValueError(f"`neighbourhood_effect` must be a finite number, got {effect!r}.")
    unknown = [layout for layout in spot_layouts if layout not in SPOT_LAYOUTS]
    if unknown or len(set(spot_layouts)) != len(spot_layouts):
        raise ValueError(f"`spot_layouts` must be distinct names among {tuple(SPOT_LAYOUTS)}, got {spot_layouts!r}.")
    for layout in spot_layouts:
        n_spots = n_sections * (extent / (SPOT_LAYOUTS[layout]["pitch"] * min(1.0, extent / 1000.0))) ** 2
        if n_spots > 1_000_000:
            raise ValueError(
                f"`extent` {extent} would give ~{n_spots:.0f} {layout} spots: lower it or drop the layout."
            )
    width, height = _image_shape((n_sections * extent * 1.1, extent), pixel_size)
    if image and width * height > 100_000_000:
        raise ValueError(f"The image would have {width} x {height} pixels: raise `pixel_size` or pass `image=False`.")


def _domain_field(xy: np.ndarray, extent: float, params: dict[str, Any], n_domains: int) -> np.ndarray:
    """Domain index of section-local points: tilted, wavy layers (like cortical layers)."""
    centred = xy / extent - 0.5
    theta = params["angle"]
    u = centred[:, 0] * np.sin(theta) + centred[:, 1] * np.cos(theta)  # across the layers
    v = centred[:, 0] * np.cos(theta) - centred[:, 1] * np.sin(theta)  # along the layers
    waves = sum(a * np.sin(2 * np.pi * f * v + p) for a, f, p in params["waves"])
    return np.clip(np.floor((u + waves + 0.5) * n_domains), 0, n_domains - 1).astype(np.int64)


def _lattice(layout: str, extent: float, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spot centres (section-local, fully inside the section), array rows and array columns."""
    spec = SPOT_LAYOUTS[layout]
    pitch, radius = spec["pitch"] * scale, spec["diameter"] * scale / 2
    if spec["lattice"] == "hexagonal":
        dy, shift = pitch * np.sqrt(3) / 2, pitch / 2
    else:
        dy, shift = pitch, 0.0
    n_rows = int(np.floor((extent - 2 * radius) / dy + 1e-9)) + 1
    n_cols = int(np.floor((extent - 2 * radius - shift) / pitch + 1e-9)) + 1
    rows, cols = np.divmod(np.arange(n_rows * n_cols), n_cols)
    x0 = (extent - (n_cols - 1) * pitch - shift) / 2
    y0 = (extent - (n_rows - 1) * dy) / 2
    xy = np.stack([x0 + cols * pitch + shift * (rows % 2), y0 + rows * dy], axis=1)
    # Visium convention: even rows use even array_col, odd rows odd array_col
    array_col = 2 * cols + rows % 2 if spec["lattice"] == "hexagonal" else cols
    return xy, rows, array_col


def _aggregate_table(layout, spot_xy, rows, cols, section_of_spot, spot_domain, radius, scale, cells) -> tuple:
    """Spot and sub-spot tables (AnnData, TableModel-parsed) and shapes for one layout over all sections."""
    spec = SPOT_LAYOUTS[layout]
    sub_layout, n_side = spec["subspot_layout"], spec["n_per_side"]
    offsets, sub_radius = subspot_offsets(sub_layout, radius, n_side)
    n_spots, k = spot_xy.shape[0], offsets.shape[0]
    spot, sub = assign_to_subspots(cells["xy"], spot_xy, radius, sub_layout, n_side, spot_shape="circle")
    inside = np.flatnonzero(spot >= 0)
    member = sparse.csr_matrix(
        (np.ones(inside.size), (spot[inside] * k + sub[inside], inside)), shape=(n_spots * k, cells["xy"].shape[0])
    )
    sub_counts = np.asarray(member @ cells["counts"]).astype(np.int64)  # exact integer sums
    sub_mean = np.asarray(member @ cells["true_mean"])
    sub_types = np.asarray(member @ np.eye(cells["n_types"])[cells["type"]])
    sub_n = np.asarray(member.sum(axis=1)).ravel().astype(np.int64)
    fold = lambda a: a.reshape(n_spots, k, *a.shape[1:]).sum(axis=1)
    spot_n, spot_types = fold(sub_n), fold(sub_types)
    geometry = {
        "layout": layout,
        "lattice": spec["lattice"],
        "spot_shape": "circle",
        "spot_radius": float(radius),
        "spot_diameter": float(2 * radius),
        "pitch": float(spec["pitch"] * scale),
        "subspot_layout": sub_layout,
        "n_per_side": int(n_side),
        "n_subspots": int(k),
        "subspot_radius": float(sub_radius),
        "scale": float(scale),
        "coordinate_unit": "µm",
    }
    type_names = cells["type_names"]
    spot_ids = np.arange(n_spots)
    fractions = spot_types / np.maximum(spot_n, 1)[:, None]
    obs = pd.DataFrame(
        {
            "region": pd.Categorical([f"spots_{layout}"] * n_spots),
            "spot_id": spot_ids,
            "section": pd.Categorical(cells["section_names"][section_of_spot], categories=cells["section_names"]),
            "n_cells": spot_n,
            "array_row": rows,
            "array_col": cols,
            "domain": pd.Categorical(cells["domain_names"][spot_domain], categories=cells["domain_names"]),
        },
        index=[f"{layout}_{i}" for i in spot_ids],
    )
    spots = ad.AnnData(
        X=fold(sub_counts).astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=cells["var_names"]),
        obsm={"spatial": spot_xy, "cell_type_fractions": pd.DataFrame(fractions, index=obs.index, columns=type_names)},
        layers={"true_mean": fold(sub_mean).astype(np.float32)},
        uns={"spot_geometry": geometry},
    )
    spots = TableModel.parse(spots, region=f"spots_{layout}", region_key="region", instance_key="spot_id")
    sub_shapes = make_subspot_shapes(spot_xy, radius, sub_layout, n_side, spot_index=spot_ids)
    sub_obs = pd.DataFrame(
        {
            "region": pd.Categorical([f"subspots_{layout}"] * (n_spots * k)),
            "subspot_id": sub_shapes.index.to_numpy(dtype=object),
            "spot": np.repeat(spot_ids, k),
            "subspot": np.tile(np.arange(k), n_spots),
            "section": pd.Categorical(np.repeat(obs["section"].to_numpy(), k), categories=cells["section_names"]),
            "n_cells": sub_n,
        },
        index=[f"{layout}_{name}" for name in sub_shapes.index],
    )
    subs = ad.AnnData(
        X=sub_counts.astype(np.float32),
        obs=sub_obs,
        var=pd.DataFrame(index=cells["var_names"]),
        obsm={"spatial": np.asarray(sub_shapes.geometry.get_coordinates().to_numpy())},
        layers={"true_mean": sub_mean.astype(np.float32)},
        uns={"spot_geometry": geometry},
    )
    subs = TableModel.parse(subs, region=f"subspots_{layout}", region_key="region", instance_key="subspot_id")
    identity = {COORDINATE_SYSTEM: Identity()}
    spot_shapes = gpd.GeoDataFrame({"radius": np.full(n_spots, radius)}, geometry=shapely_points(spot_xy))
    return (
        ShapesModel.parse(spot_shapes, transformations=identity),
        spots,
        ShapesModel.parse(sub_shapes, transformations=identity),
        subs,
    )


def synthetic_tissue(
    *,
    n_cells: int = 5000,
    n_genes: int = 100,
    n_cell_types: int = 6,
    n_domains: int = 4,
    n_sections: int = 1,
    extent: float = 1000.0,
    spot_layouts: SequenceT[str] = ("visium", "st"),
    image: bool = True,
    pixel_size: float = 2.0,
    neighbourhood_effect: float = 0.5,
    seed: int = 0,
) -> SpatialData:
    """Simulate a tissue with ground truth: cells, counts, an H&E-like image, spots and sub-spots.

    Generative model, per section ``s`` (a square of side ``extent`` µm, shifted by ``s * 1.1 * extent`` along x
    in the single coordinate system ``"global"``, so sections never overlap; ``obs["section"]`` tells them apart):

    1. Cells: uniform (Poisson) positions. Domains: ``n_domains`` tilted wavy layers, with a random tilt and
       waves per section.
    2. Each domain has its own cell-type composition (half of it on one dominant type, ``domain d -> type d mod
       n_cell_types``, half a flat Dirichlet draw); cell types are drawn from the composition of the cell's domain.
    3. Gene means: ``log mu = log profile[type] + neighbourhood_effect * sum_t frac_t * niche_logfold[t]``, where
       ``profile`` is log-normal with 5 marker genes per type (x6), ``frac_t`` the fraction of type ``t`` among the
       cell's 10 nearest neighbours (same section), and ``niche_logfold[t]`` raises ~10% "response" genes
       (log-fold ~2) near cells of type ``t``. Times a log-normal size factor gives ``layers["true_mean"]``.
    4. Counts: negative binomial (gamma-Poisson) with per-gene inverse dispersion ``var["true_theta"]``.
    5. Image: Beer-Lambert H&E, pale eosin tissue, each cell a cytoplasm disc (eosin) and a nucleus whose size,
       darkness and hematoxylin tint depend on its type, blurred, with pixel noise.
    6. Spots on a lattice per layout, ``"visium"``: hexagonal, pitch 100 µm, diameter 55 µm, 7 hexagonal
       sub-spots; ``"st"``: square, pitch 200 µm, diameter 100 µm, 2 x 2 sub-spots. When ``extent < 1000`` both
       are scaled by ``extent / 1000`` (recorded in ``uns["spot_geometry"]["scale"]``). A cell belongs to the spot
       containing its centre; spots without cells are kept (``n_cells == 0``, zero counts).

    Parameters
    ----------
    n_cells
        Total number of cells, split evenly over the sections.
    n_genes, n_cell_types, n_domains, n_sections
        Sizes.
    extent
        Side of each square section in µm.
    spot_layouts
        Any of ``"visium"``, ``"st"``.
    image
        Whether to draw the H&E image ``images["he"]``.
    pixel_size
        Micrometres per image pixel.
    neighbourhood_effect
        Weight of the neighbourhood on the log-means (0: expression depends on the cell type only).
    seed
        Seed of the random generator; the same seed gives an identical object.

    Returns
    -------
    SpatialData with, all in coordinate system ``"global"`` (µm):

    - ``shapes["cells"]`` (circles, index ``0..n_cells-1``) and ``tables["table"]`` (region ``"cells"``,
      ``region_key="region"``, ``instance_key="cell_id"``): X counts (float32 integers), ``layers["true_mean"]``,
      obs ``cell_type``, ``domain``, ``section``, obsm ``spatial`` and ``true_neighbour_composition``, var
      ``marker_of`` and ``true_theta``, varm ``true_type_logmean`` and ``true_niche_logfold`` (genes x types),
      ``uns["synthetic"]`` (parameters, seed, names, ``coordinate_unit`` ``"µm"`` read by the ``ss.pl`` axis labels).
    - ``images["he"]``: RGB uint8 (c, y, x), pixel -> µm by ``Scale(pixel_size) then Translation(-10 µm)``.
    - per layout ``L``: ``shapes["spots_L"]`` and ``tables["table_L"]`` (instance_key ``"spot_id"``; X = summed
      cell counts, ``layers["true_mean"]``, obs ``section``, ``n_cells``, ``array_row``, ``array_col``, ``domain``
      at the centre, obsm ``spatial`` and ``cell_type_fractions``, ``uns["spot_geometry"]``); ``shapes["subspots_L"]``
      and ``tables["table_subspots_L"]`` (instance_key ``"subspot_id"`` = ``f"{spot}_{k}"``, obs ``spot`` and
      ``subspot``; rows ordered ``spot * K + subspot``; each spot's sub-spot rows sum exactly to its spot row).

    Examples
    --------
    >>> sdata = synthetic_tissue(n_cells=500, n_genes=20, extent=400.0, image=False, spot_layouts=("visium",))
    >>> sdata["table"].n_obs, sorted(sdata.tables)
    (500, ['table', 'table_subspots_visium', 'table_visium'])
    """
    spot_layouts = tuple(spot_layouts)
    _check_args(
        n_cells,
        n_genes,
        n_cell_types,
        n_domains,
        n_sections,
        extent,
        spot_layouts,
        image,
        pixel_size,
        neighbourhood_effect,
    )
    extent, rng = float(extent), np.random.default_rng(seed)
    n_types, gap = int(n_cell_types), 0.1 * float(extent)
    type_names = np.array([f"type_{t}" for t in range(n_types)], dtype=object)
    domain_names = np.array([f"domain_{d}" for d in range(n_domains)], dtype=object)
    section_names = np.array([f"section_{s}" for s in range(n_sections)], dtype=object)
    var_names = [f"gene_{g}" for g in range(n_genes)]

    # ground-truth programmes
    dominant = np.eye(n_types)[np.arange(n_domains) % n_types]
    composition = 0.5 * dominant + 0.5 * rng.dirichlet(np.ones(n_types), n_domains)
    base = rng.normal(0.0, 1.0, n_genes)
    type_logmean = base[None, :] + rng.normal(0.0, 0.4, (n_types, n_genes))
    n_markers = max(1, min(5, n_genes // (2 * n_types)))
    marker_genes = rng.permutation(n_genes)[: n_markers * n_types].reshape(-1, n_markers) if n_genes >= n_types else []
    marker_of = np.array([""] * n_genes, dtype=object)
    for t, genes in enumerate(marker_genes):
        type_logmean[t, genes] += np.log(6.0)
        marker_of[genes] = type_names[t]
    n_response = max(1, n_genes // 10)
    niche_logfold = np.zeros((n_types, n_genes))
    for t in range(n_types):
        niche_logfold[t, rng.choice(n_genes, n_response, replace=False)] = np.abs(rng.normal(2.0, 0.5, n_response))
    theta = np.exp(rng.normal(np.log(5.0), 0.3, n_genes))

    # cells, section by section
    sizes = np.full(n_sections, n_cells // n_sections) + (np.arange(n_sections) < n_cells % n_sections)
    xy, domain, cell_type, section, neighbour_frac = [], [], [], [], []
    field_params = []
    for s, size in enumerate(sizes):
        waves = [(rng.uniform(0.02, 0.06), f, rng.uniform(0, 2 * np.pi)) for f in (1.0, 2.0)]
        params = {"angle": rng.uniform(-np.pi / 6, np.pi / 6), "waves": waves}
        field_params.append(params)
        local = rng.uniform(0.0, extent, (size, 2))
        dom = _domain_field(local, extent, params, n_domains)
        u = rng.random(size)[:, None]
        types = (u > np.cumsum(composition[dom], axis=1)).sum(axis=1).clip(max=n_types - 1)
        k = min(_N_NEIGHBOURS, size - 1)
        _, nn = cKDTree(local).query(local, k=k + 1)
        neighbour_frac.append(np.eye(n_types)[types[nn[:, 1:]]].mean(axis=1))
        xy.append(local + np.array([s * (extent + gap), 0.0]))
        domain.append(dom)
        cell_type.append(types)
        section.append(np.full(size, s))
    xy, domain, cell_type, section = (np.concatenate(a) for a in (xy, domain, cell_type, section))
    neighbour_frac = np.concatenate(neighbour_frac)

    # expression
    size_factor = np.exp(rng.normal(0.0, 0.2, n_cells))
    log_mu = type_logmean[cell_type] + float(neighbourhood_effect) * neighbour_frac @ niche_logfold
    true_mean = size_factor[:, None] * np.exp(log_mu)
    counts = rng.poisson(rng.gamma(theta[None, :], true_mean / theta[None, :])).astype(np.int64)

    obs = pd.DataFrame(
        {
            "region": pd.Categorical(["cells"] * n_cells),
            "cell_id": np.arange(n_cells),
            "cell_type": pd.Categorical(type_names[cell_type], categories=type_names),
            "domain": pd.Categorical(domain_names[domain], categories=domain_names),
            "section": pd.Categorical(section_names[section], categories=section_names),
            "true_size_factor": size_factor,
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    params_record = {
        "n_cells": int(n_cells), "n_genes": int(n_genes), "n_cell_types": n_types, "n_domains": int(n_domains),
        "n_sections": int(n_sections), "extent": extent, "section_offset": extent + gap,
        "spot_layouts": list(spot_layouts), "image": bool(image), "pixel_size": float(pixel_size),
        "neighbourhood_effect": float(neighbourhood_effect), "n_neighbours": _N_NEIGHBOURS, "seed": int(seed),
        "cell_types": list(type_names), "domains": list(domain_names), "composition": composition,
        "coordinate_unit": "µm",
    }  # fmt: skip
    table = ad.AnnData(
        X=counts.astype(np.float32),
        obs=obs,
        var=pd.DataFrame({"marker_of": marker_of, "true_theta": theta}, index=var_names),
        obsm={"spatial": xy, "true_neighbour_composition": neighbour_frac},
        varm={"true_type_logmean": type_logmean.T.copy(), "true_niche_logfold": niche_logfold.T.copy()},
        layers={"true_mean": true_mean.astype(np.float32)},
        uns={"synthetic": params_record},
    )
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="cell_id")
    looks = _type_looks(n_types, rng)
    cell_radius = np.array([look["cell_radius"] for look in looks])[cell_type]
    identity = {COORDINATE_SYSTEM: Identity()}
    shapes = {
        "cells": ShapesModel.parse(
            gpd.GeoDataFrame({"radius": cell_radius}, geometry=shapely_points(xy)), transformations=identity
        )
    }
    tables = {"table": table}
    images = {}
    if image:
        span = (n_sections * extent + (n_sections - 1) * gap, extent)
        boxes = [(s * (extent + gap), s * (extent + gap) + extent, 0.0, extent) for s in range(n_sections)]
        rgb = _draw_he(xy, cell_type, looks, boxes, span, float(pixel_size), rng)
        to_um = Sequence(
            [Scale([pixel_size, pixel_size], axes=("x", "y")), Translation([-_IMAGE_MARGIN] * 2, axes=("x", "y"))]
        )
        images["he"] = Image2DModel.parse(
            rgb, dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations={COORDINATE_SYSTEM: to_um}
        )

    cells = {"xy": xy, "counts": counts, "true_mean": true_mean, "type": cell_type, "n_types": n_types,
             "type_names": list(type_names), "domain_names": domain_names, "section_names": section_names,
             "var_names": var_names}  # fmt: skip
    scale = min(1.0, extent / 1000.0)
    for layout in spot_layouts:
        local, rows, cols = _lattice(layout, extent, scale)
        n_local = local.shape[0]
        spot_xy = np.concatenate([local + np.array([s * (extent + gap), 0.0]) for s in range(n_sections)])
        spot_section = np.repeat(np.arange(n_sections), n_local)
        spot_domain = np.concatenate([_domain_field(local, extent, p, n_domains) for p in field_params])
        radius = SPOT_LAYOUTS[layout]["diameter"] * scale / 2
        out = _aggregate_table(
            layout, spot_xy, np.tile(rows, n_sections), np.tile(cols, n_sections), spot_section, spot_domain,
            radius, scale, cells,
        )  # fmt: skip
        shapes[f"spots_{layout}"], tables[f"table_{layout}"] = out[0], out[1]
        shapes[f"subspots_{layout}"], tables[f"table_subspots_{layout}"] = out[2], out[3]
    return SpatialData(images=images, shapes=shapes, tables=tables)
