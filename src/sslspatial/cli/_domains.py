"""``sslspatial domains``: cluster a representation into tissue domains in a SpatialData zarr store (in place).

The option defaults mirror those of ``ss.tl.domains`` (a test checks that they agree); they are written out here so
that parsing the command line imports nothing heavy.
"""

from __future__ import annotations

DEFAULTS = {
    "use_rep": "X",
    "method": "gmm",
    "smooth": 2,
    "n_hops": 0,
    "n_init": 2,
    "center_sections": True,
    "resolution": 1.0,
    "n_neighbors": 15,
    "autok_range": (2, 15),
    "autok_runs": 5,
    "key_added": "domains",
    "seed": 0,
}


def _range(value: str) -> tuple[int, int]:
    import argparse

    low, sep, high = value.partition(",")
    try:
        return int(low), int(high if sep else low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two integers), got {value!r}") from None


def register(subparsers) -> None:
    """Add the ``domains`` subcommand."""
    p = subparsers.add_parser(
        "domains",
        help="Cluster expression or an embedding (e.g. from `sslspatial pretrain`) into tissue domains; writes "
        "obs[<key>] (ss.tl.domains).",
    )
    p.add_argument("zarr", help="path to a SpatialData zarr store")
    p.add_argument("--table-key", default="table", help="table to cluster")
    p.add_argument(
        "--use-rep",
        default=DEFAULTS["use_rep"],
        help="obsm key(s) of the representation, comma-separated to concatenate, or X for a PCA of the normalised "
        "expression",
    )
    p.add_argument(
        "--method",
        default=DEFAULTS["method"],
        choices=["gmm", "leiden"],
        help="Gaussian mixture, or Leiden communities of a feature-space kNN graph",
    )
    p.add_argument(
        "--n-domains",
        type=int,
        default=None,
        help="number of domains (default: chosen by stability over --autok-range for gmm; for leiden one run at "
        "--resolution)",
    )
    p.add_argument(
        "--smooth",
        type=int,
        default=DEFAULTS["smooth"],
        help="rounds of averaging the features over spatial neighbours before clustering (needs a graph when > 0)",
    )
    p.add_argument(
        "--n-hops",
        type=int,
        default=DEFAULTS["n_hops"],
        help="concatenate the mean features of the rings 1..N of the spatial graph (CellCharter aggregation)",
    )
    p.add_argument(
        "--resolution", type=float, default=DEFAULTS["resolution"], help="Leiden resolution without --n-domains"
    )
    p.add_argument(
        "--n-neighbors",
        type=int,
        default=DEFAULTS["n_neighbors"],
        help="neighbours of the feature-space graph (Leiden)",
    )
    p.add_argument(
        "--autok-range",
        type=_range,
        default=DEFAULTS["autok_range"],
        metavar="MIN,MAX",
        help="numbers of domains tried when gmm chooses it (default: 2,15)",
    )
    p.add_argument(
        "--autok-runs", type=int, default=DEFAULTS["autok_runs"], help="mixture fits per number of domains (AutoK)"
    )
    p.add_argument(
        "--n-init", type=int, default=DEFAULTS["n_init"], help="mixture initialisations; the most likely fit is kept"
    )
    p.add_argument("--per-section", action="store_true", help="cluster each section on its own")
    p.add_argument(
        "--no-center-sections",
        dest="center_sections",
        action="store_false",
        default=DEFAULTS["center_sections"],
        help="cluster several sections jointly without first subtracting each section's mean",
    )
    p.add_argument(
        "--library-key", default=None, help="obs column of the sections (default: the table's region column)"
    )
    p.add_argument("--key-added", default=DEFAULTS["key_added"], help="obs column receiving the domains")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing obs[--key-added]")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``ss.tl.domains`` on a zarr store and persist the table."""
    from .. import io
    from ..tl import domains
    from ._common import check_new_key, names, read_store

    sdata = read_store(args.zarr, args.table_key)
    table = sdata.tables[args.table_key]
    check_new_key(table.obs, args.key_added, "obs", args.overwrite)
    reps = names(args.use_rep) or [DEFAULTS["use_rep"]]
    domains(
        sdata,
        use_rep=reps[0] if len(reps) == 1 else reps,
        method=args.method,
        n_domains=args.n_domains,
        library_key=args.library_key,
        per_section=args.per_section,
        center_sections=args.center_sections,
        smooth=args.smooth,
        n_hops=args.n_hops,
        resolution=args.resolution,
        n_neighbors=args.n_neighbors,
        n_init=args.n_init,
        autok_range=tuple(args.autok_range),
        autok_runs=args.autok_runs,
        table_key=args.table_key,
        key_added=args.key_added,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    io.persist(sdata, args.table_key)
    table = sdata.tables[args.table_key]
    print(domains_summary(table.obs[args.key_added], table.uns[args.key_added], args.key_added, args.zarr))
    return 0


def domains_summary(labels, record: dict, key: str, store: str) -> str:
    """One line: how many domains, how the number was chosen, the sizes, and where they went."""
    counts = labels.value_counts()
    how = f"{record['params']['method']}"
    if "autok" in record:
        chosen = ", ".join(f"{int(c['n_domains'])}" for c in record["autok"].values())
        how += f", number chosen by AutoK stability over {tuple(record['params']['autok_range'])}: {chosen}"
    elif "resolution" in record:
        how += ", resolution " + ", ".join(f"{r:.2f}" for r in record["resolution"].values())
    sizes = f"{counts.min()}-{counts.max()} cells each"
    return f"domains: {len(counts)} domains ({how}; {sizes}) in obs[{key!r}] of {store}"
