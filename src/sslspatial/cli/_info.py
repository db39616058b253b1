"""``sslspatial info``: versions and the compute device."""

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
    p = subparsers.add_parser("info", help="Print package versions and the compute device.")
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
    """Print versions and the device."""
    print(f"python           {platform.python_version()}")
    for name in PACKAGES:
        try:
            print(f"{name:<17}{version(name)}")
        except PackageNotFoundError:
            print(f"{name:<17}not installed")
    print(f"device           {device_description()}")
    return 0
