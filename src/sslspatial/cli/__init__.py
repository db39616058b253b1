"""The ``sslspatial`` command line.

Each capability contributes a module ``sslspatial.cli._<name>`` exposing ``register(subparsers)`` (its subcommand,
operating on a SpatialData zarr path in place) and ``demo(sdata, out_dir) -> dict`` (its step of ``sslspatial
demo`` on the synthetic tissue, returning accuracy figures against the synthetic truth).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType

CAPABILITIES = ("pretrain", "hist2expr", "superres")


def capability_modules() -> dict[str, ModuleType]:
    """Return the CLI modules of the capabilities that are installed, by name."""
    modules = {}
    for name in CAPABILITIES:
        if importlib.util.find_spec(f"sslspatial.cli._{name}") is not None:
            modules[name] = importlib.import_module(f"sslspatial.cli._{name}")
    return modules


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    from . import _demo, _info

    parser = argparse.ArgumentParser(
        prog="sslspatial",
        description="Self-supervised and generative deep learning for spatial omics on SpatialData.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _info.register(subparsers)
    _demo.register(subparsers)
    _graph_register(subparsers)
    for module in capability_modules().values():
        module.register(subparsers)
    return parser


def _graph_register(subparsers) -> None:
    p = subparsers.add_parser("graph", help="Build a spatial neighbour graph in a SpatialData zarr store (in place).")
    p.add_argument("zarr", help="path to a SpatialData zarr store")
    p.add_argument("--table-key", default="table")
    p.add_argument("--method", default="radius", choices=["radius", "knn", "delaunay", "grid"])
    p.add_argument("--radius", type=float, default=None, help="radius in coordinate units (method radius/delaunay)")
    p.add_argument("--n-neighs", type=int, default=6)
    p.add_argument("--library-key", default=None)
    p.set_defaults(func=_graph_run)


def _graph_run(args) -> int:
    import spatialdata as sd

    from .. import _io
    from ..pp import build_graph

    sdata = sd.read_zarr(args.zarr)
    build_graph(
        sdata,
        method=args.method,
        radius=args.radius,
        n_neighs=args.n_neighs,
        library_key=args.library_key,
        table_key=args.table_key,
    )
    _io.persist(sdata, args.table_key)
    stats = sdata.tables[args.table_key].uns["spatial_neighbors"]["degree"]
    print(f"graph written to {args.zarr} (table {args.table_key!r}): mean degree {stats['mean_degree']:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sslspatial`` command."""
    from .._warnings import quiet_dependencies

    quiet_dependencies()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
