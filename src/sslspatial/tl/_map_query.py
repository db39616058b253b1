"""``ss.tl.map_query``: carry a labelled reference's cell types onto a query it never saw, with a mapping score.

The reference is the table the pretrained model was set up on (``model.adata``, saved with the model when
``model.save(..., save_anndata=True)``): its labelled cells train the classifier, chosen by the same spatially blocked
cross-validation as ``ss.tl.annotate(method="auto")``. When the query lacks some reference genes, the reference is
re-embedded with the same genes hidden (behind the mask token, as they are for the query) and the expression
features are built on the shared genes only, so reference and query cells are described the same way (the
``"residuals"`` candidate's Pearson residuals use, for both, the reference's gene fractions on the shared genes).
Nothing is trained in the encoder: its weights are the reference model's. With ``adapt=True`` the query gets its
own per-gene input adapter (scArches-style surgery), fitted on the query's self-supervised loss without labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _logging
from .._constants import Key, check_key, user_columns
from .._provenance import run_record
from .._types import DataLike
from .._validate import (
    check_absent,
    check_choice,
    check_numbers,
    check_obs_column,
    check_unique_var_names,
    resolve_seed,
    trainer_options,
)
from ..io import _access as _io
from ..model import SpatialPretrainModel
from ..model._adapt import adaptation_device
from ..model._reference import check_query_panel
from . import _annotate_select as select

#: Candidates of ``map_query`` tried by default. ``"residuals"`` is opt-in: on the tuning direction of
#: ``benchmarks/reference_mapping.py`` (STARmap BZ5 -> BZ9) cross-validation on the reference picked it in 4 of 16
#: runs, all on half panels, and it lowered query macro-F1 in 3 of them (mean -0.022 and -0.019 on half panels, 0 on
#: the full panel).
MAP_QUERY_CANDIDATES = ("linear", "expression", "pca")
#: Every candidate kind ``map_query`` accepts.
MAP_QUERY_KINDS = ("linear", "expression", "residuals", "pca")
#: Fewest shared genes a query may have: below it the query is refused before any computation.
MIN_SHARED_GENES = 10


def map_query(
    data: DataLike,
    model: SpatialPretrainModel,
    labels_key: str,
    *,
    layer: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    candidates: Sequence[Literal["linear", "expression", "residuals", "pca"]] = MAP_QUERY_CANDIDATES,
    n_folds: int = 3,
    ensemble: int = select.DEFAULT_ENSEMBLE,
    library_key: str | None = None,
    expression_pcs: int = 30,
    min_shared_genes: int = MIN_SHARED_GENES,
    adapt: bool = False,
    adapt_epochs: int = 50,
    adapt_kwargs: dict | None = None,
    key_added: str = "map_query",
    overwrite: bool = False,
    seed: int | None = 0,
    max_epochs: int | None = None,
    lr: float | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    train_kwargs: dict | None = None,
) -> SpatialPretrainModel:
    """Map the reference's labels onto a query section or panel, with per-cell probabilities and uncertainty.

    Parameters
    ----------
    data
        Query AnnData or SpatialData (raw values in ``X`` or ``layer``), with the same kind of spatial graph as the
        reference (``ss.pp.build_graph``) for a graph encoder. Its genes are matched to the reference by name.
    model
        A trained :class:`~sslspatial.model.SpatialPretrainModel` whose table (``model.adata``, the reference) has
        the labels in ``obs[labels_key]`` (missing values: unlabelled reference cells).
    labels_key
        Reference ``obs`` column with the cell types.
    layer
        Query layer with the expression (default ``X``).
    table_key
        Table of a SpatialData query.
    candidates
        Classifiers chosen among by cross-validation on the reference's labelled cells (as in
        :func:`~sslspatial.tl.annotate`): ``"linear"`` ([embedding, expression PCs]), ``"expression"`` (PCs alone),
        ``"residuals"`` (PCs of Pearson residuals of the shared genes' counts, :func:`~sslspatial.pp.pearson_residuals`,
        with the reference's gene fractions on those genes for both tables; skipped for a ``gaussian`` model, whose
        values are not counts; opt-in, not in the default pool: it transferred worse on the tuning split, see
        the user guide), ``"pca"`` (plain PCA + logistic regression, the baseline).
    n_folds
        Cross-validation folds (whole spatial blocks of the reference).
    ensemble
        Also score the mean of the probabilities of the ``ensemble`` best-scoring candidates, as
        :func:`~sslspatial.tl.annotate` does (kept only when its cross-validated score is the highest); ``0`` turns it
        off.
    library_key
        Reference ``obs`` column of its sections (blocks never span sections).
    expression_pcs
        Principal components of the shared genes' expression, fitted on the reference and applied to the query.
    min_shared_genes
        Refuse a query sharing fewer genes with the reference (before any computation).
    adapt
        Adapt to the query without labels before embedding it: a per-gene affine input adapter
        (:class:`~sslspatial.nn.InputAdapter`: a scale and a shift of each gene's log-expression, and a learned value
        for each reference gene the query lacks) is trained on the query's own self-supervised loss, with the
        reference encoder, heads and classifier frozen. The loss is, for ``pretrain_pseudolabel`` models, information
        maximisation over the reference's pseudo-label heads (query cells should fall confidently, and in a spread
        of proportions, into the reference's clusters) and, for ``pretrain_mask`` models, masked reconstruction with
        the reference decoder. Other objectives raise a ``TypeError``.
    adapt_epochs
        Passes over the query cells when ``adapt=True``.
    adapt_kwargs
        More adaptation settings: ``lr`` (``1e-2``), ``batch_size`` (``256``), ``penalty`` (``1.0``, weight of the
        adapter's squared distance from the identity).
    key_added
        Writes to the query ``obs[f"{key_added}_prediction"]``, ``obs[f"{key_added}_uncertainty"]`` (1 - the
        highest class probability: filter mapped cells on it), ``obsm[f"{key_added}_probabilities"]`` (a float array,
        columns in the order of ``uns[key_added]["classes"]``),
        ``obsm[f"X_{key_added}"]`` (the query embedding) and ``uns[key_added]`` (choice, CV scores, gene overlap,
        and with ``adapt=True`` the query loss before and after adaptation).
    overwrite
        Replace existing outputs (else :class:`~sslspatial.OutputExistsError`).
    seed
        Random state of the cross-validation blocks and of the adaptation (``None``: a fresh one, recorded in
        ``uns[key_added]["params"]["seed"]``).
    max_epochs, lr, train_kwargs
        The adaptation's trainer options, as in every function that trains: passes over the query cells (default
        ``adapt_epochs``), Adam learning rate (default ``1e-2``) and more settings (``batch_size``, ``penalty``, as in
        ``adapt_kwargs``, which they override). Used only with ``adapt=True``.
    accelerator, devices
        Where the adaptation runs: ``"auto"`` leaves the query model on the reference model's device; ``"cpu"``, or
        ``"gpu"`` / ``"cuda"`` with ``devices`` (an index, or a one-element list), moves it there.

    Returns
    -------
    The query model (the reference's weights on the aligned query table, plus the fitted adapter with
    ``adapt=True``), e.g. for ``ss.tl.domains`` on its embedding.

    Examples
    --------
    >>> model = ss.tl.pretrain_pseudolabel(reference)  # doctest: +SKIP
    >>> model.save("reference_model", save_anndata=True)  # doctest: +SKIP
    >>> loaded = ss.model.SpatialPretrainModel.load("reference_model")  # doctest: +SKIP
    >>> ss.tl.map_query(query, loaded, "cell_type")  # doctest: +SKIP
    >>> query.obs[["map_query_prediction", "map_query_uncertainty"]].head()  # doctest: +SKIP
    >>> ss.tl.map_query(query, loaded, "cell_type", adapt=True, overwrite=True)  # doctest: +SKIP
    >>> query.uns["map_query"]["adaptation"]  # doctest: +SKIP
    """
    params = {k: v for k, v in locals().items() if k not in ("data", "model")}
    check_numbers({k: v for k, v in params.items() if not (k == "lr" and v is None)})  # None: its own default
    seed = params["seed"] = resolve_seed(seed)  # None: a fresh seed, recorded in uns[key_added]["params"]
    if not isinstance(model, SpatialPretrainModel) or not model.is_trained_:
        raise TypeError("model must be a trained SpatialPretrainModel (from ss.tl.pretrain_*).")
    for kind in candidates:
        check_choice(kind, MAP_QUERY_KINDS, "candidates")
    if not len(candidates):
        raise ValueError(f"candidates is empty: pass at least one of {MAP_QUERY_KINDS}.")
    select.check_ensemble(ensemble)
    trainer = trainer_options("map_query", accelerator, devices, train_kwargs)
    trainer.pop("accelerator"), trainer.pop("devices")
    adapt_kwargs = {**(adapt_kwargs or {}), **({"lr": lr} if lr is not None else {}), **trainer}
    adapt_options = _adapt_options(model, adapt, adapt_epochs if max_epochs is None else max_epochs, adapt_kwargs)
    device = adaptation_device(accelerator, devices)
    query = _io.get_table(data, table_key)
    key = check_key(key_added, "key_added")
    outputs = ((query.obs, "obs", f"{key}_prediction"), (query.obsm, "obsm", f"{key}_probabilities"))
    for where, name, out_key in (*outputs, (query.obsm, "obsm", Key.embedding(key))):
        check_absent(out_key in where and not overwrite, f"{name}[{out_key!r}]")
    reference = model.adata
    check_unique_var_names(query, "the query table")
    if labels_key not in reference.obs:
        raise KeyError(
            f"The reference table of the model has no obs[{labels_key!r}] (columns: {user_columns(reference.obs)}): "
            "map_query reads the labels from model.adata. Add them there, and share the model with "
            "model.save(folder, save_anndata=True) so the labels travel with it."
        )
    if library_key is not None:
        check_obs_column(reference, library_key, "library_key")
    shared = reference.var_names.intersection(query.var_names)
    if shared.size:  # no overlap at all: load_query_data's error names the likely cause
        check_query_panel(reference.var_names, query.var_names, min_shared_genes)
    if layer is not None and layer not in query.layers:
        raise KeyError(f"layer={layer!r} is not a layer of the query (layers: {list(query.layers)}).")
    codes, classes, labelled = _reference_codes(reference, labels_key)

    query_model = SpatialPretrainModel.load_query_data(query, model, layer=layer, input_adapter=adapt)
    encoder = query_model.init_params_["non_kwargs"]["encoder"]
    query_model._check_data(query_model.adata, encoder, query_model.module.likelihood)
    adaptation = None
    if adapt:
        from ..model._adapt import adapt_query

        if device is not None:
            query_model.to_device(device)
        adaptation = adapt_query(query_model, **adapt_options, seed=seed)
        _logging.info(
            f"map_query: adapted to the query, loss {adaptation['loss_before']:.4f} -> {adaptation['loss_after']:.4f}"
        )
    present = query_model.module.gene_present.cpu().numpy().astype(bool)
    reference_model = model if present.all() else _masked_reference(model, present)
    z_ref, z_query = reference_model.get_latent_representation(), query_model.get_latent_representation()
    ref_layer = model.adata_manager.registry["setup_args"].get("layer")
    x_ref = _matrix(reference, ref_layer, shared)
    x_query = _matrix(query, layer, shared)
    log1p = model.module.likelihood != "gaussian"
    if not log1p:  # values already normalised: no counts to take residuals of
        candidates = [kind for kind in candidates if kind != "residuals"] or ["pca"]
    features = _features(z_ref, z_query, x_ref, x_query, expression_pcs, log1p, residuals="residuals" in candidates)

    n_ref = reference.n_obs
    all_codes = np.concatenate([codes, np.full(query.n_obs, -1, dtype=np.int64)])
    sections = None if library_key is None else reference.obs[library_key].astype(str).to_numpy()
    folds = select.blocked_folds(reference.obsm[Key.SPATIAL], codes, labelled, sections, n_folds=n_folds, seed=seed)

    def fit_predict(cand, fit_idx, predict_idx=None):
        proba = select.fit_logreg(
            features[cand.kind], all_codes, fit_idx, classes.size, cand.C, cand.self_training, cand.kind != "pca"
        )
        return proba if predict_idx is None else proba[predict_idx]

    grid = select.candidate_grid(candidates)
    selection = select.cross_validate(fit_predict, grid, codes, labelled, folds, ensemble=ensemble)
    if selection.members:  # the ensemble won: refit each member on every labelled cell and average
        members = [c for c in grid if c.name in selection.members]
        proba = np.mean([fit_predict(c, labelled)[n_ref:] for c in members], axis=0)
        choice = {"kind": "ensemble", "C": float("nan"), "self_training": False}
    else:
        chosen = next(c for c in grid if c.name == selection.chosen)
        proba = fit_predict(chosen, labelled)[n_ref:]
        choice = {"kind": chosen.kind, "C": chosen.C, "self_training": chosen.self_training}

    query.obs[f"{key}_prediction"] = pd.Categorical(classes[proba.argmax(1)], categories=classes)
    query.obs[f"{key}_uncertainty"] = 1.0 - proba.max(1)
    # an array with the class order in uns[key]["classes"]: class names such as "eL2/3" cannot be zarr keys
    query.obsm[f"{key}_probabilities"] = np.asarray(proba, dtype=np.float64)
    query.obsm[Key.embedding(key)] = z_query
    query.uns[key] = {
        **run_record("map_query", params),
        **selection.to_uns(),
        **choice,
        "classes": classes.tolist(),
        "n_reference_labelled": int(labelled.size),
        "n_reference_genes": int(reference.n_vars),
        "n_shared_genes": int(shared.size),
    }
    if adaptation is not None:
        query.uns[key]["adaptation"] = adaptation
    return query_model


def _adapt_options(model, adapt: bool, epochs: int, kwargs: dict | None) -> dict:
    """Checked adaptation settings (before any computation)."""
    from ..model._adapt import ADAPTABLE

    options = {"max_epochs": int(epochs), "lr": 1e-2, "batch_size": 256, "penalty": 1.0}
    unknown = set(kwargs or {}) - {"lr", "batch_size", "penalty"}
    if unknown:
        raise ValueError(
            f"Unknown adapt_kwargs / train_kwargs {sorted(unknown)}: the adaptation's options are 'lr', 'batch_size', "
            "'penalty' (it runs its own loop, without Lightning's trainer options)."
        )
    options.update(kwargs or {})
    if adapt and model.module.objective_name not in ADAPTABLE:
        raise TypeError(
            f"adapt=True needs a query loss without labels, which objective={model.module.objective_name!r} does not "
            "have: use a model from ss.tl.pretrain_pseudolabel or ss.tl.pretrain_mask, or adapt=False."
        )
    if adapt and epochs < 1:
        raise ValueError(f"adapt_epochs must be at least 1, got {epochs}.")
    return options


def _reference_codes(reference, labels_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer class of every reference cell (-1 unlabelled), the classes, and the labelled rows."""
    labels = reference.obs[labels_key]
    usable = labels.notna().to_numpy()
    labelled = np.flatnonzero(usable)
    classes = np.array(sorted(pd.unique(labels.iloc[labelled].astype(str))))
    if classes.size < 2:
        raise ValueError(
            f"The reference has {classes.size} labelled class(es) in obs[{labels_key!r}]: mapping needs at least two."
        )
    codes = np.full(reference.n_obs, -1, dtype=np.int64)
    codes[labelled] = np.searchsorted(classes, labels.iloc[labelled].astype(str).to_numpy())
    return codes, classes, labelled


def _masked_reference(model: SpatialPretrainModel, present: np.ndarray) -> SpatialPretrainModel:
    """The reference model with the genes the query lacks hidden, so both tables are embedded from the same genes."""
    # Loading another copy of a saved model re-registers its table's id with that copy's manager: point it back here.
    type(model).register_manager(model.adata_manager)
    masked = model.derive(adata=model.adata, gene_present=present.tolist())
    masked.module.load_state_dict(model.module.state_dict())
    masked.is_trained_ = True
    return masked


def _matrix(table, layer: str | None, genes: pd.Index) -> np.ndarray:
    x = table.X if layer is None else table.layers[layer]
    x = x[:, table.var_names.get_indexer(genes)]
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=float)


def _features(
    z_ref, z_query, x_ref, x_query, n_pcs: int, log1p: bool, residuals: bool = False
) -> dict[str, np.ndarray]:
    """Candidate features of reference and query rows (stacked), every transform fitted on the reference only.

    ``"expression"``: PCs of the gene-standardised log-normalised shared genes; ``"linear"``: [embedding, those PCs],
    each block standardised; ``"pca"``: PCs of the unscaled log-normalised shared genes (the plain baseline);
    ``"residuals"`` (with ``residuals=True``): standardised PCs of :func:`residual_matrices`.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from ..pp._normalize import log_normalize

    ref, qry = (log_normalize(x_ref), log_normalize(x_query)) if log1p else (x_ref, x_query)
    n_pcs = int(min(n_pcs, ref.shape[1] - 1, ref.shape[0] - 1))
    plain = PCA(n_pcs, random_state=0).fit(ref)
    mean, sd = ref.mean(0), ref.std(0)
    sd = np.where(sd > 0, sd, 1.0)

    def scale(x):
        return np.clip((x - mean) / sd, -10, 10)

    scaled = PCA(n_pcs, random_state=0).fit(scale(ref))
    pcs = np.concatenate([scaled.transform(scale(ref)), scaled.transform(scale(qry))])
    pcs = StandardScaler().fit(pcs[: len(ref)]).transform(pcs)
    z = np.concatenate([z_ref, z_query])
    z = StandardScaler().fit(z[: len(ref)]).transform(z)
    out = {
        "expression": pcs,
        "linear": np.concatenate([z, pcs], axis=1),
        "pca": np.concatenate([plain.transform(ref), plain.transform(qry)]),
    }
    if residuals:
        r_ref, r_query = residual_matrices(x_ref, x_query)
        fitted = PCA(n_pcs, random_state=0).fit(r_ref)
        pcs = np.concatenate([fitted.transform(r_ref), fitted.transform(r_query)])
        out["residuals"] = StandardScaler().fit(pcs[: len(ref)]).transform(pcs)
    return out


def residual_matrices(x_ref: np.ndarray, x_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson residuals of reference and query counts (the same genes, in the same order), both from the reference.

    Each gene's expected share of a cell's counts is the reference's (its total over the reference cells divided by
    the reference total, on these genes only: for a half-panel query, the genes it shares), and the clip is the
    reference's (``sqrt(n_reference)``), so a query cell is scaled as a reference cell with the same counts would be;
    the library of each cell is its own sum over these genes. The reference counts travel with a saved model
    (``model.save(..., save_anndata=True)``), so a reloaded reference gives the same residuals.

    Examples
    --------
    >>> r_ref, r_query = residual_matrices(np.array([[1.0, 3.0], [3.0, 1.0]]), np.array([[4.0, 0.0]]))
    >>> r_query.shape
    (1, 2)
    """
    from ..pp._normalize import pearson_residuals

    total = x_ref.sum(0)
    fraction = total / max(float(total.sum()), 1e-12)
    clip = float(np.sqrt(x_ref.shape[0]))
    return (
        pearson_residuals(x_ref, clip=clip, gene_fraction=fraction),
        pearson_residuals(x_query, clip=clip, gene_fraction=fraction),
    )
