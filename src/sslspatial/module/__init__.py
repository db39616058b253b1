"""scvi-tools modules (torch math; no AnnData in here)."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "Hist2ExprModule": "_hist2expr",
        "SpatialPretrainModule": "_pretrain",
        "SuperResModule": "_superres",
    },
)
