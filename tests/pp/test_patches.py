"""Patch geometry, value ranges and image features (``sslspatial.pp._patches`` / ``_image_features``)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

import sslspatial as ss
from sslspatial._io import get_image
from sslspatial.pp import _patches
from sslspatial.pp._image_features import STATS_FEATURE_NAMES, stats_features


def _sdata_with_image(image: np.ndarray, centres: np.ndarray, *, scale=2.0, shift=(10.0, -4.0), radius=1.0):
    """SpatialData: image with pixel -> coordinates ``scale * px + shift``; circles at ``centres``; a table."""
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale, Sequence, Translation

    transform = Sequence([Scale([scale, scale], axes=("x", "y")), Translation(list(shift), axes=("x", "y"))])
    img = Image2DModel.parse(image, dims=("c", "y", "x"), transformations={"global": transform})
    gdf = gpd.GeoDataFrame({"radius": np.full(len(centres), radius)}, geometry=[Point(*c) for c in centres])
    spots = ShapesModel.parse(gdf, transformations={"global": Identity()})
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * len(centres)), "instance_id": np.arange(len(centres))})
    obs.index = obs.index.astype(str)
    table = ad.AnnData(np.ones((len(centres), 2), np.float32), obs=obs)
    table.obsm["spatial"] = np.asarray(centres, float)
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="instance_id")
    return SpatialData(images={"img": img}, shapes={"spots": spots}, tables={"table": table})


def test_crop_hand_computed_with_padding():
    img = np.arange(3 * 6 * 7, dtype=np.uint8).reshape(3, 6, 7)
    # centre (col 2.0, row 3.0), size 4 -> columns 0..3, rows 1..4
    patch = _patches.crop_patches(img, np.array([[2.0, 3.0]]), 4)[0]
    np.testing.assert_array_equal(patch, img[:, 1:5, 0:4])
    # odd size 3 at (col 5.5, row 0.5): start = floor(5.5 - 1.5 + 0.5) = 4, rows floor(0.5 - 1) = -1 (padded)
    patch = _patches.crop_patches(img, np.array([[5.5, 0.5]]), 3, pad_value=7)[0]
    expected = np.full((3, 3, 3), 7, np.uint8)
    expected[:, 1:, :] = img[:, 0:2, 4:7]
    np.testing.assert_array_equal(patch, expected)
    # fully outside the image: all padding
    assert (_patches.crop_patches(img, np.array([[-50.0, -50.0]]), 2, pad_value=9) == 9).all()


def test_crop_lazy_matches_numpy_and_splits_boxes(monkeypatch):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (3, 120, 90), dtype=np.uint8)
    centres = rng.uniform(-5, 125, (12, 2))
    eager = _patches.crop_patches(img, centres, 9)
    monkeypatch.setattr(_patches, "_MAX_BOX_PIXELS", 10)  # force recursive splitting of the bounding box
    loads = []
    original = _patches._load
    monkeypatch.setattr(_patches, "_load", lambda a, r, c: loads.append((r, c)) or original(a, r, c))
    lazy = _patches.crop_patches(da.from_array(img, chunks=(3, 32, 32)), centres, 9)
    np.testing.assert_array_equal(lazy, eager)
    assert len(loads) > 1  # never one load of the whole bounding box
    assert max((r.stop - r.start) * (c.stop - c.start) for r, c in loads) < 120 * 90


def test_scaled_translated_image_crop_through_spatialdata():
    img = (np.arange(40 * 50).reshape(1, 40, 50) % 251).astype(np.uint8).repeat(3, 0)
    img[1] = 255 - img[1]
    # coordinates = 2 * pixel + (10, -4): spot (30, 36) -> pixel (10, 20); 8 units = 4 px -> cols 8..11, rows 18..21
    centres = np.array([[30.0, 36.0], [11.0, -3.0]])
    sdata = _sdata_with_image(img, centres)
    section = get_image(sdata, "img", "global")
    np.testing.assert_allclose(section.to_pixels(centres), [[10.0, 20.0], [0.5, 0.5]])
    assert section.pixels_per_unit == pytest.approx(0.5)
    patches = ss.pp.extract_patches(sdata, image_key="img", size=8.0)
    np.testing.assert_allclose(patches[0], img[:, 18:22, 8:12] / 255.0, atol=1e-6)
    # second spot sits on the image corner: start = floor(0.5 - 2 + 0.5) = -1 -> one padded row and column
    expected = np.zeros((3, 4, 4))
    expected[:, 1:, 1:] = img[:, 0:3, 0:3] / 255.0
    np.testing.assert_allclose(patches[1], expected, atol=1e-6)
    # size in pixels gives the same crop
    np.testing.assert_allclose(ss.pp.extract_patches(sdata, image_key="img", size=4, unit="px"), patches)


def test_bad_images_and_spots_outside():
    grey = np.zeros((1, 20, 20), np.uint8)
    with pytest.raises(ValueError, match="channel.*value_range"):
        _patches.section_patches(grey, np.array([[5.0, 5.0]]), 4, unit="px")
    floats = np.zeros((3, 20, 20), np.float32)
    with pytest.raises(ValueError, match="not uint8.*value_range"):
        _patches.section_patches(floats, np.array([[5.0, 5.0]]), 4, unit="px")
    # with a stated range both work; greyscale is repeated to RGB and values are mapped to [0, 1]
    p = _patches.section_patches(grey + 100, np.array([[5.0, 5.0]]), 4, unit="px", value_range=(0, 200))
    assert p.shape == (1, 3, 4, 4) and np.allclose(p, 0.5)
    sdata = _sdata_with_image(np.zeros((3, 10, 10), np.uint8), np.array([[500.0, 500.0]]))
    with pytest.raises(ValueError, match="fall outside their image.*transformation"):
        ss.pp.extract_patches(sdata, image_key="img", size=4)


def test_image_without_transformation_to_the_spots():
    from spatialdata.transformations import Identity, remove_transformation, set_transformation

    sdata = _sdata_with_image(np.zeros((3, 10, 10), np.uint8), np.array([[12.0, 0.0]]))
    set_transformation(sdata.images["img"], Identity(), to_coordinate_system="other")
    remove_transformation(sdata.images["img"], "global")
    with pytest.raises(ValueError, match="no transformation to a coordinate system of region"):
        ss.pp.extract_patches(sdata, image_key="img", size=4)


def test_stats_features_hand_computed():
    patch = np.zeros((1, 3, 4, 4), np.float32)
    patch[:, :, :, 2:] = 1.0  # left half black, right half white
    f = dict(zip(STATS_FEATURE_NAMES, stats_features(patch)[0], strict=True))
    assert f["r_mean"] == pytest.approx(0.5) and f["g_std"] == pytest.approx(0.5)
    assert f["background_frac"] == pytest.approx(0.5) and f["dark_frac"] == pytest.approx(0.5)
    # optical density: -log(1/255) on black pixels, 0 on white -> mean log(255) / 2
    assert f["od_r"] == pytest.approx(np.log(255) / 2, rel=1e-5)
    # gradient: only the (row-wise) step between columns 1 and 2 is non-zero: 3 rows x 1 col of 3 x 3 -> 1/3
    assert f["grad_mean"] == pytest.approx(1 / 3)
    assert f["centre_r"] == pytest.approx(0.5)


def test_image_features_backbone_dispatch_and_errors():
    img = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    centres = np.array([[20.0, 20.0], [40.0, 30.0]])
    tiny = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # features = normalised means
    out = ss.pp.image_features(img, centres, 16, method=tiny, out_px=16)
    patches = _patches.section_patches(img, centres, 16, unit="px")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, (patches.mean((2, 3)) - mean) / std, rtol=1e-4, atol=1e-5)
    seen = []
    tiny.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    ss.pp.register_backbone("tiny_test", lambda: tiny, input_px=16, mean=(0, 0, 0), std=(1, 1, 1))
    by_name = ss.pp.image_features(img, centres, 16, method="tiny_test")
    np.testing.assert_allclose(by_name, patches.mean((2, 3)), atol=1e-5)
    assert seen[-1] == (2, 3, 16, 16)  # the registered input size reaches the module
    with pytest.raises(ValueError, match="needs weights"):
        ss.pp.image_features(img, centres, 16, method="resnet18")
    with pytest.raises(ImportError, match="torchvision or timm"):
        ss.pp.image_features(img, centres, 16, method="definitely_not_a_backbone", weights="random")


def test_add_image_features_caches_in_obsm():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (3, 40, 50), dtype=np.uint8)
    centres = np.array([[30.0, 36.0], [40.0, 20.0], [60.0, 50.0]])
    sdata = _sdata_with_image(img, centres)
    feats = ss.pp.add_image_features(sdata, image_key="img", size=8.0)
    table = sdata.tables["table"]
    direct = ss.pp.image_features(get_image(sdata, "img", "global"), centres, 8.0)
    np.testing.assert_allclose(table.obsm["X_image_features"], direct)
    np.testing.assert_allclose(feats, direct)
    table.obsm["X_image_features"][:] = -1  # cached: same parameters return the stored values
    assert (ss.pp.add_image_features(sdata, image_key="img", size=8.0) == -1).all()
    with pytest.raises(ValueError, match="overwrite=True"):
        ss.pp.add_image_features(sdata, image_key="img", size=12.0)
    ss.pp.add_image_features(sdata, image_key="img", size=12.0, overwrite=True)
    assert (table.obsm["X_image_features"] != -1).any()


def test_patches_follow_a_non_identity_shapes_transformation():
    """Shapes scaled by 2 and translated onto the image's coordinate system: patches are cut where they land.

    The table's obsm["spatial"] holds the shapes' own (intrinsic) units, as spatialdata-io readers write it; reading
    it as coordinates of the image's system would cut every patch in the wrong place.
    """
    from spatialdata.transformations import Scale, Sequence, Translation, set_transformation

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (3, 160, 160), dtype=np.uint8)
    centres = rng.uniform(5, 25, (6, 2))  # intrinsic shape units
    sdata = _sdata_with_image(img, centres, scale=0.5, shift=(0.0, 0.0))  # pixel -> global: 0.5 px
    to_global = Sequence([Scale([2.0, 2.0], axes=("x", "y")), Translation([5.0, 3.0], axes=("x", "y"))])
    set_transformation(sdata.shapes["spots"], to_global, to_coordinate_system="global")
    patches = ss.pp.extract_patches(sdata, table_key="table", image_key="img", size=4.0)
    expected_px = 2.0 * (2.0 * centres + np.array([5.0, 3.0]))  # global = 2 c + (5, 3); pixel = 2 * global
    expected = _patches.to_unit_range(_patches.crop_patches(img, expected_px, 8), (0, 255))
    np.testing.assert_allclose(patches, expected)
    np.testing.assert_allclose(sdata.tables["table"].obsm["spatial"], centres)  # the user's obsm is untouched
    # the same section through image features: equal to features of the expected patches
    from sslspatial.pp import image_features

    img_cs = get_image(sdata, "img", "global")
    feats = image_features(img_cs, 2.0 * centres + np.array([5.0, 3.0]), 4.0)
    np.testing.assert_allclose(feats, stats_features(_patches.resize_patches(expected, 8)), rtol=1e-5, atol=1e-6)
