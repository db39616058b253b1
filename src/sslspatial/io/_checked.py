"""The value check of counts on disk, done once per store: its result is kept in the attrs of the stored matrix.

A model built on a table opened with :func:`sslspatial.io.read_backed` checks its counts before training (non-negative
integers for a count likelihood, finite values for ``"gaussian"``, :func:`sslspatial._validate.check_counts`): one
streamed pass over every stored value. After a pass without error the result is written into the zarr attrs of the
matrix (``attrs["sslspatial_value_check"]``, with the consolidated metadata of the store rewritten when it had one),
keyed by a fingerprint of the matrix, so the next model on the same store skips the pass.

The fingerprint covers the shape, the number of stored values, their dtype, every row pointer (``indptr``) and 8
evenly spaced runs of 1,024 stored values. A store rewritten in place with exactly these unchanged but other values
elsewhere would skip the pass wrongly; those values are still caught: every minibatch's values are checked as they are
read (:class:`sslspatial.data.TileReader`, ``check=``), with the same error, when training or embedding meets them.
Stores that cannot be written (read-only, HDF5) are checked in full every time.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Attribute of the stored matrix that records a passed value check.
CHECK_ATTR = "sslspatial_value_check"
#: What each check covers: a count check passed implies a finite check passed.
_COVERS = {"counts": ("counts", "finite"), "finite": ("finite",)}


def _zarr_group(dataset: Any):
    group = getattr(dataset, "group", None)
    return group if group is not None and hasattr(group.get("data"), "vindex") else None


def fingerprint(dataset: Any) -> str | None:
    """A digest of a backed zarr CSR/CSC matrix that changes when its structure or sampled values change.

    ``None`` for a matrix that is not a zarr-backed sparse dataset.
    """
    group = _zarr_group(dataset)
    if group is None:
        return None
    data = group["data"]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(dataset.shape), tuple(data.shape), str(data.dtype))).encode())
    digest.update(np.ascontiguousarray(group["indptr"][:]).tobytes())
    n = int(data.shape[0])
    for start in np.unique(np.linspace(0, max(n - 1024, 0), 8).astype(np.int64)):
        digest.update(np.ascontiguousarray(data[int(start) : int(start) + 1024]).tobytes())
    return digest.hexdigest()


def passed_before(dataset: Any, kind: str) -> tuple[bool, str | None]:
    """``(whether a check of this kind passed on this exact matrix before, the matrix's fingerprint)``."""
    key = fingerprint(dataset)
    if key is None:
        return False, None
    record = dict(_zarr_group(dataset).attrs).get(CHECK_ATTR) or {}
    return kind in _COVERS.get(record.get("kind"), ()) and record.get("fingerprint") == key, key


def record_pass(dataset: Any, kind: str, key: str | None) -> None:
    """Write a passed check into the matrix's attrs (best effort: a store that cannot be written is left as it is)."""
    group = _zarr_group(dataset)
    if group is None or key is None:
        return
    try:
        import zarr

        store = group.store.with_read_only(False) if group.store.read_only else group.store
        writable = zarr.open_group(store=store, path=group.path, mode="r+", use_consolidated=False)
        writable.attrs[CHECK_ATTR] = {"kind": kind, "fingerprint": key}
        root = zarr.open_group(store=store, mode="r")
        if root.metadata.consolidated_metadata is not None:  # else readers would see the old attrs
            zarr.consolidate_metadata(store, zarr_format=root.metadata.zarr_format)
    except Exception as error:  # noqa: BLE001 - a cache: failing to write it only costs a pass next time
        logger.debug("Could not record the value check in the store: %s", error)
