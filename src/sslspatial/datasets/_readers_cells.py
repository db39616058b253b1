"""Readers of osmFISH and STARmap (single cells) and a mini Visium crop (spots), each returning a SpatialData.

The table is ``tables["table"]`` (with the coordinates also in ``obsm["spatial"]``, so squidpy works on it); it
annotates points ``cells`` (one element per section when sections have their own frames) or spot circles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .._arguments import ArgumentError
from ._readers_common import Remote, check_path, fetch, github_raw

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

OSMFISH_URL = "https://linnarssonlab.org/osmFISH/osmFISH_SScortex_mouse_all_cells.loom"
OSMFISH_SHA256 = "6153b56b300280e0cbd2eb45377eea4a5e85606bed739c96eb02feee5f53bc63"
OSMFISH_FILE = "osmFISH_SScortex_mouse_all_cells.loom"
OSMFISH_UM_PER_PIXEL = 0.065

STARMAP_SECTIONS = {"BZ5": "20180417_BZ5_control", "BZ9": "20180419_BZ9_control", "BZ14": "20180424_BZ14_control"}

_GIOTTO_REPO, _GIOTTO_COMMIT = "drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de"
_VISIUM_DIR = "inst/Mini_datasets/Visium/Raw"
_VISIUM_FILES = ("visium_DG_expr.txt.gz", "visium_DG_locs.txt", "scalefactors_json.json")
_VISIUM_IMAGE = "images/deg_image2.png"
# extent of deg_image2.png in full-resolution pixels (x0, x1, -y1, -y0), from GiottoData's mini_visium_script.R
_VISIUM_IMAGE_EXTENT = (2000.5, 6790.5, -5730.25, -2380.75)
VISIUM_LIBRARY = "visium_dg"


def _decode(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def _cells_sdata(adata: AnnData, elements: dict[str, tuple[np.ndarray, str]], region_key: str) -> SpatialData:
    """Wrap a cells table into a SpatialData: points ``elements`` (rows, coordinate system) annotated by the table.

    Every cell is a point at its ``obsm["spatial"]`` position in its element's coordinate system (identity
    transformation); the table gains ``obs[region_key]`` (the element of each cell) and ``obs["instance_id"]``.
    """
    from spatialdata import SpatialData
    from spatialdata.models import PointsModel, TableModel
    from spatialdata.transformations import Identity

    region = np.empty(adata.n_obs, dtype=object)
    adata.obs["instance_id"] = np.arange(adata.n_obs, dtype=np.int64)
    points = {}
    for name, (rows, cs) in elements.items():
        region[rows] = name
        xy = adata.obsm["spatial"][rows]
        frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "instance_id": rows.astype(np.int64)}, index=rows)
        points[name] = PointsModel.parse(frame, instance_key="instance_id", transformations={cs: Identity()})
    adata.obs[region_key] = pd.Categorical(region, categories=list(elements))
    table = TableModel.parse(adata, region=list(elements), region_key=region_key, instance_key="instance_id")
    return SpatialData(points=points, tables={"table": table})


def osmfish(path: str | Path | None = None, valid_only: bool = True) -> SpatialData:
    """Mouse somatosensory cortex by osmFISH: 33 genes counted in single cells.

    Codeluppi et al., *Spatial organization of the somatosensory cortex revealed by osmFISH*, Nat Methods 15:932-935
    (2018), https://doi.org/10.1038/s41592-018-0175-z. Data: the loom file of the Linnarsson lab
    (http://linnarssonlab.org/osmFISH/), 6,471 segmented cells of which 4,839 are marked valid by the authors.

    Parameters
    ----------
    path
        Folder holding ``osmFISH_SScortex_mouse_all_cells.loom``; None downloads it (checksum verified) into
        ``pooch.os_cache("sslspatial")``.
    valid_only
        Keep only the cells with ``Valid == 1`` (the cells the authors analysed).

    Returns
    -------
    SpatialData in coordinate system ``"global"`` in **micrometres** (pixel coordinates x 0.065 µm):

    - ``points["cells"]``: one point per cell (column ``instance_id``);
    - ``tables["table"]``: cells x 33 genes annotating ``"cells"`` (region key ``"region"``, the SpatialData
      element, as in the other readers; instance key ``"instance_id"``): X raw molecule counts (float32 integers,
      dense), obs ``cell_type`` (``ClusterName``, 31 types among valid cells), ``anatomical_region`` (``Region``,
      the cortical region, 11 among valid cells), ``section`` (one category), ``cluster_id``, ``total_molecules``, ``size_um2``, ``valid``; obsm
      ``"spatial"`` (µm, as the points) and ``"X_tsne"`` (the authors' t-SNE).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.osmfish(path="data/osmfish")  # doctest: +SKIP
    >>> sdata.tables["table"].shape  # doctest: +SKIP
    (4839, 33)
    """
    import anndata as ad
    import h5py

    if not isinstance(valid_only, bool):
        raise TypeError(f"valid_only must be True or False, got {valid_only!r}.")
    root = fetch("osmfish", check_path(path, "osmfish"), {OSMFISH_FILE: Remote(OSMFISH_URL, OSMFISH_SHA256)})
    with h5py.File(root / OSMFISH_FILE, "r") as loom:
        counts = np.asarray(loom["matrix"][:], dtype=np.float32).T  # the loom matrix is genes x cells
        genes = _decode(loom["row_attrs/Gene"][:])
        col = {key: loom[f"col_attrs/{key}"][:] for key in loom["col_attrs"]}
    keep = col["Valid"] == 1 if valid_only else np.ones(len(col["Valid"]), dtype=bool)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(_decode(col["ClusterName"][keep])),
            "anatomical_region": pd.Categorical(_decode(col["Region"][keep])),
            "section": pd.Categorical(["osmFISH_SScortex"] * int(keep.sum())),
            "cluster_id": col["ClusterID"][keep].astype(np.int64),
            "total_molecules": col["Total_molecules"][keep].astype(np.int64),
            "size_um2": col["size_um2"][keep].astype(np.float64),
            "valid": col["Valid"][keep].astype(bool),
        },
        index=pd.Index(_decode(col["CellID"][keep]).astype(str), name="cell_id"),
    )
    adata = ad.AnnData(X=counts[keep], obs=obs, var=pd.DataFrame(index=pd.Index(genes.astype(str), name="gene")))
    adata.obsm["spatial"] = np.c_[col["X"][keep], col["Y"][keep]].astype(np.float64) * OSMFISH_UM_PER_PIXEL
    adata.obsm["X_tsne"] = np.c_[col["_tSNE_1"][keep], col["_tSNE_2"][keep]].astype(np.float64)
    adata.uns["osmfish"] = {"coordinate_unit": "um", "um_per_pixel": OSMFISH_UM_PER_PIXEL}
    return _cells_sdata(adata, {"cells": (np.arange(adata.n_obs), "global")}, region_key="region")


def starmap_mpfc(sections: Sequence[str] = ("BZ5", "BZ9"), path: str | Path | None = None) -> SpatialData:
    """STARmap mouse medial prefrontal cortex: 166 genes counted in single cells of control sections.

    Wang et al., *Three-dimensional intact-tissue sequencing of single-cell transcriptional states*, Science
    361:eaat5691 (2018), https://doi.org/10.1126/science.aat5691. The per-cell tables (cells the original study
    labelled ``NA`` removed: 1,049 cells in BZ5, 1,053 in BZ9, 1,088 in BZ14) are those distributed with BASS
    (Li & Zhou, Nat Biotechnol 2022, https://github.com/zhengli09/BASS-Analysis); the raw data are on the STARmap
    resources site (https://www.starmapresources.org/data). Neither offers the per-cell CSV files below at a stable
    download address, so ``path`` is required.

    Parameters
    ----------
    sections
        Section names ``"BZ5"``, ``"BZ9"``, ``"BZ14"`` (or their full names such as ``"20180417_BZ5_control"``).
    path
        Folder holding ``<name>_counts_cells_x_genes.csv.gz`` (cells x genes, first column the cell id) and
        ``<name>_cellinfo.csv`` (columns ``x, y, c, z, cell``) per section, ``<name>`` e.g. ``20180417_BZ5_control``.

    Returns
    -------
    SpatialData with, per section ``s``, coordinate system ``s`` in **pixels of the original images** (no pixel size
    is documented with these tables, so coordinates are not converted: ``uns["starmap_mpfc"]["coordinate_unit"] ==
    "pixel"``; the sections' frames are unrelated, so each has its own coordinate system):

    - ``points[f"{s}_cells"]``: one point per cell (column ``instance_id``);
    - ``tables["table"]``: cells of all sections x the 166 genes (aligned by symbol) annotating those points
      (region key ``"region"``, instance key ``"instance_id"``): X raw counts (float32 integers, dense), obs
      ``cell_type`` (column ``c``, 15 types), ``layer`` (column ``z``, the cortical layer index 1-4 of the original
      annotation), ``section`` (categorical), obsm ``"spatial"`` = centroid (x, y) in pixels. obs names are
      ``f"{section}_{cell}"``.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.starmap_mpfc(path="data/starmap_mpfc")  # doctest: +SKIP
    >>> sdata.tables["table"].obs["section"].value_counts().to_dict()  # doctest: +SKIP
    {'BZ9': 1053, 'BZ5': 1049}
    """
    import anndata as ad

    if isinstance(sections, str):
        sections = [sections]
    short = {v: k for k, v in STARMAP_SECTIONS.items()}
    names = []
    for s in sections:
        if s not in STARMAP_SECTIONS and s not in short:
            raise ValueError(f"Unknown STARmap section {s!r}; use one of {list(STARMAP_SECTIONS)}.")
        names.append(short.get(s, s))
    if not names or len(set(names)) != len(names):
        raise ValueError(f"sections must be a non-empty list without duplicates, got {list(sections)}.")
    root = check_path(path, "starmap_mpfc")
    if root is None:
        raise ArgumentError(
            "path",
            None,
            "a local folder with the STARmap files: the per-cell STARmap mPFC tables have no stable public download "
            "address. Get the data from https://www.starmapresources.org/data (or the processed starmap_mpfc.RData "
            "of https://github.com/zhengli09/BASS-Analysis), write per section '<name>_counts_cells_x_genes.csv.gz' "
            "and '<name>_cellinfo.csv' (x, y, c, z, cell), and pass the folder",
            "data/starmap_mpfc",
        )
    files = {}
    for s in names:
        full = STARMAP_SECTIONS[s]
        files[f"{full}_counts_cells_x_genes.csv.gz"] = None
        files[f"{full}_cellinfo.csv"] = None
    root = fetch("starmap_mpfc", root, files)
    parts = []
    for s in names:
        full = STARMAP_SECTIONS[s]
        counts = pd.read_csv(root / f"{full}_counts_cells_x_genes.csv.gz", index_col=0)
        info = pd.read_csv(root / f"{full}_cellinfo.csv", dtype={"cell": str, "c": str, "z": str})
        info = info.set_index("cell")
        if not counts.index.astype(str).equals(info.index) and set(counts.index.astype(str)) != set(info.index):
            raise ValueError(f"STARmap {s}: the cell ids of the counts and the cellinfo files differ.")
        counts.index = counts.index.astype(str)
        info = info.loc[counts.index]
        part = ad.AnnData(
            X=counts.to_numpy(dtype=np.float32),
            obs=pd.DataFrame(
                {"cell_type": info["c"].to_numpy(), "layer": info["z"].to_numpy(), "section": s},
                index=f"{s}_" + counts.index,
            ),
            var=pd.DataFrame(index=counts.columns.astype(str)),
        )
        part.obsm["spatial"] = info[["x", "y"]].to_numpy(dtype=np.float64)
        parts.append(part)
    genes = parts[0].var_names
    for part in parts[1:]:
        if set(part.var_names) != set(genes):
            raise ValueError("The STARmap sections measure different gene panels; cannot align them.")
    adata = ad.concat([p[:, genes] for p in parts], join="inner")
    for key in ("cell_type", "layer"):
        adata.obs[key] = pd.Categorical(adata.obs[key])
    adata.obs["section"] = pd.Categorical(adata.obs["section"], categories=names)
    adata.uns["starmap_mpfc"] = {"coordinate_unit": "pixel"}
    section = adata.obs["section"].to_numpy()
    elements = {f"{s}_cells": (np.flatnonzero(section == s), s) for s in names}
    return _cells_sdata(adata, elements, region_key="region")


def visium_dg_mini(path: str | Path | None = None, load_image: bool = True) -> SpatialData:
    """A small crop of 10x Visium mouse brain around the dentate gyrus (GiottoData's mini Visium dataset).

    10x Genomics dataset *V1_Adult_Mouse_Brain* (coronal section, Space Ranger 1.0.0, CC BY 4.0), cropped and
    packaged by GiottoData (https://github.com/drieslab/GiottoData, MIT; Dries et al., *Giotto: a toolbox for
    integrative analysis and visualization of spatial expression data*, Genome Biol 22:78 (2021),
    https://doi.org/10.1186/s13059-021-02286-2): 624 spots x 634 genes.

    Parameters
    ----------
    path
        Folder holding ``visium_DG_expr.txt.gz`` (genes x spots), ``visium_DG_locs.txt`` (x, -y per spot, in the
        column order of the expression file), ``scalefactors_json.json`` and optionally ``images/deg_image2.png``.
        None downloads them (pinned to a GiottoData commit) into ``pooch.os_cache("sslspatial")``.
    load_image
        Add the small H&E, pasted at its place in a low-resolution canvas (``tissue_lowres_scalef`` maps spot
        coordinates onto it; placed from GiottoData's published extent, accurate to about one low-resolution pixel).

    Returns
    -------
    SpatialData in coordinate system ``"global"`` in **full-resolution pixels** of the 10x image (x, y; y grows
    downwards):

    - ``shapes["spots"]``: the spots as circles of radius ``spot_diameter_fullres / 2``;
    - ``images["he"]`` (with ``load_image``): the low-resolution canvas, scaled onto the spots by
      ``1 / tissue_lowres_scalef``;
    - ``tables["table"]``: spots x genes annotating ``"spots"`` (region key ``"region"``, instance key
      ``"spot_id"``): X raw UMI counts (CSR, float32), obs ``section``; obsm ``"spatial"`` (full-resolution pixels),
      uns ``"spatial"`` in the squidpy layout ``{"visium_dg": {"scalefactors": ..., "images": ...}}``.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.visium_dg_mini(path="data/visium_dg_mini")  # doctest: +SKIP
    >>> sdata.tables["table"].shape  # doctest: +SKIP
    (624, 634)
    """
    import anndata as ad

    root = check_path(path, "visium_dg_mini")
    remote = {f: Remote(github_raw(_GIOTTO_REPO, _GIOTTO_COMMIT, f"{_VISIUM_DIR}/{f}")) for f in _VISIUM_FILES}
    image = {_VISIUM_IMAGE: Remote(github_raw(_GIOTTO_REPO, _GIOTTO_COMMIT, f"{_VISIUM_DIR}/{_VISIUM_IMAGE}"))}
    root = fetch("visium_dg_mini", root, remote, image if load_image else None)
    expr = pd.read_csv(root / "visium_DG_expr.txt.gz", sep=r"\s+")  # header has one field fewer: genes are the index
    locs = pd.read_csv(root / "visium_DG_locs.txt", sep=r"\s+", header=None).to_numpy(dtype=np.float64)
    if locs.shape != (expr.shape[1], 2):
        raise ValueError(
            f"visium_DG_locs.txt has shape {locs.shape}, expected one (x, y) row per spot ({expr.shape[1]})."
        )
    adata = ad.AnnData(
        X=sparse.csr_matrix(expr.to_numpy(dtype=np.float32).T),
        obs=pd.DataFrame({"section": pd.Categorical([VISIUM_LIBRARY] * expr.shape[1])}, index=expr.columns.astype(str)),
        var=pd.DataFrame(index=expr.index.astype(str)),
    )
    adata.obsm["spatial"] = np.c_[locs[:, 0], -locs[:, 1]]  # Giotto stores y negated
    scalefactors = json.loads((root / "scalefactors_json.json").read_text())
    library: dict = {"scalefactors": scalefactors, "images": {}}
    if load_image and (root / _VISIUM_IMAGE).is_file():
        library["images"]["lowres"] = _lowres_canvas(root / _VISIUM_IMAGE, scalefactors["tissue_lowres_scalef"])
    adata.uns["spatial"] = {VISIUM_LIBRARY: library}
    return _visium_sdata(adata, scalefactors, library["images"].get("lowres"))


def _visium_sdata(adata: AnnData, scalefactors: dict, lowres: np.ndarray | None) -> SpatialData:
    """Spot circles and the low-resolution image in full-resolution pixels, annotated by the spot table."""
    import geopandas as gpd
    from shapely import points
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    ids = np.arange(adata.n_obs, dtype=np.int64)
    radius = np.full(adata.n_obs, float(scalefactors["spot_diameter_fullres"]) / 2)
    circles = gpd.GeoDataFrame({"radius": radius}, geometry=points(adata.obsm["spatial"]), index=ids)
    shapes = {"spots": ShapesModel.parse(circles, transformations={"global": Identity()})}
    images = {}
    if lowres is not None:
        scale = 1.0 / float(scalefactors["tissue_lowres_scalef"])
        images["he"] = Image2DModel.parse(
            np.moveaxis(lowres, -1, 0), dims=("c", "y", "x"), c_coords=["r", "g", "b"],
            transformations={"global": Scale([scale, scale], axes=("x", "y"))},
        )  # fmt: skip
    adata.obs["region"] = pd.Categorical(["spots"] * adata.n_obs)
    adata.obs["spot_id"] = ids
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images=images, shapes=shapes, tables={"table": table})


def _lowres_canvas(file: Path, scalef: float) -> np.ndarray:
    """Paste the H&E crop into a white canvas in low-resolution pixels (full-res pixels x ``scalef``)."""
    from PIL import Image

    with Image.open(file) as img:
        crop = np.asarray(img.convert("RGB"), dtype=np.uint8)
    x0, x1, neg_y1, neg_y0 = _VISIUM_IMAGE_EXTENT
    # centre of the published extent, and the crop's size at the low-resolution scale
    left = round(((x0 + x1) / 2) * scalef - crop.shape[1] / 2)
    top = round(((-neg_y0 - neg_y1) / 2) * scalef - crop.shape[0] / 2)
    canvas = np.full((top + crop.shape[0], left + crop.shape[1], 3), 255, dtype=np.uint8)
    canvas[top:, left:] = crop
    return canvas
