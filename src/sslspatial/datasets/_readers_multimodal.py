"""Readers returning SpatialData: spatial CITE-seq human skin (DBiT grid) and a CosMx lung mini dataset."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from ._readers_common import Remote, check_path, fetch, github_raw

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

_SOSCOPE_REPO, _SOSCOPE_COMMIT = "deng-ai-lab/soScope", "fc841f985f6c759b807adde953be66646a039a9b"
_SOSCOPE_DIR = "Preprocess/data/SpatialCITE/humanskin"
_CITE_FILES = ("x3/reordered_filtered_protein.csv", "x3/position_with_center.csv", "HVG_top10.csv")
SUBSPOTS_PER_AXIS = 3

_GIOTTO_REPO, _GIOTTO_COMMIT = "drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de"
_COSMX_DIR = "inst/Mini_datasets/CosMx/Raw"
COSMX_UM_PER_PIXEL = 0.18
COSMX_FOVS = (2, 3)


def cite_seq_skin(path: str | Path | None = None) -> SpatialData:
    """Spatial CITE-seq of human skin: 283 antibody-derived protein tags and RNA on a DBiT-seq grid.

    Liu et al., *High-plex protein and whole transcriptome co-mapping at cellular resolution with spatial
    CITE-seq*, Nat Biotechnol 41:1405-1409 (2023), https://doi.org/10.1038/s41587-023-01676-0. Files as packaged by
    soScope (Li et al., Nat Methods 2024; https://github.com/deng-ai-lab/soScope, MIT).

    Parameters
    ----------
    path
        Folder holding ``x3/reordered_filtered_protein.csv`` (spots x protein tags), ``x3/position_with_center.csv``
        (spot grid and pixel positions) and ``HVG_top10.csv`` (spots x 10 genes). None downloads them (pinned to a
        soScope commit) into ``pooch.os_cache("sslspatial")``.

    Returns
    -------
    SpatialData in coordinate system ``"global"`` in **grid units** (one unit = one DBiT channel pitch), with x the
    grid column (file column ``y``) and y the grid row (file column ``x``), so that the layout matches the H&E
    image of the original study (whose pixel rows follow the file's ``x``):

    - ``shapes["spots"]``: the 1,618 spots as squares of side 1 (the tile each barcoded pixel stands for), index =
      barcode ``f"{row}x{col}"``;
    - ``shapes["subspots"]``: the 3 x 3 finer grid soScope enhances to (9 squares of side 1/3 per spot, index
      ``f"{barcode}_{k}"``, columns ``spot_id`` and ``k`` (4 is the centre)). soScope builds this grid in its
      preprocessing notebook from the spot grid; ``x3/position_with_center.csv`` itself lists the 1,618 spots
      (array position, H&E pixel position ``pixel_x`` = image row, ``pixel_y`` = image column, about 54.6 pixels per
      grid step) and an ``is_center`` flag (336 spots on a stride-2 sub-lattice, the centres soScope merges
      neighbourhoods around);
    - ``tables["protein"]``: 1,618 spots x 283 protein tags (raw ADT counts, float32 dense) and ``tables["rna"]``:
      the same spots x 10 genes (raw counts), both annotating ``"spots"`` (region key ``"region"``, instance key
      ``"spot_id"``), obs ``array_row``, ``array_col``, ``pixel_row``, ``pixel_col``, ``is_center``, obsm
      ``"spatial"`` in grid units (x = column, y = row).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.cite_seq_skin(path="data/cite_seq_skin")  # doctest: +SKIP
    >>> sdata["protein"].shape, sdata["rna"].shape  # doctest: +SKIP
    ((1618, 283), (1618, 10))
    """
    import anndata as ad
    import geopandas as gpd
    from shapely import box
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    root = check_path(path, "cite_seq_skin")
    remote = {f: Remote(github_raw(_SOSCOPE_REPO, _SOSCOPE_COMMIT, f"{_SOSCOPE_DIR}/{f}")) for f in _CITE_FILES}
    root = fetch("cite_seq_skin", root, remote)
    position = pd.read_csv(root / "x3/position_with_center.csv")
    position = position.set_index(pd.Index(position["barcode"].astype(str), name=None))
    protein = pd.read_csv(root / "x3/reordered_filtered_protein.csv", index_col=0).rename_axis(None)
    rna = pd.read_csv(root / "HVG_top10.csv", index_col=0)
    barcodes = protein.index.astype(str)
    for name, frame in (("HVG_top10.csv", rna), ("x3/position_with_center.csv", position)):
        if set(frame.index.astype(str)) != set(barcodes):
            raise ValueError(f"cite_seq_skin: the spots of {name} differ from those of the protein table.")
    position = position.loc[barcodes]
    rna.index = rna.index.astype(str)
    rna = rna.loc[barcodes]

    row = position["x"].to_numpy(dtype=np.float64)
    col = position["y"].to_numpy(dtype=np.float64)
    obs = pd.DataFrame(
        {
            "region": pd.Categorical(["spots"] * len(barcodes)),
            "spot_id": barcodes.to_numpy(),
            "array_row": position["x"].to_numpy(dtype=np.int64),
            "array_col": position["y"].to_numpy(dtype=np.int64),
            "pixel_row": position["pixel_x"].to_numpy(dtype=np.float64),
            "pixel_col": position["pixel_y"].to_numpy(dtype=np.float64),
            "is_center": position["is_center"].to_numpy(dtype=bool),
        },
        index=barcodes,
    )
    tables = {}
    for key, frame in (("protein", protein), ("rna", rna)):
        table = ad.AnnData(
            X=frame.to_numpy(dtype=np.float32), obs=obs.copy(), var=pd.DataFrame(index=frame.columns.astype(str))
        )
        table.obsm["spatial"] = np.c_[col, row]
        table.uns["grid"] = {"coordinate_unit": "DBiT grid step", "subspots_per_axis": SUBSPOTS_PER_AXIS}
        tables[key] = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    tables["protein"].var["antibody"] = [v.split(".")[0] for v in tables["protein"].var_names]

    half = 0.5
    spots = gpd.GeoDataFrame(geometry=box(col - half, row - half, col + half, row + half), index=barcodes.copy())
    offsets = (np.arange(SUBSPOTS_PER_AXIS) - (SUBSPOTS_PER_AXIS - 1) / 2) / SUBSPOTS_PER_AXIS
    d_row, d_col = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))  # k = 3 * i_row + i_col
    n_sub = len(d_row)
    sub_row = (row[:, None] + d_row[None]).ravel()
    sub_col = (col[:, None] + d_col[None]).ravel()
    h = half / SUBSPOTS_PER_AXIS
    subspots = gpd.GeoDataFrame(
        {"spot_id": np.repeat(barcodes.to_numpy(), n_sub), "k": np.tile(np.arange(n_sub), len(barcodes))},
        geometry=box(sub_col - h, sub_row - h, sub_col + h, sub_row + h),
        index=pd.Index([f"{b}_{k}" for b in barcodes for k in range(n_sub)]),
    )
    identity = {"global": Identity()}
    shapes = {
        "spots": ShapesModel.parse(spots, transformations=identity),
        "subspots": ShapesModel.parse(subspots, transformations=identity),
    }
    return SpatialData(shapes=shapes, tables=tables)


def _geo_origin(aux_xml: Path) -> tuple[float, float]:
    """Return the (x, y) of the top-left corner of a crop, in local pixels, from its GDAL ``.aux.xml`` GeoTransform."""
    text = ET.parse(aux_xml).getroot().findtext("GeoTransform")
    if text is None:
        raise ValueError(f"{aux_xml} has no GeoTransform.")
    x0, dx, _, y0, _, dy = (float(v) for v in text.split(","))
    if dx != 1.0 or dy != -1.0:
        raise ValueError(f"{aux_xml}: expected a 1-pixel GeoTransform with y pointing up, got {text.strip()}.")
    return x0, y0


def _cosmx_files() -> dict[str, Remote]:
    names = ["Lung12_tx_file.csv", "Lung12_fov_positions_file.csv"]
    for fov in COSMX_FOVS:
        names += [f"CellLabels/CellLabels_F{fov:03d}.tif", f"CellComposite/CellComposite_F{fov:03d}.jpg"]
        names += [f"CellComposite/CellComposite_F{fov:03d}.jpg.aux.xml"]
    return {n: Remote(github_raw(_GIOTTO_REPO, _GIOTTO_COMMIT, f"{_COSMX_DIR}/{n}")) for n in names}


def cosmx_lung_mini(path: str | Path | None = None) -> SpatialData:
    """CosMx SMI non-small-cell lung cancer (Lung12), two 672 x 648-pixel crops of fields of view 2 and 3.

    He et al., *High-plex imaging of RNA and proteins at subcellular resolution in fixed tissue by spatial molecular
    imaging*, Nat Biotechnol 40:1794-1806 (2022), https://doi.org/10.1038/s41587-022-01483-z (NanoString public
    release), cropped and packaged by GiottoData (https://github.com/drieslab/GiottoData, MIT).

    Parameters
    ----------
    path
        Folder holding ``Lung12_tx_file.csv``, ``Lung12_fov_positions_file.csv``, ``CellLabels/CellLabels_F00<f>.tif``
        and ``CellComposite/CellComposite_F00<f>.jpg`` with its ``.aux.xml`` (f = 2, 3). None downloads them (pinned
        to a GiottoData commit) into ``pooch.os_cache("sslspatial")``.

    Returns
    -------
    SpatialData in one coordinate system ``"global"`` in **micrometres** over the slide: x = global pixel x x 0.18,
    y = -(global pixel y) x 0.18 (CosMx's y points up; flipping it makes images display upright). The two crops sit
    side by side. Elements:

    - ``points["transcripts"]``: 25,825 detections, columns ``x``, ``y`` (µm), ``gene`` (categorical, feature key),
      ``fov``, ``cell_id`` (0 = not assigned to a cell), ``z_slice``, ``cell_compartment``;
    - ``labels[f"fov{f}_labels"]`` (segmentation masks, int32, 0 = background) and ``images[f"fov{f}_image"]``
      (composite immunofluorescence, RGB uint8), pixel -> µm by an affine transformation;
    - ``tables["table"]``: cells x genes (CSR float32) counts of the transcripts assigned to each cell (negative
      probes ``NegPrb*`` left out of X and summed in obs ``negprobe_counts``), annotating the labels elements
      (region key ``"region"`` = ``f"fov{f}_labels"``, instance key ``"cell_id"`` = mask value), obs ``fov``,
      obsm ``"spatial"`` = centroid of the cell's transcripts in µm.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.cosmx_lung_mini(path="data/cosmx_lung_mini")  # doctest: +SKIP
    >>> sdata["table"].n_obs  # doctest: +SKIP
    120
    """
    from PIL import Image
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, TableModel
    from spatialdata.transformations import Affine, Identity

    root = fetch("cosmx_lung_mini", check_path(path, "cosmx_lung_mini"), _cosmx_files())
    offsets = pd.read_csv(root / "Lung12_fov_positions_file.csv").set_index("fov")
    tx = pd.read_csv(root / "Lung12_tx_file.csv")
    tx = tx[tx["fov"].isin(COSMX_FOVS)]
    fov_x = offsets.loc[tx["fov"], "x_global_px"].to_numpy()
    fov_y = offsets.loc[tx["fov"], "y_global_px"].to_numpy()
    s = COSMX_UM_PER_PIXEL
    points = pd.DataFrame(
        {
            "x": (tx["x_local_px"].to_numpy() + fov_x) * s,
            "y": -(tx["y_local_px"].to_numpy() + fov_y) * s,
            "gene": pd.Categorical(tx["target"].astype(str)),
            "fov": tx["fov"].to_numpy(dtype=np.int64),
            "cell_id": tx["cell_ID"].to_numpy(dtype=np.int64),
            "z_slice": tx["z"].to_numpy(dtype=np.int64),
            "cell_compartment": pd.Categorical(tx["CellComp"].astype(str)),
        }
    )
    images, labels = {}, {}
    for fov in COSMX_FOVS:
        x0, y0 = _geo_origin(root / f"CellComposite/CellComposite_F{fov:03d}.jpg.aux.xml")
        gx, gy = offsets.loc[fov, "x_global_px"], offsets.loc[fov, "y_global_px"]
        # pixel (col, row) -> local (x0 + col, y0 - row) -> global + offset -> µm with y flipped
        matrix = np.array([[s, 0.0, (x0 + gx) * s], [0.0, s, -(y0 + gy) * s], [0.0, 0.0, 1.0]])
        to_um = {"global": Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))}
        with Image.open(root / f"CellLabels/CellLabels_F{fov:03d}.tif") as mask:
            mask_array = np.asarray(mask).astype(np.int32)
        labels[f"fov{fov}_labels"] = Labels2DModel.parse(mask_array, dims=("y", "x"), transformations=to_um)
        with Image.open(root / f"CellComposite/CellComposite_F{fov:03d}.jpg") as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
        images[f"fov{fov}_image"] = Image2DModel.parse(
            np.ascontiguousarray(rgb), dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations=to_um
        )
    table = _cell_table(points)
    table = TableModel.parse(table, region=list(labels), region_key="region", instance_key="cell_id")
    transcripts = PointsModel.parse(
        points, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations={"global": Identity()}
    )
    return SpatialData(images=images, labels=labels, points={"transcripts": transcripts}, tables={"table": table})


def _cell_table(points: pd.DataFrame) -> AnnData:
    """Cells x genes counts of the transcripts assigned to a cell (cell_id > 0), per field of view."""
    import anndata as ad

    assigned = points[points["cell_id"] > 0]
    grouped = assigned.groupby(["fov", "cell_id"], sort=True)
    codes = grouped.ngroup().to_numpy()
    cells = grouped.size().index.to_frame(index=False)
    names = assigned["gene"].astype(str).to_numpy()
    negative = np.char.startswith(names.astype(str), "NegPrb")
    genes = pd.Index(sorted(g for g in points["gene"].astype(str).unique() if not g.startswith("NegPrb")))
    keep = ~negative
    counts = sparse.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (codes[keep], genes.get_indexer(names[keep]))),
        shape=(len(cells), len(genes)),
    )
    counts.sum_duplicates()
    fov = cells["fov"].to_numpy(dtype=np.int64)
    cell_id = cells["cell_id"].to_numpy(dtype=np.int64)
    obs = pd.DataFrame(
        {
            "region": pd.Categorical([f"fov{f}_labels" for f in fov]),
            "fov": fov,
            "cell_id": cell_id,
            "negprobe_counts": np.bincount(codes[negative], minlength=len(cells)).astype(np.int64),
        },
        index=[f"fov{f}_cell{c}" for f, c in zip(fov, cell_id, strict=True)],
    )
    table = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes))
    n = np.bincount(codes, minlength=len(cells))
    centroid = [np.bincount(codes, assigned[axis].to_numpy(dtype=np.float64), len(cells)) / n for axis in ("x", "y")]
    table.obsm["spatial"] = np.c_[centroid[0], centroid[1]]
    return table
