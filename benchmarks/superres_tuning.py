"""Tuning run of ``ss.tl.superres``'s training defaults, on data no superres evaluation row uses.

Tuning data: the two STARmap mPFC sections (BZ5, BZ9; ~1,050 cells x 166 genes each, coordinates in image pixels,
median nearest-cell distance ~160 px), binned by ``ss.pp.pseudo_spots`` into pseudo-spots with known sub-spot truth:
500 px squares with 2 x 2 sub-spots, 500 px hexagon circles with K = 7, and 1,000 px squares with 2 x 2 (few, large
spots, the regime of CosMx 20 um). Six settings, graph only (no image), NB likelihood, kNN graph (8 neighbours on
squares, 6 on hexagons), as in ``benchmarks/superres.py``. The evaluation datasets of ``superres.py`` (osmFISH,
CITE-seq, CosMx) are not read here.

Candidates (every other argument is the ``ss.tl.superres`` default, count-aware model, uniform prior 0.1):

- ``current``: the defaults before this run (hidden 128, latent 128, batch 128, epochs min(300, max(30, 30000 //
  spots)));
- ``small_30``: hidden 64, latent 32, batch 256, 30 epochs (the configuration the superres benchmark used to run);
- ``small_formula``: hidden 64, latent 32, batch 256, the epoch formula;
- ``large_30``: hidden 128, latent 128, batch 256, 30 epochs;
- ``small_b128_30``: hidden 64, latent 32, batch 128, 30 epochs;
- ``small_60``: hidden 64, latent 32, batch 256, 60 epochs.

Decision rule (written before the run, also in ``benchmarks/README.md``): for each candidate, the mean over the six
settings of its mean Pearson over seeds 0 and 1; the candidate with the highest mean replaces ``current`` only if it
beats it by more than 0.005. The margin of each candidate over the best simple baseline (max of uniform and
kernel split) is reported next to it.

Run: ``python benchmarks/superres_tuning.py`` (``--quick``: one setting, seed 0). Writes
``results/superres_tuning.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd
import torch
from _stamp import stamp, stamp_line
from superres import DATA, OUT, _scores, _sdata, simple_baselines

import sslspatial as ss
from sslspatial.pp import pseudo_spots, subspot_offsets

SEEDS = (0, 1)
CANDIDATES = {
    "current": {"n_hidden": 128, "n_latent": 128, "batch_size": 128, "max_epochs": None},
    "small_30": {"n_hidden": 64, "n_latent": 32, "batch_size": 256, "max_epochs": 30},
    "small_formula": {"n_hidden": 64, "n_latent": 32, "batch_size": 256, "max_epochs": None},
    "large_30": {"n_hidden": 128, "n_latent": 128, "batch_size": 256, "max_epochs": 30},
    "small_b128_30": {"n_hidden": 64, "n_latent": 32, "batch_size": 128, "max_epochs": 30},
    "small_60": {"n_hidden": 64, "n_latent": 32, "batch_size": 256, "max_epochs": 60},
}
SETTINGS = [("BZ5", "square", 500.0), ("BZ5", "hexagon", 500.0), ("BZ5", "square", 1000.0),
            ("BZ9", "square", 500.0), ("BZ9", "hexagon", 500.0), ("BZ9", "square", 1000.0)]  # fmt: skip
#: A candidate must beat ``current`` by more than this (mean Pearson over the settings) to replace it.
MIN_GAIN = 0.005


def starmap_pseudo_spots(section: str, layout: str, size: float) -> tuple[dict, float]:
    """One STARmap section's cells binned into pseudo-spots of ``size`` px, and the spot pitch."""
    base = DATA / "starmap_mpfc"
    info = pd.read_csv(next(base.glob(f"*{section}*cellinfo.csv")))
    counts = pd.read_csv(next(base.glob(f"*{section}*counts_cells_x_genes.csv.gz")), index_col=0)
    xy = info[["x", "y"]].to_numpy(dtype=float)
    ps = pseudo_spots(xy, counts.to_numpy(dtype=np.float64), size, layout, 2)
    return ps, size if layout == "square" else size * np.sqrt(3) / 2


def run_setting(section: str, layout: str, size: float, seeds, candidates) -> dict:
    """Baselines and every candidate on one setting."""
    ps, pitch = starmap_pseudo_spots(section, layout, size)
    k = 4 if layout == "square" else 7
    offsets, r_sub = subspot_offsets(layout, float(ps["radius"]), 2)
    sub_centres = (ps["centres"][:, None, :] + offsets[None]).reshape(-1, 2)
    cell = r_sub * (2 if layout == "square" else 1.0)
    out = {"n_spots": len(ps["spots"]), "K": k, "methods": simple_baselines(ps, k, sub_centres, cell, pitch)}
    for label, kw in candidates.items():
        runs = []
        for seed in seeds:
            sdata = _sdata(ps, layout, {"rna": ps["spots"]})
            ss.pp.build_graph(sdata, table_key="rna", method="knn", n_neighs=8 if layout == "square" else 6)
            t0 = time.perf_counter()
            model = ss.tl.superres(sdata, shapes_key="spots", table_key="rna", layout=layout, n_subspots=k, seed=seed,
                                   train_kwargs={"enable_progress_bar": False}, **kw)  # fmt: skip
            sc = _scores(ps["subspots"], sdata.tables["rna_superres"].X, sub_centres, cell)
            runs.append({"pearson": sc["pearson"], "rmse": sc["rmse"], "ssim": sc["ssim"],
                         "seconds": round(time.perf_counter() - t0, 1),
                         "epochs": len(model.history["subspot_sum_nll_train"])})  # fmt: skip
        out["methods"][label] = {
            "pearson": float(np.mean([r["pearson"] for r in runs])), "runs": runs,
            "seconds": float(np.mean([r["seconds"] for r in runs])), "epochs": runs[0]["epochs"],
        }  # fmt: skip
        print(section, layout, size, label, round(out["methods"][label]["pearson"], 4), flush=True)
    return out


def decide(res: dict) -> dict:
    """The decision rule of the docstring, applied to the results."""
    names = list(res["candidates"])
    keys = list(res["settings"])
    mean = {c: float(np.mean([res["settings"][s]["methods"][c]["pearson"] for s in keys])) for c in names}
    base = {s: max(res["settings"][s]["methods"][b]["pearson"] for b in ("uniform", "kernel_split")) for s in keys}
    margin = {c: float(np.mean([res["settings"][s]["methods"][c]["pearson"] - base[s] for s in keys])) for c in names}
    best = max(names, key=mean.get)
    chosen = best if mean[best] - mean["current"] > MIN_GAIN else "current"
    return {"mean_pearson": mean, "mean_margin_over_best_baseline": margin, "best": best, "chosen": chosen}


def markdown(res: dict) -> str:
    lines = ["# superres tuning (STARmap pseudo-spots)", "", res["protocol"], "", stamp_line(res["stamp"]), ""]
    names = list(res["candidates"])
    lines += ["| setting | spots | uniform | kernel split | " + " | ".join(names) + " |",
              "|---|---|---|---|" + "---|" * len(names)]  # fmt: skip
    for key, st in res["settings"].items():
        m = st["methods"]
        cells = [f"{m[c]['pearson']:.4f}" for c in names]
        lines.append(f"| {key} | {st['n_spots']} | {m['uniform']['pearson']:.4f} | "
                     f"{m['kernel_split']['pearson']:.4f} | " + " | ".join(cells) + " |")  # fmt: skip
    d = res["decision"]
    lines += ["| **mean** | | | | " + " | ".join(f"**{d['mean_pearson'][c]:.4f}**" for c in names) + " |",
              "| margin over max(uniform, kernel split) | | | | "
              + " | ".join(f"{d['mean_margin_over_best_baseline'][c]:+.4f}" for c in names) + " |",
              "| seconds per run (mean) | | | | " + " | ".join(
                  f"{np.mean([st['methods'][c]['seconds'] for st in res['settings'].values()]):.1f}" for c in names)
              + " |", ""]  # fmt: skip
    lines += ["Candidates: " + "; ".join(f"`{c}` {kw}" for c, kw in res["candidates"].items()) + ".", "",
              f"Decision (mean Pearson over the settings, gain over `current` must exceed {MIN_GAIN}): best "
              f"`{d['best']}`, chosen **`{d['chosen']}`**.", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one setting, seed 0, written to *_quick.*")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    settings, seeds = (SETTINGS[:1], SEEDS[:1]) if args.quick else (SETTINGS, SEEDS)
    protocol = __doc__.split("\n\n")[1].replace("\n", " ")
    res = {"stamp": stamp(__file__), "protocol": protocol, "seeds": list(seeds),
           "candidates": {c: dict(kw) for c, kw in CANDIDATES.items()}, "settings": {}}  # fmt: skip
    for section, layout, size in settings:
        key = f"{section} {layout} {size:g} px"
        res["settings"][key] = run_setting(section, layout, size, seeds, CANDIDATES)
    res["decision"] = decide(res)
    name = "superres_tuning_quick" if args.quick else "superres_tuning"
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(res, indent=1))
    (OUT / f"{name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
