"""Preprocessing: spatial graphs, sub-spot geometry, image patches."""

from ._graph import build_graph, degree_statistics

__all__ = ["build_graph", "degree_statistics"]
