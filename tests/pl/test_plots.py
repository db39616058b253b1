"""Rendering tests of ``ss.pl``: each plot is saved to PNG, and its axes, titles, drawn values and pixels checked."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import EllipseCollection, PathCollection
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

import sslspatial as ss
from sslspatial.pl._history import split_and_quantity


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_png(path, min_ink: float = 0.02) -> None:
    """The PNG exists and is not blank: enough non-white pixels and some contrast."""
    assert path.exists() and path.stat().st_size > 0
    img = plt.imread(path)[..., :3]
    ink = float((img.min(axis=-1) < 0.95).mean())
    assert ink > min_ink, f"almost blank image ({ink:.3f} non-white)"
    assert float(img.std()) > 0.03


def panels(fig) -> list:
    """Axes that are plot panels (not colour bars)."""
    return [a for a in fig.axes if a.get_label() != "<colorbar>" and a.get_visible()]


def offsets_of(ax) -> np.ndarray:
    colls = [c for c in ax.collections if isinstance(c, PathCollection | EllipseCollection)]
    assert len(colls) == 1
    return np.asarray(colls[0].get_offsets())


def colour_values(ax) -> np.ndarray:
    coll = [c for c in ax.collections if isinstance(c, PathCollection | EllipseCollection)][0]
    return np.ma.filled(coll.get_array().astype(float), np.nan)


# ----------------------------------------------------------------------------------------------------- history


def _history() -> dict[str, pd.DataFrame]:
    epochs = pd.Index(np.arange(6), name="epoch")

    def frame(key, values):
        return pd.DataFrame({key: values}, index=epochs)

    return {
        "train_loss_step": pd.DataFrame({"train_loss_step": np.linspace(9, 1, 30)}),
        "train_loss_epoch": frame("train_loss_epoch", [5.0, 4.0, 3.0, 2.5, 2.2, 2.0]),
        "validation_loss": frame("validation_loss", [5.5, 4.6, 3.9, 3.5, 3.4, 3.4]),
        "elbo_train": frame("elbo_train", [50.0, 40.0, 35.0, 31.0, 30.0, 29.5]),
        "elbo_validation": frame("elbo_validation", [52.0, 43.0, 38.0, 35.0, 34.0, 34.0]),
    }


def test_split_and_quantity_pairs_train_and_validation():
    assert split_and_quantity("train_loss_epoch") == ("train", "loss")
    assert split_and_quantity("validation_loss") == ("validation", "loss")
    assert split_and_quantity("elbo_validation") == ("validation", "elbo")
    assert split_and_quantity("kl_local_train") == ("train", "kl_local")
    assert split_and_quantity("lr") == ("", "lr")


def test_history_one_panel_per_quantity_one_line_per_key(tmp_path):
    hist = _history()

    class FakeModel:
        history = hist

    fig = ss.pl.history(FakeModel(), log=True, save=tmp_path / "history.png")
    assert_png(tmp_path / "history.png")
    axes = panels(fig)
    assert [a.get_title() for a in axes] == ["loss", "elbo"]  # step key skipped by default
    loss, elbo = axes
    assert [ln.get_label() for ln in loss.lines] == ["train_loss_epoch", "validation_loss"]
    assert [ln.get_label() for ln in elbo.lines] == ["elbo_train", "elbo_validation"]
    np.testing.assert_allclose(loss.lines[1].get_ydata(), hist["validation_loss"]["validation_loss"])
    np.testing.assert_allclose(loss.lines[1].get_xdata(), np.arange(6))
    assert loss.get_yscale() == "log"
    assert loss.lines[0].get_linestyle() == "-" and loss.lines[1].get_linestyle() == "--"


def test_history_leaves_out_all_zero_and_duplicate_panels(tmp_path):
    rec = [44.2, 43.0, 42.6]
    hist = {
        "train_loss": pd.DataFrame({"train_loss": [2.2, 2.1, 2.0]}),
        "elbo_train": pd.DataFrame({"elbo_train": rec}),
        "reconstruction_loss_train": pd.DataFrame({"reconstruction_loss_train": rec}),
        "kl_local_train": pd.DataFrame({"kl_local_train": [0.0, 0.0, 0.0]}),
        "kl_global_train": pd.DataFrame({"kl_global_train": [0.0, 0.0, 0.0]}),
    }
    fig = ss.pl.history(hist, save=tmp_path / "h.png")
    assert_png(tmp_path / "h.png")
    assert [a.get_title() for a in panels(fig)] == ["loss", "reconstruction_loss"]
    note = fig.get_suptitle()
    assert "kl_local (all zero)" in note and "kl_global (all zero)" in note and "elbo (= reconstruction_loss)" in note
    assert [t.get_text() for t in panels(fig)[1].get_legend().get_texts()] == ["reconstruction_loss_train"]
    everything = ss.pl.history(hist, redundant=True)
    assert [a.get_title() for a in panels(everything)] == [
        "loss",
        "elbo",
        "reconstruction_loss",
        "kl_local",
        "kl_global",
    ]
    explicit = ss.pl.history(hist, keys=["kl_local_train"])  # asked for by name: drawn
    assert [a.get_title() for a in panels(explicit)] == ["kl_local"]


def test_history_explicit_keys_on_given_axes(tmp_path):
    fig, ax = plt.subplots()
    out = ss.pl.history(_history(), keys=["train_loss_step", "elbo_train"], ax=ax, save=tmp_path / "h.png")
    assert out is ax
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.linspace(9, 1, 30))
    assert_png(tmp_path / "h.png")


def test_history_errors():
    with pytest.raises(ValueError, match="train the model first"):
        ss.pl.history({})
    with pytest.raises(KeyError, match="no key"):
        ss.pl.history(_history(), keys="nope")
    with pytest.raises(TypeError, match="trained scvi-tools model"):
        ss.pl.history(42)


# ---------------------------------------------------------------------------------------------- expression


def _two_section_table(n: int = 80, n_genes: int = 4, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = rng.poisson(3.0, size=(n, n_genes)).astype(np.float32)
    obs = pd.DataFrame({"section": np.repeat(["s1", "s2"], n // 2)}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    adata.layers["pred"] = x + rng.normal(0, 1, size=x.shape).astype(np.float32)
    return adata


def test_expression_maps_layer_per_section(tmp_path):
    adata = _two_section_table()
    fig = ss.pl.expression_maps(
        adata,
        ["g0", "g2"],
        prediction="pred",
        library_key="section",
        percentile=100,
        scale="shared",
        save=tmp_path / "e.png",
    )
    assert_png(tmp_path / "e.png")
    axes = panels(fig)
    assert len(axes) == 8  # 2 genes x (measured | predicted) x 2 sections
    assert len(fig.axes) == 10  # plus one shared colour bar per gene
    titles = [a.get_title() for a in axes]
    r = np.corrcoef(adata.X[:, 0], adata.layers["pred"][:, 0])[0, 1]  # over both drawn sections
    predicted = f"g0 · predicted, r = {r:.2f}"
    assert titles[:4] == ["g0 · measured · s1", f"{predicted} · s1", "g0 · measured · s2", f"{predicted} · s2"]
    assert titles[4].startswith("g2 · measured")
    s2 = (adata.obs["section"] == "s2").to_numpy()
    np.testing.assert_allclose(offsets_of(axes[6]), adata.obsm["spatial"][s2])
    np.testing.assert_allclose(colour_values(axes[6]), adata.X[s2, 2])
    np.testing.assert_allclose(colour_values(axes[7]), adata.layers["pred"][s2, 2], rtol=1e-6)
    # one colour scale per gene, spanning measured and predicted of both sections
    norm = axes[4].collections[0].norm
    both = np.r_[adata.X[:, 2], adata.layers["pred"][:, 2]]
    assert (norm.vmin, norm.vmax) == pytest.approx((both.min(), both.max()))
    assert all(a.collections[0].norm is norm for a in axes[4:])
    assert fig.axes[-1].get_ylabel() == "expression"
    assert axes[0].get_xlabel() == "x (coordinate units)"


def test_expression_maps_separate_scales_on_request_with_labelled_colour_bars():
    adata = _two_section_table()
    adata.layers["pred"] = 0.1 * adata.X + 5.0  # right pattern, compressed and shifted range
    adata.uns["coordinate_unit"] = "um"
    fig = ss.pl.expression_maps(adata, "g1", prediction="pred", scale="separate")
    axes = panels(fig)
    assert len(axes) == 2 and len(fig.axes) == 4  # one colour bar per panel
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert [b.get_ylabel() for b in bars] == ["measured: expression", "predicted (pred): expression"]
    assert axes[1].get_title() == "g1 · predicted, r = 1.00"
    meas, pred = (a.collections[0].norm for a in axes)
    assert (meas.vmin, pred.vmin) == pytest.approx((adata.X[:, 1].min(), 5.0 + 0.1 * adata.X[:, 1].min()))
    assert all(a.collections[0].colorbar is not None for a in axes)
    assert [a.get_xlabel() for a in axes] == ["x (µm)", "x (µm)"] and axes[0].get_ylabel() == "y (µm)"
    assert len(axes[0].images) == 0  # an AnnData has no image


def test_expression_maps_share_one_scale_on_the_predictions_transform_by_default(tmp_path):
    """Raw counts beside hist2expr-style log-normalised predictions: measured is log-normalised, one colour bar."""
    adata = _two_section_table()
    counts = adata.X.copy()
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    pred = ad.AnnData(logged + 0.05, obs=adata.obs.copy(), var=adata.var.copy())
    pred.obsm["spatial"] = adata.obsm["spatial"]
    pred.uns["hist2expr"] = {"function": "hist2expr", "target": "log1p(x / total * 1e4)"}
    fig = ss.pl.expression_maps(adata, "g2", prediction=pred, percentile=100, save=tmp_path / "m.png")
    assert_png(tmp_path / "m.png")
    axes = panels(fig)
    np.testing.assert_allclose(colour_values(axes[0]), logged[:, 2], rtol=1e-5)  # measured on the same transform
    assert axes[0].collections[0].norm is axes[1].collections[0].norm  # one scale
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "log1p(counts / total × 10⁴)"
    assert axes[1].get_title() == "g2 · predicted, r = 1.00"
    raw = ss.pl.expression_maps(adata, "g2", prediction=pred, transform="none")
    np.testing.assert_allclose(colour_values(panels(raw)[0]), counts[:, 2])


def test_expression_maps_quantile_scale_shares_one_bar():
    adata = _two_section_table()
    fig = ss.pl.expression_maps(adata, "g0", prediction="pred", scale="quantile")
    axes = panels(fig)
    q = colour_values(axes[1])
    assert q.min() == 0.0 and q.max() == 1.0
    order = np.argsort(adata.layers["pred"][:, 0], kind="stable")
    assert np.all(np.diff(q[order]) >= 0)  # quantiles keep the order of the values
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "quantile within kind (expression)"
    with pytest.raises(ValueError, match="scale"):
        ss.pl.expression_maps(adata, "g0", prediction="pred", scale="log")


def test_expression_maps_prediction_table_with_image_only_section(tmp_path):
    measured = _two_section_table()
    measured = measured[measured.obs["section"] == "s1"].copy()
    rng = np.random.default_rng(1)
    pred = ad.AnnData(
        rng.gamma(2.0, size=(60, 4)).astype(np.float32),
        obs=pd.DataFrame(
            {"section": np.repeat(["s1", "s3"], [40, 20])},
            index=[f"c{i}" for i in range(40)] + [f"n{i}" for i in range(20)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(4)]),
    )
    pred.obsm["spatial"] = np.r_[measured.obsm["spatial"], rng.uniform(0, 100, size=(20, 2))]
    fig = ss.pl.expression_maps(measured, "g1", prediction=pred, library_key="section", save=tmp_path / "p.png")
    assert_png(tmp_path / "p.png")
    axes = panels(fig)
    r = np.corrcoef(measured.X[:, 1], pred.X[:40, 1])[0, 1]  # the cells measured and predicted
    assert [a.get_title() for a in axes] == [
        "g1 · measured · s1",
        f"g1 · predicted, r = {r:.2f} · s1",
        "g1 · measured · s3",
        f"g1 · predicted, r = {r:.2f} · s3",
    ]
    assert [t.get_text() for t in axes[2].texts] == ["not measured"]
    np.testing.assert_allclose(colour_values(axes[3]), pred.X[40:, 1], rtol=1e-6)


def test_expression_maps_prediction_without_coordinates_takes_measured_ones():
    measured = _two_section_table()
    pred = ad.AnnData(measured.layers["pred"][::-1].copy(), obs=pd.DataFrame(index=measured.obs_names[::-1]))
    pred.var_names = measured.var_names
    fig = ss.pl.expression_maps(measured, "g0", prediction=pred, library_key="section", sections="s2")
    axes = panels(fig)
    assert len(axes) == 2 and axes[1].get_title().startswith("g0 · predicted, r = ")
    # predicted rows (reversed order) are drawn at the coordinates of the measured cell with the same name
    s2_rev = pred.obs_names.isin(measured.obs_names[measured.obs["section"] == "s2"])
    expected = measured[pred.obs_names[s2_rev]].obsm["spatial"]
    np.testing.assert_allclose(offsets_of(axes[1]), expected)


def test_expression_maps_over_image(tmp_path):
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    rng = np.random.default_rng(0)
    image = np.zeros((3, 60, 80), dtype=np.uint8)
    image[0] = 200
    image[1, 10:50, 10:70] = 120
    img = Image2DModel.parse(
        image, dims=("c", "y", "x"), transformations={"global": Scale([2.0, 2.0], axes=("y", "x"))}
    )
    coords = rng.uniform(20, 140, size=(50, 2))  # µm; pixel = µm / 2
    table = ad.AnnData(rng.poisson(4, size=(50, 3)).astype(np.float32), var=pd.DataFrame(index=["a", "b", "c"]))
    table.obs["region"] = pd.Categorical(["cells"] * 50)
    table.obs["cell_id"] = np.arange(50)
    table.obsm["spatial"] = coords
    table.layers["pred"] = table.X * 0.5
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="cell_id")
    circles = ShapesModel.parse(coords, geometry=0, radius=np.full(50, 3.0), transformations={"global": Identity()})
    sdata = SpatialData(images={"he": img}, shapes={"cells": circles}, tables={"table": table})
    sdata.tables["table"].uns["coordinate_unit"] = "µm"
    fig = ss.pl.expression_maps(sdata, "b", prediction="pred", image_key="he", spot_radius=3.0, save=tmp_path / "i.png")
    assert_png(tmp_path / "i.png")
    axes = panels(fig)
    assert [a.get_title() for a in axes] == ["b · measured", "b · predicted, r = 1.00"]
    assert len(axes[0].images) == 1 and len(axes[1].images) == 1
    # an axis-aligned image is placed in the coordinate system: spots stay in µm, the image spans 2 µm per pixel
    np.testing.assert_allclose(offsets_of(axes[0]), coords)
    np.testing.assert_allclose(axes[0].collections[0].get_widths(), 6.0)  # diameter 2 * 3 µm
    x0, x1, y0, y1 = axes[0].images[0].get_extent()
    assert (x1 - x0) / axes[0].images[0].get_array().shape[1] == pytest.approx(2.0)
    assert axes[0].get_xlabel() == "x (µm)"
    auto = ss.pl.expression_maps(sdata, "b", prediction="pred")  # default: the image of the spots' coordinate system
    assert all(len(a.images) == 1 for a in panels(auto))
    bare = ss.pl.expression_maps(sdata, "b", prediction="pred", image_key=None)
    assert all(len(a.images) == 0 for a in panels(bare))
    with pytest.raises(TypeError, match="needs a SpatialData"):
        ss.pl.expression_maps(table, "b", prediction="pred", image_key="he")


def test_expression_maps_errors(tmp_path):
    adata = _two_section_table()
    with pytest.raises(KeyError, match="not in the var_names of the measured table"):
        ss.pl.expression_maps(adata, "GAPDH", prediction="pred")
    with pytest.raises(KeyError, match="neither a table"):
        ss.pl.expression_maps(adata, "g0", prediction="missing")
    with pytest.raises(KeyError, match="sections"):
        ss.pl.expression_maps(adata, "g0", prediction="pred", library_key="section", sections="s9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ss.pl.expression_maps(adata, "g0", prediction="pred", save=tmp_path / "no" / "x.png")


# ------------------------------------------------------------------------------------------- correlations


def test_gene_correlations_histogram_median_and_top_genes(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.uniform(-0.3, 0.9, size=40)
    values[[3, 7]] = np.nan
    r = pd.Series(values, index=[f"gene{i}" for i in range(40)])
    fig = ss.pl.gene_correlations(r, n_top=3, save=tmp_path / "c.png")
    assert_png(tmp_path / "c.png")
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 38  # NaNs left out
    assert ax.lines[0].get_xdata()[0] == pytest.approx(np.nanmedian(values))
    assert [t.get_text() for t in ax.texts] == list(r.dropna().sort_values(ascending=False).index[:3])
    assert "2 constant" in ax.get_title()


def test_gene_correlations_from_anndata_uns_and_array():
    adata = ad.AnnData(np.zeros((3, 5)), var=pd.DataFrame(index=list("ABCDE")))
    adata.uns["hist2expr_pearson"] = np.array([0.1, 0.5, 0.9, 0.3, 0.2])
    fig = ss.pl.gene_correlations(adata, n_top=2)
    assert [t.get_text() for t in fig.axes[0].texts] == ["C", "B"]
    fig2 = ss.pl.gene_correlations(np.array([0.1, 0.2, 0.3]), n_top=2)
    assert len(fig2.axes[0].texts) == 0  # no names, nothing to annotate
    with pytest.raises(ValueError, match="gene_names has 2 entries"):
        ss.pl.gene_correlations(np.array([0.1, 0.2, 0.3]), gene_names=["a", "b"])
    adata.uns["other_correlation"] = {"A": 0.2}
    with pytest.raises(KeyError, match="Pass key="):
        ss.pl.gene_correlations(adata)


def test_gene_correlations_pass_over_the_baseline_column():
    """A hist2expr table holds the model's and the baseline's per-gene Pearson: without key= the model's is drawn."""
    var = pd.DataFrame({"pearson_s1": [0.1, 0.5, 0.9], "baseline_pearson_s1": [0.0, 0.0, 0.0]}, index=list("ABC"))
    adata = ad.AnnData(np.zeros((2, 3)), var=var)
    fig = ss.pl.gene_correlations(adata, n_top=1)
    assert [t.get_text() for t in fig.axes[0].texts] == ["C"]
    adata.var["pearson_s2"] = [0.2, 0.2, 0.2]
    with pytest.raises(KeyError, match="Pass key="):  # two model columns: still ambiguous
        ss.pl.gene_correlations(adata)


# --------------------------------------------------------------------------------------------- annotation


def _labels(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.choice(["B cell", "T cell", "tumour", "stroma"], size=n, p=[0.1, 0.2, 0.4, 0.3])
    pred = np.where(rng.uniform(size=n) < 0.7, truth, rng.choice(["B cell", "T cell", "tumour", "stroma"], size=n))
    return truth, pred


@pytest.mark.parametrize("normalize", ["true", "pred", None])
def test_confusion_matrix_values_equal_sklearn(tmp_path, normalize):
    truth, pred = _labels()
    fig = ss.pl.confusion_matrix(truth, pred, normalize=normalize, save=tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")
    ax = panels(fig)[0]
    classes = sorted(set(truth))
    expected = sk_confusion_matrix(truth, pred, labels=classes, normalize=normalize)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert len(ax.texts) == 16
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert f"accuracy {np.mean(truth == pred):.3f}" in ax.get_title()


def test_confusion_matrix_from_anndata_with_mask_and_missing_labels():
    truth, pred = _labels()
    obs = pd.DataFrame({"cell_type": truth, "annotate_prediction": pred, "test": np.arange(200) % 2 == 0})
    obs.loc[obs.index[:4], "cell_type"] = np.nan  # unlabelled cells are left out
    adata = ad.AnnData(np.zeros((200, 1)), obs=obs.set_axis([str(i) for i in range(200)]))
    fig, ax = plt.subplots()
    out = ss.pl.confusion_matrix(adata, true_key="cell_type", pred_key="annotate_prediction", mask="test", ax=ax)
    assert out is ax
    keep = (np.arange(200) % 2 == 0) & ~pd.isna(obs["cell_type"]).to_numpy()
    expected = sk_confusion_matrix(truth[keep], pred[keep], labels=sorted(set(truth)), normalize="true")
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected)
    assert "2 unlabelled left out" in ax.get_title()
    with pytest.raises(TypeError, match="true_key="):
        ss.pl.confusion_matrix(adata)
    with pytest.raises(ValueError, match="Unknown normalize"):
        ss.pl.confusion_matrix(truth, pred, normalize="rows")


def test_class_f1_bars_sorted_with_support(tmp_path):
    truth, pred = _labels()
    fig = ss.pl.class_f1(truth, pred, save=tmp_path / "f1.png")
    assert_png(tmp_path / "f1.png")
    ax = panels(fig)[0]
    classes = sorted(set(truth))
    _, _, f1, support = precision_recall_fscore_support(truth, pred, labels=classes, zero_division=0)
    order = np.argsort(-f1, kind="stable")
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths, f1[order])
    assert [t.get_text() for t in ax.get_yticklabels()] == [classes[i] for i in order]
    assert [t.get_text() for t in ax.texts] == [f"n={support[i]}" for i in order]
    assert ax.lines[0].get_xdata()[0] == pytest.approx(f1.mean())


# ----------------------------------------------------------------------------------------------- superres


def _spots_and_subspots():
    from sslspatial.pp import subspot_offsets

    r = 5.0
    centres = np.array([[x + (10 if y % 2 else 0), y * 17.32] for y in range(3) for x in range(0, 60, 20)], float)
    offsets, r_sub = subspot_offsets("hexagon", r)
    rng = np.random.default_rng(0)
    k = len(offsets)
    sub_xy = (centres[:, None, :] + offsets[None]).reshape(-1, 2)
    sub_x = rng.poisson(2.0, size=(len(sub_xy), 2)).astype(np.float32)
    spot_x = sub_x.reshape(len(centres), k, 2).sum(axis=1)
    var = pd.DataFrame(index=["geneA", "geneB"])
    section = np.where(np.arange(len(centres)) < 6, "left", "right")
    spots = ad.AnnData(
        spot_x, obs=pd.DataFrame({"section": section}, index=[f"s{i}" for i in range(len(centres))]), var=var
    )
    spots.obsm["spatial"] = centres
    spots.uns["spot_geometry"] = {"spot_radius": r, "subspot_radius": r_sub, "coordinate_unit": "um"}
    sub_obs = pd.DataFrame({"spot": np.repeat(spots.obs_names, k), "subspot": np.tile(np.arange(k), len(centres))})
    subs = ad.AnnData(sub_x, obs=sub_obs.set_axis([f"u{i}" for i in range(len(sub_xy))]), var=var)
    subs.obsm["spatial"] = sub_xy
    return spots, subs, r, r_sub


def test_superres_maps_circles_of_true_radius(tmp_path):
    spots, subs, r, r_sub = _spots_and_subspots()
    pred = subs.copy()
    pred.X = pred.X * 0.9
    del pred.uns  # radius falls back to half the nearest-neighbour distance = r_sub for touching sub-spots
    fig = ss.pl.superres_maps(spots, pred, ["geneA", "geneB"], truth_table=subs, save=tmp_path / "s.png")
    assert_png(tmp_path / "s.png")
    axes = panels(fig)
    assert [a.get_title() for a in axes] == [
        f"{g} · {k}" for g in ("geneA", "geneB") for k in ("spots", "sub-spots", "truth")
    ]
    np.testing.assert_allclose(axes[0].collections[0].get_widths(), 2 * r)
    np.testing.assert_allclose(axes[1].collections[0].get_widths(), 2 * r_sub)
    np.testing.assert_allclose(axes[2].collections[0].get_widths(), 2 * r_sub)
    np.testing.assert_allclose(offsets_of(axes[1]), subs.obsm["spatial"])
    np.testing.assert_allclose(colour_values(axes[3]), spots.X[:, 1])
    assert axes[1].collections[0].norm is axes[2].collections[0].norm  # sub-spots and truth share a scale
    assert axes[0].collections[0].norm is not axes[1].collections[0].norm
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert [b.get_ylabel() for b in bars] == ["spots (X)", "sub-spots and truth"] * 2
    assert axes[0].get_xlabel() == "x (µm)"  # from spots.uns["spot_geometry"]["coordinate_unit"]


def test_superres_maps_section_selects_children_and_errors():
    spots, subs, r, _ = _spots_and_subspots()
    fig = ss.pl.superres_maps(spots, subs, "geneA", library_key="section", section="right", spot_radius=4.0)
    axes = panels(fig)
    assert len(axes) == 2
    right = spots.obs_names[spots.obs["section"] == "right"]
    np.testing.assert_allclose(offsets_of(axes[0]), spots[right].obsm["spatial"])
    np.testing.assert_allclose(offsets_of(axes[1]), subs[subs.obs["spot"].isin(right)].obsm["spatial"])
    np.testing.assert_allclose(axes[0].collections[0].get_widths(), 8.0)
    with pytest.raises(KeyError, match="obsm"):
        ss.pl.superres_maps(spots, ad.AnnData(np.zeros((2, 2))), "geneA")
    with pytest.raises(ValueError, match="> 0"):
        ss.pl.superres_maps(spots, subs, "geneA", spot_radius=-1.0)
    with pytest.raises(KeyError, match="geneZ"):
        ss.pl.superres_maps(spots, subs, "geneZ")


# ---------------------------------------------------------------------------------------------- embedding


def _embedded(n: int = 90) -> ad.AnnData:
    rng = np.random.default_rng(0)
    types = np.repeat(["a", "b", "c"], n // 3)
    centres = {"a": 0.0, "b": 4.0, "c": 8.0}
    z = rng.normal(size=(n, 6)) + np.array([centres[t] for t in types])[:, None]
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(types), "score": rng.uniform(size=n)}, index=[f"c{i}" for i in range(n)]
    )
    adata = ad.AnnData(rng.poisson(1.0, size=(n, 3)).astype(np.float32), obs=obs)
    adata.var_names = ["g0", "g1", "g2"]
    adata.obsm["X_pretrain_mask"] = z
    adata.obsm["spatial"] = rng.uniform(0, 50, size=(n, 2))
    adata.uns["cell_type_colors"] = ["#ff0000", "#00ff00", "#0000ff"]
    adata.uns["coordinate_unit"] = "pixel"
    return adata


def test_embedding_none_and_pca_coordinates(tmp_path):
    adata = _embedded()
    fig = ss.pl.embedding(
        adata, color=["cell_type", "score", "g1"], method="none", spatial=True, save=tmp_path / "e.png"
    )
    assert_png(tmp_path / "e.png")
    axes = panels(fig)
    assert [a.get_title() for a in axes] == [
        "cell_type",
        "score",
        "g1",
        "cell_type · spatial",
        "score · spatial",
        "g1 · spatial",
    ]
    np.testing.assert_allclose(offsets_of(axes[0]), adata.obsm["X_pretrain_mask"][:, :2])
    np.testing.assert_allclose(offsets_of(axes[3]), adata.obsm["spatial"])
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend == ["a", "b", "c"]
    faces = axes[0].collections[0].get_facecolors()
    np.testing.assert_allclose(faces[0][:3], [1, 0, 0])  # scanpy colours from uns["cell_type_colors"]
    np.testing.assert_allclose(colour_values(axes[2]), adata[:, "g1"].X.ravel())
    assert len(fig.axes) == len(axes) + 4  # colour bars for the two numeric colours, in both rows
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert sorted(b.get_ylabel() for b in bars) == ["g1", "g1", "score", "score"]
    assert [t.get_text() for t in axes[3].get_legend().get_texts()] == ["a", "b", "c"]
    assert axes[3].get_xlabel() == "x (pixels)" and axes[3].get_ylabel() == "y (pixels)"
    assert axes[0].get_xlabel() == "X_pretrain_mask[0]"

    fig_pca = ss.pl.embedding(adata, color="cell_type", method="pca")
    expected = PCA(n_components=2, random_state=0).fit_transform(adata.obsm["X_pretrain_mask"])
    got = offsets_of(panels(fig_pca)[0])
    signs = np.sign((got * expected).sum(axis=0))
    np.testing.assert_allclose(got, expected * signs, atol=1e-8)


def test_embedding_umap_leaves_user_object_untouched(tmp_path):
    adata = _embedded(60)
    before = (set(adata.obsm), set(adata.uns), set(adata.obsp), adata.obs.copy())
    fig, ax = plt.subplots()
    out = ss.pl.embedding(
        adata,
        color="cell_type",
        method="umap",
        n_neighbors=10,
        neighbors_kwargs={"method": "gauss"},
        ax=ax,
        save=tmp_path / "u.png",
    )
    assert out is ax
    assert_png(tmp_path / "u.png")
    assert (set(adata.obsm), set(adata.uns), set(adata.obsp)) == before[:3]
    pd.testing.assert_frame_equal(adata.obs, before[3])
    xy = offsets_of(ax)
    # UMAP keeps the three well-separated types apart: each point's nearest neighbour has its type
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    types = adata.obs["cell_type"].to_numpy()
    assert (types[d.argmin(1)] == types).mean() > 0.95


def test_embedding_errors():
    adata = _embedded()
    with pytest.raises(KeyError, match="pretrain_mask"):
        ss.pl.embedding(adata, basis="X_missing")
    with pytest.raises(KeyError, match="neither an obs column nor a gene"):
        ss.pl.embedding(adata, color="nope", method="none")
    with pytest.raises(ValueError, match="Unknown method"):
        ss.pl.embedding(adata, method="tsne")
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="single panel"):
        ss.pl.embedding(adata, color=["cell_type", "score"], method="none", ax=ax)


# ------------------------------------------------------------------------------------------- demo figures


def test_demo_tissue_figure_has_legends_units_and_the_image(tmp_path, monkeypatch):
    from sslspatial.cli import _demo

    sdata = ss.datasets.synthetic_tissue(n_cells=300, n_genes=10, extent=400.0, spot_layouts=())
    ss.pp.build_graph(sdata, method="knn", n_neighs=4)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    _demo._plot_tissue(sdata, tmp_path / "tissue.png")
    assert_png(tmp_path / "tissue.png")
    left, right = figures[0].axes
    table = sdata.tables["table"]
    assert [t.get_text() for t in left.get_legend().get_texts()] == list(table.obs["cell_type"].cat.categories)
    assert [t.get_text() for t in right.get_legend().get_texts()] == list(table.obs["domain"].cat.categories)
    assert len(left.images) == 1 and len(right.images) == 0
    assert left.get_xlabel() == "x (µm)" and right.get_ylabel() == "y (µm)"
