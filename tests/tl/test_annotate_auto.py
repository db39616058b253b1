"""ss.tl.annotate(method="auto"): spatially blocked cross-validation on the labelled cells only, rare classes kept,
the winner refitted; and the degenerate-graph error of the graph encoders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sslspatial as ss
from sslspatial.tl._annotate_select import DEFAULT_ENSEMBLE, Candidate, blocked_folds, cross_validate

from .test_pretrain import SMALL, tissue


def test_blocked_folds_keep_blocks_together_and_every_class_trainable():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 90, (300, 2))
    codes = rng.integers(0, 3, 300)
    codes[7] = 3  # a class with a single labelled cell
    codes[[11, 12]] = 4  # two cells of a class next to each other (same block)
    xy[12] = xy[11] + 0.1
    labelled = np.arange(300)
    folds = blocked_folds(xy, codes, labelled, n_folds=3, blocks_per_fold=3, seed=1)
    lo, side = xy.min(0), (xy.max(0) - xy.min(0)).max() / 3  # 3 x 3 blocks spanning the data
    cell = np.minimum(np.floor((xy - lo) / side), 2)
    block = (cell[:, 0] * 3 + cell[:, 1]).astype(int)
    for b in np.unique(block):
        assert len(set(folds[(block == b) & (folds >= 0)].tolist())) <= 1  # a block is never split across folds
    assert folds[7] == -1 and (folds[[11, 12]] == -1).all()  # cannot be validated: they always train
    for c in range(5):
        for f in range(3):
            if np.any((codes == c) & (folds == f)):
                assert np.any((codes == c) & (folds != f))  # validated only where the class still trains
    assert set(folds.tolist()) >= {0, 1, 2}


def test_cross_validate_picks_the_candidate_that_predicts_held_out_labels():
    codes = np.repeat([0, 1], 50)
    labelled = np.arange(100)
    folds = np.tile([0, 1], 50)
    good, bad = Candidate("linear", 1.0), Candidate("expression", 1.0)

    def fit_predict(cand, train_idx, predict_idx):
        assert not np.intersect1d(train_idx, predict_idx).size  # out of fold
        hits = codes[predict_idx] if cand is good else 1 - codes[predict_idx]
        return np.eye(2)[hits]

    sel = cross_validate(fit_predict, [bad, good], codes, labelled, folds)
    assert sel.chosen == good.name and sel.scores[good.name] == 1.0 and sel.scores[bad.name] == 0.0
    assert not sel.fallback and sel.n_folds == 2 and sel.n_validated == 100
    fallback = cross_validate(fit_predict, [bad, good], codes, labelled, np.full(100, -1))
    assert fallback.fallback and fallback.chosen == bad.name  # nothing to validate: the first candidate


def test_cross_validate_scores_the_ensemble_of_the_best_candidates():
    """Two candidates each right on half the cells (confidently) and wrong on the other half (barely): alone they
    score 0.5 accuracy, their mean probabilities are right everywhere, so the ensemble of the best two wins."""
    codes = np.tile([0, 1], 50)
    labelled, folds = np.arange(100), np.repeat([0, 1], 50)
    first, second, wrong = Candidate("linear", 1.0), Candidate("expression", 1.0), Candidate("pca")

    def fit_predict(cand, train_idx, predict_idx):
        truth = np.eye(2)[codes[predict_idx]]
        right_half = (predict_idx % 4 < 2) if cand is first else (predict_idx % 4 >= 2)
        if cand is wrong:
            return 1 - truth
        return np.where(right_half[:, None], 0.9 * truth + 0.1 * (1 - truth), 0.45 * truth + 0.55 * (1 - truth))

    sel = cross_validate(fit_predict, [first, wrong, second], codes, labelled, folds, ensemble=2)
    assert sel.chosen == "ensemble(top 2)" and sel.scores["ensemble(top 2)"] == 1.0
    assert sel.members == [first.name, second.name]  # ranked by score, ties in candidate order
    assert max(sel.scores[c.name] for c in (first, second, wrong)) < 0.6
    # three members: the always-wrong candidate drags the mean below the single candidates' ties -> not chosen
    sel3 = cross_validate(fit_predict, [first, wrong, second], codes, labelled, folds, ensemble=3)
    assert sel3.chosen == first.name and sel3.members == [] and "ensemble(top 3)" in sel3.scores
    off = cross_validate(fit_predict, [first, wrong, second], codes, labelled, folds, ensemble=0)
    assert not any(name.startswith("ensemble") for name in off.scores)


def test_auto_refits_and_averages_the_ensemble_members(monkeypatch):
    """When the ensemble is chosen, the probabilities are the mean of its members refitted on all labelled cells."""
    from sslspatial.tl import _annotate, _annotate_select

    adata = tissue(n=300)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    members = ["expression(C=0.1)", "PCA + logreg"]

    def chosen_ensemble(*args, **kwargs):
        return _annotate_select.Selection("ensemble(top 2)", {"ensemble(top 2)": 1.0}, 3, 10, [], False, members)

    monkeypatch.setattr(_annotate_select, "cross_validate", chosen_ensemble)
    ss.tl.annotate(adata, model, "cell_type", train_indices=train)
    record = adata.uns["annotate"]
    assert record["kind"] == "ensemble" and record["members"] == members
    classes = np.array(record["classes"])
    codes = np.full(adata.n_obs, -1)
    codes[train] = np.searchsorted(classes, adata.obs["cell_type"].astype(str).to_numpy()[train])
    expression = _annotate._features(model, "expression", 30)
    plain = _annotate._features(model, "pca", 30)
    expected = (
        _annotate_select.fit_logreg(expression, codes, train, classes.size, 0.1, False)
        + _annotate_select.fit_logreg(plain, codes, train, classes.size, 1.0, False, balanced=False)
    ) / 2
    np.testing.assert_allclose(adata.obsm["annotate_probabilities"], expected, atol=1e-8)


def test_auto_never_reads_evaluation_labels():
    adata = tissue(n=300)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, model, "cell_type", train_indices=train)
    first = adata.uns["annotate"].copy()
    proba = adata.obsm["annotate_probabilities"].copy()
    shuffled = adata.obs["cell_type"].astype(str).to_numpy().copy()
    evaluation = np.setdiff1d(np.arange(adata.n_obs), train)
    shuffled[evaluation] = np.random.default_rng(0).permutation(shuffled[evaluation])
    adata.obs["cell_type"] = pd.Categorical(shuffled)
    ss.tl.annotate(adata, model, "cell_type", train_indices=train, overwrite=True)
    assert adata.uns["annotate"]["chosen"] == first["chosen"]
    assert adata.uns["annotate"]["scores"] == first["scores"]
    np.testing.assert_array_equal(adata.obsm["annotate_probabilities"], proba)
    # linear / expression / residuals x C in (0.1, 1) x self-training off / on, + the baseline, + the ensemble
    assert len(first["scores"]) == 14 and f"ensemble(top {DEFAULT_ENSEMBLE})" in first["scores"]
    assert "residuals(C=0.1)" in first["scores"]
    assert first["n_folds"] == 3 and not first["fallback"]
    # the yardstick: plain PCA + logreg, a candidate scored on the same folds (the two types differ strongly)
    assert first["baseline"]["name"] == "PCA + logreg" and 0.9 < first["baseline"]["cv_macro_f1"] <= 1.0
    assert first["baseline"]["cv_macro_f1"] == first["scores"]["PCA + logreg"]


def test_pca_candidate_is_exactly_the_plain_baseline():
    """With the baseline as the only candidate, annotate refits sklearn's plain logistic regression on 30 PCs of the
    log1p-normalised expression: the probabilities match a brute-force fit, and its CV score is the recorded one."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    adata = tissue(n=300, n_genes=40)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, model, "cell_type", train_indices=train, candidates=["pca"])
    record = adata.uns["annotate"]
    assert record["chosen"] == "PCA + logreg" and record["kind"] == "pca"
    assert (
        list(record["scores"]) == ["PCA + logreg"]
        and record["baseline"]["cv_macro_f1"] == record["scores"]["PCA + logreg"]
    )
    counts = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X, dtype=float)
    logged = np.log1p(1e4 * counts / counts.sum(1, keepdims=True))
    pcs = PCA(30, random_state=0).fit_transform(logged)
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    clf = LogisticRegression(max_iter=3000).fit(pcs[train], truth[train])  # what a user writes: sklearn's defaults
    expected = pd.DataFrame(clf.predict_proba(pcs), columns=clf.classes_)
    assert adata.uns["annotate"]["classes"] == list(clf.classes_)
    got = adata.obsm["annotate_probabilities"]
    np.testing.assert_allclose(got, expected.to_numpy(), atol=1e-6)


def test_residuals_candidate_probes_pcs_of_pearson_residuals():
    """The ``"residuals"`` features are the standardised PCs of brute-force Pearson residuals (theta 100, clipped at
    sqrt(n)); a model on already-normalised values (gaussian) does not offer the candidate."""
    from sklearn.decomposition import PCA

    from sslspatial.tl import _annotate

    adata = tissue(n=300, n_genes=40)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    counts = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X, dtype=float)
    mu = np.outer(counts.sum(1), counts.sum(0)) / counts.sum()
    residuals = np.clip((counts - mu) / np.sqrt(mu + mu**2 / 100), -np.sqrt(300), np.sqrt(300))
    pcs = PCA(30, random_state=0).fit_transform(residuals)
    expected = (pcs - pcs.mean(0)) / pcs.std(0)
    np.testing.assert_allclose(_annotate._features(model, "residuals", 30), expected, atol=1e-6)

    adata.layers["logged"] = np.log1p(counts)
    gaussian = ss.tl.pretrain_mask(adata, mask="entries", likelihood="gaussian", layer="logged", key_added="g", **SMALL)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, gaussian, "cell_type", train_indices=train, overwrite=True)
    assert not any(name.startswith("residuals") for name in adata.uns["annotate"]["scores"])


def test_gaussian_default_pool_has_the_standardised_features_baseline_as_safety_net():
    """On already-normalised values the default pool is linear / expression / "scaled" (no unweighted PCA baseline);
    the "scaled" candidate is every input feature standardised + class-balanced logistic regression, by hand."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sslspatial.tl import _annotate
    from sslspatial.tl._annotate_select import SCALED_NAME

    adata = tissue(n=300, n_genes=40)
    counts = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X, dtype=float)
    adata.layers["logged"] = np.log1p(counts)
    model = ss.tl.pretrain_mask(adata, mask="entries", likelihood="gaussian", layer="logged", key_added="g", **SMALL)
    expected = StandardScaler().fit_transform(np.log1p(counts))
    np.testing.assert_allclose(_annotate._features(model, "scaled", 30), expected, atol=1e-5)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, model, "cell_type", train_indices=train, ensemble=0, overwrite=True)
    scores = adata.uns["annotate"]["scores"]
    assert SCALED_NAME in scores and "PCA + logreg" not in scores  # the safety net is the standardised baseline
    ss.tl.annotate(adata, model, "cell_type", train_indices=train, candidates=["scaled"], overwrite=True)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    clf = LogisticRegression(class_weight="balanced", max_iter=3000).fit(expected[train], codes[train])
    classes = list(adata.obs["cell_type"].cat.categories)
    order = [list(adata.uns["annotate"]["classes"]).index(c) for c in classes]
    got = np.asarray(adata.obsm["annotate_probabilities"])[:, order]
    np.testing.assert_allclose(got, clf.predict_proba(expected), atol=1e-4)


def test_auto_keeps_a_class_with_a_single_label_and_records_the_fallback():
    adata = tissue(n=300)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    labels = adata.obs["cell_type"].astype(str).to_numpy().astype(object)
    rare = int(np.flatnonzero(labels == "B")[0])
    labels[rare] = "C"  # one labelled cell of class C
    labels[adata.obs["section"].to_numpy() == "s2"] = None
    labels[rare] = "C"
    adata.obs["labels"] = labels
    ss.tl.annotate(adata, model, "labels", library_key="section")
    record = adata.uns["annotate"]
    assert record["classes"] == ["A", "B", "C"]
    assert adata.obsm["annotate_probabilities"].shape == (adata.n_obs, 3)
    assert record["never_validated_classes"] == [2]  # code of "C": trained on, never validated
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    test = labels == None  # noqa: E711
    pred = adata.obs["annotate_prediction"].astype(str).to_numpy()
    assert (pred[test] == truth[test]).mean() > 0.8


def test_auto_with_finetune_candidate_and_bad_candidates():
    adata = tissue(n=200)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    out = ss.tl.annotate(
        adata, model, "cell_type", train_indices=train, candidates=["finetune", "expression"], max_epochs=3
    )
    assert "finetune" in adata.uns["annotate"]["scores"]
    assert (out is model) == (adata.uns["annotate"]["kind"] != "finetune")
    with pytest.raises(ValueError, match="candidates"):
        ss.tl.annotate(adata, model, "cell_type", candidates=["svm"], overwrite=True)
    with pytest.raises(ValueError, match="n_folds"):
        ss.tl.annotate(adata, model, "cell_type", n_folds=1, overwrite=True)


@pytest.mark.parametrize("isolated", ["none", "most"])
def test_graph_encoders_refuse_a_degenerate_graph_before_training(isolated):
    adata = tissue()
    graph = sp.csr_matrix((adata.n_obs, adata.n_obs))
    if isolated == "most":
        graph = sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(adata.n_obs, adata.n_obs))
    adata.obsp["spatial_connectivities"] = graph
    with pytest.raises(ValueError, match="build_graph.*radius"):
        ss.tl.pretrain_mask(adata, **SMALL)
    assert "X_pretrain_mask" not in adata.obsm
    ss.tl.pretrain_mask(adata, mask="entries", encoder="mlp", **SMALL)  # no graph needed
