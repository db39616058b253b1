"""Data loading: k-hop subgraphs, subgraph and patch loaders, data splitters and honest splits."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "LocalityBatchSampler": "_samplers",
        "PatchSection": "_patch_loader",
        "PatchSource": "_patch_loader",
        "PatchWindowSplitter": "_patch_loader",
        "ShardedLocalityBatchSampler": "_samplers",
        "Split": "_splits",
        "Subgraph": "_subgraph",
        "SubgraphCollate": "_loaders",
        "SubgraphDataLoader": "_loaders",
        "SubgraphDataSplitter": "_loaders",
        "TileReader": "_tiles",
        "WindowDataset": "_patch_loader",
        "buffer_split": "_splits",
        "default_batch_size": "_loaders",
        "half_split": "_splits",
        "khop_subgraph": "_subgraph",
        "locality_order": "_samplers",
        "section_split": "_splits",
        "spatial_block_split": "_splits",
    },
)
