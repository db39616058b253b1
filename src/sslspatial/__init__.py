"""sslspatial: self-supervised and generative deep learning for spatial omics on SpatialData.

Submodules (``pp``, ``tl``, ``pl``, ...) and the heavy dependencies behind them (scvi-tools, squidpy,
torch_geometric, lightning) are imported on first use (PEP 562 module ``__getattr__``), so ``import sslspatial`` and
the command line start quickly.
"""

from __future__ import annotations

import importlib
import importlib.util
import os.path
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("sslspatial")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def _attach(
    package: str, submodules: Iterable[str] = (), attributes: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``__getattr__``, ``__dir__`` and ``__all__`` of a package whose contents load on first access.

    Parameters
    ----------
    package
        The package's ``__name__``.
    submodules
        Public submodules, imported when first accessed as attributes.
    attributes
        Public names, each mapped to the submodule (relative to ``package``) that defines it.

    Notes
    -----
    Private submodules (``package._x``) are also imported on attribute access, as they were reachable before when the
    package imported them eagerly. Each resolved name is cached on the package, so ``__getattr__`` runs once per name.
    """
    submodules = frozenset(submodules)
    attributes = dict(attributes or {})
    public = sorted({*submodules, *attributes})

    def __getattr__(name: str) -> Any:
        module = sys.modules[package]
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in attributes:
            value = getattr(importlib.import_module(f"{package}.{attributes[name]}"), name)
            setattr(module, name, value)
            return value
        if name.startswith("_") and not name.startswith("__"):
            try:
                found = importlib.util.find_spec(f"{package}.{name}") is not None
            except (ImportError, ValueError):
                found = False
            if found:
                return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__, public


def _present(names: Iterable[str]) -> list[str]:
    here = __path__[0]
    return [n for n in names if os.path.isdir(os.path.join(here, n)) or os.path.isfile(os.path.join(here, f"{n}.py"))]


_SUBMODULES = _present(("data", "datasets", "io", "metrics", "model", "module", "nn", "objectives", "pl", "pp", "tl"))

__getattr__, __dir__, _public = _attach(__name__, _SUBMODULES, attributes={"OutputExistsError": "_validate", "DataLike": "_types"})
__all__ = [*_public, "__version__"]
