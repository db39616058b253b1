"""What every ``ss.tl`` run records in ``uns[key_added]``: the function, its parameters and the package version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` as something AnnData writes to zarr / h5ad: scalars, strings, lists and dicts of them.

    ``None`` becomes the string ``"None"`` (AnnData cannot store ``None`` in ``uns``); other objects their ``repr``.

    Examples
    --------
    >>> jsonable({"a": (1, 2), "b": None, "c": np.float32(0.5)})
    {'a': [1, 2], 'b': 'None', 'c': 0.5}
    """
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and all(not isinstance(v, Mapping) for v in value) and len(value) <= 1000:
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 1000:
        return [jsonable(v) for v in value.tolist()]
    return repr(value)


#: Inputs of a function, not settings: never part of its run record.
INPUTS = ("data", "model")


def run_record(function: str, arguments: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> dict:
    """``{"function", "params", "version"}`` of one run, for ``uns[key_added]``: the one way every function builds it.

    Parameters
    ----------
    function
        The function's name.
    arguments
        Every argument of the call: ``dict(locals())`` taken first thing in the function. The inputs
        (:data:`INPUTS`) and ``exclude`` are left out; the rest is made storable (:func:`jsonable`).
    exclude
        More arguments that are data rather than settings (e.g. ``train_indices``).

    Examples
    --------
    >>> record = run_record("pretrain_mask", {"data": object(), "max_epochs": None})
    >>> sorted(record), record["params"]
    (['function', 'params', 'version'], {'max_epochs': 'None'})
    """
    from . import __version__

    params = {k: v for k, v in arguments.items() if k not in (*INPUTS, *exclude)}
    return {"function": function, "params": jsonable(params), "version": __version__}


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and torch (Lightning's ``seed_everything``, quietly); ``None`` leaves the state as it is."""
    if seed is None:
        return
    from lightning.pytorch import seed_everything as lightning_seed

    lightning_seed(int(seed), verbose=False)
