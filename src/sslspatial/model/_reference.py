"""A shared reference model: what label mapping needs travels in one directory, and is checked when it is loaded.

``model.save(folder, save_anndata=True)`` already writes everything ``ss.tl.map_query`` reads: the weights and the
model's settings (``model.pt``: ``init_params_``, the gene panel as ``var_names``, the ``setup_anndata`` arguments)
and the reference table (``adata.h5ad``: the cells, their counts and graph, every label column with its categories,
domains from ``ss.tl.domains``, and the pretraining record in ``uns``). The classifier is not stored but refitted by
``map_query`` from that table: it depends on the query (features are built on the genes the query shares with the
reference, and the self-training candidates use the query's cells as unlabelled cells), and the refit is
deterministic, so a saved and reloaded reference maps a query to the same probabilities. The same holds for every
transform fitted on the reference: the expression PCA and scalers, and the gene fractions of the ``"residuals"``
candidate's Pearson residuals (each shared gene's share of the reference counts, taken over the genes the query
shares) are recomputed from the saved reference counts, not from the query.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _logging

#: Fewest shared genes a query may have (same threshold as ``ss.tl.map_query``).
MIN_SHARED_GENES = 10


def panel_overlap(reference_genes, query_genes) -> dict:
    """How a query panel meets the reference panel.

    Examples
    --------
    >>> panel_overlap(["a", "b", "c"], ["b", "c", "d"])
    {'n_reference': 3, 'n_query': 3, 'n_shared': 2, 'missing_from_query': ['a'], 'not_in_reference': ['d']}
    """
    import pandas as pd

    ref, qry = pd.Index(reference_genes), pd.Index(query_genes)
    shared = ref.intersection(qry)
    return {
        "n_reference": int(ref.size),
        "n_query": int(qry.size),
        "n_shared": int(shared.size),
        "missing_from_query": [str(g) for g in ref.difference(qry)],
        "not_in_reference": [str(g) for g in qry.difference(ref)],
    }


def check_query_panel(reference_genes, query_genes, min_shared_genes: int = MIN_SHARED_GENES) -> dict:
    """Say how many genes the query shares with the reference; refuse too small an overlap (a ``ValueError``)."""
    overlap = panel_overlap(reference_genes, query_genes)
    n, n_ref = overlap["n_shared"], overlap["n_reference"]
    if n < min_shared_genes:
        raise ValueError(
            f"The query shares {n} of the reference's {n_ref} genes, fewer than min_shared_genes={min_shared_genes}: "
            "too few to map (check the species and the identifier type, e.g. symbols vs Ensembl ids, or lower "
            "min_shared_genes to try anyway)."
        )
    message = (
        f"The query shares {n} of the reference's {n_ref} genes; {n_ref - n} reference genes are missing from it "
        f"(masked when mapping) and {len(overlap['not_in_reference'])} query genes are not in the reference (ignored)."
    )
    (_logging.warning if n < n_ref / 2 else _logging.info)(message)
    return overlap


def load_reference(
    cls,
    dir_path,
    query=None,
    *,
    labels_key: str | None = None,
    min_shared_genes: int = MIN_SHARED_GENES,
    prefix: str | None = None,
    accelerator: str = "auto",
    device: int | str = "auto",
):
    """Load a reference saved with ``model.save(dir_path, save_anndata=True)`` and check it can map ``query``.

    Checks, before anything is computed: the directory holds the reference table (else a ``ValueError`` naming
    ``save_anndata=True``); ``labels_key`` is a column of it (else a ``KeyError`` listing the columns that could be);
    the query's panel shares at least ``min_shared_genes`` genes with the reference (the overlap is logged: shared,
    missing, extra genes; a warning when the query lacks more than half of the reference's genes).
    """
    path = Path(dir_path)
    name = f"{prefix or ''}adata.h5ad"
    if not (path / f"{prefix or ''}model.pt").exists():
        raise FileNotFoundError(f"{path} holds no saved model ({prefix or ''}model.pt): pass the folder of model.save.")
    if not (path / name).exists():
        raise ValueError(
            f"{path} holds the model but not its reference table ({name}): it was saved with save_anndata=False, so "
            "the reference cells and labels that label mapping learns from are not there. Save the reference with "
            "model.save(folder, save_anndata=True)."
        )
    if query is not None:
        from scvi.model.base._save_load import _load_saved_files

        _, var_names, _, _ = _load_saved_files(str(path), False, prefix=prefix, map_location="cpu")
        check_query_panel(var_names, query.var_names, min_shared_genes)
    model = cls.load(str(path), prefix=prefix, accelerator=accelerator, device=device)
    if labels_key is not None and labels_key not in model.adata.obs:
        obs = model.adata.obs
        usable = [c for c in obs.columns if str(obs[c].dtype) in ("category", "object") and not c.startswith("_")]
        raise KeyError(
            f"The reference saved in {path} has no obs[{labels_key!r}] to map (label columns it has: {usable}). "
            "Add the labels to model.adata.obs before model.save(folder, save_anndata=True)."
        )
    return model


def query_model(cls, adata, reference, layer: str | None = None, input_adapter: bool = False):
    """:meth:`SpatialPretrainModel.load_query_data <sslspatial.model.SpatialPretrainModel.load_query_data>`.

    The query's expression aligned to the reference panel (missing genes: zero columns, flagged absent), set up like
    the reference, with the reference's weights (and an identity input adapter when asked for).
    """
    ref_genes = reference.adata.var_names
    query_genes = adata.var_names
    position = ref_genes.get_indexer(query_genes)
    keep = position >= 0
    if not keep.any():
        raise ValueError(
            f"No gene overlap between the query ({', '.join(map(str, query_genes[:5]))}, ...) and the reference "
            f"panel ({', '.join(map(str, ref_genes[:5]))}, ...): transfer needs genes with the same names "
            "(check the species and the identifier type, e.g. symbols vs Ensembl ids)."
        )
    x = adata.X if layer is None else adata.layers[layer]
    x = sp.csr_matrix(x)[:, np.flatnonzero(keep)].tocoo()
    aligned_x = sp.csr_matrix(
        (x.data.astype(np.float32), (x.row, position[keep][x.col])), shape=(adata.n_obs, ref_genes.size)
    )
    aligned = AnnData(aligned_x, obs=adata.obs.copy(), obsm=dict(adata.obsm), obsp=dict(adata.obsp))
    aligned.var_names = ref_genes.copy()
    setup = reference.adata_manager.registry["setup_args"]
    cls.setup_anndata(aligned, layer=None, connectivity_key=setup.get("connectivity_key"))
    present = np.zeros(ref_genes.size, dtype=bool)
    present[position[keep]] = True
    overrides = {"input_adapter": True} if input_adapter else {}
    model = reference.derive(adata=aligned, gene_present=present.tolist(), **overrides)
    state = reference.module.state_dict()
    if input_adapter:  # the adapter starts as the identity; everything else is the reference's
        state = {k: v for k, v in state.items() if not k.startswith("input_adapter.")}
        state.update({k: v for k, v in model.module.state_dict().items() if k.startswith("input_adapter.")})
    model.module.load_state_dict(state)
    model.is_trained_ = True
    return model


def derived_model(source, adata=None, gene_present=None, overrides: dict | None = None):
    """:meth:`SpatialPretrainModel.derive <sslspatial.model.SpatialPretrainModel.derive>`, on ``source``.

    A new model with the encoder settings and weights of ``source`` (every weight when the objective and its settings
    are the same).
    """
    params = dict(source.init_params_["non_kwargs"])
    params.update(overrides or {})
    if gene_present is not None:
        params["gene_present"] = gene_present
    model = type(source)(source.adata if adata is None else adata, **params)
    state = {k: v for k, v in source.module.state_dict().items() if k.startswith(("encoder.", "mask_token"))}
    if params.get("objective") == source.init_params_["non_kwargs"]["objective"] and params.get(
        "objective_kwargs"
    ) == source.init_params_["non_kwargs"].get("objective_kwargs"):
        state = source.module.state_dict()
    model.module.load_state_dict(state, strict=False)
    return model
