"""``ss.tl.hist2expr`` / ``Hist2Expr`` on tiny synthetic data: loss terms, save & load, image-only prediction, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial

import sslspatial as ss
from sslspatial.data._patch_loader import (
    COUNTS_KEY,
    EDGE_INDEX_KEY,
    LIBRARY_KEY,
    PATCHES_KEY,
    POSITIONS_KEY,
    grid_positions,
    knn_edges,
    partition_windows,
)
from sslspatial.module import Hist2ExprModule

TINY = {"embed_kernel": 4, "channels": 8, "convmixer_depth": 1, "down_channels": 2, "dim": 16, "transformer_depth": 1,
        "heads": 2, "gnn_depth": 2, "n_pos": 16}  # fmt: skip


def _batch(n=6, genes=5, px=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = np.stack(np.meshgrid(np.arange(3), np.arange(2)), -1).reshape(-1, 2).astype(float)[:n]
    counts = torch.poisson(torch.full((n, genes), 3.0), generator=g)
    return {
        PATCHES_KEY: torch.rand(n, 3, px, px, generator=g),
        POSITIONS_KEY: torch.from_numpy(grid_positions(coords, 1.0)),
        EDGE_INDEX_KEY: torch.from_numpy(knn_edges(coords, 4, 1.5)),
        COUNTS_KEY: counts,
        LIBRARY_KEY: counts.sum(1, keepdim=True) * 2,  # total over a larger transcriptome
    }


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson", "gaussian"])
def test_each_loss_term_matches_hand_computation(likelihood):
    module = Hist2ExprModule(5, patch_px=16, likelihood=likelihood, n_views=2, **TINY)
    module.eval()  # deterministic forward (no augmentation, no dropout)
    batch = _batch()
    inf = module.inference(**module._get_inference_input(batch))
    gen = module.generative(**module._get_generative_input(batch, inf))
    out = module.loss(batch, inf, gen, mse_weight=1.0, likelihood_weight=0.25, distill_weight=0.5)
    x, lib = batch[COUNTS_KEY], batch[LIBRARY_KEY]
    target = torch.log1p(x / lib * 1e4)
    mse = ((gen["y_hat"] - target) ** 2).mean(1)
    mu = gen.get("rate", torch.zeros(1)) * x.sum(1, keepdim=True)
    if likelihood == "zinb":
        nll = -ZeroInflatedNegativeBinomial(mu=mu, theta=module.log_theta.exp(), zi_logits=gen["zi_logits"]).log_prob(x)
    elif likelihood == "nb":
        nll = -NegativeBinomial(mu=mu, theta=module.log_theta.exp()).log_prob(x)
    elif likelihood == "poisson":
        nll = -torch.distributions.Poisson(mu).log_prob(x)  # torch's own Poisson, independent of scvi's
        assert torch.allclose(nll, -Poisson(mu).log_prob(x), atol=1e-5)
    else:
        sigma = module.log_sigma.exp()
        nll = 0.5 * ((target - gen["y_hat"]) / sigma) ** 2 + torch.log(sigma) + 0.5 * np.log(2 * np.pi)
    assert torch.allclose(out.reconstruction_loss["mse"], mse, atol=1e-6)
    assert torch.allclose(out.reconstruction_loss["nll"], 0.25 * nll.mean(1), atol=1e-5)
    # eval mode: no distillation; the total is the mean over spots of the weighted sum
    assert torch.allclose(out.reconstruction_loss["distill"], torch.zeros(6))
    assert torch.allclose(out.loss, (mse + 0.25 * nll.mean(1)).mean(), atol=1e-5)


def test_standardized_targets_weigh_every_gene_the_same():
    """With target stats set, y_hat = mean + sd * head and the MSE is measured in per-gene SD units."""
    module = Hist2ExprModule(5, patch_px=16, likelihood="none", likelihood_weight=0.0, **TINY)
    mean, sd = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]), torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0])
    module.set_target_stats(mean, sd)
    module.eval()
    batch = _batch()
    inf = module.inference(**module._get_inference_input(batch))
    gen = module.generative(**module._get_generative_input(batch, inf))
    head = module.gene_head(inf["z"])
    assert torch.allclose(gen["y_hat"], mean + sd * head, atol=1e-6)
    target = torch.log1p(batch[COUNTS_KEY] / batch[LIBRARY_KEY] * 1e4)
    out = module.loss(batch, inf, gen, mse_weight=1.0, distill_weight=0.0)
    assert torch.allclose(out.reconstruction_loss["mse"], (((gen["y_hat"] - target) / sd) ** 2).mean(1), atol=1e-5)
    # a prediction off by one SD in every gene costs the same per gene, whatever the gene's scale
    shifted = {**gen, "y_hat": target + sd}
    per_gene = module.loss(batch, inf, shifted, mse_weight=1.0, distill_weight=0.0).reconstruction_loss["mse"]
    assert torch.allclose(per_gene, torch.ones(6), atol=1e-5)


def test_distillation_is_mse_to_a_stop_gradient_teacher():
    module = Hist2ExprModule(5, patch_px=16, likelihood="none", likelihood_weight=0.0, n_views=3, **TINY)
    module.train()
    batch = _batch()
    torch.manual_seed(1)
    inf = module.inference(**module._get_inference_input(batch))
    gen = module.generative(**module._get_generative_input(batch, inf))
    state = torch.random.get_rng_state()
    out = module.loss(batch, inf, gen, mse_weight=0.0, distill_weight=1.0)
    torch.random.set_rng_state(state)  # same augmentations again -> the teacher by hand
    teacher = module.teacher(batch)
    expected = ((gen["y_hat"] - teacher) ** 2).mean(1)
    assert not teacher.requires_grad
    assert torch.allclose(out.reconstruction_loss["distill"], expected, atol=1e-4)
    out.loss.backward()  # gradients reach the student only (teacher computed without a graph)
    assert module.gene_head.weight.grad is not None and module.gene_head.weight.grad.abs().sum() > 0


def test_windows_graph_and_positions_hand_computed():
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    edges = knn_edges(coords, k=4, max_distance=1.5)
    expected = {(0, 1), (1, 0), (1, 2), (2, 1), (0, 3), (3, 0), (1, 3), (3, 1)}
    assert set(map(tuple, edges.T.tolist())) == expected  # node 4 isolated (pruned), graph symmetric
    assert grid_positions(coords * 100 + 7, 100.0).tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [10, 10]]
    windows = partition_windows(np.random.default_rng(0).uniform(0, 1, (50, 2)), 8)
    assert sorted(np.concatenate(windows).tolist()) == list(range(50)) and max(map(len, windows)) <= 8


@pytest.fixture(scope="module")
def tissue():
    from sslspatial.datasets import synthetic_tissue

    return synthetic_tissue(n_cells=900, n_genes=12, n_sections=3, spot_layouts=("visium",), seed=1)


def _fit(sdata, **kwargs):
    args = {"table_key": "table_visium", "image_key": "he", "library_key": "section", "patch_px": 16,
            "train_regions": ["section_0", "section_1"], "predict_regions": ["section_2"], "n_validation_sections": 0,
            "max_epochs": 2, "model_kwargs": TINY, "train_kwargs": {"enable_progress_bar": False}}  # fmt: skip
    return ss.tl.hist2expr(sdata, **{**args, **kwargs})


@pytest.fixture(scope="module")
def fitted(tissue):
    """One small fit predicting a held-out section, an image-only pseudo-spot grid and unmeasured spot shapes."""
    import geopandas as gpd
    from spatialdata.models import ShapesModel

    table = tissue.tables["table_visium"]
    copied = table.obs.loc[table.obs["section"].astype(str) == "section_2", "spot_id"].to_numpy()
    # unmeasured spot shapes: a copy of section_2's spots (same image, same positions, same neighbours)
    tissue.shapes["extra_spots"] = ShapesModel.parse(gpd.GeoDataFrame(tissue.shapes["spots_visium"].loc[copied].copy()))
    model = _fit(tissue, predict_regions=["section_2", "he", "extra_spots"], key_added="h2e")
    return tissue, model


def test_hist2expr_writes_table_and_pearson_and_leaves_the_training_table(fitted):
    sdata, model = fitted
    out = sdata.tables["h2e"]
    table = sdata.tables["table_visium"]
    measured = out[out.obs["region"] == "spots_visium"]
    assert measured.n_obs == table.n_obs and list(out.var_names) == list(table.var_names)
    assert set(measured.obs["split"]) == {"train", "predict"}
    # the stored Pearson is the per-gene Pearson of the written prediction against log1p(x / total * 1e4)
    rows = np.flatnonzero(table.obs["section"].astype(str).to_numpy() == "section_2")
    x = np.asarray(table.X[rows].todense() if hasattr(table.X, "todense") else table.X[rows])
    truth = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-8) * 1e4)
    pred = out[out.obs["section"] == "section_2"].X
    np.testing.assert_allclose(out.var["pearson_section_2"], ss.metrics.pearson_per_gene(truth, pred), atol=1e-5)
    np.testing.assert_allclose(out[out.obs["section"] == "section_2"].layers["measured"], truth, atol=1e-5)
    np.testing.assert_allclose(out[table.obs_names[rows]].X, pred, atol=1e-6)  # rows keep the table's obs_names
    # the training table is left alone: no dense full-width layer, no internal registry column
    assert "h2e" not in table.layers
    assert "_sslspatial_indices" not in table.obs and "_sslspatial_indices" not in out.obs
    assert "_hist2expr_total" not in table.obs
    assert out.uns["h2e"]["mean_pearson"]["section_2"]["split"] == "predict"
    # model predictions on its own source (training sections) equal the written ones
    own = model.predict()
    train_rows = np.flatnonzero(table.obs["section"].astype(str).to_numpy() == "section_0")
    np.testing.assert_allclose(own[train_rows], out[table.obs_names[train_rows]].X, atol=1e-5)
    with pytest.raises(ss.OutputExistsError, match="exists already"):
        _fit(sdata, key_added="h2e")


def test_baseline_next_to_mean_pearson_is_ridge_on_image_statistics_by_hand(fitted):
    """The yardstick: StandardScaler + RidgeCV on the spots' image statistics, fitted on the training sections,
    scored by per-gene Pearson on the same spots and genes as ``mean_pearson``."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from sslspatial._io import get_coordinates, get_image

    sdata, _ = fitted
    out, table = sdata.tables["h2e"], sdata.tables["table_visium"]
    record = out.uns["h2e"]
    assert record["baseline"] == "ridge on image statistics"
    assert list(record["baseline_fit_sections"]) == ["section_0", "section_1"]
    assert (
        set(record["baseline_mean_pearson"]) == set(record["mean_pearson"]) == {"section_0", "section_1", "section_2"}
    )
    sections = table.obs["section"].astype(str).to_numpy()
    x = np.asarray(table.X.todense() if hasattr(table.X, "todense") else table.X)
    target = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-8) * 1e4)
    image = get_image(sdata, "he", "global")
    patch_side = 1.5 * table.uns["spot_geometry"]["spot_diameter"]  # the default patch_scale
    feats = ss.pp.image_features(image, get_coordinates(sdata, "table_visium", "spatial", "global"), patch_side)
    train = np.isin(sections, ["section_0", "section_1"])
    scaler = StandardScaler().fit(feats[train])
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 12)).fit(scaler.transform(feats[train]), target[train])
    assert record["baseline_ridge_alpha"] == pytest.approx(ridge.alpha_)
    for name in ["section_0", "section_2"]:
        rows = sections == name
        r = ss.metrics.pearson_per_gene(target[rows], ridge.predict(scaler.transform(feats[rows])))
        np.testing.assert_allclose(out.var[f"baseline_pearson_{name}"], r, atol=1e-4)
        assert record["baseline_mean_pearson"][name]["mean"] == pytest.approx(np.nanmean(r), abs=1e-4)
        assert record["baseline_mean_pearson"][name]["split"] == record["mean_pearson"][name]["split"]
    # only the measured sections get a baseline; the image-only grid and unmeasured shapes do not
    assert not any(c.startswith("baseline_pearson_") and "section" not in c for c in out.var.columns)


def test_baseline_without_stats_features_fits_only_the_sections_the_model_fits(tissue):
    """features=None still gets the image-statistics ridge; validation sections are not fitted by it."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from sslspatial._io import get_coordinates, get_image

    _fit(tissue, features=None, n_validation_sections=1, key_added="h2e_nofeat", overwrite=True)
    out, table = tissue.tables["h2e_nofeat"], tissue.tables["table_visium"]
    record = out.uns["h2e_nofeat"]
    assert list(record["baseline_fit_sections"]) == ["section_0"]
    assert record["baseline_mean_pearson"]["section_1"]["split"] == "validation"
    sections = table.obs["section"].astype(str).to_numpy()
    x = np.asarray(table.X.todense() if hasattr(table.X, "todense") else table.X)
    target = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-8) * 1e4)
    feats = ss.pp.image_features(get_image(tissue, "he", "global"),
                                 get_coordinates(tissue, "table_visium", "spatial", "global"),
                                 1.5 * table.uns["spot_geometry"]["spot_diameter"])  # fmt: skip
    fit, rows = sections == "section_0", sections == "section_2"
    scaler = StandardScaler().fit(feats[fit])
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 12)).fit(scaler.transform(feats[fit]), target[fit])
    r = ss.metrics.pearson_per_gene(target[rows], ridge.predict(scaler.transform(feats[rows])))
    np.testing.assert_allclose(out.var["baseline_pearson_section_2"], r, atol=1e-4)
    _fit(tissue, features=None, baseline=False, key_added="h2e_nobase", overwrite=True)
    assert tissue.tables["h2e_nobase"].uns["h2e_nobase"]["baseline"] == "none: baseline=False"


def test_save_load_roundtrip(fitted, tmp_path):
    _, model = fitted
    before = model.predict()
    model.save(tmp_path / "m", overwrite=True)
    loaded = ss.model.Hist2Expr.load(tmp_path / "m", adata=model.adata)
    loaded.set_patch_source(model.patch_source)
    loaded.window_size_ = model.window_size_
    np.testing.assert_allclose(loaded.predict(), before, atol=1e-5)


def test_prediction_on_image_only_regions(fitted):
    sdata, _ = fitted
    grid = sdata.shapes["he_h2e_grid"]
    out = sdata.tables["h2e"]
    sub = out[out.obs["region"] == "he_h2e_grid"]
    assert sub.n_obs == len(grid) > 0 and np.isfinite(sub.X).all()
    assert np.isnan(sub.layers["measured"]).all()  # no measurement under a pseudo-spot
    # grid pseudo-spots lie on the tissue: their centres fall within the sections' extent
    from spatialdata import get_centroids

    centroids = get_centroids(grid, coordinate_system="global")
    xy = (centroids.compute() if hasattr(centroids, "compute") else centroids)[["x", "y"]].to_numpy()
    spots = sdata.tables["table_visium"].obsm["spatial"]
    assert xy.min() >= spots.min() - 100 and xy.max() <= spots.max() + 100
    # the output table carries coordinates (for ss.pl.expression_maps) and grid ids of the same dtype as the spots'
    np.testing.assert_allclose(sub.obsm["spatial"], xy, atol=1e-6)
    assert list(sub.obs["instance_id"]) == list(grid.index)
    assert pd.api.types.infer_dtype(out.obs["instance_id"]) == pd.api.types.infer_dtype(
        sdata.tables["table_visium"].obs["spot_id"]
    )
    # a shapes element without measurements is predicted too, linked by its instance ids
    extra = out[out.obs["region"] == "extra_spots"]
    assert extra.n_obs == 99 and list(extra.obs["instance_id"]) == list(sdata.shapes["extra_spots"].index)
    # its spots are a copy of the whole of section_2 (same patches, positions, graph and windows): the image-only path
    # must give exactly the predictions of the measured section (measured once: identical to the last bit)
    measured = out[out.obs["section"] == "section_2"]
    order = pd.Index(measured.obs["instance_id"]).get_indexer(extra.obs["instance_id"])
    assert (order >= 0).all()
    np.testing.assert_allclose(extra.X, measured.X[order], rtol=0, atol=1e-6)


def test_bad_inputs_raise_before_training(tissue, monkeypatch):
    sdata = tissue
    calls = []
    monkeypatch.setattr(ss.model.Hist2Expr, "train", lambda self, **kw: calls.append(1))
    with pytest.raises(ValueError, match="missing from table"):
        _fit(sdata, genes=["gene_0", "not_a_gene"])
    with pytest.raises(KeyError, match="size_factor_key='nope' is not a column"):
        _fit(sdata, size_factor_key="nope")
    with pytest.raises(ValueError, match="no room for 1 validation"):
        _fit(sdata, train_regions=["section_0"], n_validation_sections=1)
    with pytest.raises(ValueError, match="has no image"):
        _fit(sdata, predict_regions=["nowhere"])
    with pytest.raises(KeyError, match="has no image"):
        _fit(sdata, image_key={"section_0": "he", "section_1": "he"})
    from spatialdata.transformations import Identity, get_transformation, remove_transformation, set_transformation

    original = get_transformation(sdata.images["he"], "global")
    set_transformation(sdata.images["he"], Identity(), "elsewhere")
    remove_transformation(sdata.images["he"], "global")
    try:
        with pytest.raises(ValueError, match="no transformation"):
            _fit(sdata)
    finally:
        set_transformation(sdata.images["he"], original, "global")
        remove_transformation(sdata.images["he"], "elsewhere")
    from spatialdata.transformations import Scale, Sequence

    set_transformation(sdata.images["he"], Sequence([original, Scale([0.02, 0.02], axes=("x", "y"))]), "global")
    try:
        with pytest.raises(ValueError, match="fall outside their image"):
            _fit(sdata)
    finally:
        set_transformation(sdata.images["he"], original, "global")
    he = sdata.images["he"]
    sdata.images["he"] = he.astype(np.float32)
    try:
        with pytest.raises(ValueError, match="not uint8"):
            _fit(sdata)
    finally:
        sdata.images["he"] = he
    assert not calls


def test_model_target_stats_are_the_training_mean_and_sd_of_log_normalised_counts():
    """Chunked over rows of a sparse table, equal to the dense computation (and stored in the module's buffers)."""
    import scipy.sparse as sp
    from anndata import AnnData

    from sslspatial.model import Hist2Expr

    x = np.random.default_rng(0).poisson(2, (300, 7)).astype(np.float32)
    adata = AnnData(sp.csr_matrix(x))
    Hist2Expr.setup_anndata(adata)
    model = Hist2Expr(adata, **TINY)
    target = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    mean, sd = model._target_stats(chunk=64)
    np.testing.assert_allclose(mean.numpy(), target.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sd.numpy(), target.std(0), rtol=1e-5)
    np.testing.assert_allclose(model.module.target_std.numpy(), target.std(0), rtol=1e-5)


def test_colour_normalize_gives_every_section_the_same_tissue_colour(tissue, monkeypatch):
    from sslspatial.pp import crop_patches
    from sslspatial.pp._patches import ColourStats, colour_normalize, to_unit_range

    seen = {}
    monkeypatch.setattr(ss.model.Hist2Expr, "train", lambda self, **kw: seen.update(source=self.patch_source))
    monkeypatch.setattr(ss.model.Hist2Expr, "predict", lambda self, *a, **k: None)
    monkeypatch.setattr("sslspatial.tl._hist2expr._write", lambda *a, **k: None)
    target = np.array([0.70, 0.50, 0.68])  # colour_normalize's default target (a typical H&E look)
    for normalize in (False, True):
        _fit(tissue, colour_normalize=normalize, train_regions=["section_0", "section_1"], predict_regions=None)
        for section in seen["source"].sections:
            assert (section.colour is not None) == normalize
            if not normalize:
                continue
            assert len(section) <= 512  # so the statistics come from every spot's patch
            raw = to_unit_range(crop_patches(section.image, section.centres_px, section.size_px), (0.0, 255.0))
            stats = ColourStats.of(raw)
            np.testing.assert_allclose(section.colour.mean, stats.mean, rtol=1e-5)
            np.testing.assert_allclose(section.colour.std, stats.std, rtol=1e-5)
            pixels = np.moveaxis(raw, 1, -1).reshape(-1, 3)
            tissue_px = pixels.mean(1) < 0.85
            out = np.moveaxis(colour_normalize(raw, section.colour), 1, -1).reshape(-1, 3)[tissue_px]
            unclipped = ((out > 0) & (out < 1)).all(1)
            assert unclipped.mean() > 0.9
            # on the tissue pixels, each channel now has the target mean (clipping moves it a little)
            np.testing.assert_allclose(out.mean(0), target, atol=0.03)


def test_reloaded_model_predicts_new_regions_with_its_training_patch_settings(tissue, tmp_path):
    """``model=``: no training; colour normalisation, spot size and grid pitch come back from the saved model."""
    common = {"table_key": "table_visium", "image_key": "he", "library_key": "section"}
    model = _fit(tissue, colour_normalize=True, predict_regions=["section_2", "he"], key_added="h2e_cn", overwrite=True)
    first = tissue.tables["h2e_cn"]
    model.save(tmp_path / "m", save_anndata=True)
    loaded = ss.model.Hist2Expr.load(tmp_path / "m")
    assert loaded.patch_settings["colour_normalize"] is True
    ss.tl.hist2expr(tissue, **common, model=loaded, predict_regions=["section_2", "he"], key_added="h2e_again")
    again = tissue.tables["h2e_again"]
    assert set(again.obs["split"]) == {"predict"} and set(again.obs["section"]) == {"section_2", "he"}
    for section in ("section_2", "he"):  # the held-out section and the pseudo-spot grid over the image
        np.testing.assert_allclose(
            again[again.obs["section"] == section].X, first[first.obs["section"] == section].X, atol=1e-5
        )
    np.testing.assert_allclose(again.var["pearson_section_2"], first.var["pearson_section_2"], atol=1e-4)
    # nothing trained here, so no training spots for the yardstick: said, not faked
    assert (
        again.uns["h2e_again"]["baseline"].startswith("none") and "baseline_mean_pearson" not in again.uns["h2e_again"]
    )
    assert not any(c.startswith("baseline_pearson_") for c in again.var.columns)
    assert first.uns["h2e_cn"]["baseline"] == "ridge on image statistics"
    # the recorded setting is what makes them equal: without colour normalisation the predictions move
    loaded.patch_settings["colour_normalize"] = False
    ss.tl.hist2expr(tissue, **common, model=loaded, predict_regions=["section_2"], key_added="h2e_raw")
    raw = tissue.tables["h2e_raw"].X
    assert np.abs(raw - first[first.obs["section"] == "section_2"].X).max() > 1e-3
    with pytest.raises(ValueError, match="leave train_regions empty"):
        ss.tl.hist2expr(tissue, **common, model=loaded, train_regions=["section_0"], predict_regions=["section_2"])
    with pytest.raises(ValueError, match="genes are the model's"):
        ss.tl.hist2expr(tissue, **common, model=loaded, genes=["gene_0"], predict_regions=["section_2"])
    with pytest.raises(TypeError, match="trained sslspatial.model.Hist2Expr"):
        ss.tl.hist2expr(tissue, **common, model="model", predict_regions=["section_2"])


def test_target_statistics_come_from_the_training_sections_only(fitted):
    """The held-out section's expression must not leak into the standardisation (nor into the gene basis)."""
    sdata, model = fitted
    table = sdata.tables["table_visium"]
    sections = table.obs["section"].astype(str).to_numpy()
    x = np.asarray(table.X.todense() if hasattr(table.X, "todense") else table.X)
    target = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-8) * 1e4)
    train = np.isin(sections, ["section_0", "section_1"])
    np.testing.assert_allclose(model.module.target_mean.numpy(), target[train].mean(0), rtol=1e-5, atol=1e-6)
    sd = np.maximum(target[train].std(0), 1e-3)
    np.testing.assert_allclose(model.module.target_std.numpy(), sd, rtol=1e-4)
    assert not np.allclose(target[train].mean(0), target.mean(0), atol=1e-3)  # the check can tell them apart


def test_predictions_are_projected_on_the_principal_subspace_of_the_training_targets():
    """``n_components``: the basis is the top principal axes (brute-force SVD); predictions are projected on it."""
    from anndata import AnnData

    from sslspatial.model import Hist2Expr

    rng = np.random.default_rng(0)
    x = rng.poisson(rng.gamma(2.0, 2.0, (1, 9)) * rng.gamma(3.0, 1.0, (200, 1)), (200, 9)).astype(np.float32)
    adata = AnnData(x)
    Hist2Expr.setup_anndata(adata)
    model = Hist2Expr(adata, n_components=3, **TINY)
    rows = np.arange(0, 200, 2)
    model.module.set_target_stats(*model._target_stats(rows))
    basis = model._target_basis(3, rows).numpy()
    target = np.log1p(x[rows] / x[rows].sum(1, keepdims=True) * 1e4)
    z = (target - target.mean(0)) / np.maximum(target.std(0), 1e-3)
    axes = np.linalg.svd(z - z.mean(0), full_matrices=False)[2][:3]
    np.testing.assert_allclose(basis.T @ basis, axes.T @ axes, atol=1e-4)  # same subspace (signs may differ)
    model.module.set_gene_basis(torch.as_tensor(basis))
    z = torch.randn(5, model.module.context.out_dim)
    model.module.eval()
    out = model.module.generative(z)["y_hat"]
    scores = ((out - model.module.target_mean) / model.module.target_std).detach().numpy()
    np.testing.assert_allclose(scores @ basis.T @ basis, scores, atol=1e-4)
    # the projection of the full-rank prediction, by hand; training sees the full-rank one
    full = model.module.gene_head(z).detach().numpy()
    np.testing.assert_allclose(scores, full @ basis.T @ basis, atol=1e-4)
    model.module.train()
    trained = (model.module.generative(z)["y_hat"] - model.module.target_mean) / model.module.target_std
    np.testing.assert_allclose(trained.detach().numpy(), full, atol=1e-5)
    with pytest.raises(ValueError, match="n_components=0 must be"):
        Hist2Expr(adata, n_components=0, **TINY)
    assert Hist2Expr(adata, n_components=9, **TINY).module.n_components is None  # as many axes as genes


def test_training_loss_fits_the_variation_within_each_section():
    """``centre_sections``: in training, a spot's prediction is shifted by its section's offset before the MSE (and
    the Gaussian likelihood); in evaluation there is no shift; a window outside the offset sections is refused."""
    from sslspatial.data._patch_loader import ROWS_KEY

    module = Hist2ExprModule(5, patch_px=16, likelihood="gaussian", likelihood_weight=1.0, distill_weight=0.0,
                             augment=False, dropout=0.0, centre_sections=True, **TINY)  # fmt: skip
    batch = {**_batch(), ROWS_KEY: torch.tensor([3, 4, 5, 0, 1, 2])}
    offsets = torch.tensor([[0.0] * 5, [1.0, -2.0, 0.5, 0.0, 3.0]])
    module.set_section_offsets(torch.tensor([0, 0, 0, 1, 1, 1, -1]), offsets)
    target = torch.log1p(batch[COUNTS_KEY] / batch[LIBRARY_KEY] * 1e4)
    per_spot = offsets[[1, 1, 1, 0, 0, 0]]  # sections of rows 3, 4, 5, 0, 1, 2
    module.train()
    inf = module.inference(**module._get_inference_input(batch))
    gen = module.generative(**module._get_generative_input(batch, inf))
    out = module.loss(batch, inf, gen)
    expected = ((gen["y_hat"] + per_spot - target) ** 2).mean(1)
    assert torch.allclose(out.reconstruction_loss["mse"], expected, atol=1e-5)
    sigma = module.log_sigma.exp()
    nll = 0.5 * ((target - gen["y_hat"] - per_spot) / sigma) ** 2 + torch.log(sigma) + 0.5 * np.log(2 * np.pi)
    assert torch.allclose(out.reconstruction_loss["nll"], nll.mean(1), atol=1e-5)
    module.eval()
    plain = module.loss(batch, inf, gen).reconstruction_loss["mse"]
    assert torch.allclose(plain, ((gen["y_hat"] - target) ** 2).mean(1), atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the check can tell the two apart
    module.train()
    with pytest.raises(ValueError, match="outside the sections"):
        module.loss({**batch, ROWS_KEY: torch.tensor([6, 0, 1, 2, 3, 4])}, inf, gen)
    module.centre_sections = False
    off = module.loss(batch, inf, gen).reconstruction_loss["mse"]
    assert torch.allclose(off, ((gen["y_hat"] - target) ** 2).mean(1), atol=1e-5)


def test_section_offsets_are_each_training_section_mean_minus_the_training_mean(tissue):
    """Brute force on a synthetic fit: sections 0 and 1 trained, section 2 held out (no offset)."""
    sdata = tissue
    assert len(_fit(sdata, key_added="plain", overwrite=True).module.section_offsets) == 0  # off by default
    model = _fit(sdata, key_added="centred", overwrite=True, model_kwargs={**TINY, "centre_sections": True})
    table = sdata.tables["table_visium"]
    sections = table.obs["section"].astype(str).to_numpy()
    x = np.asarray(table.X.todense() if hasattr(table.X, "todense") else table.X)
    target = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-8) * 1e4)
    train = np.isin(sections, ["section_0", "section_1"])
    row_section, offsets = model._section_offsets(model.patch_source, [])
    for k, name in enumerate(["section_0", "section_1"]):
        assert (row_section.numpy()[sections == name] == k).all()
        np.testing.assert_allclose(offsets[k].numpy(), target[sections == name].mean(0) - target[train].mean(0),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
    assert (row_section.numpy()[sections == "section_2"] == -1).all()
    np.testing.assert_allclose(model.module.section_offsets.numpy(), offsets.numpy(), atol=1e-6)  # set by train()
    assert "section_offsets" not in model.module.state_dict()  # training-only: not saved


def test_sections_follow_a_non_identity_shapes_transformation():
    """Spot shapes stored at half scale with Scale(2) + Translation to the image's coordinate system (obsm in the
    shapes' own units): the training patches are cut exactly where the identity-transformed spots put them."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Scale, Sequence, Translation, get_transformation, set_transformation

    from sslspatial.datasets import synthetic_tissue

    def centres(sdata):
        model = _fit(sdata, predict_regions=[], train_regions=["section_0", "section_1"], key_added="h2e_t",
                     max_epochs=1, use_patches=False)  # fmt: skip
        return {s.name: (s.rows, s.centres_px, s.coords) for s in model.patch_source.sections}

    plain = synthetic_tissue(n_cells=600, n_genes=6, n_sections=2, spot_layouts=("visium",), seed=2)
    moved = synthetic_tissue(n_cells=600, n_genes=6, n_sections=2, spot_layouts=("visium",), seed=2)
    spots = moved.shapes["spots_visium"]
    cs = next(iter(get_transformation(spots, get_all=True)))
    shift = np.array([7.0, -3.0])
    gdf = spots.copy()
    gdf.geometry = gdf.geometry.affine_transform([0.5, 0, 0, 0.5, -shift[0] / 2, -shift[1] / 2])
    gdf["radius"] = gdf["radius"] / 2
    to_cs = Sequence([Scale([2.0, 2.0], axes=("x", "y")), Translation(list(shift), axes=("x", "y"))])
    moved.shapes["spots_visium"] = ShapesModel.parse(gdf)
    set_transformation(moved.shapes["spots_visium"], to_cs, to_coordinate_system=cs, set_all=False)
    table = moved.tables["table_visium"]
    table.obsm["spatial"] = (np.asarray(table.obsm["spatial"]) - shift) / 2  # the shapes' own units
    expected, got = centres(plain), centres(moved)
    for name, (rows, px, coords) in expected.items():
        np.testing.assert_array_equal(got[name][0], rows)
        np.testing.assert_allclose(got[name][1], px, atol=1e-6)
        np.testing.assert_allclose(got[name][2], coords, atol=1e-6)
