"""The package logger; it follows ``scanpy.settings.verbosity``."""

from __future__ import annotations

import logging

logger = logging.getLogger("sslspatial")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False


def _sync_with_scanpy() -> None:
    """Set the logger level from scanpy's verbosity (0 error, 1 warning, 2 info, 3+ debug)."""
    try:
        import scanpy as sc

        verbosity = int(sc.settings.verbosity)
    except Exception:  # noqa: BLE001 - scanpy missing or odd verbosity: keep the default
        verbosity = 1
    level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(verbosity, logging.DEBUG)
    logger.setLevel(level)


def info(msg: str) -> None:
    """Log an informational message (shown at ``sc.settings.verbosity >= 2``)."""
    _sync_with_scanpy()
    logger.info(msg)


def warning(msg: str) -> None:
    """Log a warning (shown at ``sc.settings.verbosity >= 1``)."""
    _sync_with_scanpy()
    logger.warning(msg)
