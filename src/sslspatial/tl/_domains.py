"""``ss.tl.domains``: cluster a representation into spatial domains (Gaussian mixture or Leiden), jointly or per section.

The defaults (a PCA of the expression, two rounds of spatial smoothing, a Gaussian mixture with diagonal
covariances) were chosen on one tuning split, STARmap section BZ5, by ``benchmarks/domains.py``; the other splits of
that benchmark (STARmap BZ9, osmFISH) only evaluate them. Without ``n_domains``, the number of domains is chosen by
the stability of the mixture across random initialisations (as CellCharter's AutoK does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._constants import DomainKey, Key, check_key
from .._provenance import run_record
from .._types import DataLike
from .._validate import ArgumentError, check_absent, check_choice, check_numbers, resolve_seed, storable_key
from ..io import _access as _io
from ._features import center_per_section, features, smooth_features, standardize_block  # noqa: F401

DomainMethod = Literal["leiden", "gmm"]
DOMAIN_METHODS = get_args(DomainMethod)
#: ``n_domains`` is refused when a section would get fewer cells than this per domain on average.
MIN_CELLS_PER_DOMAIN = 5
_MAX_SEARCH_STEPS = 30

# Defaults chosen on the tuning split (STARmap BZ5) by `benchmarks/domains.py`; see the benchmark's Markdown.
DEFAULT_USE_REP = "X"
DEFAULT_METHOD = "gmm"
DEFAULT_SMOOTH = 2
DEFAULT_N_HOPS = 0
DEFAULT_COVARIANCE = "diag"
DEFAULT_N_INIT = 2
DEFAULT_CENTER_SECTIONS = True
DEFAULT_AUTOK_RANGE = (2, 15)
DEFAULT_AUTOK_RUNS = 5


def domains(
    data: DataLike,
    *,
    use_rep: str | Sequence[str] = DEFAULT_USE_REP,
    method: DomainMethod = DEFAULT_METHOD,
    n_domains: int | None = None,
    library_key: str | None = None,
    per_section: bool = False,
    center_sections: bool = DEFAULT_CENTER_SECTIONS,
    smooth: int = DEFAULT_SMOOTH,
    n_hops: int = DEFAULT_N_HOPS,
    connectivity_key: str = Key.CONNECTIVITIES,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    n_init: int = DEFAULT_N_INIT,
    autok_range: tuple[int, int] = DEFAULT_AUTOK_RANGE,
    autok_runs: int = DEFAULT_AUTOK_RUNS,
    method_kwargs: Mapping[str, Any] | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    key_added: str = DomainKey.DOMAINS,
    seed: int | None = 0,
    overwrite: bool = False,
) -> None:
    """Cluster a representation into tissue domains and write them to ``obs[key_added]``.

    The features are built in three steps: the representation(s) named by ``use_rep`` (each block centred and scaled
    to unit mean squared norm when several are concatenated), optionally CellCharter-style means over the rings 1 to ``n_hops``
    of the spatial graph (concatenated), then ``smooth`` rounds of averaging over each cell's closed neighbourhood.
    The result is clustered by a Gaussian mixture (default) or Leiden.

    The defaults (``use_rep="X"``, ``smooth=2``, ``n_hops=0``, ``method="gmm"`` with diagonal covariances, the most
    likely of ``n_init=2`` fits, sections centred when clustered jointly) scored
    best on the tuning split of ``benchmarks/domains.py`` (STARmap section BZ5, 4 cortical layers), among the PCA,
    the masked-pretraining embedding and both concatenated, 0-3 hops, 0-4 smoothing rounds and full or diagonal
    covariances. A pretrained embedding is used with ``use_rep="X_pretrain_mask"`` (or
    ``["X_pretrain_mask", "X"]`` for both); on that split it did not beat the PCA (see the benchmark).

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used (written in place).
    use_rep
        ``obsm`` key of the representation, or ``"X"`` for a PCA (up to 50 components) of library-size normalised,
        ``log1p`` counts (``X`` that does not hold counts is taken as already normalised). A list of such names
        concatenates them, each block standardised (centred, scaled to unit mean squared norm) so that none dominates.
    method
        ``"gmm"``: a Gaussian mixture (scikit-learn, diagonal covariances by default) with ``n_domains`` components,
        each cell assigned to its most probable component; ``"leiden"``: Leiden communities (scanpy / igraph) of a
        ``n_neighbors`` nearest-neighbour graph of the features.
    n_domains
        Number of domains. ``None`` with ``"gmm"``: chosen by stability (AutoK, as in CellCharter): for each ``K`` in
        ``autok_range`` the mixture is fitted ``autok_runs`` times (seeds ``seed``, ``seed + 1``, ...), the stability
        of ``K`` is the mean pairwise adjusted Rand index between those runs, and the most stable ``K`` is kept (ties:
        the larger ``K``); the curve goes to ``uns[key_added]["autok"]``. For ``"leiden"``, the resolution is searched
        (doubling, then bisection) until Leiden returns ``n_domains`` clusters; when none does, the closest count is
        kept, with a warning; ``None`` runs Leiden once at ``resolution``.
    library_key
        Column of ``obs`` naming the section of each observation (for a SpatialData table annotating several
        regions, the region column is used when this is ``None``). Used with ``per_section=True`` and by
        ``center_sections``.
    per_section
        Cluster each section on its own (``n_domains`` each). Domains of different sections are then unrelated, so
        their labels are prefixed with the section name (``"BZ5_0"``, ...). ``False`` clusters all cells jointly,
        which matches domains across sections.
    center_sections
        With ``per_section=False`` and several sections: subtract each section's mean from each representation block
        before aggregation and smoothing, so that the mixture separates tissue domains rather than sections (a crude,
        label-free batch correction). Default ``True``: clustering STARmap BZ5 and BZ9 jointly, the BZ5 ARI was
        0.33 ± 0.27 without and 0.85 ± 0.00 with it (``benchmarks/domains.py``, scored on the tuning section only).
        Has no effect on a single section or with ``per_section=True`` (a mixture does not depend on a shift).
    smooth
        Rounds of spatial smoothing of the features before clustering: each round replaces each cell's features by
        their mean over the cell and its neighbours on ``obsp[connectivity_key]`` (weights ignored). Default ``2``;
        ``0`` does not smooth (and, with ``n_hops=0``, needs no graph).
    n_hops
        Concatenate the mean of the features over the cells exactly 1, ..., ``n_hops`` hops away (CellCharter's
        aggregation, as :func:`sslspatial.pp.aggregate_neighbors`) before smoothing. Default ``0``.
    connectivity_key
        ``obsp`` key of the spatial graph, used when ``smooth > 0`` or ``n_hops > 0``.
    resolution
        Leiden resolution when ``n_domains`` is ``None``.
    n_neighbors
        Neighbours of the feature-space graph for Leiden.
    n_init
        Mixture fits from different random initialisations (``"gmm"`` with ``n_domains`` given); the fit with the
        highest likelihood is kept. Default ``2``: on the tuning split a single initialisation fell into a poor
        local optimum for 1 of 5 seeds (ARI 0.79 ± 0.22 over seeds 0-4, against 0.89 ± 0.00 with 2, 5 or 10). AutoK fits
        ``autok_runs`` single-initialisation mixtures per ``K`` and keeps the most likely of them at the chosen ``K``.
    autok_range
        ``(smallest, largest)`` number of domains tried by AutoK (``n_domains=None`` with ``"gmm"``).
    autok_runs
        Mixtures fitted per ``K`` by AutoK (at least 2).
    method_kwargs
        Extra arguments for :class:`sklearn.mixture.GaussianMixture` (e.g. ``{"covariance_type": "full"}``) or
        :func:`scanpy.tl.leiden` (e.g. ``{"n_iterations": -1}``).
    table_key
        Table of a SpatialData.
    key_added
        ``obs`` column of the (categorical) domains; parameters, the Leiden resolution and the AutoK curve (per
        section, a "/" in a section name written as ``%2F``; ``"all"`` when clustered jointly) go to ``uns[key_added]``.
    seed
        Random state of the PCA, the neighbour graph, Leiden and the mixture (``None``: a fresh one, recorded in
        ``uns[key_added]["params"]["seed"]``).
    overwrite
        Replace an existing ``obs[key_added]`` (else :class:`~sslspatial.OutputExistsError`).

    Returns
    -------
    ``None``; ``obs[key_added]`` and ``uns[key_added]`` are written.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000)
    >>> ss.pp.build_graph(sdata, method="radius", radius=30.0)
    >>> ss.tl.domains(sdata, n_domains=4)
    >>> sdata.tables["table"].obs["domains"].nunique()
    4
    """
    check_numbers(
        {"n_domains": n_domains, "smooth": smooth, "n_hops": n_hops, "n_neighbors": n_neighbors, "n_init": n_init}
    )
    check_numbers({"resolution": resolution, "autok_runs": autok_runs, "seed": seed})
    seed = resolve_seed(seed)  # None: a fresh seed, recorded in uns[key_added]["params"]["seed"]
    check_choice(method, DOMAIN_METHODS, "method")
    check_key(key_added, "key_added")
    reps = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if not reps or not all(isinstance(r, str) for r in reps):
        raise TypeError(f"use_rep must be an obsm key, 'X', or a non-empty list of them, got {use_rep!r}.")
    if n_domains is not None and (not isinstance(n_domains, int | np.integer) or isinstance(n_domains, bool)):
        raise TypeError(f"n_domains must be an integer or None, got {n_domains!r}.")
    if n_domains is not None and n_domains < 1:
        raise ValueError(f"n_domains must be at least 1, got {n_domains}.")
    if not isinstance(smooth, int | np.integer) or isinstance(smooth, bool) or smooth < 0:
        raise ValueError(f"smooth must be a non-negative integer (rounds of smoothing), got {smooth!r}.")
    if not isinstance(n_hops, int | np.integer) or isinstance(n_hops, bool) or n_hops < 0:
        raise ValueError(f"n_hops must be a non-negative integer (rings aggregated), got {n_hops!r}.")
    if not isinstance(n_init, int | np.integer) or isinstance(n_init, bool) or n_init < 1:
        raise ValueError(f"n_init must be a positive integer (mixture initialisations), got {n_init!r}.")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}.")
    autok = method == "gmm" and n_domains is None
    if autok:
        lo_k, hi_k = _check_autok(autok_range, autok_runs)
    table = _io.get_table(data, table_key)
    check_absent(key_added in table.obs and not overwrite, f"obs[{key_added!r}]")
    if (smooth > 0 or n_hops > 0) and connectivity_key not in table.obsp:
        what = f"smooth={smooth}" if smooth > 0 else f"n_hops={n_hops}"
        raise KeyError(
            f"{what} needs a spatial graph, but obsp[{connectivity_key!r}] is missing. Build one first with "
            "`ss.pp.build_graph(data, method='delaunay')` (or method='radius', radius=... / 'knn'), or pass smooth=0 "
            "and n_hops=0."
        )
    section_of = _io.get_sections(table, library_key=library_key)
    sections = section_of if per_section else pd.Categorical(["all"] * table.n_obs)
    counts = pd.Series(np.asarray(sections)).value_counts()
    _check_domains_fit(counts, n_domains, (lo_k, hi_k) if autok else None)

    center = bool(center_sections) and not per_section and len(section_of.categories) > 1
    rep = features(
        table,
        reps,
        n_hops=int(n_hops),
        smooth=int(smooth),
        connectivity_key=connectivity_key,
        seed=seed,
        sections=np.asarray(section_of) if center else None,
    )

    labels = np.empty(table.n_obs, dtype=object)
    resolutions: dict[str, float] = {}
    curves: dict[str, dict[str, Any]] = {}
    kwargs = dict(method_kwargs or {})
    for section in sections.categories:
        idx = np.flatnonzero(np.asarray(sections) == section)
        if autok:
            codes, curves[storable_key(section)] = _autok(
                rep[idx], range(lo_k, hi_k + 1), int(autok_runs), seed, kwargs
            )
        elif method == "gmm":
            codes = _gmm(rep[idx], int(n_domains), seed, {"n_init": int(n_init), **kwargs})
        else:
            codes, resolutions[storable_key(section)] = _leiden(
                rep[idx], n_domains, resolution, n_neighbors, seed, kwargs
            )
        codes = _order_by_size(codes)
        labels[idx] = [f"{section}_{c}" for c in codes] if per_section else [str(c) for c in codes]

    table.obs[key_added] = pd.Categorical(labels, categories=_natural_order(pd.unique(labels)))
    params: dict[str, Any] = {
        "use_rep": use_rep if isinstance(use_rep, str) else list(reps),
        "method": method,
        "per_section": bool(per_section),
        "smooth": int(smooth),
        "seed": int(seed),
    }
    if n_hops:
        params["n_hops"] = int(n_hops)
    if n_domains is not None:
        params["n_domains"] = int(n_domains)
    if (per_section or center) and library_key is not None:
        params["library_key"] = library_key
    if center:
        params["center_sections"] = True
    if method == "leiden":
        params["n_neighbors"] = int(n_neighbors)
    elif not autok:
        params["n_init"] = int(n_init)
    if autok:
        params["autok_range"] = [int(lo_k), int(hi_k)]
        params["autok_runs"] = int(autok_runs)
    table.uns[key_added] = run_record("domains", params)
    if resolutions:
        table.uns[key_added]["resolution"] = resolutions
    if curves:
        table.uns[key_added]["autok"] = curves
    logg.info(f"Found {table.obs[key_added].nunique()} domains with {method} on {use_rep!r} -> obs[{key_added!r}].")


def _gmm(rep: np.ndarray, n_domains: int, seed: int, kwargs: dict, *, with_score: bool = False):
    """Labels of a Gaussian mixture fitted to ``rep`` (and, with ``with_score``, its mean log-likelihood)."""
    from sklearn.mixture import GaussianMixture

    options = {"covariance_type": DEFAULT_COVARIANCE, "reg_covar": 1e-4, "random_state": seed, **kwargs}
    mixture = GaussianMixture(n_components=n_domains, **options).fit(rep)
    labels = mixture.predict(rep)
    return (labels, float(mixture.score(rep))) if with_score else labels


def _check_domains_fit(counts: pd.Series, n_domains: int | None, autok_range: tuple[int, int] | None) -> None:
    """Refuse (:class:`ArgumentError`, a usage error) more domains than the smallest section's cells can hold."""
    smallest, where = int(counts.min()), counts.idxmin()
    most = max(1, smallest // MIN_CELLS_PER_DOMAIN)
    if n_domains is not None and n_domains > 1 and smallest < MIN_CELLS_PER_DOMAIN * n_domains:
        raise ArgumentError(
            "n_domains",
            n_domains,
            f"at most {most} on {smallest} cells (section {where!r}), so that each domain has at least "
            f"{MIN_CELLS_PER_DOMAIN} cells: domains are regions of many cells",
            most,
            "Without n_domains (n_domains=None), method='gmm' chooses it (AutoK).",
        )
    if autok_range is not None and smallest < autok_range[1]:
        low = min(autok_range[0], smallest)
        raise ArgumentError(
            "autok_range",
            tuple(autok_range),
            f"a range whose largest number of domains is at most the {smallest} cells of section {where!r}",
            (low, smallest),
        )


def _check_autok(autok_range, autok_runs) -> tuple[int, int]:
    try:
        lo, hi = autok_range
    except (TypeError, ValueError):
        raise TypeError(f"autok_range must be a pair (smallest, largest), got {autok_range!r}.") from None
    ints = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (lo, hi))
    if not ints or lo < 1 or hi < lo:
        example = (min(lo, hi), max(lo, hi)) if ints and min(lo, hi) >= 1 else (2, 15)
        raise ArgumentError("autok_range", tuple(autok_range), "two integers 1 <= smallest <= largest", example)
    if not isinstance(autok_runs, int | np.integer) or isinstance(autok_runs, bool) or autok_runs < 2:
        raise ValueError(f"autok_runs must be an integer of at least 2 (runs compared per K), got {autok_runs!r}.")
    return int(lo), int(hi)


def _autok(rep: np.ndarray, ks: range, n_runs: int, seed: int, kwargs: dict) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit ``n_runs`` mixtures per K; return the labels of the most likely run at the most stable K and the curve."""
    from sklearn.metrics import adjusted_rand_score

    stability, first = [], {}
    for k in ks:
        fits = [_gmm(rep, k, seed + r, kwargs, with_score=True) for r in range(n_runs)]
        runs = [labels for labels, _ in fits]
        first[k] = max(fits, key=lambda fit: fit[1])[0]
        pairs = [adjusted_rand_score(runs[i], runs[j]) for i in range(n_runs) for j in range(i + 1, n_runs)]
        stability.append(float(np.mean(pairs)))
    values = np.asarray(stability)
    best = max(k for k, v in zip(ks, values, strict=True) if v >= values.max() - 1e-9)
    logg.info(f"AutoK: most stable number of domains {best} (stability {values.max():.3f}).")
    return first[best], {"k": np.asarray(list(ks)), "stability": values, "n_domains": int(best)}


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
