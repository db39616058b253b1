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
from torch.utils.data import DistributedSampler

from .._constants import REGISTRY_KEYS as KEYS
from ._subgraph import _ranges
from ._tiles import TileReader, is_backed_sparse

#: Seed indices of a minibatch (scvi-tools' key); every other minibatch key is in ``_constants.REGISTRY_KEYS``.
SEEDS_KEY = REGISTRY_KEYS.INDICES_KEY


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
    ):
        if is_backed_sparse(x):
            x = TileReader(x)
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


def locality_order(coordinates: np.ndarray | None = None, adjacency: sp.spmatrix | None = None) -> np.ndarray:
    """Rank of every cell along a space-filling curve, so that consecutive cells are spatial neighbours.

    Z-order (Morton) code of ``coordinates`` (16 bits per axis) when given, else the reverse Cuthill-McKee order of
    ``adjacency``. Seeds taken as consecutive chunks of this order share most of their k-hop neighbourhoods, so a
    minibatch subgraph is a little larger than the batch instead of about ``(1 + degree) ** k`` times larger.

    Examples
    --------
    >>> locality_order(np.array([[0.0, 0.0], [10.0, 10.0], [0.1, 0.0], [9.9, 10.0]])).tolist()
    [0, 3, 1, 2]
    """
    if coordinates is not None:
        xy = np.asarray(coordinates, dtype=np.float64)[:, :2]
        span = max(float(np.ptp(xy, axis=0).max()), 1e-12)
        q = np.floor((xy - xy.min(0)) / span * 65535).astype(np.int64)
        code = np.zeros(len(xy), dtype=np.int64)
        for bit in range(16):
            code |= ((q[:, 0] >> bit) & 1) << (2 * bit) | ((q[:, 1] >> bit) & 1) << (2 * bit + 1)
        order = np.argsort(code, kind="stable")
    else:
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        order = reverse_cuthill_mckee(sp.csr_matrix(adjacency), symmetric_mode=True).astype(np.int64)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


class LocalityBatchSampler:
    """Batches of positions that are consecutive in a locality order; a new random offset and batch order per epoch.

    Parameters
    ----------
    rank
        Locality rank (:func:`locality_order`) of every position of the loader's dataset.
    batch_size
        Positions per batch.
    drop_last
        Drop a last incomplete batch.

    Examples
    --------
    >>> batches = list(LocalityBatchSampler(np.array([3, 0, 2, 1]), batch_size=2))
    >>> sorted(sorted(b) for b in batches) in ([[0, 2], [1, 3]], [[0, 1], [2, 3]])
    True
    """

    def __init__(self, rank: np.ndarray, batch_size: int, drop_last: bool = False):
        self.order = np.argsort(np.asarray(rank), kind="stable")
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = self.order.size
        return n // self.batch_size if self.drop_last else int(np.ceil(n / self.batch_size))

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on distributed samplers; nothing to do here
        """Accept the epoch number (the offset and batch order come from torch's random state)."""

    def __iter__(self):
        n = self.order.size
        order = (
            np.roll(self.order, -int(torch.randint(self.batch_size, ()).item())) if n > self.batch_size else self.order
        )
        starts = np.arange(0, n, self.batch_size)
        if self.drop_last:
            starts = starts[starts + self.batch_size <= n]
        for b in torch.randperm(starts.size).tolist():
            yield order[starts[b] : starts[b] + self.batch_size].tolist()


class ShardedLocalityBatchSampler(LocalityBatchSampler, DistributedSampler):
    """:class:`LocalityBatchSampler` for DDP: every process trains on its own contiguous shard of the locality order.

    Process ``r`` of ``W`` gets positions ``r * n // W`` to ``(r + 1) * n // W`` of the Z-order, so with a table
    whose counts stay on disk it only ever reads its own spatial tiles (plus their halo). Every process yields the
    same number of batches (``ceil(ceil(n / W) / batch_size)``, nearly equal sizes), as DDP requires; over the
    processes every position comes once per epoch. A :class:`~torch.utils.data.DistributedSampler`, so Lightning
    leaves it in place.

    Parameters
    ----------
    rank
        Locality rank of every position (:func:`locality_order`).
    batch_size
        Positions per batch (at most).
    num_replicas, process_rank
        World size and this process's rank (default: from :mod:`torch.distributed`).

    Examples
    --------
    >>> shards = [list(ShardedLocalityBatchSampler(np.arange(10), 2, num_replicas=2, process_rank=r)) for r in (0, 1)]
    >>> sorted(i for shard in shards for batch in shard for i in batch) == list(range(10)), len(shards[0])
    (True, 3)
    """

    def __init__(
        self,
        rank: np.ndarray,
        batch_size: int,
        drop_last: bool = False,
        num_replicas: int | None = None,
        process_rank: int | None = None,
    ):
        LocalityBatchSampler.__init__(self, rank, batch_size, drop_last)
        if num_replicas is None or process_rank is None:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
            num_replicas = dist.get_world_size() if ready else 1
            process_rank = dist.get_rank() if ready else 0
        self.num_replicas, self.process_rank, self.epoch = int(num_replicas), int(process_rank), 0
        n = self.order.size
        self.shard = self.order[process_rank * n // num_replicas : (process_rank + 1) * n // num_replicas]
        self.n_batches = max(1, int(np.ceil(np.ceil(n / num_replicas) / self.batch_size)))

    def __len__(self) -> int:
        return self.n_batches

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (seeds this process's offset and batch order)."""
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**31 + 7919 * self.epoch)
        shard = self.shard
        if shard.size > self.batch_size:
            shard = np.roll(shard, -int(torch.randint(shard.size, (), generator=generator)))
        batches = np.array_split(shard, self.n_batches)
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[b].tolist()


def make_collate(adata_manager, n_hops: int = 0, targets: dict[str, np.ndarray] | None = None) -> SubgraphCollate:
    """Build the collate of a model's data.

    Features from the registry, graph from ``obsp[connectivity_key]`` (a setup
    argument of the model).
    """
    setup = adata_manager.registry["setup_args"]
    x = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    key = setup.get("connectivity_key")
    adjacency = adata_manager.adata.obsp[key] if (n_hops > 0 and key is not None) else None
    return SubgraphCollate(x, adjacency, n_hops, targets)


class SubgraphDataLoader(AnnDataLoader):
    """:class:`~scvi.dataloaders.AnnDataLoader` whose minibatches are seed cells plus their k-hop subgraph.

    Only the seed indices are read through the registry; the collate gathers the features of every subgraph node.

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
        kwargs.setdefault("collate_fn", make_collate(adata_manager, n_hops, targets))
        kwargs.setdefault("data_and_attributes", {SEEDS_KEY: np.int64})
        super().__init__(adata_manager, **kwargs)


class SubgraphDataSplitter(DataSplitter):
    """DataSplitter building :class:`SubgraphDataLoader` s.

    :class:`~scvi.dataloaders.DataSplitter` building :class:`SubgraphDataLoader` s (pass ``external_indexing`` for
    honest section-wise or spatial-block splits, see :mod:`sslspatial.data._splits`).

    Examples
    --------
    >>> model.train(datasplitter_kwargs={"external_indexing": [train, val, test]})  # doctest: +SKIP
    """

    data_loader_cls = SubgraphDataLoader
