"""Self-supervision on many unlabelled sections (issue 29): her2st regions and domains across patients.

Protocol
--------
- Data: the 33 her2st sections of ``../shared/data/her2st`` (8 patients, about 13,000 spots), the 785 HVGs of
  ``genes/her_hvg_cut_1000.npy``, a 6-NN spatial graph per section (``ss.pp.build_graph(method="knn",
  library_key="section")``).
- Pretraining, without any label, once per run and per configuration (cached): ``ss.tl.pretrain_pseudolabel`` with
  the package defaults on all 33 sections in one table (``library_key="section"``: k-means pseudo-labels per
  section). How sections are batched: the default ``batch_order="spatial"``: consecutive seeds along a Z-order curve
  of ``obsm["spatial"]``; the sections share one pixel frame, so each minibatch holds spots of many sections at
  nearby positions (no section-balanced sampler). Curve: the same pretraining on the 7 labelled sections, on 15
  (the 7 plus one unlabelled section per patient: A3, B2, C2, D2, E2, F2, G1, H2) and on all 33.
- Tuning sections (every choice is made here): B1, C1, D1. Evaluation sections (only reported): E1, F1, G2, H1.
- Region annotation: labels of B1 + C1 + D1 ("undetermined" spots never train), 10% of their labelled spots (label
  draws 0, 1, 2) and all of them; predictions on E1 / F1 / G2 / H1; macro-F1 over the regions present in each
  evaluation section (undetermined excluded). ``ss.tl.annotate`` runs on the pretrained model's own table
  (``library_key="section"``), so unlabelled sections are predicted too (self-training may use them).
- Domains, per labelled section: that section's spots alone, K = its number of labelled regions, ARI against the
  pathologist regions on its labelled spots (undetermined excluded), clustering seeds 0, 1, 2.
- Baselines in the same run: ``PCA + logreg`` (30 PCs of log1p(1e4-normalised) counts of the whole table,
  standardised, class-balanced logistic regression) and ``smoothed PCA`` (``ss.tl.domains`` with ``use_rep="X"``,
  its default before this issue). Every default row also runs without the embedding (the same ``annotate`` call with
  ``model=None`` and no ``"linear"`` candidate; ``domains`` with ``use_rep="X"``), so the self-supervised
  contribution is its own column.
- ``--tuning``: B1, C1, D1 only, for choices: annotation leave-one-tuning-section-out (train on two, predict the
  third; the same draws), domains on each tuning section; configurations (``--configs``) from :data:`CONFIGS`.

Run ``python benchmarks/her2st_regions.py [--quick] [--tuning --configs default,...]``; writes
``benchmarks/results/her2st_regions[_tuning][_quick].json`` and ``.md`` (and, in full mode, a figure of H1).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # BLAS: 1 thread (scikit-learn parts)
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "her2st"
RESULTS = ROOT / "results"
TUNING = ("B1", "C1", "D1")
EVALUATION = ("E1", "F1", "G2", "H1")
LABELLED = TUNING + EVALUATION
EXTRA_15 = ("A3", "B2", "C2", "D2", "E2", "F2", "G1", "H2")
UNDETERMINED = "undetermined"
EMBEDDING = "X_pretrain_pseudolabel"
SEEDS = (0, 1, 2)
FRACTION = 0.1
NO_EMBEDDING = ("expression", "residuals", "pca")

#: Configurations compared on the tuning sections: pretraining options, annotate options, domains options.
CONFIGS: dict[str, dict] = {
    "default": {},
    "cv=sections": {"annotate": {"cv": "sections"}},
    "cv=auto": {"annotate": {"cv": "auto"}},
    "center": {"annotate": {"center_sections": True}},
    "cv=auto+center": {"annotate": {"cv": "auto", "center_sections": True}},
    "pretrain_mask": {"pretrain": {"function": "pretrain_mask"}},
    "joint": {"pretrain": {"cluster_sections": "joint"}},
    "niche=1": {"pretrain": {"niche": 1}},
    "niche=2": {"pretrain": {"niche": 2}},
    "joint+niche=1": {"pretrain": {"cluster_sections": "joint", "niche": 1}},
}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def load():
    """The 33 sections (785 HVGs) with a 6-NN graph per section."""
    import sslspatial as ss

    sections = sorted(p.name.removesuffix(".tsv.gz") for p in (DATA / "counts").glob("*.tsv.gz"))
    table = ss.datasets.her2st(sections, path=DATA, genes="hvg", load_images=False).tables["table"]
    table.obs["section"] = table.obs["section"].astype(str).astype("category")
    ss.pp.build_graph(table, method="knn", n_neighs=6, library_key="section")
    return table


def subset(table, sections):
    mask = table.obs["section"].isin(list(sections)).to_numpy()
    sub = table[mask].copy()
    sub.obs["section"] = sub.obs["section"].astype(str).astype("category")
    return sub


class Cache:
    """Pretrained models per (sections, configuration), trained once per run."""

    def __init__(self, table, log):
        self.table, self.log, self.models = table, log, {}

    def get(self, sections: tuple[str, ...], name: str, config: dict):
        import sslspatial as ss

        key = (sections, json.dumps(config.get("pretrain", {}), sort_keys=True))
        if key not in self.models:
            sub = subset(self.table, sections)
            start, load_before = time.perf_counter(), os.getloadavg()[0]
            options = {"library_key": "section", "train_kwargs": {"enable_progress_bar": False}}
            options.update(config.get("pretrain", {}))
            function = getattr(ss.tl, options.pop("function", "pretrain_pseudolabel"))
            model = function(sub, key_added="pretrain_pseudolabel", **options)
            seconds = time.perf_counter() - start
            history = model.history.get("train_loss_epoch", model.history.get("train_loss"))
            self.log.setdefault("pretraining", []).append(
                {
                    "config": name,
                    "n_sections": len(sections),
                    "n_spots": int(sub.n_obs),
                    "seconds": round(seconds, 1),
                    "epochs": int(len(history)) if history is not None else None,
                    "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                }
            )
            print(f"pretrained {name} on {len(sections)} sections ({sub.n_obs} spots) in {seconds:.1f} s", flush=True)
            self.models[key] = (sub, model)
        return self.models[key]


def region_codes(table):
    labels = table.obs["label"].astype(object)
    return np.where(labels.isna() | (labels == UNDETERMINED), None, labels).astype(object)


def draws(table, train_sections, quick):
    """(name, indices) of the label draws: 10% of the training sections' labelled spots (seeds), and all of them."""
    labels = region_codes(table)
    pool = np.flatnonzero(table.obs["section"].isin(list(train_sections)).to_numpy() & (labels != None))  # noqa: E711
    out = []
    for seed in SEEDS[:1] if quick else SEEDS:
        rng = np.random.default_rng(seed)
        out.append((f"10% draw {seed}", np.sort(rng.choice(pool, int(round(FRACTION * pool.size)), replace=False))))
    out.append(("100%", pool))
    return out


def macro_f1(truth, predicted) -> float:
    from sklearn.metrics import f1_score

    keep = truth != None  # noqa: E711
    t, p = truth[keep].astype(str), np.asarray(predicted)[keep].astype(str)
    return float(f1_score(t, p, labels=np.unique(t), average="macro", zero_division=0))


def pca_logreg(table, train_idx):
    """The baseline: 30 PCs of log1p-normalised counts, standardised, class-balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sslspatial.tl._pretrain import pseudolabel_features

    if "_bench_pcs" not in table.obsm:
        table.obsm["_bench_pcs"] = StandardScaler().fit_transform(pseudolabel_features(table, None, 30))
    pcs = table.obsm["_bench_pcs"]
    labels = region_codes(table)
    clf = LogisticRegression(max_iter=3000, class_weight="balanced").fit(pcs[train_idx], labels[train_idx].astype(str))
    return clf.predict(pcs)


def annotate(table, model, train_idx, config, embedding=True):
    import sslspatial as ss

    options = {"library_key": "section", "unlabeled_category": UNDETERMINED, **config.get("annotate", {})}
    if not embedding:
        options["candidates"] = tuple(c for c in options.get("candidates", NO_EMBEDDING) if c != "linear")
    ss.tl.annotate(
        table,
        model if embedding else None,
        "label",
        train_indices=train_idx,
        key_added="bench",
        overwrite=True,
        **options,
    )
    return table.obs["bench_prediction"].astype(str).to_numpy(), table.uns["bench"].get("chosen")


def annotation_rows(cache, config_name, config, splits, quick, curve, baselines=True):
    """Macro-F1 rows: baseline, default, default without the embedding, and the curve (7 / 15 / 33 sections)."""
    rows: dict[str, dict] = {}
    all_sections = tuple(sorted(cache.table.obs["section"].cat.categories))
    models = {"33 sections": all_sections}
    if curve:
        models = {"7 sections": LABELLED, "15 sections": tuple(sorted(LABELLED + EXTRA_15)), **models}
    for model_name, sections in models.items():
        table, model = cache.get(sections, config_name, config)
        truth = region_codes(table)
        section = table.obs["section"].astype(str).to_numpy()
        variants = [(f"{config_name} ({model_name})", True)]
        if model_name == "33 sections":
            if baselines or config.get("annotate"):  # else the same call as the first configuration's
                variants.append((f"{config_name} without the embedding", False))
            variants += [("PCA + logreg", None)] if baselines else []
        for train_sections, test_sections in splits:
            for draw_name, train_idx in draws(table, train_sections, quick):
                for row, embedding in variants:
                    start = time.perf_counter()
                    if embedding is None:
                        predicted, chosen = pca_logreg(table, train_idx), "PCA + logreg"
                    else:
                        predicted, chosen = annotate(table, model, train_idx, config, embedding)
                    seconds = time.perf_counter() - start
                    for test in test_sections:
                        rows.setdefault(row, {}).setdefault(test, {}).setdefault(draw_name, []).append(
                            macro_f1(truth[section == test], predicted[section == test])
                        )
                    rows[row].setdefault("_chosen", []).append(chosen)
                    rows[row].setdefault("_seconds", []).append(round(seconds, 1))
                    print(row, draw_name, train_sections, "->", test_sections, f"{seconds:.1f} s", flush=True)
    return rows


def domain_rows(cache, config_name, config, sections, curve, baselines=True):
    """ARI per labelled section: smoothed PCA, the configuration's default, without the embedding, the embedding."""
    from sklearn.metrics import adjusted_rand_score

    import sslspatial as ss

    all_sections = tuple(sorted(cache.table.obs["section"].cat.categories))
    models = {"33 sections": all_sections}
    if curve:
        models = {"7 sections": LABELLED, "15 sections": tuple(sorted(LABELLED + EXTRA_15)), **models}
    rows: dict[str, dict] = {}
    for model_name, model_sections in models.items():
        table, _ = cache.get(model_sections, config_name, config)
        options = dict(config.get("domains", {}))
        reps = {f"{config_name} ({model_name})": options}
        if model_name == "33 sections":
            reps |= {
                f"{config_name} without the embedding": {**options, "use_rep": "X"},
                **({"smoothed PCA": {"use_rep": "X"}} if baselines else {}),
                "embedding (smoothed)": {"use_rep": EMBEDDING},
                "embedding + expression (smoothed)": {"use_rep": [EMBEDDING, "X"]},
            }
        for section in sections:
            sub = subset(table, [section])
            truth = region_codes(sub)
            keep = truth != None  # noqa: E711
            k = int(len(np.unique(truth[keep].astype(str))))
            for row, kwargs in reps.items():
                for seed in SEEDS:
                    ss.tl.domains(sub, n_domains=k, seed=seed, key_added="bench", overwrite=True, **kwargs)
                    ari = adjusted_rand_score(truth[keep].astype(str), sub.obs["bench"].astype(str)[keep])
                    rows.setdefault(row, {}).setdefault(section, []).append(float(ari))
            if model_name == "33 sections" and section == "H1" and cache.log.get("figure"):
                ss.tl.domains(sub, n_domains=k, seed=0, key_added="bench", overwrite=True, **options)
                ss.tl.domains(sub, n_domains=k, seed=0, key_added="bench_both", use_rep=[EMBEDDING, "X"])
                figure(sub, cache.log["figure"])
    return rows


def figure(sub, path):
    """Pathologist regions, default domains and domains on the embedding + expression of one section, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = np.c_[sub.obs["array_x"], -sub.obs["array_y"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = (
        (axes[0], "label", "pathologist regions"),
        (axes[1], "bench", "domains: expression (default)"),
        (axes[2], "bench_both", "domains: embedding + expression"),
    )
    for ax, key, title in panels:
        values = sub.obs[key].astype(str).to_numpy()
        for i, value in enumerate(sorted(set(values))):
            m = values == value
            ax.scatter(xy[m, 0], xy[m, 1], s=38, color=plt.cm.tab10(i % 10), label=value)
        ax.set_title(f"{sub.obs['section'].iloc[0]}: {title}")
        ax.set_aspect("equal")
        ax.axis("off")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarise(rows: dict) -> dict:
    """Mean ± sd per row and section (annotation: per draw kind; domains: over seeds)."""
    out = {}
    for row, per_section in rows.items():
        out[row] = {}
        for section, values in per_section.items():
            if section.startswith("_"):
                out[row][section] = values
            elif isinstance(values, dict):
                ten = [v for d, vals in values.items() if d.startswith("10%") for v in vals]
                full = [v for d, vals in values.items() if d == "100%" for v in vals]
                out[row][section] = {
                    "10%": [float(np.mean(ten)), float(np.std(ten))],
                    "100%": [float(np.mean(full)), float(np.std(full))],
                }
            else:
                out[row][section] = [float(np.mean(values)), float(np.std(values))]
    return out


def mean_over(summary_row: dict, sections, kind=None) -> float:
    vals = [summary_row[s][kind][0] if kind else summary_row[s][0] for s in sections if s in summary_row]
    return float(np.mean(vals)) if vals else float("nan")


def targets(payload) -> list[dict]:
    ann, dom = payload["annotation"], payload["domains"]
    name = payload["config"]
    out = []
    default, base = dom[f"{name} (33 sections)"], dom["smoothed PCA"]
    d_mean, b_mean = mean_over(default, EVALUATION), mean_over(base, EVALUATION)
    out.append(
        {
            "target": "domains: mean ARI E1-H1 >= smoothed PCA + 0.05",
            "value": d_mean - b_mean,
            "met": d_mean - b_mean >= 0.05,
        }
    )
    out.append({"target": "domains: H1 ARI >= 0.40", "value": default["H1"][0], "met": default["H1"][0] >= 0.40})
    a_def, a_base = ann[f"{name} (33 sections)"], ann["PCA + logreg"]
    a_no = ann[f"{name} without the embedding"]
    for kind in ("10%", "100%"):
        gap = mean_over(a_def, EVALUATION, kind) - mean_over(a_base, EVALUATION, kind)
        out.append(
            {
                "target": f"annotation {kind}: mean macro-F1 E1-H1 >= PCA + logreg + 0.05",
                "value": gap,
                "met": gap >= 0.05,
            }
        )
        worst = min(
            a_def[s][kind][0] - a_base[s][kind][0] + max(a_def[s][kind][1], a_base[s][kind][1]) for s in EVALUATION
        )
        out.append(
            {
                "target": f"annotation {kind}: no section below PCA + logreg beyond draw noise (min gap + sd)",
                "value": worst,
                "met": worst >= 0,
            }
        )
        ssl = mean_over(a_def, EVALUATION, kind) - mean_over(a_no, EVALUATION, kind)
        out.append(
            {"target": f"annotation {kind}: self-supervised contribution >= +0.03", "value": ssl, "met": ssl >= 0.03}
        )
    dom_no = dom[f"{name} without the embedding"]
    ssl = d_mean - mean_over(dom_no, EVALUATION)
    out.append({"target": "domains: self-supervised contribution >= +0.03", "value": ssl, "met": ssl >= 0.03})
    if f"{name} (7 sections)" in ann:
        for kind in ("10%", "100%"):
            gap = mean_over(a_def, EVALUATION, kind) - mean_over(ann[f"{name} (7 sections)"], EVALUATION, kind)
            out.append(
                {"target": f"annotation {kind}: 33-section model above 7-section model", "value": gap, "met": gap > 0}
            )
        gap = d_mean - mean_over(dom[f"{name} (7 sections)"], EVALUATION)
        out.append({"target": "domains: 33-section model above 7-section model", "value": gap, "met": gap > 0})
    pre = [p for p in payload["log"]["pretraining"] if p["n_sections"] == 33 and p["config"] == name]
    if pre:
        out.append(
            {
                "target": "speed: 33-section pretraining < 60 s (load average recorded)",
                "value": pre[0]["seconds"],
                "met": pre[0]["seconds"] < 60,
            }
        )
    return out


def _fmt(v) -> str:
    return f"{v[0]:.3f} ± {v[1]:.3f}"


def markdown(payloads: list[dict], args) -> str:
    first = payloads[0]
    lines = [
        "# her2st regions and domains across patients (issue 29)",
        "",
        f"Commit {first['commit']}; {'tuning sections only (B1, C1, D1)' if args.tuning else 'evaluation on E1, F1, G2, H1'}"
        f"{' (quick)' if args.quick else ''}. Command: `{first['command']}`.",
        f"Load average at start {first['load_average_start']}, at end {first['load_average_end']}; "
        f"torch threads {first['torch_threads']}; {platform.machine()} CPU shared with other work.",
        "",
        "Protocol: see the docstring of `benchmarks/her2st_regions.py`. Values: mean ± sd over label draws "
        "(annotation, 10% of the labelled spots of the training sections, draws 0-2; 100%: one draw) or clustering "
        "seeds 0-2 (domains).",
        "",
    ]
    for payload in payloads:
        test_sections = TUNING if args.tuning else EVALUATION
        lines += [f"## Configuration `{payload['config']}`: {json.dumps(CONFIGS.get(payload['config'], {}))}", ""]
        lines += ["### Region annotation (macro-F1)", ""]
        for kind in ("10%", "100%"):
            lines += [
                f"{kind} of the labels:",
                "",
                "| row | " + " | ".join(test_sections) + " | mean |",
                "|---" * (len(test_sections) + 2) + "|",
            ]
            for row, vals in payload["annotation"].items():
                cells = [_fmt(vals[s][kind]) if s in vals else "" for s in test_sections]
                lines.append(f"| {row} | " + " | ".join(cells) + f" | {mean_over(vals, test_sections, kind):.3f} |")
            lines.append("")
        lines += [
            "Chosen candidates (per draw): "
            + "; ".join(
                f"{r}: {', '.join(map(str, v.get('_chosen', [])))}"
                for r, v in payload["annotation"].items()
                if v.get("_chosen") and r != "PCA + logreg"
            ),
            "",
        ]
        lines += [
            "### Domains (ARI per section)",
            "",
            "| row | " + " | ".join(test_sections) + " | mean |",
            "|---" * (len(test_sections) + 2) + "|",
        ]
        for row, vals in payload["domains"].items():
            cells = [_fmt(vals[s]) if s in vals else "" for s in test_sections]
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {mean_over(vals, test_sections):.3f} |")
        lines.append("")
        lines += [
            "### Pretraining",
            "",
            "| configuration | sections | spots | epochs | seconds | load average before / after |",
            "|---|---|---|---|---|---|",
        ]
        for p in payload["log"].get("pretraining", []):
            lines.append(
                f"| {p['config']} | {p['n_sections']} | {p['n_spots']} | {p['epochs']} | {p['seconds']} | {p['load_average_before_after']} |"
            )
        lines.append("")
        if payload.get("targets"):
            lines += ["### Targets", "", "| target | value | met |", "|---|---|---|"]
            lines += [
                f"| {t['target']} | {t['value']:+.3f} | {'yes' if t['met'] else 'no'} |" for t in payload["targets"]
            ]
            lines.append("")
        lines.append(f"Configuration run time {payload['seconds']:.0f} s.")
        lines.append("")
    if not args.tuning and not args.quick:
        lines += [
            "Figure of H1 (pathologist regions, the default domains and the domains on the embedding + expression, "
            "seed 0): `her2st_regions_H1.png`.",
            "",
        ]
    return "\n".join(lines)


def starmap_domains_check(seeds=(0, 1, 2, 3, 4)) -> None:
    """STARmap BZ5 (the domains tuning section of ``benchmarks/domains.py``): domains on the expression alone and on
    the pseudo-label embedding plus the expression, per section, K = 4 layers, the same graph as that benchmark."""
    from sklearn.metrics import adjusted_rand_score

    import sslspatial as ss

    start, load_start = time.perf_counter(), os.getloadavg()[0]
    adata = ss.datasets.starmap_mpfc(path=DATA.parent / "starmap_mpfc").tables["table"]
    ss.pp.build_graph(adata, method="knn", n_neighs=10, library_key="section")
    ss.tl.pretrain_pseudolabel(adata, library_key="section", train_kwargs={"enable_progress_bar": False})
    out = {}
    for section in ("BZ5", "BZ9"):
        sub = subset(adata, [section])
        for row, use_rep in (("expression (X)", "X"), ("embedding + expression", [EMBEDDING, "X"])):
            aris = []
            for seed in seeds:
                ss.tl.domains(sub, n_domains=4, use_rep=use_rep, seed=seed, key_added="bench", overwrite=True)
                aris.append(adjusted_rand_score(sub.obs["layer"].astype(str), sub.obs["bench"].astype(str)))
            out.setdefault(row, {})[section] = [float(np.mean(aris)), float(np.std(aris))]
    lines = [
        "# STARmap domains check (issue 29): expression vs embedding + expression",
        "",
        f"Commit {git_commit()}; `python benchmarks/her2st_regions.py --starmap-domains-check`; load average at start "
        f"{load_start:.2f}; {time.perf_counter() - start:.0f} s. Per section, K = 4 layers, 10-NN graph, "
        "`ss.pretrain_pseudolabel` defaults on both sections; ARI mean ± sd over seeds 0-4. BZ5 is the tuning section "
        "of `benchmarks/domains.py`; BZ9 is evaluation only.",
        "",
        "| use_rep | BZ5 (tuning) | BZ9 (evaluation) |",
        "|---|---|---|",
    ]
    lines += [f"| {row} | {_fmt(v['BZ5'])} | {_fmt(v['BZ9'])} |" for row, v in out.items()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "her2st_regions_starmap_check.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "her2st_regions_starmap_check.json").write_text(json.dumps({"commit": git_commit(), **out}, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one label draw and no curve")
    parser.add_argument("--tuning", action="store_true", help="tuning sections B1, C1, D1 only (for choices)")
    parser.add_argument("--configs", default="default", help=f"comma-separated names of {sorted(CONFIGS)}")
    parser.add_argument("--suffix", default="", help="extra suffix of the results files")
    parser.add_argument("--starmap-domains-check", action="store_true", help="domains on STARmap BZ5 / BZ9 only")
    args = parser.parse_args()
    if args.starmap_domains_check:
        warnings.filterwarnings("ignore")
        starmap_domains_check()
        return
    import torch

    torch.set_num_threads(2)  # pretraining: both cores (BLAS of the classifiers: 1 thread, above)
    warnings.filterwarnings("ignore")
    start_all = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    commit = git_commit()  # the code this run imported
    table = load()
    log: dict = {
        "n_spots": int(table.n_obs),
        "n_genes": int(table.n_vars),
        "n_sections": int(table.obs["section"].nunique()),
    }
    if not args.tuning and not args.quick:
        log["figure"] = str(RESULTS / "her2st_regions_H1.png")
    cache = Cache(table, log)
    if args.tuning:
        splits = [(tuple(s for s in TUNING if s != held), (held,)) for held in TUNING]
        dom_sections = TUNING
    else:
        splits = [(TUNING, EVALUATION)]
        dom_sections = LABELLED
    payloads = []
    for i, name in enumerate(args.configs.split(",")):
        start = time.perf_counter()
        config = CONFIGS[name]
        curve = not args.tuning and not args.quick and i == 0  # the curve: the first configuration only
        baselines = i == 0 or not args.tuning  # tuning: the baselines once, with the first configuration
        ann = annotation_rows(cache, name, config, splits, args.quick, curve, baselines)
        dom = domain_rows(cache, name, config, dom_sections, curve, baselines)
        log.pop("figure", None)  # the figure shows the first configuration
        payload = {
            "config": name,
            "settings": config,
            "annotation": summarise(ann),
            "annotation_raw": ann,
            "domains": summarise(dom),
            "domains_raw": dom,
            "log": {**log, "pretraining": [p for p in log.get("pretraining", []) if p["config"] == name]},
            "seconds": round(time.perf_counter() - start, 1),
        }
        if not args.tuning and not args.quick:
            payload["targets"] = targets(payload)
        payloads.append(payload)
        write(payloads, args, commit, load_start, start_all)  # after every configuration: a killed run keeps them


def write(payloads, args, commit, load_start, start_all) -> None:
    import torch

    common = {
        "commit": commit,
        "command": "python benchmarks/her2st_regions.py " + " ".join(os.sys.argv[1:]),
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "seconds_total": round(time.perf_counter() - start_all, 1),
    }
    for p in payloads:
        p.update(common)
    RESULTS.mkdir(exist_ok=True)
    stem = "her2st_regions" + ("_tuning" if args.tuning else "") + ("_quick" if args.quick else "") + args.suffix
    (RESULTS / f"{stem}.json").write_text(json.dumps({"runs": payloads, **common}, indent=1, default=str) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(payloads, args))
    print(f"wrote {RESULTS / stem}.md in {common['seconds_total'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
