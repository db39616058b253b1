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


def run(args) -> int:
    """Run the demo and print where its outputs are."""
    report = run_demo(Path(args.out), n_cells=args.n_cells, seed=args.seed, only=args.only)
    print(f"\nDemo finished in {report['seconds_total']:.0f} s.")
    for name, section in report["capabilities"].items():
        summary = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in section.items())
        print(f"  {name}: {summary}")
    print(f"Outputs in {Path(args.out).resolve()}: {report['zarr']}, {len(report['figures'])} figures, report.json")
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
    The report, also written to ``out_dir / "report.json"``.
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
    pp.build_graph(sdata, method="radius", radius=30.0)
    table = sdata.tables["table"]
    stats = table.uns["spatial_neighbors"]["degree"]
    report = {
        "capabilities": {
            "graph": {
                "n_cells": int(table.n_obs),
                "mean_degree": stats["mean_degree"],
                "n_isolated": stats["n_isolated"],
            }
        },
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
        report["capabilities"][name] = section
    zarr_path = out_dir / "synthetic.zarr"
    if zarr_path.exists():
        import shutil

        shutil.rmtree(zarr_path)
    sdata.write(zarr_path)
    report["zarr"] = str(zarr_path)
    report["seconds_total"] = time.perf_counter() - start
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return report


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
