from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.utils import k_hop_subgraph as pyg_k_hop_subgraph

from sslspatial.data import khop_subgraph


def _random_graph(n=200, p=0.02, seed=0, symmetric=False):
    rng = np.random.default_rng(seed)
    adj = sp.random(n, n, density=p, random_state=seed, format="csr")
    adj.data[:] = rng.uniform(0.5, 2.0, adj.nnz)
    adj.setdiag(0)
    adj.eliminate_zeros()
    return (adj.maximum(adj.T).tocsr() if symmetric else adj), rng


def _brute_force_nodes(adj, seeds, k):
    dense = adj.toarray() != 0
    reach = set(seeds.tolist())
    frontier = set(reach)
    for _ in range(k):
        frontier = {j for i in frontier for j in np.flatnonzero(dense[i])} - reach
        reach |= frontier
    return reach


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_matches_brute_force_and_pyg(k, symmetric):
    adj, rng = _random_graph(symmetric=symmetric)
    seeds = rng.choice(adj.shape[0], size=7, replace=False)
    sub = khop_subgraph(adj, seeds, k)
    # seeds first, in order; nodes unique
    assert sub.nodes[: sub.n_seeds].tolist() == seeds.tolist()
    assert len(set(sub.nodes.tolist())) == len(sub.nodes)
    assert set(sub.nodes.tolist()) == _brute_force_nodes(adj, seeds, k)
    # edges are exactly the induced edges j -> i with adj[i, j] != 0, with their weights
    got = {(sub.nodes[s], sub.nodes[t]): w for s, t, w in zip(*sub.edge_index, sub.edge_weight, strict=True)}
    node_set = set(sub.nodes.tolist())
    coo = adj.tocoo()
    expected = {
        (j, i): w for i, j, w in zip(coo.row, coo.col, coo.data, strict=True) if i in node_set and j in node_set
    }
    assert got == pytest.approx(expected)
    # PyG: edge_index rows are (source=j, target=i) with flow source_to_target
    pyg_edges = torch.as_tensor(np.vstack([coo.col, coo.row]), dtype=torch.long)
    subset, *_ = pyg_k_hop_subgraph(torch.as_tensor(seeds), k, pyg_edges, num_nodes=adj.shape[0])
    assert set(subset.tolist()) == node_set


def test_message_passing_on_subgraph_equals_full_graph():
    from torch_geometric.nn import GCNConv

    adj, rng = _random_graph(symmetric=True, p=0.03)
    x = torch.randn(adj.shape[0], 5)
    convs = [GCNConv(5, 5), GCNConv(5, 5)]
    coo = adj.tocoo()
    full_edges = torch.as_tensor(np.vstack([coo.col, coo.row]), dtype=torch.long)

    def run(h, edges):
        for conv in convs:
            h = torch.relu(conv(h, edges))
        return h

    seeds = rng.choice(adj.shape[0], size=10, replace=False)
    sub = khop_subgraph(adj, seeds, 2)
    full = run(x, full_edges)[torch.as_tensor(seeds)]
    local = run(x[torch.as_tensor(sub.nodes)], torch.as_tensor(sub.edge_index))[: sub.n_seeds]
    torch.testing.assert_close(local, full)


def test_bad_input():
    adj, _ = _random_graph()
    with pytest.raises(ValueError, match="unique"):
        khop_subgraph(adj, np.array([1, 1]), 1)
    with pytest.raises(IndexError):
        khop_subgraph(adj, np.array([10_000]), 1)
    with pytest.raises(ValueError, match="n_hops"):
        khop_subgraph(adj, np.array([1]), -1)
