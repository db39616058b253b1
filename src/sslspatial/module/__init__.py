"""scvi-tools modules (torch math; no AnnData in here)."""

from ._hist2expr import Hist2ExprModule
from ._pretrain import SpatialPretrainModule

__all__ = ["Hist2ExprModule", "SpatialPretrainModule"]
