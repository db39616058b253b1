"""SpatialPretrainModel: subset latents == full run, save/load, BYOL EMA in training, transfer, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from scipy.spatial import cKDTree

from sslspatial.model import SpatialPretrainModel


def tissue(n=240, n_genes=12, radius=9.0, seed=0, genes=None):
    """Uniform cells in a 100 x 100 square, Poisson counts with a left/right gene gradient, radius graph."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    rate = np.where(xy[:, :1] < 50, 1.0, 4.0) * np.linspace(0.5, 2, n_genes)
    adata = AnnData(rng.poisson(rate).astype(np.float32))
    adata.var_names = genes if genes is not None else [f"g{i}" for i in range(n_genes)]
    adata.obsm["spatial"] = xy
    adata.obs["cell_type"] = np.where(xy[:, 0] < 50, "A", "B")
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    i, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    adata.obsp["spatial_connectivities"] = sp.csr_matrix((np.ones(i.size), (i, j)), shape=(n, n))
    return adata


SMALL = {"n_latent": 4, "n_hidden": 8, "heads": 2}


@pytest.mark.parametrize("encoder", ["gat", "gcn", "sage", "transformer"])
def test_latent_of_a_subset_equals_rows_of_the_full_run(encoder):
    adata = tissue()
    SpatialPretrainModel.setup_anndata(adata)
    model = SpatialPretrainModel(adata, encoder=encoder, n_layers=2, **SMALL)
    model.train(max_epochs=1, batch_size=64)
    full = model.get_latent_representation(batch_size=adata.n_obs)  # one batch = the whole graph
    subset = np.array([5, 17, 100, 3])
    part = model.get_latent_representation(indices=subset, batch_size=2)
    np.testing.assert_allclose(part, full[subset], atol=1e-5)
    # brute force for one seed: the encoder on the whole graph gives the same rows
    x = torch.as_tensor(adata.X)
    coo = adata.obsp["spatial_connectivities"].tocoo()
    edge_index = torch.as_tensor(np.vstack([coo.col, coo.row]), dtype=torch.long)
    degree = torch.as_tensor(np.diff(adata.obsp["spatial_connectivities"].indptr))
    module = model.module.eval()
    with torch.no_grad():
        x_t, _ = module.transform(x)
        brute = module.encode(x_t, edge_index, degree).numpy()
    np.testing.assert_allclose(full, brute, atol=1e-5)


def _trained_entries_model():
    """A small GAT model trained one epoch with entry masking, and its table."""
    adata = tissue()
    SpatialPretrainModel.setup_anndata(adata)
    model = SpatialPretrainModel(
        adata, encoder="gat", objective="mask", objective_kwargs={"strategy": "entries"}, **SMALL
    )
    model.train(max_epochs=1, batch_size=64)
    return adata, model


def test_save_load_round_trip(tmp_path):
    adata, model = _trained_entries_model()
    z = model.get_latent_representation()
    model.save(tmp_path / "m", overwrite=True)
    loaded = SpatialPretrainModel.load(tmp_path / "m", adata=adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)
    assert loaded.init_params_["non_kwargs"]["objective_kwargs"] == {"strategy": "entries"}


def test_byol_target_changes_during_training_and_tracks_online():
    adata = tissue()
    SpatialPretrainModel.setup_anndata(adata)
    model = SpatialPretrainModel(adata, encoder="sage", objective="byol", objective_kwargs={"tau": 0.5}, **SMALL)
    target0 = [p.detach().clone() for p in model.module.objective.target_encoder.parameters()]
    online0 = [p.detach().clone() for p in model.module.encoder.parameters()]
    model.train(max_epochs=1, batch_size=240)  # exactly one optimiser step
    online1 = list(model.module.encoder.parameters())
    target1 = list(model.module.objective.target_encoder.parameters())
    assert any(not torch.allclose(a, b) for a, b in zip(target0, target1, strict=True))
    for t0, t1, o1 in zip(target0, target1, online1, strict=True):
        torch.testing.assert_close(t1.detach(), 0.5 * t0 + 0.5 * o1.detach())
    assert any(not torch.allclose(a, b) for a, b in zip(online0, online1, strict=True))


def test_transfer_with_a_partial_gene_panel():
    ref = tissue(genes=[f"g{i}" for i in range(12)])
    SpatialPretrainModel.setup_anndata(ref)
    model = SpatialPretrainModel(
        ref, encoder="gat", objective="mask", objective_kwargs={"strategy": "entries"}, **SMALL
    )
    model.train(max_epochs=1, batch_size=64)
    # query: 8 of the reference genes (shuffled order) plus 2 unknown ones
    query_genes = ["g7", "g0", "g3", "g11", "g1", "g5", "g9", "g2", "other1", "other2"]
    query = tissue(n=150, n_genes=10, seed=3, genes=query_genes)
    qmodel = SpatialPretrainModel.load_query_data(query, model)
    assert list(qmodel.adata.var_names) == list(ref.var_names)
    present = qmodel.module.gene_present.numpy()
    assert present.tolist() == [g in query_genes for g in ref.var_names]
    # values aligned by name
    np.testing.assert_array_equal(qmodel.adata.X.toarray()[:, 7], query.X[:, 0])
    assert np.all(qmodel.adata.X.toarray()[:, ~present] == 0)
    z = qmodel.get_latent_representation()
    assert z.shape == (150, 4) and np.isfinite(z).all()
    # missing genes are masked: their (zero-filled) values do not matter
    qmodel.adata.X = sp.csr_matrix(qmodel.adata.X.toarray() + 5.0 * ~present)
    np.testing.assert_allclose(qmodel.get_latent_representation(), z, atol=1e-5)
    # the reference weights were transferred
    for a, b in zip(model.module.encoder.parameters(), qmodel.module.encoder.parameters(), strict=True):
        assert torch.equal(a, b)


def test_transfer_without_gene_overlap_raises():
    ref = tissue()
    SpatialPretrainModel.setup_anndata(ref)
    model = SpatialPretrainModel(
        ref, encoder="mlp", objective="mask", objective_kwargs={"strategy": "entries"}, **SMALL
    )
    model.train(max_epochs=1, batch_size=64)
    query = tissue(genes=[f"ENSG{i}" for i in range(12)])
    with pytest.raises(ValueError, match="No gene overlap"):
        SpatialPretrainModel.load_query_data(query, model)


@pytest.mark.parametrize(
    ("change", "likelihood", "message"),
    [
        (lambda a: setattr(a, "X", a.X + 0.5), "nb", "non-integer.*likelihood='gaussian'"),
        (lambda a: setattr(a, "X", a.X - 1), "poisson", "negative.*likelihood='gaussian'"),
        (lambda a: a.X.__setitem__((0, 0), np.nan), "gaussian", "NaN or infinite"),
        (lambda a: a.X.__setitem__((0, 0), np.inf), "nb", "NaN or infinite"),
    ],
)
def test_bad_values_raise_before_training(change, likelihood, message):
    adata = tissue()
    change(adata)
    SpatialPretrainModel.setup_anndata(adata)
    with pytest.raises(ValueError, match=message):
        SpatialPretrainModel(adata, likelihood=likelihood, **SMALL)


def test_gaussian_accepts_negative_log_values():
    adata = tissue()
    adata.X = np.log1p(adata.X) - 1.0
    SpatialPretrainModel.setup_anndata(adata)
    SpatialPretrainModel(adata, likelihood="gaussian", **SMALL)


def test_missing_graph_names_build_graph():
    adata = tissue()
    del adata.obsp["spatial_connectivities"]
    SpatialPretrainModel.setup_anndata(adata)
    with pytest.raises(KeyError, match=r"ss\.pp\.build_graph"):
        SpatialPretrainModel(adata, encoder="gat", **SMALL)
    SpatialPretrainModel(adata, encoder="mlp", objective_kwargs={"strategy": "entries"}, **SMALL)  # no graph needed


def test_fewer_cells_than_batch_size_raises():
    adata = tissue(n=50)
    SpatialPretrainModel.setup_anndata(adata)
    model = SpatialPretrainModel(adata, **SMALL)
    with pytest.raises(ValueError, match="batch_size"):
        model.train(max_epochs=1, batch_size=128)


def test_cell_masking_with_mlp_is_refused():
    adata = tissue()
    SpatialPretrainModel.setup_anndata(adata)
    with pytest.raises(ValueError, match="neighbours"):
        SpatialPretrainModel(adata, encoder="mlp", objective="mask", **SMALL)


def test_epoch_logging_gives_the_history_of_scvi_per_step_logging():
    """The plan's once-per-epoch logging records what scvi's per-step logging records (same seed, same updates)."""
    import scvi
    from scvi.train import TrainingPlan as ScviPlan

    from sslspatial.model._plan import TrainingPlan

    class PerStepPlan(ScviPlan):  # scvi's logging, with the same fused optimiser as ours
        _optimizer_creator_fn = TrainingPlan._optimizer_creator_fn

        @torch.no_grad()
        def compute_and_log_metrics(self, loss_output, metrics, mode):
            return ScviPlan.compute_and_log_metrics.__wrapped__(self, loss_output, metrics, mode)

    histories = []
    for plan in (TrainingPlan, PerStepPlan):
        adata = tissue(n=300)
        SpatialPretrainModel.setup_anndata(adata)
        scvi.settings.seed = 3
        model = SpatialPretrainModel(adata, **SMALL)
        model._training_plan_cls = plan
        order = np.random.default_rng(0).permutation(adata.n_obs)
        model.train(max_epochs=3, batch_size=64, train_indices=order[:240], validation_indices=order[240:])
        histories.append({k: v.to_numpy().astype(float).ravel() for k, v in model.history.items()})
    ours, scvis = histories
    assert set(ours) == set(scvis) and {"train_loss", "validation_loss", "masked_fraction_train"} <= set(ours)
    for key in scvis:
        assert len(ours[key]) == 3, key
        np.testing.assert_allclose(ours[key], scvis[key], rtol=1e-5, err_msg=key)


def test_a_second_train_call_after_inference_trains_in_training_mode(monkeypatch):
    """Lightning keeps the mode it finds: after an embedding (eval mode), training again must still train in train mode."""
    adata, model = _trained_entries_model()
    model.get_latent_representation()
    assert not model.module.training  # inference left it in eval mode
    modes = []
    forward = type(model.module.objective).forward

    def spy(self, module, *args, **kwargs):
        modes.append((module.training, self.training))
        return forward(self, module, *args, **kwargs)

    monkeypatch.setattr(type(model.module.objective), "forward", spy)
    model.train(max_epochs=1, batch_size=64)
    assert modes and all(module and objective for module, objective in modes)
