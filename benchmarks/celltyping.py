"""Cell typing on real data: does self-supervised pretraining help when labels are scarce?

Splits (honest: whole sections or spatial halves held out, the graph never connects train and test cells):
STARmap mPFC BZ5 -> BZ9 and BZ9 -> BZ5 (train on one section, test on the other), osmFISH lower half -> upper half
(cells of the training half within 2 hops of the test half are dropped, ``buffer_split``). Label fractions of the
training cells: 1%, 10%, 100%.

Methods, in one run: PCA (30) + logistic regression; the same GAT encoder trained supervised from scratch; each
pretraining objective (masked cells, masked entries, Barlow Twins, BYOL, k-means pseudo-labels) followed by
fine-tuning, followed by a kNN probe (k=5), and followed by a class-balanced linear probe on [embedding, 30 PCs of
the cell's own expression] (``ss.tl.annotate(method="linear", expression_pcs=30)``); PCA + logistic regression is
reported plain and with the probe's own classifier (balanced, standardised PCs), so the probe's gain over the latter
is what the embedding adds. Pretraining uses every cell of the dataset without labels (also the
test cells' expression: transductive, like the reference methods). Metrics: macro-F1, balanced accuracy, Cohen's
kappa on the test cells.

Run: ``python benchmarks/celltyping.py [--quick]`` (``--quick``: STARmap BZ5 -> BZ9 only, 10% labels, fewer
epochs). Writes ``results/celltyping[_quick].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OBJECTIVES = {
    "mask_cells": ("pretrain_mask", {"mask": "cells"}),
    "mask_entries": ("pretrain_mask", {"mask": "entries"}),
    "barlow": ("pretrain_contrastive", {"method": "barlow"}),
    "byol": ("pretrain_contrastive", {"method": "byol"}),
    "pseudolabel": ("pretrain_pseudolabel", {}),
}


def datasets(quick: bool):
    """Yield ``(dataset name, AnnData with graph, [(split name, train idx, test idx)])``."""
    import sslspatial as ss
    from sslspatial.data import Split, buffer_split, half_split

    star = ss.datasets.starmap_mpfc(path=DATA / "starmap_mpfc")
    ss.pp.build_graph(star, method="radius", radius=400.0, library_key="section")  # pixels; mean degree ~7
    sec = star.obs["section"].astype(str).to_numpy()
    splits = [("BZ5->BZ9", np.flatnonzero(sec == "BZ5"), np.flatnonzero(sec == "BZ9"))]
    if not quick:
        splits.append(("BZ9->BZ5", np.flatnonzero(sec == "BZ9"), np.flatnonzero(sec == "BZ5")))
    yield "starmap", star, splits
    if quick:
        return
    osm = ss.datasets.osmfish(path=DATA / "osmfish")
    ss.pp.build_graph(osm, method="radius", radius=25.0)  # micrometres; mean degree printed below
    half = half_split(osm.obsm["spatial"])
    half = buffer_split(Split(half.train, half.test), osm.obsp["spatial_connectivities"], 2)
    yield "osmfish", osm, [("lower->upper half", half.train, half.test)]


def pca_logreg(adata, labelled, test, balanced=False):
    """PCA (30) of log1p-normalised expression + logistic regression (plain, or balanced on standardised PCs: the
    classifier of ``ss.tl.annotate(method="linear")``)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.log1p(1e4 * adata.X / np.maximum(adata.X.sum(1, keepdims=True), 1))
    pcs = PCA(30, random_state=0).fit_transform(x)
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    if balanced:
        pcs = StandardScaler().fit_transform(pcs)
    clf = LogisticRegression(max_iter=3000, class_weight="balanced" if balanced else None)
    return clf.fit(pcs[labelled], truth[labelled]).predict(pcs[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default 30, quick 10)")
    args = parser.parse_args()
    import scvi
    import torch

    torch.set_num_threads(2)
    scvi.settings.seed = 0
    import sslspatial as ss
    from sslspatial.metrics import classification_report

    epochs = args.epochs or (10 if args.quick else 30)
    fractions = [0.1] if args.quick else [0.01, 0.1, 1.0]
    size = {"encoder": "gat", "n_hidden": 64, "n_latent": 32, "batch_size": 128}
    rows, timings = [], {}
    for name, adata, splits in datasets(args.quick):
        degree = float(adata.obsp["spatial_connectivities"].getnnz(1).mean())
        print(f"{name}: {adata.n_obs} cells, mean degree {degree:.1f}", flush=True)
        truth = adata.obs["cell_type"].astype(str).to_numpy()
        models = {}
        for obj, (fn, kwargs) in OBJECTIVES.items():
            t0 = time.perf_counter()
            models[obj] = getattr(ss.tl, fn)(adata, **kwargs, **size, max_epochs=epochs, key_added=obj)
            timings[f"{name}/{obj}"] = round(time.perf_counter() - t0, 1)
            print(f"  pretrained {obj} in {timings[f'{name}/{obj}']} s", flush=True)
        scratch = ss.model.SpatialPretrainModel(adata, encoder="gat", n_hidden=64, n_latent=32)
        scratch.is_trained_ = True  # untrained encoder: fine-tuning it = supervised from scratch
        for split, train, test in splits:
            for fraction in fractions:
                rng = np.random.default_rng(0)
                labelled = np.sort(rng.choice(train, max(2, round(fraction * train.size)), replace=False))
                labels = np.full(adata.n_obs, None, dtype=object)
                labels[labelled] = truth[labelled]
                adata.obs["bench_labels"] = labels

                def record(method, pred, _split=split, _fraction=fraction, _name=name, _truth=truth, _test=test):
                    rep = classification_report(_truth[_test], pred)
                    rows.append({"dataset": _name, "split": _split, "labels": _fraction, "method": method, **rep})
                    print(f"  {_split} {_fraction:>5}: {method:<24} macro-F1 {rep['macro_f1']:.3f}", flush=True)

                record("PCA + logreg", pca_logreg(adata, labelled, test))
                record("PCA + logreg (balanced)", pca_logreg(adata, labelled, test, balanced=True))
                candidates = [("supervised (scratch)", scratch, "finetune", 0)]
                for obj, model in models.items():
                    candidates += [
                        (f"{obj} + finetune", model, "finetune", 0),
                        (f"{obj} + kNN", model, "knn", 0),
                        (f"{obj} + linear [z, PCs]", model, "linear", 30),
                    ]
                for method, model, how, n_pcs in candidates:
                    ss.tl.annotate(adata, model, "bench_labels", method=how, expression_pcs=n_pcs, overwrite=True)
                    record(method, adata.obs["annotate_prediction"].astype(str).to_numpy()[test])
    RESULTS.mkdir(exist_ok=True)
    out = "celltyping_quick" if args.quick else "celltyping"
    payload = {"pretrain_epochs": epochs, "encoder": size, "pretrain_seconds": timings, "results": rows}
    (RESULTS / f"{out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_markdown(rows, RESULTS / f"{out}.md", epochs, args.quick)


def write_markdown(rows, path: Path, epochs: int, quick: bool) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    lines = [
        f"# Cell typing{' (quick)' if quick else ''}",
        "",
        f"GAT encoder (2 layers, hidden 64, latent 32); pretraining {epochs} epochs on all cells without labels; "
        "fine-tuning with class-weighted cross-entropy (about 300 steps, head warm-started from the linear probe on the "
        "frozen embedding: LP-FT); kNN probe k=5; linear probe = balanced logistic "
        "regression on [standardised embedding, standardised 30 PCs of the cell's expression]. Test cells are a held-out "
        "section (STARmap) or spatial half (osmFISH). Written by `benchmarks/celltyping.py`.",
        "",
    ]
    for metric in ("macro_f1", "balanced_accuracy", "cohen_kappa"):
        table = df.pivot_table(index="method", columns=["dataset", "split", "labels"], values=metric)
        lines += [f"## {metric}", "", table.round(3).to_markdown(), ""]
    best = df.loc[
        df.groupby(["dataset", "split", "labels"])["macro_f1"].idxmax(),
        ["dataset", "split", "labels", "method", "macro_f1"],
    ]
    lines += ["## best method per setting (macro-F1)", "", best.to_markdown(index=False), ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
