"""``sslspatial domains``: cluster an embedding into tissue domains in a SpatialData zarr store (in place)."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``domains`` subcommand."""
    p = subparsers.add_parser(
        "domains",
        help="Cluster an embedding (e.g. from `sslspatial pretrain`) into tissue domains; writes obs[<key>] "
        "(ss.tl.domains).",
    )
    p.add_argument("zarr", help="path to a SpatialData zarr store")
    p.add_argument("--table-key", default="table", help="table to cluster")
    p.add_argument(
        "--use-rep",
        default="X_pretrain_mask",
        help="obsm key of the representation, or X for a PCA of the normalised expression",
    )
    p.add_argument(
        "--method",
        default="leiden",
        choices=["leiden", "gmm"],
        help="Leiden communities of a feature-space kNN graph, or a Gaussian mixture (needs --n-domains)",
    )
    p.add_argument(
        "--n-domains",
        type=int,
        default=None,
        help="number of domains (Leiden: the resolution is searched to match it; default: run Leiden once at "
        "--resolution)",
    )
    p.add_argument("--resolution", type=float, default=1.0, help="Leiden resolution when --n-domains is not given")
    p.add_argument("--n-neighbors", type=int, default=15, help="neighbours of the feature-space graph (Leiden)")
    p.add_argument(
        "--smooth",
        type=int,
        default=0,
        help="rounds of averaging the representation over spatial neighbours before clustering (needs a graph; "
        "default 0)",
    )
    p.add_argument(
        "--aggregate-hops",
        type=int,
        default=0,
        help="first aggregate --use-rep over the rings 1..N of the spatial graph (CellCharter; "
        "ss.pp.aggregate_neighbors, mean per ring) into obsm['X_nhood'] and cluster that (default 0: no aggregation)",
    )
    p.add_argument("--per-section", action="store_true", help="cluster each section on its own")
    p.add_argument(
        "--library-key", default=None, help="obs column of the sections (default: the table's region column)"
    )
    p.add_argument("--key-added", default="domains", help="obs column receiving the domains")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing obs[--key-added] (and obsm['X_nhood'])"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``ss.tl.domains`` on a zarr store and persist the table."""
    from .. import _io
    from ..tl import domains
    from ._common import check_new_key, read_store

    sdata = read_store(args.zarr, args.table_key)
    table = sdata.tables[args.table_key]
    check_new_key(table.obs, args.key_added, "obs", args.overwrite)
    use_rep = args.use_rep
    if args.aggregate_hops > 0:
        from .._constants import DomainKey
        from ..pp import aggregate_neighbors

        check_new_key(table.obsm, DomainKey.NHOOD, "obsm", args.overwrite)
        aggregate_neighbors(
            sdata, n_hops=args.aggregate_hops, use_rep=args.use_rep, table_key=args.table_key, overwrite=args.overwrite
        )
        use_rep = DomainKey.NHOOD
    domains(
        sdata,
        use_rep=use_rep,
        method=args.method,
        n_domains=args.n_domains,
        library_key=args.library_key,
        per_section=args.per_section,
        smooth=args.smooth,
        resolution=args.resolution,
        n_neighbors=args.n_neighbors,
        table_key=args.table_key,
        key_added=args.key_added,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    _io.persist(sdata, args.table_key)
    counts = sdata.tables[args.table_key].obs[args.key_added].value_counts()
    print(f"{len(counts)} domains written to {args.zarr} (table {args.table_key!r}, obs[{args.key_added!r}])")
    return 0
