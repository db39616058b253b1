"""Data loading: k-hop subgraphs, subgraph and patch loaders, data splitters and honest splits."""

from ._loaders import SubgraphCollate, SubgraphDataLoader, SubgraphDataSplitter
from ._patch_loader import PatchSection, PatchSource, PatchWindowSplitter, WindowDataset
from ._splits import Split, buffer_split, half_split, section_split, spatial_block_split
from ._subgraph import Subgraph, khop_subgraph

__all__ = [
    "PatchSection",
    "PatchSource",
    "PatchWindowSplitter",
    "Split",
    "Subgraph",
    "SubgraphCollate",
    "SubgraphDataLoader",
    "SubgraphDataSplitter",
    "WindowDataset",
    "buffer_split",
    "half_split",
    "khop_subgraph",
    "section_split",
    "spatial_block_split",
]
