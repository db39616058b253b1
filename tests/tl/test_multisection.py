"""Several sections (issue 29): section-held-out CV, the path without the embedding, section centring, pseudo-labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sslspatial as ss
from sslspatial.tl import _annotate, _annotate_select
from sslspatial.tl._annotate_select import section_folds
from sslspatial.tl._domains import smooth_features

from .test_pretrain import SMALL, tissue


def test_section_folds_hold_out_whole_sections_and_keep_every_class_trainable():
    codes = np.array([0, 1, 0, 1, 2, 0, 1, 2])
    sections = np.array(["b", "b", "a", "a", "a", "c", "c", "c"])
    labelled = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    # folds follow the order in which the sections appear among the labelled cells: b -> 0, a -> 1, c -> 2; class 2
    # is in sections a and c only, so each of its cells keeps training cells in the other section
    assert section_folds(codes, labelled, sections).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    # a class present in a single section cannot be validated (its fold would hold every cell of it)
    codes_single = np.array([0, 1, 0, 1, 2, 0, 1, 0])
    assert section_folds(codes_single, labelled, sections).tolist() == [0, 0, 1, 1, -1, 2, 2, 2]
    # only labelled cells are assigned; unlabelled rows do not create folds
    assert section_folds(codes, np.array([2, 3, 5, 6]), sections).tolist() == [0, 0, 1, 1]


def _two_sections(n=300):
    adata = tissue(n=n, n_genes=12)
    return adata, np.flatnonzero(adata.obs["cell_type"].notna().to_numpy())


def test_annotate_cv_sections_uses_one_fold_per_labelled_section():
    adata, labelled = _two_sections()
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    ss.tl.annotate(adata, model, "cell_type", library_key="section", cv="sections", ensemble=0)
    record = adata.uns["annotate"]
    assert record["cv"] == "sections" and record["n_folds"] == adata.obs["section"].nunique() == 2
    ss.tl.annotate(adata, model, "cell_type", library_key="section", cv="auto", overwrite=True, ensemble=0)
    assert adata.uns["annotate"]["cv"] == "sections"  # two labelled sections
    one = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, model, "cell_type", library_key="section", cv="auto", train_indices=one, overwrite=True)
    assert adata.uns["annotate"]["cv"] == "blocks" and adata.uns["annotate"]["n_folds"] == 3
    with pytest.raises(ValueError, match="library_key"):
        ss.tl.annotate(adata, model, "cell_type", cv="sections", overwrite=True)


def test_annotate_without_the_embedding_never_reads_the_model(monkeypatch):
    from sslspatial.model import SpatialPretrainModel

    adata, _ = _two_sections()
    train = np.flatnonzero(adata.obs["section"] == "s1")
    candidates = ("expression", "residuals", "pca")
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)

    def refuse(*args, **kwargs):
        raise AssertionError("the embedding was read")

    monkeypatch.setattr(SpatialPretrainModel, "get_latent_representation", refuse)
    monkeypatch.setattr(SpatialPretrainModel, "predict_proba", refuse)
    ss.tl.annotate(adata, model, "cell_type", train_indices=train, candidates=candidates)
    with_model = np.asarray(adata.obsm["annotate_probabilities"]).copy()
    ss.tl.annotate(adata, None, "cell_type", train_indices=train, candidates=candidates, overwrite=True)
    np.testing.assert_array_equal(np.asarray(adata.obsm["annotate_probabilities"]), with_model)
    ss.tl.annotate(adata, None, "cell_type", train_indices=train, method="expression", key_added="none")
    assert adata.uns["none"]["method"] == "expression"
    with pytest.raises(AssertionError, match="embedding was read"):  # the default candidates do read it
        ss.tl.annotate(adata, model, "cell_type", train_indices=train, overwrite=True)
    with pytest.raises(ValueError, match="model=None"):
        ss.tl.annotate(adata, None, "cell_type", overwrite=True)  # the default candidates include the embedding


def test_center_sections_subtracts_each_sections_mean_from_the_probe_features():
    adata, _ = _two_sections()
    train = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, None, "cell_type", method="expression", train_indices=train, library_key="section")
    ss.tl.annotate(
        adata,
        None,
        "cell_type",
        method="expression",
        train_indices=train,
        library_key="section",
        center_sections=True,
        key_added="centred",
    )
    features = _annotate._features(None, "expression", 30, adata)
    sections = adata.obs["section"].astype(str).to_numpy()
    centred = features.copy()
    for s in np.unique(sections):  # by hand
        centred[sections == s] -= features[sections == s].mean(0)
    classes = np.array(sorted(adata.obs["cell_type"].astype(str).unique()))
    codes = np.full(adata.n_obs, -1)
    codes[train] = np.searchsorted(classes, adata.obs["cell_type"].astype(str).to_numpy()[train])
    expected = _annotate_select.fit_logreg(centred, codes, train, classes.size, 1.0, False)
    np.testing.assert_allclose(
        np.asarray(adata.obsm["centred_probabilities"])[:, [adata.uns["centred"]["classes"].index(c) for c in classes]],
        expected,
        atol=1e-10,
    )
    assert not np.allclose(np.asarray(adata.obsm["annotate_probabilities"]), expected)


def test_pseudolabels_joint_cluster_section_centred_features(monkeypatch):
    """cluster_sections='joint': one clustering of all cells on per-section centred PCs (plus niche means)."""
    from sslspatial.tl import _pretrain

    adata = tissue(n=240, n_genes=12)
    seen = {}
    original = _pretrain.kmeans_pseudolabels

    def spy(features, sections=None, *args, **kwargs):
        seen["features"], seen["sections"] = features, sections
        return original(features, sections, *args, **kwargs)

    monkeypatch.setattr(_pretrain, "kmeans_pseudolabels", spy)
    ss.tl.pretrain_pseudolabel(adata, cluster_sections="joint", niche=1, library_key="section", **SMALL)
    assert seen["sections"] is None
    sections = adata.obs["section"].astype(str).to_numpy()
    for s in np.unique(sections):
        np.testing.assert_allclose(seen["features"][sections == s].mean(0), 0.0, atol=1e-8)
    # the niche half is the closed-neighbourhood mean of the own half (before centring, so compare differences)
    own = _pretrain.pseudolabel_features(adata, None, 30)
    context = smooth_features(adata.obsp["spatial_connectivities"], own, 1)
    expected = np.hstack([own, context])
    for s in np.unique(sections):
        rows = sections == s
        np.testing.assert_allclose(seen["features"][rows], expected[rows] - expected[rows].mean(0), atol=1e-6)
    ss.tl.pretrain_pseudolabel(adata, library_key="section", overwrite=True, **SMALL)
    np.testing.assert_array_equal(seen["sections"], sections)  # default: each section clustered on its own


def test_domains_without_the_embedding_never_reads_it():
    adata = tissue(n=200)
    ss.tl.domains(adata, n_domains=2, use_rep="X")
    first = adata.obs["domains"].copy()
    adata.obsm["X_pretrain_pseudolabel"] = np.full((adata.n_obs, 3), np.nan)  # unusable if it were read
    ss.tl.domains(adata, n_domains=2, use_rep="X", overwrite=True)
    pd.testing.assert_series_equal(adata.obs["domains"], first)
