"""Cell-type annotation and transfer to new datasets.

``ss.tl.annotate``: cell-type prediction from a pretrained model (fine-tuning, kNN probe or linear probe), and
``ss.tl.transfer``: a pretrained model applied to another dataset with an overlapping gene panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd

from .._constants import Key, check_key
from .._provenance import run_record
from .._types import DataLike
from .._validate import (
    check_absent,
    check_choice,
    check_indices,
    check_numbers,
    check_obs_column,
    check_unique_var_names,
    resolve_seed,
    trainer_options,
)
from ..io import _access as _io
from ..model import SpatialPretrainModel
from . import _annotate_select as select
from ._annotate_fit import AUTO_EXPRESSION_PCS, _auto, _features, _finetune, _knn, _probe_init  # noqa: F401 (tests)
from ._features import center_per_section

Method = Literal["auto", "finetune", "knn", "linear", "expression"]
METHODS = get_args(Method)


def _check_model(model, table, method: str = "auto", candidates=()) -> None:
    if model is None:
        needs = method in ("finetune", "knn", "linear") or (
            method == "auto" and any(kind in ("linear", "finetune") for kind in candidates)
        )
        if needs:
            raise ValueError(
                "model=None leaves no embedding: pass a trained model (ss.tl.pretrain_*), or use the expression alone "
                "(method='expression', or method='auto' with candidates from 'expression', 'residuals', 'pca')."
            )
        return
    if not isinstance(model, SpatialPretrainModel):
        raise TypeError(f"model must be a SpatialPretrainModel (from ss.tl.pretrain_*), got {type(model).__name__}.")
    if not model.is_trained_:
        raise ValueError("The model is not trained yet: call model.train() or use ss.tl.pretrain_* first.")
    if model.adata.n_obs != table.n_obs or not model.adata.obs_names.equals(table.obs_names):
        raise ValueError(
            "The model was set up on another table: for a new dataset call `ss.tl.transfer(data, model)` first and "
            "pass the model it returns."
        )


def annotate(
    data: DataLike,
    model: SpatialPretrainModel | None,
    labels_key: str,
    *,
    method: Method = "auto",
    candidates: Sequence[
        Literal["linear", "expression", "residuals", "pca", "scaled", "finetune"]
    ] = select.DEFAULT_CANDIDATES,
    n_folds: int = 3,
    cv: Literal["auto", "sections", "blocks"] = select.DEFAULT_CV,
    ensemble: int = select.DEFAULT_ENSEMBLE,
    library_key: str | None = None,
    center_sections: bool = select.DEFAULT_CENTER_SECTIONS,
    train_indices: np.ndarray | None = None,
    unlabeled_category: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    n_neighbors: int = 5,
    expression_pcs: int = 0,
    warm_start: bool = True,
    key_added: str = "annotate",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    train_kwargs: dict | None = None,
) -> SpatialPretrainModel:
    """Predict cell types with a pretrained model.

    By default (``method="auto"``) the method is chosen by cross-validation on the labelled training cells: each
    candidate (class-balanced logistic regression on [embedding, expression PCs] or on the expression PCs alone, with
    two regularisation strengths, with and without one round of self-training on the unlabelled cells; the plain
    PCA + logistic regression baseline as a safety net; fine-tuning when ``candidates`` includes ``"finetune"``) is
    scored by the macro-F1 of its out-of-fold predictions, in ``n_folds`` folds made of whole spatial blocks (so a
    validation cell's neighbours do not train), and the winner is refitted on all labelled cells. The choice and every score go to ``uns[key_added]``.

    Only the labels of the training cells are used: cells whose ``labels_key`` is missing (NaN or
    ``unlabeled_category``) and cells outside ``train_indices`` are predicted, never trained on (self-training uses
    their expression, not their labels). For an honest estimate hold out whole sections or spatial blocks
    (:mod:`sslspatial.data` ``section_split``, ``spatial_block_split``, and ``buffer_split``).

    Rare classes: a class keeps at least one training cell in every fold it is validated in. The cells of a class
    that cannot be split that way (always the case for a class with one labelled cell) are never validated: they
    train in every fold and in the final fit, so no class is dropped (they are listed in
    ``uns[key_added]["never_validated_classes"]``). When no fold can be validated at all (very few labels), the
    first candidate is used (``uns[key_added]["fallback"]`` is ``True``).

    Parameters
    ----------
    data
        AnnData or SpatialData; the table the model was trained on (or the aligned table of ``ss.tl.transfer``).
    model
        A trained :class:`~sslspatial.model.SpatialPretrainModel`, or ``None`` to annotate from the expression alone
        (``method="expression"``, or ``"auto"`` with candidates among ``"expression"``, ``"residuals"``, ``"pca"``;
        counts are read from ``X``): the same call without the embedding, which shows what self-supervision adds.
        The model is then never read.
    labels_key
        obs column with cell types.
    method
        ``"auto"`` (cross-validated choice, above), ``"finetune"`` (encoder + linear head trained end to end,
        class-weighted cross-entropy), ``"knn"`` (``n_neighbors``-NN vote in the embedding), ``"linear"``
        (class-balanced logistic regression on the embedding, plus ``expression_pcs`` expression PCs) or
        ``"expression"`` (the same on the expression PCs alone).
    candidates
        ``method="auto"`` only: kinds to choose among, any of ``"linear"``, ``"expression"``, ``"residuals"`` (the
        probe on PCs of Pearson residuals of the counts, :func:`sslspatial.pp.pearson_residuals`; skipped when the
        model reads already-normalised values, ``likelihood="gaussian"``), ``"pca"`` (the plain baseline: 30 unscaled
        PCs, logistic regression without class weights), ``"scaled"`` (every input feature standardised,
        class-balanced logistic regression) and ``"finetune"``. With ``likelihood="gaussian"`` (protein intensities,
        scaled values) the default pool is ``("linear", "expression", "scaled")``: the standardised features are
        the safety net there (``benchmarks/annotate_protein.py``).
    n_folds
        ``method="auto"`` only: cross-validation folds of spatial blocks (``cv="blocks"``).
    cv
        ``method="auto"`` only: ``"sections"`` holds out one whole section (of ``library_key``) per fold, so the
        choice reflects the shift to a new section or patient; ``"blocks"`` uses ``n_folds`` folds of spatial
        blocks within the sections; ``"auto"`` (default) holds out sections when at least two sections hold
        labelled training cells, else blocks (the default: on the her2st tuning sections of
        ``benchmarks/her2st_regions.py``, leave one tuning section out, holding out sections instead of blocks
        raised mean macro-F1 from 0.283 to 0.315 (10% labels) and from 0.283 to 0.347 (all labels)).
    ensemble
        ``method="auto"`` only: also score the mean of the probabilities of the ``ensemble`` best-scoring probes
        (same folds; it is chosen only when it beats every single candidate, and then each member is refitted on all
        labelled cells and their probabilities averaged). ``0`` or ``1`` turns it off. The default, 4, was chosen on
        the tuning split (STARmap BZ5 -> BZ9) of ``benchmarks/celltyping.py`` in an earlier run; in the deciding run
        (the committed ``celltyping.json`` and ``reference_mapping.json``) 3 scores within the draw spread of it
        (+0.005 at 10% and 100% labels) and the decision rule of ``benchmarks/README.md`` keeps 4 (gain of 3:
        +0.003, under the rule's 0.005).
    library_key
        obs column of the sections (spatial blocks never span sections); ``None``: one section.
    center_sections
        With ``library_key``: subtract each section's mean from every probe feature (embedding and expression PCs;
        not from the plain ``"pca"`` baseline candidate), a label-free alignment of sections or patients before the
        classifier.
    train_indices
        Rows whose labels may be used (default: every labelled cell).
    unlabeled_category
        Label value meaning "unlabelled".
    table_key
        Table of a SpatialData.
    max_epochs, batch_size, lr
        Fine-tuning settings (defaults: about 300 optimiser steps, ``min(128, n_train)`` seeds per batch).
    n_neighbors
        k of the kNN probe.
    expression_pcs
        Probes: append this many principal components of the cell's own expression (library-size normalised,
        ``log1p``, each gene standardised) to the embedding (each block standardised), so the embedding adds context
        to the cell's identity instead of replacing it. ``0`` probes the embedding alone; ``"auto"`` and
        ``"expression"`` use 30 when this is ``0``.
    warm_start
        Fine-tuning only: initialise the classification head from a class-balanced logistic regression on the frozen
        embedding of the training cells, then fine-tune (the LP-FT recipe).
    key_added
        Writes ``obs[f"{key_added}_prediction"]``, ``obsm[f"{key_added}_probabilities"]`` (a float array, one
        column per class in the order of ``uns[key_added]["classes"]``, so that any class name, ``"eL2/3"``
        included, survives zarr and h5ad), ``obs[f"{key_added}_train"]`` (cells whose labels were used) and
        ``uns[key_added]`` (method, classes, and for ``"auto"`` the cross-validation scores).
    overwrite
        Replace existing outputs (else :class:`~sslspatial.OutputExistsError`).
    seed
        Random state of the cross-validation blocks (``None``: a fresh one, recorded in
        ``uns[key_added]["params"]["seed"]``).
    accelerator, devices
        Fine-tuning only: Lightning's hardware options (``accelerator="gpu"``, ``devices=1``).
    train_kwargs
        More :meth:`~sslspatial.model.SpatialPretrainModel.train` arguments (fine-tuning).

    Returns
    -------
    The fine-tuned model (when fine-tuning was used) or ``model`` itself (probes).

    Examples
    --------
    >>> model = ss.tl.pretrain_pseudolabel(adata)  # doctest: +SKIP
    >>> ss.tl.annotate(adata, model, "cell_type")  # doctest: +SKIP
    >>> adata.uns["annotate"]["chosen"], adata.obs["annotate_prediction"].head()  # doctest: +SKIP
    >>> proba = pd.DataFrame(
    ...     adata.obsm["annotate_probabilities"], index=adata.obs_names, columns=adata.uns["annotate"]["classes"]
    ... )  # doctest: +SKIP
    """
    params = {k: v for k, v in locals().items() if k not in ("data", "model", "train_indices")}
    check_numbers(params)  # folds, epochs, batch size, lr, k, PCs, seed: before any work
    seed = params["seed"] = resolve_seed(seed)  # None: a fresh seed, recorded in uns[key_added]["params"]
    check_choice(method, METHODS, "method")
    check_choice(cv, select.CV_KINDS, "cv")
    for kind in candidates:
        check_choice(kind, select.CANDIDATE_KINDS, "candidates")
    if method == "auto" and not len(candidates):
        raise ValueError(
            "candidates is empty: pass at least one of 'linear', 'expression', 'residuals', 'pca', 'scaled', "
            "'finetune'."
        )
    select.check_ensemble(ensemble)
    if expression_pcs < 0 or (expression_pcs and method == "finetune"):
        raise ValueError(
            f"expression_pcs={expression_pcs} applies to the probes only: use method='linear' or 'knn' with "
            "expression_pcs > 0, or expression_pcs=0 to fine-tune."
        )
    table = _io.get_table(data, table_key)
    check_obs_column(table, labels_key, "labels_key")
    if library_key is not None:
        check_obs_column(table, library_key, "library_key")
    _check_model(model, table, method, candidates)
    pred_key, proba_key = Key.prediction(check_key(key_added, "key_added")), f"{key_added}_probabilities"
    for where, name, key in ((table.obs, "obs", pred_key), (table.obsm, "obsm", proba_key)):
        check_absent(key in where and not overwrite, f"{name}[{key!r}]")
    labels = table.obs[labels_key]
    usable = labels.notna().to_numpy()
    if unlabeled_category is not None:
        usable &= (labels.astype(str) != str(unlabeled_category)).to_numpy()
    if train_indices is not None:
        allowed = np.zeros(table.n_obs, dtype=bool)
        allowed[check_indices(train_indices, table.n_obs, "train_indices")] = True
        usable &= allowed
    train_idx = np.flatnonzero(usable)
    classes = np.array(sorted(pd.unique(labels.iloc[train_idx].astype(str))))
    if classes.size < 2:
        raise ValueError(
            f"labels_key={labels_key!r} has {classes.size} class(es) among the {train_idx.size} training cells: "
            "cell-type prediction needs at least two labelled classes."
        )
    codes = np.full(table.n_obs, -1, dtype=np.int64)
    codes[train_idx] = np.searchsorted(classes, labels.iloc[train_idx].astype(str).to_numpy())
    trainer = trainer_options("annotate", accelerator, devices, train_kwargs)
    finetune = {"max_epochs": max_epochs, "batch_size": batch_size, "lr": lr, "train_kwargs": trainer}
    record: dict = {"method": method}
    if method == "auto":
        sections = None if library_key is None else table.obs[library_key].astype(str).to_numpy()
        result, proba, record = _auto(
            model, table, codes, train_idx, classes, candidates, n_folds=n_folds, sections=sections,
            expression_pcs=expression_pcs, seed=seed, finetune=finetune, ensemble=ensemble, cv=cv,
            center=center_sections,
        )  # fmt: skip
    elif method == "finetune":
        result, proba = _finetune(model, codes, train_idx, classes, **finetune, warm_start=warm_start)
    else:
        n_pcs = expression_pcs or (AUTO_EXPRESSION_PCS if method == "expression" else 0)
        features = _features(model, "expression" if method == "expression" else "linear", n_pcs, table)
        if center_sections and library_key is not None:
            features = center_per_section(features, table.obs[library_key].astype(str).to_numpy())
        if method == "knn":
            proba = _knn(features, codes, train_idx, classes.size, n_neighbors)
        else:
            proba = select.fit_logreg(features, codes, train_idx, classes.size, C=1.0, self_training=False)
        result = model
    table.obs[pred_key] = pd.Categorical(classes[proba.argmax(1)], categories=classes)
    # an array, not a DataFrame with class-named columns: a label such as STARmap's "eL2/3" cannot be a zarr key
    table.obsm[proba_key] = np.asarray(proba, dtype=np.float64)
    table.obs[f"{key_added}_train"] = usable
    table.uns[key_added] = {
        **run_record("annotate", params),
        **record,
        "classes": classes.tolist(),
        "n_labelled": int(train_idx.size),
        "labels_key": labels_key,
    }
    return result


def transfer(
    data: DataLike,
    model: SpatialPretrainModel,
    *,
    layer: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    key_added: str = "transfer",
    overwrite: bool = False,
) -> SpatialPretrainModel:
    """Apply a pretrained model to another dataset whose gene panel overlaps the reference panel.

    Genes are aligned to the reference by name; reference genes missing from the query are treated as masked
    (hidden behind the mask token at the input and never scored), the way scvi-tools maps a query onto a reference
    with ``load_query_data``. The query needs the same kind of spatial graph (``ss.pp.build_graph``) as the reference.

    Parameters
    ----------
    data
        Query AnnData or SpatialData.
    model
        A trained :class:`~sslspatial.model.SpatialPretrainModel`.
    layer
        Query layer with the expression (default ``X``).
    table_key
        Table of a SpatialData.
    key_added
        The query embedding goes to ``obsm[f"X_{key_added}"]``.
    overwrite
        Replace an existing embedding.

    Returns
    -------
    A model on an aligned copy of the query table, ready for :func:`annotate` on ``data`` or for more training.

    Examples
    --------
    >>> query_model = ss.tl.transfer(query, model)  # doctest: +SKIP
    >>> ss.tl.annotate(query, query_model, "cell_type", method="knn")  # doctest: +SKIP
    """
    arguments = dict(locals())
    table = _io.get_table(data, table_key)
    key = Key.embedding(check_key(key_added, "key_added"))
    check_absent(key in table.obsm and not overwrite, f"obsm[{key!r}]")
    if not isinstance(model, SpatialPretrainModel) or not model.is_trained_:
        raise TypeError("model must be a trained SpatialPretrainModel (from ss.tl.pretrain_*).")
    check_unique_var_names(table, "the query table")
    query = SpatialPretrainModel.load_query_data(table, model, layer=layer)
    query._check_data(query.adata, query.init_params_["non_kwargs"]["encoder"], query.module.likelihood)
    table.obsm[key] = query.get_latent_representation()
    table.uns[key_added] = {
        **run_record("transfer", arguments),
        "n_reference_genes": int(model.adata.n_vars),
        "n_shared_genes": int(query.module.gene_present.sum()),
    }
    return query
