"""``sslspatial demo``: every capability on the synthetic tissue, with figures and a report against the truth."""

from __future__ import annotations

import json
import time
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="Run every capability on a synthetic tissue; write a zarr store, PNG figures and a report.",
    )
    p.add_argument("--out", default="sslspatial_demo", help="output folder (created if missing)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="reuse an --out folder that holds files already (the demo's earlier outputs there are removed first)",
    )
    p.add_argument("--n-cells", type=int, default=3000, help="cells in the synthetic tissue")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic tissue (models train with their default seed=0)"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        choices=["pretrain", "hist2expr", "superres"],
        help="run only these capabilities (default: all)",
    )
    p.set_defaults(func=run)


#: What the demo writes into its folder; with ``--overwrite`` these (and only these) are removed first.
DEMO_OUTPUTS = (
    "synthetic.zarr", "report.json", "report.md", "tissue.png", "pretrain.png", "hist2expr.png", "superres_maps.png",
)  # fmt: skip


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds files already unless ``overwrite``; then remove the demo's earlier outputs there."""
    import shutil

    from ._common import CLIError

    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file, not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CLIError(
                f"--out {str(out)!r} holds files already (an earlier demo?): pass --overwrite to replace the demo's "
                "outputs there, or another --out folder"
            )
        for name in DEMO_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def run(args) -> int:
    """Run the demo and print where its outputs are."""
    from .._arguments import check_int, resolve_seed

    check_int(args.n_cells, "n_cells", example=3000)  # before the folder is touched: a usage error, exit 2
    resolve_seed(args.seed)
    out = Path(args.out)
    prepare_folder(out, args.overwrite)
    report = run_demo(out, n_cells=args.n_cells, seed=args.seed, only=args.only)
    print(f"\nDemo finished in {report['seconds_total']:.0f} s.")
    for row in report["metrics"]:
        print(f"  {row['capability']}: {row['metric']} {row['value']:.3f} (baseline {row['baseline']:.3f}: "
              f"{row['baseline_name']})")  # fmt: skip
    print(f"Outputs in {out.resolve()}: {report['zarr']}, {len(report['figures'])} figures, report.json, report.md")
    return 0


def run_demo(out_dir: Path, n_cells: int = 3000, seed: int = 0, only: list[str] | None = None) -> dict:
    """Run every installed capability on the synthetic tissue.

    Parameters
    ----------
    out_dir
        Folder receiving ``synthetic.zarr``, PNG figures and ``report.json``.
    n_cells
        Number of cells in the synthetic tissue.
    seed
        Seed of the tissue and the models.
    only
        Capability names to run (default: all installed).

    Returns
    -------
    The report, also written to ``out_dir / "report.json"`` and, as a table of every metric beside its baseline,
    ``out_dir / "report.md"``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import scvi

    from .. import datasets, pp
    from .._warnings import quiet
    from . import capability_modules

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = seed
    print(f"Generating a synthetic tissue of {n_cells} cells ...")
    sdata = datasets.synthetic_tissue(n_cells=n_cells, seed=seed)
    from ..pp._graph import radius_hint

    # a radius for about six neighbours per cell at this density (a fixed one isolates cells in a small tissue)
    radius = radius_hint(sdata.tables["table"].obsm["spatial"], None, "µm")["radius"]
    pp.build_graph(sdata, method="radius", radius=radius)
    table = sdata.tables["table"]
    stats = table.uns["spatial_neighbors"]["degree"]
    report = {
        "capabilities": {
            "graph": {
                "n_cells": int(table.n_obs),
                "radius_um": radius,
                "mean_degree": stats["mean_degree"],
                "n_isolated": stats["n_isolated"],
            }
        },
        "metrics": [],
        "figures": [],
    }
    report["figures"].append(str(_plot_tissue(sdata, out_dir / "tissue.png")))
    for name, module in capability_modules().items():
        if only is not None and name not in only:
            continue
        print(f"Running {name} ...")
        t0 = time.perf_counter()
        with quiet():
            section = module.demo(sdata, out_dir)
        section["seconds"] = round(time.perf_counter() - t0, 1)
        report["figures"] += [str(f) for f in section.pop("figures", [])]
        report["metrics"] += [{"capability": name, **row} for row in section.pop("metrics", [])]
        report["capabilities"][name] = section
    from ..io import write

    zarr_path = out_dir / "synthetic.zarr"
    write(sdata, zarr_path, overwrite=True)
    report["zarr"] = str(zarr_path)
    report["seconds_total"] = time.perf_counter() - start
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out_dir / "report.md").write_text(report_markdown(report))
    return report


def report_markdown(report: dict) -> str:
    """The demo's report for people: every metric beside its baseline, and one sentence on what it means.

    Examples
    --------
    >>> row = {"capability": "pretrain", "metric": "cell-type macro-F1", "value": 0.8, "baseline": 0.6,
    ...        "baseline_name": "PCA + logistic regression", "meaning": "Higher is better."}
    >>> print(report_markdown({"metrics": [row], "seconds_total": 12.0}).splitlines()[4])
    | pretrain | cell-type macro-F1 | 0.800 | 0.600 (PCA + logistic regression) | Higher is better. |
    """
    lines = [
        "# sslspatial demo report",
        "",
        "| step | metric | value | baseline | what it means |",
        "|---|---|---|---|---|",
    ]
    for row in report["metrics"]:
        lines.append(
            f"| {row['capability']} | {row['metric']} | {row['value']:.3f} | {row['baseline']:.3f} "
            f"({row['baseline_name']}) | {row['meaning']} |"
        )
    lines += [
        "",
        f"Synthetic tissue with known truth; {report['seconds_total']:.0f} s in all. The baselines ran on the same "
        "data in the same run. Every number is also in report.json.",
        "",
    ]
    return "\n".join(lines)


def _plot_tissue(sdata, path: Path) -> Path:
    """Cell types over the H&E image and domains with the spatial graph, each with its legend, axes in µm."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..io._access import get_image
    from ..pl._spatial import category_map, coordinate_unit

    table = sdata.tables["table"]
    xy = table.obsm["spatial"]
    unit = coordinate_unit(sdata, table)
    image = get_image(sdata, "he", "global") if "he" in sdata.images else None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for ax, key, under in zip(axes, ("cell_type", "domain"), (image, None), strict=True):
        category_map(ax, xy, table.obs[key], key=key, table=table, unit=unit, image=under, legend_title=key)
        ax.set_title(f"synthetic tissue: {key}" + (" over the H&E image" if under is not None else " and graph"))
    conn = table.obsp["spatial_connectivities"].tocoo()
    keep = np.random.default_rng(0).random(conn.nnz) < min(1.0, 3000 / max(conn.nnz, 1))
    for i, j in zip(conn.row[keep], conn.col[keep], strict=True):
        axes[1].plot(xy[[i, j], 0], xy[[i, j], 1], lw=0.2, c="k", alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
