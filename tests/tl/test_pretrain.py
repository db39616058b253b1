"""ss.tl.pretrain_* / annotate / transfer on small synthetic data: outputs written, bad input refused before
training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

import sslspatial as ss


def tissue(n=200, n_genes=10, radius=10.0, seed=0, genes=None):
    """Two cell types on the two halves of a square, Poisson counts, radius graph, two sections."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    left = xy[:, 0] < 50
    rate = np.where(left[:, None], np.r_[[6.0] * (n_genes // 2), [1.0] * (n_genes - n_genes // 2)], 1.0)
    rate = np.where(
        left[:, None], rate, rate[:, ::-1] if False else np.r_[[1.0] * (n_genes // 2), [6.0] * (n_genes - n_genes // 2)]
    )
    adata = AnnData(rng.poisson(rate).astype(np.float32))
    adata.var_names = genes if genes is not None else [f"g{i}" for i in range(n_genes)]
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.obsm["spatial"] = xy
    adata.obs["cell_type"] = pd.Categorical(np.where(left, "A", "B"))
    adata.obs["section"] = pd.Categorical(np.where(xy[:, 1] < 50, "s1", "s2"))
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    pairs = pairs[adata.obs["section"].to_numpy()[pairs[:, 0]] == adata.obs["section"].to_numpy()[pairs[:, 1]]]
    i, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    adata.obsp["spatial_connectivities"] = sp.csr_matrix((np.ones(i.size), (i, j)), shape=(n, n))
    return adata


SMALL = {"n_latent": 4, "n_hidden": 8, "max_epochs": 2, "batch_size": 64}


@pytest.mark.parametrize(
    ("fn", "kwargs", "key"),
    [
        (ss.tl.pretrain_mask, {}, "X_pretrain_mask"),
        (
            ss.tl.pretrain_mask,
            {"mask": "programmes", "programmes": {"p1": ["g0", "g1", "nope"], "p2": ["g5"]}},
            "X_pretrain_mask",
        ),
        (ss.tl.pretrain_mask, {"mask": "celltype", "celltype_key": "cell_type", "encoder": "sage"}, "X_pretrain_mask"),
        (ss.tl.pretrain_contrastive, {"method": "barlow", "encoder": "gcn"}, "X_pretrain_contrastive"),
        (ss.tl.pretrain_contrastive, {"method": "byol", "encoder": "mlp"}, "X_pretrain_contrastive"),
        (ss.tl.pretrain_pseudolabel, {"encoder": "transformer"}, "X_pretrain_pseudolabel"),
    ],
)
def test_pretrain_functions_write_the_embedding_and_return_the_model(fn, kwargs, key):
    adata = tissue()
    model = fn(adata, **kwargs, **SMALL)
    assert isinstance(model, ss.model.SpatialPretrainModel) and model.is_trained_
    np.testing.assert_allclose(adata.obsm[key], model.get_latent_representation(), atol=1e-6)
    assert adata.obsm[key].shape == (200, 4)
    with pytest.raises(KeyError, match="overwrite=True"):
        fn(adata, **kwargs, **SMALL)


def test_pseudolabel_uses_one_clustering_per_section():
    adata = tissue()
    model = ss.tl.pretrain_pseudolabel(adata, library_key="section", **SMALL)
    counts = adata.obs["section"].value_counts()
    expected = [sum(ss.objectives.n_clusters(int(c))[r] for c in counts) for r in range(3)]
    assert model.module.objective.sizes == expected


def test_pseudolabel_gene_dropout_hides_that_share_of_the_inputs_in_training_only(monkeypatch):
    """gene_dropout: each training step encodes the inputs with about that share of entries behind the mask token."""
    adata = tissue()
    model = ss.tl.pretrain_pseudolabel(adata, gene_dropout=0.4, **SMALL)
    objective = model.module.objective
    assert objective.gene_dropout == 0.4 and not objective.uses_clean_latent
    assert ss.tl.pretrain_pseudolabel(tissue(), gene_dropout=0.0, **SMALL).module.objective.uses_clean_latent
    assert ss.tl.pretrain_pseudolabel(tissue(), **SMALL).module.objective.gene_dropout == 0.5  # the default
    seen = []
    encode = type(model.module).encode

    def spy(self, *args, mask=None, **kwargs):
        seen.append(None if mask is None else mask.float().mean().item())
        return encode(self, *args, mask=mask, **kwargs)

    monkeypatch.setattr(type(model.module), "encode", spy)
    from sslspatial.objectives._pseudolabel import kmeans_pseudolabels
    from sslspatial.tl._pretrain import pseudolabel_features

    targets, _ = kmeans_pseudolabels(pseudolabel_features(adata, None, 30, log1p=True), None)
    model.train(max_epochs=1, batch_size=64, targets={"pseudolabels": targets}, enable_progress_bar=False)
    masked = [m for m in seen if m is not None]
    assert masked and abs(np.mean(masked) - 0.4) < 0.05  # every training step hid ~40% of the entries
    seen.clear()
    model.get_latent_representation()
    assert seen and all(m is None for m in seen)  # embeddings use the whole panel
    with pytest.raises(ValueError, match="gene_dropout must be in"):
        ss.tl.pretrain_pseudolabel(tissue(), gene_dropout=1.0, **SMALL)


def test_spatialdata_input_writes_into_the_table():
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    adata = tissue()
    adata.obs["region"] = pd.Categorical(["cells"] * adata.n_obs)
    adata.obs["instance_id"] = np.arange(adata.n_obs)
    sdata = SpatialData(
        tables={"table": TableModel.parse(adata, region="cells", region_key="region", instance_key="instance_id")}
    )
    ss.tl.pretrain_mask(sdata, mask="entries", **SMALL)
    assert sdata.tables["table"].obsm["X_pretrain_mask"].shape == (200, 4)


def test_errors_before_training():
    adata = tissue()
    with pytest.raises(ValueError, match="batch_size"):
        ss.tl.pretrain_mask(adata, batch_size=500)
    bad = tissue()
    bad.X = bad.X + 0.5
    with pytest.raises(ValueError, match="likelihood='gaussian'"):
        ss.tl.pretrain_mask(bad, **SMALL)
    nograph = tissue()
    del nograph.obsp["spatial_connectivities"]
    with pytest.raises(KeyError, match=r"ss\.pp\.build_graph"):
        ss.tl.pretrain_contrastive(nograph, **SMALL)
    with pytest.raises(ValueError, match="Unknown mask"):
        ss.tl.pretrain_mask(adata, mask="genes", **SMALL)
    with pytest.raises(ValueError, match="programmes"):
        ss.tl.pretrain_mask(adata, mask="programmes", programmes={"p": ["zzz"]}, **SMALL)
    assert "X_pretrain_mask" not in adata.obsm


@pytest.mark.parametrize("method", ["auto", "knn", "linear", "expression", "finetune"])
def test_annotate_predicts_unlabelled_cells(method):
    adata = tissue()
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    labels = adata.obs["cell_type"].astype(object).copy()
    test = adata.obs["section"] == "s2"
    labels[test] = np.nan  # the s2 section is held out
    adata.obs["labels"] = labels
    out = ss.tl.annotate(adata, model, "labels", method=method, max_epochs=30)
    proba = adata.obsm["annotate_probabilities"]
    assert adata.uns["annotate"]["classes"] == ["A", "B"] and proba.shape == (adata.n_obs, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(adata.obs["annotate_train"].to_numpy(), ~test.to_numpy())
    pred = adata.obs["annotate_prediction"].astype(str).to_numpy()
    accuracy = (pred[test.to_numpy()] == adata.obs["cell_type"].astype(str).to_numpy()[test.to_numpy()]).mean()
    assert accuracy > 0.8  # the two types differ strongly in expression
    assert (out is model) == (method != "finetune")


def test_annotate_errors():
    adata = tissue()
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    with pytest.raises(KeyError, match="labels_key 'nope'"):
        ss.tl.annotate(adata, model, "nope")
    adata.obs["one"] = "A"
    with pytest.raises(ValueError, match="at least two"):
        ss.tl.annotate(adata, model, "one")
    with pytest.raises(ValueError, match="batch_size"):
        ss.tl.annotate(adata, model, "cell_type", method="finetune", train_indices=np.arange(10), batch_size=64)
    other = tissue(n=150, seed=2)
    with pytest.raises(ValueError, match="ss.tl.transfer"):
        ss.tl.annotate(other, model, "cell_type")


def test_transfer_partial_panel_then_annotate():
    ref = tissue()
    model = ss.tl.pretrain_mask(ref, mask="entries", **SMALL)
    query = tissue(n=160, seed=5)[:, [0, 1, 2, 3, 6, 7, 8]].copy()  # 7 of 10 genes
    query.var_names = [f"g{i}" for i in (0, 1, 2, 3, 6, 7, 8)]
    query_model = ss.tl.transfer(query, model)
    assert query.obsm["X_transfer"].shape == (160, 4)
    assert query_model.module.gene_present.sum() == 7
    ss.tl.annotate(query, query_model, "cell_type", method="knn")
    assert "annotate_prediction" in query.obs
    none = tissue(genes=[f"x{i}" for i in range(10)])
    with pytest.raises(ValueError, match="No gene overlap"):
        ss.tl.transfer(none, model)


def test_annotate_linear_probe_with_expression_pcs_equals_a_manual_probe():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    adata = tissue()
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    train = np.flatnonzero(adata.obs["section"] == "s1")
    ss.tl.annotate(adata, model, "cell_type", method="linear", train_indices=train, expression_pcs=3)
    # by hand: [standardised embedding, standardised PCs of the gene-standardised log1p(1e4 x / library)],
    # balanced logistic regression
    z = model.get_latent_representation()
    x = np.log1p(1e4 * adata.X.astype(float) / adata.X.sum(1, keepdims=True))
    pcs = PCA(3, random_state=0).fit_transform(np.clip((x - x.mean(0)) / x.std(0), -10, 10))
    features = np.c_[StandardScaler().fit_transform(z), StandardScaler().fit_transform(pcs)]
    clf = LogisticRegression(max_iter=1000, tol=1e-3, class_weight="balanced")
    clf.fit(features[train], adata.obs["cell_type"].astype(str).to_numpy()[train])
    np.testing.assert_allclose(adata.obsm["annotate_probabilities"], clf.predict_proba(features), atol=1e-4)
    with pytest.raises(ValueError, match="probes only"):
        ss.tl.annotate(adata, model, "cell_type", method="finetune", expression_pcs=3, overwrite=True)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_finetune_warm_start_head_reproduces_the_linear_probe(n_classes):
    """Before any fine-tuning step the warm-started head predicts exactly what the logistic regression does."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from sslspatial.tl._annotate import _probe_init

    adata = tissue()
    model = ss.tl.pretrain_mask(adata, **SMALL)
    z = model.get_latent_representation()
    codes = (np.arange(adata.n_obs) % n_classes).astype(np.int64)
    codes[adata.obsm["spatial"][:, 0] < 50] = 0  # an uneven, partly learnable labelling
    train = np.sort(np.random.default_rng(0).choice(adata.n_obs, 120, replace=False))
    tuned = model.derive(objective="classify", objective_kwargs={"n_classes": n_classes})
    _probe_init(tuned, z, codes, train, n_classes)
    tuned.is_trained_ = True
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(z[train], codes[train])
    head = tuned.module.objective.head
    with torch.no_grad():
        logits = head(torch.as_tensor(z, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(torch.softmax(torch.as_tensor(logits), -1).numpy(), clf.predict_proba(z), atol=1e-4)
    np.testing.assert_array_equal(tuned.predict_proba().argmax(1), clf.predict(z))
