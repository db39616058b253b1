"""``ss.pp.aggregate_neighbors``: CellCharter-style features aggregated over exact graph hops.

Each cell's representation is concatenated with summaries (mean, variance, ...) of the representations of the cells at
exactly 1, 2, ..., ``n_hops`` steps from it on the spatial graph. The hop sets come from sparse matrix products of the
binarised adjacency, so nothing of size cells x cells is ever dense.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _logging as logg
from .._constants import DomainKey, Key, check_key
from .._types import DataLike
from .._validate import check_absent, check_finite
from ..io import _access as _io
from ._normalize import log_normalize

AGGREGATIONS = ("mean", "var", "std", "sum")
_DEFAULT_N_PCS = 50


# Where an embedding that is not in obsm comes from, for the error message.
_MAKERS = {
    DomainKey.NHOOD: "ss.pp.aggregate_neighbors(data)",
    DomainKey.PCA: "sc.pp.pca(adata) (or pass use_rep='X' to compute a PCA on the fly)",
    DomainKey.PRETRAIN_MASK: "ss.tl.pretrain_mask(data)",
}


def representation(table: AnnData, use_rep: str, n_pcs: int = _DEFAULT_N_PCS, seed: int = 0) -> np.ndarray:
    """Return the features named by ``use_rep``: an ``obsm`` key, or ``"X"`` for a PCA of log-normalised ``X``.

    Parameters
    ----------
    table
        The AnnData (never modified).
    use_rep
        A key of ``obsm``, or ``"X"``: counts in ``X`` are library-size normalised (to the median total) and
        ``log1p``-transformed first; non-count ``X`` is taken as already normalised. Then PCA with
        ``min(n_pcs, n_obs - 1, n_vars - 1)`` components.
    n_pcs
        Principal components for ``use_rep="X"``.
    seed
        Random state of the PCA solver.

    Returns
    -------
    Dense float64 array ``(n_obs, n_features)``.

    Examples
    --------
    >>> import anndata, numpy as np
    >>> adata = anndata.AnnData(np.random.default_rng(0).poisson(3.0, (50, 8)).astype(float))
    >>> representation(adata, "X", n_pcs=5).shape
    (50, 5)
    """
    if use_rep == "X":
        return _pca_of_x(table, n_pcs, seed)
    if use_rep not in table.obsm:
        available = ", ".join(repr(k) for k in table.obsm) or "none"
        maker = _MAKERS.get(use_rep, "the tool that writes it, or pass use_rep='X' for a PCA of the expression")
        raise KeyError(f"use_rep={use_rep!r} is not in obsm (available: {available}). Compute it first with {maker}.")
    rep = table.obsm[use_rep]
    rep = rep.toarray() if sp.issparse(rep) else np.asarray(rep)
    if rep.ndim != 2 or not np.issubdtype(rep.dtype, np.number):
        raise ValueError(f"obsm[{use_rep!r}] must be a numeric (n_obs, n_features) array, got {rep.dtype} {rep.shape}.")
    rep = rep.astype(np.float64)
    check_finite(rep, f"obsm[{use_rep!r}]")
    return rep


def _is_counts(x) -> bool:
    values = x.data if sp.issparse(x) else np.asarray(x)
    return bool(values.size and values.min() >= 0 and np.all(values == np.round(values)))


def _pca_of_x(table: AnnData, n_pcs: int, seed: int) -> np.ndarray:
    import scanpy as sc

    x = table.X
    if x is None:
        raise ValueError("use_rep='X' needs expression in X, but X is empty; pass an obsm key as use_rep.")
    x = sp.csr_matrix(x, dtype=np.float64) if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    check_finite(x, "X")
    if _is_counts(x):
        x = log_normalize(x, "median")
    else:
        logg.info("X does not hold counts: taking it as already normalised (no log1p) for the PCA.")
    n_comps = int(min(n_pcs, table.n_obs - 1, table.n_vars - 1))
    if n_comps < 1:
        raise ValueError(f"A PCA needs at least 2 observations and 2 variables, got {table.shape}.")
    return np.asarray(sc.pp.pca(x, n_comps=n_comps, random_state=seed), dtype=np.float64)


def hop_matrices(adjacency: sp.spmatrix, n_hops: int) -> list[sp.csr_matrix]:
    """Return binary CSR matrices ``H_1..H_n``: ``H_k[i, j] = 1`` iff the shortest path from ``i`` to ``j`` has ``k`` edges.

    Row ``i`` of ``adjacency`` lists the neighbours of ``i``; weights are ignored (any non-zero is an edge) and self
    loops are dropped. The sets are exact, not cumulative: a cell at distance 1 never appears in ``H_2``.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> path = sp.csr_matrix(([1, 1, 1, 1], ([0, 1, 1, 2], [1, 0, 2, 1])), shape=(3, 3))  # 0 - 1 - 2
    >>> hop_matrices(path, 2)[1].toarray().tolist()
    [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    """
    a = sp.csr_matrix(adjacency, copy=True)
    a.setdiag(0)
    a.eliminate_zeros()
    a.data = np.ones_like(a.data, dtype=np.int64)
    n = a.shape[0]
    visited = sp.identity(n, dtype=np.int64, format="csr")
    frontier = visited
    hops = []
    for _ in range(n_hops):
        reached = frontier @ a
        reached.data = np.ones_like(reached.data)
        new = (reached - reached.multiply(visited)).tocsr()
        new.eliminate_zeros()
        new.sort_indices()
        hops.append(new)
        visited = (visited + new).tocsr()
        frontier = new
    return hops


def _aggregate(hop: sp.csr_matrix, rep: np.ndarray, how: str) -> np.ndarray:
    """Aggregate ``rep`` over the cells in each row of ``hop``; rows with no cell at that hop give zeros."""
    counts = np.asarray(hop.sum(axis=1), dtype=np.float64).ravel()
    total = np.asarray(hop @ rep)
    if how == "sum":
        return total
    inv = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)[:, None]
    mean = total * inv
    if how == "mean":
        return mean
    var = np.clip(np.asarray(hop @ (rep * rep)) * inv - mean * mean, 0.0, None)
    return var if how == "var" else np.sqrt(var)


def aggregate_neighbors(
    data: DataLike,
    *,
    n_hops: int = 2,
    use_rep: str | None = None,
    aggregations: Sequence[str] = ("mean",),
    connectivity_key: str = Key.CONNECTIVITIES,
    key_added: str = DomainKey.NHOOD,
    table_key: str = Key.DEFAULT_TABLE,
    copy: bool = False,
    overwrite: bool = False,
) -> np.ndarray | None:
    """Concatenate each cell's features with their aggregates over the cells exactly 1 to ``n_hops`` hops away.

    This is the neighbourhood aggregation of CellCharter (Varrone et al., Nat Genet 2024): for hop ``k`` the
    aggregated block is, e.g., the mean of the features of the cells whose shortest path to the cell on the spatial
    graph has exactly ``k`` edges (the cell's ring ``k``, not its whole ``k``-neighbourhood). The output is
    ``[rep, agg_1(hop 1), ..., agg_m(hop 1), ..., agg_m(hop n_hops)]`` of width
    ``n_features * (1 + n_hops * len(aggregations))``. A cell with no cell at some hop (isolated, or a small
    component) gets zeros in that block. Graphs built per section never join sections, so neither do the aggregates.
    Clustering the result (:func:`sslspatial.tl.domains` with ``use_rep="X_nhood"``, ``method="gmm"``) gives
    spatial domains.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used (written in place).
    n_hops
        Number of rings aggregated (``0`` returns ``rep`` itself).
    use_rep
        Features to aggregate: an ``obsm`` key (e.g. a pretrained embedding ``"X_pretrain_mask"``), ``"X"`` for a
        PCA (up to 50 components) of library-size normalised, ``log1p`` counts (``X`` that does not hold counts is
        taken as already normalised), or ``None``: ``obsm["X_pca"]`` when present, else as ``"X"``.
    aggregations
        Any of ``"mean"``, ``"var"``, ``"std"``, ``"sum"``, computed per hop, in this order.
    connectivity_key
        ``obsp`` key of the spatial graph (from :func:`sslspatial.pp.build_graph`); weights are ignored.
    key_added
        ``obsm`` key of the result; parameters and feature names go to ``uns[key_added]``.
    table_key
        Table of a SpatialData.
    copy
        Return the array instead of writing it.
    overwrite
        Replace an existing ``obsm[key_added]``.

    Returns
    -------
    ``None``, or the ``(n_obs, n_features * (1 + n_hops * len(aggregations)))`` array when ``copy=True``.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000)
    >>> ss.pp.build_graph(sdata, method="radius", radius=30.0)
    >>> ss.pp.aggregate_neighbors(sdata, n_hops=2, use_rep="X")
    >>> sdata.tables["table"].obsm["X_nhood"].shape[1] == 3 * 50
    True
    """
    if isinstance(aggregations, str):
        aggregations = (aggregations,)
    aggregations = tuple(aggregations)
    bad = [a for a in aggregations if a not in AGGREGATIONS]
    if bad or not aggregations:
        raise ValueError(f"Unknown aggregations {bad or '(empty)'}; choose from {', '.join(map(repr, AGGREGATIONS))}.")
    if not isinstance(n_hops, int | np.integer) or isinstance(n_hops, bool) or n_hops < 0:
        raise ValueError(f"n_hops must be a non-negative integer, got {n_hops!r}.")
    check_key(key_added, "key_added")
    table = _io.get_table(data, table_key)
    if connectivity_key not in table.obsp:
        raise KeyError(
            f"No spatial graph: obsp[{connectivity_key!r}] is missing. Build one first with "
            "`ss.pp.build_graph(data, method='delaunay')` (or method='radius', radius=... / 'knn' / 'grid')."
        )
    check_absent(not copy and key_added in table.obsm and not overwrite, f"obsm[{key_added!r}]")
    if use_rep is None:
        use_rep = DomainKey.PCA if DomainKey.PCA in table.obsm else "X"
    rep = representation(table, use_rep)

    blocks = [rep]
    names = [f"{use_rep}:{j}" for j in range(rep.shape[1])]
    for k, hop in enumerate(hop_matrices(table.obsp[connectivity_key], int(n_hops)), start=1):
        for how in aggregations:
            blocks.append(_aggregate(hop, rep, how))
            names += [f"hop{k}_{how}:{j}" for j in range(rep.shape[1])]
    out = np.hstack(blocks).astype(np.float32)
    if copy:
        return out
    table.obsm[key_added] = out
    table.uns[key_added] = {
        "params": {
            "n_hops": int(n_hops),
            "use_rep": use_rep,
            "aggregations": list(aggregations),
            "connectivity_key": connectivity_key,
        },
        "feature_names": np.asarray(names, dtype=object),
    }
    logg.info(f"Aggregated {use_rep!r} over {n_hops} hop(s) -> obsm[{key_added!r}] ({out.shape[1]} features).")
    return None
