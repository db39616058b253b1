"""``sslspatial dataset``: write the output of any ``ss.datasets`` reader to a SpatialData zarr store."""

from __future__ import annotations

import argparse
import ast


def _readers() -> list[str]:
    from .. import datasets  # lazy package: lists the readers without importing them

    return list(datasets.__all__)


def register(subparsers) -> None:
    """Add the ``dataset`` subcommand."""
    readers = _readers()
    p = subparsers.add_parser(
        "dataset",
        help="Write a synthetic tissue or a public dataset (any ss.datasets reader) to a new SpatialData zarr store.",
        epilog="Example: sslspatial dataset synthetic_tissue tissue.zarr --param n_cells=2000 --param seed=1",
    )
    p.add_argument("name", choices=readers, metavar="NAME", help=f"reader: {', '.join(readers)}")
    p.add_argument("out", metavar="OUT", help="path of the zarr store to write")
    p.add_argument(
        "--path",
        default=None,
        help="local folder with the dataset's files (default: download them once into the cache; not for "
        "synthetic_tissue)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another argument of the reader (repeatable); VALUE is read as a Python literal when it is one, a "
        "comma-separated list of strings when it has commas, a string otherwise (default: the reader's defaults)",
    )
    p.add_argument(
        "--table-key", default="table", help="name of the table when the reader returns an AnnData rather than a store"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at OUT")
    p.set_defaults(func=run)


def parse_params(items: list[str]) -> dict:
    """Turn ``KEY=VALUE`` strings into keyword arguments (see ``--param``)."""
    from ._common import UsageError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = [v for v in value.split(",") if v] if "," in value else value
    return out


def run(args: argparse.Namespace) -> int:
    """Read the dataset and write it to ``args.out`` (crash-safe when replacing an existing store)."""
    import inspect
    import shutil
    from pathlib import Path

    from .. import datasets
    from ._common import CLIError, UsageError

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{args.out!r} exists already: pass --overwrite to replace it, or another path")
    reader = getattr(datasets, args.name)
    kwargs = parse_params(args.param)
    accepted = inspect.signature(reader).parameters
    if args.path is not None:
        if "path" not in accepted:
            raise UsageError(f"{args.name} reads no files: --path does not apply")
        kwargs["path"] = args.path
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UsageError(
            f"{args.name} takes no argument {', '.join(unknown)} (its arguments: {', '.join(accepted) or 'none'})"
        )
    data = reader(**kwargs)
    sdata = _as_spatialdata(data, args.table_key)
    tmp = out.with_name(f".{out.name}.writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    sdata.write(tmp)
    if out.exists():  # the new store is complete: only now replace the old one
        old = out.with_name(f".{out.name}.old")
        out.rename(old)
        tmp.rename(out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        tmp.rename(out)
    print(summary(args.name, args.out, sdata))
    return 0


def summary(name: str, out: str, sdata) -> str:
    """What was written, with the columns and units a user passes to the next commands."""
    from ..pl._spatial import coordinate_unit
    from ._store_info import obs_columns

    parts = [f"{kind}: {', '.join(getattr(sdata, kind))}" for kind in ("images", "labels", "shapes", "points")
             if getattr(sdata, kind)]  # fmt: skip
    lines = [f"{name} written to {out}" + (f" ({'; '.join(parts)})" if parts else "")]
    for key, table in sdata.tables.items():
        unit = coordinate_unit(sdata, table)
        lines.append(f"table {key!r}: {table.n_obs:,} observations x {table.n_vars:,} variables; coordinates "
                     f"obsm['spatial'] in {unit}")  # fmt: skip
        lines.append("  obs columns: " + ("; ".join(obs_columns(table)) or "none"))
    return "\n".join(lines)


def _as_spatialdata(data, table_key: str):
    import spatialdata as sd
    from anndata import AnnData
    from spatialdata.models import TableModel

    if isinstance(data, sd.SpatialData):
        return data
    if isinstance(data, AnnData):
        return sd.SpatialData(tables={table_key: TableModel.parse(data)})
    raise TypeError(f"the reader returned a {type(data).__name__}, neither SpatialData nor AnnData")
