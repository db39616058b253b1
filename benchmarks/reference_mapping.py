"""Reference mapping on real data: pretrain on one labelled STARmap section, map the other one, never seen.

Protocol (issue "Reference mapping"):

- Inductive: the reference section (with graph, counts and labels) is the only data the model and the classifiers
  see; the query section is mapped afterwards (its cells are used as unlabelled cells by self-training only).
  Tuning direction BZ5 -> BZ9 (``ss.tl.map_query`` reuses the defaults of ``ss.tl.annotate``, chosen on the same
  split; the one choice made here is whether the ``"residuals"`` candidate is in map_query's default pool, from the
  ``map_query`` and ``map_query + residuals`` rows of this direction: it is not); BZ9 -> BZ5 is reported only.
- Reference labels: all, and 10% (three draws).
- Panels: the full panel, and the query restricted to a random half of the genes (three draws); the baselines are
  refitted on the reference restricted to the query's genes (their strong version).
- Rows: ``map_query`` (``ss.tl.pretrain_pseudolabel`` on the reference, then ``ss.tl.map_query``, all defaults; the
  ``chosen`` field of each row in the json names the candidate cross-validation picked);
  ``map_query + residuals`` (the same with the opt-in ``"residuals"`` candidate added to the pool);
  ``map_query without the embedding`` (the same call with the default pool minus its embedding candidate
  ``"linear"``: ``map_query`` minus this row is what self-supervision adds);
  ``map_query (no ensemble)`` (the default pool with ``ensemble=0``: the single best candidate, no average of the
  best ones; the default ``ensemble=4`` was chosen from this row and ``map_query`` on the tuning direction);
  ``map_query (no gene dropout)`` (tuning direction only: the reference pretrained with ``gene_dropout=0``, the whole
  panel in training; the default 0.5 of ``pretrain_pseudolabel`` was chosen from this row and ``map_query``);
  ``map_query + adapt`` (the same with ``adapt=True``: the query's per-gene input adapter is fitted on the query's
  own information-maximisation loss over the reference's pseudo-label heads, reference weights frozen; chosen to
  stay off by default on the tuning direction, see the guide; run with all reference labels only, once per panel,
  to keep the run within reach of a shared 2-core machine);
  ``PCA + logreg`` (30 PCs fitted on the reference, plain and balanced logistic regression, applied to the query);
  ``scANVI`` (SCVI then SCANVI on the reference, 20 epochs; the query mapped with ``SCANVI.load_query_data`` and
  20 epochs of scArches training on the query, as the scvi-tools tutorial does).
- Uncertainty: accuracy of the 50% query cells with the lowest ``map_query_uncertainty`` against all cells (full
  panel, all reference labels).

Run: ``python benchmarks/reference_mapping.py [--quick] [--baselines-from FILE]`` (``--quick``: tuning direction,
full panel, all labels; ``--baselines-from``: take the PCA + logreg and scANVI rows of the same settings from an
earlier run's json instead of refitting them, which skips the SCVI / SCANVI training that dominates the run time on
a shared CPU; the markdown says where they came from). Writes ``results/reference_mapping[_quick].json`` and
``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _stamp import stamp, stamp_line

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TUNING = "BZ5->BZ9"
EPOCHS = 20


def sections():
    """The two STARmap sections as separate tables, each with its own radius graph and a counts layer."""
    import sslspatial as ss

    star = ss.datasets.starmap_mpfc(path=DATA / "starmap_mpfc").tables["table"]
    out = {}
    for name in ("BZ5", "BZ9"):
        adata = star[star.obs["section"].astype(str) == name].copy()
        ss.pp.build_graph(adata, method="radius", radius=400.0)  # pixels, as in benchmarks/celltyping.py
        adata.layers["counts"] = adata.X.copy()
        out[name] = adata
    return out


def pca_logreg(ref, query, labelled, balanced):
    """30 PCs of log1p-normalised expression fitted on the reference, logistic regression, applied to the query."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def logged(adata):
        x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=float)
        return np.log1p(1e4 * x / np.maximum(x.sum(1, keepdims=True), 1))

    pca = PCA(30, random_state=0).fit(logged(ref))
    pr, pq = pca.transform(logged(ref)), pca.transform(logged(query))
    if balanced:
        scaler = StandardScaler().fit(pr)
        pr, pq = scaler.transform(pr), scaler.transform(pq)
    clf = LogisticRegression(max_iter=3000, class_weight="balanced" if balanced else None)
    truth = ref.obs["cell_type"].astype(str).to_numpy()
    return clf.fit(pr[labelled], truth[labelled]).predict(pq)


def scanvi_map(ref, query, labels, scvi_model):
    """SCANVI on the reference labels, then the query mapped with load_query_data (scArches) and predicted."""
    import scvi

    ref.obs["_scanvi_labels"] = np.where(labels == None, "Unknown", labels).astype(str)  # noqa: E711
    model = scvi.model.SCANVI.from_scvi_model(scvi_model, "Unknown", labels_key="_scanvi_labels", adata=ref)
    quiet = {"enable_progress_bar": False, "check_val_every_n_epoch": None, "train_size": 1.0}
    model.train(max_epochs=EPOCHS, **quiet)
    q = query.copy()
    q.obs["_scanvi_labels"] = "Unknown"
    mapped = scvi.model.SCANVI.load_query_data(q, model)
    mapped.train(max_epochs=EPOCHS, plan_kwargs={"weight_decay": 0.0}, **quiet)
    return np.asarray(mapped.predict(q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baselines-from", type=Path, default=None)
    args = parser.parse_args()
    stamp(__file__)  # cached: names the code this run imports, read before any file can change under it
    copied = None if args.baselines_from is None else json.loads(args.baselines_from.read_text())
    if copied is not None:
        import subprocess

        commit = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", str(args.baselines_from)], capture_output=True, text=True
        ).stdout.strip()
        args.baselines_from = f"{args.baselines_from} (last committed in {commit or 'no commit'})"
    previous = {}
    for row in [] if copied is None else copied["results"]:
        if not row["method"].startswith("map_query"):
            key = (row["split"], row["labels"], row["label_draw"], row["panel"], row["method"])
            previous[key] = {**row, "copied_from": row.get("copied_from", str(args.baselines_from))}
    import scvi
    import torch

    torch.set_num_threads(2)
    scvi.settings.seed = 0
    import sslspatial as ss
    from sslspatial.metrics import classification_report
    from sslspatial.tl._annotate_select import DEFAULT_ENSEMBLE
    from sslspatial.tl._map_query import MAP_QUERY_CANDIDATES

    data = sections()
    directions = [("BZ5", "BZ9")] if args.quick else [("BZ5", "BZ9"), ("BZ9", "BZ5")]
    label_draws = [(1.0, 0)] if args.quick else [(1.0, 0), (0.1, 0), (0.1, 1), (0.1, 2)]
    panel_draws = [None] if args.quick else [None, 0, 1, 2]
    rows, timings, uncertainty, adaptation = [], {}, [], []
    for ref_name, query_name in directions:
        split = f"{ref_name}->{query_name}"
        ref_full, query_full = data[ref_name], data[query_name]
        truth = query_full.obs["cell_type"].astype(str).to_numpy()
        ref_truth = ref_full.obs["cell_type"].astype(str).to_numpy()
        t0 = time.perf_counter()
        model = ss.tl.pretrain_pseudolabel(ref_full, overwrite=True, train_kwargs={"enable_progress_bar": False})
        timings[f"{split}/pretrain_pseudolabel"] = round(time.perf_counter() - t0, 1)
        no_dropout = None  # the reference without gene dropout: the comparison that chose the default, tuning only
        if split == TUNING:
            no_dropout = ss.tl.pretrain_pseudolabel(ref_full, gene_dropout=0.0, key_added="no_dropout", overwrite=True,
                                                    train_kwargs={"enable_progress_bar": False})  # fmt: skip
        for panel in panel_draws:
            genes = ref_full.var_names
            if panel is not None:
                genes = np.sort(np.random.default_rng(panel).choice(ref_full.var_names, ref_full.n_vars // 2, False))
            query = query_full[:, genes].copy()
            ref = ref_full[:, genes].copy()  # the baselines' reference: only the genes the query has
            if copied is None:
                scvi.model.SCVI.setup_anndata(ref, layer="counts")
                scvi_model = scvi.model.SCVI(ref)
                t0 = time.perf_counter()
                scvi_model.train(enable_progress_bar=False)
                timings[f"{split}/scvi/panel={panel}"] = round(time.perf_counter() - t0, 1)
            for fraction, draw in label_draws:
                rng = np.random.default_rng(draw)
                n_lab = ref_full.n_obs if fraction == 1.0 else round(fraction * ref_full.n_obs)
                labelled = np.sort(rng.choice(ref_full.n_obs, n_lab, replace=False))
                labels = np.full(ref_full.n_obs, None, dtype=object)
                labels[labelled] = ref_truth[labelled]
                model.adata.obs["bench_labels"] = labels
                ctx = {"split": split, "labels": fraction, "label_draw": draw, "panel": "full" if panel is None else
                       f"half (draw {panel})", "n_genes": int(len(genes))}  # fmt: skip

                def record(method, pred, chosen=None, _ctx=ctx, _truth=truth):
                    rep = classification_report(_truth, pred)
                    rows.append({**_ctx, "method": method, **rep, **({} if chosen is None else {"chosen": chosen})})
                    print(f"  {_ctx} {method:<24} macro-F1 {rep['macro_f1']:.3f}", flush=True)

                # Two pools, with and without "residuals" (both run: with the ensemble, a candidate that did not win
                # can still change the result through the average of the best ones), and the default pool without
                # the ensemble.
                with_pool = [*[k for k in MAP_QUERY_CANDIDATES if k != "pca"], "residuals", "pca"]
                with_pool = list(dict.fromkeys(with_pool))
                without_pool = [k for k in MAP_QUERY_CANDIDATES if k != "residuals"]
                out = {}
                for name, pool, ensemble in (("with", with_pool, DEFAULT_ENSEMBLE),
                                             ("without", without_pool, DEFAULT_ENSEMBLE),
                                             ("single", list(MAP_QUERY_CANDIDATES), 0),
                                             ("no embedding", [k for k in MAP_QUERY_CANDIDATES if k != "linear"],
                                              DEFAULT_ENSEMBLE)):  # fmt: skip
                    t0 = time.perf_counter()
                    ss.tl.map_query(query, model, "bench_labels", candidates=pool, ensemble=ensemble, overwrite=True)
                    timings.setdefault(f"{split}/map_query", round(time.perf_counter() - t0, 1))
                    out[name] = (query.obs["map_query_prediction"].copy(), query.uns["map_query"]["chosen"],
                                 query.obs["map_query_uncertainty"].copy())  # fmt: skip
                default, other = ("with", "without") if "residuals" in MAP_QUERY_CANDIDATES else ("without", "with")
                other_name = "map_query (no residuals)" if default == "with" else "map_query + residuals"
                record("map_query", out[default][0].astype(str).to_numpy(), out[default][1])
                record(other_name, out[other][0].astype(str).to_numpy(), out[other][1])
                record("map_query (no ensemble)", out["single"][0].astype(str).to_numpy(), out["single"][1])
                record("map_query without the embedding", out["no embedding"][0].astype(str).to_numpy(),
                       out["no embedding"][1])  # fmt: skip
                if no_dropout is not None:
                    no_dropout.adata.obs["bench_labels"] = labels
                    ss.tl.map_query(query, no_dropout, "bench_labels", key_added="no_dropout", overwrite=True)
                    record("map_query (no gene dropout)", query.obs["no_dropout_prediction"].astype(str).to_numpy(),
                           query.uns["no_dropout"]["chosen"])  # fmt: skip
                if fraction == 1.0:  # adaptation uses no labels; its ~50 query epochs are run once per panel
                    t0 = time.perf_counter()
                    ss.tl.map_query(query, model, "bench_labels", adapt=True, key_added="adapted", overwrite=True)
                    timings.setdefault(f"{split}/map_query + adapt", round(time.perf_counter() - t0, 1))
                    record("map_query + adapt", query.obs["adapted_prediction"].astype(str).to_numpy())
                    adaptation.append({**ctx, **query.uns["adapted"]["adaptation"]})
                if panel is None and fraction == 1.0:
                    pred = out[default][0].astype(str).to_numpy()
                    uncertain = out[default][2].to_numpy()
                    confident = uncertain <= np.median(uncertain)
                    uncertainty.append({
                        "split": split,
                        "accuracy_all": float((pred == truth).mean()),
                        "accuracy_confident_half": float((pred[confident] == truth[confident]).mean()),
                        "n_confident": int(confident.sum()),
                    })  # fmt: skip
                if copied is not None:
                    for method in ("PCA + logreg", "PCA + logreg (balanced)", "scANVI"):
                        rows.append(previous[(split, fraction, draw, ctx["panel"], method)])
                    continue
                record("PCA + logreg", pca_logreg(ref, query, labelled, balanced=False))
                record("PCA + logreg (balanced)", pca_logreg(ref, query, labelled, balanced=True))
                record("scANVI", scanvi_map(ref, query, labels, scvi_model))
    RESULTS.mkdir(exist_ok=True)
    out = "reference_mapping_quick" if args.quick else "reference_mapping"
    payload = {
        "seconds": timings,
        "load_average": os.getloadavg(),
        "stamp": stamp(__file__),
        "uncertainty": uncertainty,
        "adaptation": adaptation,
        "baselines_from": None if copied is None else str(args.baselines_from),
        "results": rows,
    }
    (RESULTS / f"{out}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    write_markdown(payload, RESULTS / f"{out}.md", args.quick)


def write_markdown(payload, path: Path, quick: bool) -> None:
    import pandas as pd

    df = pd.DataFrame(payload["results"])
    df["panel kind"] = np.where(df["panel"] == "full", "full", "half")
    grouped = df.groupby(["split", "panel kind", "labels", "method"])["macro_f1"]
    stats = grouped.mean().rename("mean").to_frame().join(grouped.std(ddof=0).fillna(0).rename("sd"))
    cells = stats.reset_index()
    cells["cell"] = cells["mean"].map("{:.3f}".format) + " ± " + cells["sd"].map("{:.3f}".format)
    table = cells.pivot_table(index="method", columns=["split", "panel kind", "labels"], values="cell", aggfunc="first")
    lines = [
        f"# Reference mapping{' (quick)' if quick else ''}",
        "",
        "Written by `python benchmarks/reference_mapping.py`; do not edit by hand. Macro-F1 on the query section, which "
        "no model saw in training; mean ± sd over label draws (3 at 10%) and gene-half draws (3 for half panels). "
        f"Tuning direction: {TUNING} (map_query reuses annotate's defaults; the choices made on it are whether the "
        "`residuals` candidate is in map_query's default pool, from the `map_query` and `map_query + residuals` "
        "rows, the ensemble of the best candidates, from `map_query` and `map_query (no ensemble)`, and "
        "pretrain_pseudolabel's gene dropout, from `map_query` and `map_query (no gene dropout)`); the other "
        "direction is evaluation only.",
        "",
        *(
            []
            if not payload.get("baselines_from")
            else [
                "The PCA + logreg and scANVI rows were not refitted in this run: they are the rows of the same "
                f"settings in `{payload['baselines_from']}`, an earlier run of this script (the "
                "`copied_from` field of each row in the json); the map_query rows were computed now.",
                "",
            ]
        ),
        table.to_markdown(),
        "",
        "## Targets",
        "",
        "`baseline` = the best (by mean) of PCA + logreg (plain, balanced) and scANVI on that setting.",
        "",
        "`other pool` = map_query with the `residuals` candidate added to (or removed from) its default pool "
        "(`map_query + residuals` or `map_query (no residuals)`); `effect` = that row - map_query. "
        "`ensemble effect` = map_query - `map_query (no ensemble)` (the default pool with `ensemble=0`). "
        "`gene dropout effect` = map_query - `map_query (no gene dropout)` (reference pretrained with "
        "`gene_dropout=0`; tuning direction only).",
        "",
        "| split | panel | labels | map_query | best baseline | margin | other pool | effect "
        "| no ensemble | ensemble effect | gene dropout effect | map_query + adapt | adapt - no adapt "
        "| map_query - without the embedding |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    means = stats["mean"]
    for (split, kind, labels), _ in df.groupby(["split", "panel kind", "labels"]):
        m = means.loc[(split, kind, labels)]
        best_name = max((n for n in m.index if not n.startswith("map_query")), key=lambda n: m[n])
        no_embedding = m.get("map_query without the embedding", np.nan)
        ssl_cell = "n/a" if np.isnan(no_embedding) else f"{m['map_query'] - no_embedding:+.3f}"
        adapted = m.get("map_query + adapt", np.nan)
        adapt_cells = ("n/a", "n/a") if np.isnan(adapted) else (f"{adapted:.3f}", f"{adapted - m['map_query']:+.3f}")
        ablated = m.get("map_query + residuals", m.get("map_query (no residuals)", np.nan))
        ablated_cells = ("n/a", "n/a") if np.isnan(ablated) else (f"{ablated:.3f}", f"{ablated - m['map_query']:+.3f}")
        single = m.get("map_query (no ensemble)", np.nan)
        single_cells = ("n/a", "n/a") if np.isnan(single) else (f"{single:.3f}", f"{m['map_query'] - single:+.3f}")
        no_dropout = m.get("map_query (no gene dropout)", np.nan)
        dropout_cell = "n/a" if np.isnan(no_dropout) else f"{m['map_query'] - no_dropout:+.3f}"
        tag = " (tuning)" if split == TUNING else ""
        lines.append(
            f"| {split}{tag} | {kind} | {labels:g} | {m['map_query']:.3f} | {m[best_name]:.3f} ({best_name}) | "
            f"{m['map_query'] - m[best_name]:+.3f} | {ablated_cells[0]} | {ablated_cells[1]} | {single_cells[0]} | "
            f"{single_cells[1]} | {dropout_cell} | {adapt_cells[0]} | {adapt_cells[1]} | {ssl_cell} |"
        )
    if "chosen" in df:
        chosen = df[df["method"] == "map_query"].groupby(["split", "panel kind", "labels"])["chosen"]
        lines += ["", "## Candidate chosen by map_query's cross-validation (count over draws)", ""]
        lines += ["| split | panel | labels | chosen |", "|---|---|---|---|"]
        for (split, kind, labels), picks in chosen:
            counts = ", ".join(f"{name} x{n}" for name, n in picks.value_counts().items())
            lines.append(f"| {split} | {kind} | {labels:g} | {counts} |")
    lines += ["", "## Uncertainty (full panel, all reference labels)", ""]
    lines += ["| split | accuracy, all query cells | accuracy, 50% most confident | difference |", "|---|---|---|---|"]
    for u in payload["uncertainty"]:
        diff = u["accuracy_confident_half"] - u["accuracy_all"]
        lines.append(f"| {u['split']} | {u['accuracy_all']:.3f} | {u['accuracy_confident_half']:.3f} | {diff:+.3f} |")
    if payload.get("adaptation"):
        ad = pd.DataFrame(payload["adaptation"])
        ad["panel kind"] = np.where(ad["panel"] == "full", "full", "half")
        loss = ad.groupby(["split", "panel kind"])[["loss_before", "loss_after"]].mean()
        lines += ["", "## Adaptation: query loss (information maximisation) before and after, mean over runs", ""]
        lines += ["| split | panel | before | after |", "|---|---|---|---|"]
        for (split, kind), r in loss.iterrows():
            lines.append(f"| {split} | {kind} | {r['loss_before']:.3f} | {r['loss_after']:.3f} |")
    lines += ["", "## Timings (s)", "", "```", json.dumps(payload["seconds"], indent=1), "```", ""]
    lines += [f"Load average at the end: {payload['load_average']}.", "", stamp_line(payload.get("stamp")), ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
