"""Public input / output.

Write a SpatialData to a new zarr store all or nothing, and elements of it to its store without losing the old
version; open a table with its counts left on disk and write tables in spatial order for out-of-core training.
"""

from .. import _attach

__getattr__, __dir__, __all__ = _attach(
    __name__,
    attributes={
        "persist": "_persist",
        "read_backed": "_backed",
        "sort_spatially": "_backed",
        "write": "_write",
    },
)
