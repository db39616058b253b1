"""Sub-spot shapes written by ss.pp.subspots, checked against hand-computed centres."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
import spatialdata as sd
from spatialdata.models import ShapesModel
from spatialdata.transformations import Scale, get_transformation

import sslspatial as ss
from sslspatial.pp import nuclei_image, pseudo_spots
from sslspatial.pp._subspot_elements import n_subspots_of, spot_geometry


def _circles(centres, radius, transformations=None):
    gdf = gpd.GeoDataFrame({"radius": np.full(len(centres), radius)}, geometry=shapely.points(np.asarray(centres)))
    gdf.index = [f"spot{i}" for i in range(len(centres))]
    return ShapesModel.parse(gdf, transformations=transformations)


def test_hexagon_subspots_match_hand_computed_centres():
    scale = Scale([2.0, 2.0], axes=("x", "y"))
    sdata = sd.SpatialData(shapes={"spots": _circles([[0.0, 0.0], [10.0, 5.0]], 3.0, {"global": scale})})
    key = ss.pp.subspots(sdata, shapes_key="spots", layout="hexagon")
    assert key == "spots_subspots"
    sub = sdata.shapes[key]
    s3 = np.sqrt(3.0)
    ring = np.array([[0, 0], [2, 0], [1, s3], [-1, s3], [-2, 0], [-1, -s3], [1, -s3]])  # r = 3: 2r/3 = 2
    expected = np.vstack([ring, ring + [10.0, 5.0]])
    got = np.c_[sub.geometry.x, sub.geometry.y]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(sub["radius"].to_numpy(), 1.0)
    assert sub["spot"].tolist() == ["spot0"] * 7 + ["spot1"] * 7
    assert sub["subspot"].tolist() == list(range(7)) * 2
    assert sub.index[8] == "spot1_1"
    assert get_transformation(sub, "global") == scale


def test_square_subspots_of_polygon_bins_tile_the_bin():
    boxes = [shapely.box(0, 0, 4, 4), shapely.box(4, 0, 8, 4)]
    sdata = sd.SpatialData(shapes={"bins": ShapesModel.parse(gpd.GeoDataFrame(geometry=boxes))})
    ss.pp.subspots(sdata, shapes_key="bins", layout="square", n_per_side=2, key_added="sub")
    sub = sdata.shapes["sub"]
    got = np.c_[sub.geometry.x, sub.geometry.y]
    expected = [[1, 1], [3, 1], [1, 3], [3, 3], [5, 1], [7, 1], [5, 3], [7, 3]]  # row-major over y, then x
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(sub["radius"].to_numpy(), 1.0)
    # 3 x 3 grid: centres at -r + (i + 0.5) * 2r / 3
    ss.pp.subspots(sdata, shapes_key="bins", layout="square", n_per_side=3, key_added="sub3")
    xs = np.unique(np.round(sdata.shapes["sub3"].geometry.x.to_numpy()[:9], 9))
    np.testing.assert_allclose(xs, [2 / 3, 2.0, 10 / 3])


def test_subspots_refuses_other_geometries_and_existing_keys():
    # spatialdata refuses such elements on parse, so corrupt valid ones in place
    sdata = sd.SpatialData(shapes={"spots": _circles([[0.0, 0.0]], 1.0)})
    sdata.shapes["spots"]["geometry"] = gpd.GeoSeries([shapely.LineString([(0, 0), (1, 1)])], index=["spot0"])
    with pytest.raises(ValueError, match=r"circles .* or polygons"):
        ss.pp.subspots(sdata, shapes_key="spots")
    sdata = sd.SpatialData(shapes={"spots": _circles([[0.0, 0.0]], 1.0)})
    del sdata.shapes["spots"]["radius"]
    with pytest.raises(ValueError, match="points without a 'radius'"):
        ss.pp.subspots(sdata, shapes_key="spots")
    sdata = sd.SpatialData(shapes={"spots": _circles([[0.0, 0.0]], 1.0)})
    ss.pp.subspots(sdata, shapes_key="spots")
    with pytest.raises(ss.OutputExistsError, match="exists already"):
        ss.pp.subspots(sdata, shapes_key="spots")
    ss.pp.subspots(sdata, shapes_key="spots", overwrite=True)
    with pytest.raises(KeyError, match="available shapes"):
        ss.pp.subspots(sdata, shapes_key="nope")
    with pytest.raises(ValueError, match="Unknown sub-spot layout"):
        n_subspots_of("triangle")


def test_polygon_radius_and_pseudo_spots_sum_exactly():
    sdata = sd.SpatialData(shapes={"bins": ShapesModel.parse(gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 2, 2)]))})
    assert spot_geometry(sdata, "bins", "square").radius == pytest.approx(1.0)
    assert spot_geometry(sdata, "bins", "hexagon").radius == pytest.approx(np.sqrt(4 / np.pi))
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 10, (300, 2))
    counts = rng.poisson(2.0, (300, 3)).astype(float)
    for layout in ("square", "hexagon"):
        out = pseudo_spots(pts, counts, 2.0, layout)
        k = 4 if layout == "square" else 7
        np.testing.assert_allclose(out["subspots"].reshape(-1, k, 3).sum(1), out["spots"])
        np.testing.assert_allclose(out["spots"].sum(0), counts.sum(0))  # every point lands in one spot
        assert out["n_points"].sum() == 300
    # hand-computed square case: bins of side 1 anchored at the minimum point (0, 0)
    out = pseudo_spots(np.array([[0.0, 0.0], [0.9, 0.1], [1.6, 0.2]]), np.eye(3), 1.0)
    np.testing.assert_allclose(out["centres"], [[0.5, 0.5], [1.5, 0.5]])
    np.testing.assert_allclose(out["subspots"][:4], [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(out["subspots"][4:], [[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])
    # the minimum point lies exactly on the first bin's edge: (lo + r) - lo is not r in floating point for this lo
    # (STARmap BZ9's minimum x), which used to leave the point outside every bin
    lo = 43.6248204391545
    assert (lo + 250.0) - lo != 250.0
    out = pseudo_spots(np.array([[lo, 5377.36], [900.0, 5000.0], [lo + 1.0, 38.4]]), np.eye(3), 500.0)
    np.testing.assert_allclose(out["spots"].sum(0), [1, 1, 1])
    assert out["centres"][:, 0].min() == pytest.approx(lo + 250.0)


def test_nuclei_image_draws_one_unit_blob_per_cell_where_its_transformation_says():
    """Pixel (col, row) maps to coordinates lo + px * um_per_px; an isolated cell is fully stained at its centre."""
    from scipy.stats import norm

    cells = np.array([[20.0, 30.0], [80.0, 30.0]])
    img = nuclei_image(cells, um_per_px=2.0, sigma=4.0, margin=10.0)
    affine = get_transformation(img, "global").to_affine_matrix(("x", "y"), ("x", "y"))
    to_px = np.linalg.inv(np.asarray(affine))
    col, row = (to_px @ np.array([20.0, 30.0, 1.0]))[:2].round().astype(int)
    assert img.values[:, row, col].tolist() == [round(255 * (1 - a)) for a in (0.55, 0.7, 0.25)]  # stain = 1
    # a 2-px sigma blob one pixel to the side: exp(-1/8) of the peak (separable Gaussian, sampled on the grid)
    side = img.values[0, row, col + 1] / 255
    expected = 1 - 0.55 * min(1.0, norm.pdf(1, scale=2) * norm.pdf(0, scale=2) * 2 * np.pi * 4)
    assert abs(side - expected) < 0.02
    mid_col, mid_row = (to_px @ np.array([50.0, 30.0, 1.0]))[:2].round().astype(int)  # 30 um (7.5 sigma) from both
    assert img.values[:, mid_row, mid_col].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="non-empty"):
        nuclei_image(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="must be positive"):
        nuclei_image(cells, sigma=0.0)
