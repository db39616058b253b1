"""scvi-tools model classes (AnnData plumbing, train / save / load / get_*)."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "SUPERRES": "_superres",
        "Hist2Expr": "_hist2expr",
        "ImageEncoder": "_image_encoder",
        "SpatialPretrainModel": "_pretrain",
    },
)
