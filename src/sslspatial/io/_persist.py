"""``ss.io.persist``: the crash-safe writer lives beside the AnnData / SpatialData adapter in ``sslspatial._io``."""

from .._io import persist

__all__ = ["persist"]
