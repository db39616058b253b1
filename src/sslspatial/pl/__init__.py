"""Plots of training, predictions and embeddings.

Built on matplotlib (usable beside squidpy / spatialdata-plot): every function returns the figure (or the axes passed
as ``ax=``) and writes a PNG when given ``save=``.
"""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "class_f1": "_annotation",
        "confusion_matrix": "_annotation",
        "embedding": "_embedding",
        "expression_maps": "_expression",
        "gene_correlations": "_correlations",
        "history": "_history",
        "superres_maps": "_superres",
    },
)
