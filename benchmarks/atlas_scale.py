"""Atlas-scale benchmark: one epoch of the default masked pretraining (GAT, 20% of cells masked, NB) on a synthetic
tissue of 1,000,000 cells x 500 genes with a radius graph of mean degree about 6, on CPU.

Reports cells per second (training seeds per second of wall time, data loading included) and peak memory (peak
resident set size of the process, ``resource.getrusage``). The tissue is generated cheaply: uniform points and NB
counts whose means depend on a smooth spatial field, stored as CSR. ``--quick`` uses 100,000 cells.

Run: ``python benchmarks/atlas_scale.py [--quick] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_atlas(n_cells: int, n_genes: int, mean_degree: float = 6.0, seed: int = 0):
    """Uniform cells (density 1 per 100 square units), NB counts, radius graph with the requested mean degree."""
    from anndata import AnnData
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    extent = np.sqrt(n_cells * 100.0)
    xy = rng.uniform(0, extent, (n_cells, 2)).astype(np.float64)
    # 8 smooth expression programmes over space; counts ~ NB(mean, theta=2) with a sparse mean (~0.3 per entry)
    centres = rng.uniform(0, extent, (8, 2))
    weights = np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * (extent / 4) ** 2)).astype(np.float32)
    loadings = rng.gamma(0.5, 0.6, (8, n_genes)).astype(np.float32)
    rows = []
    for start in range(0, n_cells, 100_000):  # chunked: never a dense cells x genes matrix
        mean = weights[start : start + 100_000] @ loadings + 0.02
        counts = rng.poisson(rng.gamma(2.0, mean / 2.0)).astype(np.float32)
        rows.append(sp.csr_matrix(counts))
    x = sp.vstack(rows).tocsr()
    radius = np.sqrt(mean_degree * 100.0 / np.pi)
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    i, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    adjacency = sp.csr_matrix((np.ones(i.size, dtype=np.float32), (i, j)), shape=(n_cells, n_cells))
    adata = AnnData(x)
    adata.obsm["spatial"] = xy
    adata.obsp["spatial_connectivities"] = adjacency
    return adata, float(radius)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 cells instead of 1,000,000")
    parser.add_argument("--n-cells", type=int, default=None)
    parser.add_argument("--n-genes", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import sslspatial as ss

    n_cells = args.n_cells or (100_000 if args.quick else 1_000_000)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    adata, radius = synthetic_atlas(n_cells, args.n_genes)
    t_data = time.perf_counter() - t0
    degree = float(adata.obsp["spatial_connectivities"].getnnz(1).mean())
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    t1 = time.perf_counter()
    model = ss.tl.pretrain_mask(adata, max_epochs=1, batch_size=args.batch_size)
    t_train_total = time.perf_counter() - t1
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    t2 = time.perf_counter()
    z = model.get_latent_representation(indices=np.arange(min(n_cells, 100_000)), batch_size=4096)
    t_embed = time.perf_counter() - t2

    result = {
        "n_cells": n_cells,
        "n_genes": args.n_genes,
        "nnz_fraction": float(adata.X.nnz / (n_cells * args.n_genes)),
        "radius": radius,
        "mean_degree": degree,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "model": model._model_summary_string,
        "seconds_generate_data": round(t_data, 1),
        "seconds_one_epoch_including_setup": round(t_train_total, 1),
        "train_cells_per_second": round(n_cells / t_train_total, 1),
        "embed_cells_per_second": round(z.shape[0] / t_embed, 1),
        "peak_rss_gb_after_data": round(rss_data, 2),
        "peak_rss_gb": round(peak_gb, 2),
        "peak_below_8gb": bool(peak_gb < 8),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    RESULTS.mkdir(exist_ok=True)
    name = "atlas_scale_quick" if args.quick else "atlas_scale"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Atlas scale ({'quick, ' if args.quick else ''}{n_cells:,} cells x {args.n_genes} genes)",
        "",
        "One epoch of the default `ss.tl.pretrain_mask` (GAT, 2 layers, 20% of cells masked, NB likelihood) on CPU, "
        f"torch threads = {args.threads}, batch size {args.batch_size} seeds + their 2-hop subgraphs. "
        "Written by `benchmarks/atlas_scale.py`. Throughput counts the whole `pretrain_mask` call (setup, graph "
        "ordering, training); the 1-minute load average before and after the run shows whether other jobs shared the "
        "CPUs (throughput is then a lower bound).",
        "",
        "| quantity | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in result.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
