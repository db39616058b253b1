"""Nothing a user computes is lost to a name: "/" and other awkward characters through every writer.

STARmap's class ``eL2/3`` made ``sdata.write`` fail half way (zarr refuses "/" in keys) and left a store that
``spatialdata.read_zarr`` could not open. Per-class results are arrays with the class order in ``uns``; every writer
refuses a table with a "/" in a key before writing anything.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sslspatial as ss
from sslspatial._validate import check_storable, unstorable_keys

AWKWARD = ["eL2/3", "a b", "x:y", "é-ü", "50%", "A.B"]
FAST = {
    "encoder": "mlp",
    "mask": "entries",
    "n_hidden": 16,
    "n_latent": 4,
    "max_epochs": 2,
    "batch_size": 32,
    "train_kwargs": {"enable_progress_bar": False},
}


def _tissue(n=120, seed=0):
    """A SpatialData with awkward class names, gene names and section names."""
    import spatialdata as sd
    from spatialdata.models import TableModel

    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, n)
    rate = np.array([[8, 1, 1, 4], [1, 8, 1, 4], [1, 1, 8, 4]])[classes]
    table = ad.AnnData(
        sp.csr_matrix(rng.poisson(rate).astype(np.float32)),
        obs=pd.DataFrame(
            {
                "cell_type": pd.Categorical(np.array(AWKWARD[:3])[classes]),
                "section": pd.Categorical(np.where(np.arange(n) < n // 2, "BZ5/left", "BZ5 right")),
            },
            index=[f"c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=["Gad1/2", "Slc17a7 ", "x:y", "é"]),
    )
    table.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
    return sd.SpatialData(tables={"table": TableModel.parse(table)})


def _table(sdata):
    return sdata.tables["table"]


def test_unstorable_keys_finds_every_kind_of_name():
    adata = ad.AnnData(np.ones((2, 2)))
    adata.obs["a/b"] = 1
    adata.obsm["p"] = pd.DataFrame(np.ones((2, 2)), index=adata.obs_names, columns=["eL2/3", "ok"])
    adata.uns["run"] = {"scores": {"eL2/3": 0.5, "fine": 1.0}}
    adata.layers["c/d"] = adata.X
    assert sorted(unstorable_keys(adata)) == sorted(
        ["obs column 'a/b'", "obsm['p'] column 'eL2/3'", "uns['run']['scores']['eL2/3']", "layers['c/d']"]
    )
    with pytest.raises(ValueError, match=r"obs column 'a/b'.*Nothing was written"):
        check_storable(adata)
    clean = ad.AnnData(np.ones((2, 2)), obs=pd.DataFrame({"ct": ["eL2/3", "x"]}, index=["a", "b"]))
    clean.var_names = ["g/1", "g:2"]  # values, not keys: any character is fine
    assert unstorable_keys(clean) == []


def test_annotate_probabilities_survive_write_and_persist(tmp_path):
    import spatialdata as sd

    sdata = _tissue()
    ss.pp.build_graph(sdata, method="knn", n_neighs=5, library_key="section")
    model = ss.tl.pretrain_mask(sdata, **FAST)
    ss.tl.annotate(sdata, model, "cell_type", method="linear")
    table = _table(sdata)
    proba, classes = table.obsm["annotate_probabilities"].copy(), list(table.uns["annotate"]["classes"])
    assert classes == sorted(AWKWARD[:3]) and proba.shape == (table.n_obs, 3)
    ss.io.write(sdata, tmp_path / "t.zarr")
    back = _table(sd.read_zarr(tmp_path / "t.zarr"))
    np.testing.assert_allclose(np.asarray(back.obsm["annotate_probabilities"]), proba)
    assert list(back.uns["annotate"]["classes"]) == classes
    assert list(back.var_names) == list(table.var_names)
    assert set(back.obs["cell_type"].astype(str)) == set(AWKWARD[:3])
    predicted = np.asarray(classes)[proba.argmax(1)]
    np.testing.assert_array_equal(back.obs["annotate_prediction"].astype(str).to_numpy(), predicted)
    _assert_no_internal_fields(back)
    assert "_scvi_uuid" in table.uns  # the bound model still needs it in memory
    # a second result, persisted into the existing store element
    ss.tl.domains(sdata, use_rep="X_pretrain_mask", n_domains=2, library_key="section", per_section=True)
    ss.tl.annotate(sdata, model, "cell_type", method="knn", key_added="knn")
    ss.io.persist(sdata, "table")
    back = _table(sd.read_zarr(tmp_path / "t.zarr"))
    np.testing.assert_allclose(np.asarray(back.obsm["knn_probabilities"]), table.obsm["knn_probabilities"])
    assert back.obs["domains"].astype(str).str.startswith(("BZ5/left_", "BZ5 right_")).all()
    assert "BZ5%2Fleft" in back.uns["spatial_neighbors"]["degree"]["mean_degree_per_section"]
    _assert_no_internal_fields(back)
    np.testing.assert_allclose(model.get_latent_representation(), table.obsm["X_pretrain_mask"], atol=1e-5)


def _assert_no_internal_fields(table):
    """The models' bookkeeping stays out of a written store (issue 33: 'no internal fields left in user tables')."""
    internal = [k for k in [*table.obs.columns, *table.uns] if str(k).startswith(("_sslspatial", "_scvi"))]
    assert internal == [], internal


def test_model_save_with_awkward_names_round_trips_without_warnings(tmp_path, recwarn):
    sdata = _tissue()
    ss.pp.build_graph(sdata, method="knn", n_neighs=5)
    model = ss.tl.pretrain_mask(sdata, **FAST)
    ss.tl.annotate(sdata, model, "cell_type", method="linear")
    recwarn.clear()
    model.save(tmp_path / "m", save_anndata=True)
    slashes = [str(w.message) for w in recwarn if "slash" in str(w.message).lower()]
    assert not slashes
    loaded = ss.model.SpatialPretrainModel.load(tmp_path / "m")
    assert list(loaded.adata.var_names) == list(_table(sdata).var_names)
    np.testing.assert_allclose(
        loaded.adata.obsm["annotate_probabilities"], _table(sdata).obsm["annotate_probabilities"]
    )
    assert list(loaded.adata.uns["annotate"]["classes"]) == list(_table(sdata).uns["annotate"]["classes"])


def test_every_writer_refuses_a_slash_key_before_writing(tmp_path):
    import spatialdata as sd

    sdata = _tissue()
    ss.io.write(sdata, tmp_path / "t.zarr")
    before = _table(sd.read_zarr(tmp_path / "t.zarr")).obs.columns.tolist()
    _table(sdata).uns["by_class"] = {"eL2/3": 1.0}  # what a user may add by hand
    with pytest.raises(ValueError, match=r"uns\['by_class'\]\['eL2/3'\].*Nothing was written"):
        ss.io.persist(sdata, "table")
    assert _table(sd.read_zarr(tmp_path / "t.zarr")).obs.columns.tolist() == before  # old store intact
    with pytest.raises(ValueError, match="eL2/3"):
        ss.io.write(sdata, tmp_path / "new.zarr")
    assert not list(tmp_path.glob("new.zarr*"))  # nothing half written
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ss.io.write(sdata, tmp_path / "t.zarr")
    model = ss.tl.pretrain_mask(_table(sdata), **FAST)
    with pytest.raises(ValueError, match="save_anndata=True"):
        model.save(tmp_path / "m", save_anndata=True)
    assert not (tmp_path / "m").exists()
    model.save(tmp_path / "m")  # without the table nothing is refused


def test_persist_removes_a_new_element_that_fails_half_way(tmp_path, monkeypatch):
    import spatialdata as sd
    from spatialdata.models import TableModel

    sdata = _tissue()
    ss.io.write(sdata, tmp_path / "t.zarr")
    extra = ad.AnnData(np.ones((3, 2)))
    sdata.tables["extra"] = TableModel.parse(extra)
    original = sd.SpatialData.write_element

    def failing(self, name, *args, **kwargs):
        original(self, name, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(sd.SpatialData, "write_element", failing)
    with pytest.raises(OSError, match="disk full"):
        ss.io.persist(sdata, "extra")
    monkeypatch.setattr(sd.SpatialData, "write_element", original)
    assert set(sd.read_zarr(tmp_path / "t.zarr").tables) == {"table"}


@pytest.mark.slow  # real data: STARmap's eL2/3
def test_starmap_annotate_write_read_same_probabilities(shared_data, tmp_path):
    import spatialdata as sd

    sdata = ss.datasets.starmap_mpfc(path=shared_data / "starmap_mpfc")
    table = _table(sdata)
    assert any("/" in c for c in table.obs["cell_type"].astype(str).unique())
    ss.pp.build_graph(sdata, method="knn", n_neighs=6, library_key="section")
    model = ss.tl.pretrain_mask(sdata, **FAST)
    ss.tl.annotate(sdata, model, "cell_type", method="linear")
    sdata.write(tmp_path / "starmap.zarr")  # spatialdata's own writer works on the result too
    back = _table(sd.read_zarr(tmp_path / "starmap.zarr"))
    np.testing.assert_allclose(back.obsm["annotate_probabilities"], table.obsm["annotate_probabilities"])
    assert list(back.uns["annotate"]["classes"]) == list(table.uns["annotate"]["classes"])
    assert "eL2/3" in back.uns["annotate"]["classes"]


@pytest.mark.slow  # real data through the command line
def test_starmap_cli_annotate_round_trip(shared_data, tmp_path, capsys):
    import spatialdata as sd

    from sslspatial.cli import main

    store, model = str(tmp_path / "starmap.zarr"), str(tmp_path / "model")
    assert main(["dataset", "starmap_mpfc", store, "--path", str(shared_data / "starmap_mpfc")]) == 0
    assert main(["graph", store, "--method", "knn", "--n-neighs", "6", "--library-key", "section"]) == 0
    argv = [
        "pretrain",
        store,
        "--encoder",
        "mlp",
        "--mask",
        "entries",
        "--n-latent",
        "4",
        "--n-hidden",
        "16",
        "--max-epochs",
        "2",
    ]
    assert main([*argv, "--model-out", model]) == 0
    assert main(["annotate", store, "--model", model, "--labels-key", "cell_type", "--method", "linear"]) == 0
    capsys.readouterr()
    back = _table(sd.read_zarr(store))
    classes = list(back.uns["annotate"]["classes"])
    assert "eL2/3" in classes
    proba = np.asarray(back.obsm["annotate_probabilities"])
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(back.obs["annotate_prediction"].astype(str), np.asarray(classes)[proba.argmax(1)])
    _assert_no_internal_fields(back)
