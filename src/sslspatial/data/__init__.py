"""Data loading: k-hop subgraphs, collate functions, data splitters."""

from ._subgraph import Subgraph, khop_subgraph

__all__ = ["Subgraph", "khop_subgraph"]

from ._loaders import SubgraphCollate, SubgraphDataLoader, SubgraphDataSplitter  # noqa: E402
from ._splits import Split, buffer_split, half_split, section_split, spatial_block_split  # noqa: E402

__all__ += [
    "SubgraphCollate",
    "SubgraphDataLoader",
    "SubgraphDataSplitter",
    "Split",
    "buffer_split",
    "half_split",
    "section_split",
    "spatial_block_split",
]

from ._patch_loader import PatchSection, PatchSource, PatchWindowSplitter, WindowDataset  # noqa: E402

__all__ += ["PatchSection", "PatchSource", "PatchWindowSplitter", "WindowDataset"]
