"""``sslspatial info``: versions and the compute device; ``sslspatial info STORE``: what a zarr store holds."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    "sslspatial",
    "torch",
    "lightning",
    "scvi-tools",
    "torch-geometric",
    "anndata",
    "spatialdata",
    "squidpy",
    "scanpy",
)


def register(subparsers) -> None:
    """Add the ``info`` subcommand."""
    p = subparsers.add_parser(
        "info",
        help="Print package versions and the compute device, or with STORE what a SpatialData zarr store holds: "
        "tables and their obs columns, embeddings, graphs (mean degree, isolated cells) and the run record of "
        "each result.",
    )
    p.add_argument("store", nargs="?", default=None, metavar="STORE", help="a SpatialData zarr store to describe")
    p.set_defaults(func=run)


def device_description() -> str:
    """Describe the compute device torch would use."""
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"cuda ({torch.cuda.device_count()} GPU: {names})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads; no GPU found)"


def run(args=None) -> int:
    """Print versions and the device, or describe ``args.store``."""
    if args is not None and getattr(args, "store", None):
        from ._store_info import describe

        print(describe(args.store))
        return 0
    print(f"python           {platform.python_version()}")
    for name in PACKAGES:
        try:
            print(f"{name:<17}{version(name)}")
        except PackageNotFoundError:
            print(f"{name:<17}not installed")
    print(f"device           {device_description()}")
    return 0
