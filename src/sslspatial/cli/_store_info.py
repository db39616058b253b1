"""What a SpatialData zarr store holds, as text for ``sslspatial info STORE`` and the ``dataset`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Categories listed for a categorical obs column before "...".
_SHOWN_CATEGORIES = 4


def obs_columns(table: Any) -> list[str]:
    """One short description per obs column: name, and its categories or its kind."""
    import pandas as pd

    out = []
    from .._constants import user_columns

    for name in user_columns(table.obs):
        column = table.obs[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            cats = [str(c) for c in column.cat.categories]
            shown = ", ".join(cats[:_SHOWN_CATEGORIES]) + (", ..." if len(cats) > _SHOWN_CATEGORIES else "")
            out.append(f"{name} ({len(cats)} categories: {shown})")
        elif pd.api.types.is_bool_dtype(column):
            out.append(f"{name} (bool)")
        elif pd.api.types.is_numeric_dtype(column):
            out.append(f"{name} (numeric)")
        else:
            out.append(f"{name} ({column.nunique()} values)")
    return out


def graph_lines(table: Any) -> list[str]:
    """Each ``obsp[<key>_connectivities]`` with its mean degree and isolated cells."""
    import numpy as np
    import scipy.sparse as sp

    lines = []
    for key in table.obsp:
        if not key.endswith("connectivities"):
            continue
        graph = sp.csr_matrix(table.obsp[key])
        degree = np.diff(graph.indptr)
        isolated = int((degree == 0).sum())
        share = isolated / max(len(degree), 1)
        params = table.uns.get(key.replace("connectivities", "neighbors"), {}).get("params", {})
        how = ", ".join(f"{k} {_plain(v)}" for k, v in params.items() if k in ("method", "radius", "n_neighs"))
        lines.append(
            f"obsp[{key!r}]: mean degree {degree.mean():.2f}, {isolated} isolated cells ({share:.1%})"
            + (f" ({how})" if how else "")
        )
    return lines


def _plain(value: Any) -> str:
    import numpy as np

    if isinstance(value, np.ndarray | list | tuple):  # a run record's list (zarr gives arrays back): numbers or names
        try:
            values = np.asarray(value).ravel()
        except ValueError:  # ragged
            return str(value)
        numeric = np.issubdtype(values.dtype, np.number)
        return ",".join(f"{v:g}" if numeric else str(v) for v in values)
    return str(value)


def run_records(table: Any) -> list[str]:
    """One line per ``uns`` entry written by an ``ss.tl`` / ``ss.pp`` function (it has a ``function`` field)."""
    lines = []
    for key, value in table.uns.items():
        if not isinstance(value, dict) or "function" not in value:
            continue
        params = value.get("params", {})
        shown = ", ".join(f"{k}={_plain(v)}" for k, v in params.items() if v is not None and not isinstance(v, dict))
        extra = ""
        if "chosen" in value:
            extra = f"; chose {value['chosen']}"
        lines.append(f"uns[{key!r}]: {value['function']} (sslspatial {value.get('version', '?')}){extra}; {shown}")
    return lines


def describe_table(name: str, table: Any, unit: str) -> list[str]:
    """The lines of one table: size, obs columns, embeddings and other obsm entries, layers, graphs, run records."""
    lines = [f"table {name!r}: {table.n_obs:,} observations x {table.n_vars:,} variables"]
    lines.append("  obs columns: " + ("; ".join(obs_columns(table)) or "none"))
    embeddings = [f"{k} {tuple(v.shape)}" for k, v in table.obsm.items() if k.startswith("X_")]
    others = [
        f"{k} {tuple(v.shape)}" + (f" ({unit})" if k == "spatial" else "")
        for k, v in table.obsm.items()
        if not k.startswith("X_")
    ]
    lines.append("  embeddings: " + (", ".join(embeddings) or "none"))
    if others:
        lines.append("  other obsm: " + ", ".join(others))
    if table.layers:
        lines.append("  layers: " + ", ".join(table.layers))
    graphs = graph_lines(table)
    lines.extend("  " + g for g in graphs or ["graphs: none (build one with `sslspatial graph STORE ...`)"])
    lines.extend("  " + r for r in run_records(table))
    return lines


def describe(path: str | Path) -> str:
    """Describe every element and table of the store at ``path``."""
    from ..pl._spatial import coordinate_unit
    from ._common import read_store

    sdata = read_store(path)
    lines = [f"{path}:"]
    for kind in ("images", "labels", "shapes", "points"):
        elements = getattr(sdata, kind)
        if elements:
            lines.append(f"{kind}: {', '.join(elements)}")
    for name, table in sdata.tables.items():
        lines.extend(describe_table(name, table, coordinate_unit(sdata, table)))
    if not sdata.tables:
        lines.append("no tables")
    return "\n".join(lines)
