"""Helpers shared by the subcommands: errors with exit codes, reading a store with clear messages, output checks.

Nothing here imports the scientific stack at module level, so that parsing the command line stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path


class CLIError(Exception):
    """A failure to report as one line on stderr; ``exit_code`` 1 for data errors, 2 for usage errors."""

    exit_code = 1


class UsageError(CLIError):
    """The command line itself is wrong (found after parsing, e.g. a reader argument the reader does not take)."""

    exit_code = 2


def one_line(error: BaseException) -> str:
    """The message of an exception on one line (whitespace collapsed), without the traceback."""
    text = str(error)
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]  # KeyError's str() adds quotes around the message
    text = re.sub(r"\s+", " ", text).strip()
    name = type(error).__name__
    if isinstance(error, CLIError):
        return text
    return f"{name}: {text}" if text else name


def names(value: str | None) -> list[str] | None:
    """Split a comma-separated option value into names (``None`` or empty gives ``None``)."""
    return [v for v in value.split(",") if v] if value else None


def devices(value: str):
    """``--devices``: an integer count or a Lightning devices string (``auto``, ``0,1``)."""
    return int(value) if value.isdigit() else value


def check_store_path(path: str | Path) -> Path:
    """Check that ``path`` is a zarr store (a folder with a zarr group), with a message naming the problem."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"no such zarr store: {str(path)!r} (write one with `sslspatial dataset NAME {path}`)")
    if not p.is_dir():
        raise CLIError(f"{str(path)!r} is a file, not a zarr store (a folder)")
    if not any((p / marker).is_file() for marker in ("zarr.json", ".zgroup", ".zattrs")):
        raise CLIError(
            f"{str(path)!r} is not a SpatialData zarr store (no zarr group in the folder; "
            f"write one with `sslspatial dataset NAME {path}`)"
        )
    return p


def read_store(path: str | Path, table_key: str | None = None):
    """Read a SpatialData zarr store; when ``table_key`` is given, check that the table exists.

    Raises
    ------
    CLIError
        When the path is missing, not a store, unreadable, or lacks the table.
    """
    p = check_store_path(path)
    import spatialdata as sd

    try:
        sdata = sd.read_zarr(p)
    except Exception as error:
        raise CLIError(f"cannot read {str(path)!r} as a SpatialData zarr store: {one_line(error)}") from error
    if table_key is not None:
        check_table(sdata, table_key, path)
    return sdata


def check_table(sdata, table_key: str, path: str | Path) -> None:
    """Raise a one-line error naming the tables present when ``table_key`` is not one of them."""
    if table_key not in sdata.tables:
        present = ", ".join(repr(k) for k in sdata.tables) or "none"
        raise CLIError(f"no table {table_key!r} in {str(path)!r} (its tables: {present}); pass --table-key")


def check_output_folder(path: str | Path | None, overwrite: bool, option: str) -> None:
    """Refuse, before any work, to write into an existing folder ``path`` without ``--overwrite``."""
    if path is not None and Path(path).exists() and not overwrite:
        raise CLIError(f"{option} {str(path)!r} exists already: pass --overwrite to replace it, or another folder")


def check_new_key(mapping, key: str, where: str, overwrite: bool) -> None:
    """Refuse, before any work, to replace ``mapping[key]`` without ``--overwrite``."""
    if key in mapping and not overwrite:
        raise CLIError(f"{where}[{key!r}] exists already: pass --overwrite to replace it, or another --key-added")
