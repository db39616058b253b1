"""The features that domains, pseudo-labels and annotation probes are built from, and their per-section centring.

:func:`features` is what :func:`~sslspatial.tl.domains` clusters (standardised representation blocks, ring means of
the spatial graph, neighbourhood smoothing); :func:`center_per_section`, :func:`standardize_block` and
:func:`smooth_features` are shared with ``pretrain_pseudolabel`` and ``annotate``, and so is
:func:`pseudolabel_features` (expression PCs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from .._constants import Key
from ..pp._aggregate import _aggregate, hop_matrices, representation
from ..pp._normalize import expression_pcs


def features(
    table,
    use_rep: str | Sequence[str],
    *,
    n_hops: int = 0,
    smooth: int = 0,
    connectivity_key: str = Key.CONNECTIVITIES,
    seed: int = 0,
    sections: np.ndarray | None = None,
) -> np.ndarray:
    """Return the features :func:`domains` clusters: standardised ``use_rep`` block(s), ring means, smoothing.

    With ``sections`` (one label per cell), each block first has its per-section mean subtracted. A single
    representation is then used as it is; a list concatenates its blocks, each centred and scaled to unit mean
    squared row norm so that none dominates. ``n_hops`` appends the mean over each ring 1 to ``n_hops`` of the spatial graph; ``smooth``
    rounds of :func:`smooth_features` follow.
    """
    reps = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    blocks = [representation(table, r, seed=seed) for r in reps]
    if sections is not None:
        blocks = [center_per_section(b, sections) for b in blocks]
    rep = blocks[0] if len(blocks) == 1 else np.hstack([standardize_block(b) for b in blocks])
    if n_hops > 0:
        rings = hop_matrices(table.obsp[connectivity_key], n_hops)
        rep = np.hstack([rep] + [_aggregate(ring, rep, "mean") for ring in rings])
    if smooth > 0:
        rep = smooth_features(table.obsp[connectivity_key], rep, smooth)
    return rep


def center_per_section(block: np.ndarray, sections: np.ndarray) -> np.ndarray:
    """Subtract from each row the mean of its section's rows.

    Examples
    --------
    >>> import numpy as np
    >>> center_per_section(np.array([[1.0], [3.0], [10.0]]), np.array(["a", "a", "b"])).ravel().tolist()
    [-1.0, 1.0, 0.0]
    """
    out = np.array(block, dtype=np.float64)
    codes, inverse = np.unique(np.asarray(sections), return_inverse=True)
    for code in range(len(codes)):
        rows = inverse == code
        out[rows] -= out[rows].mean(axis=0)
    return out


def standardize_block(block: np.ndarray) -> np.ndarray:
    """Centre the columns of ``block`` and scale it so that the mean squared row norm is 1.

    Examples
    --------
    >>> import numpy as np
    >>> out = standardize_block(np.array([[0.0, 0.0], [2.0, 4.0]]))
    >>> round(float((out**2).sum(axis=1).mean()), 6)
    1.0
    """
    centred = np.asarray(block, dtype=np.float64) - np.asarray(block, dtype=np.float64).mean(axis=0)
    scale = np.sqrt((centred**2).sum(axis=1).mean())
    return centred / scale if scale > 0 else centred


def smooth_features(adjacency: sp.spmatrix, rep: np.ndarray, rounds: int) -> np.ndarray:
    """Average ``rep`` over each cell's closed neighbourhood (itself and its graph neighbours), ``rounds`` times.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> a = sp.csr_matrix(np.array([[0, 1], [1, 0]]))
    >>> smooth_features(a, np.array([[0.0], [2.0]]), 1).ravel().tolist()
    [1.0, 1.0]
    """
    a = sp.csr_matrix(adjacency, copy=True)
    a.setdiag(0)
    a.eliminate_zeros()
    a.data = np.ones_like(a.data, dtype=np.float64)
    closed = (a + sp.identity(a.shape[0], format="csr")).tocsr()
    operator = sp.diags(1.0 / np.asarray(closed.sum(axis=1)).ravel()) @ closed
    out = np.asarray(rep, dtype=np.float64)
    for _ in range(rounds):
        out = operator @ out
    return out


def pseudolabel_features(
    table,
    layer: str | None = None,
    n_pcs: int = 30,
    log1p: bool = True,
    scale: bool = False,
    pearson: bool = False,
) -> np.ndarray:
    """PCA of (log1p-normalised) expression, the features clustered into pseudo-labels.

    With ``scale=True`` every gene is standardised (clipped at 10 sd) before the PCA, the scanpy recipe
    (``normalize_total``, ``log1p``, ``scale``, ``pca``): the expression features of ``ss.tl.annotate``.
    See :func:`sslspatial.pp._normalize.expression_pcs`.

    Examples
    --------
    >>> from anndata import AnnData
    >>> pseudolabel_features(AnnData(np.random.default_rng(0).poisson(2, (50, 10)).astype(float)), n_pcs=3).shape
    (50, 3)
    """
    x = table.X if layer is None else table.layers[layer]
    return expression_pcs(x, n_pcs, log1p=log1p, scale=scale, pearson=pearson)
