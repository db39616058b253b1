"""Shared parameter docs, written once and injected into docstrings (the pattern of squidpy's ``DocstringProcessor``).

A docstring names a shared parameter with a placeholder line ``%(name)s``, indented as a parameter name would be;
:func:`inject_docs` replaces it with the text below, every line indented like the placeholder. Only known names are
replaced, so other ``%`` signs in a docstring (``10 %``) stay as they are. The docstring is rewritten when the module
is imported, so ``help()`` and sphinx's autodoc show the full text.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DOCS", "inject_docs"]

F = TypeVar("F", bound=Callable)

#: Each shared parameter's entry of a numpydoc ``Parameters`` section: the name line, then its description.
DOCS = {
    "data": """data
    AnnData or SpatialData (the table ``table_key`` of a SpatialData).""",
    "table_key": """table_key
    Table of a SpatialData (``data.tables[table_key]``); with an AnnData, anything but the default warns that it is
    ignored.""",
    "layer": """layer
    Layer holding the input values (default ``X``).""",
    "overwrite": """overwrite
    Replace existing outputs (else :class:`~sslspatial.OutputExistsError`, raised before any work).""",
    "seed": """seed
    Seeds Python, NumPy and torch before the model is built (``None``: leave the random state as it is).""",
    "accelerator_devices": """accelerator, devices
    Lightning's hardware options (``accelerator="gpu"``, ``devices=1``).""",
    # plots (``ss.pl``)
    "save_show": """save
    Write the figure to this PNG path.
show
    Call ``plt.show()``.""",
    "labels_input": """y_true
    True labels (array-like), or an AnnData / SpatialData whose obs holds ``true_key`` and ``pred_key``.
y_pred
    Predicted labels (array-like) when ``y_true`` is an array.
true_key, pred_key
    obs columns with the true and predicted labels (data input).
table_key
    Table of a SpatialData.""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)


def inject_docs(function: F) -> F:
    """Replace every ``%(name)s`` line of ``function``'s docstring by the shared entry ``DOCS[name]``.

    Examples
    --------
    >>> @inject_docs
    ... def f(seed=0):
    ...     '''Do it.
    ...
    ...     Parameters
    ...     ----------
    ...     %(seed)s
    ...     '''
    >>> "Seeds Python, NumPy and torch" in f.__doc__
    True
    """

    def _sub(match: re.Match) -> str:
        name = match.group("name")
        if name not in DOCS:
            return match.group(0)
        return textwrap.indent(DOCS[name], match.group("indent"))

    if function.__doc__:
        function.__doc__ = _PLACEHOLDER.sub(_sub, function.__doc__)
    return function
