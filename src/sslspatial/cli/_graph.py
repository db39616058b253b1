"""``sslspatial graph``: build a spatial neighbour graph in a SpatialData zarr store (in place)."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``graph`` subcommand."""
    p = subparsers.add_parser(
        "graph",
        help="Build a spatial neighbour graph per section in a SpatialData zarr store (in place; ss.pp.build_graph).",
    )
    p.add_argument("zarr", help="path to a SpatialData zarr store")
    p.add_argument("--table-key", default="table", help="table whose observations are the graph's nodes")
    p.add_argument(
        "--method", default="radius", choices=["radius", "knn", "delaunay", "grid"], help="graph construction"
    )
    p.add_argument(
        "--radius",
        type=float,
        default=None,
        help="neighbour radius in the units of the coordinates (pixels or µm: `sslspatial info STORE` says which; "
        "method radius; delaunay: prune longer edges; default: none for delaunay, required for radius)",
    )
    p.add_argument("--n-neighs", type=int, default=6, help="neighbours per observation (methods knn and grid)")
    p.add_argument("--n-rings", type=int, default=1, help="rings of neighbouring spots (method grid)")
    p.add_argument(
        "--library-key",
        default=None,
        help="obs column naming the section of each observation (default: the table's region column)",
    )
    p.add_argument(
        "--key-added", default="spatial", help="graph key prefix: obsp['<key>_connectivities'] and '<key>_distances'"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a graph already stored under --key-added")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``ss.pp.build_graph`` on a zarr store and persist the table."""
    from .. import io
    from .._constants import Key
    from ..pp import build_graph
    from ._common import check_new_key, read_store

    sdata = read_store(args.zarr, args.table_key)
    table = sdata.tables[args.table_key]
    conn_key, _, uns_key = Key.graph(args.key_added)
    check_new_key(table.obsp, conn_key, "obsp", args.overwrite)
    build_graph(
        sdata,
        method=args.method,
        radius=args.radius,
        n_neighs=args.n_neighs,
        n_rings=args.n_rings,
        library_key=args.library_key,
        table_key=args.table_key,
        key_added=args.key_added,
        overwrite=args.overwrite,
    )
    io.persist(sdata, args.table_key)
    stats = sdata.tables[args.table_key].uns[uns_key]["degree"]
    n_obs = sdata.tables[args.table_key].n_obs
    print(
        f"graph written to {args.zarr} (table {args.table_key!r}): mean degree {stats['mean_degree']:.2f}, "
        f"{stats['n_isolated']} of {n_obs} cells without a neighbour"
    )
    return 0
