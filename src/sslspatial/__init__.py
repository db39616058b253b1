"""sslspatial: self-supervised and generative deep learning for spatial omics on SpatialData."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, pp, tl

try:
    __version__ = version("sslspatial")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["datasets", "pl", "pp", "tl", "__version__"]
