"""Every key the package reads or writes, in one place.

Keys follow squidpy where squidpy defines them (so ``sq.gr.*`` and ``sq.pl.*`` work on our results) and are valid
SpatialData names: only ``[A-Za-z0-9_.-]``, unique ignoring case.
"""

from __future__ import annotations

import re
from typing import NamedTuple

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
    #: bookkeeping a model may leave in the table it is bound to (scvi-tools' uuids in uns; the row index column of
    #: older stores and private superres tables): needed in memory while the model uses the table, never written to a
    #: store (:func:`sslspatial.io.write`, ``persist``, the CLI) nor listed to the user (:func:`user_columns`)
    INTERNAL_OBS = (INDICES,)
    INTERNAL_UNS = ("_scvi_uuid", "_scvi_manager_uuid")

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


def user_columns(obs) -> list[str]:
    """The obs columns a user made or asked for: every column but the models' bookkeeping (``Key.INTERNAL_OBS``).

    Examples
    --------
    >>> import pandas as pd
    >>> user_columns(pd.DataFrame({"cell_type": [1], "_sslspatial_indices": [0]}))
    ['cell_type']
    """
    return [c for c in obs.columns if c not in Key.INTERNAL_OBS]


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


class _RegistryKeys(NamedTuple):
    """Keys of the minibatch dictionaries: what the loaders (``data/``) build and the modules and objectives read.

    The scvi-tools ``REGISTRY_KEYS`` pattern: one named constant per key, so that a loader and the code reading its
    batches cannot drift apart. Keys of registered AnnData fields that scvi-tools defines (``"X"``, ``"ind_x"``) stay
    ``scvi.REGISTRY_KEYS``.
    """

    # graph minibatches (data/_loaders.py: SubgraphCollate)
    X_KEY: str = "x"
    EDGE_INDEX_KEY: str = "edge_index"
    N_SEEDS_KEY: str = "n_seeds"
    DEGREE_KEY: str = "degree"
    HOPS_KEY: str = "hops"
    TARGET_PREFIX: str = "target_"
    # inference outputs of the pretraining module, read by the objectives
    X_T_KEY: str = "x_t"
    LIBRARY_KEY: str = "library"
    # superres minibatches (model/_superres.py): subgraph node features and per-sub-spot features
    X_SUB_KEY: str = "x_sub"
    SUBSPOT_FEATURES_KEY: str = "subspot_features"
    # hist2expr windows (data/_patch_loader.py)
    PATCHES_KEY: str = "patches"
    POSITIONS_KEY: str = "positions"
    COUNTS_KEY: str = "counts"
    ROWS_KEY: str = "rows"
    FEATURES_KEY: str = "features"


#: The one source of every minibatch key (see :class:`_RegistryKeys`).
REGISTRY_KEYS = _RegistryKeys()
