"""Public input / output: write elements of a SpatialData to its zarr store without losing the old version."""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(__name__, attributes={"persist": "_persist"})
