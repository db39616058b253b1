"""Annotation quality: confusion matrix and per-class F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._docs import inject_docs
from .._validate import check_choice
from ..io._access import is_spatialdata
from ._common import PathLike, as_table, check_save, finish, labels_from, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _labels(
    y_true: Any, y_pred: Any, true_key: str | None, pred_key: str | None, table_key: str, mask: Any
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return aligned true / predicted labels (strings), dropping missing ones; also the number dropped."""
    table = None
    if isinstance(y_true, AnnData) or is_spatialdata(y_true):
        table = as_table(y_true, table_key)
        if true_key is None or pred_key is None:
            raise TypeError(
                "With an AnnData / SpatialData, name the obs columns: true_key='cell_type', "
                "pred_key='annotate_prediction' (for example)."
            )
        y_true, y_pred = true_key, pred_key
    elif y_pred is None:
        raise TypeError("Pass y_pred (the predicted labels) next to y_true, or an AnnData with true_key / pred_key.")
    truth = labels_from(y_true, "true_key" if table is not None else "y_true", table)
    pred = labels_from(y_pred, "pred_key" if table is not None else "y_pred", table)
    if len(truth) != len(pred):
        raise ValueError(f"y_true has {len(truth)} labels but y_pred has {len(pred)}.")
    keep = np.ones(len(truth), dtype=bool)
    if mask is not None:
        if isinstance(mask, str):
            if table is None or mask not in table.obs:
                raise KeyError(f"mask={mask!r} must be a boolean obs column of the table passed first.")
            mask = table.obs[mask].to_numpy()
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != keep.shape:
            raise ValueError(f"mask must be a boolean array of length {len(keep)}, got {mask.dtype} {mask.shape}.")
        keep &= mask
    missing = pd.isna(truth) | pd.isna(pred)
    n_dropped = int((keep & missing).sum())
    keep &= ~missing
    if not keep.any():
        raise ValueError("No observation has both a true and a predicted label (after the mask).")
    return truth[keep].astype(str), pred[keep].astype(str), n_dropped


def _classes(truth: np.ndarray, pred: np.ndarray, classes: Sequence[Any] | None) -> list[str]:
    if classes is not None:
        return [str(c) for c in classes]
    return sorted(set(truth) | set(pred))


@inject_docs
def confusion_matrix(
    y_true: Any,
    y_pred: Any = None,
    *,
    true_key: str | None = None,
    pred_key: str | None = None,
    table_key: str = "table",
    mask: Any = None,
    normalize: str | None = "true",
    classes: Sequence[Any] | None = None,
    annotate: bool | None = None,
    cmap: str = "Blues",
    ax: Axes | None = None,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure | Axes:
    """Confusion matrix of predicted vs true labels (rows true, columns predicted).

    Parameters
    ----------
    %(labels_input)s
    mask
        Boolean array (or obs column) selecting the observations to evaluate, e.g. the held-out cells.
    normalize
        ``"true"`` (rows sum to 1: recall on the diagonal), ``"pred"`` (columns sum to 1), ``"all"``, or ``None``
        (counts), as in :func:`sklearn.metrics.confusion_matrix`.
    classes
        Class order (default: sorted union of the labels).
    annotate
        Write values in the cells (default: when there are at most 20 classes).
    cmap
        Colour map.
    ax
        Draw into this axes.
    %(save_show)s

    Returns
    -------
    The figure, or ``ax`` when given. The title reports accuracy and macro F1; observations with a missing label
    are left out.

    Examples
    --------
    >>> import sslspatial as ss
    >>> fig = ss.pl.confusion_matrix(["a", "a", "b", "c"], ["a", "b", "b", "c"])
    >>> fig.axes[0].get_xlabel()
    'predicted'
    """
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix
    from sklearn.metrics import f1_score

    check_save(save)
    check_choice(str(normalize), ["true", "pred", "all", "None"], "normalize")
    truth, pred, n_dropped = _labels(y_true, y_pred, true_key, pred_key, table_key, mask)
    labels = _classes(truth, pred, classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = sk_confusion_matrix(truth, pred, labels=labels, normalize=normalize)
    if ax is None:
        side = max(3.5, 0.45 * len(labels) + 2.0)
        fig, axes = new_figure(1, 1, panel=(side + 1.0, side))
        target = axes[0, 0]
    else:
        fig, target = ax.figure, ax
    vmax = 1.0 if normalize is not None else max(float(matrix.max()), 1.0)
    image = target.imshow(matrix, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=target, shrink=0.8, label="fraction" if normalize else "count")
    target.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize="small")
    target.set_yticks(range(len(labels)), labels, fontsize="small")
    target.set_xlabel("predicted")
    target.set_ylabel("true")
    if annotate is None:
        annotate = len(labels) <= 20
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            colour = "white" if value > 0.6 * vmax else "black"
            target.text(j, i, text, ha="center", va="center", fontsize="x-small", color=colour)
    accuracy = float(np.mean(truth == pred))
    macro_f1 = float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0))
    title = f"accuracy {accuracy:.3f} · macro F1 {macro_f1:.3f} (n = {len(truth)})"
    if n_dropped:
        title += f"\n{n_dropped} unlabelled left out"
    target.set_title(title, fontsize="medium")
    return finish(fig, ax, save, show)


@inject_docs
def class_f1(
    y_true: Any,
    y_pred: Any = None,
    *,
    true_key: str | None = None,
    pred_key: str | None = None,
    table_key: str = "table",
    mask: Any = None,
    classes: Sequence[Any] | None = None,
    color: str = "#4C72B0",
    ax: Axes | None = None,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure | Axes:
    """Per-class F1 as horizontal bars sorted from best to worst, with each class's support.

    Parameters
    ----------
    %(labels_input)s
    mask
        Boolean array (or obs column) selecting the observations to evaluate.
    classes
        Classes to show (default: those present in the true labels).
    color
        Bar colour.
    ax
        Draw into this axes.
    %(save_show)s

    Returns
    -------
    The figure, or ``ax`` when given. Bars are labelled ``n=<support>`` (true observations of the class); a dashed
    line marks the macro F1 over the shown classes.

    Examples
    --------
    >>> import sslspatial as ss
    >>> fig = ss.pl.class_f1(["a", "a", "b", "c"], ["a", "b", "b", "c"])
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['c', 'a', 'b']
    """
    from sklearn.metrics import precision_recall_fscore_support

    check_save(save)
    truth, pred, _ = _labels(y_true, y_pred, true_key, pred_key, table_key, mask)
    labels = [str(c) for c in classes] if classes is not None else sorted(set(truth))
    _, _, f1, support = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    order = np.lexsort((np.array(labels, dtype=object).astype(str), -f1))  # best first, ties by name
    labels_sorted = [labels[i] for i in order]
    f1_sorted, support_sorted = f1[order], support[order]
    if ax is None:
        fig, axes = new_figure(1, 1, panel=(5.0, max(2.5, 0.35 * len(labels) + 1.2)))
        target = axes[0, 0]
    else:
        fig, target = ax.figure, ax
    y = np.arange(len(labels_sorted))[::-1]  # best at the top
    bars = target.barh(y, f1_sorted, color=color, height=0.7)
    target.set_yticks(y, labels_sorted, fontsize="small")
    for bar, n in zip(bars, support_sorted, strict=True):
        target.text(
            bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"n={int(n)}", va="center", fontsize="x-small"
        )
    macro = float(np.mean(f1)) if len(f1) else float("nan")
    target.axvline(macro, color="#C44E52", linestyle="--", linewidth=1.2, label=f"macro F1 = {macro:.3f}")
    target.set_xlim(0, 1.15)
    target.set_xlabel("F1")
    target.set_title("Per-class F1", fontsize="medium")
    target.legend(frameon=False, fontsize="small", loc="lower right")
    return finish(fig, ax, save, show)
