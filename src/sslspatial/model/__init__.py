"""scvi-tools model classes (AnnData plumbing, train / save / load / get_*)."""

from ._hist2expr import Hist2Expr
from ._pretrain import SpatialPretrainModel
from ._superres import SUPERRES

__all__ = ["SUPERRES", "Hist2Expr", "SpatialPretrainModel"]
