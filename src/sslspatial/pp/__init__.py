"""Preprocessing: spatial graphs, neighbourhood features, sub-spot geometry, image patches and features."""

from ._aggregate import aggregate_neighbors
from ._graph import build_graph, degree_statistics
from ._image_features import add_image_features, image_features, register_backbone
from ._patches import crop_patches
from ._patches_sdata import extract_patches
from ._subspot_elements import subspots
from ._subspots import assign_to_subspots, make_subspot_shapes, subspot_offsets
from ._tissue import tissue_grid, tissue_mask

__all__ = [
    "add_image_features",
    "aggregate_neighbors",
    "assign_to_subspots",
    "build_graph",
    "crop_patches",
    "degree_statistics",
    "extract_patches",
    "image_features",
    "make_subspot_shapes",
    "register_backbone",
    "subspot_offsets",
    "subspots",
    "tissue_grid",
    "tissue_mask",
]
