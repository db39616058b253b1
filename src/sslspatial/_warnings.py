"""Keep dependencies' FutureWarnings, deprecation noise and chatty loggers away from users of the package's calls."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from types import FrameType
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
_NOISY_LOGGERS = (  # parents and the children that log the noise (a child's own level would win over its parent's)
    "spatialdata",
    "spatialdata._logging",
    "scvi",
    "scvi.data._download",  # "File .../model.pt already downloaded" on every load of a local model
    "scvi.data.fields._arraylike_field",
    "scvi.model.base._save_load",
    "lightning.fabric.utilities.seed",  # "Seed set to 0" whenever scvi.settings.seed is set
    "squidpy",
    "lightning.pytorch",
    "lightning.pytorch.utilities.rank_zero",  # "GPU available: ...", "TPU available: ...", the litlogger tip
    "lightning.fabric",
    "lightning.fabric.utilities.rank_zero",
    "ome_zarr",
)
_NOISY_MESSAGES = (  # Lightning / torch warnings raised on every small training run; nothing the user can act on
    ".*ambiguous collection.*",
    ".*does not have many workers.*",
    ".*Transforming to str index.*",
    ".*zarr v3 autosharding.*",
    ".*smaller than the logging interval.*",
    ".*Trying to infer the `batch_size`.*",
    ".*LeafSpec.*",
    ".*litlogger.*",
    ".*Last batch will have.*",
)
_F = TypeVar("_F", bound=Callable)
_VERBOSE = False  # set by `sslspatial --debug` (or set_verbose): every warning and log line is shown


def set_verbose(verbose: bool = True) -> None:
    """Show every dependency warning and log line (``sslspatial --debug`` does this); ``False`` restores the filters.

    Also on while ``scanpy.settings.verbosity`` is 3 (debug) or more.
    """
    global _VERBOSE
    _VERBOSE = bool(verbose)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.NOTSET if verbose else logging.WARNING)


def _verbose() -> bool:
    if _VERBOSE:
        return True
    scanpy = sys.modules.get("scanpy")  # only when the user imported it: never import it here
    try:
        return scanpy is not None and int(scanpy.settings.verbosity) >= 3
    except Exception:  # noqa: BLE001 - an odd verbosity value: stay quiet
        return False


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_FOREIGN_REGISTRY: dict = {}  # "once per location" bookkeeping of re-shown dependency warnings


def _install_filters() -> None:
    for module in _NOISY_MODULES:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning, SyntaxWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{module}(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)
    for message in _NOISY_MESSAGES:
        warnings.filterwarnings("ignore", message=message)


def quiet_dependencies() -> None:
    """Silence dependencies' FutureWarning / DeprecationWarning globally, for the whole process (the command line).

    Library code uses :func:`quiet` instead, which restores every filter and logger level it touched.
    """
    if _verbose():
        return
    _install_filters()
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Raise the noisy loggers to WARNING for the duration of the block, then put back the levels they had."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Context in which dependencies' deprecation noise and INFO logs are hidden; our own warnings still show.

    The one helper every model's ``train`` and ``load`` run in (see :mod:`sslspatial.model._console`): it hides
    Lightning's device banner ("GPU available", "TPU available"), the litlogger tip, torch's ``LeafSpec``
    deprecation, "Trying to infer the `batch_size`", "number of training batches is smaller than the logging
    interval" and scvi's "File ... already downloaded" on loading a local model. Warning filters and the level of
    every logger it touches are restored on exit, also when the block raises.
    """
    if _verbose():
        yield
        return
    with warnings.catch_warnings(), _quiet_loggers():
        _install_filters()
        yield


def _outside_caller(frame: FrameType | None) -> FrameType | None:
    """Return the first frame, from ``frame`` outwards, whose code is not in the sslspatial package."""
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return frame


def _in_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _warn_at(message: Warning | str, category: type[Warning], frame: FrameType | None) -> None:
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    warnings.warn_explicit(
        message,
        category,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=frame.f_globals.get("__name__"),
        registry=frame.f_globals.setdefault("__warningregistry__", {}),
        module_globals=frame.f_globals,
    )


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Emit a warning attributed to the user's line: the innermost caller outside the sslspatial package.

    A fixed ``stacklevel`` breaks as soon as a public function is wrapped or calls another one; this walks the stack
    instead (what ``skip_file_prefixes`` does on Python >= 3.12).
    """
    _warn_at(message, category, _outside_caller(sys._getframe(1)))


def _reemit(caught: list[warnings.WarningMessage], caller: FrameType | None) -> None:
    """Show warnings recorded inside a public call; ours are attributed to the caller's line, others unchanged."""
    for w in caught:
        if _in_package(w.filename) and caller is not None:
            _warn_at(w.message, w.category, caller)
        else:
            warnings.warn_explicit(
                w.message, w.category, w.filename, w.lineno or 0, registry=_FOREIGN_REGISTRY, source=w.source
            )


def quiet_call(func: _F) -> _F:
    """Decorate a public function so that dependency noise raised inside it is not shown to the user.

    Warnings that remain (the package's own, and dependencies' warnings that are not deprecation noise) are shown
    after the call returns or raises; those issued from inside the package are attributed to the line that called
    the package (the user's line), whatever ``stacklevel`` they were issued with.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if _verbose():
            return func(*args, **kwargs)
        caller = _outside_caller(sys._getframe(1))
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught, _quiet_loggers():
                _install_filters()
                return func(*args, **kwargs)
        finally:
            _reemit(caught, caller)
            del caller

    return wrapper  # type: ignore[return-value]
