"""Tables whose counts stay on disk: open a zarr store's table with a backed ``X``, write a table in spatial order.

Principle 4 of the design: the only per-cell state in memory is the graph and index arrays, the counts are read per
spatial tile. :func:`read_backed` gives an :class:`~anndata.AnnData` whose ``X`` is anndata's backed sparse dataset
(:class:`anndata.abc.CSRDataset`) on the store, with ``obs``, ``var``, ``obsm`` and the spatial graph in memory: the
``pretrain_*`` functions and :class:`~sslspatial.model.SpatialPretrainModel` train and embed from it, reading each
minibatch's subgraph in a few contiguous row ranges (:class:`sslspatial.data.TileReader`). Those reads are few when
the rows are stored in spatial order: :func:`sort_spatially` before writing the store.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from os import PathLike
from typing import Literal

import numpy as np
from anndata import AnnData

from .._constants import Key


def read_backed(
    store: str | PathLike,
    *,
    table_key: str = Key.DEFAULT_TABLE,
    layer: str | None = None,
    obsp_keys: Sequence[str] = (Key.CONNECTIVITIES,),
) -> AnnData:
    """Open the table of a zarr store with its counts left on disk.

    Parameters
    ----------
    store
        A SpatialData zarr store (the table ``tables/<table_key>`` is opened) or an AnnData zarr store
        (``adata.write_zarr``).
    table_key
        Table of a SpatialData store (ignored for an AnnData store).
    layer
        Stored matrix that becomes the backed ``X`` (default ``X``; e.g. ``"counts"`` for ``layers/counts``).
    obsp_keys
        Graphs loaded into memory (default the connectivities of ``ss.pp.build_graph``; the distances are not needed
        for training).

    Returns
    -------
    An AnnData whose ``X`` is a backed CSR dataset (nothing of it is read yet), with ``obs``, ``var``, ``obsm``,
    ``uns`` and the ``obsp_keys`` graphs in memory. Results written into it (``obsm["X_pretrain_mask"]``) stay in
    memory; write them to the store with ``anndata.io.write_elem``.

    Examples
    --------
    >>> table = ss.io.read_backed("atlas.zarr")  # doctest: +SKIP
    >>> model = ss.tl.pretrain_mask(table, max_epochs=1)  # doctest: +SKIP
    >>> import anndata as ad, zarr  # doctest: +SKIP
    >>> group = zarr.open_group("atlas.zarr/tables/table", mode="r+")  # doctest: +SKIP
    >>> ad.io.write_elem(group["obsm"], "X_pretrain_mask", table.obsm["X_pretrain_mask"])  # doctest: +SKIP
    """
    import anndata as ad
    import zarr

    from ..data._loaders import default_batch_size

    root = zarr.open_group(str(store), mode="r")
    if "tables" in root:
        if table_key not in root["tables"]:
            raise KeyError(f"No table {table_key!r} in {store} (tables: {sorted(root['tables'].keys())}).")
        group = root["tables"][table_key]
    else:
        group = root
    where = "X" if layer is None else f"layers/{layer}"
    if where not in group:
        raise KeyError(f"{where} is not stored in the table of {store}.")
    encoding = group[where].attrs.get("encoding-type", "array")
    if encoding != "csr_matrix":
        names = {"array": "a dense array", "csc_matrix": "a CSC matrix (compressed by gene, not by cell)"}
        layout = names.get(encoding, repr(encoding))
        raise ValueError(
            f"{where} of {store} is stored as {layout}; training from disk reads the counts cell by cell and "
            "needs a CSR matrix (cells as rows) whose rows are in spatial order. Rewrite the store once: "
            f"`ss.io.write_backed(anndata.read_zarr({str(store)!r}), new_path)` (it sorts the cells with "
            "`ss.io.sort_spatially` and writes X as CSR, chunked by spatial tiles)."
        )

    def read(name):
        return ad.io.read_elem(group[name]) if name in group else None

    obsm = {k: ad.io.read_elem(group["obsm"][k]) for k in group["obsm"]} if "obsm" in group else {}
    obsp = {}
    if "obsp" in group:
        obsp = {k: ad.io.read_elem(group["obsp"][k]) for k in obsp_keys if k in group["obsp"]}
    for graph in obsp.values():
        data, n_obs = group[where]["data"], max(int(group[where].attrs["shape"][0]), 1)
        chunk_rows = data.chunks[0] / max(data.shape[0] / n_obs, 1e-9)  # stored values per chunk / values per row
        batch_size = default_batch_size(n_obs)
        warn_if_unsorted(graph, str(store), obsm.get(Key.SPATIAL), chunk_rows, batch_size)
        break
    return AnnData(
        X=ad.io.sparse_dataset(group[where]), obs=read("obs"), var=read("var"), obsm=obsm, obsp=obsp, uns=read("uns")
    )


_WARNED: set[str] = set()  # stores warned about in this session
#: Graph neighbours closer than this many rows (or a sixteenth of the table, if less) count as stored together.
NEAR_ROWS = 4096
#: A store whose sampled neighbour pairs are stored together less often than this gets the unsorted warning.
MIN_NEAR_FRACTION = 0.5


def near_fraction(graph, n_samples: int = 20_000, seed: int = 0) -> float:
    """Share of sampled edges of ``graph`` whose two cells are stored near each other (:func:`near_rows` rows).

    Most of them for a table in spatial order (:func:`sort_spatially`), about ``2 * near_rows / n_obs`` for one in
    random order. Reads only ``n_samples`` rows of the graph.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> near_fraction(sp.diags([1.0, 1.0], [-1, 1], shape=(50, 50), format="csr"))
    1.0
    """
    import scipy.sparse as sp

    graph = sp.csr_matrix(graph)
    n = graph.shape[0]
    if graph.nnz == 0 or n < 64:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(n_samples, n), replace=False)
    starts, ends = graph.indptr[rows], graph.indptr[rows + 1]
    from ..data._subgraph import _ranges

    neighbours = graph.indices[_ranges(starts, ends)]
    if neighbours.size == 0:
        return 1.0
    return float(np.mean(np.abs(neighbours - np.repeat(rows, ends - starts)) < near_rows(n)))


def near_rows(n_obs: int) -> int:
    """Row distance within which two cells count as stored together: 4,096 rows, or a sixteenth of a smaller table."""
    return min(NEAR_ROWS, max(4, n_obs // 16))


def read_amplification(
    coordinates: np.ndarray, chunk_rows: float, batch_size: int = 1024, n_windows: int = 64
) -> tuple[float, float]:
    """Stored chunks that one minibatch's seed cells span in this row order, and in spatial order.

    A minibatch is ``batch_size`` cells consecutive in Z-order of ``coordinates`` (training's and embedding's
    batches, the k-hop halo left out), at ``n_windows`` evenly spaced starts. Row ``r`` of the store is the cell of
    ``coordinates[r]`` and lies in chunk ``r // chunk_rows``; in spatial order (:func:`sort_spatially`) the same
    batch would be the rows ``start .. start + batch_size - 1``. The ratio of the two is how many times as much
    data a minibatch reads and decompresses from this store.

    Parameters
    ----------
    coordinates
        ``obsm["spatial"]`` in the order of the store's rows.
    chunk_rows
        Rows per stored chunk (stored values per chunk over stored values per row).
    batch_size
        Seeds per minibatch.
    n_windows
        Minibatches sampled.

    Returns
    -------
    Mean chunks per minibatch in this order and in spatial order.

    Examples
    --------
    >>> x = np.arange(16.0)[np.r_[0:16:4, 1:16:4, 2:16:4, 3:16:4]]  # row r holds the cell at 4 * (r % 4) + r // 4
    >>> read_amplification(np.c_[x, np.zeros(16)], chunk_rows=4, batch_size=4, n_windows=4)
    (4.0, 1.0)
    """
    from ..data._loaders import locality_order

    rows = np.argsort(locality_order(np.asarray(coordinates)), kind="stable")  # Z-order position -> stored row
    batch_size = min(int(batch_size), rows.size)
    chunk_rows = max(float(chunk_rows), 1.0)
    starts = np.unique(np.linspace(0, rows.size - batch_size, n_windows).astype(np.int64))
    here = [np.unique((rows[a : a + batch_size] // chunk_rows).astype(np.int64)).size for a in starts]
    spatial = [int((a + batch_size - 1) // chunk_rows) - int(a // chunk_rows) + 1 for a in starts]
    return float(np.mean(here)), float(np.mean(spatial))


def warn_if_unsorted(
    graph, store: str, coordinates: np.ndarray | None = None, chunk_rows: float = 1024, batch_size: int = 1024
) -> None:
    """Warn (once per store) when the cells of a store are not in spatial order, saying what it costs and the fix.

    The cost stated is :func:`read_amplification` of the store's coordinates and chunking, when ``coordinates`` are
    given.
    """
    fraction = near_fraction(graph)
    if fraction >= MIN_NEAR_FRACTION or store in _WARNED:
        return
    _WARNED.add(store)
    cost = "reads and decompresses many times as much data as in spatial order, and is that much slower to read"
    if coordinates is not None:
        here, spatial = read_amplification(np.asarray(coordinates), chunk_rows, batch_size)
        cost = (
            f"reads and decompresses about {here:,.0f} stored chunks of {chunk_rows:,.0f} cells, against "
            f"{spatial:,.0f} in spatial order: {here / spatial:,.1f} times as much data, so reading it is about "
            f"{here / spatial:,.1f} times slower"
        )
        if here / spatial < 1.5:
            cost += " (a store this small is a few chunks; a larger one in this order reads many times more)"
    warnings.warn(
        f"The cells of {store} are not stored in spatial order: only {fraction:.0%} of the sampled neighbour pairs "
        f"lie within {near_rows(graph.shape[0]):,} rows of each other (over 90% in a sorted store). Each minibatch "
        f"of {batch_size:,} cells of training and embedding from it then {cost}. Rewrite it once in spatial order "
        f"and train from the new store: `ss.io.write_backed(ss.io.read_backed({store!r}), new_path)`.",
        UserWarning,
        stacklevel=3,
    )


def sort_spatially(adata: AnnData, *, library_key: str | None = None) -> AnnData:
    """A copy of ``adata`` with its cells in Z-order of ``obsm["spatial"]`` (per section), to write before training.

    Cells that are neighbours in space are then neighbours on disk, so a minibatch's k-hop subgraph is read from the
    store in a few contiguous ranges (see :func:`read_backed`). :func:`write_backed` sorts and writes in one call,
    with the store's chunking and compressor chosen for training from disk.

    Parameters
    ----------
    adata
        A table with ``obsm["spatial"]`` (its graphs in ``obsp`` are permuted with it).
    library_key
        obs column of the sections: sections stay contiguous (in order of first appearance).

    Returns
    -------
    The sorted copy.

    Examples
    --------
    >>> from anndata import AnnData
    >>> adata = AnnData(np.zeros((3, 1)), obsm={"spatial": np.array([[9.0, 9.0], [0.0, 0.0], [0.0, 1.0]])})
    >>> sort_spatially(adata).obs_names.tolist()
    ['1', '2', '0']
    """
    return adata[_spatial_order(adata, library_key)].copy()


#: Default rows per stored chunk of ``write_backed``: about one minibatch of seeds (1,024 cells at atlas scale).
DEFAULT_ROWS_PER_CHUNK = 1024
_COMPRESSORS = ("lz4", "zstd", "none")


def _codec(compressor: str, zarr_format: int):
    """The compressor of the stored counts for ``zarr_format`` (blosc with byte shuffle, or none)."""
    if compressor == "none":
        return None
    level = 5 if compressor == "lz4" else 3
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Blosc(cname=compressor, clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname=compressor, clevel=level, shuffle="shuffle")


def write_backed(
    adata: AnnData,
    store: str | PathLike,
    *,
    layer: str | None = None,
    library_key: str | None = None,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
    compressor: Literal["lz4", "zstd", "none"] = "lz4",
    block_rows: int = 100_000,
) -> None:
    """Write a table to an AnnData zarr store laid out for training from disk (:func:`read_backed`).

    The cells are put in spatial order (:func:`sort_spatially`), the counts (``layer`` or ``X``) become the store's
    ``X`` as a CSR matrix whose stored values are chunked by spatial tiles of about ``rows_per_chunk`` cells, compressed
    with ``compressor``; ``obs``, ``var``, ``obsm``, ``obsp`` (permuted with the cells) and ``uns`` are written too
    (other layers are not: the store holds what training reads). The counts are written ``block_rows`` cells at a
    time, so a table opened with :func:`read_backed` (counts on disk) is rewritten without being read whole.

    Parameters
    ----------
    adata
        The table: counts in memory (dense or sparse) or on disk (opened with :func:`read_backed`), coordinates in
        ``obsm["spatial"]``.
    store
        Path of the new zarr store (must not exist).
    layer
        Layer holding the counts (default ``X``).
    library_key
        obs column of sections: sections stay contiguous (see :func:`sort_spatially`).
    rows_per_chunk
        Cells per stored chunk (the chunk length is this times the mean number of stored values per cell). A
        minibatch of 1,024 seeds and its 2-hop halo touches a few chunks of its own tile plus the halo's chunks.
        Measured at 1M cells (``--store-options``, ``benchmarks/results/atlas_scale_store.md``): 5.6 ms per training
        minibatch read at 1,024 rows (845 cells per chunk on that table), 5.9 ms at 256, 9.6 ms at 4,096.
    compressor
        ``"lz4"`` (blosc lz4 with byte shuffle, zarr's default for zarr v2 stores), ``"zstd"`` (blosc zstd) or
        ``"none"``. Minibatch reads per chunk size and compressor are measured by ``python
        benchmarks/atlas_scale.py --store-options --cells 1000000`` (``benchmarks/results/atlas_scale_store.md``):
        lz4 reads a minibatch in 5.6 ms from 383 MB, zstd in 15.6 ms from 217 MB, uncompressed in 3.1 ms from
        1,484 MB (only the byte ranges of the rows are read). A whole epoch from each (``--compressors lz4,none
        --cells 1000000``, ``benchmarks/results/atlas_scale_compressors.md``) took 29.9 s (lz4) and 30.8 s (none), a
        difference within the run-to-run noise, so lz4, four times smaller, stays the default.
    block_rows
        Cells read and written at a time (bounds the memory of the rewrite).

    Returns
    -------
    Nothing; the store is written.

    Notes
    -----
    A store written by ``adata.write_zarr`` or by another tool trains from disk as it is when its cells are in
    spatial order and ``X`` is CSR; :func:`read_backed` warns when the order is not spatial and refuses a dense or
    CSC ``X``. Either way, rewrite it once with ``ss.io.write_backed(ss.io.read_backed(old), new)`` (CSR) or
    ``ss.io.write_backed(anndata.read_zarr(old), new)`` (dense or CSC ``X``, read into memory) and train from the
    new store. Whether rewriting a sorted CSR store only to change its chunking or compressor pays: compare the
    store as generated with the ``write_backed`` rows of ``benchmarks/results/atlas_scale_compressors.md``.

    Examples
    --------
    >>> ss.io.write_backed(adata, "atlas.zarr")  # doctest: +SKIP
    >>> model = ss.tl.pretrain_mask(ss.io.read_backed("atlas.zarr"), max_epochs=1)  # doctest: +SKIP
    >>> ss.io.write_backed(ss.io.read_backed("old.zarr"), "sorted.zarr")  # an existing store  # doctest: +SKIP
    """
    import anndata as ad
    import scipy.sparse as sp
    import zarr

    from .._validate import check_choice
    from ..data._tiles import TileReader, is_backed_sparse

    check_choice(compressor, _COMPRESSORS, "compressor")
    if rows_per_chunk < 1 or block_rows < 1:
        raise ValueError("rows_per_chunk and block_rows must be positive.")
    if os.path.exists(store):
        raise FileExistsError(f"{store} exists already: write to a new path (the old store stays as it is).")
    x = adata.X if layer is None else adata.layers[layer]
    order = _spatial_order(adata, library_key)
    if is_backed_sparse(x):
        x = TileReader(x)  # rows in any order, read block by block
    elif not sp.issparse(x):
        x = sp.csr_matrix(np.asarray(x))
    else:
        x = sp.csr_matrix(x)

    def block(start: int) -> sp.csr_matrix:
        return sp.csr_matrix(x[order[start : start + block_rows]])

    meta = AnnData(obs=adata.obs, var=adata.var, obsm=dict(adata.obsm), obsp=dict(adata.obsp), uns=dict(adata.uns))
    meta[order].copy().write_zarr(store)
    zarr_format = int(ad.settings.zarr_write_format)
    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    first = block(0)
    per_row = max(first.nnz / max(first.shape[0], 1), 1.0)
    kwargs = {"chunks": (max(1024, int(rows_per_chunk * per_row)),), "compressors": _codec(compressor, zarr_format)}
    ad.io.write_elem(group, "X", first, dataset_kwargs=kwargs)
    stored = ad.io.sparse_dataset(group["X"])
    for start in range(block_rows, order.size, block_rows):
        stored.append(block(start))
    zarr.consolidate_metadata(str(store), zarr_format=zarr_format)


def _spatial_order(adata: AnnData, library_key: str | None) -> np.ndarray:
    """Row order of :func:`sort_spatially`: Z-order of ``obsm["spatial"]``, sections contiguous."""
    from ..data._loaders import locality_order

    if Key.SPATIAL not in adata.obsm:
        raise KeyError(f"obsm[{Key.SPATIAL!r}] (cell coordinates) is needed to sort cells in space.")
    order = np.argsort(locality_order(np.asarray(adata.obsm[Key.SPATIAL])), kind="stable")
    if library_key is not None:
        codes = np.unique(np.asarray(adata.obs[library_key]).astype(str), return_inverse=True)[1]
        first = np.full(codes.max() + 1, codes.size)
        np.minimum.at(first, codes, np.arange(codes.size))
        order = order[np.argsort(first[codes][order], kind="stable")]  # sections by first appearance
    return order
