"""What train / load print: a progress bar by default (off with enable_progress_bar=False), no Lightning banner or
dependency chatter, and every logger level put back afterwards."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from lightning.pytorch.callbacks import ProgressBar
from scipy.spatial import cKDTree

from sslspatial.model import SUPERRES, Hist2Expr, SpatialPretrainModel
from sslspatial.model._console import ConsoleMixin

LOGGERS = ("lightning.pytorch", "lightning.fabric", "scvi", "spatialdata", "squidpy")
NOISE = (
    "GPU available",
    "TPU available",
    "litlogger",
    "LeafSpec",
    "Trying to infer the `batch_size`",
    "smaller than the logging interval",
    "already downloaded",
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tissue(n=120, n_genes=6, radius=12.0, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    adata = AnnData(rng.poisson(np.where(xy[:, :1] < 50, 1.0, 4.0) * np.ones(n_genes)).astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.obsm["spatial"] = xy
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    i, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    adata.obsp["spatial_connectivities"] = sp.csr_matrix((np.ones(i.size), (i, j)), shape=(n, n))
    return adata


def _pretrain_model():
    adata = tissue()
    SpatialPretrainModel.setup_anndata(adata)
    return SpatialPretrainModel(adata, encoder="gcn", n_latent=4, n_hidden=8, n_layers=1)


def _superres_model():
    adata = tissue()
    adata.obsm["subspot_features"] = np.zeros((adata.n_obs, 4 * 2), np.float32)
    SUPERRES.setup_anndata(adata, subspot_features_key="subspot_features", n_subspots=4)
    return SUPERRES(adata, n_hidden=8, n_latent=4, n_layers=1)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def loud_loggers():
    """Every logger at DEBUG with a recording handler; levels and handlers put back after the test."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    before = [lg.level for lg in loggers]
    handler = _Records()
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    yield handler
    for lg, level in zip(loggers, before, strict=True):
        lg.setLevel(level)
        lg.removeHandler(handler)


def _levels():
    return {name: logging.getLogger(name).level for name in LOGGERS}


def test_every_model_trains_and_loads_through_the_console_mixin():
    for cls in (SpatialPretrainModel, Hist2Expr, SUPERRES):
        assert issubclass(cls, ConsoleMixin)
        mro = cls.__mro__
        assert mro.index(ConsoleMixin) < min(i for i, c in enumerate(mro) if c.__name__ == "UnsupervisedTrainingMixin")
        assert cls.load.__func__ is ConsoleMixin.load.__func__  # no model bypasses the quiet load


@pytest.mark.parametrize("make", [_pretrain_model, _superres_model], ids=["pretrain", "superres"])
def test_progress_bar_by_default_and_off_with_the_switch(make):
    model = make()
    model.train(max_epochs=1, batch_size=32)
    bar = model.trainer.progress_bar_callback
    assert isinstance(bar, ProgressBar) and bar.is_enabled
    model = make()
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    assert model.trainer.progress_bar_callback is None


@pytest.mark.parametrize("make", [_pretrain_model, _superres_model], ids=["pretrain", "superres"])
def test_train_and_load_are_quiet_and_restore_every_logger(make, loud_loggers, capfd, tmp_path):
    before = _levels()
    assert set(before.values()) == {logging.DEBUG}
    model = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=1, batch_size=32)
        assert _levels() == before
        model.save(tmp_path / "m", overwrite=True)
        type(model).load(tmp_path / "m", adata=model.adata)
    assert _levels() == before
    out, err = capfd.readouterr()
    shown = [out, err, *loud_loggers.messages, *(str(w.message) for w in caught)]
    for text in NOISE:
        assert not any(text in s for s in shown), text
