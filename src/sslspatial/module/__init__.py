"""module."""

from ._pretrain import SpatialPretrainModule  # noqa: E402

__all__ = [*globals().get("__all__", []), "SpatialPretrainModule"]
