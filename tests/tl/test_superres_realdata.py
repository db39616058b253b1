"""REAL DATA: super-resolution of osmFISH pseudo-spots (50 um square bins, 2 x 2 sub-bins; Codeluppi et al. 2018).

Cells of ../shared/data/osmfish are binned into spots; the model sees only the spots and is scored against the
exact sub-bin sums, next to the uniform split and Gaussian-kernel interpolation computed in the same test.
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
from sslspatial.metrics import pearson_per_gene
from sslspatial.model._superres import kernel_interpolation, uniform_split
from sslspatial.pp._subspot_elements import pseudo_spots, subspot_offsets


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
    table = AnnData(
        ps["spots"].astype(np.float32),
        obs=pd.DataFrame(
            {"region": pd.Categorical(["bins"] * n), "bin": np.arange(n)}, index=[f"b{i}" for i in range(n)]
        ),
    )
    table.obsm["spatial"] = ps["centres"]
    sdata = sd.SpatialData(
        shapes={"bins": shapes},
        tables={"table": TableModel.parse(table, region="bins", region_key="region", instance_key="bin")},
    )
    ss.pp.build_graph(sdata, method="knn", n_neighs=8)
    ss.tl.superres(
        sdata, shapes_key="bins", layout="square", n_subspots=4, max_epochs=30, batch_size=256, n_hidden=64, n_latent=32
    )
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
    assert model > uniform and model > kernel, (model, uniform, kernel)
