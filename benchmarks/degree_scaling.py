"""How pretraining time grows with the graph degree: osmFISH (4,839 cells, 33 genes) with a 10-neighbour vs a
6-neighbour kNN graph, default ``pretrain_mask`` model, 5 epochs, batch 256 (and 1,024).

Each setting runs ``repeats`` times, interleaved (6, 10, 6, 10, ...), and the fastest run counts, so that a burst of
load from other jobs hits both graphs alike; wall time and the process's CPU time are both reported, with the
1-minute load average before and after. Also reported: nodes and edges of the 2-hop subgraphs per seed, and the
edges that the two trimmed layers compute, summed (layer 1 into nodes within 1 hop, layer 2 into the seeds).

Run: ``python benchmarks/degree_scaling.py [--threads 2] [--repeats 2]`` (needs ``../shared/data/osmfish``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def subgraph_sizes(adata, batch_size: int) -> dict:
    """Mean nodes, edges and trimmed-layer edges per seed over the Z-order batches of one epoch."""
    from sslspatial.data import LocalityBatchSampler, SubgraphCollate, locality_order

    collate = SubgraphCollate(np.zeros((adata.n_obs, 1), np.float32), adata.obsp["spatial_connectivities"], 2)
    nodes = edges = used = seeds = 0
    for batch in LocalityBatchSampler(locality_order(np.asarray(adata.obsm["spatial"])), batch_size):
        out = collate({"ind_x": np.asarray(batch)[:, None]})
        hops = out["hops"].numpy()
        nodes, edges, seeds = nodes + out["x"].shape[0], edges + out["edge_index"].shape[1], seeds + len(batch)
        used += hops[1, 1] + hops[1, 0]
    return {"nodes_per_seed": nodes / seeds, "edges_per_seed": edges / seeds, "used_edges_per_seed": used / seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-sizes", default="256,1024")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import sslspatial as ss

    table = ss.datasets.osmfish(path=DATA / "osmfish").tables["table"]
    graphs = {}
    for k in (6, 10):
        adata = table.copy()
        ss.pp.build_graph(adata, method="knn", n_neighs=k)
        graphs[k] = adata
    rows = []
    for batch_size in map(int, args.batch_sizes.split(",")):
        timings = {k: [] for k in graphs}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for k, adata in graphs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                ss.tl.pretrain_mask(
                    adata,
                    max_epochs=args.epochs,
                    batch_size=batch_size,
                    overwrite=True,
                    train_kwargs={"enable_progress_bar": False},
                )
                timings[k].append((time.perf_counter() - wall, time.process_time() - cpu))
        load_after = os.getloadavg()[0]
        for k, adata in graphs.items():
            wall, cpu = min(t[0] for t in timings[k]), min(t[1] for t in timings[k])
            degree = float(adata.obsp["spatial_connectivities"].getnnz(1).mean())
            rows.append(
                {
                    "graph": f"knn {k}",
                    "mean_degree": round(degree, 2),
                    "batch_size": batch_size,
                    "seconds_wall": round(wall, 2),
                    "seconds_cpu": round(cpu, 2),
                    **{key: round(v, 2) for key, v in subgraph_sizes(adata, batch_size).items()},
                    "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
                }
            )
        six, ten = rows[-2], rows[-1]
        for key in ("seconds_wall", "seconds_cpu"):
            ten[f"ratio_10_vs_6_{key.split('_')[1]}"] = round(ten[key] / six[key], 2)
        print(json.dumps(rows[-2:]), flush=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "degree_scaling.json").write_text(json.dumps(rows, indent=2) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [
        "# Pretraining time vs graph degree (osmFISH)",
        "",
        f"`ss.tl.pretrain_mask` defaults (GAT, 2 layers), {args.epochs} epochs on osmFISH (4,839 cells, 33 genes), "
        f"kNN graphs with 6 and 10 neighbours, torch threads = {args.threads}, fastest of {args.repeats} interleaved "
        "runs. Written by `benchmarks/degree_scaling.py`. `used_edges_per_seed`: edges the two trimmed layers compute, "
        "summed (layer 1 into nodes within one hop of a seed, layer 2 into the seeds; untrimmed layers would compute "
        "twice `edges_per_seed`). A load average above the thread "
        "count means other jobs shared the CPUs: wall times are then lower bounds and the CPU times the fairer "
        "comparison.",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    (RESULTS / "degree_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
