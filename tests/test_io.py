from __future__ import annotations

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from shapely.geometry import Point
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale, Sequence, Translation

import sslspatial as ss
from sslspatial import _io


def _sdata(n=20, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(10, 90, size=(n, 2))
    circles = gpd.GeoDataFrame(
        {"radius": np.full(n, 2.0)}, geometry=[Point(x, y) for x, y in xy], index=[f"s{i}" for i in range(n)]
    )
    # the shapes live in micrometres = 2 x their stored units, shifted by (5, -3)
    to_um = Sequence([Scale([2.0, 2.0], axes=("x", "y")), Translation([5.0, -3.0], axes=("x", "y"))])
    shapes = ShapesModel.parse(circles, transformations={"um": to_um})
    table = ad.AnnData(
        rng.poisson(2, size=(n, 4)).astype(np.float32),
        obs=pd.DataFrame(
            {"region": pd.Categorical(["spots"] * n), "spot_id": circles.index.to_numpy()},
            index=[f"o{i}" for i in range(n)],
        ),
    )
    # rows in a different order from the shapes, to check the join by instance id
    table = table[rng.permutation(n)].copy()
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    image = Image2DModel.parse(
        rng.integers(0, 255, size=(3, 50, 60), dtype=np.uint8),
        dims=("c", "y", "x"),
        transformations={
            "um": Sequence([Scale([4.0, 4.0], axes=("x", "y")), Translation([1.0, 2.0], axes=("x", "y"))])
        },
    )
    return sd.SpatialData(shapes={"spots": shapes}, tables={"table": table}, images={"img": image}), xy, to_um


def test_coordinates_from_annotated_shapes_through_transformations():
    sdata, xy, _ = _sdata()
    coords = _io.get_coordinates(sdata, "table", coordinate_system="um")
    ids = sdata.tables["table"].obs["spot_id"].str[1:].astype(int).to_numpy()
    expected = xy[ids] * 2.0 + np.array([5.0, -3.0])
    np.testing.assert_allclose(coords, expected)
    np.testing.assert_allclose(sdata.tables["table"].obsm["spatial"], expected)  # stored for squidpy


def test_image_pixel_mapping():
    sdata, _, _ = _sdata()
    img = _io.get_image(sdata, "img", "um")
    # pixel (col, row) -> um is x*4 + 1, y*4 + 2 ; so um (9, 10) -> pixel (2, 2)
    np.testing.assert_allclose(img.to_pixels(np.array([[9.0, 10.0], [1.0, 2.0]])), [[2.0, 2.0], [0.0, 0.0]])
    assert img.pixels_per_unit == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no transformation to coordinate system"):
        _io.get_image(sdata, "img", "global")
    with pytest.raises(KeyError, match="available images: 'img'"):
        _io.get_image(sdata, "nope", "um")


def test_sections_from_region_or_library_key():
    adata = ad.AnnData(np.ones((4, 1)), obs=pd.DataFrame({"lib": list("aabb")}, index=list("wxyz")))
    assert list(_io.get_sections(adata, library_key="lib")) == list("aabb")
    assert list(_io.get_sections(adata)) == ["0"] * 4
    with pytest.raises(KeyError, match="library_key='nope'"):
        _io.get_sections(adata, library_key="nope")


def test_table_key_errors():
    sdata, _, _ = _sdata()
    with pytest.raises(KeyError, match="available tables: 'table'"):
        _io.get_table(sdata, "cells")
    with pytest.raises(TypeError):
        _io.get_table(np.zeros((3, 3)))


def test_build_graph_on_spatialdata_in_place_and_squidpy_runs_on_it():
    import matplotlib

    matplotlib.use("Agg")
    import squidpy as sq

    sdata, _, _ = _sdata(n=60)
    ss.pp.build_graph(sdata, method="knn", n_neighs=4, coordinate_system="um")
    table = sdata.tables["table"]
    assert table.obsp["spatial_connectivities"].nnz >= 60 * 4
    table.obs["group"] = pd.Categorical(np.where(table.obsm["spatial"][:, 0] > 100, "right", "left"))
    sq.gr.nhood_enrichment(table, cluster_key="group", n_perms=20, show_progress_bar=False)
    zscore = table.uns["group_nhood_enrichment"]["zscore"]
    assert zscore[0, 0] > zscore[0, 1]  # left cells neighbour left cells
    sq.pl.spatial_scatter(
        table, color="group", shape=None, library_id="spatial", connectivity_key="spatial_connectivities"
    )


def test_persist_new_and_replaced_elements(tmp_path):
    sdata, _, _ = _sdata()
    sdata.write(tmp_path / "s.zarr")
    sdata = sd.read_zarr(tmp_path / "s.zarr")
    ss.pp.build_graph(sdata, method="knn", n_neighs=3, coordinate_system="um")
    _io.persist(sdata, "table")
    back = sd.read_zarr(tmp_path / "s.zarr")
    assert "spatial_connectivities" in back.tables["table"].obsp
    assert [p.name for p in (tmp_path / "s.zarr" / "tables").iterdir() if p.is_dir()] == ["table"]  # no leftovers


def test_persist_failure_leaves_old_element_readable(tmp_path, monkeypatch):
    sdata, _, _ = _sdata()
    sdata.write(tmp_path / "s.zarr")
    sdata = sd.read_zarr(tmp_path / "s.zarr")
    old_x = sdata.tables["table"].X.copy()
    sdata.tables["table"].X = sdata.tables["table"].X + 100

    original = type(sdata)._write_element

    def fail_half_way(self, element, zarr_container_path, element_type, element_name, **kwargs):
        original(self, element, zarr_container_path, element_type, element_name, **kwargs)
        raise OSError("disk full (injected)")

    monkeypatch.setattr(type(sdata), "_write_element", fail_half_way)
    with pytest.raises(OSError, match="injected"):
        _io.persist(sdata, "table")
    monkeypatch.undo()
    back = sd.read_zarr(tmp_path / "s.zarr")
    np.testing.assert_array_equal(back.tables["table"].X, old_x)
    assert [p.name for p in (tmp_path / "s.zarr" / "tables").iterdir() if p.is_dir()] == ["table"]
    assert "table" in sdata.tables and not any(k.startswith("table.tmp") for k in sdata.tables)


def test_persist_requires_backing():
    sdata, _, _ = _sdata()
    with pytest.raises(ValueError, match="sdata.write"):
        _io.persist(sdata, "table")


def test_keys():
    from sslspatial._constants import check_key, check_unique_ignoring_case

    assert check_key("X_pretrain_mask") == "X_pretrain_mask"
    with pytest.raises(ValueError, match="not a valid name"):
        check_key("X pretrain")
    with pytest.raises(ValueError, match="only by case"):
        check_unique_ignoring_case(["Table"], "table")


def test_multiscale_image_uses_full_resolution():
    sdata, _, _ = _sdata()
    arr = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64), dtype=np.uint8)
    sdata.images["ms"] = Image2DModel.parse(
        arr, dims=("c", "y", "x"), scale_factors=[2], transformations={"um": Identity()}
    )
    img = _io.get_image(sdata, "ms", "um")
    assert img.image.shape == (3, 64, 64)
    np.testing.assert_array_equal(np.asarray(img.image), arr)


def test_named_coordinate_system_is_not_skipped_when_obsm_exists():
    """obsm["spatial"] in the shapes' own units must not stand in for coordinates in a named coordinate system."""
    sdata, xy, _ = _sdata()
    table = sdata.tables["table"]
    ids = table.obs["spot_id"].str[1:].astype(int).to_numpy()
    table.obsm["spatial"] = xy[ids].copy()  # intrinsic units, as spatialdata-io readers store them
    expected = xy[ids] * 2.0 + np.array([5.0, -3.0])
    np.testing.assert_allclose(_io.get_coordinates(sdata, "table", coordinate_system="um"), expected)
    np.testing.assert_allclose(table.obsm["spatial"], xy[ids])  # the user's obsm is left as it was
    np.testing.assert_allclose(_io.get_coordinates(sdata, "table"), xy[ids])  # no coordinate system: obsm
    rows = np.array([3, 0, 7])
    np.testing.assert_allclose(_io.get_coordinates(sdata, "table", coordinate_system="um", rows=rows), expected[rows])


def test_rows_of_one_section_need_only_its_coordinate_system():
    """Two sections, each with its own coordinate system: asking for one section's rows reads only its element."""
    sdata, xy, _ = _sdata()
    other = ShapesModel.parse(
        gpd.GeoDataFrame({"radius": [1.0, 1.0]}, geometry=[Point(1, 1), Point(3, 4)], index=["t0", "t1"]),
        transformations={"other": Translation([100.0, 0.0], axes=("x", "y"))},
    )
    sdata.shapes["spots_b"] = other
    a = sdata.tables["table"]
    b = ad.AnnData(np.ones((2, a.n_vars), np.float32), obs=pd.DataFrame(
        {"region": ["spots_b"] * 2, "spot_id": ["t0", "t1"]}, index=["b0", "b1"]), var=a.var.copy())  # fmt: skip
    both = ad.concat([a, b])
    both.obs["region"] = pd.Categorical(both.obs["region"].astype(str))
    sdata.tables["table"] = TableModel.parse(both, region=["spots", "spots_b"], region_key="region",
                                             instance_key="spot_id")  # fmt: skip
    rows = np.array([a.n_obs + 1, a.n_obs])
    np.testing.assert_allclose(_io.get_coordinates(sdata, "table", coordinate_system="other", rows=rows),
                               [[103.0, 4.0], [101.0, 1.0]])  # fmt: skip
    with pytest.raises(ValueError, match="no transformation to coordinate system 'other'"):
        _io.get_coordinates(sdata, "table", coordinate_system="other")  # all rows: section a has no 'other'


def test_table_key_with_an_anndata_warns_that_it_is_ignored():
    import warnings

    from anndata import AnnData

    from sslspatial import _io

    adata = AnnData(np.ones((3, 2)))
    with pytest.warns(UserWarning, match="table_key='cells' is ignored") as record:
        assert _io.get_table(adata, "cells") is adata
    assert record[0].filename == __file__  # attributed to the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _io.get_table(adata)  # the default: silent


def test_transformations_become_matrices_in_one_place():
    from spatialdata.transformations import Affine, Scale, Sequence, Translation

    from sslspatial import _io

    t = Sequence([Scale([2.0, 3.0], axes=("x", "y")), Translation([10.0, -5.0], axes=("x", "y"))])
    points = np.array([[1.0, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(_io.map_points(points, t), [[12.0, -2.0], [10.0, 1.0]])
    np.testing.assert_allclose(_io.map_points(points, _io.affine_2d(t)), _io.map_points(points, t))
    assert _io.linear_scale(t) == pytest.approx(np.sqrt(6.0))
    rotation = Affine(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), ("x", "y"), ("x", "y"))
    np.testing.assert_allclose(_io.map_points(points, rotation), [[-1.0, 1.0], [-2.0, 0.0]])
    assert _io.linear_scale(rotation) == pytest.approx(1.0)
