"""CLI of the pretraining capability.

``sslspatial pretrain``, ``sslspatial annotate`` and ``sslspatial transfer`` on a SpatialData zarr store (in
place), and its step of ``sslspatial demo``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


class _Deprecated(argparse.Action):
    """A hidden old option name: stores into the new option's ``dest`` and says which name to use."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-epochs", type=int, default=None, help="training epochs (default: the function's, scaled to the data)"
    )
    p.add_argument("--epochs", dest="max_epochs", type=int, action=_Deprecated, new="--max-epochs")
    p.add_argument(
        "--batch-size", type=int, default=None, help="seed cells per minibatch (default: 256, 1024 from 100,000 cells)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    p.add_argument("--devices", default="auto", help="Lightning devices: auto, a count, or a comma-separated list")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initialisation and the minibatches")


def register(subparsers) -> None:
    """Add the ``pretrain``, ``annotate`` and ``transfer`` subcommands."""
    p = subparsers.add_parser(
        "pretrain",
        help="Self-supervised pretraining on the spatial graph; writes obsm['X_<key>'] into the store "
        "(ss.tl.pretrain_mask / pretrain_contrastive / pretrain_pseudolabel).",
    )
    p.add_argument("zarr", help="path to a SpatialData zarr store with a graph (sslspatial graph ...)")
    p.add_argument("--table-key", default="table", help="table to pretrain on")
    p.add_argument(
        "--objective",
        default="mask",
        choices=["mask", "barlow", "byol", "pseudolabel"],
        help="masked reconstruction, Barlow Twins, BYOL, or k-means pseudo-labels",
    )
    p.add_argument("--mask", default="cells", choices=["cells", "entries"], help="masking strategy (objective mask)")
    p.add_argument(
        "--encoder", default="gat", choices=["gat", "gcn", "sage", "transformer", "mlp"], help="encoder network"
    )
    p.add_argument(
        "--likelihood", default="nb", choices=["nb", "zinb", "poisson", "gaussian"], help="reconstruction likelihood"
    )
    p.add_argument("--layer", default=None, help="layer with the counts (default: X)")
    p.add_argument("--n-latent", type=int, default=32, help="embedding dimension")
    p.add_argument("--n-hidden", type=int, default=128, help="hidden units per encoder layer")
    p.add_argument("--n-layers", type=int, default=2, help="encoder layers")
    _training_options(p)
    p.add_argument("--key-added", default=None, help="embedding name: obsm['X_<key>'] (default: pretrain_<objective>)")
    p.add_argument("--model-out", default=None, help="folder to save the trained model to")
    p.add_argument("--save-model", dest="model_out", action=_Deprecated, new="--model-out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing embedding and --model-out folder")
    p.set_defaults(func=_pretrain_run)

    a = subparsers.add_parser(
        "annotate",
        help="Predict cell types from partial labels with a saved pretrained model; writes obs['<key>_prediction'] "
        "(ss.tl.annotate).",
    )
    a.add_argument("zarr", help="path to a SpatialData zarr store")
    a.add_argument(
        "--model", required=True, help="folder of a model saved by `sslspatial pretrain --model-out` on this table"
    )
    a.add_argument("--labels-key", required=True, help="obs column with (partial) cell-type labels")
    a.add_argument("--table-key", default="table", help="table to annotate")
    a.add_argument(
        "--method",
        default="auto",
        choices=list(ANNOTATE_METHODS),
        help="fine-tune the encoder, a kNN or linear probe of the embedding, expression probe, or auto (chosen by "
        "spatial cross-validation)",
    )
    a.add_argument("--n-neighbors", type=int, default=5, help="k of the kNN probe")
    a.add_argument("--max-epochs", type=int, default=None, help="fine-tuning epochs (default: about 300 steps)")
    a.add_argument("--key-added", default="annotate", help="outputs: obs['<key>_prediction'], ...")
    a.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    a.set_defaults(func=_annotate_run)

    t = subparsers.add_parser(
        "transfer",
        help="Embed another dataset (overlapping gene panel) with a saved pretrained model; writes obsm['X_<key>'] "
        "(ss.tl.transfer).",
    )
    t.add_argument("zarr", help="path to the query SpatialData zarr store, with a graph (sslspatial graph ...)")
    t.add_argument("--model", required=True, help="folder of the reference model (sslspatial pretrain --model-out)")
    t.add_argument("--table-key", default="table", help="query table")
    t.add_argument("--layer", default=None, help="query layer with the counts (default: X)")
    t.add_argument("--key-added", default="transfer", help="embedding name: obsm['X_<key>']")
    t.add_argument("--overwrite", action="store_true", help="replace an existing embedding")
    t.set_defaults(func=_transfer_run)


#: ``sslspatial annotate --method`` choices (``ss.tl.annotate`` validates them again).
ANNOTATE_METHODS = ("auto", "knn", "linear", "finetune", "expression")


def _pretrain_run(args) -> int:
    from .. import io, tl
    from ._common import check_new_key, check_output_folder, devices, read_store

    key = args.key_added or f"pretrain_{args.objective}"
    check_output_folder(args.model_out, args.overwrite, "--model-out")
    sdata = read_store(args.zarr, args.table_key)
    check_new_key(sdata.tables[args.table_key].obsm, f"X_{key}", "obsm", args.overwrite)
    common = {
        "seed": args.seed,
        "encoder": args.encoder,
        "likelihood": args.likelihood,
        "layer": args.layer,
        "table_key": args.table_key,
        "n_latent": args.n_latent,
        "n_hidden": args.n_hidden,
        "n_layers": args.n_layers,
        "max_epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "overwrite": args.overwrite,
        "accelerator": args.accelerator,
        "devices": devices(args.devices),
    }
    if args.objective == "mask":
        model = tl.pretrain_mask(sdata, mask=args.mask, key_added=key, **common)
    elif args.objective in ("barlow", "byol"):
        model = tl.pretrain_contrastive(sdata, method=args.objective, key_added=key, **common)
    else:
        model = tl.pretrain_pseudolabel(sdata, key_added=key, **common)
    io.persist(sdata, args.table_key)
    if args.model_out:  # with its AnnData, so that `sslspatial transfer` can load it without the reference store
        model.save(args.model_out, overwrite=True, save_anndata=True)
    print(f"embedding written to {args.zarr} (table {args.table_key!r}, obsm['X_{key}'])")
    return 0


def _load_model(path: str, table):
    from ..model import SpatialPretrainModel
    from ._common import CLIError

    if not Path(path).is_dir():
        raise CLIError(f"--model {path!r} is not a folder of a saved model (sslspatial pretrain --model-out)")
    return SpatialPretrainModel.load(path, adata=table)


def _annotate_run(args) -> int:
    from .. import io, tl
    from ._common import check_new_key, read_store

    sdata = read_store(args.zarr, args.table_key)
    table = sdata.tables[args.table_key]
    if args.labels_key not in table.obs:
        from ._common import CLIError

        raise CLIError(f"no obs column {args.labels_key!r} in table {args.table_key!r}; pass --labels-key")
    check_new_key(table.obs, f"{args.key_added}_prediction", "obs", args.overwrite)
    model = _load_model(args.model, table)
    tl.annotate(
        sdata,
        model,
        args.labels_key,
        method=args.method,
        n_neighbors=args.n_neighbors,
        max_epochs=args.max_epochs,
        table_key=args.table_key,
        key_added=args.key_added,
        overwrite=args.overwrite,
    )
    io.persist(sdata, args.table_key)
    print(annotate_summary(sdata.tables[args.table_key].uns[args.key_added], args.key_added, args.zarr))
    return 0


def annotate_summary(record: dict, key: str, store: str) -> str:
    """One line: what was chosen, its cross-validated macro-F1 against the baseline's, and where the output went.

    Examples
    --------
    >>> record = {"method": "auto", "chosen": "expression(C=0.1)", "scores": {"expression(C=0.1)": 0.78},
    ...           "baseline": {"name": "pca", "cv_macro_f1": 0.6}}
    >>> annotate_summary(record, "annotate", "s.zarr")  # doctest: +NORMALIZE_WHITESPACE
    "annotate: chose expression(C=0.1), cross-validated macro-F1 0.780 vs 0.600 for the baseline (pca);
    predictions in obs['annotate_prediction'] of s.zarr"
    """
    where = f"predictions in obs['{key}_prediction'] of {store}"
    if record.get("method") != "auto" or "chosen" not in record:
        return f"annotate: method {record.get('method')}; {where}"
    score = record.get("scores", {}).get(record["chosen"])
    baseline = record.get("baseline", {})
    cv = "" if score is None else f", cross-validated macro-F1 {score:.3f}"
    if score is not None and baseline.get("cv_macro_f1") is not None:
        cv += f" vs {baseline['cv_macro_f1']:.3f} for the baseline ({baseline.get('name', 'pca')})"
    return f"annotate: chose {record['chosen']}{cv}; {where}"


def _transfer_run(args) -> int:
    from .. import io, tl
    from ..model import SpatialPretrainModel
    from ._common import CLIError, check_new_key, read_store

    sdata = read_store(args.zarr, args.table_key)
    check_new_key(sdata.tables[args.table_key].obsm, f"X_{args.key_added}", "obsm", args.overwrite)
    if not Path(args.model).is_dir():
        raise CLIError(f"--model {args.model!r} is not a folder of a saved model (sslspatial pretrain --model-out)")
    if not (Path(args.model) / "adata.h5ad").is_file():
        raise CLIError(
            f"--model {args.model!r} was saved without its AnnData; save it with `sslspatial pretrain --model-out` "
            "(or model.save(..., save_anndata=True))"
        )
    reference = SpatialPretrainModel.load(args.model)
    tl.transfer(sdata, reference, layer=args.layer, table_key=args.table_key, key_added=args.key_added,
                overwrite=args.overwrite)  # fmt: skip
    io.persist(sdata, args.table_key)
    print(f"query embedding written to {args.zarr} (table {args.table_key!r}, obsm['X_{args.key_added}'])")
    return 0


def demo(sdata, out_dir: Path) -> dict:
    """The pretraining step of ``sslspatial demo``.

    Pretrain on the synthetic tissue (masked cells, GAT), annotate cell types from 10% of the labels of one spatial
    half, and cluster the embedding into domains; returns accuracy figures against the synthetic truth.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from .. import tl
    from ..data import half_split
    from ..metrics import classification_report, clustering_report

    table = sdata.tables["table"]
    t0 = time.perf_counter()
    model = tl.pretrain_mask(
        sdata, n_hidden=64, max_epochs=3, batch_size=256, key_added="pretrain_mask", overwrite=True
    )
    t_pretrain = time.perf_counter() - t0
    split = half_split(table.obsm["spatial"])
    rng = np.random.default_rng(0)
    labelled = rng.choice(split.train, max(20, split.train.size // 10), replace=False)
    truth = table.obs["cell_type"].astype(str).to_numpy()
    labels = np.full(table.n_obs, None, dtype=object)
    labels[labelled] = truth[labelled]
    table.obs["demo_labels"] = labels
    tl.annotate(sdata, model, "demo_labels", method="linear", key_added="pretrain_annotate", overwrite=True)
    pred = table.obs["pretrain_annotate_prediction"].astype(str).to_numpy()
    typing = classification_report(truth[split.test], pred[split.test])
    baseline_pred = _pca_logreg(table, labelled)
    typing_baseline = classification_report(truth[split.test], baseline_pred[split.test])
    n_domains = table.obs["domain"].nunique()
    tl.domains(sdata, use_rep="X_pretrain_mask", n_domains=n_domains, key_added="pretrain_domains", overwrite=True)
    tl.domains(sdata, use_rep="X", n_domains=n_domains, key_added="expression_domains", overwrite=True)
    domains = clustering_report(table.obs["domain"].astype(str), table.obs["pretrain_domains"].astype(str))
    domains_baseline = clustering_report(table.obs["domain"].astype(str), table.obs["expression_domains"].astype(str))
    del table.obs["demo_labels"]

    from ..pl._spatial import categorical_colours, category_map, coordinate_unit

    xy, unit = table.obsm["spatial"], coordinate_unit(sdata, table)
    types, colours, _ = categorical_colours(table.obs["cell_type"], table, "cell_type")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    panels = [
        ("true cell type", table.obs["cell_type"], types, colours, "cell type"),
        (
            f"predicted (held-out macro-F1 {typing['macro_f1']:.2f}; PCA + logreg {typing_baseline['macro_f1']:.2f})",
            table.obs["pretrain_annotate_prediction"].astype(str),
            types,
            colours,
            "cell type",
        ),
        (f"ss.tl.domains on the embedding (ARI {domains['ari']:.2f})",
         [f"domain {c}" for c in table.obs["pretrain_domains"].astype(str)], None, None, "domain"),
    ]  # fmt: skip
    for ax, (title, values, cats, cols, legend_title) in zip(axes, panels, strict=True):
        category_map(
            ax, xy, values, key="cell_type" if cats else "cluster", table=table, categories=cats, colours=cols,
            unit=unit, point_size=6, legend_title=legend_title,
        )  # fmt: skip
        ax.set_title(title)
    path = Path(out_dir) / "pretrain.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {
        "pretrain_seconds": round(t_pretrain, 1),
        "celltype_macro_f1_10pct_labels": typing["macro_f1"],
        "celltype_balanced_accuracy": typing["balanced_accuracy"],
        "domain_ari": domains["ari"],
        "metrics": [
            {
                "metric": "cell-type macro-F1 (held-out half, 10% of one half labelled)",
                "value": typing["macro_f1"],
                "baseline": typing_baseline["macro_f1"],
                "baseline_name": "PCA + logistic regression on the same labelled cells",
                "meaning": "Mean over cell types of the F1 score on cells the classifier never saw; 1 is perfect, "
                "above the baseline means the pretrained embedding helps.",
            },
            {
                "metric": "domain ARI (ss.tl.domains on the embedding)",
                "value": domains["ari"],
                "baseline": domains_baseline["ari"],
                "baseline_name": "ss.tl.domains on expression PCA",
                "meaning": "Agreement of the found domains with the true ones (adjusted Rand index: 0 is chance, "
                "1 is perfect).",
            },
        ],
        "figures": [path],
    }


def _pca_logreg(table, labelled):
    """The baseline of the demo's cell typing: 30 PCs of log-normalised expression + logistic regression."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from ..pp._normalize import log_normalize

    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    pcs = PCA(min(30, x.shape[1] - 1), random_state=0).fit_transform(log_normalize(np.asarray(x, dtype=float)))
    truth = table.obs["cell_type"].astype(str).to_numpy()
    clf = LogisticRegression(max_iter=2000).fit(pcs[labelled], truth[labelled])
    return clf.predict(pcs)
