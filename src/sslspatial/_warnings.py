"""Keep dependencies' FutureWarnings and deprecation noise away from users of the package's own calls."""

from __future__ import annotations

import warnings

_NOISY_MODULES = (
    "anndata",
    "spatialdata",
    "squidpy",
    "scvi",
    "lightning",
    "torch_geometric",
    "dask",
    "xarray",
    "numba",
    "geopandas",
    "ome_zarr",
    "zarr",
)


def quiet_dependencies() -> None:
    """Silence FutureWarning / DeprecationWarning raised from inside dependencies (our own warnings stay)."""
    for module in _NOISY_MODULES:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{module}(\..*)?")
    warnings.filterwarnings("ignore", message=".*ambiguous collection.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Transforming to str index.*")
