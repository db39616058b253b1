"""Keep dependencies' FutureWarnings, deprecation noise and chatty loggers away from users of the package's calls."""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

_NOISY_MODULES = (
    "anndata",
    "spatialdata",
    "squidpy",
    "scvi",
    "lightning",
    "torch_geometric",
    "dask",
    "xarray",
    "numba",
    "geopandas",
    "ome_zarr",
    "zarr",
    "docrep",
)
_NOISY_LOGGERS = (
    "spatialdata",
    "spatialdata._logging",
    "scvi.data.fields._arraylike_field",
    "squidpy",
    "lightning.pytorch",
    "lightning.fabric",
    "ome_zarr",
)
_F = TypeVar("_F", bound=Callable)


def _install_filters() -> None:
    for module in _NOISY_MODULES:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning, SyntaxWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{module}(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ambiguous collection.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Transforming to str index.*")
    warnings.filterwarnings("ignore", message=".*zarr v3 autosharding.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def quiet_dependencies() -> None:
    """Silence dependencies' FutureWarning / DeprecationWarning globally (used by the command line)."""
    _install_filters()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Context in which dependencies' deprecation noise and INFO logs are hidden; our own warnings still show."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        _install_filters()
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def quiet_call(func: _F) -> _F:
    """Decorate a public function so that dependency noise raised inside it is not shown to the user."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with quiet():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
