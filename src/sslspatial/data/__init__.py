"""Data loading: k-hop subgraphs, collate functions, data splitters."""

from ._subgraph import Subgraph, khop_subgraph

__all__ = ["Subgraph", "khop_subgraph"]
