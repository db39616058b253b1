"""Spatial domains: alternatives to the default pipeline, measured on the tuning section only (issue 13).

The default of ``ss.tl.domains`` (50 PCs, two rounds of neighbour averaging, a diagonal Gaussian mixture; chosen by
``benchmarks/domains.py``) is the ``pca_smooth2`` baseline itself, so it cannot beat that baseline. This script
measures, on STARmap section BZ5 alone (the tuning split; no other section's labels are read), three families of
alternatives that could replace it, each against the default in the same run:

- ``n_pcs``: the number of principal components (5-50) crossed with 1-4 smoothing rounds and the mixture covariance;
- ``potts``: the default mixture's posteriors refined by a Potts prior over the spatial graph (mean-field updates,
  ``q_i = softmax(log p(x_i | k) + log pi_k + beta * sum_{j ~ i} q_j)``, 10 iterations), with the mixture's means and
  variances kept or re-estimated from the refined posteriors (HMRF-EM), on the smoothed and on the raw PCs;
- ``niche``: a niche-aware self-supervised embedding, DGI-style (as GraphST): a two-layer GCN on the PCs trained
  full batch to tell each cell's embedding next to the sigmoid of its neighbourhood's mean embedding from the
  embedding of a copy with shuffled rows (binary cross-entropy, both directions), plus a reconstruction of the PCs;
  then the default mixture on the embedding with 0-2 smoothing rounds.

Values: mean ± sd of the ARI against BZ5's 4 layers over clustering seeds 0-4 (mixture ``n_init=2``). Graph: 10 nearest
neighbours, as ``benchmarks/domains.py``.

Run ``python benchmarks/domains_alternatives.py``; writes ``benchmarks/results/domains_alternatives.{json,md}``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import domains as bench  # noqa: E402
from _stamp import stamp, stamp_line  # noqa: E402

import sslspatial as ss  # noqa: E402
from sslspatial.pp._aggregate import representation  # noqa: E402
from sslspatial.tl import _domains as dom  # noqa: E402

SEEDS = range(5)
N_PCS = (5, 10, 15, 20, 30, 50)
SMOOTH = (1, 2, 3, 4)
BETAS = (0.5, 1.0, 2.0, 4.0)
NICHE = {"hidden": 64, "latent": 32, "lr": 1e-3, "epochs": 300}
NICHE_VARIANTS = {"contrast + reconstruction": (1.0, 1.0), "reconstruction only": (1.0, 0.0),
                  "contrast + 10 x reconstruction": (10.0, 1.0)}  # fmt: skip


def tuning_section():
    adata, truth = bench.load("starmap")
    part = adata[(adata.obs["section"].astype(str) == bench.TUNING[1]).to_numpy()].copy()
    ss.pp.build_graph(part, method="knn", n_neighs=bench.N_NEIGHS, library_key="section")
    adjacency = sp.csr_matrix(part.obsp["spatial_connectivities"], copy=True)
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    adjacency.data[:] = 1.0
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64).tocsr()  # binary, symmetric: Potts and GCN
    return part, part.obs[truth].astype(str).to_numpy(), adjacency


def smooth(part, features: np.ndarray, rounds: int) -> np.ndarray:
    """``ss.tl.domains``' smoothing, on the graph it uses."""
    return dom.smooth_features(part.obsp["spatial_connectivities"], features, rounds) if rounds else features


def mixture(features: np.ndarray, k: int, seed: int, covariance: str = dom.DEFAULT_COVARIANCE) -> GaussianMixture:
    return GaussianMixture(
        k, covariance_type=covariance, reg_covar=1e-4, random_state=seed, n_init=dom.DEFAULT_N_INIT
    ).fit(features)


def summary(scores: list[float]) -> dict:
    return {
        "ari_mean": float(np.mean(scores)),
        "ari_sd": float(np.std(scores)),
        "per_seed": [round(s, 4) for s in scores],
    }


def n_pcs_grid(part, truth, adjacency, k) -> list[dict]:
    rows = []
    for n_pcs in N_PCS:
        pcs = representation(part, "X", n_pcs=n_pcs, seed=0)
        for rounds in SMOOTH:
            features = smooth(part, pcs, rounds)
            for covariance in ("diag", "full"):
                scores = [
                    adjusted_rand_score(truth, mixture(features, k, s, covariance).predict(features)) for s in SEEDS
                ]
                rows.append({"n_pcs": n_pcs, "smooth": rounds, "covariance": covariance, **summary(scores)})
                print(f"n_pcs {n_pcs} smooth {rounds} {covariance}: {rows[-1]['ari_mean']:.3f}", flush=True)
    return rows


def potts_labels(features, adjacency, k, seed, beta, refit, iterations=10) -> np.ndarray:
    """Mean-field Potts refinement of a fitted mixture's posteriors over the spatial graph."""
    fitted = mixture(features, k, seed)
    log_lik = fitted._estimate_weighted_log_prob(features)  # log p(x | k) + log pi_k

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    q = softmax(log_lik)
    for _ in range(iterations):
        q = softmax(log_lik + beta * (adjacency @ q))
        if refit:  # HMRF-EM: means, variances and weights re-estimated from the refined posteriors
            fitted._m_step(features, np.log(np.clip(q, 1e-300, None)))
            log_lik = fitted._estimate_weighted_log_prob(features)
    return q.argmax(1)


def potts_rows(part, truth, adjacency, k) -> list[dict]:
    pcs = representation(part, "X", seed=0)
    rows = []
    for name, features in (("smoothed (default)", smooth(part, pcs, dom.DEFAULT_SMOOTH)), ("raw", pcs)):
        for beta in (0.0, *BETAS):
            for refit in (False, True) if beta else (False,):
                scores = [
                    adjusted_rand_score(truth, potts_labels(features, adjacency, k, s, beta, refit)) for s in SEEDS
                ]
                rows.append({"features": name, "beta": beta, "refit": refit, **summary(scores)})
                print(f"potts {name} beta {beta} refit {refit}: {rows[-1]['ari_mean']:.3f}", flush=True)
    return rows


def niche_embedding(pcs: np.ndarray, adjacency, w_rec: float, w_con: float, seed: int = 0) -> tuple[np.ndarray, dict]:
    """DGI-style niche embedding (GCN encoder, neighbourhood-summary discriminator, PC reconstruction)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    closed = adjacency + sp.identity(adjacency.shape[0])
    degree = np.asarray(closed.sum(1)).ravel()

    def sparse(m):
        m = sp.coo_matrix(m)
        return torch.sparse_coo_tensor(np.vstack([m.row, m.col]), m.data.astype(np.float32), m.shape).coalesce()

    gcn = sparse(sp.diags(degree**-0.5) @ closed @ sp.diags(degree**-0.5))
    mean = sparse(sp.diags(1.0 / degree) @ closed)
    x = torch.tensor(pcs, dtype=torch.float32)

    class Niche(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = (
                nn.Linear(x.shape[1], NICHE["hidden"]),
                nn.Linear(NICHE["hidden"], NICHE["latent"]),
            )
            self.decoder, self.discriminator = (
                nn.Linear(NICHE["latent"], x.shape[1]),
                nn.Bilinear(NICHE["latent"], NICHE["latent"], 1),
            )

        def forward(self, inputs):
            return torch.sparse.mm(gcn, self.second(F.elu(torch.sparse.mm(gcn, self.first(inputs)))))

    model = Niche()
    optimiser = torch.optim.Adam(model.parameters(), lr=NICHE["lr"])
    for _ in range(NICHE["epochs"]):
        optimiser.zero_grad()
        z, z_shuffled = model(x), model(x[torch.randperm(x.shape[0])])
        summary_real, summary_shuffled = (
            torch.sigmoid(torch.sparse.mm(mean, z)),
            torch.sigmoid(torch.sparse.mm(mean, z_shuffled)),
        )
        logits = torch.cat([model.discriminator(z, summary_real), model.discriminator(z_shuffled, summary_real),
                            model.discriminator(z_shuffled, summary_shuffled), model.discriminator(z, summary_shuffled)]).squeeze(1)  # fmt: skip
        n = z.shape[0]
        labels = torch.cat([torch.ones(n), torch.zeros(n), torch.ones(n), torch.zeros(n)])
        contrast = F.binary_cross_entropy_with_logits(logits, labels)
        reconstruction = F.mse_loss(model.decoder(z), x)
        (w_rec * reconstruction + w_con * contrast).backward()
        optimiser.step()
    with torch.no_grad():
        z = model(x).numpy().astype(np.float64)
    return z, {"final_contrast": float(contrast), "final_reconstruction": float(reconstruction)}


def niche_rows(part, truth, adjacency, k) -> list[dict]:
    pcs = representation(part, "X", seed=0)
    rows = []
    for name, (w_rec, w_con) in NICHE_VARIANTS.items():
        start = time.perf_counter()
        z, losses = niche_embedding(pcs, adjacency, w_rec, w_con)
        seconds = time.perf_counter() - start
        for rounds in (0, 1, 2):
            features = smooth(part, z, rounds)
            scores = [adjusted_rand_score(truth, mixture(features, k, s).predict(features)) for s in SEEDS]
            rows.append(
                {"variant": name, "smooth": rounds, **losses, "train_seconds": round(seconds, 1), **summary(scores)}
            )
            print(f"niche {name} smooth {rounds}: {rows[-1]['ari_mean']:.3f}", flush=True)
    return rows


def cell(row: dict) -> str:
    return f"{row['ari_mean']:.3f} ± {row['ari_sd']:.3f}"


def markdown(payload: dict) -> str:
    default = payload["default"]
    lines = [
        "# Spatial domains: alternatives to the default, on the tuning section only",
        "",
        "Written by `python benchmarks/domains_alternatives.py`; do not edit by hand. STARmap BZ5 (tuning split of issue "
        "13; no other section's labels are read), 4 layers, K = 4, ARI mean ± sd over clustering seeds 0-4. The "
        "default pipeline of `ss.tl.domains` (50 PCs, 2 smoothing rounds, diagonal mixture, 2 initialisations) scores "
        f"**{cell(default)}** here.",
        "",
        stamp_line(payload.get("stamp")),
        "",
        "## Principal components x smoothing rounds x covariance",
        "",
        "| n_pcs | " + " | ".join(f"smooth {s} diag | smooth {s} full" for s in SMOOTH) + " |",
        "|---|" + "---|" * (2 * len(SMOOTH)),
    ]
    for n_pcs in N_PCS:
        cells = []
        for smooth in SMOOTH:
            for covariance in ("diag", "full"):
                row = next(
                    r
                    for r in payload["n_pcs"]
                    if (r["n_pcs"], r["smooth"], r["covariance"]) == (n_pcs, smooth, covariance)
                )
                cells.append(cell(row))
        lines.append(f"| {n_pcs} | " + " | ".join(cells) + " |")
    best = max(payload["n_pcs"], key=lambda r: r["ari_mean"] - r["ari_sd"])
    lines += [
        "",
        f"Best by mean - sd: {best['n_pcs']} PCs, smooth {best['smooth']}, {best['covariance']}: {cell(best)}.",
        "",
    ]
    lines += [
        "## Potts (HMRF) refinement of the mixture posteriors",
        "",
        "| features | beta | refit | ARI |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['features']} | {r['beta']:g} | {r['refit']} | {cell(r)} |" for r in payload["potts"]]
    lines += ["", "## Niche embedding (DGI-style GCN), then the default mixture", ""]
    lines += [
        f"Settings: {payload['niche_settings']}.",
        "",
        "| variant | smooth | ARI | final contrast loss | final reconstruction | train s |",
    ]
    lines += ["|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['smooth']} | {cell(r)} | {r['final_contrast']:.3f} | {r['final_reconstruction']:.3f} | "
              f"{r['train_seconds']} |" for r in payload["niche"]]  # fmt: skip
    best_all = max([*payload["n_pcs"], *payload["potts"], *payload["niche"]], key=lambda r: r["ari_mean"])
    lines += ["", f"Highest mean ARI of any alternative: {cell(best_all)} (default {cell(default)}).", ""]
    lines += [f"Total time {payload['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    warnings.filterwarnings("ignore")
    start, run_stamp = time.perf_counter(), stamp(__file__)
    part, truth, adjacency = tuning_section()
    k = len(np.unique(truth))
    features = smooth(part, representation(part, "X", seed=0), dom.DEFAULT_SMOOTH)
    default = summary([adjusted_rand_score(truth, mixture(features, k, s).predict(features)) for s in SEEDS])
    payload = {"stamp": run_stamp, "default": default, "n_pcs": n_pcs_grid(part, truth, adjacency, k)}
    payload["potts"] = potts_rows(part, truth, adjacency, k)
    payload["niche"] = niche_rows(part, truth, adjacency, k)
    payload["niche_settings"] = NICHE
    payload["seconds"] = time.perf_counter() - start
    out = Path(__file__).resolve().parent / "results" / "domains_alternatives"
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
