"""Training curves from an scvi-tools model's ``history``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._docs import inject_docs
from ._common import PathLike, check_save, finish, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_SPLIT_TOKENS = {"train": "train", "training": "train", "validation": "validation", "val": "validation", "test": "test"}


def split_and_quantity(key: str) -> tuple[str, str]:
    """Return ``(split, quantity)`` of a history key: ``"elbo_validation"`` -> ``("validation", "elbo")``.

    The split is the first of ``train`` / ``validation`` / ``val`` / ``test`` among the ``_``-separated tokens (else
    ``""``); the quantity is the key without that token and without an ``epoch`` token, so ``train_loss_epoch``
    and ``validation_loss`` share the quantity ``loss``.

    Examples
    --------
    >>> split_and_quantity("train_loss_epoch"), split_and_quantity("reconstruction_loss_validation")
    (('train', 'loss'), ('validation', 'reconstruction_loss'))
    """
    tokens = [t for t in re.split(r"[_/]", key) if t]
    split = ""
    rest = []
    for token in tokens:
        if not split and token.lower() in _SPLIT_TOKENS:
            split = _SPLIT_TOKENS[token.lower()]
        elif token.lower() != "epoch":
            rest.append(token)
    return split, "_".join(rest) or key


def _as_history(model_or_history: Any) -> dict[str, pd.DataFrame]:
    history = getattr(model_or_history, "history", model_or_history)
    if isinstance(history, pd.DataFrame):
        history = {col: history[[col]] for col in history.columns}
    if history is None or not isinstance(history, Mapping):
        raise TypeError(
            "Expected a trained scvi-tools model (with `.history`), its history dict, or a DataFrame; got "
            f"{type(model_or_history).__name__}. Train the model first (`model.train()`)."
        )
    if not history:
        raise ValueError("The training history is empty: train the model first (`model.train(max_epochs=...)`).")
    return dict(history)


def _series(frame: Any, key: str) -> pd.Series:
    if isinstance(frame, pd.DataFrame):
        if frame.shape[1] == 0:
            raise ValueError(f"history[{key!r}] has no columns.")
        frame = frame[key] if key in frame.columns else frame.iloc[:, 0]
    series = pd.Series(frame) if not isinstance(frame, pd.Series) else frame
    return pd.to_numeric(series, errors="coerce").dropna()


_GENERIC = ("loss", "elbo")  # totals, checked last: when one equals a specific term exactly, the specific one stays


def _same(a: pd.Series, b: pd.Series) -> bool:
    return len(a) == len(b) and np.array_equal(a.index.to_numpy(), b.index.to_numpy()) and np.allclose(a, b, rtol=1e-7)


def drop_redundant(curves: dict[str, pd.Series]) -> tuple[dict[str, list[str]], list[str]]:
    """Group history curves by quantity, leaving out all-zero curves and panels that repeat another exactly.

    A curve that is zero at every epoch (``kl_local`` of a model without a KL term) is dropped; a panel whose
    every curve equals a curve of the same split in another panel (``elbo`` = ``reconstruction_loss`` when the KL
    terms are zero) is dropped, keeping the more specific quantity (``elbo`` and ``loss`` go first). Returns the
    groups ``{quantity: [keys]}`` in history order and a note per thing left out.

    Examples
    --------
    >>> import pandas as pd
    >>> c = {"elbo_train": pd.Series([3.0, 2.0]), "reconstruction_loss_train": pd.Series([3.0, 2.0]),
    ...      "kl_local_train": pd.Series([0.0, 0.0])}
    >>> drop_redundant(c)
    ({'reconstruction_loss': ['reconstruction_loss_train']}, ['kl_local (all zero)', 'elbo (= reconstruction_loss)'])
    """
    notes: list[str] = []
    groups: dict[str, list[str]] = {}
    zero: dict[str, list[str]] = {}
    for key, series in curves.items():
        quantity = split_and_quantity(str(key))[1]
        target = zero if bool(np.all(series.to_numpy() == 0)) else groups
        target.setdefault(quantity, []).append(key)
    notes += [f"{q} (all zero)" for q in zero if q not in groups]
    kept: dict[str, list[str]] = {}
    for quantity in sorted(groups, key=lambda q: _GENERIC.index(q) + 1 if q in _GENERIC else 0):
        twin = next(
            (
                other
                for other, members in kept.items()
                if all(
                    any(
                        split_and_quantity(str(k))[0] == split_and_quantity(str(m))[0] and _same(curves[k], curves[m])
                        for m in members
                    )
                    for k in groups[quantity]
                )
            ),
            None,
        )
        if twin is None:
            kept[quantity] = groups[quantity]
        else:
            notes.append(f"{quantity} (= {twin})")
    return {q: kept[q] for q in groups if q in kept}, notes


@inject_docs
def history(
    model_or_history: Any,
    keys: str | Sequence[str] | None = None,
    *,
    log: bool = False,
    include_steps: bool = False,
    redundant: bool = False,
    ax: Axes | None = None,
    ncols: int = 3,
    save: PathLike | None = None,
    show: bool = False,
) -> Figure | Axes:
    """Plot training curves, train and validation of the same quantity on shared axes.

    Parameters
    ----------
    model_or_history
        A trained scvi-tools model (its ``.history``: a dict of one-column DataFrames indexed by epoch, e.g.
        ``train_loss_epoch``, ``validation_loss``, ``elbo_train``), that dict itself, or a DataFrame with one column
        per key.
    keys
        History keys to draw (one line each). By default every numeric key except per-step ones (``*_step``).
    log
        Logarithmic y axis (symmetric-log when a curve has values <= 0).
    include_steps
        With ``keys=None``, also draw per-step keys.
    redundant
        With ``keys=None``, also draw curves that are zero at every epoch and panels that repeat another exactly
        (e.g. ``elbo`` equal to ``reconstruction_loss`` when a model has no KL term). By default these are left out
        and named in the figure's title line ("not shown: ...").
    ax
        Draw every curve on this axes instead of one panel per quantity.
    ncols
        Panels per row.
    %(save_show)s

    Returns
    -------
    The figure, or ``ax`` when given. Each panel is titled by its quantity; lines are labelled by their key.

    Examples
    --------
    >>> import pandas as pd
    >>> import sslspatial as ss
    >>> hist = {"train_loss_epoch": pd.DataFrame({"train_loss_epoch": [3.0, 2.0, 1.5]}),
    ...         "validation_loss": pd.DataFrame({"validation_loss": [3.2, 2.4, 2.0]})}
    >>> fig = ss.pl.history(hist, log=True)
    >>> fig.axes[0].get_title()
    'loss'
    """
    check_save(save)
    hist = _as_history(model_or_history)
    auto = keys is None
    if keys is None:
        keys = [k for k in hist if include_steps or not str(k).endswith("_step")] or list(hist)
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in hist]
        if missing:
            raise KeyError(f"History has no key(s) {missing}; available: {', '.join(map(str, hist))}.")
    curves = {k: _series(hist[k], k) for k in keys}
    curves = {k: s for k, s in curves.items() if len(s)}
    if not curves:
        raise ValueError(f"No numeric values under the history keys {list(keys)}.")
    groups: dict[str, list[str]] = {}
    for key in curves:
        groups.setdefault(split_and_quantity(str(key))[1], []).append(key)
    notes: list[str] = []
    if auto and not redundant:
        pruned, notes = drop_redundant(curves)
        if pruned:  # keep everything when nothing would be left
            groups = pruned
        else:
            notes = []

    if ax is not None:
        fig, panels = ax.figure, dict.fromkeys(groups, ax)
    else:
        n = len(groups)
        ncols = max(1, min(ncols, n))
        nrows = int(np.ceil(n / ncols))
        fig, axes = new_figure(nrows, ncols, panel=(4.0, 3.0))
        flat = axes.ravel()
        panels = dict(zip(groups, flat, strict=False))
        for extra in flat[n:]:
            extra.set_visible(False)
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    if notes and ax is None:
        fig.suptitle("not shown: " + ", ".join(notes), fontsize="small", color="dimgrey")

    styles = {"train": "-", "validation": "--", "test": ":", "": "-"}
    for quantity, members in groups.items():
        panel = panels[quantity]
        for key in members:
            series = curves[key]
            marker = "o" if len(series) < 15 else None
            panel.plot(
                series.index.to_numpy(),
                series.to_numpy(),
                linestyle=styles[split_and_quantity(str(key))[0]],
                marker=marker,
                markersize=3,
                label=str(key),
            )
        if log:
            low = min(float(curves[k].min()) for k in members)
            panel.set_yscale("log" if low > 0 else "symlog")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            panel.yaxis.set_major_formatter(plain)
            panel.yaxis.set_minor_formatter(plain if low > 0 else NullFormatter())
        panel.set_xlabel("epoch")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax is None:
            panel.set_title(quantity)
            panel.set_ylabel(quantity)
        panel.legend(fontsize="small", frameon=False)
        panel.grid(alpha=0.3)
    return finish(fig, ax, save, show)
