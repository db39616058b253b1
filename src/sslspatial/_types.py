"""Types shared by the public functions.

``DataLike`` is what every public function takes as its first argument: an AnnData or a SpatialData. spatialdata is
imported lazily (``import sslspatial`` stays fast), so at run time the alias is ``Any``; under a type checker and while
sphinx builds the documentation it is the union itself, so the API reference reads ``AnnData | SpatialData``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Union

__all__ = ["DataLike", "is_backed_sparse"]

if TYPE_CHECKING or "sphinx" in sys.modules:  # the documentation shows (and type checkers see) the real union
    from anndata import AnnData
    from spatialdata import SpatialData

    DataLike = Union[AnnData, SpatialData]  # noqa: UP007 (a runtime alias, not an annotation)
else:
    DataLike = Any


def is_backed_sparse(x: Any) -> bool:
    """Whether ``x`` is an anndata backed sparse dataset (zarr or HDF5), i.e. counts that stay on disk.

    Examples
    --------
    >>> import numpy as np
    >>> is_backed_sparse(np.zeros((2, 2)))
    False
    """
    from anndata.abc import CSCDataset, CSRDataset

    return isinstance(x, CSRDataset | CSCDataset)
