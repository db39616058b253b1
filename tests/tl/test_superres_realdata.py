"""REAL DATA: super-resolution of pseudo-spots with exact sub-bin truth.

1. osmFISH (Codeluppi et al. 2018) cells in 50 um square bins, 2 x 2 sub-bins, graph only; and in Visium-like
   hexagonal spots (K = 7) with an image rendered from the cell centroids (a stand-in for the nuclear stain);
2. CosMx lung (He et al. 2022) transcripts in 10 um square bins, 2 x 2 sub-bins, with the composite image.

The model sees only the spots (and the image) and is scored against the exact sub-bin sums, next to the uniform split
and Gaussian-kernel interpolation computed in the same test.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import spatialdata as sd
from anndata import AnnData
from spatialdata.models import ShapesModel, TableModel

import sslspatial as ss
from sslspatial.metrics import kernel_interpolation, pearson_per_gene, uniform_split
from sslspatial.pp import nuclei_image, pseudo_spots, subspot_offsets


def _spot_sdata(shapes, centres: np.ndarray, spots: np.ndarray, images: dict | None = None) -> sd.SpatialData:
    """Shapes ``"bins"``, the spot table annotating them (coordinates in ``obsm["spatial"]``) and optional images."""
    n = len(centres)
    table = AnnData(
        spots.astype(np.float32),
        obs=pd.DataFrame(
            {"region": pd.Categorical(["bins"] * n), "bin": np.arange(n)}, index=[f"b{i}" for i in range(n)]
        ),
    )
    table.obsm["spatial"] = centres
    return sd.SpatialData(
        shapes={"bins": shapes}, images=images or {},
        tables={"table": TableModel.parse(table, region="bins", region_key="region", instance_key="bin")},
    )  # fmt: skip


def _osmfish_cells(path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path / "osmfish" / "osmFISH_SScortex_mouse_all_cells.loom", "r") as f:
        valid = f["col_attrs/Valid"][:] == 1
        counts = f["matrix"][:][:, valid].T.astype(np.float64)
        xy = np.c_[f["col_attrs/X"][:][valid], f["col_attrs/Y"][:][valid]] * 0.065  # pixels -> um
    return xy, counts


@pytest.mark.slow
def test_osmfish_pseudospots_beat_uniform_and_kernel(shared_data):
    import torch

    torch.set_num_threads(1)  # small graph batches: one thread is fastest on a shared 2-core machine
    xy, counts = _osmfish_cells(shared_data)
    size = 50.0
    ps = pseudo_spots(xy, counts, size, "square", n_per_side=2)
    n, r = len(ps["centres"]), float(ps["radius"])
    shapes = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=[shapely.box(x - r, y - r, x + r, y + r) for x, y in ps["centres"]])
    )
    sdata = _spot_sdata(shapes, ps["centres"], ps["spots"])
    ss.pp.build_graph(sdata, method="knn", n_neighs=8)
    ss.tl.superres(sdata, shapes_key="bins", layout="square", n_subspots=4)  # the defaults: 30 epochs, 64 / 32, 256
    truth = ps["subspots"]
    model = np.nanmean(pearson_per_gene(truth, sdata.tables["table_superres"].X))
    uniform = np.nanmean(pearson_per_gene(truth, uniform_split(ps["spots"], 4)))
    offsets, _ = subspot_offsets("square", r, 2)
    centres_nk = ps["centres"][:, None, :] + offsets[None]
    kernel = max(
        np.nanmean(pearson_per_gene(truth, kernel_interpolation(ps["spots"], ps["centres"], centres_nk, bw * size)))
        for bw in (0.25, 0.5, 1.0)
    )
    assert n > 1000
    # graph only, osmFISH is a hard case: measured once with these settings (then the benchmark's own configuration,
    # since 61959e1 the package defaults; benchmarks/results/superres.md, row superres_count_aware, seeds 0 / 1 / 2:
    # 0.5903 / 0.5909 / 0.5914) against 0.5845 uniform and 0.5847 kernel, i.e.
    # +0.0056 or more; the test asks for half of that margin, so a model that ties or loses fails
    assert model > max(uniform, kernel) + 0.003, (model, uniform, kernel)


def _cosmx_pseudo_spots(path, size=10.0):
    """CosMx transcripts per field of view in square bins wholly inside the field; the two images stitched."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine, get_transformation

    sdata = ss.datasets.cosmx_lung_mini(path=path / "cosmx_lung_mini")
    pts = sdata.points["transcripts"].compute()
    counts = pts["gene"].astype(str).value_counts()
    genes = np.sort([g for g in counts.index[counts >= 50] if not g.startswith("NegPrb")])
    code = pd.Categorical(pts["gene"].astype(str), categories=genes).codes
    pts, onehot = pts[code >= 0], np.eye(len(genes))[code[code >= 0]]
    parts, images, origin = [], [], None
    for fov in (2, 3):
        img = sdata.images[f"fov{fov}_image"]
        affine = np.asarray(get_transformation(img, "global").to_affine_matrix(("x", "y"), ("x", "y")))
        lo = affine[:2, 2]
        hi = lo + affine[0, 0] * np.array([img.shape[2], img.shape[1]])
        origin = lo if origin is None else origin
        images.append(img.values)
        sel = (pts["fov"] == fov).to_numpy()
        xy = np.vstack([pts.loc[sel, ["x", "y"]].to_numpy(), lo, hi - 1e-6])  # anchor the grid at the corner
        ps = pseudo_spots(xy, np.vstack([onehot[sel], np.zeros((2, len(genes)))]), size)
        keep = np.all(ps["centres"] + size / 2 <= hi + 1e-6, 1)
        parts.append((ps["centres"][keep], ps["spots"][keep], ps["subspots"][np.repeat(keep, 4)]))
    centres, spots, subspots = (np.concatenate(p) for p in zip(*parts, strict=True))
    s = float(affine[0, 0])
    image = Image2DModel.parse(
        np.concatenate(images, axis=2), dims=("c", "y", "x"),
        transformations={"global": Affine(np.array([[s, 0, origin[0]], [0, s, origin[1]], [0, 0, 1.0]]),
                                          input_axes=("x", "y"), output_axes=("x", "y"))},
    )  # fmt: skip
    return centres, spots, subspots, image


@pytest.mark.slow
def test_cosmx_image_model_beats_uniform_and_kernel(shared_data):
    import torch

    torch.set_num_threads(1)
    size = 10.0
    centres, spots, truth, image = _cosmx_pseudo_spots(shared_data, size)
    n, r = len(centres), size / 2
    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=[shapely.box(x - r, y - r, x + r, y + r) for x, y in centres]))
    sdata = _spot_sdata(shapes, centres, spots, {"image": image})
    ss.pp.build_graph(sdata, method="knn", n_neighs=8)
    ss.tl.superres(
        sdata, shapes_key="bins", image_key="image", layout="square", n_subspots=4, count_aware=True,
        batch_size=256, n_hidden=64, n_latent=32,
    )  # fmt: skip
    model = np.nanmean(pearson_per_gene(truth, sdata.tables["table_superres"].X))
    uniform = np.nanmean(pearson_per_gene(truth, uniform_split(spots, 4)))
    offsets, _ = subspot_offsets("square", r, 2)
    centres_nk = centres[:, None, :] + offsets[None]
    kernel = max(
        np.nanmean(pearson_per_gene(truth, kernel_interpolation(spots, centres, centres_nk, bw * size)))
        for bw in (0.25, 0.5, 1.0)
    )
    assert n == 260
    # the nuclear stain shows where the transcripts are: benchmark +0.025 over both baselines
    assert model > max(uniform, kernel) + 0.01, (model, uniform, kernel)


@pytest.mark.slow
def test_osmfish_hexagon_with_a_nuclei_image_beats_uniform_and_kernel(shared_data):
    """Visium-like hexagon (K = 7, 0.47 cells per sub-spot): the graph alone ties the uniform split (benchmark), an
    image of where the cells are (rendered from the centroids, a stand-in for the nuclear stain) lifts the model far
    above both baselines (benchmark: 0.616 vs 0.430 uniform, 0.427 kernel)."""
    import torch

    torch.set_num_threads(1)
    xy, counts = _osmfish_cells(shared_data)
    size = 50.0
    ps = pseudo_spots(xy, counts, size, "hexagon")
    n, r = len(ps["centres"]), float(ps["radius"])
    shapes = ShapesModel.parse(gpd.GeoDataFrame({"radius": np.full(n, r)}, geometry=shapely.points(ps["centres"])))
    sdata = _spot_sdata(shapes, ps["centres"], ps["spots"], {"nuclei": nuclei_image(xy)})
    ss.pp.build_graph(sdata, method="knn", n_neighs=6)
    ss.tl.superres(
        sdata, shapes_key="bins", image_key="nuclei", layout="hexagon", n_subspots=7, max_epochs=30,
        batch_size=256, n_hidden=64, n_latent=32,
    )  # fmt: skip
    truth = ps["subspots"]
    model = np.nanmean(pearson_per_gene(truth, sdata.tables["table_superres"].X))
    uniform = np.nanmean(pearson_per_gene(truth, uniform_split(ps["spots"], 7)))
    offsets, _ = subspot_offsets("hexagon", r, 2)
    centres_nk = ps["centres"][:, None, :] + offsets[None]
    pitch = size * np.sqrt(3) / 2
    kernel = max(
        np.nanmean(pearson_per_gene(truth, kernel_interpolation(ps["spots"], ps["centres"], centres_nk, bw * pitch)))
        for bw in (0.25, 0.5, 1.0)
    )
    assert model > max(uniform, kernel) + 0.1, (model, uniform, kernel)
