"""Tools: self-supervised pretraining, annotation, spatial domains, histology-to-expression, super-resolution."""

from ._annotate import annotate, transfer
from ._domains import domains
from ._hist2expr import hist2expr
from ._pretrain import pretrain_contrastive, pretrain_mask, pretrain_pseudolabel
from ._superres import superres

__all__ = [
    "annotate",
    "domains",
    "hist2expr",
    "pretrain_contrastive",
    "pretrain_mask",
    "pretrain_pseudolabel",
    "superres",
    "transfer",
]
