"""Preprocessing: spatial graphs, neighbourhood features, sub-spot geometry, image patches and features."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "add_image_features": "_image_features",
        "aggregate_neighbors": "_aggregate",
        "assign_to_subspots": "_subspots",
        "build_graph": "_graph",
        "crop_patches": "_patches",
        "degree_statistics": "_graph",
        "extract_patches": "_patches_sdata",
        "image_features": "_image_features",
        "load_backbone": "_backbones",
        "make_subspot_shapes": "_subspots",
        "nuclei_image": "_subspot_elements",
        "pearson_residuals": "_normalize",
        "pseudo_spots": "_subspot_elements",
        "register_backbone": "_backbones",
        "subspot_offsets": "_subspots",
        "subspots": "_subspot_elements",
        "tissue_grid": "_tissue",
        "tissue_mask": "_tissue",
    },
)
