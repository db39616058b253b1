"""Benchmark 2 of issue 3: spatial domains on osmFISH regions and STARmap cortical layers.

Clusters several representations of the same cells with ``ss.tl.domains`` (Gaussian mixture and Leiden, the number
of domains set to the number of annotated regions / layers) and scores them with ARI and NMI against the annotation:

- ``pca``: PCA of log-normalised counts (``use_rep="X"``), no spatial information;
- ``pca_smooth2``: the same, averaged twice over the spatial graph (``smooth=2``);
- ``nhood``: CellCharter-style aggregation of the PCA over exact hops 1..3 (``ss.pp.aggregate_neighbors``);
- ``composition``: squidpy-style cell-type composition of each cell's 3-hop neighbourhood (uses the published
  cell-type labels, so it is an annotation-informed baseline, not a label-free method);
- ``pretrain_mask``: the masked-pretraining GAT embedding (``ss.tl.pretrain_mask``, no labels), when available;
- ``pretrain_mask_nhood``: that embedding aggregated over hops 1..3.

STARmap (sections BZ5, BZ9) is clustered jointly (one model over both sections; ``joint``) and section by section
(``per_section``); scores are computed per section and averaged. Each clustering is repeated over several seeds and
reported as mean and standard deviation. Graph: 10 nearest neighbours per section (``ss.pp.build_graph(method="knn")``;
STARmap coordinates are pixels, so a scale-free graph is used for both datasets).

Run ``python benchmarks/domains.py [--quick]``; writes ``benchmarks/results/domains.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: E402

import sslspatial as ss  # noqa: E402
from sslspatial.pp._aggregate import hop_matrices  # noqa: E402

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
RESULTS = ROOT / "results"
N_HOPS = 3
N_NEIGHS = 10


def load(name: str):
    """Return (adata, truth column) for a dataset of ../shared/data."""
    if name == "osmfish":
        return ss.datasets.osmfish(path=DATA / "osmfish"), "region"
    return ss.datasets.starmap_mpfc(sections=("BZ5", "BZ9"), path=DATA / "starmap_mpfc"), "layer"


def composition(adata, n_hops: int) -> np.ndarray:
    """Fractions of each cell type among the cell and the cells within ``n_hops`` hops (squidpy-style)."""
    within = sp.identity(adata.n_obs, format="csr") + sum(hop_matrices(adata.obsp["spatial_connectivities"], n_hops))
    onehot = pd.get_dummies(adata.obs["cell_type"]).to_numpy(dtype=float)
    return np.asarray(within @ onehot) / np.asarray(within.sum(axis=1))


def representations(adata, epochs: int, log: dict) -> dict[str, dict]:
    """Compute the representations; return {row name: domains() keyword arguments}."""
    rows = {"pca": {"use_rep": "X"}, "pca_smooth2": {"use_rep": "X", "smooth": 2}}
    ss.pp.aggregate_neighbors(adata, n_hops=N_HOPS, use_rep="X", key_added="X_nhood")
    rows["nhood"] = {"use_rep": "X_nhood"}
    adata.obsm["X_composition"] = composition(adata, N_HOPS)
    rows["composition"] = {"use_rep": "X_composition"}
    if hasattr(ss.tl, "pretrain_mask"):
        import scvi

        scvi.settings.seed = 0
        start = time.perf_counter()
        model = ss.tl.pretrain_mask(adata, max_epochs=epochs, train_kwargs={"enable_progress_bar": False})
        log["pretrain_seconds"] = round(time.perf_counter() - start, 1)
        log["pretrain_epochs"] = epochs
        log["pretrain_final_loss"] = float(model.history["train_loss"].iloc[-1, 0])
        rows["pretrain_mask"] = {"use_rep": "X_pretrain_mask"}
        ss.pp.aggregate_neighbors(adata, n_hops=N_HOPS, use_rep="X_pretrain_mask", key_added="X_pretrain_nhood")
        rows["pretrain_mask_nhood"] = {"use_rep": "X_pretrain_nhood"}
    else:
        log["pretrain_mask"] = "ss.tl.pretrain_mask is not available in this version: row skipped"
    return rows


def score(adata, truth: str, key: str) -> dict[str, dict[str, float]]:
    out = {}
    for section in adata.obs["section"].cat.categories:
        mask = (adata.obs["section"] == section).to_numpy()
        t, p = adata.obs[truth][mask].astype(str), adata.obs[key][mask].astype(str)
        out[str(section)] = {"ari": adjusted_rand_score(t, p), "nmi": normalized_mutual_info_score(t, p)}
    return out


def run_dataset(name: str, seeds: list[int], epochs: int) -> tuple[list[dict], dict]:
    adata, truth = load(name)
    n_domains = int(adata.obs[truth].nunique())
    ss.pp.build_graph(adata, method="knn", n_neighs=N_NEIGHS, library_key="section")
    log: dict = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "truth": truth, "n_domains": n_domains}
    rows = representations(adata, epochs, log)
    modes = ["joint", "per_section"] if adata.obs["section"].nunique() > 1 else ["joint"]
    records = []
    for row, kwargs in rows.items():
        for method in ("gmm", "leiden"):
            for mode in modes:
                per_seed, seconds = [], []
                for seed in seeds:
                    start = time.perf_counter()
                    ss.tl.domains(
                        adata,
                        method=method,
                        n_domains=n_domains,
                        per_section=mode == "per_section",
                        library_key="section",
                        seed=seed,
                        key_added="bench",
                        overwrite=True,
                        **kwargs,
                    )
                    seconds.append(time.perf_counter() - start)
                    per_seed.append(score(adata, truth, "bench"))
                sections = list(per_seed[0])
                ari = np.array([[s[sec]["ari"] for sec in sections] for s in per_seed])  # seeds x sections
                nmi = np.array([[s[sec]["nmi"] for sec in sections] for s in per_seed])
                records.append(
                    {
                        "dataset": name,
                        "representation": row,
                        "method": method,
                        "mode": mode,
                        "ari_mean": float(ari.mean()),
                        "ari_sd": float(ari.mean(axis=1).std()),
                        "nmi_mean": float(nmi.mean()),
                        "nmi_sd": float(nmi.mean(axis=1).std()),
                        "ari_per_section": dict(zip(sections, ari.mean(axis=0).round(4).tolist(), strict=True)),
                        "nmi_per_section": dict(zip(sections, nmi.mean(axis=0).round(4).tolist(), strict=True)),
                        "seconds_per_run": float(np.mean(seconds)),
                        "n_seeds": len(seeds),
                    }
                )
                r = records[-1]
                print(f"{name:8s} {row:20s} {method:6s} {mode:11s} ARI {r['ari_mean']:.3f} NMI {r['nmi_mean']:.3f}")
    return records, log


def markdown(records: list[dict], logs: dict, args, elapsed: float) -> str:
    lines = [
        "# Spatial domains: ARI / NMI against annotated regions and layers",
        "",
        "Written by `python benchmarks/domains.py" + (" --quick" if args.quick else "") + "`; do not edit by hand.",
        "",
        f"Protocol: graph = {N_NEIGHS} nearest neighbours per section; aggregation over exact hops 1..{N_HOPS}; "
        f"number of domains = number of annotated classes; clustering seeds {args.seeds}; masked pretraining "
        f"(`ss.tl.pretrain_mask`, default GAT encoder, NB likelihood, seed 0) for {args.epochs} epochs. "
        "STARmap scores are the mean over sections BZ5 and BZ9. Values: mean ± sd over clustering seeds. "
        "`composition` uses the published cell-type labels (annotation-informed baseline).",
        "",
    ]
    for name, log in logs.items():
        lines += [
            f"## {name} ({log['n_cells']} cells, {log['n_genes']} genes, {log['n_domains']} `{log['truth']}`)",
            "",
        ]
        extra = {k: v for k, v in log.items() if k.startswith("pretrain")}
        if extra:
            lines += [", ".join(f"{k}: {v}" for k, v in extra.items()), ""]
        subset = [r for r in records if r["dataset"] == name]
        modes = sorted({r["mode"] for r in subset})
        header = "| representation | " + " | ".join(
            f"{m} {mode} ARI | {m} {mode} NMI" for mode in modes for m in ("gmm", "leiden")
        )
        lines += [header + " |", "|---" * (1 + 4 * len(modes)) + "|"]
        for row in dict.fromkeys(r["representation"] for r in subset):
            cells = []
            for mode in modes:
                for m in ("gmm", "leiden"):
                    r = next(x for x in subset if (x["representation"], x["method"], x["mode"]) == (row, m, mode))
                    cells += [f"{r['ari_mean']:.3f} ± {r['ari_sd']:.3f}", f"{r['nmi_mean']:.3f} ± {r['nmi_sd']:.3f}"]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        best = max(subset, key=lambda r: r["ari_mean"])
        lines += [
            "",
            f"Best ARI: {best['representation']} / {best['method']} / {best['mode']} = {best['ari_mean']:.3f}.",
            "",
        ]
    lines += [f"Total time {elapsed / 60:.1f} min on {platform.machine()} CPU (shared, 1 thread per library).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 2 pretraining epochs, STARmap only")
    args = parser.parse_args()
    args.seeds = [0] if args.quick else [0, 1, 2]
    args.epochs = 2 if args.quick else 20
    datasets = ["starmap"] if args.quick else ["osmfish", "starmap"]
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    records, logs = [], {}
    for name in datasets:
        recs, logs[name] = run_dataset(name, args.seeds, args.epochs)
        records += recs
    elapsed = time.perf_counter() - start
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    payload = {"protocol": {"seeds": args.seeds, "epochs": args.epochs, "n_hops": N_HOPS, "n_neighs": N_NEIGHS}}
    payload |= {"datasets": logs, "results": records, "seconds": round(elapsed, 1)}
    (RESULTS / f"domains{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"domains{suffix}.md").write_text(markdown(records, logs, args, elapsed))
    print(f"wrote {RESULTS / f'domains{suffix}.md'} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
