"""Which rows a minibatch seeds, and in which order: row positions and the locality batch samplers.

:class:`SeedPositions` hands a loader the positions of its seed rows without reading an AnnData field, so setting a
model up writes no index column into the user's table. :func:`locality_order` ranks cells along a space-filling curve;
:class:`LocalityBatchSampler` (and its DDP shard :class:`ShardedLocalityBatchSampler`) cut training batches as runs of
that rank, so neighbouring seeds share their k-hop neighbourhoods.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from torch.utils.data import Dataset, DistributedSampler, Subset

#: Seed indices of a minibatch (scvi-tools' key); every other minibatch key is in ``_constants.REGISTRY_KEYS``.
SEEDS_KEY = REGISTRY_KEYS.INDICES_KEY


class SeedPositions(Dataset):
    """Row positions ``0 .. n_obs - 1`` as a dataset: ``dataset[rows]`` is ``{SEEDS_KEY: rows as an (n, 1) array}``.

    What scvi-tools' ``AnnTorchDataset`` returns for an obs column holding ``arange(n_obs)``, without the column.

    Examples
    --------
    >>> SeedPositions(5)[[3, 1]][SEEDS_KEY].ravel().tolist()
    [3, 1]
    """

    def __init__(self, n_obs: int):
        self.n_obs = int(n_obs)

    def __len__(self) -> int:
        return self.n_obs

    def __getitem__(self, rows) -> dict[str, np.ndarray]:
        return {SEEDS_KEY: np.asarray(rows, dtype=np.int64).reshape(-1, 1)}


class SeedManager:
    """A model's :class:`~scvi.data.AnnDataManager` whose torch dataset is :class:`SeedPositions` (rows ``indices``).

    Everything else is the manager's own; given to :class:`~scvi.dataloaders.AnnDataLoader`, which builds its
    dataset and samplers through ``create_torch_dataset``.
    """

    def __init__(self, manager: Any):
        self.manager = manager

    def __getattr__(self, name: str) -> Any:
        if name == "manager":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.manager, name)

    def create_torch_dataset(self, indices=None, data_and_attributes=None, load_sparse_tensor: bool = False):
        dataset = SeedPositions(self.manager.adata.n_obs)
        return dataset if indices is None else Subset(dataset, np.asarray(indices))


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
