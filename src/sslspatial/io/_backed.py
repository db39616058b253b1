"""Tables whose counts stay on disk: open a zarr store's table with a backed ``X``, write a table in spatial order.

Principle 4 of the design: the only per-cell state in memory is the graph and index arrays, the counts are read per
spatial tile. :func:`read_backed` gives an :class:`~anndata.AnnData` whose ``X`` is anndata's backed sparse dataset
(:class:`anndata.abc.CSRDataset`) on the store, with ``obs``, ``var``, ``obsm`` and the spatial graph in memory: the
``pretrain_*`` functions and :class:`~sslspatial.model.SpatialPretrainModel` train and embed from it, reading each
minibatch's subgraph in a few contiguous row ranges (:class:`sslspatial.data.TileReader`). Those reads are few when
the rows are stored in spatial order: :func:`sort_spatially` before writing the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
from anndata import AnnData

from .._constants import Key


def read_backed(
    store: str | PathLike,
    *,
    table_key: str = Key.DEFAULT_TABLE,
    layer: str | None = None,
    obsp_keys: Sequence[str] = (Key.CONNECTIVITIES,),
) -> AnnData:
    """Open the table of a zarr store with its counts left on disk.

    Parameters
    ----------
    store
        A SpatialData zarr store (the table ``tables/<table_key>`` is opened) or an AnnData zarr store
        (``adata.write_zarr``).
    table_key
        Table of a SpatialData store (ignored for an AnnData store).
    layer
        Stored matrix that becomes the backed ``X`` (default ``X``; e.g. ``"counts"`` for ``layers/counts``).
    obsp_keys
        Graphs loaded into memory (default the connectivities of ``ss.pp.build_graph``; the distances are not needed
        for training).

    Returns
    -------
    An AnnData whose ``X`` is a backed CSR dataset (nothing of it is read yet), with ``obs``, ``var``, ``obsm``,
    ``uns`` and the ``obsp_keys`` graphs in memory. Results written into it (``obsm["X_pretrain_mask"]``) stay in
    memory; write them to the store with ``anndata.io.write_elem``.

    Examples
    --------
    >>> table = ss.io.read_backed("atlas.zarr")  # doctest: +SKIP
    >>> model = ss.tl.pretrain_mask(table, max_epochs=1)  # doctest: +SKIP
    >>> import anndata as ad, zarr  # doctest: +SKIP
    >>> group = zarr.open_group("atlas.zarr/tables/table", mode="r+")  # doctest: +SKIP
    >>> ad.io.write_elem(group["obsm"], "X_pretrain_mask", table.obsm["X_pretrain_mask"])  # doctest: +SKIP
    """
    import anndata as ad
    import zarr

    root = zarr.open_group(str(store), mode="r")
    if "tables" in root:
        if table_key not in root["tables"]:
            raise KeyError(f"No table {table_key!r} in {store} (tables: {sorted(root['tables'].keys())}).")
        group = root["tables"][table_key]
    else:
        group = root
    where = "X" if layer is None else f"layers/{layer}"
    if where not in group:
        raise KeyError(f"{where} is not stored in the table of {store}.")
    if group[where].attrs.get("encoding-type") != "csr_matrix":
        raise ValueError(
            f"{where} of {store} is stored as {group[where].attrs.get('encoding-type', 'a dense array')!r}; reading "
            "by cells needs a CSR matrix: write the table with `adata.X = scipy.sparse.csr_matrix(adata.X)`."
        )

    def read(name):
        return ad.io.read_elem(group[name]) if name in group else None

    obsm = {k: ad.io.read_elem(group["obsm"][k]) for k in group["obsm"]} if "obsm" in group else {}
    obsp = {}
    if "obsp" in group:
        obsp = {k: ad.io.read_elem(group["obsp"][k]) for k in obsp_keys if k in group["obsp"]}
    return AnnData(
        X=ad.io.sparse_dataset(group[where]), obs=read("obs"), var=read("var"), obsm=obsm, obsp=obsp, uns=read("uns")
    )


def sort_spatially(adata: AnnData, *, library_key: str | None = None) -> AnnData:
    """A copy of ``adata`` with its cells in Z-order of ``obsm["spatial"]`` (per section), to write before training.

    Cells that are neighbours in space are then neighbours on disk, so a minibatch's k-hop subgraph is read from the
    store in a few contiguous ranges (see :func:`read_backed`).

    Parameters
    ----------
    adata
        A table with ``obsm["spatial"]`` (its graphs in ``obsp`` are permuted with it).
    library_key
        obs column of the sections: sections stay contiguous (in order of first appearance).

    Returns
    -------
    The sorted copy.

    Examples
    --------
    >>> from anndata import AnnData
    >>> adata = AnnData(np.zeros((3, 1)), obsm={"spatial": np.array([[9.0, 9.0], [0.0, 0.0], [0.0, 1.0]])})
    >>> sort_spatially(adata).obs_names.tolist()
    ['1', '2', '0']
    """
    from ..data._loaders import locality_order

    if Key.SPATIAL not in adata.obsm:
        raise KeyError(f"obsm[{Key.SPATIAL!r}] (cell coordinates) is needed to sort cells in space.")
    xy = np.asarray(adata.obsm[Key.SPATIAL])
    order = np.argsort(locality_order(xy), kind="stable")
    if library_key is not None:
        codes = np.unique(np.asarray(adata.obs[library_key]).astype(str), return_inverse=True)[1]
        first = np.full(codes.max() + 1, codes.size)
        np.minimum.at(first, codes, np.arange(codes.size))
        order = order[np.argsort(first[codes][order], kind="stable")]  # sections by first appearance
    return adata[order].copy()
