import time

import numpy as np
import pytest
import spatialdata
from scipy.spatial import cKDTree
from scipy.stats import chi2_contingency
from spatialdata.transformations import get_transformation

from sslspatial.datasets import synthetic_tissue

SMALL = {"n_cells": 1500, "n_genes": 30, "n_cell_types": 4, "n_domains": 3, "extent": 600.0, "pixel_size": 2.0}


@pytest.fixture(scope="module")
def sdata():
    return synthetic_tissue(**SMALL, n_sections=2, seed=3)


def _pixel_of(sdata, xy):
    """Map micrometre coordinates to (row, col) pixel indices of images["he"] through its transformation."""
    affine = get_transformation(sdata["he"], "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    inv = np.linalg.inv(affine)
    pix = xy @ inv[:2, :2].T + inv[:2, 2]
    return np.floor(pix[:, 1]).astype(int), np.floor(pix[:, 0]).astype(int)


def test_determinism():
    a = synthetic_tissue(**SMALL, seed=7)
    b = synthetic_tissue(**SMALL, seed=7)
    c = synthetic_tissue(**SMALL, seed=8)
    for key in a.tables:
        np.testing.assert_array_equal(a[key].X, b[key].X)
        np.testing.assert_array_equal(a[key].layers["true_mean"], b[key].layers["true_mean"])
        np.testing.assert_array_equal(a[key].obsm["spatial"], b[key].obsm["spatial"])
    np.testing.assert_array_equal(a["he"].values, b["he"].values)
    assert a["table"].obs.equals(b["table"].obs)
    assert not np.array_equal(a["table"].X, c["table"].X)
    assert not np.array_equal(a["table"].obsm["spatial"], c["table"].obsm["spatial"])


def test_cell_table(sdata):
    t = sdata["table"]
    assert t.n_obs == SMALL["n_cells"] and t.n_vars == SMALL["n_genes"]
    np.testing.assert_array_equal(t.X, np.round(t.X))
    assert t.X.min() >= 0
    attrs = t.uns["spatialdata_attrs"]
    assert attrs == {"region": "cells", "region_key": "region", "instance_key": "cell_id"}
    np.testing.assert_array_equal(t.obs["cell_id"].to_numpy(), sdata["cells"].index.to_numpy())
    np.testing.assert_allclose(t.obsm["spatial"], sdata["cells"].geometry.get_coordinates().to_numpy())
    assert t.uns["synthetic"]["seed"] == 3 and t.uns["synthetic"]["n_sections"] == 2
    # sections are split evenly and do not overlap
    xy, sec = t.obsm["spatial"], t.obs["section"].to_numpy()
    assert (sec == "section_0").sum() == (sec == "section_1").sum() == 750
    assert xy[sec == "section_0", 0].max() < xy[sec == "section_1", 0].min()
    # counts follow the means: total counts over all cells within 5% of the summed true means
    assert abs(t.X.sum() / t.layers["true_mean"].sum() - 1) < 0.05


def test_true_mean_formula_and_neighbours(sdata):
    t = sdata["table"]
    xy, sec = t.obsm["spatial"], t.obs["section"].to_numpy()
    codes = t.obs["cell_type"].cat.codes.to_numpy()
    # brute-force neighbour composition: 10 nearest cells of the same section, excluding the cell itself
    for i in [0, 5, 800, 1499]:
        same = np.flatnonzero(sec == sec[i])
        d = np.linalg.norm(xy[same] - xy[i], axis=1)
        nn = same[np.argsort(d, kind="stable")[1:11]]
        expected = np.bincount(codes[nn], minlength=4) / 10
        np.testing.assert_allclose(t.obsm["true_neighbour_composition"][i], expected)
    w = t.uns["synthetic"]["neighbourhood_effect"]
    log_mu = (
        t.varm["true_type_logmean"].T[codes] + w * t.obsm["true_neighbour_composition"] @ t.varm["true_niche_logfold"].T
    )
    expected = t.obs["true_size_factor"].to_numpy()[:, None] * np.exp(log_mu)
    np.testing.assert_allclose(t.layers["true_mean"], expected, rtol=1e-5)


def test_types_cluster_by_domain(sdata):
    obs = sdata["table"].obs
    table = np.array(obs.groupby(["domain", "cell_type"], observed=False).size().unstack())
    assert chi2_contingency(table).pvalue < 1e-20
    fractions = table / table.sum(1, keepdims=True)
    assert np.abs(fractions[:, None, :] - fractions[None, :, :]).max() > 0.3
    # domains are spatially coherent: most of a cell's 10 nearest neighbours share its domain
    xy = sdata["table"].obsm["spatial"]
    _, nn = cKDTree(xy).query(xy, k=11)
    dom = obs["domain"].cat.codes.to_numpy()
    assert (dom[nn[:, 1:]] == dom[:, None]).mean() > 0.8


def test_expression_depends_on_neighbourhood():
    with_effect = synthetic_tissue(**SMALL, spot_layouts=(), image=False, neighbourhood_effect=1.0)["table"]
    without = synthetic_tissue(**SMALL, spot_layouts=(), image=False, neighbourhood_effect=0.0)["table"]
    for t, should_vary in [(with_effect, True), (without, False)]:
        # per-cell centred log-means remove the size factor; same-type cells then differ only through neighbours
        log_mu = np.log(t.layers["true_mean"].astype(np.float64))
        centred = log_mu - log_mu.mean(1, keepdims=True)
        codes = t.obs["cell_type"].cat.codes.to_numpy()
        spread = max(centred[codes == c].std(0).max() for c in range(4))
        assert (spread > 0.1) if should_vary else (spread < 1e-4)
    # regression of a response gene on own type vs own type + neighbour composition
    t = with_effect
    codes = t.obs["cell_type"].cat.codes.to_numpy()
    gene = int(np.argmax(t.varm["true_niche_logfold"].max(1)))
    y = np.log(t.layers["true_mean"][:, gene])
    own = np.eye(4)[codes]
    both = np.hstack([own, t.obsm["true_neighbour_composition"][:, :-1]])

    def r2(design):
        beta, *_ = np.linalg.lstsq(design, y, rcond=None)
        return 1 - ((y - design @ beta) ** 2).sum() / ((y - y.mean()) ** 2).sum()

    assert r2(both) > r2(own) + 0.1


@pytest.mark.parametrize("layout", ["visium", "st"])
def test_spots_and_subspots(sdata, layout):
    cells, spots, subs = sdata["table"], sdata[f"table_{layout}"], sdata[f"table_subspots_{layout}"]
    geom = spots.uns["spot_geometry"]
    k, radius = geom["n_subspots"], geom["spot_radius"]
    assert k == (7 if layout == "visium" else 4)
    assert radius == pytest.approx((27.5 if layout == "visium" else 50.0) * 0.6)
    # sub-spot rows of each spot add up exactly to the spot row
    np.testing.assert_array_equal(subs.X.reshape(spots.n_obs, k, -1).sum(1), spots.X)
    np.testing.assert_array_equal(subs.obs["spot"].to_numpy(), np.repeat(spots.obs["spot_id"].to_numpy(), k))
    np.testing.assert_array_equal(subs.obs["subspot_id"].to_numpy(), sdata[f"subspots_{layout}"].index.to_numpy())
    # spot rows equal the brute-force sum of the cells whose centre lies in the spot
    centres = spots.obsm["spatial"]
    np.testing.assert_allclose(centres, sdata[f"spots_{layout}"].geometry.get_coordinates().to_numpy())
    dist = np.linalg.norm(cells.obsm["spatial"][:, None] - centres[None], axis=-1)
    member = dist <= radius
    assert member.sum(1).max() <= 1  # spots do not overlap
    np.testing.assert_array_equal(member.T.astype(np.float64) @ cells.X, spots.X)
    np.testing.assert_array_equal(member.sum(0), spots.obs["n_cells"].to_numpy())
    assert spots.obs["n_cells"].sum() > 0.1 * cells.n_obs
    # cell type fractions are ground truth for deconvolution
    codes = cells.obs["cell_type"].cat.codes.to_numpy()
    counts = member.T.astype(float) @ np.eye(4)[codes]
    fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    np.testing.assert_allclose(spots.obsm["cell_type_fractions"].to_numpy(), fractions)
    # both sections have spots, with per-section array coordinates
    assert set(spots.obs["section"]) == {"section_0", "section_1"}
    per_section = spots.obs.groupby("section", observed=True)[["array_row", "array_col"]].max()
    assert (per_section.iloc[0] == per_section.iloc[1]).all()


def test_image_marks_cells(sdata):
    img = np.asarray(sdata["he"].values).astype(float)  # (3, y, x)
    assert sdata["he"].dtype == np.uint8 and img.shape[0] == 3
    t = sdata["table"]
    rows, cols = _pixel_of(sdata, t.obsm["spatial"])
    at_cells = img[:, rows, cols].T  # (n_cells, 3)
    # background: tissue pixels at least 12 µm away from every cell centre
    yy, xx = np.mgrid[0 : img.shape[1] : 3, 0 : img.shape[2] : 3]
    affine = get_transformation(sdata["he"], "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    um = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1) @ affine[:2, :2].T + affine[:2, 2]
    in_tissue = (
        (um[:, 1] > 0)
        & (um[:, 1] < 600)
        & (((um[:, 0] > 0) & (um[:, 0] < 600)) | ((um[:, 0] > 660) & (um[:, 0] < 1260)))
    )
    far = cKDTree(t.obsm["spatial"]).query(um)[0] > 12
    bg = img[:, yy.ravel()[in_tissue & far], xx.ravel()[in_tissue & far]].T
    assert len(bg) > 100
    assert at_cells.sum(1).mean() < bg.sum(1).mean() - 100
    # background is pale pink (eosin): red and blue above green
    assert bg[:, 0].mean() > bg[:, 1].mean() + 30 and bg[:, 2].mean() > bg[:, 1].mean() + 30
    # nearly every cell centre is darker than the typical background pixel
    assert (at_cells.sum(1) < np.median(bg.sum(1))).mean() > 0.95
    # mean colour under cells differs between cell types
    codes = t.obs["cell_type"].cat.codes.to_numpy()
    means = np.array([at_cells[codes == c].mean(0) for c in range(4)])
    assert np.abs(means[:, None] - means[None]).max() > 15


def test_zarr_roundtrip(sdata, tmp_path):
    path = tmp_path / "x.zarr"
    sdata.write(path)
    back = spatialdata.read_zarr(path)
    assert set(back.tables) == set(sdata.tables) and set(back.shapes) == set(sdata.shapes)
    for key in sdata.tables:
        np.testing.assert_array_equal(np.asarray(back[key].X), sdata[key].X)
    np.testing.assert_array_equal(back["he"].values, sdata["he"].values)
    xy = {"input_axes": ("x", "y"), "output_axes": ("x", "y")}
    np.testing.assert_allclose(
        get_transformation(back["he"], "global").to_affine_matrix(**xy),
        get_transformation(sdata["he"], "global").to_affine_matrix(**xy),
    )
    assert back["table_subspots_visium"].obs["subspot_id"].tolist() == back["subspots_visium"].index.tolist()
    assert back["table"].uns["synthetic"]["seed"] == 3


def test_speed_default_size():
    start = time.perf_counter()
    sdata = synthetic_tissue()
    elapsed = time.perf_counter() - start
    assert sdata["table"].n_obs == 5000
    assert elapsed < 30  # measured ~0.4 s; generous bound for a shared CI machine


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spot_layouts": ("visium", "slideseq")}, "spot_layouts"),
        ({"spot_layouts": ("st", "st")}, "spot_layouts"),
        ({"n_cells": 3, "n_sections": 2}, "at least 2 per section"),
        ({"n_genes": 0}, "n_genes"),
        ({"extent": -1.0}, "extent"),
        ({"pixel_size": 0.0}, "pixel_size"),
        ({"neighbourhood_effect": float("inf")}, "neighbourhood_effect"),
        ({"extent": 30000.0, "pixel_size": 1.0, "spot_layouts": ()}, "pixels"),
        ({"extent": 1e6, "image": False}, "spots"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_tissue(**kwargs)
