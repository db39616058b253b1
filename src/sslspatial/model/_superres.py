"""scvi-tools model for spot super-resolution (soScope re-implementation).

AnnData plumbing, minibatches of seed spots with their k-hop subgraph, training, and enhanced sub-spot profiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField, ObsmField
from scvi.dataloaders import AnnDataLoader, DataSplitter
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from .._constants import REGISTRY_KEYS as KEYS
from .._constants import Key
from ..data._loaders import SubgraphCollate
from ..module._superres import SuperResModule
from ..nn._likelihoods import check_likelihood
from ._console import ConsoleMixin
from ._early_stopping import RelativeEarlyStopping
from ._plan import TrainingPlan

__all__ = ["SUPERRES", "RelativeEarlyStopping"]

#: The training defaults of :meth:`SUPERRES.train`, which :func:`sslspatial.tl.superres` takes over (batch size and
#: epochs chosen by ``benchmarks/superres_tuning.py`` on STARmap pseudo-spots; with early stopping the epochs are an
#: upper bound).
TRAIN_DEFAULTS = {"batch_size": 256, "lr": 3e-3, "max_epochs": 30}
#: The encoder sizes of :func:`sslspatial.tl.superres` (chosen with the training defaults; the model class keeps
#: soScope's 128 / 128 / 3 layers as its own defaults).
TL_MODEL_DEFAULTS = {"n_hidden": 64, "n_latent": 32, "n_layers": 1}
#: ``SUPERRES.train(early_stopping=None)`` turns early stopping on from this many spots (with ``max_epochs=None``).
EARLY_STOPPING_MIN_SPOTS = 5000
#: The ``uniform_weight`` of :func:`sslspatial.tl.superres` (the module's own default, 0, is the plain model).
UNIFORM_WEIGHT = 0.1

_FEATURES = KEYS.SUBSPOT_FEATURES_KEY


def _early_stopping_options() -> dict:
    """Trainer options of ``early_stopping=True``: 10 % of the spots held out, stop on their sub-spot-sum loss."""
    stop = RelativeEarlyStopping("subspot_sum_nll_validation", rel_delta=1e-3, patience=2)
    return {"train_size": 0.9, "validation_size": 0.1, "check_val_every_n_epoch": 1, "callbacks": [stop]}


class _SubgraphCollate:
    """Turn a minibatch of seed spots into seeds + their k-hop subgraph (seeds first).

    The subgraph and the node profiles come from the package's shared :class:`~sslspatial.data.SubgraphCollate`;
    this adapter keeps the registry tensors of the seeds (``X``, the sub-spot features) and names the node profiles
    ``x_sub`` as :class:`~sslspatial.module._superres.SuperResModule` expects.
    """

    def __init__(self, adata_manager: AnnDataManager, n_hops: int):
        x = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        key = adata_manager.registry["setup_args"]["connectivity_key"]
        adj = adata_manager.adata.obsp[key] if key is not None and n_hops > 0 else None
        self.graph = SubgraphCollate(x, adj, n_hops)
        self.n_hops = self.graph.n_hops

    def __deepcopy__(self, memo):  # AnnDataLoader deep-copies its kwargs: share the (large) arrays instead
        return self

    def __call__(self, batch: dict) -> dict:
        out = {k: torch.as_tensor(np.asarray(v)) for k, v in batch.items()}
        out[REGISTRY_KEYS.X_KEY] = out[REGISTRY_KEYS.X_KEY].float()
        out[_FEATURES] = out[_FEATURES].float()
        if self.n_hops == 0:
            out[KEYS.X_SUB_KEY] = out[REGISTRY_KEYS.X_KEY]
            out[KEYS.EDGE_INDEX_KEY] = torch.zeros(2, 0, dtype=torch.long)
            return out
        seeds = np.asarray(batch[REGISTRY_KEYS.INDICES_KEY]).ravel().astype(np.int64)
        nodes, edge_index = self.graph.subgraph(seeds)
        out[KEYS.X_SUB_KEY] = torch.from_numpy(np.ascontiguousarray(self.graph.features(nodes)))
        out[KEYS.EDGE_INDEX_KEY] = torch.from_numpy(np.ascontiguousarray(edge_index))
        return out


class _SubgraphLoader(AnnDataLoader):
    """Minibatches of seed spots with their ``n_hops`` subgraph (``n_hops``: the encoder's layers, set by the model)."""

    def __init__(self, adata_manager: AnnDataManager, n_hops: int = 0, **kwargs):
        kwargs.setdefault("collate_fn", _SubgraphCollate(adata_manager, n_hops))
        super().__init__(adata_manager, **kwargs)


class _SubgraphSplitter(DataSplitter):
    data_loader_cls = _SubgraphLoader


class SUPERRES(ConsoleMixin, VAEMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Enhance spot profiles to K sub-spots per spot (soScope-style, proper likelihoods, exact sum constraint).

    The spot table (one row per spot) must be registered with :meth:`setup_anndata`; its ``obsm`` holds the
    per-sub-spot feature vectors (image features and/or graph-context features, flattened ``(K * F)``), its ``obsp``
    the spot graph. ``ss.tl.superres`` builds all of this from a SpatialData; use the model directly for custom
    pipelines. See :class:`~sslspatial.module._superres.SuperResModule` for the generative model.

    Parameters
    ----------
    adata
        Spot table registered with :meth:`setup_anndata`.
    likelihood
        One likelihood for all modalities, or one per modality (in the order of the modality categories):
        ``"nb"``, ``"zinb"``, ``"poisson"``, ``"gaussian"``.
    n_hidden, n_latent, n_layers
        Graph-transformer encoder sizes (soScope: 128, 128, 3).
    use_graph
        False trains the no-graph ablation (each spot encoded alone).
    image_weight
        Weight of the image-similarity regulariser (used when image features are registered).
    count_aware
        Count modalities: the sub-spot branch predicts absolute rates, so it also explains each spot's total count
        and can learn which sub-spots hold more transcripts (see :class:`~sslspatial.module._superres.SuperResModule`).
    **module_kwargs
        Passed to :class:`~sslspatial.module._superres.SuperResModule`.

    Examples
    --------
    >>> SUPERRES.setup_anndata(adata, subspot_features_key="X_subspot", n_subspots=7)  # doctest: +SKIP
    >>> model = SUPERRES(adata, likelihood="nb")  # doctest: +SKIP
    >>> model.train(max_epochs=50)  # doctest: +SKIP
    >>> enhanced = model.get_subspot_expression()  # (n_spots * 7, n_genes)  # doctest: +SKIP
    """

    _module_cls = SuperResModule
    _data_loader_cls = _SubgraphLoader
    _data_splitter_cls = _SubgraphSplitter
    _training_plan_cls = TrainingPlan

    def __init__(
        self,
        adata: AnnData,
        likelihood: str | Sequence[str] = "nb",
        n_hidden: int = 128,
        n_latent: int = 128,
        n_layers: int = 3,
        use_graph: bool = True,
        image_weight: float = 1.0,
        count_aware: bool = False,
        **module_kwargs,
    ):
        super().__init__(adata)
        args = self.adata_manager.registry["setup_args"]
        modalities, sizes = _modalities(self.adata, args["modality_key"])
        likelihoods = [likelihood] * len(sizes) if isinstance(likelihood, str) else list(likelihood)
        if len(likelihoods) != len(sizes):
            raise ValueError(f"Got {len(likelihoods)} likelihoods for {len(sizes)} modalities {modalities}.")
        for lik in likelihoods:
            check_likelihood(lik)
        if use_graph and args["connectivity_key"] is None:
            raise ValueError("use_graph=True needs a spot graph: pass connectivity_key to setup_anndata.")
        k = int(args["n_subspots"])
        n_feat = self.summary_stats[f"n_{_FEATURES}"] // k
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        col_mean = np.asarray(x.mean(0)).ravel().astype(np.float64)
        module_kwargs.setdefault("rate_init", np.log(np.maximum(col_mean, 0) / k + 1e-2).tolist())
        self.modalities = modalities
        self.module = self._module_cls(
            modality_sizes=sizes,
            likelihoods=likelihoods,
            n_subspots=k,
            n_subspot_features=n_feat,
            n_image_features=int(args["n_image_features"]),
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            image_weight=image_weight,
            use_graph=use_graph,
            count_aware=count_aware,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"SUPERRES: K={k}, modalities {dict(zip(modalities, likelihoods, strict=True))}, "
            f"{n_feat} features per sub-spot, graph={'on' if use_graph else 'off'}, n_latent={n_latent}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        subspot_features_key: str,
        n_subspots: int,
        n_image_features: int = 0,
        layer: str | None = None,
        connectivity_key: str | None = Key.CONNECTIVITIES,
        modality_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register a spot table.

        Parameters
        ----------
        adata
            Spot table: ``X`` (or ``layer``) the spot profiles, every modality side by side.
        subspot_features_key
            ``obsm`` key of an ``(n_spots, K * F)`` array: row-major over sub-spots, the F features of sub-spot 0,
            then sub-spot 1, ... (F may be 0).
        n_subspots
            K, sub-spots per spot.
        n_image_features
            How many of the F features (the first ones) are image features (for the image regulariser).
        layer
            Layer holding the spot profiles (default ``X``).
        connectivity_key
            ``obsp`` key of the spot graph, or None (no-graph mode only).
        modality_key
            ``var`` column naming each feature's modality (categories in order of appearance must be contiguous
            blocks); None for a single modality.

        Examples
        --------
        >>> SUPERRES.setup_anndata(adata, subspot_features_key="X_subspot", n_subspots=4)  # doctest: +SKIP
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        n_obs = adata.n_obs
        feats = np.asarray(adata.obsm[subspot_features_key])
        if feats.shape[1] % n_subspots:
            raise ValueError(f"obsm[{subspot_features_key!r}] has {feats.shape[1]} columns, not a multiple of K.")
        _modalities(adata, modality_key)
        if connectivity_key is not None and connectivity_key not in adata.obsp:
            raise KeyError(f"obsp[{connectivity_key!r}] is missing: build the spot graph with ss.pp.build_graph.")
        adata.obs[Key.INDICES] = np.arange(n_obs)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            NumericalObsField(REGISTRY_KEYS.INDICES_KEY, Key.INDICES),
            ObsmField(_FEATURES, subspot_features_key),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @property
    def n_hops(self) -> int:
        """Number of hops of the subgraph each minibatch carries (the encoder's layers; 0 without the graph)."""
        return self.module.encoder.n_hops if self.module.use_graph else 0

    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = TRAIN_DEFAULTS["batch_size"],
        lr: float = TRAIN_DEFAULTS["lr"],
        early_stopping: bool | None = None,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train as :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`, minibatches carrying ``n_layers`` hops.

        The defaults are those of :func:`sslspatial.tl.superres`. A progress bar over the epochs shows by default, as
        in scvi-tools; ``enable_progress_bar=False`` turns it off.

        Parameters
        ----------
        max_epochs
            Epochs; default 30 (``TRAIN_DEFAULTS``; with ``early_stopping`` an upper bound). The epoch count once
            grew for small data (``min(300, max(30, 30000 // n_spots))``); on the tuning pseudo-spots that overfitted
            (``benchmarks/results/superres_tuning.md``).
        batch_size
            Seed spots per minibatch.
        lr
            Learning rate (``plan_kwargs["lr"]`` overrides it).
        early_stopping
            Hold out 10 % of the spots and stop when their sub-spot-sum negative log-likelihood has not improved by
            0.1 % for 2 epochs. ``None``: on for ``max_epochs=None`` with at least 5,000 spots, off otherwise.
        plan_kwargs
            Training-plan arguments; the KL warm-up defaults to a third of the epochs (1 with early stopping).
        datasplitter_kwargs, **kwargs
            As in scvi-tools (``train_size`` defaults to 1.0: every spot trains unless early stopping holds some out).

        Examples
        --------
        >>> model.train(max_epochs=50)  # doctest: +SKIP
        """
        n_spots = self.adata.n_obs
        if early_stopping is None:
            early_stopping = max_epochs is None and n_spots >= EARLY_STOPPING_MIN_SPOTS
        if max_epochs is None:
            max_epochs = TRAIN_DEFAULTS["max_epochs"]
        warmup = 1 if early_stopping else max(1, max_epochs // 3)
        plan_kwargs = {"lr": lr, "n_epochs_kl_warmup": warmup, **(plan_kwargs or {})}
        if early_stopping:
            kwargs = {**_early_stopping_options(), **kwargs}
        kwargs.setdefault("train_size", 1.0)
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        datasplitter_kwargs.setdefault("n_hops", self.n_hops)
        return super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            plan_kwargs=plan_kwargs,
            datasplitter_kwargs=datasplitter_kwargs,
            **kwargs,
        )

    def _loader(self, adata: AnnData | None, indices, batch_size: int | None):
        adata = self._validate_anndata(adata)
        return self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size, n_hops=self.n_hops)

    @torch.inference_mode()
    def get_subspot_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        sample: bool = False,
        return_spot_mean: bool = False,
        spot_mean: str = "observed",
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        """Enhanced sub-spot means (raw scale), ``(n_spots * K, n_features)`` ordered spot by spot.

        Parameters
        ----------
        adata, indices, batch_size
            Spots to enhance (default all of the training table).
        sample
            Also return one posterior-predictive draw per sub-spot (same shape), from the likelihood at the means.
        spot_mean
            ``"observed"``: split each measured spot (sub-spots sum to the data); ``"fitted"``: split the spot's fitted
            mean (a denoised spot).
        return_spot_mean
            Also return the fitted spot means ``(n_spots, n_features)`` (the sub-spot means of a spot sum to them).

        Returns
        -------
        The sub-spot means, then optionally the samples and the spot means.

        Examples
        --------
        >>> means = model.get_subspot_expression()  # doctest: +SKIP
        """
        self.module.eval()
        adata = self._validate_anndata(adata)
        n_spots = adata.n_obs if indices is None else len(indices)
        k, g = self.module.n_subspots, self.module.n_input
        means = np.empty((n_spots * k, g), np.float32)  # filled batch by batch: no second copy from concatenating
        samples = np.empty((n_spots * k, g), np.float32) if sample else None
        spots, start, device = [], 0, self.device  # the device property walks every parameter: once
        for tensors in self._loader(adata, indices, batch_size):
            tensors = {key: v.to(device) if torch.is_tensor(v) else v for key, v in tensors.items()}
            out = self.module.subspot_means(
                tensors["X"], tensors[KEYS.X_SUB_KEY], tensors[KEYS.EDGE_INDEX_KEY], tensors[_FEATURES], spot_mean
            )
            stop = start + out["subspot_mean"].shape[0] * k
            means[start:stop] = out["subspot_mean"].reshape(-1, g).cpu().numpy()
            spots.append(out["spot_mean"].cpu().numpy())
            if samples is not None:
                draw = self.module.sample(tensors, n_samples=1, spot_mean=spot_mean)[0]
                samples[start:stop] = draw.reshape(-1, g).cpu().numpy()
            start = stop
        result = [means]
        if samples is not None:
            result.append(samples)
        if return_spot_mean:
            result.append(np.concatenate(spots))
        return result[0] if len(result) == 1 else tuple(result)


def _modalities(adata: AnnData, modality_key: str | None) -> tuple[list[str], list[int]]:
    """Modality names and sizes, checking each modality is a contiguous block of columns."""
    if modality_key is None:
        return ["X"], [adata.n_vars]
    if modality_key not in adata.var:
        raise KeyError(f"modality_key={modality_key!r} is not a column of var.")
    labels = adata.var[modality_key].astype(str).to_numpy()
    names, sizes = [], []
    for lab in labels:
        if names and lab == names[-1]:
            sizes[-1] += 1
        elif lab in names:
            raise ValueError(f"Modality {lab!r} is not a contiguous block of var: order the features by modality.")
        else:
            names.append(lab)
            sizes.append(1)
    return names, sizes
