"""User functions for self-supervised pretraining.

``pretrain_mask``, ``pretrain_pseudolabel`` (and ``pretrain_contrastive`` in :mod:`._pretrain_contrastive`, on the
same harness: ``_prepare`` and ``_train_and_write``). Each validates its input before any training,
trains a :class:`~sslspatial.model.SpatialPretrainModel`, writes the embedding to ``obsm["X_<key_added>"]`` and returns the
model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from .._constants import Key, check_key
from .._docs import inject_docs
from .._provenance import run_record, seed_everything
from .._types import DataLike
from .._validate import (
    check_absent,
    check_choice,
    check_numbers,
    check_obs_column,
    check_unique_var_names,
    trainer_options,
)
from ..io import _access as _io
from ..model import SpatialPretrainModel
from ..nn._graph_encoders import Encoder
from ..nn._likelihoods import Likelihood, is_count
from ..objectives import kmeans_pseudolabels
from ..objectives._masking import Strategy
from ._features import center_per_section, pseudolabel_features, smooth_features

#: ``pretrain_pseudolabel``'s pseudo-label clustering: per section (``"each"``) or across sections (``"joint"``).
DEFAULT_CLUSTER_SECTIONS = "each"
#: ``pretrain_pseudolabel``'s rounds of neighbourhood averaging appended to the clustered PCs (0: ``niche=1`` won on
#: the her2st tuning sections but lowered the STARmap cell-typing tuning split; see the ``niche`` parameter).
DEFAULT_NICHE = 0
#: ``pretrain_pseudolabel``'s share of input entries hidden in training (see its docstring for how it was chosen).
DEFAULT_GENE_DROPOUT = 0.5

Devices = int | str | list[int]


def _prepare(data, table_key, key_added, overwrite, layer, batch_size, encoder, connectivity_key):
    """Common checks (before any work) and model setup; returns the table."""
    table = _io.get_table(data, table_key)
    key = Key.embedding(check_key(key_added, "key_added"))
    check_absent(key in table.obsm and not overwrite, f"obsm[{key!r}]")
    if layer is not None and layer not in table.layers:
        raise KeyError(f"layer={layer!r} is not a layer of the table (layers: {list(table.layers)}).")
    if batch_size is not None and table.n_obs < batch_size:
        raise ValueError(
            f"The table has fewer cells ({table.n_obs}) than batch_size={batch_size}: pass a smaller batch_size."
        )
    if table.is_view:
        raise ValueError("The table is a view of another AnnData: pass a real object (`adata = adata.copy()`).")
    check_unique_var_names(table)
    SpatialPretrainModel.setup_anndata(
        table, layer=layer, connectivity_key=None if encoder == "mlp" else connectivity_key
    )
    return table


def _train_and_write(table, function, params, objective, objective_kwargs, targets):
    """Seed, build the model from the run's encoder settings, train, write the embedding and ``uns[key_added]``.

    ``params`` are the function's arguments (``dict(locals())``, taken first thing); the record holds every one of
    them but the inputs (function, parameters, version).
    """
    key_added = params["key_added"]
    seed_everything(params["seed"])
    model = SpatialPretrainModel(
        table,
        encoder=params["encoder"],
        n_latent=params["n_latent"],
        n_hidden=params["n_hidden"],
        n_layers=params["n_layers"],
        dropout=params["dropout"],
        likelihood=params["likelihood"],
        objective=objective,
        objective_kwargs=objective_kwargs,
        **(params["model_kwargs"] or {}),
    )
    model.train(
        max_epochs=params["max_epochs"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        targets=targets,
        **trainer_options(function, params["accelerator"], params["devices"], params["train_kwargs"]),
    )
    table.obsm[Key.embedding(key_added)] = model.get_latent_representation()
    table.uns[key_added] = run_record(function, params)
    return model


@inject_docs
def pretrain_mask(
    data: DataLike,
    *,
    mask: Strategy = "cells",
    fraction: float | None = None,
    programmes: dict[str, list[str]] | None = None,
    celltype_key: str | None = None,
    encoder: Encoder = "gat",
    likelihood: Likelihood = "nb",
    layer: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    connectivity_key: str = Key.CONNECTIVITIES,
    n_latent: int = 32,
    n_hidden: int = 128,
    n_layers: int = 2,
    dropout: float = 0.1,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    key_added: str = "pretrain_mask",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: Devices = "auto",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> SpatialPretrainModel:
    """Masked-reconstruction pretraining of a graph encoder (SpatialSSL; masking objectives of Richter et al. 2024).

    A fraction of the input is hidden behind a learned mask token and reconstructed from the cell's spatial
    neighbourhood; the loss (negative log-likelihood) is computed on the masked targets only.

    Parameters
    ----------
    data
        AnnData or SpatialData (table ``table_key``) with a spatial graph from ``ss.pp.build_graph`` (unless
        ``encoder="mlp"``). Several sections in one table are fine (the graph never connects them).
    mask
        ``"cells"`` (all genes of ``fraction`` = 0.2 of the cells), ``"entries"`` (0.5 of the entries),
        ``"programmes"`` (0.5 of the gene ``programmes`` per cell), ``"celltype"`` (every cell of one type of
        ``celltype_key`` per batch).
    fraction
        Masking rate (default per ``mask`` as above).
    programmes
        Gene programmes ``{name: [gene, ...]}`` for ``mask="programmes"`` (genes absent from the data are ignored).
    celltype_key
        obs column of cell types for ``mask="celltype"``.
    encoder
        ``"gat"``, ``"gcn"``, ``"sage"``, ``"transformer"`` or ``"mlp"``.
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` on raw counts, or ``"gaussian"`` on log-normalised values.
    %(layer)s
    %(table_key)s
    connectivity_key
        obsp key of the graph.
    n_latent, n_hidden, n_layers, dropout
        Encoder size.
    max_epochs, batch_size, lr
        Training settings (see :meth:`~sslspatial.model.SpatialPretrainModel.train`); ``batch_size=None`` picks 256,
        or 1,024 from 100,000 cells on (:func:`~sslspatial.data.default_batch_size`).
    key_added
        The embedding goes to ``obsm[f"X_{key_added}"]``.
    overwrite
        Replace an existing embedding (else :class:`~sslspatial.OutputExistsError`).
    %(seed)s
    %(accelerator_devices)s
    model_kwargs
        More :class:`~sslspatial.model.SpatialPretrainModel` arguments (``norm``, ``heads``, ``target_sum``).
    train_kwargs
        More :meth:`~sslspatial.model.SpatialPretrainModel.train` arguments (e.g. ``strategy="ddp"``,
        ``num_nodes=2``, ``enable_progress_bar=False``).

    Returns
    -------
    The trained model.

    Notes
    -----
    ``uns[key_added]`` records the function, its parameters and the package version.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000)  # doctest: +SKIP
    >>> ss.pp.build_graph(sdata, method="radius", radius=30.0)  # doctest: +SKIP
    >>> model = ss.tl.pretrain_mask(sdata, max_epochs=5)  # doctest: +SKIP
    >>> sdata.tables["table"].obsm["X_pretrain_mask"].shape  # doctest: +SKIP
    (1000, 32)
    """
    params = dict(locals())
    check_numbers(params)  # sizes, rates, lr, seed: before any work
    from ..objectives import STRATEGIES

    check_choice(mask, STRATEGIES, "mask")
    table = _io.get_table(data, table_key)
    objective_kwargs: dict = {"strategy": mask, "fraction": fraction}
    targets = None
    if mask == "programmes":
        if not programmes:
            raise ValueError("mask='programmes' needs programmes={'name': ['gene', ...], ...}.")
        index = table.var_names
        lists = [sorted(set(index.get_indexer(list(genes))) - {-1}) for genes in programmes.values()]
        lists = [[int(i) for i in genes] for genes in lists if genes]
        if not lists:
            raise ValueError("None of the programmes' genes are in var_names: check the gene identifiers.")
        objective_kwargs["programmes"] = lists
    if mask == "celltype":
        if celltype_key is None:
            raise ValueError("mask='celltype' needs celltype_key= (an obs column of cell types).")
        check_obs_column(table, celltype_key, "celltype_key")
        targets = {"celltype": pd.Categorical(table.obs[celltype_key]).codes.astype(np.int64)}
    table = _prepare(data, table_key, key_added, overwrite, layer, batch_size, encoder, connectivity_key)
    return _train_and_write(table, "pretrain_mask", params, "mask", objective_kwargs, targets)


def pretrain_pseudolabel(
    data: DataLike,
    *,
    library_key: str | None = None,
    n_pcs: int = 30,
    gene_dropout: float = DEFAULT_GENE_DROPOUT,
    cluster_sections: Literal["each", "joint"] = DEFAULT_CLUSTER_SECTIONS,
    niche: int = DEFAULT_NICHE,
    encoder: Encoder = "gat",
    likelihood: Likelihood = "nb",
    layer: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    connectivity_key: str = Key.CONNECTIVITIES,
    n_latent: int = 32,
    n_hidden: int = 128,
    n_layers: int = 2,
    dropout: float = 0.1,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    key_added: str = "pretrain_pseudolabel",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: Devices = "auto",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> SpatialPretrainModel:
    """scPretrain-style pretraining on k-means pseudo-labels.

    scPretrain-style pretraining: predict k-means pseudo-labels at three resolutions per section (``K = n/100``,
    ``n/50``, ``n/200 + 1``) with one head each (cross-entropy on raw logits).

    Parameters
    ----------
    data, encoder, layer, table_key, connectivity_key, n_latent, n_hidden, n_layers, dropout
        As in :func:`pretrain_mask`.
    likelihood
        Only says how the expression is read, since this objective has no reconstruction term: a count likelihood
        (``"nb"``, ``"zinb"``, ``"poisson"``) means raw counts, log-normalised for the encoder and for the clustered
        PCs; ``"gaussian"`` means values already normalised, used as they are. Any count likelihood gives the same
        model.
    library_key
        obs column of sections / datasets, each clustered separately (default: ``"section"`` when present).
    n_pcs
        PCA components of log1p-normalised expression that are clustered.
    cluster_sections
        ``"each"``: k-means within each section (a head's clusters are restricted to the cell's section);
        ``"joint"``: the PCs are centred per section (a label-free alignment of sections or patients) and all cells
        are clustered together, so one cluster spans sections and the embedding must place alike cells of different
        sections alike.
    niche
        Rounds of averaging of the PCs over each cell's closed spatial neighbourhood appended to the clustered
        features (``0``: the cell's own PCs only): pseudo-labels of cell-plus-niche states, so the embedding encodes
        the tissue context that domains are made of. Default ``0``. On the her2st tuning sections of
        ``benchmarks/her2st_regions.py`` (B1, C1, D1, leave one tuning section out, 33 sections pretrained) ``1``
        raised region annotation mean macro-F1 to 0.292 / 0.335 (10% / all labels) from 0.283 / 0.283, but on the
        STARmap cell-typing tuning split (``benchmarks/celltyping.py --quick``, BZ5 -> BZ9, 10% labels) it lowered
        the default pipeline from 0.561 to 0.512 (every label draw lower): use ``niche=1`` for spot data annotated
        with tissue regions, not for cell types. Ignored when the table has no
        spatial graph (``encoder="mlp"`` without one).
    gene_dropout
        During training, hide each input entry (a gene of a cell or of a neighbour) behind the mask token with this
        probability, so that the pseudo-labels, clustered on the full panel, must be predicted from part of it: an
        encoder robust to missing genes, for reference models that will map queries with other panels
        (:func:`~sslspatial.tl.map_query`). Default ``0.5``, chosen for reference mapping: on its tuning split
        (``benchmarks/reference_mapping.py``, STARmap BZ5 -> BZ9, row ``map_query (no gene dropout)``) 0.5 beats 0 by
        0.012 to 0.037 macro-F1 in all four settings. For cell typing it is not supported: in
        ``benchmarks/celltyping.py`` (row ``tuning: gene_dropout=0``) 0 scores higher at 10% and 100% labels
        (within the draw spread) and lower at 1%. Over the seven tuning settings of both tasks (the decision rule of
        ``benchmarks/README.md``) 0 loses by 0.012 on average, so 0.5 stays. ``0`` trains on the
        whole panel.
    max_epochs, batch_size, lr, key_added, overwrite, seed, accelerator, devices, model_kwargs, train_kwargs
        As in :func:`pretrain_mask`.

    Returns
    -------
    The trained model.

    Examples
    --------
    >>> model = ss.tl.pretrain_pseudolabel(adata, library_key="section", max_epochs=10)  # doctest: +SKIP
    """
    params = dict(locals())
    check_numbers(params)  # sizes, rates, lr, seed: before any work
    table = _io.get_table(data, table_key)
    if library_key is not None:
        check_obs_column(table, library_key, "library_key")
    key = library_key if library_key is not None else (Key.SECTION if Key.SECTION in table.obs else None)
    table = _prepare(data, table_key, key_added, overwrite, layer, batch_size, encoder, connectivity_key)
    check_choice(cluster_sections, ("each", "joint"), "cluster_sections")
    sections = None if key is None else np.asarray(table.obs[key]).astype(str)
    features = pseudolabel_features(table, layer, n_pcs, log1p=is_count(likelihood))
    if niche and connectivity_key in table.obsp:  # no graph (encoder="mlp" without one): the own PCs only
        context = smooth_features(table.obsp[connectivity_key], features, int(niche))
        features = np.hstack([features, context])
    if cluster_sections == "joint":
        if sections is not None:
            features = center_per_section(features, sections)
        targets, sizes = kmeans_pseudolabels(features, None)
    else:
        targets, sizes = kmeans_pseudolabels(features, sections)
    return _train_and_write(
        table,
        "pretrain_pseudolabel",
        params,
        "pseudolabel",
        {"sizes": sizes, "gene_dropout": float(gene_dropout)},
        {"pseudolabels": targets},
    )
