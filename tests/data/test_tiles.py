"""Out-of-core pretraining: counts read from a zarr store per spatial tile, sharded batches, trimmed encoder layers."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata._core.sparse_dataset import BaseCompressedSparseDataset

import sslspatial as ss
from sslspatial.data import LocalityBatchSampler, ShardedLocalityBatchSampler, SubgraphCollate, TileReader
from sslspatial.data._loaders import locality_order
from sslspatial.nn import GraphEncoder

QUIET = {"enable_progress_bar": False}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small tissue with a kNN graph, written in Z-order to an AnnData zarr store; returns (path, in-memory table)."""
    sdata = ss.datasets.synthetic_tissue(n_cells=400, n_genes=24, image=False, spot_layouts=(), seed=0)
    table = sdata.tables["table"]
    ss.pp.build_graph(table, method="knn", n_neighs=6)
    table = ss.io.sort_spatially(table)
    table.X = sp.csr_matrix(table.X, dtype=np.float32)
    path = tmp_path_factory.mktemp("atlas") / "table.zarr"
    table.write_zarr(path)
    return path, table


def _run(table):
    model = ss.tl.pretrain_mask(table, max_epochs=1, batch_size=100, n_hidden=16, n_latent=8, train_kwargs=QUIET)
    return np.asarray(model.history["train_loss"], dtype=float).ravel(), table.obsm["X_pretrain_mask"]


def test_on_disk_and_in_memory_give_the_same_loss(store):
    path, _ = store
    loss_memory, z_memory = _run(ad.read_zarr(path))
    backed = ss.io.read_backed(path)
    assert isinstance(backed.X, BaseCompressedSparseDataset)
    loss_disk, z_disk = _run(backed)
    np.testing.assert_allclose(loss_disk, loss_memory, rtol=1e-6)
    np.testing.assert_allclose(z_disk, z_memory, rtol=1e-5, atol=1e-6)


def test_backed_table_is_never_loaded_whole(store, monkeypatch):
    path, table = store
    n = table.n_obs
    backed = ss.io.read_backed(path)

    def refuse(self, *args):
        raise AssertionError("the backed matrix was loaded whole")

    monkeypatch.setattr(BaseCompressedSparseDataset, "to_memory", refuse)
    monkeypatch.setattr(BaseCompressedSparseDataset, "__getitem__", refuse)
    ss.model.SpatialPretrainModel.setup_anndata(backed)
    model = ss.model.SpatialPretrainModel(backed, n_hidden=16, n_latent=8)
    model.train(max_epochs=1, batch_size=64, **QUIET)
    model.get_latent_representation(batch_size=64)
    loader = ss.data.SubgraphDataLoader(model.adata_manager, n_hops=2, batch_size=64)
    reader = loader.collate_fn.x
    assert isinstance(reader, TileReader)  # what the loader holds: a reader of the rows of each minibatch
    for _ in loader:
        pass
    assert reader.n_reads == len(loader)  # one read per minibatch, of its subgraph's rows only
    assert reader.max_rows_per_read < 0.6 * n  # seeds + 2-hop halo of a 400-cell tissue, never the table
    assert reader.rows_read < 3 * n


def test_tile_reader_returns_the_requested_rows(store, tmp_path):
    path, table = store
    rows = np.array([5, 3, 3, 399, 0, 200, 201, 202])
    reader = TileReader(ss.io.read_backed(path).X)  # zarr: one coordinate selection per call
    np.testing.assert_array_equal(reader[rows].toarray(), table.X[rows].toarray())
    assert (reader.n_reads, reader.rows_read) == (1, 7)
    table.write_h5ad(tmp_path / "table.h5ad")
    on_hdf5 = ad.read_h5ad(tmp_path / "table.h5ad", backed="r")
    reader = TileReader(on_hdf5.X, gap=4)  # HDF5: contiguous row ranges
    np.testing.assert_array_equal(reader[rows].toarray(), table.X[rows].toarray())
    assert reader.n_reads == 3  # 0-5, 200-202, 399
    reader.n_reads = 0
    reader[np.arange(100, 164)]  # a run of the Z-ordered table: one contiguous read
    assert reader.n_reads == 1


@pytest.mark.parametrize("n", [10, 37, 256])
def test_tile_batches_cover_every_cell_once_per_epoch(n):
    rank = np.random.default_rng(n).permutation(n)
    seen = [i for batch in LocalityBatchSampler(rank, batch_size=8) for i in batch]
    assert sorted(seen) == list(range(n))
    for world in (2, 3):
        shards = [list(ShardedLocalityBatchSampler(rank, 8, num_replicas=world, process_rank=r)) for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # DDP needs the same number of steps on every process
        assert sorted(i for s in shards for b in s for i in b) == list(range(n))
        order = np.argsort(rank)
        for r, shard in enumerate(shards):  # each process reads its own contiguous stretch of the Z-order
            positions = np.sort(np.searchsorted(np.sort(rank), rank[[i for b in shard for i in b]]))
            assert positions[-1] - positions[0] + 1 == positions.size
            assert set(order[r * n // world : (r + 1) * n // world]) == {i for b in shard for i in b}


def test_sharded_sampler_changes_order_with_the_epoch():
    sampler = ShardedLocalityBatchSampler(np.arange(100), 10, num_replicas=2, process_rank=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(map(tuple, map(sorted, first))) != []


@pytest.mark.parametrize("kind", ["gat", "gcn", "sage", "transformer"])
def test_trimmed_layers_give_the_seeds_their_full_values(kind):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, (200, 2))
    adata = ad.AnnData(rng.poisson(1.0, (200, 12)).astype(np.float32), obsm={"spatial": xy})
    ss.pp.build_graph(adata, method="knn", n_neighs=5)
    batch = SubgraphCollate(adata.X, adata.obsp["spatial_connectivities"], 2)({"ind_x": np.arange(20, 50)[:, None]})
    torch.manual_seed(0)
    encoder = GraphEncoder(12, 4, 8, 2, kind, dropout=0.0, heads=2).eval()
    full = encoder(batch["x"], batch["edge_index"], batch["degree"])[:30]
    trimmed = encoder(batch["x"], batch["edge_index"], batch["degree"], batch["hops"])
    assert trimmed.shape == (30, 4)
    torch.testing.assert_close(trimmed, full)


def test_sort_spatially_keeps_sections_contiguous():
    rng = np.random.default_rng(1)
    adata = ad.AnnData(np.zeros((60, 1)), obsm={"spatial": rng.uniform(0, 1, (60, 2))})
    adata.obs["section"] = np.repeat(["b", "a"], 30)[rng.permutation(60)]
    out = ss.io.sort_spatially(adata, library_key="section")
    assert (out.obs["section"].to_numpy()[:30] == adata.obs["section"].iloc[0]).all()
    section = out[out.obs["section"] == "a"]
    rank = locality_order(np.asarray(section.obsm["spatial"]))
    assert (np.diff(rank) > 0).all()
