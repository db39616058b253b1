"""Training from disk: prefetched minibatches, the value check done once per store, the store writer, bad stores."""

import re

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

import sslspatial as ss
from sslspatial import _validate
from sslspatial.data import _loaders
from sslspatial.data._prefetch import Prefetcher
from sslspatial.io._backed import read_amplification
from sslspatial.io._checked import CHECK_ATTR, fingerprint, record_pass

QUIET = {"enable_progress_bar": False}


@pytest.fixture(scope="module")
def table():
    """A small tissue with a kNN graph and float32 CSR counts, in spatial order."""
    sdata = ss.datasets.synthetic_tissue(n_cells=400, n_genes=24, image=False, spot_layouts=(), seed=0)
    table = sdata.tables["table"]
    ss.pp.build_graph(table, method="knn", n_neighs=6)
    table = ss.io.sort_spatially(table)
    table.X = sp.csr_matrix(table.X, dtype=np.float32)
    return table


def _model(adata):
    ss.model.SpatialPretrainModel.setup_anndata(adata)
    return ss.model.SpatialPretrainModel(adata, n_hidden=16, n_latent=8)


def test_prefetcher_keeps_order_bounds_memory_and_reraises():
    made = []

    def source():
        for i in range(6):
            made.append(i)
            yield i

    prefetcher = Prefetcher(source(), depth=2)
    assert next(prefetcher) == 0
    import time

    time.sleep(0.3)
    assert len(made) <= 1 + 2 + 1  # the first, two waiting in the queue, one being handed over
    assert list(prefetcher) == [1, 2, 3, 4, 5]

    def failing():
        yield 1
        raise ValueError("X holds negative values")

    prefetcher = Prefetcher(failing())
    assert next(prefetcher) == 1
    with pytest.raises(ValueError, match="negative"):
        next(prefetcher)


@pytest.mark.parametrize("prefetch", [0, 3])
def test_prefetching_gives_the_same_training_and_embedding(table, tmp_path, monkeypatch, prefetch):
    """Disk with and without prefetching and memory give the same loss and embedding for the same seed."""
    path = tmp_path / "t.zarr"
    table.write_zarr(path)
    runs = []
    started = []
    real_init = Prefetcher.__init__

    def spy(self, *args, **kwargs):
        started.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Prefetcher, "__init__", spy)
    for data, depth in ((ad.read_zarr(path), 0), (ss.io.read_backed(path), prefetch)):
        monkeypatch.setattr(_loaders, "default_prefetch", lambda collate, depth=depth: depth)
        started.clear()
        model = ss.tl.pretrain_mask(data, max_epochs=2, batch_size=100, n_hidden=16, n_latent=8, train_kwargs=QUIET)
        assert bool(started) == (depth > 0)  # the prefetching path really ran (training and embedding)
        runs.append((np.asarray(model.history["train_loss"], dtype=float).ravel(), data.obsm["X_pretrain_mask"]))
    (loss_memory, z_memory), (loss_disk, z_disk) = runs
    np.testing.assert_allclose(loss_disk, loss_memory, rtol=1e-6)
    np.testing.assert_allclose(z_disk, z_memory, rtol=1e-5, atol=1e-6)


def test_count_check_runs_once_per_store(table, tmp_path, monkeypatch):
    path = tmp_path / "t.zarr"
    table.write_zarr(path)
    _model(ss.io.read_backed(path))  # first model: one pass over the store, result kept in its attrs
    record = dict(zarr.open_group(path, mode="r")["X"].attrs)[CHECK_ATTR]  # consolidated metadata is current
    assert record["kind"] == "counts"

    def no_pass(x, *args):
        raise AssertionError("the store was read whole again")

    monkeypatch.setattr(_validate, "_value_blocks", no_pass)
    backed = ss.io.read_backed(path)
    model = _model(backed)  # second model: no pass
    with pytest.raises(AssertionError, match="read whole"):
        _validate.check_finite(ad.read_zarr(path).X)  # the spy does catch a pass over a matrix
    assert fingerprint(backed.X) == record["fingerprint"]
    model.train(max_epochs=1, batch_size=100, **QUIET)


@pytest.mark.parametrize("bad, message", [(0.5, "non-integer values"), (-3.0, "negative values")])
def test_bad_value_skipped_by_the_cached_check_is_caught_in_training(table, tmp_path, bad, message):
    """A store whose cached check no longer holds still raises the up-front check's error when training reads it."""
    path = tmp_path / "t.zarr"
    table.write_zarr(path)
    with pytest.raises(ValueError, match=message):  # the up-front check, for reference
        corrupted = ad.read_zarr(path)
        corrupted.X.data[1234] = bad
        _model(corrupted)
    data = zarr.open_group(path, mode="r+", use_consolidated=False)["X"]["data"]
    data[1234] = bad
    backed = ss.io.read_backed(path)
    record_pass(backed.X, "counts", fingerprint(backed.X))  # as if the store had been checked before the change
    backed = ss.io.read_backed(path)
    model = _model(backed)  # the cached check is trusted
    with pytest.raises(ValueError, match=f"X holds {message}.*likelihood='nb' models counts"):
        model.train(max_epochs=1, batch_size=100, **QUIET)


def test_write_backed_sorts_chunks_and_reads_back(table, tmp_path):
    shuffled = table[np.random.default_rng(0).permutation(table.n_obs)].copy()
    shuffled.layers["counts"] = shuffled.X.copy()
    shuffled.X = sp.csr_matrix(np.log1p(shuffled.X.toarray()))
    path = tmp_path / "w.zarr"
    ss.io.write_backed(shuffled, path, layer="counts", rows_per_chunk=50, compressor="zstd", block_rows=64)
    back = ss.io.read_backed(path)
    expected = ss.io.sort_spatially(shuffled)
    assert back.obs_names.tolist() == expected.obs_names.tolist()
    np.testing.assert_array_equal(back.X.to_memory().toarray(), expected.layers["counts"].toarray())
    diff = back.obsp["spatial_connectivities"] - expected.obsp["spatial_connectivities"]
    assert diff.nnz == 0
    data = zarr.open_group(path, mode="r")["X"]["data"]
    per_row = table.X.nnz / table.n_obs
    assert data.chunks[0] == max(1024, int(50 * per_row))
    assert "zstd" in str(data.compressors)
    again = tmp_path / "again.zarr"  # an existing store rewritten from disk, block by block
    ss.io.write_backed(ss.io.read_backed(path), again, compressor="none", block_rows=37)
    np.testing.assert_array_equal(ss.io.read_backed(again).X.to_memory().toarray(), back.X.to_memory().toarray())
    with pytest.raises(FileExistsError):
        ss.io.write_backed(table, path)


def test_unsorted_store_warns_once_and_dense_or_csc_x_is_refused(table, tmp_path):
    shuffled = table[np.random.default_rng(1).permutation(table.n_obs)].copy()
    path = tmp_path / "shuffled.zarr"
    shuffled.write_zarr(path)
    with pytest.warns(UserWarning, match="not stored in spatial order.*slower.*ss.io.write_backed"):
        ss.io.read_backed(path)
    import warnings

    sorted_path = _write(table, tmp_path / "sorted.zarr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ss.io.read_backed(path)  # once per store
        ss.io.read_backed(sorted_path)  # a sorted store: no warning
    assert not [w for w in caught if "spatial order" in str(w.message)]
    for layout, x in (("a CSC matrix", sp.csc_matrix(table.X)), ("a dense array", table.X.toarray())):
        other = table.copy()
        other.X = x
        expected = (
            f"stored as {layout}.*needs a CSR matrix \\(cells as rows\\).*spatial order.*write_backed.*sort_spatially"
        )
        with pytest.raises(ValueError, match=expected):
            ss.io.read_backed(_write(other, tmp_path / f"{layout[2:6]}.zarr"))


def test_read_amplification_of_a_transposed_line():
    """Cells on a line stored as a transposed 4 x 16 grid: row r holds the cell at x = 4 * (r % 16) + r // 16."""
    rows = np.arange(64)
    x = 4 * (rows % 16) + rows // 16
    coordinates = np.c_[x, np.zeros(64)].astype(float)
    # 16 cells consecutive in x take every residue mod 4 once per run of 4: rows 16 * (x % 4) + x // 4, i.e. 4 rows in
    # each quarter of the store. Chunks of 16 rows: 4 chunks, against 1 for 16 consecutive rows aligned to a chunk.
    here, spatial = read_amplification(coordinates, chunk_rows=16, batch_size=16, n_windows=4)  # starts 0,16,32,48
    assert (here, spatial) == (4.0, 1.0)
    # chunks of 8 rows, batches of 8 from x = 0, 8, ..., 56: x // 4 spans 2 values, all in one chunk of each quarter
    # (4 chunks); 8 consecutive rows from a multiple of 8 are one chunk.
    assert read_amplification(coordinates, chunk_rows=8, batch_size=8, n_windows=8) == (4.0, 1.0)
    # a sorted store: both the same
    assert read_amplification(np.c_[np.arange(64.0), np.zeros(64)], chunk_rows=8, batch_size=8, n_windows=8) == (
        1.0,
        1.0,
    )


def test_unsorted_warning_states_the_read_amplification_of_the_store(tmp_path):
    """8,192 cells on a line stored as a transposed 8 x 1,024 grid, counts chunked 1,024 rows per stored chunk."""
    n = 8192
    rows = np.arange(n)
    x = 8 * (rows % 1024) + rows // 1024  # neighbours x, x + 1 lie 1,024 rows apart: far apart on disk
    where = np.argsort(x)
    i, j = where[:-1], where[1:]
    graph = sp.csr_matrix((np.ones(2 * (n - 1), dtype=np.float32), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    counts = sp.csr_matrix((np.ones(n, dtype=np.float32), (rows, np.zeros(n, dtype=int))), shape=(n, 3))
    table = ad.AnnData(counts, obsm={"spatial": np.c_[x, np.zeros(n)].astype(float)})
    table.obsp["spatial_connectivities"] = graph
    path = tmp_path / "line.zarr"
    table.write_zarr(path)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    del group["X"]
    ad.io.write_elem(group, "X", counts, dataset_kwargs={"chunks": (1024,)})  # one value per row: 1,024 rows a chunk
    zarr.consolidate_metadata(str(path))
    # default batch of 8,192 cells: 256 cells consecutive in x, i.e. all 8 residues of x mod 8, stored in rows
    # 1024 * (x % 8) + x // 8: one in each of the 8 chunks. In spatial order 256 rows span 1 chunk, or 2 when they
    # cross a chunk boundary, so the ratio lies between 4 and 8.
    with pytest.warns(UserWarning) as caught:
        ss.io.read_backed(path)
    message = str(caught[0].message)
    found = re.search(
        r"of 256 cells of training and embedding from it then reads and decompresses about 8 stored chunks of "
        r"1,024 cells, against (\d) "
        r"in spatial order: ([\d.]+) times as much data, so reading it is about \2 times slower",
        message,
    )
    assert found, message
    assert found.group(1) in ("1", "2") and 4.0 <= float(found.group(2)) <= 8.0
    assert "ss.io.write_backed" in message


def _write(adata, path):
    adata.write_zarr(path)
    return path


@pytest.mark.parametrize("layout", ["files", "zarr", "uncompressed"])
@pytest.mark.parametrize("cache_chunks", [1, 4])
def test_chunk_cache_reads_the_rows_of_the_matrix_and_each_chunk_once_per_pass(tmp_path, cache_chunks, layout):
    """Rows served from cached whole chunks equal the matrix's rows, over chunk borders, repeats and evictions; walking
    the store in order (as embedding does) decompresses every stored chunk exactly once. Chunks read from their files
    (a directory store), through zarr (an in-memory store) and by byte ranges (uncompressed) give the same rows."""
    from sslspatial.data._tiles import TileReader

    rng = np.random.default_rng(0)
    dense = rng.poisson(0.4, (300, 20)).astype(np.float32)
    matrix = sp.csr_matrix(dense)
    where = zarr.storage.MemoryStore() if layout == "zarr" else str(tmp_path / "x.zarr")
    group = zarr.open_group(where, mode="w")
    kwargs = {"chunks": (97,)} | ({"compressors": None} if layout == "uncompressed" else {})
    ad.io.write_elem(group, "X", matrix, dataset_kwargs=kwargs)  # chunk borders inside rows
    reader = TileReader(ad.io.sparse_dataset(group["X"]), cache_chunks=cache_chunks)
    assert (reader._direct["data"] is None) == (layout == "zarr")
    n_chunks = -(-matrix.nnz // 97)
    for start in range(0, 300, 25):  # in order, overlapping halos: each chunk read once (given room for two)
        rows = np.arange(max(start - 5, 0), min(start + 30, 300))
        np.testing.assert_array_equal(reader[rows].toarray(), dense[rows])
    if cache_chunks > 1 and layout != "uncompressed":  # uncompressed: ranges read, nothing cached
        assert reader.chunks_read == 2 * n_chunks
    for _ in range(20):  # random rows, repeats, any order, evictions
        rows = rng.integers(0, 300, rng.integers(1, 60))
        np.testing.assert_array_equal(reader[rows].toarray(), dense[rows])
    np.testing.assert_array_equal(reader[np.arange(300)[::-1]].toarray(), dense[::-1])  # every chunk in one call
    assert all(len(c) <= cache_chunks for c in reader._cache.values())  # memory stays bounded
    with pytest.raises(ValueError, match="cache_chunks must be an integer >= 1"):
        TileReader(ad.io.sparse_dataset(group["X"]), cache_chunks=0)


def test_prefetch_by_default_only_where_a_thread_can_run_beside_training(monkeypatch):
    """Counts on disk are prefetched when a core is free of torch's threads or a GPU trains; never for counts in
    memory (on 2 cores with 2 torch threads a prefetch thread made training from disk slower)."""
    from sslspatial.data import _loaders

    reader = type("Collate", (), {"x": _loaders.TileReader.__new__(_loaders.TileReader)})()
    monkeypatch.setattr(_loaders.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(_loaders.torch, "get_num_threads", lambda: 2)
    for cores, expected in ((2, 0), (1, 0), (3, 2), (16, 2)):
        monkeypatch.setattr(_loaders, "_cpu_cores", lambda cores=cores: cores)
        assert _loaders.default_prefetch(reader) == expected
    monkeypatch.setattr(_loaders.torch.cuda, "is_available", lambda: True)
    assert _loaders.default_prefetch(reader) == 2  # 2 cores, but the model trains on the GPU
    assert _loaders.default_prefetch(_loaders.SubgraphCollate(np.zeros((3, 2)))) == 0
