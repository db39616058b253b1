"""The one validation layer for numbers and types of user arguments, shared by the API and the command line.

Each check raises :class:`ArgumentError` (a ``ValueError``) naming the argument, what it must be and a valid example,
before any work starts. ``sslspatial._validate`` re-exports everything here.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ArgumentError(ValueError):
    """A numeric or typed argument out of its range: the argument's name, what it must be, and an example of a fix.

    ``str(error)`` speaks Python (``n_latent=0``); :meth:`cli_message` speaks command line (``--n-latent 0``), so the
    API and the CLI share one check. The CLI exits with code 2 (a usage error) on it.
    """

    def __init__(self, name: str, value: Any, requirement: str, example: Any = None, hint: str = ""):
        self.name, self.value, self.requirement, self.example, self.hint = name, value, requirement, example, hint
        super().__init__(self._message(f"{name}={value!r}", None if example is None else f"{name}={example!r}"))

    def _message(self, given: str, fix: str | None) -> str:
        text = f"{given}: {self.name} must be {self.requirement}."
        if self.value is None:
            text = f"{given.split('=')[0].split(' ')[0]} is needed: {self.requirement}."
        if fix is not None:
            text += f" Pass e.g. {fix}."
        return f"{text} {self.hint}".strip()

    def cli_message(self) -> str:
        """The message with ``--option value`` instead of ``name=value``; ``None`` cannot be typed, so it is not offered.

        Examples
        --------
        >>> ArgumentError("max_epochs", 0, "an integer >= 1 or None", 50).cli_message()
        '--max-epochs 0: --max-epochs must be an integer >= 1 (or left out for the default). Pass e.g. --max-epochs 50.'
        >>> ArgumentError("seed", -1, "a non-negative integer, or None for a fresh random seed", 0).cli_message()
        '--seed -1: --seed must be a non-negative integer. Pass e.g. --seed 0.'
        """
        option = "--" + self.name.replace("_", "-")
        value = self.value
        fix = None if self.example is None else f"{option} {_cli_value(self.example)}"
        given = f"{option} {_cli_value(value)}" if self.value is not None else option
        text = self._message(given, fix).replace(f"{self.name} must", f"{option} must")
        text = text.replace(", or None for a fresh random seed.", ".")  # a command-line seed has a fixed default
        return text.replace(" or None.", " (or left out for the default).")


def _cli_value(value: Any) -> str:
    """A value as typed on a command line (``(2, 5)`` -> ``2,5``)."""
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def check_int(
    value: Any, name: str, *, minimum: int = 1, maximum: int | None = None, none: bool = False, example: Any = None
) -> int | None:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``None`` passes when ``none``), else :class:`ArgumentError`.

    Examples
    --------
    >>> check_int(32, "n_latent")
    32
    >>> check_int(32.5, "n_latent", example=32)
    Traceback (most recent call last):
    ...
    sslspatial._arguments.ArgumentError: n_latent=32.5: n_latent must be an integer >= 1. Pass e.g. n_latent=32.
    """
    if value is None and none:
        return None
    bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    requirement = f"an integer {bound}" + (" or None" if none else "")
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        if example is None:
            example = minimum if not _is_real(value) or value < minimum else maximum
        raise ArgumentError(name, value, requirement, example)
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = False,
    none: bool = False,
    example: Any = None,
    hint: str = "",
) -> float | None:
    """``value`` as a finite ``float`` in the interval (``low``, ``high``; open ends by default at ``low``).

    Examples
    --------
    >>> check_number(1e-3, "lr", low=0)
    0.001
    >>> check_number("30", "radius", low=0, example=30.0)
    Traceback (most recent call last):
    ...
    sslspatial._arguments.ArgumentError: radius='30': radius must be a number > 0. Pass e.g. radius=30.0.
    """
    if value is None and none:
        return None
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    requirement = "a number" + (f" {' and '.join(parts)}" if parts else "") + (" or None" if none else "")
    ok = _is_real(value) and np.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if example is None and isinstance(value, str):
            try:
                example = float(value)
            except ValueError:
                example = None
        raise ArgumentError(name, value, requirement, example, hint)
    return float(value)


def check_probability(value: Any, name: str, *, none: bool = False, example: Any = None) -> float | None:
    """A rate in ``[0, 1)`` (a dropout or masking fraction), else :class:`ArgumentError`.

    Examples
    --------
    >>> check_probability(0.2, "dropout")
    0.2
    """
    return check_number(value, name, low=0, high=1, low_open=False, high_open=True, none=none, example=example)


def resolve_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an ``int``; ``None`` draws a fresh one (record it to reproduce the run), anything else is refused.

    Examples
    --------
    >>> resolve_seed(3)
    3
    >>> isinstance(resolve_seed(None), int)
    True
    """
    if seed is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if not _is_int(seed) or seed < 0:
        raise ArgumentError(name, seed, "a non-negative integer, or None for a fresh random seed", 0)
    return int(seed)


#: The shared rules for the numeric arguments of ``ss.pp`` and ``ss.tl`` functions, by argument name:
#: ``(kind, options)`` for :func:`check_numbers`. A name absent here is not checked by it.
RULES: dict[str, tuple[str, dict]] = {
    # sizes and counts
    "n_latent": ("int", {"example": 32}),
    "n_hidden": ("int", {"example": 128}),
    "n_layers": ("int", {"example": 2}),
    "heads": ("int", {"example": 4}),
    "max_epochs": ("int", {"none": True, "example": 50}),
    "batch_size": ("int", {"none": True, "example": 128}),
    "n_folds": ("int", {"minimum": 2, "example": 3}),
    "n_neighbors": ("int", {"example": 5}),
    "n_neighs": ("int", {"example": 6}),
    "n_rings": ("int", {"example": 1}),
    "n_domains": ("int", {"none": True, "example": 7}),
    "n_init": ("int", {"example": 2}),
    "autok_runs": ("int", {"minimum": 2, "example": 3}),
    "adapt_epochs": ("int", {"example": 50}),
    "min_shared_genes": ("int", {"example": 10}),
    "n_clusters": ("int", {"minimum": 2, "example": 10}),
    "n_pcs": ("int", {"example": 30}),
    "expression_pcs": ("int", {"minimum": 0, "example": 30}),
    "ensemble": ("int", {"minimum": 0, "example": 4}),
    "smooth": ("int", {"minimum": 0, "example": 2}),
    "n_hops": ("int", {"minimum": 0, "example": 1}),
    "niche": ("int", {"minimum": 0, "example": 1}),
    "window_size": ("int", {"example": 32}),
    "patch_px": ("int", {"example": 32}),
    "tiles_per_image": ("int", {"example": 4000}),
    "n_subspots": ("int", {"none": True, "example": 7}),
    "n_validation_sections": ("int", {"minimum": 0, "example": 1}),
    # positive reals
    "lr": ("number", {"low": 0, "example": 1e-3}),  # map_query's lr=None (its own default) is checked there
    "resolution": ("number", {"low": 0, "example": 1.0}),
    "noise": ("number", {"low": 0, "low_open": False, "example": 0.2}),
    "weight_decay": ("number", {"low": 0, "low_open": False, "example": 1e-4}),
    "patch_scale": ("number", {"low": 0, "example": 1.5}),
    "spot_size": ("number", {"low": 0, "none": True, "hint": "It is in the units of the coordinates."}),
    "tile_size": ("number", {"low": 0, "none": True}),
    "patch_size": ("number", {"low": 0, "none": True, "hint": "It is in the units of the coordinates."}),
    "radius": ("radius", {}),
    # rates
    "dropout": ("probability", {"example": 0.1}),
    "fraction": ("probability", {"none": True, "example": 0.2}),
    "view_dropout": ("probability", {"example": 0.2}),
    "gene_dropout": ("probability", {"example": 0.5}),
}


def check_numbers(params: dict[str, Any]) -> None:
    """Check every argument of ``params`` that has a rule in :data:`RULES` (others are left alone), before any work.

    One call at the top of a user function (``check_numbers(locals())``) checks its sizes, counts, rates and learning
    rate with one message format, the argument's name and a valid example; :class:`ArgumentError` is a
    ``ValueError``. ``seed`` is checked too (an integer or ``None``). :func:`sslspatial._validate.check_numbers`, the
    one user functions call, also checks ``devices`` with ``accelerator`` (:func:`sslspatial._devices.check_devices`).

    Examples
    --------
    >>> check_numbers({"n_latent": 32, "lr": 1e-3, "data": object()})
    >>> check_numbers({"max_epochs": -1})
    Traceback (most recent call last):
    ...
    sslspatial._arguments.ArgumentError: max_epochs=-1: max_epochs must be an integer >= 1 or None. Pass e.g. max_epochs=50.
    """
    for name, value in params.items():
        if name == "seed":
            if value is not None:
                resolve_seed(value)
            continue
        rule = RULES.get(name)
        if rule is None:
            continue
        kind, options = rule
        if kind == "int":
            check_int(value, name, **options)
        elif kind == "number":
            check_number(value, name, **options)
        elif kind == "probability":
            check_probability(value, name, **options)
        elif kind == "radius" and value is not None:
            pair = isinstance(value, tuple | list) and len(value) == 2
            for v in value if pair else [value]:
                check_number(v, name, low=0, low_open=not pair, hint="It is in the units of the coordinates.")
            if pair and value[0] >= value[1]:
                raise ArgumentError(
                    name, tuple(value), "one distance, or a (min, max) pair with min < max", (value[1], value[0])
                )


def check_indices(indices: Any, n: int, name: str) -> np.ndarray:
    """Integer row positions in ``[0, n)`` (negative ones counted from the end) or a boolean mask of length ``n``.

    Returns the positions as ``int64``; raises :class:`ArgumentError` (a ``ValueError``) naming the first bad value.

    Examples
    --------
    >>> check_indices([0, 2], 3, "train_indices")
    array([0, 2])
    >>> check_indices(np.array([True, False, True]), 3, "train_indices")
    array([0, 2])
    """
    arr = np.asarray(indices)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ArgumentError(
                name, f"<boolean mask of shape {arr.shape}>", f"a boolean mask of length {n} or row positions"
            )
        return np.flatnonzero(arr).astype(np.int64)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ArgumentError(
            name,
            f"<array of dtype {arr.dtype}, shape {arr.shape}>",
            "a 1-d array of integer row positions or a boolean mask",
        )
    bad = (arr >= n) | (arr < -n)
    if bad.any():
        raise ArgumentError(
            name,
            int(arr[bad][0]),
            f"row positions in [0, {n}) (the table has {n} rows; {int(bad.sum())} position(s) are out of range)",
            hint="Use positions (np.flatnonzero(mask)), not obs names, and index the table you pass.",
        )
    return np.where(arr < 0, arr + n, arr).astype(np.int64)
