"""The distribution of per-gene correlations (e.g. predicted vs measured expression)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import inject_docs
from ..io._access import is_spatialdata
from ._common import PathLike, as_table, check_save, finish, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _correlation_series(pearson: Any, key: str | None, table_key: str, gene_names: Sequence[str] | None) -> pd.Series:
    if isinstance(pearson, AnnData) or is_spatialdata(pearson):
        table = as_table(pearson, table_key)
        if key is None:
            candidates = [k for k in table.uns if "pearson" in str(k).lower() or "correlation" in str(k).lower()]
            candidates += [c for c in table.var.columns if "pearson" in str(c).lower()]
            model_only = [c for c in candidates if not str(c).startswith("baseline_")]
            if len(model_only) == 1:  # hist2expr writes the yardstick next to the model: the model's is meant
                candidates = model_only
            if len(candidates) != 1:
                raise KeyError(
                    f"Pass key= naming the per-gene correlations in uns or var (candidates found: {candidates})."
                )
            key = candidates[0]
        if key in table.uns:
            value = table.uns[key]
        elif key in table.var:
            value = table.var[key]
        else:
            raise KeyError(f"key={key!r} is neither in uns nor a var column of the table.")
        if isinstance(value, Mapping) and not isinstance(value, pd.Series):
            value = pd.Series(dict(value))
        if isinstance(value, pd.DataFrame):
            numeric = value.select_dtypes("number")
            col = "pearson" if "pearson" in numeric else (numeric.columns[0] if numeric.shape[1] else None)
            if col is None:
                raise ValueError(f"uns[{key!r}] has no numeric column.")
            value = numeric[col]
        if not isinstance(value, pd.Series):
            arr = np.asarray(value, dtype=np.float64).ravel()
            value = pd.Series(arr, index=table.var_names if len(arr) == table.n_vars else None)
        pearson = value
    if isinstance(pearson, pd.DataFrame):
        pearson = pearson.select_dtypes("number").iloc[:, 0]
    if not isinstance(pearson, pd.Series):
        arr = np.asarray(pearson, dtype=np.float64).ravel()
        if gene_names is not None and len(gene_names) != len(arr):
            raise ValueError(f"gene_names has {len(gene_names)} entries but there are {len(arr)} correlations.")
        pearson = pd.Series(arr, index=None if gene_names is None else list(gene_names))
    return pd.to_numeric(pearson, errors="coerce").astype(np.float64)


@inject_docs
def gene_correlations(
    pearson: Any,
    *,
    key: str | None = None,
    table_key: str = "table",
    gene_names: Sequence[str] | None = None,
    n_top: int = 5,
    bins: int = 30,
    title: str | None = None,
    ax: Axes | None = None,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure | Axes:
    """Histogram of per-gene correlations with the median and the best genes marked.

    Parameters
    ----------
    pearson
        Per-gene correlations: a Series indexed by gene, an array (names from ``gene_names``), or an AnnData /
        SpatialData holding them in ``uns[key]`` (Series, dict, DataFrame with a ``pearson`` column, or an array
        aligned with ``var_names``) or ``var[key]``.
    key
        The uns / var key; default: the only one whose name contains "pearson" or "correlation" (columns of the
        baseline, ``baseline_*``, are passed over when exactly one other remains).
    table_key
        Table of a SpatialData.
    gene_names
        Names for an array of correlations.
    n_top
        Number of best genes annotated (needs gene names).
    bins
        Histogram bins.
    title
        Axes title (default states n and the median).
    ax
        Draw into this axes.
    %(save_show)s

    Returns
    -------
    The figure, or ``ax`` when given. NaN correlations (constant genes) are left out and counted in the title.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import sslspatial as ss
    >>> r = pd.Series(np.linspace(-0.2, 0.9, 50), index=[f"g{i}" for i in range(50)])
    >>> fig = ss.pl.gene_correlations(r, n_top=3)
    >>> fig.axes[0].get_xlabel()
    'Pearson r'
    """
    check_save(save)
    series = _correlation_series(pearson, key, table_key, gene_names)
    named = not isinstance(series.index, pd.RangeIndex)
    finite = series[np.isfinite(series.to_numpy())]
    if finite.empty:
        raise ValueError("No finite correlations to plot (all genes constant or NaN).")
    if ax is None:
        fig, axes = new_figure(1, 1, panel=(5.0, 3.6))
        target = axes[0, 0]
    else:
        fig, target = ax.figure, ax
    from matplotlib.ticker import MaxNLocator

    counts, edges, _ = target.hist(finite.to_numpy(), bins=bins, color="#4C72B0", edgecolor="white")
    median = float(np.median(finite.to_numpy()))
    target.axvline(median, color="#C44E52", linestyle="--", linewidth=1.5, label=f"median r = {median:.3f}")
    peak = float(counts.max())
    if named and n_top > 0:
        top = finite.sort_values(ascending=False).iloc[:n_top]
        step = 0.14 * peak
        target.set_ylim(0, peak * 1.08 + step * (len(top) + 0.5))
        for i, (gene, value) in enumerate(top.items()):
            height = float(counts[min(np.searchsorted(edges, value, side="right") - 1, len(counts) - 1)])
            target.annotate(
                str(gene),
                xy=(value, height),
                xytext=(value, peak * 1.08 + step * (len(top) - i)),
                ha="right",
                va="center",
                fontsize="small",
                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6},
            )
    target.yaxis.set_major_locator(MaxNLocator(integer=True))
    n_nan = int(len(series) - len(finite))
    default = f"Per-gene correlation (n = {len(finite)} genes, median {median:.2f})"
    if n_nan:
        default += f"\n{n_nan} constant / NaN genes left out"
    target.set_title(title if title is not None else default, fontsize="medium")
    target.set_xlabel("Pearson r")
    target.set_ylabel("genes")
    target.legend(frameon=False, fontsize="small", loc="upper left")
    return finish(fig, ax, save, show)
