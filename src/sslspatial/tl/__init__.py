"""Tools: self-supervised pretraining, annotation, histology-to-expression, super-resolution."""

__all__: list[str] = []

from ._domains import domains

__all__ += ["domains"]

from ._superres import superres

__all__ += ["superres"]

from ._annotate import annotate, transfer  # noqa: E402
from ._pretrain import pretrain_contrastive, pretrain_mask, pretrain_pseudolabel  # noqa: E402

__all__ += ["annotate", "pretrain_contrastive", "pretrain_mask", "pretrain_pseudolabel", "transfer"]

from ._hist2expr import hist2expr  # noqa: E402

__all__ += ["hist2expr"]
