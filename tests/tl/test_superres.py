"""ss.tl.superres / SUPERRES on tiny synthetic spot grids: outputs, exact sums, likelihoods, save/load, multi-omics,
and every bad-input error."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import shapely
import spatialdata as sd
import torch
from anndata import AnnData
from scvi.distributions import ZeroInflatedNegativeBinomial
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale

import sslspatial as ss
from sslspatial.metrics import kernel_interpolation, uniform_split
from sslspatial.model import SUPERRES
from sslspatial.module import SuperResModule
from sslspatial.pp._subspot_elements import graph_context_features

FAST = {"max_epochs": 2, "n_hidden": 16, "n_latent": 8, "batch_size": 32}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is fastest, and on a busy 2-core machine two threads can be 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _grid_sdata(n_side=6, n_genes=5, seed=0, tables=("table",), image=False):
    """Square bins of side 2 on an n x n grid, NB-ish counts with a left-right gradient, knn-8 graph."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(n_side) * 2.0 + 1, np.arange(n_side) * 2.0 + 1)
    centres = np.c_[xs.ravel(), ys.ravel()]
    n = len(centres)
    shapes = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=[shapely.box(x - 1, y - 1, x + 1, y + 1) for x, y in centres]),
        transformations={"global": Identity()},
    )
    out = {}
    for t, name in enumerate(tables):
        rate = np.exp(1.0 + 0.15 * centres[:, :1] * (np.arange(n_genes) % 2 * 2 - 1) / n_side + 0.3 * t)
        adata = AnnData(
            rng.poisson(rate).astype(np.float32),
            obs=pd.DataFrame(
                {"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)}, index=[f"s{i}" for i in range(n)]
            ),
            var=pd.DataFrame(index=[f"{name}_g{g}" for g in range(n_genes)]),
        )
        adata.obsm["spatial"] = centres.copy()
        out[name] = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    images = {}
    if image:
        img = rng.integers(0, 255, (3, 8 * n_side, 8 * n_side), dtype=np.uint8)
        images["he"] = Image2DModel.parse(
            img, dims=("c", "y", "x"), transformations={"global": Scale([0.25, 0.25], axes=("x", "y"))}
        )
    sdata = sd.SpatialData(shapes={"spots": shapes}, tables=out, images=images)
    ss.pp.build_graph(sdata, table_key=tables[0], method="knn", n_neighs=8)
    return sdata


def test_superres_writes_elements_and_sums_exactly():
    sdata = _grid_sdata()
    before = sdata.tables["table"].copy()
    model = ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=4, sample=True, **FAST)
    out = sdata.tables["table_superres"]
    assert out.n_obs == 4 * before.n_obs and out.n_vars == before.n_vars
    assert len(sdata.shapes["spots_subspots"]) == out.n_obs
    assert out.uns["spatialdata_attrs"]["region"] == "spots_subspots"
    np.testing.assert_array_equal(out.obs["instance_id"].to_numpy(), sdata.shapes["spots_subspots"].index.to_numpy())
    assert out.obs["spot_obs"].tolist()[:5] == ["s0"] * 4 + ["s1"]
    # sub-spot centres of bin s0 (centre (1, 1), side 2): (0.5, 0.5), (1.5, 0.5), (0.5, 1.5), (1.5, 1.5)
    np.testing.assert_allclose(out.obsm["spatial"][:4], [[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]])
    # observed mode: the K sub-spots of a spot sum to the measured spot, exactly (float32 rounding)
    x = before.X
    np.testing.assert_allclose(out.X.reshape(-1, 4, out.n_vars).sum(1), x, rtol=1e-5, atol=1e-4)
    assert (out.X >= 0).all() and (out.layers["sample"] == np.round(out.layers["sample"])).all()
    # fitted mode: they sum to the fitted spot mean
    means, spot = model.get_subspot_expression(spot_mean="fitted", return_spot_mean=True)
    np.testing.assert_allclose(means.reshape(-1, 4, out.n_vars).sum(1), spot, rtol=1e-5, atol=1e-5)
    # the spot table is untouched
    after = sdata.tables["table"]
    np.testing.assert_array_equal(after.X, before.X)
    assert list(after.obs.columns) == list(before.obs.columns) and set(after.obsm) == set(before.obsm)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    with pytest.raises(ss.OutputExistsError, match="exists already"):
        ss.tl.superres(sdata, shapes_key="spots", layout="square", **FAST)


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson", "gaussian"])
def test_each_likelihood_matches_reference_log_prob(likelihood):
    torch.manual_seed(0)
    module = SuperResModule([6], [likelihood], n_subspots=4, n_hidden=8, n_latent=4)
    with torch.no_grad():
        module.log_theta.normal_()
        module.log_sigma.normal_()
    x = torch.poisson(torch.full((3, 6), 3.0))
    mean = torch.rand(3, 6) * 5 + 0.1
    zi = torch.randn(3, 6)
    got = module._log_likelihood(x, mean, [zi])
    theta, sigma = module.log_theta.exp(), module.log_sigma.exp()
    if likelihood == "nb":  # torch: total_count = theta, logits = log(mean / theta)
        ref = torch.distributions.NegativeBinomial(total_count=theta, logits=mean.log() - theta.log()).log_prob(x)
    elif likelihood == "zinb":
        nb = torch.distributions.NegativeBinomial(total_count=theta, logits=mean.log() - theta.log()).log_prob(x)
        pi = torch.sigmoid(zi)
        ref = torch.where(x == 0, torch.log(pi + (1 - pi) * nb.exp()), torch.log(1 - pi) + nb)
        alt = ZeroInflatedNegativeBinomial(mu=mean, theta=theta, zi_logits=zi).log_prob(x)
        torch.testing.assert_close(got, alt.sum(-1), rtol=1e-5, atol=1e-4)
    elif likelihood == "poisson":
        ref = torch.distributions.Poisson(mean).log_prob(x)
    else:
        ref = torch.distributions.Normal(mean, sigma).log_prob(x)
    torch.testing.assert_close(got, ref.sum(-1), rtol=1e-5, atol=1e-4)


def test_uniform_shrinkage_penalty_is_the_within_spot_variance_of_log_means():
    """loss(uniform_weight=w) - loss(w=0) = w * mean over spots of sum over genes of var_k log g_nkg."""
    torch.manual_seed(0)
    kwargs = {"n_subspots": 4, "n_subspot_features": 3, "n_hidden": 8, "n_latent": 4, "count_aware": True}
    plain, shrunk = SuperResModule([5], ["nb"], **kwargs), SuperResModule([5], ["nb"], uniform_weight=0.7, **kwargs)
    shrunk.load_state_dict(plain.state_dict())
    plain.eval()
    shrunk.eval()
    x = torch.poisson(torch.full((6, 5), 4.0))
    tensors = {"X": x, "x_sub": x, "edge_index": torch.zeros(2, 0, dtype=torch.long),
               "subspot_features": torch.randn(6, 4 * 3)}  # fmt: skip
    losses, gens = [], []
    for module in (plain, shrunk):
        inf = module.inference(x, tensors["edge_index"], 6)
        inf["z"] = inf["qz"].loc  # deterministic
        gen = module.generative(inf["z"], x, tensors["subspot_features"])
        gens.append(gen)
        losses.append(module.loss(tensors, inf, gen).loss)
    sub = plain.subspot_decoder(tensors["subspot_features"].reshape(6, 4, -1))
    log_g = (sub + plain.rate_bias).clamp(max=20.0).exp().add(1e-8).log()
    expected = log_g.var(1, unbiased=False).sum(-1).mean()
    torch.testing.assert_close(gens[1]["within_spot_spread"].mean(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[1] - losses[0], 0.7 * expected, rtol=1e-4, atol=1e-5)


def test_negative_uniform_weight_raises():
    with pytest.raises(ValueError, match="uniform_weight must be >= 0"):
        SuperResModule([5], ["nb"], n_subspots=4, uniform_weight=-0.1)


@pytest.mark.parametrize("count_aware", [False, True])
def test_module_sum_constraint_for_every_likelihood(count_aware):
    module = SuperResModule(
        [4, 3], ["nb", "gaussian"], n_subspots=7, n_subspot_features=2, n_hidden=8, n_latent=4, count_aware=count_aware
    )
    x = torch.cat([torch.poisson(torch.full((5, 4), 6.0)), torch.randn(5, 3)], 1)
    feats = torch.randn(5, 7 * 2)
    edges = torch.zeros(2, 0, dtype=torch.long)
    for mode in ("fitted", "observed"):
        out = module.subspot_means(x, x, edges, feats, spot_mean=mode)
        torch.testing.assert_close(out["subspot_mean"].sum(1), out["spot_mean"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["spot_mean"], x)
    # count sub-spots are a non-negative split; Gaussian ones are spot / K plus zero-sum deviations
    assert (out["subspot_mean"][..., :4] >= 0).all()


@pytest.mark.parametrize("count_aware", [False, True])
def test_save_load_reproduces_outputs(tmp_path, count_aware):
    sdata = _grid_sdata()
    model = ss.tl.superres(sdata, shapes_key="spots", layout="hexagon", count_aware=count_aware, **FAST)
    assert model.module.count_aware is count_aware
    ref = model.get_subspot_expression()
    model.save(tmp_path / "m", save_anndata=True)
    loaded = SUPERRES.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.get_subspot_expression(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    assert ref.shape == (7 * 36, 5)


def test_multi_omics_per_modality_likelihoods():
    sdata = _grid_sdata(tables=("rna", "protein"))
    model = ss.tl.superres(
        sdata, shapes_key="spots", table_key="rna", modalities={"rna": "nb", "protein": "poisson"},
        layout="square", **FAST,
    )  # fmt: skip
    out = sdata.tables["rna_superres"]
    assert model.module.likelihoods == ["nb", "poisson"] and model.module.modality_sizes == [5, 5]
    assert out.var["modality"].tolist() == ["rna"] * 5 + ["protein"] * 5
    spots = np.c_[sdata.tables["rna"].X, sdata.tables["protein"].X]
    np.testing.assert_allclose(out.X.reshape(-1, 4, 10).sum(1), spots, rtol=1e-5, atol=1e-4)


def test_image_mode_uses_image_features():
    sdata = _grid_sdata(image=True)
    model = ss.tl.superres(sdata, shapes_key="spots", image_key="he", layout="square", **FAST)
    assert model.module.n_image_features > 0
    assert np.isfinite(model.history["image_penalty_train"].to_numpy(dtype=float)).all()
    assert model.module.n_subspot_features > model.module.n_image_features  # image + graph context


def test_the_image_changes_the_output():
    """The trained model reads its sub-spots' image features: giving each sub-spot the image features of another
    sub-spot of the same spot (order reversed) changes the enhanced profiles; the spot totals still hold."""
    sdata = _grid_sdata(image=True)
    model = ss.tl.superres(sdata, shapes_key="spots", image_key="he", layout="square", **FAST)
    before = model.get_subspot_expression()
    key, n_image = "X_subspot_features", model.module.n_image_features
    feats = model.adata.obsm[key].reshape(model.adata.n_obs, 4, -1).copy()
    feats[:, :, :n_image] = feats[:, ::-1, :n_image].copy()
    model.adata.obsm[key] = feats.reshape(model.adata.n_obs, -1)
    after = model.get_subspot_expression()
    # measured once: a mean absolute change of 0.103 per value (sub-spot values average 0.72 counts); half of it
    assert np.abs(after - before).mean() > 0.05, np.abs(after - before).mean()
    np.testing.assert_allclose(after.reshape(-1, 4, 5).sum(1), before.reshape(-1, 4, 5).sum(1), rtol=1e-4, atol=1e-4)


def test_no_graph_and_no_image_gives_uniform_split():
    sdata = _grid_sdata()
    ss.tl.superres(sdata, shapes_key="spots", layout="square", use_graph=False, **FAST)
    out = sdata.tables["table_superres"].X
    np.testing.assert_allclose(out, uniform_split(sdata.tables["table"].X, 4), rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_before_training():
    sdata = _grid_sdata()
    with pytest.raises(ValueError, match="K = 7"):
        ss.tl.superres(sdata, shapes_key="spots", layout="hexagon", n_subspots=4, **FAST)
    with pytest.raises(ValueError, match="square number"):
        ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=5, **FAST)
    with pytest.raises(ValueError, match="Unknown likelihood"):
        ss.tl.superres(sdata, shapes_key="spots", likelihood="gamma", **FAST)
    table = sdata.tables["table"]
    x = table.X.copy()
    table.X = x + 0.5
    with pytest.raises(ValueError, match="non-integer"):
        ss.tl.superres(sdata, shapes_key="spots", likelihood="nb", **FAST)
    table.X = x
    adj = table.obsp["spatial_connectivities"].tolil()
    adj[3, :] = 0
    adj[:, 3] = 0
    table.obsp["spatial_connectivities"] = adj.tocsr()
    with pytest.raises(ValueError, match="1 spots have no neighbours"):
        ss.tl.superres(sdata, shapes_key="spots", **FAST)
    del table.obsp["spatial_connectivities"]
    with pytest.raises(KeyError, match="build_graph"):
        ss.tl.superres(sdata, shapes_key="spots", **FAST)


def test_negative_values_in_a_count_modality_raise():
    sdata = _grid_sdata(tables=("rna", "protein"))
    sdata.tables["protein"].X[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative values"):
        ss.tl.superres(sdata, shapes_key="spots", table_key="rna", modalities={"rna": "nb", "protein": "nb"}, **FAST)
    # a Gaussian modality may be negative
    ss.tl.superres(sdata, shapes_key="spots", table_key="rna", modalities={"rna": "nb", "protein": "gaussian"}, **FAST)


def test_image_not_covering_spots_raises():
    sdata = _grid_sdata(image=True)
    sdata.images["he"].attrs["transform"] = {"global": Scale([0.01, 0.01], axes=("x", "y"))}  # image 0.48 units wide
    with pytest.raises(ValueError, match="does not cover the spots"):
        ss.tl.superres(sdata, shapes_key="spots", image_key="he", **FAST)


def test_baselines_and_context_against_hand_computed_values():
    x = np.array([[4.0], [8.0]])
    np.testing.assert_allclose(uniform_split(x, 2).ravel(), [2, 2, 4, 4])
    centres = np.array([[0.0, 0.0], [2.0, 0.0]])
    sub = np.array([[[-1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [3.0, 0.0]]])
    w_near, w_far = np.exp(-1 / 2), np.exp(-9 / 2)  # squared distances 1 and 9, bandwidth 1
    got = kernel_interpolation(x, centres, sub, 1.0)
    np.testing.assert_allclose(got[0, 0], (w_near * 4 + w_far * 8) / (w_near + w_far) / 2)
    np.testing.assert_allclose(got[1, 0], 3.0)  # equidistant: (4 + 8) / 2 / 2
    adj = sp.csr_matrix(np.array([[0, 1], [1, 0]]))
    ctx = graph_context_features(adj, centres, sub, np.array([[1.0], [3.0]]), bandwidth=1.0).reshape(2, 2, 2)
    np.testing.assert_allclose(ctx[0, :, 0], [3.0, 3.0])  # one neighbour: its value, whatever the weights
    np.testing.assert_allclose(ctx[..., 1], 0.0)


def _density_adata(n_spots=240, k=4, n_genes=6, seed=0):
    """Spots = sums of K sub-spots whose counts scale with a known per-sub-spot density (the only feature)."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.2, 2.0, (n_spots, k))
    profile = rng.uniform(2.0, 6.0, n_genes)
    sub = rng.poisson(density[..., None] * profile)  # (n, K, G)
    adata = AnnData(sub.sum(1).astype(np.float32))
    adata.obsm["feats"] = np.log(density).astype(np.float32)  # one feature per sub-spot, flattened (K * 1)
    return adata, sub.reshape(-1, n_genes), density.ravel()


def test_count_aware_branch_learns_where_the_counts_are():
    adata, truth, density = _density_adata()
    SUPERRES.setup_anndata(adata, subspot_features_key="feats", n_subspots=4, connectivity_key=None)
    model = SUPERRES(adata, n_hidden=16, n_latent=4, use_graph=False, count_aware=True)
    model.train(max_epochs=60, batch_size=60, train_size=1.0, plan_kwargs={"lr": 1e-2}, enable_progress_bar=False)
    pred = model.get_subspot_expression()
    np.testing.assert_allclose(pred.reshape(-1, 4, 6).sum(1), adata.X, rtol=1e-4, atol=1e-3)
    # the spot totals teach the branch that denser sub-spots hold more transcripts (the share model cannot tell: how
    # it splits a spot's total between its sub-spots does not change the likelihood of the spot)
    uniform = uniform_split(adata.X, 4)
    r, r_uniform = np.corrcoef(pred.sum(1), density)[0, 1], np.corrcoef(uniform.sum(1), density)[0, 1]
    assert r > 0.8 and r > r_uniform + 0.2, (r, r_uniform)
    gain = np.corrcoef(pred.ravel(), truth.ravel())[0, 1] - np.corrcoef(uniform.ravel(), truth.ravel())[0, 1]
    assert gain > 0.05, gain


def test_representation_pcs_match_svd_and_add_depth():
    from sslspatial.tl._superres import _representation

    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, (40, 10)).astype(np.float64)
    rep = _representation(x, ["nb"], [10], n_pcs=3)
    lib = x.sum(1, keepdims=True)
    z = np.log1p(x / lib * np.median(lib))
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    u, sv, _ = np.linalg.svd(z - z.mean(0), full_matrices=False)
    pcs = u[:, :3] * sv[:3]
    pcs /= pcs[:, :1].std()
    np.testing.assert_allclose(np.abs(rep[:, :3]), np.abs(pcs), rtol=1e-6, atol=1e-8)  # PCs up to sign
    depth = np.log1p(lib.ravel())
    np.testing.assert_allclose(rep[:, 3], (depth - depth.mean()) / depth.std(), rtol=1e-6, atol=1e-8)
    wide = _representation(x[:6], ["nb"], [10], n_pcs=3)  # fewer spots than features: the n x n Gram route
    z6 = np.log1p(x[:6] / lib[:6] * np.median(lib[:6]))
    z6 = (z6 - z6.mean(0)) / (z6.std(0) + 1e-8)
    u, sv, _ = np.linalg.svd(z6 - z6.mean(0), full_matrices=False)
    ref = u[:, :3] * sv[:3]
    np.testing.assert_allclose(np.abs(wide[:, :3]), np.abs(ref / ref[:, :1].std()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_training_minibatches_carry_n_layers_hops(monkeypatch, n_layers):
    """superres(n_layers=...) reaches the training loader: every training batch is the n_layers-hop subgraph."""
    from sslspatial.data import khop_subgraph
    from sslspatial.model import _superres as model_superres

    seen = []
    call = model_superres._SubgraphCollate.__call__

    def recording(self, batch):
        out = call(self, batch)
        seen.append((self.n_hops, np.asarray(batch["ind_x"]).ravel(), out))
        return out

    monkeypatch.setattr(model_superres._SubgraphCollate, "__call__", recording)
    sdata = _grid_sdata(n_side=8)
    model = ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=4, n_layers=n_layers, **FAST)
    assert model.module.encoder.n_hops == n_layers
    n_train = 2 * int(np.ceil(64 / FAST["batch_size"]))  # 2 epochs, train_size=1.0
    assert len(seen) >= n_train
    adj = sp.csr_matrix(sdata.tables["table"].obsp["spatial_connectivities"])
    for hops, seeds, out in seen:
        assert hops == n_layers
        sub = khop_subgraph(adj, seeds, n_layers)  # the shared reference gives the same nodes and edges
        np.testing.assert_array_equal(out["x_sub"].numpy(), sdata.tables["table"].X[sub.nodes])
        got = {tuple(e) for e in out["edge_index"].numpy().T}
        assert got == {tuple(e) for e in sub.edge_index.T}


def test_no_graph_minibatches_carry_no_subgraph():
    sdata = _grid_sdata()
    model = ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=4, use_graph=False, **FAST)
    assert model.n_hops == 0


def test_superres_leaves_no_internal_column_in_the_table():
    sdata = _grid_sdata()
    columns = list(sdata.tables["table"].obs.columns)
    ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=4, **FAST)
    assert list(sdata.tables["table"].obs.columns) == columns
    for name in ("table", "table_superres"):
        assert "_sslspatial_indices" not in sdata.tables[name].obs


def _fluorescence(sdata, n_side=6, seed=0):
    """A 2-channel uint16 image (DAPI-like bright on the left half of every bin, dim polyT-like on the top half)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : 8 * n_side, 0 : 8 * n_side]  # 4 px per unit, bins of side 2 = 8 px
    dapi = np.where(xx % 8 < 4, 50000, 2000) + rng.integers(0, 500, xx.shape)
    polyt = np.where(yy % 8 < 4, 300, 40) + rng.integers(0, 20, yy.shape)
    img = np.stack([dapi, polyt]).astype(np.uint16)
    sdata.images["fish"] = Image2DModel.parse(
        img, dims=("c", "y", "x"), c_coords=["DAPI", "polyT"],
        transformations={"global": Scale([0.25, 0.25], axes=("x", "y"))},
    )  # fmt: skip
    return img


@pytest.mark.parametrize("value_range", [None, (0, 65535)])
def test_fluorescence_two_channel_uint16_image(value_range):
    """superres takes a DAPI + polyT uint16 image: per-channel features, each channel scaled to its own range."""
    from sslspatial.pp._image_features import CHANNEL_FEATURE_NAMES

    sdata = _grid_sdata()
    _fluorescence(sdata)
    model = ss.tl.superres(sdata, shapes_key="spots", image_key="fish", layout="square", n_subspots=4,
                           value_range=value_range, **FAST)  # fmt: skip
    n_per = 2 * len(CHANNEL_FEATURE_NAMES)
    assert model.module.n_image_features == n_per
    feats = model.adata.obsm["X_subspot_features"].reshape(model.adata.n_obs, 4, -1)[..., :n_per]
    assert np.isfinite(feats).all()
    mean = {c: feats[..., i * len(CHANNEL_FEATURE_NAMES)] for i, c in enumerate(("DAPI", "polyT"))}
    # square sub-spots of a bin: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (y grows downward in pixels)
    assert (mean["DAPI"][:, [0, 2]] > mean["DAPI"][:, [1, 3]]).all()  # left halves are bright in DAPI
    assert (mean["polyT"][:, [0, 1]] > mean["polyT"][:, [2, 3]]).all()  # top halves are bright in polyT
    out = sdata.tables["table_superres"]
    np.testing.assert_allclose(out.X.reshape(-1, 4, out.n_vars).sum(1), sdata.tables["table"].X, rtol=1e-4, atol=1e-4)


def test_per_channel_quantile_ranges():
    from sslspatial.pp._image_features import channel_ranges

    img = np.stack([np.linspace(0, 60000, 10000).reshape(100, 100), np.linspace(10, 310, 10000).reshape(100, 100)])
    ranges = channel_ranges(img.astype(np.uint16))
    np.testing.assert_allclose(ranges, [[600, 59400], [13, 307]], rtol=0.01)
    np.testing.assert_array_equal(channel_ranges(img, (0, 1)), [[0, 1], [0, 1]])
    np.testing.assert_array_equal(channel_ranges(img.astype(np.uint8)), [[0, 255], [0, 255]])
    flat = channel_ranges(np.ones((1, 5, 5), np.float32))
    assert flat[0, 1] > flat[0, 0]
    with pytest.raises(ValueError, match="value_range"):
        channel_ranges(img, (1, 1))


def test_fluorescence_with_a_backbone_method_raises_clearly():
    sdata = _grid_sdata()
    _fluorescence(sdata)
    with pytest.raises(ValueError, match="image_method='stats'"):
        ss.tl.superres(sdata, shapes_key="spots", image_key="fish", image_method="cnn", **FAST)


# ---------------------------------------------------------------- speed-ups for Visium HD-sized runs (issue 16)
def test_gene_reduction_layer_values():
    from sslspatial.nn._superres import SpotGraphEncoder

    torch.manual_seed(0)
    enc = SpotGraphEncoder(6, n_hidden=8, n_latent=2, n_layers=1, n_reduce=3)
    assert isinstance(enc.reduce, torch.nn.Linear) and enc.convs[0].in_channels == 3
    x, edges = torch.randn(4, 6), torch.tensor([[1, 2, 0, 3], [0, 0, 1, 2]])
    mu, sd = enc(x, edges)
    # by hand: reduce = W x + b, then the one TransformerConv; the output is [mean | softplus(raw) + eps]
    h = enc.convs[0](x @ enc.reduce.weight.T + enc.reduce.bias, edges)
    torch.testing.assert_close(mu, h[:, :2])
    torch.testing.assert_close(sd, torch.nn.functional.softplus(h[:, 2:]) + enc.var_eps)
    # no reduction when it would not reduce
    assert isinstance(SpotGraphEncoder(6, n_reduce=6).reduce, torch.nn.Identity)
    assert isinstance(SpotGraphEncoder(6, n_reduce=None).reduce, torch.nn.Identity)
    with pytest.raises(ValueError, match="n_reduce"):
        SpotGraphEncoder(6, n_reduce=0)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_encoder_targets_only_equals_full_pass(n_layers):
    """The last layer computed for the seeds alone gives the seeds' rows of the full pass."""
    from sslspatial.nn._superres import SpotGraphEncoder

    torch.manual_seed(0)
    enc = SpotGraphEncoder(5, n_hidden=8, n_latent=3, n_layers=n_layers)
    x = torch.randn(7, 5)
    edges = torch.tensor([[1, 2, 0, 3, 4, 5, 6, 0], [0, 0, 1, 1, 2, 3, 4, 6]])
    mu, sd = enc(x, edges)
    mu2, sd2 = enc(x, edges, n_targets=3)
    assert mu2.shape == (3, 3)
    torch.testing.assert_close(mu2, mu[:3])
    torch.testing.assert_close(sd2, sd[:3])


def test_relative_early_stopping_stops_when_loss_stalls():
    from sslspatial.model._superres import RelativeEarlyStopping

    stop = RelativeEarlyStopping("m", rel_delta=1e-2, patience=2)
    # 100 -> 95 improves by 5 %; 94.5 and 94.2 are within 1 % of 95: two stalls stop training
    decisions = [stop._evaluate_stopping_criteria(torch.tensor(v))[0] for v in (100.0, 95.0, 94.5, 94.2)]
    assert decisions == [False, False, False, True]
    stop = RelativeEarlyStopping("m", rel_delta=1e-2, patience=2)
    assert not any(stop._evaluate_stopping_criteria(torch.tensor(v))[0] for v in (100.0, 90.0, 80.0, 70.0))
    with pytest.raises(ValueError, match="rel_delta"):
        RelativeEarlyStopping("m", rel_delta=-1)


def test_superres_early_stopping_holds_out_spots_and_enhances_all(monkeypatch):
    from sslspatial.model import _superres as model_superres
    from sslspatial.model._superres import RelativeEarlyStopping

    sdata = _grid_sdata(n_side=8)
    kw = {k: v for k, v in FAST.items() if k != "max_epochs"}
    # a stall (no 50 % improvement) after the first validation epoch stops training at epoch 2 of up to 30
    monkeypatch.setattr(model_superres, "_early_stopping_options", lambda: {
        "train_size": 0.9, "validation_size": 0.1, "check_val_every_n_epoch": 1,
        "callbacks": [RelativeEarlyStopping("subspot_sum_nll_validation", rel_delta=0.5, patience=1)]})  # fmt: skip
    monkeypatch.setattr(model_superres, "EARLY_STOPPING_MIN_SPOTS", 10)  # 64 spots: early stopping by default
    model = ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=4, **kw)
    assert "subspot_sum_nll_validation" in model.history
    assert len(model.history["subspot_sum_nll_validation"]) == 2
    out = sdata.tables["table_superres"]
    assert out.n_obs == 4 * 64  # held-out spots are enhanced too, and sum to their spot
    x = sdata.tables["table"].X
    np.testing.assert_allclose(np.asarray(out.X).reshape(64, 4, -1).sum(1), x, rtol=1e-4, atol=1e-4)
    # an explicit max_epochs (or small data) trains every spot for that many epochs, no validation
    model = ss.tl.superres(sdata, shapes_key="spots", layout="square", n_subspots=4, overwrite=True, **FAST)
    assert "subspot_sum_nll_validation" not in model.history
    assert len(model.history["subspot_sum_nll_train"]) == FAST["max_epochs"]
