"""Tests of ss.tl.domains: recovery of known domains, smoothing, per-section clustering, errors, real osmFISH data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

import sslspatial as ss
from sslspatial.tl._domains import features, smooth_features, standardize_block


def _blobs(n_per: int = 60, n_blobs: int = 3, sections: int = 1, seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    """Cells in well-separated feature blobs (distance 20, sd 1): any sensible clustering recovers them exactly."""
    rng = np.random.default_rng(seed)
    truth = np.tile(np.repeat(np.arange(n_blobs), n_per), sections)
    centres = 20.0 * np.eye(n_blobs, 4)
    feat = centres[truth] + rng.normal(size=(truth.size, 4))
    adata = ad.AnnData(np.ones((truth.size, 2), dtype=np.float32))
    adata.obsm["emb"] = feat
    adata.obs["section"] = pd.Categorical(np.repeat([f"s{i}" for i in range(sections)], n_per * n_blobs))
    return adata, truth


def _grid_two_halves(side: int = 20, noise: float = 1.6, seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    """A side x side grid, left half domain 0, right half domain 1; features = domain mean (+-1) + heavy noise."""
    rng = np.random.default_rng(seed)
    xx, yy = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.c_[xx.ravel(), yy.ravel()].astype(float)
    truth = (coords[:, 0] >= side / 2).astype(int)
    feat = np.c_[2.0 * truth - 1.0, np.zeros(truth.size)] + rng.normal(scale=noise, size=(truth.size, 2))
    adata = ad.AnnData(np.ones((truth.size, 2), dtype=np.float32))
    adata.obsm["spatial"] = coords
    adata.obsm["emb"] = feat
    ss.pp.build_graph(adata, method="knn", n_neighs=8)
    return adata, truth


def test_gmm_recovers_separated_domains_and_orders_labels_by_size():
    adata, truth = _blobs()
    adata = adata[np.r_[0:60, 60:90, 120:180]].copy()  # sizes 60, 30, 60
    truth = truth[np.r_[0:60, 60:90, 120:180]]
    ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=3, smooth=0)
    labels = adata.obs["domains"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert list(labels.cat.categories) == ["0", "1", "2"]
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels.value_counts()["2"] == 30  # the smallest domain gets the last label
    assert labels.iloc[0] == "0"  # size tie between blobs 0 and 2: the first seen comes first
    params = adata.uns["domains"]["params"]
    assert params == {
        "use_rep": "emb",
        "method": "gmm",
        "per_section": False,
        "smooth": 0,
        "seed": 0,
        "n_domains": 3,
        "n_init": 2,
    }


def test_several_initialisations_escape_the_local_optimum_of_one():
    """12 blobs on a grid: single-initialisation mixtures of seeds 1 and 15 merge two blobs; the default 2 starts do not."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    centres = 5.0 * np.array([[i, j] for i in range(4) for j in range(3)], dtype=float)
    truth = np.repeat(np.arange(12), 30)
    adata = ad.AnnData(np.ones((truth.size, 2), dtype=np.float32))
    adata.obsm["emb"] = centres[truth] + rng.normal(size=(truth.size, 2))
    for seed in (1, 15):
        ss.tl.domains(
            adata, use_rep="emb", n_domains=12, smooth=0, seed=seed, n_init=1, key_added="one", overwrite=True
        )
        ss.tl.domains(adata, use_rep="emb", n_domains=12, smooth=0, seed=seed, key_added="five", overwrite=True)
        assert adjusted_rand_score(truth, adata.obs["one"]) < 0.85
        assert adjusted_rand_score(truth, adata.obs["five"]) > 0.93
        brute = GaussianMixture(12, covariance_type="diag", reg_covar=1e-4, random_state=seed, n_init=2)
        assert adjusted_rand_score(brute.fit_predict(adata.obsm["emb"]), adata.obs["five"]) == 1.0
    with pytest.raises(ValueError, match="n_init"):
        ss.tl.domains(adata, use_rep="emb", n_domains=3, smooth=0, n_init=0, key_added="x")


def test_leiden_resolution_search_hits_the_requested_number():
    adata, truth = _blobs(n_blobs=4)
    ss.tl.domains(adata, use_rep="emb", method="leiden", n_domains=4, smooth=0, key_added="leiden_domains")
    labels = adata.obs["leiden_domains"]
    assert labels.nunique() == 4
    assert adjusted_rand_score(truth, labels) == 1.0
    assert adata.uns["leiden_domains"]["resolution"]["all"] > 0


def test_leiden_without_n_domains_uses_the_resolution_and_is_deterministic():
    adata, _ = _blobs()
    ss.tl.domains(adata, use_rep="emb", method="leiden", resolution=0.5, smooth=0)
    first = adata.obs["domains"].to_numpy()
    assert adata.uns["domains"]["resolution"]["all"] == 0.5
    ss.tl.domains(adata, use_rep="emb", method="leiden", resolution=0.5, smooth=0, overwrite=True)
    np.testing.assert_array_equal(first, adata.obs["domains"].to_numpy())


def test_per_section_clusters_each_section_and_prefixes_labels():
    adata, truth = _blobs(sections=2)
    ss.tl.domains(adata, use_rep="emb", n_domains=3, smooth=0, per_section=True, library_key="section")
    labels = adata.obs["domains"].astype(str)
    for s in ("s0", "s1"):
        mask = (adata.obs["section"] == s).to_numpy()
        assert set(labels[mask]) == {f"{s}_0", f"{s}_1", f"{s}_2"}
        assert adjusted_rand_score(truth[mask], labels[mask]) == 1.0
    # jointly, the same domains in both sections share labels
    ss.tl.domains(adata, use_rep="emb", n_domains=3, smooth=0, overwrite=True)
    assert adjusted_rand_score(truth, adata.obs["domains"]) == 1.0
    assert adata.obs["domains"].nunique() == 3


def test_smooth_features_is_the_closed_neighbourhood_mean():
    path = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float) * 5.0)  # weights ignored
    rep = np.array([[0.0], [3.0], [6.0]])
    once = smooth_features(path, rep, 1)
    np.testing.assert_allclose(once.ravel(), [1.5, 3.0, 4.5])
    twice = smooth_features(path, rep, 2)
    np.testing.assert_allclose(twice.ravel(), [2.25, 3.0, 3.75])


def test_smoothing_makes_noisy_domains_recoverable():
    adata, truth = _grid_two_halves()
    ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=2, smooth=0, key_added="raw")
    ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=2, smooth=3, key_added="smoothed")
    raw = adjusted_rand_score(truth, adata.obs["raw"])
    smoothed = adjusted_rand_score(truth, adata.obs["smoothed"])
    assert smoothed > 0.8
    assert smoothed > raw + 0.3
    assert adata.uns["smoothed"]["params"]["smooth"] == 3


def test_pca_of_counts_and_spatialdata_input():
    sdata = ss.datasets.synthetic_tissue(n_cells=300, n_genes=20, n_domains=3, spot_layouts=(), image=False)
    ss.tl.domains(sdata, use_rep="X", method="gmm", n_domains=3, smooth=0)
    table = sdata.tables["table"]
    assert table.obs["domains"].nunique() == 3
    assert "X_pca" not in table.obsm  # the on-the-fly PCA is not stored
    # the clustering follows expression: cell types (which drive expression) are far from random in each domain
    assert adjusted_rand_score(table.obs["cell_type"], table.obs["domains"]) > 0.1


def test_errors_are_clear_and_raised_before_work():
    adata, _ = _blobs()
    with pytest.raises(ValueError, match="method"):
        ss.tl.domains(adata, use_rep="emb", method="kmeans", n_domains=3, smooth=0)
    with pytest.raises(KeyError, match=r"ss\.tl\.pretrain_mask"):
        ss.tl.domains(adata, use_rep="X_pretrain_mask", n_domains=3, smooth=0)
    with pytest.raises(KeyError, match="aggregate_neighbors"):
        ss.tl.domains(adata, use_rep="X_nhood", method="gmm", n_domains=3, smooth=0)
    with pytest.raises(KeyError, match="build_graph"):
        ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=3, smooth=1)
    with pytest.raises(KeyError, match="build_graph"):
        ss.tl.domains(adata, use_rep="emb", n_domains=3)  # the default smoothing needs a graph
    with pytest.raises(KeyError, match="n_hops=2 needs a spatial graph"):
        ss.tl.domains(adata, use_rep="emb", n_domains=3, smooth=0, n_hops=2)
    with pytest.raises(ValueError, match="smooth"):
        ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=3, smooth=-1)
    with pytest.raises(ValueError, match="n_hops"):
        ss.tl.domains(adata, use_rep="emb", n_domains=3, smooth=0, n_hops=-1)
    with pytest.raises(TypeError, match="use_rep"):
        ss.tl.domains(adata, use_rep=[], n_domains=3, smooth=0)
    with pytest.raises(ValueError, match=r"n_domains=1000: n_domains must be at most 36 on 180 cells"):
        ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=1000, smooth=0)
    with pytest.raises(
        ValueError, match=r"autok_range=\(2, 500\): .* the 180 cells .* Pass e\.g\. autok_range=\(2, 180\)"
    ):
        ss.tl.domains(adata, use_rep="emb", smooth=0, autok_range=(2, 500))
    with pytest.raises(ValueError, match="autok_range"):
        ss.tl.domains(adata, use_rep="emb", smooth=0, autok_range=(5, 2))
    with pytest.raises(ValueError, match="autok_runs"):
        ss.tl.domains(adata, use_rep="emb", smooth=0, autok_runs=1)
    with pytest.raises(KeyError, match="library_key"):
        ss.tl.domains(adata, use_rep="emb", n_domains=3, smooth=0, per_section=True, library_key="nope")
    assert "domains" not in adata.obs
    ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=3, smooth=0)
    with pytest.raises(KeyError, match="overwrite=True"):
        ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=3, smooth=0)


def test_joint_clustering_centres_sections_so_domains_not_sections_are_found():
    """Two sections with the same 3 domains, the second shifted far away: centring recovers the domains."""
    adata, truth = _blobs(sections=2)
    shift = np.where((adata.obs["section"] == "s1").to_numpy()[:, None], 100.0, 0.0)
    adata.obsm["emb"] = adata.obsm["emb"] + shift
    kwargs = {"use_rep": "emb", "n_domains": 3, "smooth": 0, "library_key": "section"}
    ss.tl.domains(adata, center_sections=False, key_added="raw", **kwargs)
    ss.tl.domains(adata, key_added="centred", **kwargs)
    assert adjusted_rand_score(truth, adata.obs["raw"]) < 0.7  # one mixture component taken by a whole section
    assert adjusted_rand_score(truth, adata.obs["centred"]) == 1.0
    assert adata.uns["centred"]["params"]["center_sections"] is True
    assert "center_sections" not in adata.uns["raw"]["params"]
    # by hand: each section's mean subtracted before clustering
    sections = adata.obs["section"].to_numpy()
    expected = adata.obsm["emb"].copy()
    for section in ("s0", "s1"):
        expected[sections == section] -= adata.obsm["emb"][sections == section].mean(axis=0)
    np.testing.assert_allclose(features(adata, "emb", sections=sections), expected)


def test_features_by_hand_on_a_path_graph():
    """Blocks standardised and concatenated, ring means appended, then closed-neighbourhood smoothing."""
    path = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))  # 0 - 1 - 2
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    adata.obsp["spatial_connectivities"] = path
    adata.obsm["a"] = np.array([[0.0], [3.0], [6.0]])
    adata.obsm["b"] = np.array([[1.0], [1.0], [4.0]])
    a_std = np.array([-3.0, 0.0, 3.0]) / np.sqrt(6.0)  # centred, mean squared norm 1
    b_std = np.array([-1.0, -1.0, 2.0]) / np.sqrt(2.0)
    np.testing.assert_allclose(features(adata, ["a", "b"]), np.c_[a_std, b_std])
    a = np.array([0.0, 3.0, 6.0])  # a single representation is used as it is
    np.testing.assert_allclose(features(adata, "a"), a[:, None])
    # ring 1 of node 0 is {1}, of node 1 is {0, 2}, of node 2 is {1}; ring 2 of node 0 is {2}, of node 1 empty
    hop = features(adata, "a", n_hops=2)
    np.testing.assert_allclose(hop[:, 1], [a[1], (a[0] + a[2]) / 2, a[1]])
    np.testing.assert_allclose(hop[:, 2], [a[2], 0.0, a[0]])
    smoothed = features(adata, "a", smooth=1)
    np.testing.assert_allclose(smoothed.ravel(), [(a[0] + a[1]) / 2, a.sum() / 3, (a[1] + a[2]) / 2])
    np.testing.assert_allclose(standardize_block(np.array([[0.0, 0.0], [2.0, 4.0]])), [[-1, -2], [1, 2]] / np.sqrt(5))


def test_autok_recovers_the_true_number_of_domains_and_records_the_curve():
    sdata = ss.datasets.synthetic_tissue(
        n_cells=3000, n_genes=30, n_cell_types=4, n_domains=4, spot_layouts=(), image=False, seed=0
    )
    ss.pp.build_graph(sdata, method="knn", n_neighs=10)
    ss.tl.domains(sdata, autok_range=(2, 6), key_added="auto")
    table = sdata.tables["table"]
    curve = table.uns["auto"]["autok"]["all"]
    assert list(curve["k"]) == [2, 3, 4, 5, 6]
    assert curve["n_domains"] == 4 == table.obs["auto"].nunique()
    assert int(np.argmax(curve["stability"])) == 2 and curve["stability"][2] > 0.95
    assert table.uns["auto"]["params"]["autok_range"] == [2, 6]
    assert adjusted_rand_score(table.obs["domain"], table.obs["auto"]) > 0.7
    # the kept clustering is the most likely of the runs (seeds 0..autok_runs-1) at the chosen K
    from sklearn.mixture import GaussianMixture

    rep = features(table, "X", smooth=ss.tl._domains.DEFAULT_SMOOTH)
    fits = [GaussianMixture(4, covariance_type="diag", reg_covar=1e-4, random_state=s).fit(rep) for s in range(5)]
    best = max(fits, key=lambda m: m.score(rep))
    assert adjusted_rand_score(best.predict(rep), table.obs["auto"]) == 1.0


def test_autok_per_section_records_one_curve_per_section():
    adata, truth = _blobs(sections=2)
    ss.tl.domains(adata, use_rep="emb", smooth=0, per_section=True, library_key="section", autok_range=(2, 5))
    curves = adata.uns["domains"]["autok"]
    assert set(curves) == {"s0", "s1"}
    assert all(c["n_domains"] == 3 for c in curves.values())
    for section in ("s0", "s1"):
        mask = (adata.obs["section"] == section).to_numpy()
        assert adjusted_rand_score(truth[mask], adata.obs["domains"][mask]) == 1.0


@pytest.mark.slow
def test_osmfish_neighbourhood_aggregation_beats_pca(shared_data):
    """Real data: on osmFISH, Leiden domains of CellCharter-style aggregates match the 11 regions better than PCA."""
    adata = ss.datasets.osmfish(path=shared_data / "osmfish").tables["table"]
    regions = adata.obs["anatomical_region"]
    ss.pp.build_graph(adata, method="knn", n_neighs=10)
    ss.pp.aggregate_neighbors(adata, n_hops=2, use_rep="X")
    ss.tl.domains(adata, use_rep="X", method="leiden", n_domains=11, smooth=0, key_added="pca_domains")
    ss.tl.domains(adata, use_rep="X_nhood", method="leiden", n_domains=11, smooth=0, key_added="nhood_domains")
    ari_pca = adjusted_rand_score(regions, adata.obs["pca_domains"])
    ari_nhood = adjusted_rand_score(regions, adata.obs["nhood_domains"])
    assert adata.obs["nhood_domains"].nunique() == 11
    assert ari_nhood > ari_pca + 0.05, (ari_nhood, ari_pca)
    assert ari_nhood > 0.45
