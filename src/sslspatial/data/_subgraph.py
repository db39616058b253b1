"""Closed k-hop neighbourhoods cut from a CSR adjacency, for minibatch training of graph encoders."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp


class Subgraph(NamedTuple):
    """A k-hop subgraph around seed nodes.

    Attributes
    ----------
    nodes
        Global indices of the subgraph's nodes; the seeds come first, in the order given.
    edge_index
        ``(2, n_edges)`` int64 local indices, row 0 the source and row 1 the target (PyG's ``source_to_target``
        flow): messages flow from ``edge_index[0]`` into ``edge_index[1]``.
    edge_weight
        The adjacency value of each edge.
    n_seeds
        Number of seeds (the first ``n_seeds`` entries of ``nodes``).
    """

    nodes: np.ndarray
    edge_index: np.ndarray
    edge_weight: np.ndarray
    n_seeds: int


def khop_subgraph(adjacency: sp.spmatrix, seeds: np.ndarray, n_hops: int) -> Subgraph:
    """Cut the closed ``n_hops`` neighbourhood of ``seeds`` out of a sparse adjacency.

    Row ``i`` of ``adjacency`` lists the neighbours ``i`` receives messages from (squidpy's convention), so an edge
    ``j -> i`` exists where ``adjacency[i, j] != 0``. The node set is every node that can reach a seed in at most
    ``n_hops`` steps; the edges are all edges of the adjacency among those nodes (the induced subgraph), so ``n_hops``
    layers of message passing give the seeds exactly the outputs they would get on the full graph.

    Parameters
    ----------
    adjacency
        Square sparse adjacency (CSR is fastest; other formats are converted).
    seeds
        Global indices of the seed nodes (unique).
    n_hops
        Number of hops (>= 0); use the number of message-passing layers of the model.

    Returns
    -------
    The subgraph, with seeds first.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> path = sp.diags([1, 1], [-1, 1], shape=(5, 5), format="csr")  # 0 - 1 - 2 - 3 - 4
    >>> sub = khop_subgraph(path, np.array([2]), n_hops=1)
    >>> sub.nodes.tolist()
    [2, 1, 3]
    """
    if n_hops < 0:
        raise ValueError(f"n_hops must be >= 0, got {n_hops}.")
    adjacency = (
        adjacency if sp.isspmatrix_csr(adjacency) or isinstance(adjacency, sp.csr_array) else sp.csr_matrix(adjacency)
    )
    n = adjacency.shape[0]
    seeds = np.asarray(seeds, dtype=np.int64).ravel()
    if seeds.size and (seeds.min() < 0 or seeds.max() >= n):
        raise IndexError(f"seed indices must lie in [0, {n}).")
    visited = np.zeros(n, dtype=bool)
    visited[seeds] = True
    if visited.sum() != seeds.size:
        raise ValueError("seeds must be unique.")
    indptr, indices = adjacency.indptr, adjacency.indices
    layers, frontier = [seeds], seeds
    for _ in range(n_hops):
        if frontier.size == 0:
            break
        starts, ends = indptr[frontier], indptr[frontier + 1]
        neighbours = indices[_ranges(starts, ends)]
        new = np.unique(neighbours[~visited[neighbours]])
        visited[new] = True
        layers.append(new)
        frontier = new
    nodes = np.concatenate(layers)
    induced = adjacency[nodes][:, nodes].tocoo()
    edge_index = np.vstack([induced.col, induced.row]).astype(np.int64)
    return Subgraph(nodes=nodes, edge_index=edge_index, edge_weight=np.asarray(induced.data), n_seeds=int(seeds.size))


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, e)`` for each pair, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets
