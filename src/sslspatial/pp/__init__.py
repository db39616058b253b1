"""Preprocessing: spatial graphs, sub-spot geometry, image patches."""

from ._graph import build_graph, degree_statistics

__all__ = ["build_graph", "degree_statistics"]

from ._aggregate import aggregate_neighbors

__all__ += ["aggregate_neighbors"]

from ._image_features import add_image_features, image_features, register_backbone
from ._patches import crop_patches, extract_patches

__all__ += ["add_image_features", "crop_patches", "extract_patches", "image_features", "register_backbone"]

from ._subspot_elements import subspots

__all__ += ["subspots"]

from ._tissue import tissue_grid, tissue_mask  # noqa: E402

__all__ += ["tissue_grid", "tissue_mask"]
