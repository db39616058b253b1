"""Synthetic tissue with ground truth, and readers of real public datasets."""

from ._readers import cite_seq_skin, cosmx_lung_mini, her2st, osmfish, starmap_mpfc, visium_dg_mini
from ._synthetic import synthetic_tissue

__all__ = [
    "cite_seq_skin",
    "cosmx_lung_mini",
    "her2st",
    "osmfish",
    "starmap_mpfc",
    "synthetic_tissue",
    "visium_dg_mini",
]
