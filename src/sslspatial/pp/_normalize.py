"""Log-normalisation, gene standardisation and PCA of expression: the one kernel of every tool that needs them."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

__all__ = ["expression_pcs", "log_normalize", "pca", "pearson_residuals", "standardize"]


def log_normalize(
    x,
    target_sum: float | Literal["median"] = 1e4,
    *,
    library: np.ndarray | None = None,
    min_library: float = 1.0,
):
    """``log1p(x * target_sum / library)``, row by row (the product first: exact for integer counts).

    Parameters
    ----------
    x
        ``(n_obs, n_vars)`` counts, dense or sparse (a sparse ``x`` comes back as a CSR matrix of the same sparsity).
        The dtype is kept (float32 stays float32 unless ``library`` is float64).
    target_sum
        Total every row is scaled to, or ``"median"``: the median of the positive libraries (1 if there is none).
    library
        Per-row totals ``(n_obs,)`` or ``(n_obs, 1)``; default: the row sums of ``x``.
    min_library
        Floor of the library in the division (rows with library 0 stay 0).

    Examples
    --------
    >>> log_normalize(np.array([[1.0, 3.0], [0.0, 0.0]]), target_sum=4.0).round(3).tolist()
    [[0.693, 1.386], [0.0, 0.0]]
    """
    library = np.asarray(x.sum(1)).ravel() if library is None else np.asarray(library).ravel()
    if isinstance(target_sum, str):
        if target_sum != "median":
            raise ValueError(f"target_sum must be a number or 'median', got {target_sum!r}.")
        positive = library[library > 0]
        target_sum = np.median(positive) if positive.size else 1.0
    denominator = np.maximum(library, min_library)
    if sp.issparse(x):
        x = sp.csr_matrix(x, copy=True)
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        x.data = np.log1p(x.data * target_sum / denominator[rows])
        return x
    return np.log1p(x * target_sum / denominator[:, None])


def pearson_residuals(
    x, theta: float = 100.0, clip: float | None = None, gene_fraction: np.ndarray | None = None
) -> np.ndarray:
    """Analytic Pearson residuals of counts under a negative binomial with no cell-type structure.

    ``(x - mu) / sqrt(mu + mu**2 / theta)`` with ``mu[i, g] = library[i] * total[g] / total`` (Lause, Berens and
    Kobak 2021, scanpy's ``experimental.pp.normalize_pearson_residuals``), clipped to ``[-clip, clip]``
    (default ``sqrt(n_obs)``). Genes with no counts get 0. ``gene_fraction`` replaces ``total[g] / total`` by given
    fractions (one per column, e.g. a reference's, computed on the genes of ``x``), so that new cells are scaled
    like the cells the fractions came from; ``library[i]`` is still each row's own sum. Unlike ``log1p`` of counts scaled to a fixed total, the
    result does not depend on the scale of the libraries: with a few hundred counts per cell (targeted panels such as
    osmFISH), scaling to 10,000 before ``log1p`` separates zeros from ones far more than ones from tens.

    Examples
    --------
    >>> r = pearson_residuals(np.array([[1.0, 3.0], [3.0, 1.0]]), theta=np.inf)
    >>> r.round(3).tolist()  # mu = 2 everywhere: (x - 2) / sqrt(2)
    [[-0.707, 0.707], [0.707, -0.707]]
    """
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float64)
    library, gene_total = x.sum(1, keepdims=True), x.sum(0, keepdims=True)
    if gene_fraction is None:
        gene_fraction = gene_total / max(float(gene_total.sum()), 1e-12)
    mu = library * np.asarray(gene_fraction, dtype=np.float64).reshape(1, -1)
    variance = mu + mu**2 / theta
    residuals = np.divide(x - mu, np.sqrt(variance), out=np.zeros_like(x), where=variance > 0)
    clip = np.sqrt(x.shape[0]) if clip is None else clip
    return np.clip(residuals, -clip, clip)


def standardize(x: np.ndarray, *, max_value: float | None = None, eps: float = 0.0) -> np.ndarray:
    """Centre every column and divide it by its standard deviation (``+ eps``; a constant column is only centred).

    With ``max_value`` the result is clipped to ``[-max_value, max_value]`` (scanpy's ``scale(max_value=...)``).

    Examples
    --------
    >>> standardize(np.array([[0.0, 1.0], [2.0, 1.0]])).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    sd = x.std(0)
    if eps:
        sd = sd + eps
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    return x if max_value is None else np.clip(x, -max_value, max_value)


def pca(x: np.ndarray, n_comps: int, seed: int = 0) -> np.ndarray:
    """Scores of the leading ``n_comps`` principal components (at most ``min(n_obs, n_vars) - 1``).

    scikit-learn's PCA, randomised above 20,000 rows.

    Examples
    --------
    >>> pca(np.random.default_rng(0).normal(size=(20, 5)), 3).shape
    (20, 3)
    """
    from sklearn.decomposition import PCA

    n_comps = int(min(n_comps, x.shape[1] - 1, x.shape[0] - 1))
    solver = "randomized" if x.shape[0] > 20_000 else "auto"
    return PCA(n_comps, random_state=seed, svd_solver=solver).fit_transform(x)


def expression_pcs(
    x,
    n_comps: int = 30,
    *,
    log1p: bool = True,
    target_sum: float = 1e4,
    scale: bool = False,
    pearson: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """PCA of ``log1p``-normalised expression (``log1p=False``: of ``x`` as it is).

    With ``scale=True`` every gene is standardised (clipped at 10 sd) before the PCA: the scanpy recipe
    ``normalize_total``, ``log1p``, ``scale``, ``pca``. With ``pearson=True`` (counts only, ``log1p=True``) the PCA
    is of :func:`pearson_residuals` instead of the log-normalised values (``target_sum`` and ``scale`` are ignored).

    Examples
    --------
    >>> expression_pcs(np.random.default_rng(0).poisson(2, (50, 10)).astype(float), 3).shape
    (50, 3)
    """
    if log1p and pearson:
        return pca(pearson_residuals(x), n_comps, seed)
    x = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=float)
    if log1p:
        x = log_normalize(x, target_sum)
    if scale:
        x = standardize(x, max_value=10)
    return pca(x, n_comps, seed)
