"""One validation layer for numbers and types: each bad argument is refused before any work, by name, with a fix.

One test per family: counts and sizes, positive reals, rates, seeds, row indices, gene names, numbers of domains,
graph inputs, image ranges, devices.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sslspatial as ss
from sslspatial._arguments import ArgumentError
from sslspatial._devices import check_devices, is_main_process
from sslspatial._validate import check_float_image_range

FAST = {"encoder": "mlp", "mask": "entries", "n_hidden": 8, "n_latent": 4, "max_epochs": 1, "batch_size": 32}
QUIET = {"train_kwargs": {"enable_progress_bar": False}}


def _adata(n=80, n_genes=6, seed=0):
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(
        sp.csr_matrix(rng.poisson(3, (n, n_genes)).astype(np.float32)),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(rng.choice(["A", "B"], n)), "section": np.repeat(["s1", "s2"], n // 2)},
            index=[f"c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]),
    )
    adata.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
    return adata


@pytest.mark.parametrize(
    ("argument", "value", "needle"),
    [
        ("n_latent", 0, "n_latent=0: n_latent must be an integer >= 1"),
        ("n_latent", 32.5, "n_latent=32.5: n_latent must be an integer >= 1. Pass e.g. n_latent=32"),
        ("max_epochs", 0, "max_epochs=0: max_epochs must be an integer >= 1 or None"),
        ("max_epochs", -1, "max_epochs=-1"),
        ("n_hidden", "128", "n_hidden='128'"),
        ("batch_size", 0, "batch_size=0"),
    ],
)
def test_counts_and_sizes_are_refused_before_training(argument, value, needle):
    adata = _adata()
    with pytest.raises(ArgumentError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        ss.tl.pretrain_mask(adata, **{**FAST, argument: value}, **QUIET)
    assert "X_pretrain_mask" not in adata.obsm and "pretrain_mask" not in adata.uns


@pytest.mark.parametrize(
    ("value", "needle"),
    [(-1, "lr=-1: lr must be a number > 0"), (0.0, "lr=0.0"), ("1e-3", "lr='1e-3'"), (None, "lr is needed")],
)
def test_learning_rate_must_be_positive(value, needle):
    adata = _adata()
    with pytest.raises(ArgumentError, match=needle):
        ss.tl.pretrain_mask(adata, **{**FAST, "lr": value}, **QUIET)
    ss.pp.build_graph(adata, method="knn", n_neighs=4)
    model = ss.model.SpatialPretrainModel
    model.setup_anndata(adata)
    with pytest.raises(ArgumentError, match="lr=-1"):
        model(adata, n_hidden=8, n_latent=4).train(max_epochs=1, lr=-1)


@pytest.mark.parametrize(("argument", "value"), [("dropout", 1.5), ("dropout", -0.1), ("fraction", 1.0)])
def test_rates_must_lie_in_zero_one(argument, value):
    with pytest.raises(ArgumentError, match=rf"{argument}={value}: {argument} must be a number >= 0 and < 1"):
        ss.tl.pretrain_mask(_adata(), **{**FAST, argument: value}, **QUIET)


def test_seed_none_is_accepted_everywhere_and_recorded():
    adata = _adata()
    ss.pp.build_graph(adata, method="knn", n_neighs=4)
    model = ss.tl.pretrain_mask(adata, **{**FAST, "seed": None}, **QUIET)
    adata.obsm["emb"] = adata.obsm["X_pretrain_mask"]
    ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=2, smooth=0, seed=None)
    assert isinstance(adata.uns["domains"]["params"]["seed"], int | np.integer)
    ss.tl.annotate(adata, model, "cell_type", method="linear", seed=None)
    assert isinstance(adata.uns["annotate"]["params"]["seed"], int | np.integer)
    with pytest.raises(ArgumentError, match="seed='0': seed must be a non-negative integer, or None"):
        ss.tl.domains(adata, use_rep="emb", n_domains=2, smooth=0, seed="0", overwrite=True)
    with pytest.raises(ArgumentError, match="seed=1.5"):
        ss.tl.annotate(adata, model, "cell_type", method="linear", seed=1.5, overwrite=True)


def test_out_of_range_train_indices_name_the_table_size():
    adata = _adata()
    ss.pp.build_graph(adata, method="knn", n_neighs=4)
    model = ss.tl.pretrain_mask(adata, **FAST, **QUIET)
    with pytest.raises(ArgumentError, match=r"train_indices=80: .*row positions in \[0, 80\)"):
        ss.tl.annotate(adata, model, "cell_type", method="linear", train_indices=np.array([0, 5, 80]))
    with pytest.raises(ArgumentError, match="train_indices"):
        model.train(max_epochs=1, batch_size=8, train_indices=[0, 1000])
    with pytest.raises(ArgumentError, match="boolean mask of length 80"):
        ss.tl.annotate(adata, model, "cell_type", method="linear", train_indices=np.ones(5, bool))


def test_duplicate_gene_names_name_var_names_make_unique():
    adata = _adata()
    adata.var_names = ["g0", "g1", "g1", "g3", "g4", "g5"]
    with pytest.raises(ValueError, match=r"duplicated gene name.*'g1'.*var_names_make_unique"):
        ss.tl.pretrain_mask(adata, **FAST, **QUIET)
    reference = _adata()
    ss.pp.build_graph(reference, method="knn", n_neighs=4)
    model = ss.tl.pretrain_mask(reference, **FAST, **QUIET)
    ss.pp.build_graph(adata, method="knn", n_neighs=4)
    with pytest.raises(ValueError, match="var_names_make_unique"):
        ss.tl.transfer(adata, model)


def test_numbers_of_domains_must_fit_the_cells():
    adata = _adata(n=600)
    adata.obsm["emb"] = np.random.default_rng(0).normal(size=(600, 3))
    with pytest.raises(ArgumentError, match=r"n_domains=500: .*at most 120 on 600 cells .* Pass e\.g\. n_domains=120"):
        ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=500, smooth=0)
    with pytest.raises(ArgumentError, match=r"n_domains=700: n_domains must be at most 120 on 600 cells"):
        ss.tl.domains(adata, use_rep="emb", method="gmm", n_domains=700, smooth=0)  # more domains than cells
    with pytest.raises(ArgumentError, match="n_domains=0"):
        ss.tl.domains(adata, use_rep="emb", n_domains=0, smooth=0)
    with pytest.raises(ArgumentError, match=r"autok_range=\(5, 2\).*Pass e.g. autok_range=\(2, 5\)"):
        ss.tl.domains(adata, use_rep="emb", smooth=0, autok_range=(5, 2))
    assert "domains" not in adata.obs


def test_graph_arguments_radius_type_missing_radius_and_a_lonely_cell():
    adata = _adata()
    adata.uns["coordinate_unit"] = "pixel"
    with pytest.raises(ArgumentError, match=r"radius='30': radius must be a number > 0\. Pass e.g\. radius=30\.0"):
        ss.pp.build_graph(adata, method="radius", radius="30")
    with pytest.raises(ArgumentError, match="radius=-5"):
        ss.pp.build_graph(adata, method="radius", radius=-5)
    with pytest.raises(ArgumentError, match=r"radius=\(5, 2\): .*min < max\. Pass e\.g\. radius=\(2, 5\)"):
        ss.pp.build_graph(adata, method="radius", radius=(5, 2))
    with pytest.raises(ArgumentError, match=r"radius is needed: .*The coordinates are in pixels; the median"):
        ss.pp.build_graph(adata, method="radius")
    with pytest.raises(ArgumentError, match="n_neighs=0"):
        ss.pp.build_graph(adata, method="knn", n_neighs=0)
    one = adata[:1].copy()
    with pytest.raises(ValueError, match="1 cell: a kNN graph needs at least 2 cells"):
        ss.pp.build_graph(one, method="knn")
    few = adata[:4].copy()
    with pytest.raises(ArgumentError, match=r"n_neighs=6: .*has 4\)\. Pass e\.g\. n_neighs=3"):
        ss.pp.build_graph(few, method="knn", n_neighs=6)


def test_graph_warns_with_a_suggested_radius_when_many_cells_are_isolated():
    xy = np.c_[np.arange(100.0) % 10, np.arange(100.0) // 10] * 10.0  # a grid with 10 px spacing
    adata = ad.AnnData(np.ones((100, 2), np.float32), obsm={"spatial": xy}, uns={"coordinate_unit": "pixel"})
    with pytest.warns(UserWarning, match=r"100 of 100 cells \(100%\) have no neighbour within radius=5.*radius=") as w:
        ss.pp.build_graph(adata, method="radius", radius=5.0)
    message = str(next(x.message for x in w if "no neighbour within" in str(x.message)))
    suggested = float(message.split("radius=")[-1].split(" ")[0])
    assert "median nearest-neighbour distance is 10 pixels" in message
    ss.pp.build_graph(adata, method="radius", radius=suggested, overwrite=True)
    degree = adata.uns["spatial_neighbors"]["degree"]
    assert degree["n_isolated"] == 0 and 4 <= degree["mean_degree"] <= 12


def test_float_image_outside_zero_one_needs_value_range():
    with pytest.raises(ValueError, match=r"float values in \[0, 765\].*value_range=\(0, 765\)"):
        check_float_image_range(np.linspace(0, 765, 12).reshape(3, 2, 2), None, name="image 'he'")
    check_float_image_range(np.linspace(0, 1, 12).reshape(3, 2, 2), None)
    check_float_image_range(np.linspace(0, 765, 12).reshape(3, 2, 2), (0, 765))
    check_float_image_range(np.arange(12, dtype=np.uint16).reshape(3, 2, 2) * 1000, None)  # integers: dtype says


def test_devices_beyond_one_cpu_need_an_explicit_strategy(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ArgumentError, match=r"devices=2: devices must be 1 on the CPU .*strategy=\"ddp_spawn\""):
        check_devices("auto", 2)
    with pytest.raises(ArgumentError, match="devices='0,1'"):
        check_devices("cpu", "0,1")
    check_devices("cpu", 2, strategy="ddp_spawn")  # the explicit opt-in
    check_devices("cpu", "auto")
    with pytest.raises(ArgumentError, match="devices=0"):
        check_devices("cpu", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ArgumentError, match="at most the 1 GPU"):
        check_devices("gpu", 4)
    adata = _adata()
    with pytest.raises(ArgumentError, match="devices=2"):
        ss.tl.pretrain_mask(adata, **FAST, accelerator="cpu", devices=2, **QUIET)
    assert "X_pretrain_mask" not in adata.obsm


def test_only_the_main_process_writes(monkeypatch, tmp_path):
    import spatialdata as sd
    from spatialdata.models import TableModel

    assert is_main_process()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_main_process()
    sdata = sd.SpatialData(tables={"table": TableModel.parse(_adata())})
    ss.io.write(sdata, tmp_path / "t.zarr")
    assert not (tmp_path / "t.zarr").exists()


@pytest.mark.parametrize(
    ("function", "argument", "value", "needle"),
    [
        ("hist2expr", "window_size", 0, "window_size=0: window_size must be an integer >= 1. Pass e.g. window_size=32"),
        ("hist2expr", "patch_px", 0, "patch_px=0: patch_px must be an integer >= 1"),
        ("hist2expr", "spot_size", -1.0, "spot_size=-1.0: spot_size must be a number > 0 or None"),
        ("hist2expr", "n_validation_sections", -1, "n_validation_sections=-1"),
        ("pretrain_image", "patch_px", 0, "patch_px=0"),
        ("pretrain_image", "tiles_per_image", 0, "tiles_per_image=0"),
        ("pretrain_image", "lr", -1, "lr=-1"),
        ("pretrain_image", "seed", -1, "seed=-1"),
        ("superres", "n_subspots", 0, "n_subspots=0: n_subspots must be an integer >= 1 or None"),
        ("superres", "patch_size", -1.0, "patch_size=-1.0"),
    ],
)
def test_image_and_patch_sizes_are_refused_before_any_work(function, argument, value, needle):
    """hist2expr(window_size=0) split windows forever (22 GB of memory in the issue-33 audit); patch_px=0 leaked a
    torch resize error; pretrain_image had no shared checks."""
    required = {"superres": {"shapes_key": "spots"}}.get(function, {})
    with pytest.raises(ArgumentError, match=needle.replace(".", r"\.")):
        getattr(ss.tl, function)(object(), **required, **{argument: value})  # refused before the data is looked at


def test_build_graph_is_quiet(capfd):
    """squidpy's INFO line ("Creating graph using `None` transform ...") printed on every call."""
    adata = _adata()
    ss.pp.build_graph(adata, method="knn", n_neighs=4)
    out, err = capfd.readouterr()
    assert "Creating graph" not in out + err
