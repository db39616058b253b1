"""Data of the atlas-scale benchmark (``atlas_scale.py``): the synthetic atlas written to a zarr store, the layout of a
store, and the read timings of store layouts (``--store-options``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _stamp import stamp, stamp_line

RESULTS = Path(__file__).resolve().parent / "results"


def _counts(xy: np.ndarray, extent: float, n_genes: int, rng: np.random.Generator, centres, loadings) -> sp.csr_matrix:
    """NB counts (theta 2) whose means follow 8 smooth spatial programmes (mean about 0.3 per entry)."""
    weights = np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * (extent / 4) ** 2)).astype(np.float32)
    mean = weights @ loadings + 0.02
    return sp.csr_matrix(rng.poisson(rng.gamma(2.0, mean / 2.0)).astype(np.float32))


def generate(path: str, n_cells: int, n_genes: int = 500, mean_degree: float = 6.0, seed: int = 0) -> None:
    """Write a synthetic atlas to an AnnData zarr store, cells in Z-order, counts appended 100,000 rows at a time.

    Uniform cells (density 1 per 100 square units), radius graph with the requested mean degree
    (``obsp["spatial_connectivities"]``), ``obsm["spatial"]``, CSR counts in ``X``.
    """
    import anndata as ad
    import zarr
    from scipy.spatial import cKDTree

    from sslspatial.data import locality_order

    rng = np.random.default_rng(seed)
    extent = np.sqrt(n_cells * 100.0)
    xy = rng.uniform(0, extent, (n_cells, 2))
    xy = xy[np.argsort(locality_order(xy), kind="stable")]  # rows in Z-order: what ss.io.sort_spatially gives
    centres = rng.uniform(0, extent, (8, 2))
    loadings = rng.gamma(0.5, 0.6, (8, n_genes)).astype(np.float32)
    radius = np.sqrt(mean_degree * 100.0 / np.pi)
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    i, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    del pairs
    adjacency = sp.csr_matrix((np.ones(i.size, dtype=np.float32), (i, j)), shape=(n_cells, n_cells))
    del i, j
    chunk = 100_000
    first = _counts(xy[:chunk], extent, n_genes, rng, centres, loadings)
    adata = ad.AnnData(first, obsm={"spatial": xy[:chunk]})
    adata.write_zarr(path)  # the skeleton; X grows by appending, obs/obsm/obsp are rewritten at full length
    Path(path, ".zmetadata").unlink(missing_ok=True)  # edited in place below; consolidated again at the end
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    x = ad.io.sparse_dataset(group["X"])
    for start in range(chunk, n_cells, chunk):
        x.append(_counts(xy[start : start + chunk], extent, n_genes, rng, centres, loadings))
    names = np.arange(n_cells).astype(str)
    import pandas as pd

    ad.io.write_elem(group, "obs", pd.DataFrame(index=names))
    ad.io.write_elem(group["obsm"], "spatial", xy)
    ad.io.write_elem(group["obsp"], "spatial_connectivities", adjacency)
    group.attrs["radius"] = float(radius)
    zarr.consolidate_metadata(path)


def table_lines(keys: list[str], rows: list[dict]) -> list[str]:
    """A Markdown table of ``rows`` with the columns ``keys``."""
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)]  # fmt: skip


def store_layout(path: str) -> dict:
    """Chunking and compressor of the stored counts (``X/data``) of an AnnData zarr store."""
    import zarr

    group = zarr.open_group(path, mode="r")
    data = group["X"]["data"]
    per_row = data.shape[0] / max(group["X"]["indptr"].shape[0] - 1, 1)
    compressors = [getattr(c, "cname", None) or type(c).__name__ for c in data.compressors] or ["none"]
    compressors = [str(getattr(c, "value", c)) for c in compressors]
    return {
        "store_chunk_values": int(data.chunks[0]),
        "store_chunk_rows": int(round(data.chunks[0] / per_row)),
        "store_compressor": "+".join(compressors),
    }


STORE_OPTIONS = [  # (name, rows per chunk, compressor); None: the store as generated (anndata's own chunking)
    ("write_zarr (as generated)", None, None),
    ("write_backed 1024 rows lz4 (default)", 1024, "lz4"),
    ("write_backed 256 rows lz4", 256, "lz4"),
    ("write_backed 4096 rows lz4", 4096, "lz4"),
    ("write_backed 1024 rows zstd", 1024, "zstd"),
    ("write_backed 1024 rows none", 1024, "none"),
    ("unsorted (random row order) 1024 rows lz4", 1024, "lz4"),
]


def store_options(store: str, threads: int, n_batches: int = 150) -> list[dict]:
    """Rewrite the store's counts with each chunking / compressor and time the reads of training's minibatches.

    The same ``n_batches`` minibatches (1,024 seeds consecutive in Z-order plus their 2-hop halo, as training reads
    them) are read from every layout with :class:`sslspatial.data.TileReader`; also timed: one streamed pass over
    the stored values (the first count check of a store), the rewrite, and the size on disk.
    """
    import anndata as ad
    import torch

    torch.set_num_threads(threads)
    import sslspatial as ss
    from sslspatial.data import LocalityBatchSampler, SubgraphCollate, TileReader
    from sslspatial.data._loaders import locality_order
    from sslspatial.io._backed import _spatial_order

    source = ss.io.read_backed(store)
    graph = source.obsp["spatial_connectivities"]
    torch.manual_seed(0)
    batches = list(LocalityBatchSampler(locality_order(np.asarray(source.obsm["spatial"])), 1024))[:n_batches]
    collate = SubgraphCollate(np.zeros((source.n_obs, 1), dtype=np.float32), graph, 2)
    nodes = [collate.subgraph(np.asarray(b))[0] for b in batches]
    results = []
    with tempfile.TemporaryDirectory(prefix="atlas_store_") as tmp:
        for name, rows_per_chunk, compressor in STORE_OPTIONS:
            path, row_of = store, np.arange(source.n_obs)
            t = time.perf_counter()
            if rows_per_chunk is not None:
                path = os.path.join(tmp, f"{len(results)}.zarr")
                table = source
                if name.startswith("unsorted"):  # random coordinates: write_backed's spatial sort is a shuffle
                    table = ad.AnnData(X=source.X, obs=source.obs, var=source.var)
                    table.obsm["spatial"] = np.random.default_rng(0).uniform(size=(source.n_obs, 2))
                    row_of = np.argsort(_spatial_order(table, None))
                ss.io.write_backed(table, path, rows_per_chunk=rows_per_chunk, compressor=compressor)
            t_write = time.perf_counter() - t
            reader = TileReader(ss.io.read_backed(path).X if not name.startswith("unsorted") else _open(path))
            for rows in nodes[:5]:
                reader[row_of[rows]]
            t = time.perf_counter()
            for rows in nodes:
                reader[row_of[rows]]
            t_read = (time.perf_counter() - t) / len(nodes)
            from sslspatial._validate import _value_blocks

            t = time.perf_counter()
            for _ in _value_blocks(reader.dataset):
                pass
            t_pass = time.perf_counter() - t
            size = sum(f.stat().st_size for f in Path(path, "X").rglob("*") if f.is_file())
            results.append(
                {
                    "layout": name,
                    "n_cells": source.n_obs,
                    **store_layout(path),
                    "X_megabytes": round(size / 1e6),
                    "seconds_write": round(t_write, 1) if rows_per_chunk else "",
                    "ms_read_per_minibatch": round(t_read * 1e3, 1),
                    "seconds_one_pass": round(t_pass, 1),
                    "load_average_1min": round(os.getloadavg()[0], 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def _open(path: str):
    """The backed X of a store without read_backed's sortedness warning (the unsorted layout is on purpose)."""
    import anndata as ad
    import zarr

    return ad.io.sparse_dataset(zarr.open_group(path, mode="r")["X"])


def write_store_options(results: list[dict], threads: int) -> None:
    """``results/atlas_scale_store.{json,md}``."""
    RESULTS.mkdir(exist_ok=True)
    commit = stamp(__file__)
    (RESULTS / "atlas_scale_store.json").write_text(json.dumps({"rows": results, "commit": commit}, indent=2) + "\n")
    keys = list(results[0])
    lines = [
        "# Atlas scale: store layout",
        "",
        f"The counts of the synthetic atlas ({results[0]['n_cells']:,} cells x 500 genes, about 200 stored values per "
        "cell) rewritten with `ss.io.write_backed` per chunk size (cells per stored chunk) and compressor (blosc "
        "with byte shuffle, or none), and the same 150 training minibatches (1,024 seeds consecutive in Z-order plus "
        "their 2-hop halo) read from each with `TileReader` (the reads of training from disk); one pass = one "
        "streamed read of every stored value (what the first count check of a store costs). `unsorted` is the same "
        f"table in random row order. torch threads = {threads}. {stamp_line(commit)} Written by "
        "`python benchmarks/atlas_scale.py --store-options [--store PATH | --cells N]`; a 1-minute load average above 2 means "
        "other jobs shared the CPUs.",
        "",
        *table_lines(keys, results),
    ]
    (RESULTS / "atlas_scale_store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
