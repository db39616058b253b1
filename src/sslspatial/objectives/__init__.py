"""Self-supervised objectives and the fine-tuning head.

Self-supervised objectives: masked reconstruction (cells, entries, gene programmes, a cell type), Barlow Twins, BYOL,
k-means pseudo-label multi-task, and the supervised classification head used for fine-tuning.
"""

from .. import _attach

OBJECTIVES = ("mask", "barlow", "byol", "pseudolabel", "classify")

__getattr__, __dir__, _public = _attach(
    __name__,
    attributes={
        "BYOL": "_contrastive",
        "BarlowTwins": "_contrastive",
        "Classification": "_supervised",
        "Decoder": "_masking",
        "LIKELIHOODS": "_masking",
        "MaskedReconstruction": "_masking",
        "ObjectiveOutput": "_base",
        "PseudoLabelHeads": "_pseudolabel",
        "STRATEGIES": "_masking",
        "augment": "_contrastive",
        "balanced_class_weights": "_supervised",
        "barlow_twins_loss": "_contrastive",
        "byol_loss": "_contrastive",
        "kmeans_pseudolabels": "_pseudolabel",
        "mask_celltype": "_masking",
        "mask_cells": "_masking",
        "mask_entries": "_masking",
        "mask_programmes": "_masking",
        "masked_nll": "_masking",
        "n_clusters": "_pseudolabel",
        "restricted_cross_entropy": "_pseudolabel",
    },
)
__all__ = sorted([*_public, "OBJECTIVES"])
