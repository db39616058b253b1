"""The data side of :class:`~sslspatial.model.SpatialPretrainModel`: what it reads, which cells it visits, in what order.

Input checks (counts or finite values, the graph), the training seeds with their default batch size and epochs, the
locality order of the minibatches, and per-cell outputs computed batch by batch in that order. The model class keeps
its settings, training and derived models; these functions take the model (or its AnnData) as their first argument.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS

from .._constants import Key
from .._validate import check_counts, check_finite, check_graph, check_graph_connected, check_indices
from ..data._loaders import SubgraphDataLoader, default_batch_size, locality_order


def layer_name(manager) -> str:
    """Where the registered expression is, for messages: ``"X"`` or ``"layers['counts']"``."""
    layer = manager.registry["setup_args"].get("layer")
    return "X" if layer is None else f"layers[{layer!r}]"


def check_input(manager, adata: AnnData, encoder: str, likelihood: str) -> None:
    """Refuse values the likelihood cannot score and, for a graph encoder, a missing or broken graph."""
    x = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    where = layer_name(manager)
    if likelihood == "gaussian":
        check_finite(x, where)
    else:
        check_counts(x, where, likelihood)
    if encoder != "mlp":
        key = manager.registry["setup_args"].get("connectivity_key")
        if key is None:
            raise ValueError(
                f"encoder={encoder!r} needs a spatial graph but setup_anndata got connectivity_key=None: pass "
                "the obsp key built by `ss.pp.build_graph(data, ...)`, or use encoder='mlp'."
            )
        check_graph(adata, key)
        check_graph_connected(adata, key)


def training_seeds(n_obs: int, train_indices, validation_indices, batch_size, max_epochs):
    """Checked training and validation seeds, with the default batch size and epochs for that many training cells.

    Examples
    --------
    >>> train, val, batch_size, max_epochs = training_seeds(1000, None, None, None, None)
    >>> train.size, val.size, batch_size, max_epochs
    (1000, 0, 256, 200)
    """
    train_idx = np.arange(n_obs) if train_indices is None else check_indices(train_indices, n_obs, "train_indices")
    val_idx = (
        np.array([], dtype=np.int64)
        if validation_indices is None
        else check_indices(validation_indices, n_obs, "validation_indices")
    )
    if batch_size is None:  # the default never exceeds the training cells
        batch_size = min(default_batch_size(train_idx.size), max(train_idx.size, 1))
    if train_idx.size < batch_size:
        raise ValueError(
            f"Fewer training cells ({train_idx.size}) than batch_size={batch_size}: pass a smaller batch_size "
            f"(e.g. batch_size={max(2, train_idx.size // 4)})."
        )
    if max_epochs is None:
        max_epochs = int(np.clip(round(200_000 / train_idx.size), 1, 200))
    return train_idx, val_idx, batch_size, max_epochs


def unused(n_obs: int, *used: np.ndarray) -> np.ndarray:
    """Sorted indices in ``range(n_obs)`` found in none of ``used`` (``np.setdiff1d`` without its sort: 1 s at 1M).

    Examples
    --------
    >>> unused(5, np.array([0, 3]), np.array([1])).tolist()
    [2, 4]
    """
    taken = np.zeros(n_obs, dtype=bool)
    for indices in used:
        taken[indices] = True
    return np.flatnonzero(~taken)


class AfterStep(Callback):
    """Run the module's post-optimiser-step hook (BYOL's EMA target update) after every training batch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.module.after_optimizer_step()


def locality(adata: AnnData, manager) -> np.ndarray:
    """Locality rank of every cell (Z-order of ``obsm["spatial"]``, else reverse Cuthill-McKee of the graph)."""
    if Key.SPATIAL in adata.obsm:
        return locality_order(coordinates=np.asarray(adata.obsm[Key.SPATIAL]))
    key = manager.registry["setup_args"].get("connectivity_key")
    return locality_order(adjacency=adata.obsp[key])


def per_cell(model, adata: AnnData | None, indices, batch_size: int, compute) -> np.ndarray:
    """Apply ``compute`` (minibatch tensors -> per-seed rows) to every requested cell, rows in request order.

    The cells are visited in locality order (much smaller subgraphs per batch) and the rows put back afterwards.
    """
    adata = model._validate_anndata(adata)
    manager = model.get_anndata_manager(adata, required=True)
    indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
    order = np.arange(indices.size)
    if model.module.n_hops > 0 and indices.size > batch_size and Key.SPATIAL in adata.obsm:
        order = np.argsort(locality_order(np.asarray(adata.obsm[Key.SPATIAL])[indices]), kind="stable")
    loader = SubgraphDataLoader(
        manager,
        n_hops=model.module.n_hops,
        indices=indices[order],
        batch_size=batch_size,
        shuffle=False,
        value_check=(layer_name(manager), model.module.likelihood),
    )
    model.module.eval()
    out, done, device = None, 0, model.device  # model.device walks every parameter: once, not per tensor
    for tensors in loader:  # rows written in place: one output array in memory, however many cells
        rows = compute({k: v.to(device) for k, v in tensors.items()}).cpu().numpy()
        if out is None:
            out = np.empty((indices.size, *rows.shape[1:]), dtype=rows.dtype)
        out[order[done : done + rows.shape[0]]] = rows  # loader row i belongs to requested cell order[i]
        done += rows.shape[0]
    return out
