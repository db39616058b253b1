"""model."""

from ._superres import SUPERRES

__all__ = [*globals().get("__all__", []), "SUPERRES"]

from ._pretrain import SpatialPretrainModel  # noqa: E402

__all__ = [*globals().get("__all__", []), "SpatialPretrainModel"]

from ._hist2expr import Hist2Expr  # noqa: E402

__all__ = [*globals().get("__all__", []), "Hist2Expr"]
