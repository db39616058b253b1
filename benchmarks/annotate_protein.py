"""``ss.tl.annotate`` on protein data (``likelihood="gaussian"``) against the obvious baseline (issue 31).

Data: the spatial CITE-seq skin section of ``../shared/data/cite_seq_skin`` (DBiT grid, 1,618 spots x 283 protein
tags, ``x3/reordered_filtered_protein.csv``). Values the model reads: the centred log-ratio of each spot
(``log1p(counts)`` minus the spot's mean ``log1p``), the usual transform of antibody tags, under a Gaussian likelihood.

Labels (derived here; the data carry none): k-means (k = 8, seed 0) on the 20 leading principal components of the
standardised CLR values of all spots, i.e. protein phenotypes, as gated phenotypes are in a multiplexed protein image.
They are a function of the features themselves, which is the setting where the standardised features are hard to beat.

Protocol: spots split into left and right halves at the median x; 10 % of the left half's spots labelled (3 draws,
seeds 0, 1, 2), the right half predicted; macro-F1 on the right half. Rows, all on the same draws:

- ``baseline``: every protein standardised (scaler fitted on all spots, no labels used) + class-balanced logistic
  regression (scikit-learn defaults otherwise) on the labelled spots;
- ``default``: ``ss.tl.pretrain_mask(likelihood="gaussian")`` with its defaults on all spots (no labels), then
  ``ss.tl.annotate`` with its defaults (``method="auto"``);
- ``previous default pool``: the same with ``candidates=("linear", "expression", "pca")``, the pool Gaussian data got
  before issue 31 (no ``"scaled"`` candidate, the PCA baseline without class weights as safety net).

Run: ``python benchmarks/annotate_protein.py``; writes ``results/annotate_protein.{json,md}``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _stamp import stamp, stamp_line

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cite_seq_skin"
RESULTS = ROOT / "benchmarks" / "results"
N_CLUSTERS, FRACTION, DRAWS = 8, 0.1, (0, 1, 2)


def load():
    """The protein table (CLR values in ``X``), spot coordinates and the derived phenotype labels."""
    import anndata as ad
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    prot = pd.read_csv(DATA / "x3" / "reordered_filtered_protein.csv", index_col=0)
    pos = pd.read_csv(DATA / "x3" / "position_with_center.csv").set_index("barcode").loc[prot.index]
    logx = np.log1p(prot.to_numpy(dtype=np.float64))
    clr = logx - logx.mean(1, keepdims=True)
    adata = ad.AnnData(clr.astype(np.float32), obs=pd.DataFrame(index=prot.index.astype(str)))
    adata.var_names = [str(c) for c in prot.columns]
    adata.obsm["spatial"] = pos[["x", "y"]].to_numpy(dtype=np.float64)
    pcs = PCA(20, random_state=0).fit_transform(StandardScaler().fit_transform(clr))
    adata.obs["phenotype"] = pd.Categorical(
        [f"p{c}" for c in KMeans(N_CLUSTERS, n_init=10, random_state=0).fit_predict(pcs)]
    )
    return adata


def main() -> None:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    import sslspatial as ss

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    adata = load()
    x = adata.obsm["spatial"][:, 0]
    left, right = np.flatnonzero(x <= np.median(x)), np.flatnonzero(x > np.median(x))
    truth = adata.obs["phenotype"].astype(str).to_numpy()
    ss.pp.build_graph(adata, method="knn", n_neighs=8)
    model = ss.tl.pretrain_mask(adata, likelihood="gaussian")
    pretrain_seconds = time.perf_counter() - t0
    scaled = StandardScaler().fit_transform(adata.X)
    rows, choices = [], []
    for draw in DRAWS:
        rng = np.random.default_rng(draw)
        labelled = rng.choice(left, int(round(FRACTION * left.size)), replace=False)

        def score(pred, draw=draw, labelled=labelled):
            return {"draw": draw, "n_labelled": int(labelled.size), "macro_f1": float(
                f1_score(truth[right], pred, labels=np.unique(truth[right]), average="macro", zero_division=0))}  # fmt: skip

        clf = LogisticRegression(class_weight="balanced", max_iter=3000).fit(scaled[labelled], truth[labelled])
        rows.append({"method": "baseline", **score(clf.predict(scaled[right]))})
        for method, kwargs in (
            ("default", {}),
            ("previous default pool", {"candidates": ("linear", "expression", "pca")}),
        ):
            adata.obs["bench"] = pd.Categorical(np.where(np.isin(np.arange(adata.n_obs), labelled), truth, None))
            ss.tl.annotate(adata, model, "bench", train_indices=labelled, overwrite=True, **kwargs)
            rows.append({"method": method, **score(adata.obs["annotate_prediction"].astype(str).to_numpy()[right])})
            choices.append({"method": method, "draw": draw, "chosen": adata.uns["annotate"]["chosen"]})
        print(rows[-3:], flush=True)
    df = pd.DataFrame(rows)
    summary = df.groupby("method")["macro_f1"].agg(["mean", "std"]).to_dict("index")
    payload = {"results": rows, "choices": choices, "summary": summary, "n_spots": int(adata.n_obs),
               "n_proteins": int(adata.n_vars), "n_labelled_per_draw": int(rows[0]["n_labelled"]),
               "n_test": int(right.size), "label_counts": adata.obs["phenotype"].value_counts().to_dict(),
               "pretrain_seconds": round(pretrain_seconds, 1), "seconds": round(time.perf_counter() - t0, 1),
               "load_average": list(os.getloadavg()), "stamp": stamp(__file__)}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "annotate_protein.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "annotate_protein.md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(payload: dict) -> str:
    lines = ["# annotate on protein data (Gaussian likelihood)", "",
             f"Written by `python benchmarks/annotate_protein.py`; do not edit by hand. Spatial CITE-seq skin, "
             f"{payload['n_spots']} spots x {payload['n_proteins']} protein tags as CLR values; labels: k-means "
             f"(k = {N_CLUSTERS}) protein phenotypes (see the script's docstring). {FRACTION:.0%} of the left half's "
             f"spots labelled ({payload['n_labelled_per_draw']} per draw, {len(DRAWS)} draws), the right half "
             f"({payload['n_test']} spots) predicted. Macro-F1, mean ± sd over draws.", "",
             "| method | macro-F1 | per draw |", "|---|---|---|"]  # fmt: skip
    df = pd.DataFrame(payload["results"])
    for method, r in payload["summary"].items():
        per = " / ".join(f"{v:.3f}" for v in df.loc[df["method"] == method, "macro_f1"])
        lines.append(f"| {method} | {r['mean']:.3f} ± {r['std']:.3f} | {per} |")
    lines += ["", "Chosen by `annotate(method='auto')`:", ""]
    lines += [f"- {c['method']}, draw {c['draw']}: `{c['chosen']}`" for c in payload["choices"]]
    lines += ["", f"Pretraining {payload['pretrain_seconds']} s; total {payload['seconds']} s; load average "
              f"{payload['load_average']}.", "", stamp_line(payload.get("stamp")), ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
