"""CLI of the pretraining capability.

``sslspatial pretrain`` and ``sslspatial annotate`` on a SpatialData zarr store (in
place), and its step of ``sslspatial demo``.
"""

from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``pretrain`` and ``annotate`` subcommands."""
    p = subparsers.add_parser(
        "pretrain", help="Self-supervised pretraining on the spatial graph; writes obsm['X_<key>'] into the store."
    )
    p.add_argument("zarr", help="path to a SpatialData zarr store with a graph (sslspatial graph ...)")
    p.add_argument("--table-key", default="table")
    p.add_argument("--objective", default="mask", choices=["mask", "barlow", "byol", "pseudolabel"])
    p.add_argument("--mask", default="cells", choices=["cells", "entries"], help="masking strategy (objective mask)")
    p.add_argument("--encoder", default="gat", choices=["gat", "gcn", "sage", "transformer", "mlp"])
    p.add_argument("--likelihood", default="nb", choices=["nb", "zinb", "poisson", "gaussian"])
    p.add_argument("--layer", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--key-added", default=None, help="embedding key (default: pretrain_<objective>)")
    p.add_argument("--save-model", default=None, help="folder to save the trained model to")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto")
    p.set_defaults(func=_pretrain_run)

    a = subparsers.add_parser("annotate", help="Predict cell types with a saved pretrained model (kNN / linear probe).")
    a.add_argument("zarr")
    a.add_argument("--model", required=True, help="folder of a model saved by `sslspatial pretrain --save-model`")
    a.add_argument("--labels-key", required=True, help="obs column with (partial) cell-type labels")
    a.add_argument("--table-key", default="table")
    a.add_argument("--method", default="knn", choices=["finetune", "knn", "linear"])
    a.add_argument("--key-added", default="annotate")
    a.set_defaults(func=_annotate_run)


def _pretrain_run(args) -> int:
    import spatialdata as sd

    from .. import _io, tl

    sdata = sd.read_zarr(args.zarr)
    common = {
        "encoder": args.encoder,
        "likelihood": args.likelihood,
        "layer": args.layer,
        "table_key": args.table_key,
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "overwrite": True,
        "train_kwargs": {"accelerator": args.accelerator, "devices": _devices(args.devices)},
    }
    key = args.key_added or f"pretrain_{args.objective}"
    if args.objective == "mask":
        model = tl.pretrain_mask(sdata, mask=args.mask, key_added=key, **common)
    elif args.objective in ("barlow", "byol"):
        model = tl.pretrain_contrastive(sdata, method=args.objective, key_added=key, **common)
    else:
        model = tl.pretrain_pseudolabel(sdata, key_added=key, **common)
    _io.persist(sdata, args.table_key)
    if args.save_model:
        model.save(args.save_model, overwrite=True)
    print(f"embedding written to {args.zarr} (table {args.table_key!r}, obsm['X_{key}'])")
    return 0


def _annotate_run(args) -> int:
    import spatialdata as sd

    from .. import _io, tl
    from ..model import SpatialPretrainModel

    sdata = sd.read_zarr(args.zarr)
    table = sdata.tables[args.table_key]
    model = SpatialPretrainModel.load(args.model, adata=table)
    tl.annotate(
        sdata,
        model,
        args.labels_key,
        method=args.method,
        table_key=args.table_key,
        key_added=args.key_added,
        overwrite=True,
    )
    _io.persist(sdata, args.table_key)
    print(f"predictions written to {args.zarr} (obs['{args.key_added}_prediction'])")
    return 0


def _devices(value: str):
    return int(value) if value.isdigit() else value


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
    from sklearn.cluster import KMeans

    z = table.obsm["X_pretrain_mask"]
    n_domains = table.obs["domain"].nunique()
    clusters = KMeans(n_domains, n_init=4, random_state=0).fit_predict(z)
    domains = clustering_report(table.obs["domain"].astype(str), clusters)
    del table.obs["demo_labels"]

    xy = table.obsm["spatial"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (title, values) in zip(
        axes,
        [
            ("true cell type", table.obs["cell_type"].cat.codes),
            (
                f"predicted (test half macro-F1 {typing['macro_f1']:.2f})",
                table.obs["pretrain_annotate_prediction"].cat.codes,
            ),
            (f"k-means of embedding (domain ARI {domains['ari']:.2f})", clusters),
        ],
        strict=True,
    ):
        ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(values), s=4, cmap="tab10")
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.invert_yaxis()
    fig.tight_layout()
    path = Path(out_dir) / "pretrain.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {
        "pretrain_seconds": round(t_pretrain, 1),
        "celltype_macro_f1_10pct_labels": typing["macro_f1"],
        "celltype_balanced_accuracy": typing["balanced_accuracy"],
        "domain_ari_kmeans_embedding": domains["ari"],
        "figures": [path],
    }
