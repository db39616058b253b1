"""Input checks with actionable messages, raised before any work starts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._arguments import (  # noqa: F401 - the numeric checks are part of the shared checks
    RULES,
    ArgumentError,
    check_indices,
    check_int,
    check_number,
    check_probability,
    resolve_seed,
)
from ._arguments import check_numbers as check_numeric
from ._devices import check_devices, is_main_process  # noqa: F401
from ._types import is_backed_sparse


def check_numbers(params: dict[str, Any]) -> None:
    """Check the numeric arguments of a user function (:func:`sslspatial._arguments.check_numbers`) and its hardware.

    ``devices`` with ``accelerator`` (and ``train_kwargs["strategy"]``) go through
    :func:`~sslspatial._devices.check_devices`, before any work (it imports torch only for counts > 1).

    Examples
    --------
    >>> check_numbers({"n_latent": 32, "devices": "auto", "accelerator": "cpu"})
    """
    if "devices" in params:
        strategy = (params.get("train_kwargs") or {}).get("strategy")
        check_devices(params.get("accelerator", "auto"), params["devices"], strategy)
    check_numeric(params)


def check_choice(value: Any, choices: Iterable[str], name: str) -> str:
    """Raise a ``ValueError`` naming the valid options if ``value`` is not one of ``choices``.

    Examples
    --------
    >>> check_choice("knn", ["knn", "radius"], "method")
    'knn'
    """
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"Unknown {name}={value!r}; choose one of {', '.join(map(repr, choices))}.")
    return value


def check_coordinates(coords: Any, where: str = "coordinates") -> None:
    """Raise if coordinates are not a finite numeric ``(n, >=2)`` array."""
    arr = np.asarray(coords)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{where} must have shape (n_obs, 2), got {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{where} must be numeric, got dtype {arr.dtype}. Convert them with `.astype(float)`.")
    bad = ~np.isfinite(arr[:, :2]).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{where} has {int(bad.sum())} observations with NaN or infinite coordinates (first at row "
            f"{int(np.flatnonzero(bad)[0])}). Drop them, e.g. `adata = adata[np.isfinite(adata.obsm['spatial']).all(1)]`."
        )


def _values(x: Any) -> np.ndarray:
    return x.data if sp.issparse(x) else np.asarray(x)


def _value_blocks(x: Any, block: int = 1 << 24):
    """The stored values of ``x``; of a backed sparse dataset (counts on disk), ``block`` values at a time."""
    if is_backed_sparse(x):
        data = x.group["data"]
        for start in range(0, data.shape[0], block):
            yield np.asarray(data[start : start + block])
    else:
        yield _values(x)


def check_finite(x: Any, where: str = "X") -> None:
    """Raise if a dense or sparse matrix (in memory or backed on disk) holds NaN or infinite values.

    A matrix on disk is checked once per store (:mod:`sslspatial.io._checked`).
    """
    _check_store(x, where, "gaussian")


def _finite_error(x: Any, where: str) -> ValueError:
    n_bad = sum(int((~np.isfinite(values)).sum()) for values in _value_blocks(x))
    return ValueError(f"{where} contains {n_bad} NaN or infinite values; remove or impute them before training.")


def check_values(values: np.ndarray, where: str = "X", likelihood: str = "nb") -> None:
    """Raise the error of :func:`check_counts` (``likelihood="gaussian"``: of :func:`check_finite`) on ``values``.

    One block of values, e.g. the counts of a minibatch read from disk (:class:`sslspatial.data.TileReader`).

    Examples
    --------
    >>> check_values(np.array([0.0, 3.0]))
    >>> check_values(np.array([-1.0]), "X", "poisson")
    Traceback (most recent call last):
    ...
    ValueError: X holds negative values (min -1) but likelihood='poisson' models counts. ...
    """
    if not np.isfinite(values).all():
        raise _finite_error(values, where)
    if likelihood == "gaussian" or values.size == 0:
        return
    if values.min() < 0:
        raise ValueError(
            f"{where} holds negative values (min {values.min():.3g}) but likelihood={likelihood!r} models counts. "
            "Pass raw counts (e.g. `layer='counts'`) or use likelihood='gaussian'."
        )
    frac = values[np.abs(values - np.round(values)) > 1e-6]
    if frac.size:
        raise ValueError(
            f"{where} holds non-integer values (e.g. {frac[0]:.3g}) but likelihood={likelihood!r} models counts. "
            "Pass raw counts (e.g. `layer='counts'`) or use likelihood='gaussian' for log-normalised data."
        )


def _check_store(x: Any, where: str, likelihood: str) -> None:
    """One pass over the stored values of ``x``; for counts on disk, skipped when this store passed it before."""
    kind = "finite" if likelihood == "gaussian" else "counts"
    key = None
    if is_backed_sparse(x):
        from .io._checked import passed_before, record_pass

        done, key = passed_before(x, kind)
        if done:
            return
    try:
        for values in _value_blocks(x):  # one block in memory; a backed matrix is read piece by piece
            check_values(values, where, likelihood)
    except ValueError as error:
        if "NaN or infinite" in str(error):  # count them over the whole matrix, as the message says
            raise _finite_error(x, where) from None
        raise
    if key is not None:
        record_pass(x, kind, key)


def check_counts(x: Any, where: str = "X", likelihood: str = "nb") -> None:
    """Raise if a matrix is not non-negative integer counts, as a count likelihood requires.

    A matrix on disk (a table opened with :func:`sslspatial.io.read_backed`) is read in one streamed pass, once per
    store: the result is kept in the store and the next call skips the pass (:mod:`sslspatial.io._checked` says what
    guarantees that); every minibatch's values are still checked as training reads them.

    Examples
    --------
    >>> check_counts(np.array([[0.0, 2.0]]))
    >>> check_counts(np.array([[0.5, 2.0]]))
    Traceback (most recent call last):
    ...
    ValueError: X holds non-integer values (e.g. 0.5) but likelihood='nb' models counts. ...
    """
    _check_store(x, where, likelihood)


def check_obs_column(table: Any, key: str, what: str = "column") -> None:
    """Raise if ``key`` is not a column of ``table.obs``, listing the columns that exist."""
    if key not in table.obs:
        from ._constants import user_columns

        cols = ", ".join(map(repr, user_columns(table.obs)[:20])) or "none"
        raise KeyError(f"{what} {key!r} is not a column of obs (columns: {cols}).")


def check_graph(table: Any, connectivity_key: str) -> None:
    """Raise if the spatial graph is missing, naming the call that builds it."""
    if connectivity_key not in table.obsp:
        raise KeyError(
            f"No spatial graph: obsp[{connectivity_key!r}] is missing. Build one first with "
            "`ss.pp.build_graph(data, method='radius', radius=...)` (or method='knn' / 'delaunay' / 'grid'), "
            "or use encoder='mlp' to train without a graph."
        )


#: A graph encoder refuses a graph in which more than this fraction of the cells have no neighbour.
MAX_ISOLATED_FRACTION = 0.5


def check_graph_connected(table: Any, connectivity_key: str) -> None:
    """Raise before any training if the spatial graph has no edges or leaves most cells without a neighbour.

    A graph encoder then sees each cell alone, and trains silently as a (worse) MLP.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from anndata import AnnData
    >>> adata = AnnData(np.ones((4, 2)), obsp={"g": sp.csr_matrix((4, 4))})
    >>> check_graph_connected(adata, "g")
    Traceback (most recent call last):
    ...
    ValueError: The spatial graph obsp['g'] has no edges: ...
    """
    graph = sp.csr_matrix(table.obsp[connectivity_key])
    graph = graph - sp.diags(graph.diagonal())
    degree = np.asarray((graph != 0).sum(1)).ravel() + np.asarray((graph != 0).sum(0)).ravel()
    isolated = float(np.mean(degree == 0)) if degree.size else 1.0
    fix = (
        "rebuild it with `ss.pp.build_graph(data, method='radius', radius=<larger>)` (the radius is in the units of "
        "the coordinates) or method='knn' / 'delaunay', or use encoder='mlp' to train without a graph."
    )
    if graph.nnz == 0:
        raise ValueError(f"The spatial graph obsp[{connectivity_key!r}] has no edges: {fix}")
    if isolated > MAX_ISOLATED_FRACTION:
        raise ValueError(
            f"{isolated:.0%} of the cells have no neighbour in the spatial graph obsp[{connectivity_key!r}]: {fix}"
        )


def check_unique_var_names(table: Any, where: str = "the table") -> None:
    """Raise if gene names repeat: genes are matched by name, so a duplicate would be ambiguous.

    Examples
    --------
    >>> from anndata import AnnData
    >>> import pandas as pd
    >>> check_unique_var_names(AnnData(np.ones((1, 2)), var=pd.DataFrame(index=["a", "a"])))
    Traceback (most recent call last):
    ...
    ValueError: the table has 1 duplicated gene name(s) in var_names (e.g. 'a'): make them unique first with `adata.var_names_make_unique()`.
    """
    names = table.var_names
    if not names.is_unique:
        dup = names[names.duplicated()].unique()
        raise ValueError(
            f"{where} has {len(dup)} duplicated gene name(s) in var_names (e.g. {str(dup[0])!r}): make them unique "
            "first with `adata.var_names_make_unique()`."
        )


def check_float_image_range(array: Any, value_range: Any, name: str = "image") -> None:
    """Refuse a floating-point image with values outside ``[0, 1]`` when no ``value_range`` says what they mean.

    The same rule as the histology models (:func:`sslspatial.pp._patches.check_image_values`): a float image in, for
    example, 0-765 cannot be told apart from a normalised one without ``value_range=(low, high)``.

    Examples
    --------
    >>> check_float_image_range(np.full((3, 2, 2), 700.0), None)
    Traceback (most recent call last):
    ...
    ValueError: image has float values in [700, 700], outside [0, 1], so their range is unknown: pass value_range=(low, high), e.g. value_range=(0, 700).
    """
    arr = np.asarray(array)
    if value_range is not None or not np.issubdtype(arr.dtype, np.floating) or arr.size == 0:
        return
    low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
    if low < 0 or high > 1:
        raise ValueError(
            f"{name} has float values in [{low:g}, {high:g}], outside [0, 1], so their range is unknown: pass "
            f"value_range=(low, high), e.g. value_range=({min(0, int(np.floor(low)))}, {int(np.ceil(high))})."
        )


def unstorable_keys(table: Any) -> list[str]:
    """Where a name of ``table`` contains ``"/"``, which zarr refuses and h5ad silently turns into nested groups.

    Column names of ``obs`` / ``var`` and of DataFrames in ``obsm`` / ``varm`` / ``uns``, the keys of ``obsm``,
    ``varm``, ``obsp``, ``varp``, ``layers`` and (nested) ``uns``. Values (labels, gene names) are not keys and may hold
    any character.

    Examples
    --------
    >>> from anndata import AnnData
    >>> adata = AnnData(np.ones((2, 1)), uns={"run": {"eL2/3": 0.5}})
    >>> unstorable_keys(adata)
    ["uns['run']['eL2/3']"]
    """
    import pandas as pd

    found: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, pd.DataFrame):
            found.extend(f"{where} column {c!r}" for c in value.columns if "/" in str(c))
        elif isinstance(value, dict):
            for k, v in value.items():
                path = f"{where}[{k!r}]"
                if "/" in str(k):
                    found.append(path)
                walk(v, path)

    for attr in ("obs", "var"):
        frame = getattr(table, attr)
        found.extend(f"{attr} column {c!r}" for c in frame.columns if "/" in str(c))
    for attr in ("obsm", "varm", "obsp", "varp", "layers"):
        for k, v in getattr(table, attr, {}).items():
            if "/" in str(k):
                found.append(f"{attr}[{k!r}]")
            walk(v, f"{attr}[{k!r}]")
    walk(dict(table.uns), "uns")
    return found


def storable_key(name: Any) -> str:
    """``name`` as a key that zarr and h5ad keep: ``"%"`` and ``"/"`` percent-encoded (``%25``, ``%2F``).

    For dictionaries in ``uns`` keyed by a user's value (a section name); :func:`urllib.parse.unquote` reverses it.

    Examples
    --------
    >>> storable_key("BZ5/left")
    'BZ5%2Fleft'
    """
    return str(name).replace("%", "%25").replace("/", "%2F")


def check_storable(table: Any, where: str = "the table") -> None:
    """Raise before writing if a name in ``table`` contains ``"/"`` (see :func:`unstorable_keys`), naming each one.

    zarr refuses such a key part way through a write, and h5ad splits it into nested groups, so this runs before
    anything is written.

    Examples
    --------
    >>> from anndata import AnnData
    >>> check_storable(AnnData(np.ones((2, 1)), uns={"run": {"eL2/3": 0.5}}))
    Traceback (most recent call last):
    ...
    ValueError: the table cannot be saved: "/" separates paths in zarr and h5ad, so these names would be lost: ...
    """
    bad = unstorable_keys(table)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f'{where} cannot be saved: "/" separates paths in zarr and h5ad, so these names would be lost: {shown}. '
            'Rename them (e.g. replace "/" with "-"), or keep per-class values as an array with the class names in a '
            "list in uns, as ss.tl.annotate does. Nothing was written."
        )


class OutputExistsError(KeyError, ValueError):
    """An output exists already and ``overwrite=False``: the one error every ``ss.tl`` and ``ss.pp`` function raises.

    It is both a ``KeyError`` and a ``ValueError``, so code written against either still catches it.

    Examples
    --------
    >>> try:
    ...     check_absent(True, "obsm['X_pretrain_mask']")
    ... except OutputExistsError as error:
    ...     print(error)
    obsm['X_pretrain_mask'] exists already: pass overwrite=True or another key_added.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_absent(exists: bool, where: str, option: str = "key_added") -> None:
    """Raise :class:`OutputExistsError` naming ``where`` and the fix when ``exists`` (an output would be replaced)."""
    if exists:
        raise OutputExistsError(f"{where} exists already: pass overwrite=True or another {option}.")


def trainer_options(function: str, accelerator: Any, devices: Any, train_kwargs: dict | None) -> dict:
    """``train`` keyword arguments: ``accelerator`` and ``devices`` plus ``train_kwargs``, which may not repeat them.

    Examples
    --------
    >>> trainer_options("pretrain_mask", "cpu", 1, {"enable_progress_bar": False})
    {'accelerator': 'cpu', 'devices': 1, 'enable_progress_bar': False}
    """
    extra = dict(train_kwargs or {})
    twice = sorted({"accelerator", "devices"} & set(extra))
    if twice:
        raise TypeError(f"Pass {', '.join(twice)} as argument(s) of {function}, not inside train_kwargs.")
    check_devices(accelerator, devices, extra.get("strategy"))
    return {"accelerator": accelerator, "devices": devices, **extra}


OutputExistsError.__module__ = "sslspatial"  # documented and raised as ss.OutputExistsError
