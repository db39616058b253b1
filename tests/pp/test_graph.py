from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

import sslspatial as ss


def _random_sections(n=300, n_sections=3, seed=0, overlap=True):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 100, size=(n, 2))  # sections overlap in space: only the section column separates them
    sections = rng.integers(0, n_sections, size=n).astype(str)
    adata = ad.AnnData(
        np.ones((n, 3), dtype=np.float32),
        obs=pd.DataFrame({"sample": pd.Categorical(sections)}, index=[f"c{i}" for i in range(n)]),
    )
    adata.obsm["spatial"] = coords
    return adata


def _brute_force(coords, sections, *, radius=None, k=None):
    rows, cols = [], []
    for s in np.unique(sections):
        idx = np.flatnonzero(sections == s)
        tree = cKDTree(coords[idx])
        if radius is not None:
            pairs = tree.query_pairs(radius, output_type="ndarray")
            rows += list(idx[pairs[:, 0]]) + list(idx[pairs[:, 1]])
            cols += list(idx[pairs[:, 1]]) + list(idx[pairs[:, 0]])
        else:
            _, nn = tree.query(coords[idx], k=k + 1)
            for a, nbrs in zip(idx, nn[:, 1:], strict=True):
                for b in idx[nbrs]:
                    rows += [a, b]
                    cols += [b, a]
    n = len(coords)
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    adj.data[:] = 1
    return adj


@pytest.mark.parametrize("method", ["radius", "knn"])
def test_matches_brute_force_per_section(method):
    adata = _random_sections()
    kwargs = {"radius": 12.0} if method == "radius" else {"n_neighs": 5}
    ss.pp.build_graph(adata, method=method, library_key="sample", **kwargs)
    got = adata.obsp["spatial_connectivities"]
    sections = adata.obs["sample"].to_numpy()
    expected = _brute_force(adata.obsm["spatial"], sections, radius=kwargs.get("radius"), k=kwargs.get("n_neighs"))
    assert (got != got.T).nnz == 0, "graph must be symmetric"
    assert ((got > 0).astype(int) != expected.astype(int)).nnz == 0
    r, c = got.nonzero()
    assert (sections[r] == sections[c]).all(), "no edge may join two sections"
    # distances are the Euclidean lengths of the edges
    dist = adata.obsp["spatial_distances"]
    dr, dc = dist.nonzero()
    np.testing.assert_allclose(dist.data, np.linalg.norm(adata.obsm["spatial"][dr] - adata.obsm["spatial"][dc], axis=1))
    uns = adata.uns["spatial_neighbors"]
    assert uns["params"]["method"] == method
    np.testing.assert_allclose(uns["degree"]["mean_degree"], np.diff(got.indptr).mean())


def _lattice(kind, n=9):
    if kind == "visium":  # hexagonal: rows offset by half a step, row spacing sqrt(3)/2
        pts = [(c + 0.5 * (r % 2), r * np.sqrt(3) / 2) for r in range(n) for c in range(n)]
    else:
        pts = [(c, r) for r in range(n) for c in range(n)]
    adata = ad.AnnData(np.ones((len(pts), 2), dtype=np.float32))
    adata.obsm["spatial"] = np.asarray(pts, dtype=float) * 100.0
    return adata


@pytest.mark.parametrize(("kind", "n_neighs"), [("visium", 6), ("st", 4)])
def test_grid_interior_degree(kind, n_neighs):
    adata = _lattice(kind)
    ss.pp.build_graph(adata, method="grid", n_neighs=n_neighs)
    degree = np.diff(adata.obsp["spatial_connectivities"].indptr)
    xy = adata.obsm["spatial"]
    interior = (xy[:, 0] > xy[:, 0].min() + 100) & (xy[:, 0] < xy[:, 0].max() - 100)
    interior &= (xy[:, 1] > xy[:, 1].min() + 100) & (xy[:, 1] < xy[:, 1].max() - 100)
    assert interior.sum() > 10
    assert (degree[interior] == n_neighs).all()


def test_copy_returns_and_leaves_object_untouched():
    adata = _random_sections()
    conn, dist = ss.pp.build_graph(adata, method="knn", n_neighs=4, library_key="sample", copy=True)
    assert "spatial_connectivities" not in adata.obsp
    assert conn.shape == (adata.n_obs, adata.n_obs) and dist.nnz == conn.nnz


def test_warns_when_radius_in_wrong_units():
    adata = _random_sections()
    with pytest.warns(UserWarning, match="no neighbour within radius"):
        ss.pp.build_graph(adata, method="radius", radius=1e-6)
    with pytest.warns(UserWarning, match="implausibly large"):
        ss.pp.build_graph(adata, method="radius", radius=1e4, overwrite=True)


def test_existing_graph_is_not_replaced_without_overwrite():
    adata = _random_sections()
    ss.pp.build_graph(adata, method="knn", n_neighs=4)
    before = adata.obsp["spatial_connectivities"].copy()
    with pytest.raises(ss.OutputExistsError, match=r"obsp\['spatial_connectivities'\].*overwrite=True"):
        ss.pp.build_graph(adata, method="knn", n_neighs=8)
    assert (adata.obsp["spatial_connectivities"] != before).nnz == 0, "the old graph must be left as it was"
    ss.pp.build_graph(adata, method="knn", n_neighs=8, overwrite=True)
    assert adata.uns["spatial_neighbors"]["params"]["n_neighs"] == 8
    ss.pp.build_graph(adata, method="knn", n_neighs=4, key_added="other")  # another key is a new output
    assert ss.pp.build_graph(adata, method="knn", n_neighs=4, copy=True)[0].shape == before.shape  # copy writes none


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "voronoi"}, ValueError, "Unknown method"),
        ({"method": "radius"}, ValueError, "radius is needed"),
        ({"method": "knn", "library_key": "nope"}, KeyError, "library_key='nope'"),
        ({"method": "knn", "key_added": "bad key!"}, ValueError, "not a valid name"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ss.pp.build_graph(_random_sections(), **kwargs)


def test_bad_coordinates():
    adata = _random_sections()
    adata.obsm["spatial"][3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        ss.pp.build_graph(adata, method="knn")
    adata = _random_sections()
    adata.obsm["spatial"] = adata.obsm["spatial"].astype(str)
    with pytest.raises(TypeError, match="numeric"):
        ss.pp.build_graph(adata, method="knn")
    adata = _random_sections()
    del adata.obsm["spatial"]
    with pytest.raises(KeyError, match="No coordinates"):
        ss.pp.build_graph(adata, method="knn")
    with pytest.raises(ValueError, match="empty"):
        ss.pp.build_graph(ad.AnnData(np.zeros((0, 3))), method="knn")
