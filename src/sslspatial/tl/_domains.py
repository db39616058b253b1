"""``ss.tl.domains``: cluster an embedding into spatial domains (Leiden or a Gaussian mixture), jointly or per section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _io
from .. import _logging as logg
from .._constants import DomainKey, Key, check_key
from .._validate import check_choice
from ..pp._aggregate import representation

DOMAIN_METHODS = ("leiden", "gmm")
_MAX_SEARCH_STEPS = 30


def domains(
    data: _io.DataLike,
    *,
    use_rep: str = DomainKey.PRETRAIN_MASK,
    method: Literal["leiden", "gmm"] = "leiden",
    n_domains: int | None = None,
    library_key: str | None = None,
    per_section: bool = False,
    smooth: int = 0,
    connectivity_key: str = Key.CONNECTIVITIES,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    method_kwargs: Mapping[str, Any] | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    key_added: str = DomainKey.DOMAINS,
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Cluster an embedding into tissue domains and write them to ``obs[key_added]``.

    Any representation works: a pretrained embedding (``obsm["X_pretrain_mask"]``, the default, which the SSL
    reusability study found to improve spatial clustering), CellCharter-style neighbourhood aggregates
    (``obsm["X_nhood"]`` from :func:`sslspatial.pp.aggregate_neighbors`, best with ``method="gmm"``), or a PCA of the
    expression (``use_rep="X"``).

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used (written in place).
    use_rep
        ``obsm`` key of the representation, or ``"X"`` for a PCA (up to 50 components) of library-size normalised,
        ``log1p`` counts (``X`` that does not hold counts is taken as already normalised).
    method
        ``"leiden"``: Leiden communities (scanpy / igraph) of a ``n_neighbors`` nearest-neighbour graph of the
        representation; ``"gmm"``: a Gaussian mixture (scikit-learn, full covariances) with ``n_domains``
        components, each cell assigned to its most probable component.
    n_domains
        Number of domains. Required for ``"gmm"``. For ``"leiden"``, the resolution is searched (doubling, then
        bisection) until Leiden returns this many clusters; when none does, the closest count is kept, with a
        warning. ``None`` runs Leiden once at ``resolution``.
    library_key
        Column of ``obs`` naming the section of each observation (for a SpatialData table annotating several
        regions, the region column is used when this is ``None``). Only used with ``per_section=True``.
    per_section
        Cluster each section on its own (``n_domains`` each). Domains of different sections are then unrelated, so
        their labels are prefixed with the section name (``"BZ5_0"``, ...). ``False`` clusters all cells jointly,
        which matches domains across sections.
    smooth
        Rounds of spatial smoothing of the representation before clustering: each round replaces each cell's
        features by their mean over the cell and its neighbours on ``obsp[connectivity_key]`` (weights ignored).
        ``0`` (default) does not smooth and needs no graph. One or two rounds give more contiguous domains.
    connectivity_key
        ``obsp`` key of the spatial graph, used only when ``smooth > 0``.
    resolution
        Leiden resolution when ``n_domains`` is ``None``.
    n_neighbors
        Neighbours of the feature-space graph for Leiden.
    method_kwargs
        Extra arguments for :class:`sklearn.mixture.GaussianMixture` (e.g. ``{"covariance_type": "diag"}``) or
        :func:`scanpy.tl.leiden` (e.g. ``{"n_iterations": -1}``).
    table_key
        Table of a SpatialData.
    key_added
        ``obs`` column of the (categorical) domains; parameters and the Leiden resolution used per section go to
        ``uns[key_added]``.
    seed
        Random state of the PCA, the neighbour graph, Leiden and the mixture.
    overwrite
        Replace an existing ``obs[key_added]``.

    Returns
    -------
    ``None``; ``obs[key_added]`` and ``uns[key_added]`` are written.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000)
    >>> ss.pp.build_graph(sdata, method="radius", radius=30.0)
    >>> ss.pp.aggregate_neighbors(sdata, n_hops=2, use_rep="X")
    >>> ss.tl.domains(sdata, use_rep="X_nhood", method="gmm", n_domains=4)
    >>> sdata.tables["table"].obs["domains"].nunique()
    4
    """
    check_choice(method, DOMAIN_METHODS, "method")
    check_key(key_added, "key_added")
    if n_domains is not None and (not isinstance(n_domains, int | np.integer) or isinstance(n_domains, bool)):
        raise TypeError(f"n_domains must be an integer or None, got {n_domains!r}.")
    if n_domains is not None and n_domains < 1:
        raise ValueError(f"n_domains must be at least 1, got {n_domains}.")
    if method == "gmm" and n_domains is None:
        raise ValueError("method='gmm' needs the number of domains: pass n_domains=<int> (or use method='leiden').")
    if not isinstance(smooth, int | np.integer) or isinstance(smooth, bool) or smooth < 0:
        raise ValueError(f"smooth must be a non-negative integer (rounds of smoothing), got {smooth!r}.")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}.")
    table = _io.get_table(data, table_key)
    if key_added in table.obs and not overwrite:
        raise KeyError(f"obs[{key_added!r}] already exists; pass overwrite=True or choose another key_added.")
    if smooth > 0 and connectivity_key not in table.obsp:
        raise KeyError(
            f"smooth={smooth} needs a spatial graph, but obsp[{connectivity_key!r}] is missing. Build one first with "
            "`ss.pp.build_graph(data, method='delaunay')` (or method='radius', radius=... / 'knn'), or pass smooth=0."
        )
    sections = (
        _io.get_sections(table, library_key=library_key) if per_section else pd.Categorical(["all"] * table.n_obs)
    )
    if n_domains is not None:
        counts = pd.Series(np.asarray(sections)).value_counts()
        if (counts < n_domains).any():
            raise ValueError(
                f"n_domains={n_domains} exceeds the number of cells of section {counts.idxmin()!r} ({counts.min()})."
            )

    rep = representation(table, use_rep, seed=seed)
    if smooth > 0:
        rep = smooth_features(table.obsp[connectivity_key], rep, int(smooth))

    labels = np.empty(table.n_obs, dtype=object)
    resolutions: dict[str, float] = {}
    kwargs = dict(method_kwargs or {})
    for section in sections.categories:
        idx = np.flatnonzero(np.asarray(sections) == section)
        if method == "gmm":
            codes = _gmm(rep[idx], int(n_domains), seed, kwargs)
        else:
            codes, resolutions[str(section)] = _leiden(rep[idx], n_domains, resolution, n_neighbors, seed, kwargs)
        codes = _order_by_size(codes)
        labels[idx] = [f"{section}_{c}" for c in codes] if per_section else [str(c) for c in codes]

    table.obs[key_added] = pd.Categorical(labels, categories=_natural_order(pd.unique(labels)))
    params: dict[str, Any] = {
        "use_rep": use_rep,
        "method": method,
        "per_section": bool(per_section),
        "smooth": int(smooth),
        "seed": int(seed),
    }
    if n_domains is not None:
        params["n_domains"] = int(n_domains)
    if per_section and library_key is not None:
        params["library_key"] = library_key
    if method == "leiden":
        params["n_neighbors"] = int(n_neighbors)
    table.uns[key_added] = {"params": params}
    if resolutions:
        table.uns[key_added]["resolution"] = resolutions
    logg.info(f"Found {table.obs[key_added].nunique()} domains with {method} on {use_rep!r} -> obs[{key_added!r}].")


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


def _gmm(rep: np.ndarray, n_domains: int, seed: int, kwargs: dict) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    options = {"covariance_type": "full", "reg_covar": 1e-4, "random_state": seed, **kwargs}
    return GaussianMixture(n_components=n_domains, **options).fit_predict(rep)


def _leiden(
    rep: np.ndarray, n_domains: int | None, resolution: float, n_neighbors: int, seed: int, kwargs: dict
) -> tuple[np.ndarray, float]:
    import anndata as ad
    import scanpy as sc

    shell = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(rep.shape[0]).astype(str)), obsm={"rep": rep})
    sc.pp.neighbors(shell, n_neighbors=min(n_neighbors, rep.shape[0] - 1), use_rep="rep", random_state=seed)
    options = {"flavor": "igraph", "n_iterations": 2, "directed": False, "random_state": seed, **kwargs}

    def run(res: float) -> np.ndarray:
        sc.tl.leiden(shell, resolution=res, key_added="leiden", **options)
        return shell.obs["leiden"].astype(int).to_numpy()

    if n_domains is None:
        return run(resolution), float(resolution)
    tried: dict[float, np.ndarray] = {}

    def count(res: float) -> int:
        tried[res] = run(res)
        return len(np.unique(tried[res]))

    lo, hi = 0.0, 1.0
    steps = 0
    while count(hi) < n_domains and steps < _MAX_SEARCH_STEPS // 2:
        lo, hi, steps = hi, hi * 2.0, steps + 1
    if len(np.unique(tried[hi])) != n_domains:
        for _ in range(_MAX_SEARCH_STEPS):
            mid = (lo + hi) / 2.0
            n = count(mid)
            if n == n_domains:
                break
            lo, hi = (mid, hi) if n < n_domains else (lo, mid)
    best = min(tried, key=lambda r: (abs(len(np.unique(tried[r])) - n_domains), r))
    found = len(np.unique(tried[best]))
    if found != n_domains:
        logg.warning(
            f"Leiden found no resolution giving exactly {n_domains} domains; using resolution {best:.4g} "
            f"({found} domains). Use method='gmm' for an exact number."
        )
    return tried[best], float(best)


def _order_by_size(codes: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... by decreasing size (ties by first appearance), so labels do not depend on ids."""
    values, first, sizes = np.unique(codes, return_index=True, return_counts=True)
    order = sorted(range(len(values)), key=lambda i: (-sizes[i], first[i]))
    mapping = {values[i]: rank for rank, i in enumerate(order)}
    return np.array([mapping[c] for c in codes])


def _natural_order(labels: np.ndarray) -> list[str]:
    def key(label: str) -> tuple[str, int]:
        head, _, tail = label.rpartition("_")
        return (head, int(tail)) if tail.isdigit() else (label, -1)

    return sorted(map(str, labels), key=key)
