"""Tests of ss.pp.aggregate_neighbors: exact-hop aggregates against hand-computed and brute-force answers."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

import sslspatial as ss
from sslspatial.pp._aggregate import hop_matrices, representation


def _graph(n: int, edges: list[tuple[int, int]], weights: list[float] | None = None) -> sp.csr_matrix:
    rows = [i for i, j in edges] + [j for i, j in edges]
    cols = [j for i, j in edges] + [i for i, j in edges]
    w = (weights or [1.0] * len(edges)) * 2
    return sp.csr_matrix((w, (rows, cols)), shape=(n, n))


def _adata(feat: np.ndarray, adjacency: sp.csr_matrix) -> ad.AnnData:
    adata = ad.AnnData(np.ones((feat.shape[0], 3), dtype=np.float32))
    adata.obsm["feat"] = feat
    adata.obsp["spatial_connectivities"] = adjacency
    return adata


# Triangle 0-1-2, tail 2-3-4, isolated 5. Cell 0: ring 1 = {1, 2}, ring 2 = {3}; cell 2: ring 1 = {0, 1, 3},
# ring 2 = {4}; cell 4: ring 1 = {3}, ring 2 = {2}; cell 5: no ring.
EDGES = [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4)]
FEAT = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0], [16.0, 160.0], [32.0, 320.0]])


def test_exact_hop_mean_matches_hand_computation():
    adata = _adata(FEAT, _graph(6, EDGES))
    ss.pp.aggregate_neighbors(adata, n_hops=2, use_rep="feat")
    out = adata.obsm["X_nhood"]
    assert out.shape == (6, 6)
    np.testing.assert_allclose(out[:, :2], FEAT)  # the cell itself first
    hop1 = np.array([[3.0, 30.0], [2.5, 25.0], [11 / 3, 110 / 3], [10.0, 100.0], [8.0, 80.0], [0.0, 0.0]])
    hop2 = np.array([[8.0, 80.0], [8.0, 80.0], [16.0, 160.0], [1.5, 15.0], [4.0, 40.0], [0.0, 0.0]])
    np.testing.assert_allclose(out[:, 2:4], hop1, rtol=1e-6)
    np.testing.assert_allclose(out[:, 4:6], hop2, rtol=1e-6)
    # ring 2 of cell 0 is {3} only: a cumulative 2-hop mean would be mean(x1, x2, x3) = 14/3
    assert out[0, 4] == pytest.approx(8.0)
    params = adata.uns["X_nhood"]["params"]
    assert params["n_hops"] == 2 and params["use_rep"] == "feat" and params["aggregations"] == ["mean"]
    assert list(adata.uns["X_nhood"]["feature_names"][[0, 2, 4]]) == ["feat:0", "hop1_mean:0", "hop2_mean:0"]


def test_var_std_sum_match_hand_computation():
    adata = _adata(FEAT, _graph(6, EDGES))
    out = ss.pp.aggregate_neighbors(adata, n_hops=1, use_rep="feat", aggregations=("sum", "var", "std"), copy=True)
    assert "X_nhood" not in adata.obsm  # copy=True writes nothing
    # cell 2, ring 1 = {0, 1, 3}: values 1, 2, 8 (first feature)
    values = np.array([1.0, 2.0, 8.0])
    assert out[2, 2] == pytest.approx(values.sum())
    assert out[2, 4] == pytest.approx(values.var(), rel=1e-5)
    assert out[2, 6] == pytest.approx(values.std(), rel=1e-5)
    assert out[5, 2:].tolist() == [0.0] * 6  # isolated cell: zeros


def test_weights_and_self_loops_are_ignored():
    weighted = _graph(6, EDGES, weights=[0.1, 5.0, 2.0, 0.3, 7.0])
    weighted = (weighted + sp.identity(6, format="csr") * 3.0).tocsr()
    a = ss.pp.aggregate_neighbors(_adata(FEAT, weighted), n_hops=2, use_rep="feat", copy=True)
    b = ss.pp.aggregate_neighbors(_adata(FEAT, _graph(6, EDGES)), n_hops=2, use_rep="feat", copy=True)
    np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("n_hops", [1, 2, 4])
def test_hop_matrices_equal_brute_force_shortest_paths(n_hops):
    rng = np.random.default_rng(1)
    n = 60
    upper = sp.triu(sp.random(n, n, density=0.04, random_state=rng), k=1)
    adjacency = (upper + upper.T).tocsr()
    dist = shortest_path(adjacency, unweighted=True, directed=False)
    hops = hop_matrices(adjacency, n_hops)
    assert len(hops) == n_hops
    for k, hop in enumerate(hops, start=1):
        np.testing.assert_array_equal(hop.toarray(), (dist == k).astype(int))
    # and the aggregate of ring k is the mean over exactly those cells
    feat = rng.normal(size=(n, 3))
    out = ss.pp.aggregate_neighbors(_adata(feat, adjacency), n_hops=n_hops, use_rep="feat", copy=True)
    for i in range(n):
        ring = np.flatnonzero(dist[i] == n_hops)
        expected = feat[ring].mean(0) if ring.size else np.zeros(3)
        np.testing.assert_allclose(out[i, -3:], expected, atol=1e-5)


def test_n_hops_zero_returns_the_representation():
    out = ss.pp.aggregate_neighbors(_adata(FEAT, _graph(6, EDGES)), n_hops=0, use_rep="feat", copy=True)
    np.testing.assert_allclose(out, FEAT)


def test_sections_never_mix():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(40, 2))
    adata = ad.AnnData(rng.poisson(2.0, size=(80, 5)).astype(np.float32))
    adata.obs["section"] = pd.Categorical(["a"] * 40 + ["b"] * 40)
    adata.obsm["spatial"] = np.vstack([coords, coords])  # identical positions in both sections
    adata.obsm["feat"] = np.r_[np.zeros((40, 2)), np.ones((40, 2))]
    ss.pp.build_graph(adata, method="knn", n_neighs=4, library_key="section")
    out = ss.pp.aggregate_neighbors(adata, n_hops=2, use_rep="feat", copy=True)
    assert np.all(out[:40] == 0.0)
    assert np.all(out[40:] == 1.0)


def test_default_representation_is_pca_of_log_normalised_counts():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(30, 6)).astype(np.float32)
    adata = ad.AnnData(counts.copy())
    adata.obsp["spatial_connectivities"] = _graph(30, [(i, i + 1) for i in range(29)])
    out = ss.pp.aggregate_neighbors(adata, n_hops=1, copy=True)
    totals = counts.sum(1, keepdims=True)
    logn = np.log1p(counts / totals * np.median(totals))
    centred = logn - logn.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :5] * s[:5]  # principal component scores, up to sign
    pcs = out[:, :5]
    np.testing.assert_allclose(np.abs(pcs), np.abs(expected), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(pcs, representation(adata, "X"), rtol=1e-5, atol=1e-5)
    assert adata.X is not None and np.array_equal(adata.X, counts)  # X untouched
    # X_pca is used when present
    adata.obsm["X_pca"] = np.arange(60, dtype=float).reshape(30, 2)
    ss.pp.aggregate_neighbors(adata, n_hops=1)
    np.testing.assert_allclose(adata.obsm["X_nhood"][:, :2], adata.obsm["X_pca"])
    assert adata.uns["X_nhood"]["params"]["use_rep"] == "X_pca"


def test_works_on_spatialdata():
    sdata = ss.datasets.synthetic_tissue(n_cells=200, n_genes=12, spot_layouts=(), image=False)
    ss.pp.build_graph(sdata, method="knn", n_neighs=5)
    table = sdata.tables["table"]
    table.obsm["feat"] = np.asarray(table.obsm["spatial"], dtype=float)
    ss.pp.aggregate_neighbors(sdata, n_hops=1, use_rep="feat")
    adjacency = table.obsp["spatial_connectivities"]
    i = 7
    ring = adjacency[i].indices
    np.testing.assert_allclose(table.obsm["X_nhood"][i, 2:], table.obsm["feat"][ring].mean(0), rtol=1e-5)


def test_errors_are_clear_and_raised_before_work():
    adata = _adata(FEAT, _graph(6, EDGES))
    with pytest.raises(ValueError, match="aggregations"):
        ss.pp.aggregate_neighbors(adata, use_rep="feat", aggregations=("median",))
    with pytest.raises(ValueError, match="n_hops"):
        ss.pp.aggregate_neighbors(adata, use_rep="feat", n_hops=-1)
    with pytest.raises(KeyError, match="aggregate_neighbors"):
        ss.pp.aggregate_neighbors(adata, use_rep="X_nhood")
    with pytest.raises(KeyError, match="pretrain_mask"):
        ss.pp.aggregate_neighbors(adata, use_rep="X_pretrain_mask")
    with pytest.raises(ValueError, match="not a valid name"):
        ss.pp.aggregate_neighbors(adata, use_rep="feat", key_added="bad key")
    no_graph = ad.AnnData(np.ones((6, 2)))
    no_graph.obsm["feat"] = FEAT
    with pytest.raises(KeyError, match="build_graph"):
        ss.pp.aggregate_neighbors(no_graph, use_rep="feat")
    ss.pp.aggregate_neighbors(adata, use_rep="feat")
    with pytest.raises(KeyError, match="overwrite=True"):
        ss.pp.aggregate_neighbors(adata, use_rep="feat", n_hops=1)
    ss.pp.aggregate_neighbors(adata, use_rep="feat", n_hops=1, overwrite=True)
    assert adata.obsm["X_nhood"].shape == (6, 4)
    nan = _adata(np.array([[np.nan]] * 6), _graph(6, EDGES))
    with pytest.raises(ValueError, match="NaN"):
        ss.pp.aggregate_neighbors(nan, use_rep="feat")
