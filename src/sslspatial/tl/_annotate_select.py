"""Model selection for ``ss.tl.annotate(method="auto")``: spatially blocked cross-validation on the labelled cells.

The candidates are class-balanced logistic-regression probes on the cell's own expression (``"expression"``: PCs of
gene-standardised log-normalised counts; ``"residuals"``: PCs of Pearson residuals of the counts) or on
[embedding, expression] (``"linear"``), each with a regularisation strength ``C`` and with or without one round of
self-training on the unlabelled cells, and the plain baseline itself (``"pca"``: unscaled expression PCs, logistic
regression without class weights), so that the choice can never be worse than the baseline by more than the
cross-validation noise; warm-started fine-tuning (``"finetune"``) can be added. Every candidate is
scored by the macro-F1 of its out-of-fold predictions on the labelled training cells only, in folds made of whole
spatial blocks so that a validation cell's neighbours are not its training cells. The winner is refitted on all
labelled cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

#: Candidates tried by default (fine-tuning is opt-in: it costs one training run per fold and rarely won). ``"pca"``
#: is the plain PCA + logistic regression baseline, a safety net listed last so that it wins only outright.
#: ``"residuals"`` (PCs of Pearson residuals) was added on evidence from osmFISH, where ``log1p`` of counts scaled to
#: 10,000 is a poor transform of ~160 counts per cell; on the tuning split it changed mean macro-F1 by 0.000 (1%),
#: -0.010 (10%, sd 0.05) and 0.000 (100%): see ``benchmarks/celltyping.py``. osmFISH thereby chose a default and is no
#: longer an evaluation split for cell typing (the evaluation split is STARmap BZ9 -> BZ5).
DEFAULT_CANDIDATES = ("linear", "expression", "residuals", "pca")
#: The default pool when the model reads already-normalised values (``likelihood="gaussian"``: protein intensities,
#: scaled data): no residuals (no counts), and the safety net is the obvious baseline for such data, every input feature
#: standardised + class-balanced logistic regression (``"scaled"``), instead of the PCA baseline without class weights,
#: which lost to it on a multiplexed protein image outside ``../shared`` (issue 31: 0.200 against 0.240 macro-F1);
#: ``benchmarks/annotate_protein.py`` measures the pool on the CITE-seq skin proteins.
GAUSSIAN_CANDIDATES = ("linear", "expression", "scaled")
CANDIDATE_KINDS = ("linear", "expression", "residuals", "pca", "scaled", "finetune")
#: Display name of the ``"scaled"`` candidate.
SCALED_NAME = "scaled features + balanced logreg"
#: Cross-validation of ``annotate(method="auto")``: ``"auto"`` holds out whole sections when at least two sections hold
#: labelled cells (see :func:`section_folds`), else spatial blocks (:func:`blocked_folds`).
DEFAULT_CV = "auto"
CV_KINDS = ("auto", "sections", "blocks")
#: ``annotate(center_sections=...)``: per-section centring of the probe features (with ``library_key``).
DEFAULT_CENTER_SECTIONS = False
#: Display name of the ``"pca"`` candidate (also ``uns["annotate"]["baseline"]["name"]``).
BASELINE_NAME = "PCA + logreg"
DEFAULT_C_GRID = (0.1, 1.0)
#: Probes averaged by the ensemble candidate (``annotate(ensemble=...)``). Chosen on the tuning split BZ5 -> BZ9 in run
#: c3d9858 (4 beat 3: 0.570 vs 0.542 at 10% labels, 0.720 vs 0.712 at 100%). In the deciding run (the committed
#: ``celltyping.json`` / ``reference_mapping.json``) 3 scores 0.566 / 0.718 against 4's 0.561 / 0.713, within the draw
#: spread; the decision rule of ``benchmarks/README.md`` (mean gain over the tuning settings of cell typing and mapping
#: > 0.005) keeps 4 (+0.003 for 3).
DEFAULT_ENSEMBLE = 4
#: Fraction of the unlabelled cells (the most confident ones) added with their predicted labels in self-training.
SELF_TRAINING_QUANTILE = 0.5
#: Convergence tolerance of the class-balanced probes (1e-3: same held-out accuracy as 1e-4 on osmFISH, 3-6x faster).
LOGREG_TOL = 1e-3
#: The plain baseline (``"pca"``) is fitted exactly as a user would write it: scikit-learn's default tolerance (1e-4),
#: with enough iterations to converge, so that the safety net is the baseline itself, not an approximation of it.
BASELINE_LOGREG = {"tol": 1e-4, "max_iter": 3000}


@dataclass(frozen=True)
class Candidate:
    """One configuration that cross-validation scores."""

    kind: str
    C: float = 1.0
    self_training: bool = False

    @property
    def name(self) -> str:
        if self.kind == "finetune":
            return "finetune"
        if self.kind == "pca":
            return BASELINE_NAME
        if self.kind == "scaled":
            return SCALED_NAME
        return f"{self.kind}(C={self.C:g}{', self-training' if self.self_training else ''})"


def candidate_grid(kinds, c_grid=DEFAULT_C_GRID, self_training=(False, True)) -> list[Candidate]:
    """Every configuration of the given kinds, in the order they win ties.

    Examples
    --------
    >>> [c.name for c in candidate_grid(["expression"], c_grid=[1.0], self_training=[False])]
    ['expression(C=1)']
    """
    grid = []
    for kind in kinds:
        if kind in ("finetune", "pca", "scaled"):  # one configuration each (the baselines are plain C=1 fits)
            grid.append(Candidate(kind))
            continue
        grid += [Candidate(kind, float(c), bool(st)) for st in self_training for c in c_grid]
    return grid


def blocked_folds(
    coordinates: np.ndarray,
    codes: np.ndarray,
    labelled: np.ndarray,
    sections: np.ndarray | None = None,
    n_folds: int = 3,
    blocks_per_fold: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Assign each labelled cell to a validation fold made of whole spatial blocks.

    Each section is tiled into about ``n_folds * blocks_per_fold`` square blocks, shuffled and dealt to the folds in
    turn. A class must keep at least one training cell in every fold it is validated in: the cells of a class that
    would lose all its training cells in some fold (always the case for a class with a single labelled cell) are
    taken out of validation (fold ``-1``: they train in every fold), so no class is ever dropped.

    Parameters
    ----------
    coordinates
        ``(n_obs, 2)`` coordinates.
    codes
        Integer class of every cell (``-1`` or anything for unlabelled cells: only ``labelled`` are read).
    labelled
        Indices of the labelled training cells.
    sections
        Section of every cell (blocks never span sections).
    n_folds
        Number of folds.
    blocks_per_fold
        Blocks per fold and section.
    seed
        Random seed of the block order.

    Returns
    -------
    Fold of each labelled cell (aligned with ``labelled``), ``-1`` for cells that are never validated.

    Examples
    --------
    >>> xy = np.c_[np.arange(40.0), np.zeros(40)]
    >>> folds = blocked_folds(xy, np.arange(40) % 2, np.arange(40), n_folds=2, blocks_per_fold=2)
    >>> sorted(set(folds.tolist()))
    [0, 1]
    """
    labelled = np.asarray(labelled)
    xy = np.asarray(coordinates, dtype=float)[labelled, :2]
    sec = np.zeros(labelled.size, dtype=int) if sections is None else np.asarray(sections)[labelled]
    rng = np.random.default_rng(seed)
    folds = np.full(labelled.size, -1, dtype=np.int64)
    side = int(np.ceil(np.sqrt(n_folds * blocks_per_fold)))
    offset = int(rng.integers(n_folds))
    for section in pd.unique(sec):
        idx = np.flatnonzero(sec == section)
        lo, hi = xy[idx].min(0), xy[idx].max(0)
        size = max(float((hi - lo).max()) / side, 1e-12)
        cell = np.minimum(np.floor((xy[idx] - lo) / size).astype(np.int64), side - 1)
        block = cell[:, 0] * side + cell[:, 1]
        blocks = rng.permutation(np.unique(block))
        fold_of_block = {b: (i + offset) % n_folds for i, b in enumerate(blocks)}
        folds[idx] = [fold_of_block[b] for b in block]
        offset += blocks.size
    return protect_classes(folds, np.asarray(codes)[labelled], n_folds)


def protect_classes(folds: np.ndarray, classes: np.ndarray, n_folds: int) -> np.ndarray:
    """Take out of validation (fold ``-1``) the cells of a class that would have no training cell in their fold."""
    for c in np.unique(classes):
        members = classes == c
        for f in range(n_folds):
            if not np.any(members & (folds != f)):  # validating fold f would leave class c without training cells
                folds[members & (folds == f)] = -1
    return folds


def labelled_sections(labelled: np.ndarray, sections: np.ndarray | None) -> list:
    """Sections holding labelled training cells, in order of appearance (empty without ``sections``)."""
    return [] if sections is None else list(pd.unique(np.asarray(sections)[np.asarray(labelled)]))


def section_folds(codes: np.ndarray, labelled: np.ndarray, sections: np.ndarray) -> np.ndarray:
    """One validation fold per section holding labelled cells: each fold holds out a whole section.

    With several labelled sections (or patients), this estimates what a new section faces: the shift between
    sections, which folds of spatial blocks within the training sections cannot see. The cells of a class found in
    only one section cannot be validated without losing all its training cells: they get fold ``-1`` (they train
    in every fold), as in :func:`blocked_folds`.

    Examples
    --------
    >>> section_folds(np.array([0, 1, 0, 1, 2]), np.arange(5), np.array(["a", "a", "b", "b", "b"])).tolist()
    [0, 0, 1, 1, -1]
    """
    labelled = np.asarray(labelled)
    order = labelled_sections(labelled, sections)
    fold_of = {s: i for i, s in enumerate(order)}
    folds = np.array([fold_of[s] for s in np.asarray(sections)[labelled]], dtype=np.int64)
    return protect_classes(folds, np.asarray(codes)[labelled], len(order))


@dataclass
class Selection:
    """What cross-validation chose, and every score (written to ``uns``).

    ``members`` lists the candidates whose probabilities are averaged when the ensemble was chosen (else it is
    empty).
    """

    chosen: str
    scores: dict
    n_folds: int
    n_validated: int
    never_validated_classes: list
    fallback: bool
    members: list = field(default_factory=list)

    def to_uns(self) -> dict:
        return asdict(self)


def ensemble_name(size: int) -> str:
    """Display name of the ensemble of the ``size`` best candidates.

    Examples
    --------
    >>> ensemble_name(3)
    'ensemble(top 3)'
    """
    return f"ensemble(top {size})"


def check_ensemble(ensemble) -> int:
    """``ensemble`` as an int, or a ``ValueError`` unless it is a non-negative integer (0 turns the ensemble off)."""
    if not isinstance(ensemble, int | np.integer) or isinstance(ensemble, bool) or ensemble < 0:
        raise ValueError(
            f"ensemble must be a non-negative integer (candidates averaged; 0 turns it off), got {ensemble!r}."
        )
    return int(ensemble)


def cross_validate(fit_predict, candidates, codes, labelled, folds, ensemble: int = 0) -> Selection:
    """Score ``candidates`` by the macro-F1 of their pooled out-of-fold predictions.

    ``fit_predict(candidate, train_idx, predict_idx)`` returns class probabilities for ``predict_idx`` from a fit on
    the labels of ``train_idx`` only. Ties go to the earlier candidate. With ``ensemble >= 2``, the mean of the
    out-of-fold probabilities of the ``ensemble`` best-scoring probes (fine-tuning excluded) is scored too, listed last (it wins only
    outright); ``members`` then names them. When no fold can be validated (too few labels), the first candidate is
    chosen and ``fallback`` is set.
    """
    from sklearn.metrics import f1_score

    labelled = np.asarray(labelled)
    validated = folds >= 0
    classes_never = sorted(set(np.asarray(codes)[labelled].tolist()) - set(np.asarray(codes)[labelled[validated]]))
    fold_ids = np.unique(folds[validated]).tolist()
    if not fold_ids or np.unique(np.asarray(codes)[labelled[validated]]).size < 2:
        return Selection(candidates[0].name, {}, 0, 0, classes_never, True)
    truth = np.asarray(codes)[labelled[validated]]

    def macro_f1(proba: np.ndarray) -> float:
        predicted = proba[validated].argmax(1)
        return float(f1_score(truth, predicted, labels=np.unique(truth), average="macro", zero_division=0))

    scores, oof = {}, {}
    for cand in candidates:
        for f in fold_ids:
            val = folds == f
            proba = fit_predict(cand, labelled[~val], labelled[val])
            oof.setdefault(cand.name, np.zeros((labelled.size, proba.shape[1])))[val] = proba
        scores[cand.name] = macro_f1(oof[cand.name])
    probes = [c.name for c in candidates if c.kind != "finetune"]  # fine-tuned models are not averaged
    ranked = sorted(probes, key=lambda name: (-scores[name], probes.index(name)))
    members = ranked[: int(ensemble)] if ensemble >= 2 and len(ranked) >= 2 else []
    if members:
        scores[ensemble_name(len(members))] = macro_f1(np.mean([oof[name] for name in members], axis=0))
    best = max(scores, key=lambda name: (scores[name], -list(scores).index(name)))
    chosen_members = members if members and best == ensemble_name(len(members)) else []
    return Selection(best, scores, len(fold_ids), int(validated.sum()), classes_never, False, chosen_members)


def fit_logreg(
    features: np.ndarray,
    codes: np.ndarray,
    train_idx,
    n_classes: int,
    C: float,
    self_training: bool,
    balanced: bool = True,
    exact: bool = False,
):
    """Logistic regression (class-balanced unless ``balanced=False``) on ``train_idx``; probabilities for every cell.

    ``balanced=False`` is the plain baseline: no class weights and scikit-learn's default tolerance
    (:data:`BASELINE_LOGREG`). ``exact=True`` fits with that tolerance too, class-balanced: the ``"scaled"`` baseline,
    which must be the fit a user would write (with :data:`LOGREG_TOL` it scored 0.015-0.057 macro-F1 lower on the
    CITE-seq proteins of ``benchmarks/annotate_protein.py``: 283 features, 83 labels, far from converged). With ``self_training`` it is refitted once with the most confident half of the other
    cells added under their predicted labels.
    """
    from sklearn.linear_model import LogisticRegression

    options = {"class_weight": "balanced", "max_iter": 1000, "tol": LOGREG_TOL} if balanced else BASELINE_LOGREG
    if balanced and exact:
        options = {"class_weight": "balanced", **BASELINE_LOGREG}

    def fit(idx, y):
        clf = LogisticRegression(C=C, **options).fit(features[idx], y)
        return padded_proba(clf, features, n_classes)

    train_idx = np.asarray(train_idx)
    proba = fit(train_idx, codes[train_idx])
    if not self_training:
        return proba
    others = np.setdiff1d(np.arange(features.shape[0]), train_idx)
    if others.size == 0:
        return proba
    confidence = proba[others].max(1)
    added = others[confidence >= np.quantile(confidence, SELF_TRAINING_QUANTILE)]
    return fit(np.concatenate([train_idx, added]), np.concatenate([codes[train_idx], proba[added].argmax(1)]))


def padded_proba(clf, features: np.ndarray, n_classes: int) -> np.ndarray:
    """``clf.predict_proba(features)`` with one column per class code; classes the fit never saw get probability 0."""
    proba = np.zeros((features.shape[0], n_classes))
    proba[:, clf.classes_] = clf.predict_proba(features)
    return proba
