"""Every key the package reads or writes, in one place.

Keys follow squidpy where squidpy defines them (so ``sq.gr.*`` and ``sq.pl.*`` work on our results) and are valid
SpatialData names: only ``[A-Za-z0-9_.-]``, unique ignoring case.
"""

from __future__ import annotations

import re

_VALID_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


class Key:
    """Names of AnnData fields and SpatialData elements used across the package."""

    # coordinates / graph (squidpy conventions)
    SPATIAL = "spatial"
    CONNECTIVITIES = "spatial_connectivities"
    DISTANCES = "spatial_distances"
    NEIGHBORS_UNS = "spatial_neighbors"
    DEFAULT_TABLE = "table"
    # spatialdata table annotation
    REGION = "region"
    INSTANCE = "instance_id"
    # sections
    SECTION = "section"
    # internal registry keys used by the scvi-tools models
    INDICES = "_sslspatial_indices"

    @staticmethod
    def graph(key_added: str = SPATIAL) -> tuple[str, str, str]:
        """Return the ``(connectivities, distances, uns)`` keys for a graph stored under ``key_added``."""
        return f"{key_added}_connectivities", f"{key_added}_distances", f"{key_added}_neighbors"

    @staticmethod
    def embedding(name: str) -> str:
        """Return the ``obsm`` key of an embedding, e.g. ``X_pretrain_mask``."""
        return f"X_{name}"

    @staticmethod
    def prediction(name: str) -> str:
        """Return the ``obs`` key of a prediction, e.g. ``annotate_prediction``."""
        return f"{name}_prediction"


def check_key(key: str, what: str = "key") -> str:
    """Raise if ``key`` is not a valid SpatialData name.

    Parameters
    ----------
    key
        The name to check.
    what
        What the key is, used in the error message.

    Returns
    -------
    The key, unchanged.

    Examples
    --------
    >>> check_key("X_pretrain_mask")
    'X_pretrain_mask'
    """
    if not isinstance(key, str) or not _VALID_KEY.match(key):
        raise ValueError(
            f"{what} {key!r} is not a valid name: use only letters, digits, '_', '.' and '-' "
            "(spatialdata refuses other characters when writing to zarr)."
        )
    return key


def check_unique_ignoring_case(keys: list[str], new_key: str, what: str = "key") -> None:
    """Raise if ``new_key`` differs from an existing key only by case (spatialdata refuses that on write)."""
    for existing in keys:
        if existing != new_key and existing.lower() == new_key.lower():
            raise ValueError(
                f"{what} {new_key!r} clashes with existing {existing!r} (they differ only by case, which "
                "spatialdata refuses on write). Choose another name."
            )


class DomainKey:
    """Keys written by ``ss.pp.aggregate_neighbors`` and ``ss.tl.domains``."""

    NHOOD = "X_nhood"
    PCA = "X_pca"
    DOMAINS = "domains"
    PRETRAIN_MASK = "X_pretrain_mask"
