"""Subgraph collate and honest splits against brute force."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from sslspatial.data import (
    Split,
    SubgraphCollate,
    buffer_split,
    half_split,
    khop_subgraph,
    section_split,
    spatial_block_split,
)


def _random_graph(n=300, p=0.02, seed=0):
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=p, random_state=seed, format="csr")
    a = ((a + a.T) > 0).astype(np.float32).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    return a, rng


def test_collate_matches_khop_subgraph_and_gathers_features():
    adj, rng = _random_graph()
    x = sp.csr_matrix(rng.poisson(1.0, (adj.shape[0], 5)).astype(np.float32))
    labels = rng.integers(0, 3, adj.shape[0])
    collate = SubgraphCollate(x, adj, n_hops=2, targets={"labels": labels})
    seeds = np.array([4, 100, 7])
    batch = collate({"ind_x": seeds[:, None]})
    ref = khop_subgraph(adj, seeds, 2)
    nodes = batch["x"].shape[0]
    assert nodes == ref.nodes.size and int(batch["n_seeds"]) == 3
    assert torch.equal(batch["ind_x"], torch.as_tensor(seeds))
    got_nodes = ref.nodes  # same node set and order rule: seeds first, then hop by hop
    np.testing.assert_array_equal(np.sort(got_nodes[:3]), np.sort(seeds))
    sub_nodes, edge_index = collate.subgraph(seeds)
    assert set(map(tuple, sub_nodes[edge_index].T)) == set(map(tuple, ref.nodes[ref.edge_index].T))
    np.testing.assert_array_equal(batch["x"].numpy(), x[sub_nodes].toarray())
    np.testing.assert_array_equal(batch["target_labels"].numpy(), labels[sub_nodes])
    np.testing.assert_array_equal(batch["degree"].numpy(), np.diff(adj.indptr)[sub_nodes])
    # every edge target -> source exists in the adjacency (row = receiver)
    dense = adj.toarray()
    assert all(dense[sub_nodes[t], sub_nodes[s]] for s, t in edge_index.T)
    # lookup table reset: a second call gives the same answer
    np.testing.assert_array_equal(collate.subgraph(seeds)[0], sub_nodes)


def test_collate_without_graph_returns_seeds_only():
    collate = SubgraphCollate(np.arange(12, dtype=np.float32).reshape(4, 3), None, n_hops=2)
    batch = collate({"ind_x": np.array([[2], [0]])})
    np.testing.assert_array_equal(batch["x"].numpy(), [[6, 7, 8], [0, 1, 2]])
    assert batch["edge_index"].shape == (2, 0)


def test_section_and_half_splits():
    split = section_split(["a", "b", "a", "c"], ["b", "c"])
    assert split.train.tolist() == [0, 2] and split.test.tolist() == [1, 3]
    xy = np.array([[0.0, 5], [1, 5], [8, 5], [9, 5]])
    assert half_split(xy).test.tolist() == [2, 3]


def test_spatial_blocks_hold_out_whole_blocks_per_section():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (400, 2))
    sections = np.repeat(["s1", "s2"], 200)
    split = spatial_block_split(xy, sections, block_size=25.0, test_fraction=0.25, seed=1)
    assert np.intersect1d(split.train, split.test).size == 0 and split.train.size + split.test.size == 400
    for s in ("s1", "s2"):
        in_s = sections == s
        lo = xy[in_s].min(0)  # blocks are anchored at each section's corner
        block = (np.floor((xy[:, 0] - lo[0]) / 25) * 10 + np.floor((xy[:, 1] - lo[1]) / 25)).astype(int)
        test_blocks = set(block[split.test][in_s[split.test]])
        train_blocks = set(block[split.train][in_s[split.train]])
        assert test_blocks and not test_blocks & train_blocks


def test_buffer_split_removes_cells_near_test_cells_brute_force():
    adj, _ = _random_graph(n=80, p=0.05, seed=2)
    split = Split(np.arange(0, 60), np.arange(60, 80))
    out = buffer_split(split, adj, 2)
    dense = adj.toarray() > 0
    reach = np.eye(80, dtype=bool) | dense
    reach2 = (reach.astype(int) @ reach.astype(int)) > 0
    near = reach2[:, 60:].any(1)
    np.testing.assert_array_equal(out.train, np.arange(60)[~near[:60]])


def test_locality_batches_cover_every_seed_once_and_shrink_subgraphs():
    from scipy.spatial import cKDTree

    from sslspatial.data import LocalityBatchSampler, SubgraphCollate, locality_order

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (3000, 2))
    pairs = cKDTree(xy).query_pairs(2.5, output_type="ndarray")  # mean degree about 6
    i, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    adj = sp.csr_matrix((np.ones(i.size), (i, j)), shape=(3000, 3000))
    for rank in (locality_order(coordinates=xy), locality_order(adjacency=adj)):
        np.testing.assert_array_equal(np.sort(rank), np.arange(3000))  # a permutation
        sampler = LocalityBatchSampler(rank, batch_size=256)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 12
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(3000))  # every seed once
        collate = SubgraphCollate(np.zeros((3000, 1), dtype=np.float32), adj, n_hops=2)
        local = np.mean([collate.subgraph(np.asarray(b))[0].size for b in batches if len(b) == 256])
        random = np.mean([collate.subgraph(rng.choice(3000, 256, replace=False))[0].size for _ in range(10)])
        assert local < 0.5 * random  # neighbouring seeds share their 2-hop neighbourhoods
    # Z-order: cells close in space are close in the order
    np.testing.assert_array_equal(locality_order(np.array([[0.0, 0.0], [10, 10], [0.1, 0], [9.9, 10]])), [0, 3, 1, 2])
