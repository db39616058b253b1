"""Self-supervised objectives and the fine-tuning head.

Self-supervised objectives: masked reconstruction (cells, entries, gene programmes, a cell type), Barlow Twins, BYOL,
k-means pseudo-label multi-task, and the supervised classification head used for fine-tuning.
"""

from ._base import ObjectiveOutput
from ._contrastive import BYOL, BarlowTwins, augment, barlow_twins_loss, byol_loss
from ._masking import (
    LIKELIHOODS,
    STRATEGIES,
    Decoder,
    MaskedReconstruction,
    mask_cells,
    mask_celltype,
    mask_entries,
    mask_programmes,
    masked_nll,
)
from ._pseudolabel import PseudoLabelHeads, kmeans_pseudolabels, n_clusters, restricted_cross_entropy
from ._supervised import Classification, balanced_class_weights

OBJECTIVES = ("mask", "barlow", "byol", "pseudolabel", "classify")

__all__ = [
    "BYOL",
    "BarlowTwins",
    "Classification",
    "Decoder",
    "LIKELIHOODS",
    "MaskedReconstruction",
    "OBJECTIVES",
    "ObjectiveOutput",
    "PseudoLabelHeads",
    "STRATEGIES",
    "augment",
    "balanced_class_weights",
    "barlow_twins_loss",
    "byol_loss",
    "kmeans_pseudolabels",
    "mask_celltype",
    "mask_cells",
    "mask_entries",
    "mask_programmes",
    "masked_nll",
    "n_clusters",
    "restricted_cross_entropy",
]
