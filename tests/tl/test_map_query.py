"""ss.tl.map_query: a labelled reference's cell types carried onto a query it never saw (same or partial panel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sslspatial as ss
from sslspatial.model import SpatialPretrainModel

from .test_pretrain import SMALL, tissue


@pytest.fixture(scope="module")
def reference():
    adata = tissue(n=300, n_genes=40, seed=0)
    model = ss.tl.pretrain_mask(adata, mask="entries", **SMALL)
    return adata, model


def _state(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def test_labels_reach_a_query_that_was_never_trained_on_and_weights_do_not_change(reference):
    adata, model = reference
    before = _state(model)
    query = tissue(n=250, n_genes=40, seed=1)  # another tissue: other positions, other counts
    truth = query.obs["cell_type"].astype(str).to_numpy()
    del query.obs["cell_type"]
    ss.tl.map_query(query, model, "cell_type")
    pred = query.obs["map_query_prediction"].astype(str).to_numpy()
    assert (pred == truth).mean() > 0.9
    proba = query.obsm["map_query_probabilities"]
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(query.obs["map_query_uncertainty"], 1 - proba.max(1))
    record = query.uns["map_query"]
    assert record["function"] == "map_query" and record["n_shared_genes"] == 40 and record["classes"] == ["A", "B"]
    assert record["n_reference_labelled"] == adata.n_obs and not record["fallback"]
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was trained
    with pytest.raises(ss.OutputExistsError):
        ss.tl.map_query(query, model, "cell_type")


def test_a_half_panel_query_is_embedded_like_the_reference_with_the_same_genes_hidden(reference):
    adata, model = reference
    genes = np.random.default_rng(0).permutation(adata.var_names)[:20]
    query = adata[:, genes].copy()  # the reference cells themselves, with half of the genes, shuffled order
    ss.tl.map_query(query, model, "cell_type")
    assert query.uns["map_query"]["n_shared_genes"] == 20
    present = adata.var_names.isin(genes)
    masked = model.derive(adata=model.adata, gene_present=present.tolist())
    masked.module.load_state_dict(model.module.state_dict())
    masked.is_trained_ = True
    np.testing.assert_allclose(query.obsm["X_map_query"], masked.get_latent_representation(), atol=1e-5)
    full = model.get_latent_representation()
    assert not np.allclose(query.obsm["X_map_query"], full, atol=1e-3)  # hiding genes did change the embedding
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    assert (query.obs["map_query_prediction"].astype(str).to_numpy() == truth).mean() > 0.9


def test_panel_overlap_is_checked_before_any_computation(reference):
    adata, model = reference
    few = adata[:, adata.var_names[:5]].copy()
    with pytest.raises(ValueError, match="shares 5 of the reference's 40 genes.*min_shared_genes=10"):
        ss.tl.map_query(few, model, "cell_type")
    assert "map_query_prediction" not in few.obs
    none = adata[:, :12].copy()
    none.var_names = [f"other{i}" for i in range(12)]
    with pytest.raises(ValueError, match="No gene overlap"):
        ss.tl.map_query(none, model, "cell_type")
    with pytest.raises(KeyError, match="save_anndata=True"):
        ss.tl.map_query(adata.copy(), model, "no_such_labels")


def test_save_load_map_gives_identical_predictions(reference, tmp_path):
    adata, model = reference
    query = tissue(n=200, n_genes=40, seed=2)
    ss.tl.map_query(query, model, "cell_type")
    model.save(tmp_path / "ref", save_anndata=True, overwrite=True)
    loaded = SpatialPretrainModel.load(tmp_path / "ref")
    again = query.copy()
    ss.tl.map_query(again, loaded, "cell_type", overwrite=True)
    np.testing.assert_allclose(again.obsm["map_query_probabilities"], query.obsm["map_query_probabilities"], atol=1e-6)
    assert (again.obs["map_query_prediction"] == query.obs["map_query_prediction"]).all()


def _left_half_query(adata, seed):
    """Another tissue's left-half cells (one cell type: gene shares unlike the reference's), half the genes shuffled."""
    other = tissue(n=300, n_genes=40, seed=seed)
    other = other[other.obsm["spatial"][:, 0] < 50].copy()
    genes = np.random.default_rng(seed).permutation(adata.var_names)[:20]
    return other[:, genes].copy()


def _brute_residual_pcs(x_ref, x_query, n_pcs=30):
    """Pearson residuals by hand with the reference's gene fractions on the given genes, PCA and scaling on the ref."""
    from sklearn.decomposition import PCA

    fraction = x_ref.sum(0) / x_ref.sum()
    clip = np.sqrt(x_ref.shape[0])

    def residuals(x):
        mu = x.sum(1, keepdims=True) * fraction[None, :]
        return np.clip((x - mu) / np.sqrt(mu + mu**2 / 100.0), -clip, clip)

    pca = PCA(min(n_pcs, x_ref.shape[1] - 1), random_state=0).fit(residuals(x_ref))
    pcs_ref, pcs_query = pca.transform(residuals(x_ref)), pca.transform(residuals(x_query))
    mean, sd = pcs_ref.mean(0), pcs_ref.std(0)
    return (pcs_ref - mean) / sd, (pcs_query - mean) / sd


def test_query_residuals_use_the_reference_gene_fractions_on_the_shared_genes(reference):
    from sslspatial.tl._map_query import residual_matrices

    adata, model = reference
    query = _left_half_query(adata, seed=3)
    genes = query.var_names  # the shared genes, in the query's (shuffled) order
    x_ref, x_query = np.asarray(adata[:, genes].X, dtype=float), np.asarray(query.X, dtype=float)
    r_ref, r_query = residual_matrices(x_ref, x_query)
    fraction = x_ref.sum(0) / x_ref.sum()  # on the 20 shared genes only (sums to 1 over them)
    mu = x_query.sum(1, keepdims=True) * fraction
    expected = np.clip((x_query - mu) / np.sqrt(mu + mu**2 / 100.0), -np.sqrt(adata.n_obs), np.sqrt(adata.n_obs))
    np.testing.assert_allclose(r_query, expected)
    np.testing.assert_allclose(r_ref, ss.pp.pearson_residuals(x_ref))  # the reference: its own fractions
    assert not np.allclose(r_query, ss.pp.pearson_residuals(x_query), atol=1e-3)  # not the query's own fractions


def test_the_residuals_candidate_maps_a_half_panel_query_with_brute_force_features(reference):
    from sslspatial.tl import _annotate_select as select

    adata, model = reference
    query = _left_half_query(adata, seed=4)
    ss.tl.map_query(query, model, "cell_type", candidates=["residuals"])
    record = query.uns["map_query"]
    assert record["kind"] == "residuals" and record["n_shared_genes"] == 20
    x_ref = np.asarray(adata[:, query.var_names].X, dtype=float)
    pcs_ref, pcs_query = _brute_residual_pcs(x_ref, np.asarray(query.X, dtype=float))
    codes = np.r_[(adata.obs["cell_type"].astype(str) == "B").to_numpy().astype(np.int64), -np.ones(query.n_obs, int)]
    proba = select.fit_logreg(
        np.concatenate([pcs_ref, pcs_query]), codes, np.arange(adata.n_obs), 2, record["C"], record["self_training"]
    )[adata.n_obs :]
    np.testing.assert_allclose(query.obsm["map_query_probabilities"], proba, atol=1e-6)
    assert (query.obs["map_query_prediction"] == "A").mean() > 0.9  # left-half cells are type A


def test_save_load_map_with_the_residuals_candidate_gives_identical_predictions(reference, tmp_path):
    adata, model = reference
    query = _left_half_query(adata, seed=5)
    ss.tl.map_query(query, model, "cell_type", candidates=["residuals", "pca"])
    model.save(tmp_path / "ref", save_anndata=True, overwrite=True)
    loaded = SpatialPretrainModel.load_reference(tmp_path / "ref", query, labels_key="cell_type")
    again = query.copy()
    ss.tl.map_query(again, loaded, "cell_type", candidates=["residuals", "pca"], overwrite=True)
    assert query.uns["map_query"]["kind"] == again.uns["map_query"]["kind"]
    np.testing.assert_array_equal(again.obsm["map_query_probabilities"], query.obsm["map_query_probabilities"])
    assert (again.obs["map_query_prediction"] == query.obs["map_query_prediction"]).all()
    scored = sorted(query.uns["map_query"]["scores"])
    assert scored == ["PCA + logreg", "ensemble(top 4)", "residuals(C=0.1)", "residuals(C=0.1, self-training)",
                      "residuals(C=1)", "residuals(C=1, self-training)"]  # fmt: skip


def test_adaptation_trains_only_the_query_adapter_and_lowers_the_query_loss(reference):
    adata, model = reference  # masked reconstruction: the query loss is the reference decoder's
    before = _state(model)
    query = tissue(n=250, n_genes=40, seed=3)
    query.X = query.X * 2.0  # a platform-wide shift of the counts the adapter can absorb
    genes = query.var_names[:30]
    query = query[:, genes].copy()  # ... and 10 reference genes missing
    qmodel = ss.tl.map_query(query, model, "cell_type", adapt=True, adapt_epochs=20)
    record = query.uns["map_query"]["adaptation"]
    assert record["loss_after"] < record["loss_before"]
    assert record["epochs"] == 20
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the reference is untouched
    adapted = qmodel.module.state_dict()
    assert not torch.equal(adapted["input_adapter.shift"], torch.zeros_like(adapted["input_adapter.shift"]))
    for k, v in before.items():  # in the query model too, only the adapter moved
        assert torch.equal(adapted[k].cpu(), v.cpu()), k


def test_adaptation_with_pseudolabel_heads_lowers_the_information_maximisation_loss():
    adata = tissue(n=300, n_genes=40, seed=0)
    model = ss.tl.pretrain_pseudolabel(adata, **SMALL)
    before = _state(model)
    query = tissue(n=250, n_genes=40, seed=4)
    query.X = query.X * 3.0
    ss.tl.map_query(query, model, "cell_type", adapt=True, adapt_epochs=10)
    record = query.uns["map_query"]["adaptation"]
    assert record["loss_after"] < record["loss_before"]
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())


def test_without_adaptation_the_query_model_has_no_adapter_and_an_identity_adapter_changes_nothing(reference):
    adata, model = reference
    query = tissue(n=200, n_genes=40, seed=5)
    qmodel = ss.tl.map_query(query, model, "cell_type")
    assert qmodel.module.input_adapter is None and "adaptation" not in query.uns["map_query"]
    identity = SpatialPretrainModel.load_query_data(query, model, input_adapter=True)
    np.testing.assert_allclose(identity.get_latent_representation(), query.obsm["X_map_query"], atol=1e-6)


def test_adaptation_options_are_checked_before_any_computation(reference):
    adata, model = reference
    query = tissue(n=200, n_genes=40, seed=6)
    finetuned = model.derive(objective="classify", objective_kwargs={"n_classes": 2})
    finetuned.is_trained_ = True
    with pytest.raises(TypeError, match="adapt=True needs a query loss"):
        ss.tl.map_query(query, finetuned, "cell_type", adapt=True)
    with pytest.raises(ValueError, match="Unknown adapt_kwargs"):
        ss.tl.map_query(query, model, "cell_type", adapt=True, adapt_kwargs={"epochs": 3})
    assert "map_query_prediction" not in query.obs


def test_a_shared_reference_folder_is_checked_when_loaded(reference, tmp_path):
    adata, model = reference
    model.save(tmp_path / "weights_only", overwrite=True)  # save_anndata=False: no cells, no labels
    with pytest.raises(ValueError, match="save_anndata=True"):
        SpatialPretrainModel.load_reference(tmp_path / "weights_only")
    model.save(tmp_path / "ref", save_anndata=True, overwrite=True)
    with pytest.raises(KeyError, match=r"no obs\['celltypes'\].*'cell_type'"):
        SpatialPretrainModel.load_reference(tmp_path / "ref", labels_key="celltypes")
    few = adata[:, adata.var_names[:5]].copy()
    with pytest.raises(ValueError, match="shares 5 of the reference's 40 genes"):
        SpatialPretrainModel.load_reference(tmp_path / "ref", few, labels_key="cell_type")
    from sslspatial.model._reference import panel_overlap

    query = tissue(n=200, n_genes=40, seed=7)[:, 10:].copy()
    query.var_names = [*query.var_names[:-2], "new1", "new2"]
    overlap = panel_overlap(adata.var_names, query.var_names)
    assert (overlap["n_shared"], len(overlap["missing_from_query"]), overlap["not_in_reference"]) == (
        28,
        12,
        ["new1", "new2"],
    )
    loaded = SpatialPretrainModel.load_reference(tmp_path / "ref", query, labels_key="cell_type")
    ss.tl.map_query(query, loaded, "cell_type", adapt=True, adapt_epochs=5)
    again = query.copy()
    reloaded = SpatialPretrainModel.load_reference(tmp_path / "ref", again, labels_key="cell_type")
    ss.tl.map_query(again, reloaded, "cell_type", adapt=True, adapt_epochs=5, overwrite=True)
    np.testing.assert_allclose(again.obsm["map_query_probabilities"], query.obsm["map_query_probabilities"], atol=1e-6)
    assert query.uns["map_query"]["n_shared_genes"] == 28


def test_the_reference_domains_travel_and_map_like_labels(reference, tmp_path):
    adata, model = reference
    ss.tl.domains(adata, n_domains=2, key_added="domains", overwrite=True)
    model.save(tmp_path / "ref", save_anndata=True, overwrite=True)
    loaded = SpatialPretrainModel.load_reference(tmp_path / "ref", labels_key="domains")
    query = tissue(n=250, n_genes=40, seed=8)
    ss.tl.map_query(query, loaded, "domains", key_added="mapped_domains")
    from sklearn.metrics import adjusted_rand_score

    ari = adjusted_rand_score(query.obs["cell_type"], query.obs["mapped_domains_prediction"])
    reference_ari = adjusted_rand_score(adata.obs["cell_type"], adata.obs["domains"])
    assert reference_ari > 0.3 and ari > 0.5 * reference_ari, (reference_ari, ari)


def test_a_winning_ensemble_averages_its_members_refitted_on_every_reference_label(reference, monkeypatch):
    """When cross-validation picks the ensemble, the query probabilities are the mean of its members' own fits."""
    from sslspatial.tl import _annotate_select as select
    from sslspatial.tl import _map_query

    adata, model = reference
    query = tissue(n=120, n_genes=40, seed=2)
    members = ["expression(C=0.1)", "PCA + logreg"]
    real = select.cross_validate

    def forced(*args, chosen=None, **kwargs):  # the real scores, then the given choice
        selection = real(*args, **kwargs)
        selection.chosen, selection.members = chosen, [] if chosen in members else list(members)
        return selection

    probabilities = []
    for chosen in [*members, select.ensemble_name(2)]:
        monkeypatch.setattr(_map_query.select, "cross_validate", lambda *a, _c=chosen, **k: forced(*a, chosen=_c, **k))
        ss.tl.map_query(query, model, "cell_type", candidates=["expression", "pca"], ensemble=2, overwrite=True)
        probabilities.append(query.obsm["map_query_probabilities"])
    assert query.uns["map_query"]["kind"] == "ensemble" and list(query.uns["map_query"]["members"]) == members
    assert not np.allclose(probabilities[0], probabilities[1])  # two different members
    np.testing.assert_allclose(probabilities[2], (probabilities[0] + probabilities[1]) / 2, atol=1e-10)
    with pytest.raises(ValueError, match="ensemble must be an integer >= 0"):
        ss.tl.map_query(query, model, "cell_type", ensemble=-1, overwrite=True)
