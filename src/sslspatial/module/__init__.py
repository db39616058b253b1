"""module."""

from ._pretrain import SpatialPretrainModule  # noqa: E402

__all__ = [*globals().get("__all__", []), "SpatialPretrainModule"]

from ._hist2expr import Hist2ExprModule  # noqa: E402

__all__ = [*globals().get("__all__", []), "Hist2ExprModule"]
