"""``ss.tl.annotate``'s candidates: features, fitters and the cross-validated choice among them.

The probe features of each candidate kind, the kNN and fine-tuning fitters (fine-tuning with a head warm-started by
a logistic regression), and ``method="auto"``'s spatially blocked cross-validation with its baseline yardstick.
"""

from __future__ import annotations

import numpy as np
import torch

from .._constants import Key
from ..objectives import balanced_class_weights
from . import _annotate_select as select
from ._features import center_per_section, pseudolabel_features

#: Principal components of the cell's own expression used by ``method="auto"`` (and ``"expression"`` by default).
AUTO_EXPRESSION_PCS = 30


def _auto(
    model,
    table,
    codes,
    train_idx,
    classes,
    candidates,
    n_folds,
    sections,
    expression_pcs,
    seed,
    finetune,
    ensemble=0,
    cv="blocks",
    center=False,
):
    """Cross-validated choice among the candidates, then the winner refitted on every labelled cell.

    When the ensemble of the ``ensemble`` best probes wins, each member is refitted and their probabilities averaged.
    """
    n_pcs = expression_pcs or AUTO_EXPRESSION_PCS
    if model is not None and model.module.likelihood == "gaussian":  # values already normalised: no residuals
        if tuple(candidates) == select.DEFAULT_CANDIDATES:  # the default pool for such data (its own safety net)
            candidates = list(select.GAUSSIAN_CANDIDATES)
        candidates = [kind for kind in candidates if kind != "residuals"] or ["scaled"]
    features = {kind: _features(model, kind, n_pcs, table) for kind in {*candidates, "pca"} - {"finetune"}}
    if center and sections is not None:  # the plain baseline stays as a user would write it
        features = {k: v if k == "pca" else center_per_section(v, sections) for k, v in features.items()}

    def fit_predict(cand, fit_idx, predict_idx=None):
        if cand.kind == "finetune":
            fit_codes = np.full_like(codes, -1)
            fit_codes[fit_idx] = codes[fit_idx]
            tuned, proba = _finetune(model, fit_codes, np.asarray(fit_idx), classes, **finetune)
        else:
            tuned = model
            balanced, exact = cand.kind != "pca", cand.kind == "scaled"  # the two baselines: fitted as a user would
            proba = select.fit_logreg(
                features[cand.kind], codes, fit_idx, classes.size, cand.C, cand.self_training, balanced, exact
            )
        return (proba if predict_idx is None else proba[predict_idx]), tuned

    grid = select.candidate_grid(candidates)
    by_section = cv == "sections" or (cv == "auto" and len(select.labelled_sections(train_idx, sections)) >= 2)
    if by_section:
        if sections is None:
            raise ValueError("cv='sections' needs library_key= (the obs column of the sections).")
        folds = select.section_folds(codes, train_idx, sections)
    else:
        folds = select.blocked_folds(table.obsm[Key.SPATIAL], codes, train_idx, sections, n_folds=n_folds, seed=seed)

    def score_fit(cand, fit_idx, predict_idx):
        return fit_predict(cand, fit_idx, predict_idx)[0]

    selection = select.cross_validate(score_fit, grid, codes, train_idx, folds, ensemble=ensemble)
    if selection.members:
        members = [c for c in grid if c.name in selection.members]
        proba, result = np.mean([fit_predict(c, train_idx)[0] for c in members], axis=0), model
        record = {"method": "auto", **selection.to_uns(), "kind": "ensemble", "C": float("nan")}
        record["self_training"] = False
    else:
        chosen = next(c for c in grid if c.name == selection.chosen)
        proba, result = fit_predict(chosen, train_idx)
        record = {"method": "auto", **selection.to_uns(), "kind": chosen.kind, "C": chosen.C}
        record["self_training"] = chosen.self_training
    record["expression_pcs"] = n_pcs
    record["cv"] = "sections" if by_section else "blocks"
    record["baseline"] = _baseline_cv(score_fit, selection, codes, train_idx, folds)
    return result, proba, record


def _baseline_cv(fit_predict, selection, codes, train_idx, folds) -> dict:
    """The yardstick: plain PCA + logistic regression, scored by the same cross-validation as the candidates.

    Its score is read from ``selection`` when ``"pca"`` was a candidate, else computed here.
    """
    score = selection.scores.get(select.BASELINE_NAME)
    if score is None and selection.n_folds:
        baseline = select.Candidate("pca")
        score = select.cross_validate(fit_predict, [baseline], codes, train_idx, folds).scores.get(baseline.name)
    return {"name": select.BASELINE_NAME, "cv_macro_f1": float("nan") if score is None else score}


def _finetune(model, codes, train_idx, classes, max_epochs, batch_size, lr, train_kwargs, warm_start=True):
    n_train = train_idx.size
    if batch_size is None:
        batch_size = int(min(128, n_train))
    elif batch_size > n_train:
        raise ValueError(f"Fewer labelled training cells ({n_train}) than batch_size={batch_size}: lower batch_size.")
    if max_epochs is None:
        steps_per_epoch = int(np.ceil(n_train / batch_size))
        max_epochs = int(np.clip(np.ceil(300 / steps_per_epoch), 5, 300))
    weights = balanced_class_weights(codes, classes.size)
    tuned = model.derive(
        objective="classify", objective_kwargs={"n_classes": int(classes.size), "class_weights": weights}
    )
    if warm_start:
        _probe_init(tuned, model.get_latent_representation(), codes, train_idx, classes.size)
    tuned.train(
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        train_indices=train_idx,
        targets={"labels": codes},
        **(train_kwargs or {}),
    )
    return tuned, tuned.predict_proba()


def _probe_init(tuned, z, codes, train_idx, n_classes) -> None:
    """Set the classification head to a class-balanced logistic regression fitted on the frozen embedding."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(z[train_idx], codes[train_idx])
    weight, bias = np.zeros((n_classes, z.shape[1])), np.full(n_classes, -10.0)  # absent classes: never predicted
    if clf.coef_.shape[0] == 1:  # binary: sklearn's single logit w.z + b = logit(class 1) - logit(class 0)
        weight[clf.classes_] = np.stack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
        bias[clf.classes_] = [-clf.intercept_[0] / 2, clf.intercept_[0] / 2]
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    head = tuned.module.objective.head
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))


def _features(model, kind: str, n_pcs: int, table=None) -> np.ndarray:
    """Probe features of one candidate kind.

    ``"linear"``: [standardised embedding, standardised expression PCs] (the embedding alone when ``n_pcs`` is 0);
    ``"expression"``: the standardised expression PCs alone (genes standardised before the PCA); ``"residuals"``:
    the standardised PCs of the Pearson residuals of the counts; ``"pca"``: the plain baseline's features, PCs of the
    unscaled log-normalised expression, not standardised; ``"scaled"``: every input feature standardised (``log1p``
    first for counts). With ``model=None`` the counts are read from ``X`` of ``table`` and the model is never touched.
    """
    from sklearn.preprocessing import StandardScaler

    if model is None:
        source, layer, log1p = table, None, True
    else:
        source, layer = model.adata, model.adata_manager.registry["setup_args"].get("layer")
        log1p = model.module.likelihood != "gaussian"
    if kind == "scaled":  # every input feature (as the model reads it), standardised
        x = source.layers[layer] if layer else source.X
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        return StandardScaler().fit_transform(np.log1p(x) if log1p else x)
    if kind == "pca":
        return pseudolabel_features(source, layer, n_pcs, log1p=log1p)
    own_only = kind in ("expression", "residuals")
    blocks = [] if own_only else [StandardScaler().fit_transform(model.get_latent_representation())]
    if n_pcs:
        pearson = kind == "residuals"
        pcs = pseudolabel_features(source, layer, n_pcs, log1p=log1p, scale=not pearson, pearson=pearson)
        blocks.append(StandardScaler().fit_transform(pcs))
    return np.concatenate(blocks, axis=1)


def _knn(features, codes, train_idx, n_classes, n_neighbors) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=int(min(n_neighbors, train_idx.size)))
    clf.fit(features[train_idx], codes[train_idx])
    return select.padded_proba(clf, features, n_classes)
