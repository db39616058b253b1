"""``sslspatial hist2expr``: predict expression from H&E in a SpatialData zarr store (in place); demo step."""

from __future__ import annotations

from pathlib import Path

from ._common import names as _names


def register(subparsers) -> None:
    """Add the ``hist2expr`` subcommand."""
    p = subparsers.add_parser(
        "hist2expr",
        help="Train histology -> expression on sections with counts, predict the others (writes a new table).",
    )
    p.add_argument("zarr", help="path to a SpatialData zarr store")
    p.add_argument("--table-key", default="table", help="table of the spots with measured expression")
    p.add_argument("--image-key", default=None, help="image name (default: inferred per region)")
    p.add_argument(
        "--train-regions",
        default=None,
        help="comma-separated sections to train on (default: all not in --predict-regions)",
    )
    p.add_argument(
        "--predict-regions",
        default=None,
        help="comma-separated sections of the table (held out), shapes without measurements or image names to "
        "predict (default: none besides the training sections)",
    )
    p.add_argument(
        "--library-key",
        "--section-key",
        dest="library_key",
        default=None,
        help="obs column splitting regions into sections (default: regions)",
    )
    p.add_argument("--genes", default=None, help="comma-separated genes (default: all of the table)")
    p.add_argument(
        "--spot-size", type=float, default=None, help="patch side in coordinate units (default: --patch-scale spots)"
    )
    p.add_argument(
        "--patch-scale", type=float, default=1.5, help="patch side in spot diameters when --spot-size is not given"
    )
    p.add_argument("--patch-px", type=int, default=32, help="patch side in pixels after resampling")
    p.add_argument(
        "--likelihood",
        default="zinb",
        choices=["zinb", "nb", "poisson", "gaussian", "none"],
        help="auxiliary count likelihood (none: standardised regression only)",
    )
    p.add_argument("--max-epochs", type=int, default=60, help="training epochs")
    p.add_argument(
        "--validation-sections", type=int, default=0, help="training sections held out for early stopping (default 0)"
    )
    p.add_argument("--colour-normalize", action="store_true", help="per-section Reinhard colour normalisation")
    p.add_argument("--key-added", default="hist2expr", help="name of the table of predictions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --key-added table and --model-out")
    p.add_argument("--model-out", default=None, help="folder to save the trained model to")
    p.add_argument(
        "--model-in", default=None, help="folder of a model saved with --model-out: predict only, no training"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``ss.tl.hist2expr`` on a zarr store and persist the new elements."""
    from .. import io
    from ..tl import hist2expr
    from ._common import CLIError, check_new_key, check_output_folder, read_store

    check_output_folder(args.model_out, args.overwrite, "--model-out")
    if args.model_in and not Path(args.model_in).is_dir():
        raise CLIError(
            f"--model-in {args.model_in!r} is not a folder of a saved model (sslspatial hist2expr --model-out)"
        )
    sdata = read_store(args.zarr, args.table_key)
    check_new_key(sdata.tables, args.key_added, "tables", args.overwrite)
    shapes_before = set(sdata.shapes)
    trained = None
    if args.model_in:
        from ..model import Hist2Expr

        trained = Hist2Expr.load(args.model_in)
    model = hist2expr(
        sdata,
        table_key=args.table_key,
        image_key=args.image_key,
        genes=_names(args.genes),
        train_regions=_names(args.train_regions),
        predict_regions=_names(args.predict_regions),
        library_key=args.library_key,
        spot_size=args.spot_size,
        patch_scale=args.patch_scale,
        patch_px=args.patch_px,
        likelihood=args.likelihood,
        max_epochs=args.max_epochs,
        n_validation_sections=args.validation_sections,
        colour_normalize=args.colour_normalize,
        model=trained,
        key_added=args.key_added,
        overwrite=args.overwrite,
    )
    new_shapes = sorted(set(sdata.shapes) - shapes_before)
    io.persist(sdata, [*new_shapes, args.key_added, *([args.table_key] if args.table_key in sdata.tables else [])])
    if args.model_out:
        model.save(args.model_out, overwrite=True, save_anndata=True)
    record = sdata.tables[args.key_added].uns[args.key_added]
    baseline = record.get("baseline_mean_pearson", {})
    for name, m in record["mean_pearson"].items():
        yardstick = f" (ridge on image statistics: {baseline[name]['mean']:.3f})" if name in baseline else ""
        print(f"{name} ({m['split']}): mean per-gene Pearson {m['mean']:.3f}{yardstick}")
    print(f"predictions written to {args.zarr}: table {args.key_added!r}")
    return 0


def demo(sdata, out_dir: Path) -> dict:
    """Train on the left half of the synthetic Visium spots, predict the right half from the image alone."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..tl import hist2expr

    table = sdata.tables["table_visium"]
    x = table.obsm["spatial"][:, 0]
    halves = np.where(x < np.median(x), "left", "right").astype(object)
    halves[(x < np.quantile(x, 0.25))] = "left_val"  # a validation strip for early stopping
    table.obs["hist2expr_half"] = halves
    hist2expr(
        sdata, table_key="table_visium", image_key="he", library_key="hist2expr_half",
        train_regions=["left", "left_val"], predict_regions=["right"], patch_px=24, max_epochs=10,
        n_validation_sections=1, model_kwargs={"embed_kernel": 4, "dim": 64, "transformer_depth": 1},
        key_added="hist2expr", overwrite=True,  # with a progress bar: the longest step of the demo
    )  # fmt: skip
    out = sdata.tables["hist2expr"]
    r = out.var["pearson_right"].to_numpy()
    gene = int(np.nanargmax(r))
    from ..pl import expression_maps

    path = out_dir / "hist2expr.png"
    # measured (log-normalised, layer "measured") beside predicted over the H&E image, on one colour scale
    fig = expression_maps(
        sdata, out.var_names[gene], prediction="hist2expr", table_key="hist2expr", layer="measured",
        library_key="section", sections="right", spot_radius=table.uns["spot_geometry"]["spot_radius"],
    )  # fmt: skip
    fig.savefig(path, dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    baseline = out.var["baseline_pearson_right"].to_numpy() if "baseline_pearson_right" in out.var else None
    metrics = []
    if baseline is not None:
        metrics.append({
            "metric": "held-out mean per-gene Pearson r (right half predicted from the image alone)",
            "value": float(np.nanmean(r)),
            "baseline": float(np.nanmean(baseline)),
            "baseline_name": "ridge regression on image statistics",
            "meaning": "How well each gene's predicted map follows its measured map on spots never trained on, "
            "averaged over genes (0 is no relation, 1 is perfect).",
        })  # fmt: skip
    return {
        "mean_pearson_heldout": float(np.nanmean(r)),
        "best_gene_pearson": float(r[gene]),
        "metrics": metrics,
        "figures": [path],
    }
