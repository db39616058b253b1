"""Cell-type annotation and transfer to new datasets.

``ss.tl.annotate``: cell-type prediction from a pretrained model (fine-tuning, kNN probe or linear probe), and
``ss.tl.transfer``: a pretrained model applied to another dataset with an overlapping gene panel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import _io
from .._constants import Key, check_key
from .._validate import check_choice, check_obs_column
from ..model import SpatialPretrainModel
from ..objectives import balanced_class_weights

DataLike = Any
METHODS = ("finetune", "knn", "linear")


def _check_model(model, table) -> None:
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
    model: SpatialPretrainModel,
    labels_key: str,
    *,
    method: str = "finetune",
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
    train_kwargs: dict | None = None,
) -> SpatialPretrainModel:
    """Predict cell types with a pretrained model.

    Fine-tune it with a class-weighted classification head, or probe its
    embedding with kNN / logistic regression.

    Only the labels of the training cells are used: cells whose ``labels_key`` is missing (NaN or
    ``unlabeled_category``) and cells outside ``train_indices`` are predicted, never trained on. For an honest
    estimate hold out whole sections or spatial blocks (:mod:`sslspatial.data` ``section_split``,
    ``spatial_block_split``, and ``buffer_split`` to keep training seeds away from evaluation cells).

    Parameters
    ----------
    data
        AnnData or SpatialData; the table the model was trained on (or the aligned table of ``ss.tl.transfer``).
    model
        A trained :class:`~sslspatial.model.SpatialPretrainModel`.
    labels_key
        obs column with cell types.
    method
        ``"finetune"`` (encoder + linear head trained end to end, class-weighted cross-entropy), ``"knn"``
        (``n_neighbors``-NN vote in the embedding) or ``"linear"`` (class-balanced logistic regression).
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
        Probes only: append this many principal components of the cell's own (log1p-normalised) expression to the
        embedding (each block standardised). The embedding then adds context and denoised structure to the cell's
        identity instead of replacing it; with few labels this is the most accurate probe on STARmap (see
        ``benchmarks/celltyping.py``). ``0`` (default) probes the embedding alone.
    warm_start
        Fine-tuning only: initialise the classification head from a class-balanced logistic regression on the frozen
        embedding of the training cells, then fine-tune (the LP-FT recipe), so training starts from the linear probe
        instead of a random head that first distorts the pretrained encoder.
    key_added
        Writes ``obs[f"{key_added}_prediction"]``, ``obsm[f"{key_added}_probabilities"]`` (DataFrame, one column per
        class) and ``obs[f"{key_added}_train"]`` (cells whose labels were used).
    overwrite
        Replace existing outputs.
    train_kwargs
        More :meth:`~sslspatial.model.SpatialPretrainModel.train` arguments.

    Returns
    -------
    The fine-tuned model (``method="finetune"``) or ``model`` itself (probes).

    Examples
    --------
    >>> model = ss.tl.pretrain_mask(adata)  # doctest: +SKIP
    >>> ss.tl.annotate(adata, model, "cell_type")  # doctest: +SKIP
    >>> adata.obs["annotate_prediction"].head()  # doctest: +SKIP
    """
    check_choice(method, METHODS, "method")
    if expression_pcs < 0 or (expression_pcs and method == "finetune"):
        raise ValueError(
            f"expression_pcs={expression_pcs} applies to the probes only: use method='linear' or 'knn' with "
            "expression_pcs > 0, or expression_pcs=0 to fine-tune."
        )
    table = _io.get_table(data, table_key)
    check_obs_column(table, labels_key, "labels_key")
    _check_model(model, table)
    pred_key, proba_key = Key.prediction(check_key(key_added, "key_added")), f"{key_added}_probabilities"
    for where, key in ((table.obs, pred_key), (table.obsm, proba_key)):
        if key in where and not overwrite:
            raise KeyError(f"{key!r} exists already in the table: pass overwrite=True or another key_added.")
    labels = table.obs[labels_key]
    usable = labels.notna().to_numpy()
    if unlabeled_category is not None:
        usable &= (labels.astype(str) != str(unlabeled_category)).to_numpy()
    if train_indices is not None:
        allowed = np.zeros(table.n_obs, dtype=bool)
        allowed[np.asarray(train_indices)] = True
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
    if method == "finetune":
        result, proba = _finetune(
            model, codes, train_idx, classes, max_epochs, batch_size, lr, train_kwargs, warm_start=warm_start
        )
    else:
        result, proba = model, _probe(model, codes, train_idx, classes.size, method, n_neighbors, expression_pcs)
    table.obs[pred_key] = pd.Categorical(classes[proba.argmax(1)], categories=classes)
    table.obsm[proba_key] = pd.DataFrame(proba, index=table.obs_names, columns=classes)
    table.obs[f"{key_added}_train"] = usable
    return result


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


def _probe(model, codes, train_idx, n_classes, method, n_neighbors, expression_pcs=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z = model.get_latent_representation()
    if expression_pcs:
        from ._pretrain import pseudolabel_features

        layer = model.adata_manager.registry["setup_args"].get("layer")
        pcs = pseudolabel_features(model.adata, layer, expression_pcs, log1p=model.module.likelihood != "gaussian")
        z = np.concatenate([StandardScaler().fit_transform(z), StandardScaler().fit_transform(pcs)], axis=1)
    if method == "knn":
        clf = KNeighborsClassifier(n_neighbors=int(min(n_neighbors, train_idx.size)))
    else:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    clf.fit(z[train_idx], codes[train_idx])
    proba = np.zeros((z.shape[0], n_classes))
    fitted = clf.classes_ if hasattr(clf, "classes_") else clf[-1].classes_
    proba[:, fitted] = clf.predict_proba(z)
    return proba


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
    table = _io.get_table(data, table_key)
    key = Key.embedding(check_key(key_added, "key_added"))
    if key in table.obsm and not overwrite:
        raise KeyError(f"obsm[{key!r}] exists already: pass overwrite=True or another key_added.")
    if not isinstance(model, SpatialPretrainModel) or not model.is_trained_:
        raise TypeError("model must be a trained SpatialPretrainModel (from ss.tl.pretrain_*).")
    query = SpatialPretrainModel.load_query_data(table, model, layer=layer)
    query._check_data(query.adata, query.init_params_["non_kwargs"]["encoder"], query.module.likelihood)
    table.obsm[key] = query.get_latent_representation()
    return query
