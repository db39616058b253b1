"""Tools: self-supervised pretraining, annotation, spatial domains, histology-to-expression, super-resolution."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "annotate": "_annotate",
        "domains": "_domains",
        "hist2expr": "_hist2expr",
        "map_query": "_map_query",
        "pretrain_contrastive": "_pretrain_contrastive",
        "pretrain_image": "_pretrain_image",
        "pretrain_mask": "_pretrain",
        "pretrain_pseudolabel": "_pretrain",
        "superres": "_superres",
        "transfer": "_annotate",
    },
)
