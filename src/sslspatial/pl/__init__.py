"""Plots of training, predictions and embeddings.

Built on matplotlib (usable beside squidpy / spatialdata-plot): every function returns the figure (or the axes passed
as ``ax=``) and writes a PNG when given ``save=``.
"""

from ._annotation import class_f1, confusion_matrix
from ._correlations import gene_correlations
from ._embedding import embedding
from ._expression import expression_maps
from ._history import history
from ._superres import superres_maps

__all__: list[str] = [
    "class_f1",
    "confusion_matrix",
    "embedding",
    "expression_maps",
    "gene_correlations",
    "history",
    "superres_maps",
]
