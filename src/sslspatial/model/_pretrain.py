"""scvi-tools model for self-supervised pretraining on spatial graphs (AnnData plumbing, train, save / load, get_*)."""

from __future__ import annotations

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from .._constants import Key
from .._validate import check_choice, check_numbers
from ..data._loaders import SubgraphDataLoader, SubgraphDataSplitter
from ..module._pretrain import SpatialPretrainModule
from ..nn import ENCODERS
from ..objectives import LIKELIHOODS, OBJECTIVES
from . import _reference
from ._console import ConsoleMixin
from ._plan import TrainingPlan
from ._pretrain_data import AfterStep, check_input, layer_name, locality, per_cell, training_seeds, unused


class SpatialPretrainModel(ConsoleMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Self-supervised pretraining of a graph (or MLP) encoder of cells on a spatial neighbour graph.

    Minibatches are seed cells plus their closed k-hop neighbourhood, cut from ``obsp[connectivity_key]`` by the
    data loader; losses and latents are per seed, so ``get_latent_representation`` of a subset equals the rows of
    the full run. Objectives: masked reconstruction (``"mask"``: cells, entries, gene programmes or a cell type, scored
    on masked targets only), ``"barlow"`` (Barlow Twins), ``"byol"`` (EMA target), ``"pseudolabel"`` (k-means
    multi-task, scPretrain) and ``"classify"`` (supervised head, used for fine-tuning).

    Parameters
    ----------
    adata
        AnnData set up with :meth:`setup_anndata`.
    encoder
        ``"gat"``, ``"gcn"``, ``"sage"``, ``"transformer"`` or ``"mlp"`` (no graph).
    n_latent
        Dimension of the embedding.
    n_hidden
        Width of the hidden layers (divisible by ``heads`` for ``"gat"`` / ``"transformer"``).
    n_layers
        Message-passing layers, i.e. hops of neighbourhood each cell's embedding sees (dense layers for ``"mlp"``).
    dropout
        Dropout rate after every encoder block.
    norm
        ``"layer"`` (per cell, so the embedding of a subset equals the rows of the full run), ``"batch"`` or
        ``"none"``.
    heads
        Attention heads of the ``"gat"`` and ``"transformer"`` encoders (ignored by the others).
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` (raw counts) or ``"gaussian"`` (log-normalised values).
    objective
        ``"mask"``, ``"barlow"``, ``"byol"``, ``"pseudolabel"`` or ``"classify"``.
    objective_kwargs
        Keyword arguments of the objective (plain values, e.g. ``{"strategy": "entries", "fraction": 0.5}`` for
        ``"mask"``).
    gene_present
        Per-gene flags; ``False`` = gene missing from this data (set by :meth:`load_query_data`).
    target_sum
        Counts are scaled to this library size before ``log1p`` at the encoder input.
    input_adapter
        Put a per-gene affine :class:`~sslspatial.nn.InputAdapter` (identity until trained) in front of the encoder:
        the query-specific parameters trained by ``ss.tl.map_query(..., adapt=True)``.

    Examples
    --------
    >>> ss.pp.build_graph(adata, method="radius", radius=30.0)  # doctest: +SKIP
    >>> SpatialPretrainModel.setup_anndata(adata)  # doctest: +SKIP
    >>> model = SpatialPretrainModel(adata, encoder="gat", objective="mask")  # doctest: +SKIP
    >>> model.train(max_epochs=20)  # doctest: +SKIP
    >>> adata.obsm["X_pretrain_mask"] = model.get_latent_representation()  # doctest: +SKIP
    """

    _module_cls = SpatialPretrainModule
    _data_loader_cls = SubgraphDataLoader
    _data_splitter_cls = SubgraphDataSplitter
    _training_plan_cls = TrainingPlan

    def __init__(
        self,
        adata: AnnData,
        encoder: str = "gat",
        n_latent: int = 32,
        n_hidden: int = 128,
        n_layers: int = 2,
        dropout: float = 0.1,
        norm: str = "layer",
        heads: int = 4,
        likelihood: str = "nb",
        objective: str = "mask",
        objective_kwargs: dict | None = None,
        gene_present: list[bool] | None = None,
        target_sum: float = 1e4,
        input_adapter: bool = False,
    ):
        super().__init__(adata)
        check_choice(encoder, ENCODERS, "encoder")
        check_choice(likelihood, LIKELIHOODS, "likelihood")
        check_choice(objective, OBJECTIVES, "objective")
        kwargs = dict(objective_kwargs or {})
        if objective == "mask" and encoder == "mlp" and kwargs.get("strategy", "cells") in ("cells", "celltype"):
            raise ValueError(
                "Masking whole cells needs neighbours to reconstruct them from: use a graph encoder "
                "(encoder='gat', 'gcn', 'sage' or 'transformer') or mask='entries' / 'programmes' with encoder='mlp'."
            )
        self._check_data(self.adata, encoder, likelihood)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            encoder=encoder,
            dropout=dropout,
            norm=norm,
            heads=heads,
            likelihood=likelihood,
            objective=objective,
            objective_kwargs=kwargs,
            gene_present=gene_present,
            target_sum=target_sum,
            input_adapter=input_adapter,
        )
        self._model_summary_string = (
            f"SpatialPretrainModel: encoder={encoder} ({n_layers} layers, {n_hidden} hidden, latent {n_latent}), "
            f"objective={objective}, likelihood={likelihood}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup / checks
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        connectivity_key: str | None = Key.CONNECTIVITIES,
        **kwargs,
    ) -> None:
        """Register the expression (``layer`` or ``X``) and the spatial graph key of ``adata``.

        Parameters
        ----------
        adata
            The table (an AnnData, e.g. ``sdata.tables["table"]``).
        layer
            Layer with the expression (raw counts for a count likelihood); ``None`` uses ``X``.
        connectivity_key
            ``obsp`` key of the spatial graph (built by ``ss.pp.build_graph``); ignored by ``encoder='mlp'``.
        **kwargs
            Passed to :meth:`~scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> SpatialPretrainModel.setup_anndata(adata, layer="counts")  # doctest: +SKIP
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)]  # seeds: row positions, no column
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _check_data(self, adata: AnnData, encoder: str, likelihood: str) -> None:
        check_input(self.get_anndata_manager(adata, required=True), adata, encoder, likelihood)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        train_indices: np.ndarray | None = None,
        validation_indices: np.ndarray | None = None,
        targets: dict[str, np.ndarray] | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = False,
        batch_order: str = "spatial",
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train on minibatches of seed cells with their k-hop subgraphs.

        Parameters
        ----------
        max_epochs
            Epochs; default ``clip(200_000 / n_train, 1, 200)``.
        batch_size
            Seed cells per minibatch (the subgraph adds their neighbours). ``None``: 256, or 1,024 from 100,000
            training cells on (:func:`~sslspatial.data.default_batch_size`: the fastest per cell on 2 CPU threads
            at 1M cells, while small tables keep enough optimiser steps per epoch), at most the
            training cells.
        lr
            Learning rate of AdamW.
        weight_decay
            Weight decay of AdamW.
        train_indices
            Cells whose losses are scored (seeds) in training; default all cells. Use the
            :mod:`sslspatial.data` splits for honest evaluation.
        validation_indices
            Cells whose losses are scored for validation (early stopping); default none.
        targets
            Per-cell arrays the objective needs (``"pseudolabels"``, ``"labels"``, ``"celltype"``).
        accelerator
            Lightning accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        devices
            Lightning devices (``"auto"``, a number or a list of GPU indices). Multi-GPU training uses Lightning's DDP: ``devices=4, strategy="ddp"``
            (plus ``num_nodes=M`` across machines); each process gets a shard of the seed cells and cuts subgraphs
            from the same CPU-side graph, so memory per device stays bounded by the batch.
        early_stopping
            Stop on the validation loss (needs ``validation_indices``).
        batch_order
            ``"spatial"`` (default for graph encoders): each training batch is a run of consecutive seeds along a
            Z-order curve of ``obsm["spatial"]`` (reverse Cuthill-McKee order of the graph without coordinates), with
            a random offset and batch order every epoch; neighbouring seeds share their k-hop neighbourhoods, so a
            batch's subgraph is about 1.3x the batch instead of about 15x (2 hops, degree 6) and an epoch is that
            much faster. ``"random"``: uniformly shuffled seeds (the SGD textbook choice; slower on large graphs).
        plan_kwargs
            Extra :class:`~scvi.train.TrainingPlan` arguments.
        **trainer_kwargs
            Passed to the Lightning trainer (e.g. ``strategy="ddp"``, ``num_nodes``, ``callbacks``). A progress bar
            over the epochs shows by default, as in scvi-tools; ``enable_progress_bar=False`` turns it off.

        Examples
        --------
        >>> model.train(max_epochs=10, batch_size=512)  # doctest: +SKIP
        >>> model.train(max_epochs=10, accelerator="gpu", devices=4, strategy="ddp")  # doctest: +SKIP
        """
        check_choice(batch_order, ("spatial", "random"), "batch_order")
        check_numbers({"max_epochs": max_epochs, "batch_size": batch_size, "lr": lr})
        n_obs = self.adata.n_obs
        train_idx, val_idx, batch_size, max_epochs = training_seeds(
            n_obs, train_indices, validation_indices, batch_size, max_epochs
        )
        plan = {"lr": lr, "weight_decay": weight_decay, "optimizer": "AdamW", **(plan_kwargs or {})}
        callbacks = list(trainer_kwargs.pop("callbacks", []) or []) + [AfterStep()]
        if val_idx.size:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        spatial_order = batch_order == "spatial" and self.module.n_hops > 0
        datasplitter_kwargs = {
            "external_indexing": [train_idx, val_idx, unused(n_obs, train_idx, val_idx)],
            "n_hops": self.module.n_hops,
            "targets": targets,
            "locality": locality(self.adata, self.adata_manager) if spatial_order else None,
            "value_check": (layer_name(self.adata_manager), self.module.likelihood),  # counts read from disk
        }
        if early_stopping:
            trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        return super().train(  # ConsoleMixin: progress bar unless enable_progress_bar=False, quiet dependencies
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            batch_size=batch_size,
            early_stopping=early_stopping,
            datasplitter_kwargs=datasplitter_kwargs,
            plan_kwargs=plan,
            callbacks=callbacks,
            **trainer_kwargs,
        )

    # ------------------------------------------------------------------ outputs
    @torch.inference_mode()
    def get_latent_representation(
        self, adata: AnnData | None = None, indices: np.ndarray | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Embedding of every requested cell (computed on its k-hop subgraph, identical to the full-graph value).

        Parameters
        ----------
        adata
            AnnData set up like the training data (default: the model's).
        indices
            Rows to embed (default all).
        batch_size
            Seeds per minibatch.

        Returns
        -------
        ``(n_cells, n_latent)`` array.

        Examples
        --------
        >>> z = model.get_latent_representation()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)

        def latent(tensors):
            return self.module.inference(**self.module._get_inference_input(tensors))["qzm"]

        return per_cell(self, adata, indices, batch_size, latent)

    @torch.inference_mode()
    def predict_proba(
        self, adata: AnnData | None = None, indices: np.ndarray | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Class probabilities ``(n_cells, n_classes)`` of a model with objective ``"classify"``.

        Examples
        --------
        >>> proba = finetuned.predict_proba()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        return per_cell(self, adata, indices, batch_size, self.module.classify)

    # ------------------------------------------------------------------ derived models
    def derive(self, adata: AnnData | None = None, gene_present: list[bool] | None = None, **overrides):
        """A new model with this model's encoder settings and weights (encoder and mask token), e.g.

        with ``objective="classify"`` for fine-tuning, on ``adata`` (default: the same data).
        """
        return _reference.derived_model(self, adata, gene_present, overrides)

    @classmethod
    def load_query_data(
        cls, adata: AnnData, reference: SpatialPretrainModel, layer: str | None = None, input_adapter: bool = False
    ):
        """Apply a pretrained model to another dataset with an overlapping gene panel.

        Like scvi's ``load_query_data``: genes are aligned to the reference panel by name; reference genes missing from the
        query are treated as masked (replaced by the mask token at the input, never scored).

        Parameters
        ----------
        adata
            Query table with raw values in ``X`` (or ``layer``), ``var_names`` gene names and (for a graph
            encoder) the same ``obsp`` graph key as the reference.
        reference
            A trained :class:`SpatialPretrainModel`.
        layer
            Query layer with the expression.
        input_adapter
            Give the query model an identity :class:`~sslspatial.nn.InputAdapter` (its only parameters meant to be
            trained on the query, e.g. by ``ss.tl.map_query(..., adapt=True)``).

        Returns
        -------
        A model on an aligned copy of the query (same obs / obsm / obsp, reference genes as var), marked as trained.

        Examples
        --------
        >>> query_model = SpatialPretrainModel.load_query_data(query, reference)  # doctest: +SKIP
        >>> z = query_model.get_latent_representation()  # doctest: +SKIP
        """
        return _reference.query_model(cls, adata, reference, layer=layer, input_adapter=input_adapter)

    @classmethod
    def load_reference(
        cls,
        dir_path: str,
        query: AnnData | None = None,
        *,
        labels_key: str | None = None,
        min_shared_genes: int = 10,
        prefix: str | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> SpatialPretrainModel:
        """Load a shared reference (saved with ``model.save(dir_path, save_anndata=True)``) and check it against a query.

        Before anything is computed it refuses a folder without the reference table (saved with
        ``save_anndata=False``: no cells or labels to map from), a ``labels_key`` the reference lacks, and a
        ``query`` sharing fewer than ``min_shared_genes`` genes; it logs how many genes the query shares, lacks and
        adds (a warning when it lacks more than half of the reference's genes). See :mod:`sslspatial.model._reference`
        for what the folder holds and why the classifier is refitted rather than stored.

        Parameters
        ----------
        dir_path
            Folder written by ``model.save``.
        query
            Table to be mapped (only its ``var_names`` are read here).
        labels_key
            Reference ``obs`` column that will be mapped.
        min_shared_genes
            Fewest genes the query must share with the reference.
        prefix
            Prefix of the saved file names, as in :meth:`scvi.model.base.BaseModelClass.load`.
        accelerator
            Device type to load onto, as in :meth:`scvi.model.base.BaseModelClass.load`.
        device
            Device to load onto, as in :meth:`scvi.model.base.BaseModelClass.load`.

        Examples
        --------
        >>> ref = SpatialPretrainModel.load_reference("reference_model", query, labels_key="cell_type")  # doctest: +SKIP
        >>> ss.tl.map_query(query, ref, "cell_type")  # doctest: +SKIP
        """
        return _reference.load_reference(
            cls,
            dir_path,
            query,
            labels_key=labels_key,
            min_shared_genes=min_shared_genes,
            prefix=prefix,
            accelerator=accelerator,
            device=device,
        )
