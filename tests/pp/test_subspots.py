import numpy as np
import pytest
from spatialdata.models import ShapesModel
from spatialdata.transformations import Scale, get_transformation

from sslspatial.pp import assign_to_subspots, make_subspot_shapes, subspot_offsets

SQ3 = np.sqrt(3.0)


def test_hexagon_offsets_hand_computed():
    offsets, r_sub = subspot_offsets("hexagon", 3.0)
    expected = [[0, 0], [2, 0], [1, SQ3], [-1, SQ3], [-2, 0], [-1, -SQ3], [1, -SQ3]]
    np.testing.assert_allclose(offsets, expected, atol=1e-12)
    assert r_sub == pytest.approx(1.0)
    # neighbouring ring sub-spots and the centre touch: distance 2 = 2 * r_sub
    np.testing.assert_allclose(np.linalg.norm(offsets[1] - offsets[2]), 2.0)


def test_square_offsets_hand_computed():
    offsets, r_sub = subspot_offsets("square", 1.0, n_per_side=2)
    np.testing.assert_allclose(offsets, [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    assert r_sub == 0.5
    offsets, r_sub = subspot_offsets("square", 3.0, n_per_side=3)  # row-major over y then x
    np.testing.assert_allclose(offsets[:4], [[-2, -2], [0, -2], [2, -2], [-2, 0]])
    np.testing.assert_allclose(offsets[4], [0, 0])
    assert r_sub == 1.0 and offsets.shape == (9, 2)
    offsets, r_sub = subspot_offsets("square", 5.0, n_per_side=1)
    np.testing.assert_allclose(offsets, [[0, 0]])
    assert r_sub == 5.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "hex", "spot_radius": 1.0}, "Unknown sub-spot layout"),
        ({"layout": "square", "spot_radius": 1.0, "n_per_side": 0}, "n_per_side"),
        ({"layout": "square", "spot_radius": 1.0, "n_per_side": 1.5}, "n_per_side"),
        ({"layout": "hexagon", "spot_radius": 0.0}, "spot_radius"),
        ({"layout": "hexagon", "spot_radius": float("nan")}, "spot_radius"),
    ],
)
def test_offsets_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        subspot_offsets(**kwargs)


def test_assign_hand_points_hexagon():
    centres = [[10.0, 10.0], [30.0, 10.0]]
    pts = [
        [10.0, 10.0],  # spot 0 centre
        [12.0, 10.0],  # sub-spot 1
        [11.0, 10.0 + SQ3],  # sub-spot 2
        [8.1, 10.0],  # sub-spot 4
        [13.0, 10.0],  # exactly on the rim: inside (closed disc)
        [13.5, 10.0],  # outside both spots
        [30.0, 7.5],  # spot 1, below: 270° lies between sub-spots 5 (240°) and 6 (300°), nearer the tie
        [31.0, 8.0],  # spot 1, sub-spot 6 (1, -sqrt3) is nearest
    ]
    spot, sub = assign_to_subspots(pts, centres, 3.0, "hexagon")
    assert spot.tolist() == [0, 0, 0, 0, 0, -1, 1, 1]
    assert sub[:5].tolist() == [0, 1, 2, 4, 1]
    assert sub[5] == -1
    assert sub[6] in (5, 6) and sub[7] == 6


def test_assign_square_spot_shape():
    # (0.9, 0.9) lies inside the square of half-side 1 but outside the unit circle
    pts = [[0.9, 0.9], [-0.9, 0.2], [1.1, 0.0]]
    spot_c, _ = assign_to_subspots(pts, [[0.0, 0.0]], 1.0, "square", spot_shape="circle")
    spot_s, sub_s = assign_to_subspots(pts, [[0.0, 0.0]], 1.0, "square", spot_shape="square")
    assert spot_c.tolist() == [-1, 0, -1]
    assert spot_s.tolist() == [0, 0, -1]
    assert sub_s.tolist() == [3, 2, -1]
    with pytest.raises(ValueError, match="spot_shape"):
        assign_to_subspots(pts, [[0.0, 0.0]], 1.0, "square", spot_shape="hexagon")
    with pytest.raises(ValueError, match="shape"):
        assign_to_subspots([1.0, 2.0], [[0.0, 0.0]], 1.0, "square")
    with pytest.raises(ValueError, match="NaN"):
        assign_to_subspots([[np.nan, 0.0]], [[0.0, 0.0]], 1.0, "square")


@pytest.mark.parametrize(("layout", "n_side", "spot_shape"), [("hexagon", 2, "circle"), ("square", 3, "square")])
def test_assign_matches_brute_force_and_partitions(layout, n_side, spot_shape):
    rng = np.random.default_rng(1)
    xs = np.arange(10.0, 100.0, 20.0)
    centres = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    radius = 7.0
    pts = rng.uniform(0, 110, (4000, 2))
    spot, sub = assign_to_subspots(pts, centres, radius, layout, n_side, spot_shape=spot_shape)

    diff = pts[:, None, :] - centres[None, :, :]
    dist = np.linalg.norm(diff, axis=-1) if spot_shape == "circle" else np.abs(diff).max(-1)
    nearest = dist.argmin(1)
    expected_spot = np.where(dist.min(1) <= radius, nearest, -1)
    np.testing.assert_array_equal(spot, expected_spot)
    offsets, _ = subspot_offsets(layout, radius, n_side)
    inside = expected_spot >= 0
    rel = pts[inside] - centres[expected_spot[inside]]
    expected_sub = np.linalg.norm(rel[:, None] - offsets[None], axis=-1).argmin(1)
    np.testing.assert_array_equal(sub[inside], expected_sub)
    assert np.all(sub[~inside] == -1) and (~inside).any() and inside.any()

    # exact partition: sub-spot sums of integer values add up to the spot sums
    values = rng.integers(0, 50, pts.shape[0])
    k = offsets.shape[0]
    sub_sum = np.bincount(spot[inside] * k + sub[inside], weights=values[inside], minlength=len(centres) * k)
    spot_sum = np.bincount(spot[inside], weights=values[inside], minlength=len(centres))
    np.testing.assert_array_equal(sub_sum.reshape(-1, k).sum(1), spot_sum)


def test_assign_empty_inputs():
    spot, sub = assign_to_subspots(np.zeros((0, 2)), [[0.0, 0.0]], 1.0, "hexagon")
    assert spot.shape == sub.shape == (0,)
    spot, sub = assign_to_subspots([[0.0, 0.0]], np.zeros((0, 2)), 1.0, "hexagon")
    assert spot.tolist() == [-1] and sub.tolist() == [-1]


def test_make_subspot_shapes():
    centres = np.array([[0.0, 0.0], [10.0, 5.0]])
    gdf = make_subspot_shapes(centres, 3.0, "hexagon", spot_index=["a", "b"])
    assert list(gdf.index[:2]) == ["a_0", "a_1"] and gdf.index[-1] == "b_6"
    assert gdf["spot"].tolist() == ["a"] * 7 + ["b"] * 7
    assert gdf["subspot"].tolist() == list(range(7)) * 2
    np.testing.assert_allclose(gdf["radius"], 1.0)
    xy = gdf.geometry.get_coordinates().to_numpy()
    np.testing.assert_allclose(xy[7:9], [[10.0, 5.0], [12.0, 5.0]])
    np.testing.assert_allclose(xy[9], [11.0, 5.0 + SQ3])

    square = make_subspot_shapes(centres, 1.0, "square", n_per_side=2)
    assert square.index.tolist()[:5] == ["0_0", "0_1", "0_2", "0_3", "1_0"]
    np.testing.assert_allclose(
        square.geometry.get_coordinates().to_numpy()[:4], [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    )

    with pytest.raises(ValueError, match="duplicate"):
        make_subspot_shapes(centres, 1.0, "square", spot_index=[1, 1])
    with pytest.raises(ValueError, match="entries"):
        make_subspot_shapes(centres, 1.0, "square", spot_index=[1, 2, 3])


def test_make_subspot_shapes_with_transformations():
    scale = Scale([2.0, 2.0], axes=("x", "y"))
    gdf = make_subspot_shapes([[0.0, 0.0]], 4.0, "square", n_per_side=2, transformations={"aligned": scale})
    ShapesModel.validate(gdf)
    assert get_transformation(gdf, "aligned") == scale
    assert len(gdf) == 4
