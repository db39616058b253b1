"""Minibatches of seed cells with their closed k-hop subgraph, for scvi-tools training of graph encoders.

scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` hands a ``collate_fn`` the registry tensors of one minibatch of
seed rows. :class:`SubgraphCollate` turns the seed indices into the closed ``n_hops`` neighbourhood (seeds first) of
the spatial graph stored in ``obsp``, and gathers the features of every node. Nothing of size cells x cells is ever
built: the cost of a batch is proportional to its subgraph, so memory is bounded by the batch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.dataloaders import AnnDataLoader, DataSplitter

from .._constants import REGISTRY_KEYS as KEYS
from ._prefetch import Prefetcher
from ._samplers import (  # noqa: F401 (their import path before the split)
    SEEDS_KEY,
    LocalityBatchSampler,
    SeedManager,
    ShardedLocalityBatchSampler,
    locality_order,
)
from ._subgraph import _ranges
from ._tiles import TileReader, is_backed_sparse


class SubgraphCollate:
    """Picklable ``collate_fn``: seed indices -> closed k-hop subgraph with node features.

    Parameters
    ----------
    x
        ``(n_obs, n_vars)`` feature matrix (dense array or scipy sparse, CSR is fastest), or an anndata backed CSR
        dataset whose counts stay on disk (read per minibatch in contiguous row ranges, :class:`TileReader`).
    adjacency
        ``(n_obs, n_obs)`` sparse adjacency; row ``i`` lists the nodes ``i`` receives messages from. ``None`` (or
        ``n_hops=0``) gives seeds without edges (MLP encoders).
    n_hops
        Number of hops (the number of message-passing layers of the encoder).
    targets
        Optional per-observation arrays (first axis ``n_obs``); each is gathered for every node of the subgraph and
        returned as ``"target_<name>"`` (seeds first), e.g. labels or pseudo-labels.
    value_check
        ``(where, likelihood)``: counts on disk are checked as each minibatch reads them (non-negative integers for a
        count likelihood, finite values for ``"gaussian"``), raising the error of the up-front check
        (:func:`sslspatial._validate.check_counts`), which a store checked once before may skip.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> adj = sp.diags([1.0, 1.0], [-1, 1], shape=(4, 4), format="csr")  # 0 - 1 - 2 - 3
    >>> collate = SubgraphCollate(np.eye(4, dtype=np.float32), adj, n_hops=1)
    >>> batch = collate({"ind_x": np.array([[0]])})
    >>> batch["x"].shape, int(batch["n_seeds"])
    (torch.Size([2, 4]), 1)
    """

    def __init__(
        self,
        x: Any,
        adjacency: sp.spmatrix | None = None,
        n_hops: int = 0,
        targets: dict[str, np.ndarray] | None = None,
        value_check: tuple[str, str] | None = None,
    ):
        if is_backed_sparse(x):
            x = TileReader(x, check=value_check)
        elif sp.issparse(x) and not isinstance(x, sp.csr_matrix | sp.csr_array):
            x = x.tocsr()
        self.x = x
        self.n_hops = int(n_hops) if adjacency is not None else 0
        self.adjacency = None
        self.degree = None
        if self.n_hops > 0:
            adjacency = sp.csr_matrix(adjacency)
            adjacency.sort_indices()
            self.adjacency = adjacency
            self.degree = np.diff(adjacency.indptr).astype(np.int64)
        self.targets = {k: np.asarray(v) for k, v in (targets or {}).items()}
        self._local: np.ndarray | None = None

    def __deepcopy__(self, memo):  # AnnDataLoader deep-copies its kwargs: share the (read-only) data instead
        return self

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_local"] = None
        return state

    def subgraph(self, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(nodes, edge_index)`` of the closed ``n_hops`` neighbourhood of ``seeds`` (seeds first).

        Vectorised: one pass over the CSR rows per hop and one over the rows of the node set for the induced edges;
        a reusable global -> local lookup table avoids any cells x cells work. Nodes come in order of hop distance
        and edges sorted by target (the minibatch's ``"hops"`` layout).
        """
        nodes, edge_index, _ = self._subgraph(seeds)
        return nodes, edge_index

    def _subgraph(self, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`subgraph` plus the ``(2, n_hops + 1)`` hop layout (nodes / edges within ``k`` hops)."""
        seeds = np.asarray(seeds, dtype=np.int64).ravel()
        if self.n_hops == 0:
            return seeds, np.empty((2, 0), dtype=np.int64), np.array([[seeds.size], [0]], dtype=np.int64)
        adj = self.adjacency
        n = adj.shape[0]
        if self._local is None or self._local.shape[0] != n:
            self._local = np.full(n, -1, dtype=np.int64)
        local = self._local
        local[seeds] = np.arange(seeds.size)
        layers, frontier, count = [seeds], seeds, seeds.size
        try:
            for _ in range(self.n_hops):
                neighbours = adj.indices[_ranges(adj.indptr[frontier], adj.indptr[frontier + 1])]
                new = _new_nodes(neighbours[local[neighbours] < 0], local)
                if new.size == 0:
                    break
                local[new] = np.arange(count, count + new.size)
                count += new.size
                layers.append(new)
                frontier = new
            nodes = np.concatenate(layers)
            starts, ends = adj.indptr[nodes], adj.indptr[nodes + 1]
            sources = local[adj.indices[_ranges(starts, ends)]]
            targets = np.repeat(np.arange(nodes.size, dtype=np.int64), ends - starts)
            keep = sources >= 0
            edge_index = np.stack([sources[keep], targets[keep]])  # sorted by target, as the nodes are
        finally:
            local[np.concatenate(layers)] = -1
        node_counts = np.cumsum([layer.size for layer in layers])
        node_counts = np.pad(node_counts, (0, self.n_hops + 1 - node_counts.size), mode="edge")
        hops = np.stack([node_counts, np.searchsorted(edge_index[1], node_counts)])
        return nodes, edge_index, hops

    def features(self, nodes: np.ndarray) -> np.ndarray:
        """Dense float32 features of ``nodes``."""
        rows = self.x[nodes]
        rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        return rows.astype(np.float32, copy=False)

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Build the minibatch dictionary from the registry tensors of the seed rows."""
        if isinstance(batch, list | tuple):  # a LocalityBatchSampler batch arrives wrapped in a list of one
            (batch,) = batch
        seeds = np.asarray(batch[SEEDS_KEY]).ravel().astype(np.int64)
        nodes, edge_index, hops = self._subgraph(seeds)
        out = {
            KEYS.X_KEY: torch.from_numpy(np.ascontiguousarray(self.features(nodes))),
            KEYS.EDGE_INDEX_KEY: torch.from_numpy(np.ascontiguousarray(edge_index)),
            KEYS.N_SEEDS_KEY: torch.tensor(seeds.size),
            SEEDS_KEY: torch.from_numpy(seeds),
            KEYS.HOPS_KEY: torch.from_numpy(hops),
        }
        if self.degree is not None:
            out[KEYS.DEGREE_KEY] = torch.from_numpy(self.degree[nodes])
        for name, values in self.targets.items():
            out[KEYS.TARGET_PREFIX + name] = torch.as_tensor(values[nodes])
        return out


def _new_nodes(candidates: np.ndarray, local: np.ndarray) -> np.ndarray:
    """``np.unique(candidates)`` for nodes whose ``local`` entry is ``-1``, by marking instead of a hashed unique.

    Each candidate writes its position into ``local``; the positions that survive are one per node. ``local`` is left
    with non-negative values at the candidates, which the caller overwrites with their local indices.
    """
    positions = np.arange(candidates.size, dtype=np.int64)
    local[candidates] = positions
    return np.sort(candidates[local[candidates] == positions])


def default_batch_size(n_train: int) -> int:
    """Seeds per minibatch when none is given: 256, or 1,024 for 100,000 training cells or more.

    On 1,000,000 synthetic cells (GAT, 2 layers, degree 6, Z-order batches, 2 CPU threads; ``python
    benchmarks/atlas_scale.py --batch-sweep 256,512,1024,2048``, ``benchmarks/results/atlas_scale_batch.md``) an
    epoch at 1,024 seeds takes well under half the time of 256 and about the time of 2,048, which halves the number of
    optimiser steps. Below 100,000 cells the default stays 256, so small tables keep their number of optimiser steps
    (and their accuracy: the cell-typing defaults were chosen at 256 on STARmap, about 1,000 cells per section).

    Examples
    --------
    >>> default_batch_size(5_000), default_batch_size(1_000_000)
    (256, 1024)
    """
    return 1024 if n_train >= 100_000 else 256


def make_collate(
    adata_manager,
    n_hops: int = 0,
    targets: dict[str, np.ndarray] | None = None,
    value_check: tuple[str, str] | None = None,
) -> SubgraphCollate:
    """Build the collate of a model's data.

    Features from the registry, graph from ``obsp[connectivity_key]`` (a setup
    argument of the model).
    """
    setup = adata_manager.registry["setup_args"]
    x = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    key = setup.get("connectivity_key")
    adjacency = adata_manager.adata.obsp[key] if (n_hops > 0 and key is not None) else None
    return SubgraphCollate(x, adjacency, n_hops, targets, value_check)


def default_prefetch(collate: Any) -> int:
    """Minibatches to build ahead: 2 when the collate reads counts from disk and a thread can run beside training.

    That is, when a CPU core is left over by torch's threads, or a GPU is present (training there leaves the CPUs
    free); else 0. On 2 cores with 2 torch threads a prefetch thread only competes with training: at 1M cells from disk
    it made the epoch slower in every comparison (``python benchmarks/atlas_scale.py``: row ``disk-prefetch`` against
    ``disk`` in ``benchmarks/results/atlas_scale.md``). Where it can run beside training it overlaps reading and
    decompressing the next minibatches with the current step (not measured here: no machine with spare cores).

    Examples
    --------
    >>> default_prefetch(SubgraphCollate(np.zeros((3, 2))))  # counts in memory: nothing to overlap
    0
    """
    return disk_prefetch() if isinstance(getattr(collate, "x", None), TileReader) else 0


def disk_prefetch() -> int:
    """:func:`default_prefetch` of counts read from disk on this machine: 2 with a free core or a GPU, else 0."""
    return 2 if _cpu_cores() > torch.get_num_threads() or torch.cuda.is_available() else 0


def _cpu_cores() -> int:
    """CPU cores this process may run on (its affinity where the system reports it)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class SubgraphDataLoader(AnnDataLoader):
    """:class:`~scvi.dataloaders.AnnDataLoader` whose minibatches are seed cells plus their k-hop subgraph.

    The seeds are row positions (:class:`~sslspatial.data._samplers.SeedPositions`, no AnnData field); the collate
    gathers the features of every subgraph node from the registry.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager` (its setup args name the graph and the number of hops).
    n_hops
        Hops of context per seed (the encoder's number of message-passing layers; 0 for MLPs).
    targets
        Optional per-observation arrays gathered per node (see :class:`SubgraphCollate`).
    locality
        Locality rank of every observation (:func:`locality_order`); with ``shuffle=True`` the training batches are
        consecutive runs of it (:class:`LocalityBatchSampler`) instead of uniformly random seeds.
    prefetch
        Minibatches built ahead in a background thread (:class:`~sslspatial.data._prefetch.Prefetcher`) while the
        model trains on the current one; ``None``: :func:`default_prefetch` (2 when the counts stay on disk and a CPU
        core is free for the thread, else 0). The batches are the same either way. Ignored with ``num_workers > 0``.
    value_check
        ``(where, likelihood)``: check the values of counts on disk as they are read (see :class:`SubgraphCollate`).
    **kwargs
        Passed to :class:`~scvi.dataloaders.AnnDataLoader` (``indices``, ``batch_size``, ``shuffle``, ...).

    Examples
    --------
    >>> loader = SubgraphDataLoader(model.adata_manager, n_hops=2, batch_size=256)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata_manager,
        n_hops: int = 0,
        targets: dict[str, np.ndarray] | None = None,
        locality: np.ndarray | None = None,
        prefetch: int | None = None,
        value_check: tuple[str, str] | None = None,
        **kwargs,
    ):
        if locality is not None and kwargs.get("shuffle"):
            indices = kwargs.get("indices")
            indices = np.arange(adata_manager.adata.n_obs) if indices is None else np.asarray(indices)
            sampler = ShardedLocalityBatchSampler if kwargs.pop("distributed_sampler", False) else LocalityBatchSampler
            kwargs["sampler"] = sampler(
                np.asarray(locality)[indices], kwargs.get("batch_size", 128), kwargs.get("drop_last", False)
            )
            kwargs["shuffle"] = False
        kwargs.setdefault("collate_fn", make_collate(adata_manager, n_hops, targets, value_check))
        kwargs.setdefault("data_and_attributes", {SEEDS_KEY: np.int64})
        super().__init__(SeedManager(adata_manager), **kwargs)  # seeds are row positions: no index column needed
        self.prefetch = int(default_prefetch(self.collate_fn) if prefetch is None else prefetch)

    def __iter__(self):
        """The batches, built ``prefetch`` ahead in a background thread when ``prefetch > 0`` (same batches)."""
        iterator = super().__iter__()
        if self.prefetch > 0 and self.num_workers == 0:
            return Prefetcher(iterator, self.prefetch)
        return iterator


class SubgraphDataSplitter(DataSplitter):
    """DataSplitter building :class:`SubgraphDataLoader` s.

    :class:`~scvi.dataloaders.DataSplitter` building :class:`SubgraphDataLoader` s (pass ``external_indexing`` for
    honest section-wise or spatial-block splits, see :mod:`sslspatial.data._splits`).

    Examples
    --------
    >>> model.train(datasplitter_kwargs={"external_indexing": [train, val, test]})  # doctest: +SKIP
    """

    data_loader_cls = SubgraphDataLoader
