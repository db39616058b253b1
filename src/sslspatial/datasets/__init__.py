"""Synthetic tissue with ground truth, and readers of real public datasets."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "cite_seq_skin": "_readers",
        "cosmx_lung_mini": "_readers",
        "her2st": "_readers",
        "osmfish": "_readers",
        "starmap_mpfc": "_readers",
        "synthetic_tissue": "_synthetic",
        "visium_dg_mini": "_readers",
    },
)
