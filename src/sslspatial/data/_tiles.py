"""Rows of a count matrix that stays on disk, read as a few contiguous row ranges per minibatch.

A table opened with :func:`sslspatial.io.read_backed` (or ``anndata.read_h5ad(..., backed="r")``) keeps its counts
in the store as an anndata backed sparse dataset (:class:`anndata.abc.CSRDataset`). :class:`TileReader` serves the
rows of a minibatch subgraph from it: the requested rows are sorted, grouped into runs whose gaps are at most ``gap``
rows, and each run is one contiguous slice of the dataset (one read of ``indptr``, ``indices`` and ``data`` each).
A zarr store is read faster still: ``indptr`` (one integer per cell) is held in memory, the stored chunks of
``data`` and ``indices`` that a minibatch's rows fall in are read whole and kept, decompressed, in a small
least-recently-used cache, and the rows' values are gathered from it in memory. A chunk is read straight from its file
and decompressed with numcodecs where the store's layout allows (:func:`~sslspatial.data._chunks.direct_chunk_reader`:
a local directory store, one compressor; about 0.3 ms for a 950 kB lz4 chunk against 1.3 ms through zarr), else
through zarr (consecutive chunks in one slice); of an uncompressed chunk only the byte ranges of the requested rows are
read. Minibatches of neighbouring tiles share chunks (a tile's halo lies in the next tiles' chunks; embedding walks the
store in order), so most chunks are decompressed once per pass. When the rows of the store are in spatial (Z-order)
order (:func:`sslspatial.io.sort_spatially` before writing), the seeds of a batch and their k-hop halo lie in a few
chunks. Nothing of the size of the matrix is read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._arguments import check_int
from .._types import is_backed_sparse
from ._chunks import direct_chunk_reader
from ._subgraph import _ranges

__all__ = ["TileReader", "is_backed_sparse"]


class TileReader:
    """Row access to a backed CSR dataset by contiguous row ranges (tiles), with read counters.

    Parameters
    ----------
    dataset
        An anndata backed CSR dataset (``anndata.io.sparse_dataset(group)``, or the ``X`` of a table opened with
        :func:`sslspatial.io.read_backed` or ``read_h5ad(..., backed="r")``).
    gap
        Requested rows closer than this are read in one range (the rows in between are read and dropped): fewer,
        larger reads.
    check
        ``(where, likelihood)``: check every value read (non-negative integers for a count likelihood, finite values
        for ``"gaussian"``) and raise the error of :func:`sslspatial._validate.check_counts`, so that values the
        up-front check skipped (a store checked once before, :func:`sslspatial._validate.check_counts`) are still
        caught when training meets them. ``None``: no check.
    cache_chunks
        Decompressed stored chunks kept per array of a zarr store (``data`` and ``indices``; at least those of the
        current minibatch): about ``2 * cache_chunks`` stored chunks of memory. Uncompressed chunks read from their
        files are not cached: only the byte ranges a minibatch needs are read.

    Attributes
    ----------
    n_reads
        Reads so far (contiguous ranges; one per minibatch from a zarr store).
    rows_read
        Rows read so far (requested rows plus the gaps read through).
    max_rows_per_read
        The most rows one call read.
    chunks_read
        Stored chunks read and decompressed so far (zarr; both arrays): the cache's misses.

    Examples
    --------
    >>> import anndata as ad, numpy as np, scipy.sparse as sp, zarr
    >>> group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> ad.io.write_elem(group, "X", sp.csr_matrix(np.arange(12.0).reshape(4, 3)))
    >>> reader = TileReader(ad.io.sparse_dataset(group["X"]), gap=1)
    >>> reader[np.array([3, 0])].toarray().tolist(), reader.n_reads  # one read per call
    ([[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]], 1)
    >>> _ = reader[np.array([1, 2])]; reader.chunks_read  # the store's one chunk per array, read once
    2
    """

    def __init__(self, dataset: Any, gap: int = 32, check: tuple[str, str] | None = None, cache_chunks: int = 16):
        if getattr(dataset, "format", "csr") != "csr":
            raise ValueError(
                "Counts stored column-major (CSC) cannot be read by rows without reading the whole matrix: rewrite "
                "the store with rows in spatial order and a CSR X: `ss.io.write_backed(table, path)` (it sorts with "
                "`ss.io.sort_spatially` and chunks by spatial tiles)."
            )
        self.dataset = dataset
        self.check = check
        self.shape = tuple(dataset.shape)
        self.gap = int(gap)
        self.n_reads = self.rows_read = self.max_rows_per_read = self.chunks_read = 0
        group = getattr(dataset, "group", None)
        self._zarr = group is not None and hasattr(group["data"], "vindex")  # else HDF5: contiguous ranges
        if self._zarr:
            self._indptr = np.asarray(group["indptr"][:], dtype=np.int64)
            self._data, self._indices = group["data"], group["indices"]
            # stored chunks read from their files where the layout allows (4x faster than through zarr), else by zarr
            self._direct = {"data": direct_chunk_reader(self._data), "indices": direct_chunk_reader(self._indices)}
            self.cache_chunks = check_int(cache_chunks, "cache_chunks", example=16)
            self._cache: dict[str, OrderedDict] = {"data": OrderedDict(), "indices": OrderedDict()}
            self._lock = threading.Lock()  # the prefetch thread and the caller may read at once

    def __deepcopy__(self, memo):  # share the open store
        return self

    def __getstate__(self):  # to another process (DataLoader workers, DDP): without the cache and its lock
        state = self.__dict__.copy()
        if self._zarr:
            state["_cache"], state["_lock"] = {"data": OrderedDict(), "indices": OrderedDict()}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._zarr:
            self._lock = threading.Lock()

    def ranges(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, ends)`` of the contiguous row ranges that cover the sorted unique ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return rows[:0], rows[:0]
        breaks = np.flatnonzero(np.diff(rows) > self.gap) + 1
        return rows[np.r_[0, breaks]], rows[np.r_[breaks - 1, rows.size - 1]] + 1

    def __getitem__(self, rows: np.ndarray) -> sp.csr_matrix:
        """The requested rows (in the order given, repeats allowed) as an in-memory CSR matrix."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        unique, inverse = np.unique(rows, return_inverse=True)
        if self._zarr:
            starts, ends = self._indptr[unique], self._indptr[unique + 1]
            positions = _ranges(starts, ends)
            self.n_reads += 1
            self.rows_read += unique.size
            self.max_rows_per_read = max(self.max_rows_per_read, unique.size)
            if positions.size == 0:
                return sp.csr_matrix((rows.size, self.shape[1]), dtype=self._data.dtype)
            indptr = np.concatenate([[0], np.cumsum(ends - starts)])
            with self._lock:
                values = self._checked(self._gather("data", self._data, positions))
                columns = self._gather("indices", self._indices, positions)
            block = sp.csr_matrix((values, columns, indptr), shape=(unique.size, self.shape[1]))
            return block[inverse]
        starts, ends = self.ranges(unique)
        blocks = [self.dataset[int(a) : int(b)] for a, b in zip(starts, ends, strict=True)]
        for block in blocks:
            self._checked(block.data)
        self.n_reads += len(blocks)
        self.rows_read += int((ends - starts).sum())
        self.max_rows_per_read = max([self.max_rows_per_read, *(int(b - a) for a, b in zip(starts, ends, strict=True))])
        if not blocks:
            return sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
        stacked = sp.vstack(blocks, format="csr") if len(blocks) > 1 else sp.csr_matrix(blocks[0])
        run = np.searchsorted(starts, unique, side="right") - 1
        offsets = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        return stacked[(unique - starts[run] + offsets[run])[inverse]]

    def _gather(self, name: str, array: Any, positions: np.ndarray) -> np.ndarray:
        """``array[positions]`` (increasing positions) from its stored chunks, read whole and cached (LRU).

        Uncompressed chunk files: only the byte ranges that hold the positions are read.
        """
        size, cache = int(array.chunks[0]), self._cache[name]
        if positions.size == 0:
            return np.empty(0, dtype=array.dtype)
        # chunk borders in the sorted positions (a search per chunk of the span, not a pass over the positions)
        span = np.arange(positions[0] // size, positions[-1] // size + 2, dtype=np.int64)
        cuts = np.searchsorted(positions, span * size)
        keep = cuts[1:] > cuts[:-1]
        needed, lows, highs = span[:-1][keep], cuts[:-1][keep], cuts[1:][keep]
        direct = self._direct[name]
        if direct is not None and direct.raw:  # uncompressed chunks: read the requested ranges only, nothing cached
            self.chunks_read += needed.size
            return direct.take(positions)
        out = np.empty(positions.size, dtype=array.dtype)
        missing = []
        for c, lo, hi in zip(needed.tolist(), lows.tolist(), highs.tolist(), strict=True):
            if c in cache:
                out[lo:hi] = cache[c][positions[lo:hi] - c * size]
                cache.move_to_end(c)
            else:
                missing.append((c, lo, hi))
        # the missing chunks in runs of consecutive ones (one slice each), at most cache_chunks at a time, so that memory
        # stays bounded even when the rows are scattered over the whole store (an unsorted store)
        start = 0
        while start < len(missing):
            end = start + 1
            while end < len(missing) and end - start < self.cache_chunks and missing[end][0] == missing[end - 1][0] + 1:
                end += 1
            first, last = missing[start][0], missing[end - 1][0]
            if direct is None:
                values = np.asarray(array[first * size : min((last + 1) * size, array.shape[0])])
            for c, lo, hi in missing[start:end]:
                chunk = direct(c) if direct is not None else values[(c - first) * size : (c - first + 1) * size]
                out[lo:hi] = chunk[positions[lo:hi] - c * size]
                cache[c] = chunk
                if len(cache) > self.cache_chunks:
                    cache.popitem(last=False)
            self.chunks_read += end - start
            start = end
        return out

    def _checked(self, values: np.ndarray) -> np.ndarray:
        """``values``, after the check asked for (the up-front check's error on a bad value)."""
        if self.check is not None and values.size:
            from .._validate import check_values

            check_values(values, *self.check)
        return values
