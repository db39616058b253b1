"""scvi-tools model classes (AnnData plumbing, train / save / load / get_*)."""

import logging

from .. import _attach

# scvi sets its seed on import, and Lightning logs "Seed set to 0" for it: nothing a user can act on
# (`sslspatial --debug` and ss._warnings.set_verbose(True) show it again).
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "SUPERRES": "_superres",
        "Hist2Expr": "_hist2expr",
        "ImageEncoder": "_image_encoder",
        "SpatialPretrainModel": "_pretrain",
    },
)
