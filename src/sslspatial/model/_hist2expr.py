"""scvi-tools model for histology -> expression (Hist2ST re-implementation)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from .._constants import REGISTRY_KEYS as KEYS
from .._validate import check_counts, check_numbers
from ..data._patch_loader import PatchSource, PatchWindowSplitter, WindowDataset
from ..module._hist2expr import Hist2ExprModule
from ..pp._normalize import log_normalize
from ._console import ConsoleMixin
from ._plan import TrainingPlan

#: The likelihoods of :class:`Hist2Expr` (``"none"``: no likelihood term).
Hist2ExprLikelihood = Literal["zinb", "nb", "poisson", "gaussian", "none"]
#: The training defaults of :meth:`Hist2Expr.train`, which :func:`sslspatial.tl.hist2expr` takes over (chosen on folds
#: B4 and C5 of ``benchmarks/hist2expr_her2st.py``).
TRAIN_DEFAULTS = {"max_epochs": 60, "lr": 1e-2, "window_size": 32}
#: ``ss.tl.hist2expr``'s learning-rate factor of a pretrained image encoder (``train_kwargs["encoder_lr_scale"]``).
DEFAULT_ENCODER_LR_SCALE = 0.1

_LIBRARY = "library_size"


def _features(section) -> np.ndarray:
    if section.features is None:
        raise ValueError(f"Section {section.name!r} has no precomputed image features, which this model uses.")
    return np.asarray(section.features, np.float32)


class Hist2Expr(ConsoleMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Predict spot expression from H&E patches (ConvMixer + Transformer + GraphSAGE, Hist2ST).

    The table holds raw counts of the genes to predict; the images travel separately in a
    :class:`~sslspatial.data._patch_loader.PatchSource` (set with :meth:`set_patch_source`), so patches are cut per
    minibatch window. Most users call :func:`sslspatial.tl.hist2expr`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    patch_px
        Side of the patches fed to the encoder (crops are resampled to it).
    likelihood
        ``"zinb"`` (default), ``"nb"``, ``"poisson"``, ``"gaussian"`` or ``"none"``.
    mse_weight, likelihood_weight, distill_weight
        Loss weights (0 switches a term off).
    patch_settings
        How the training patches were prepared (:func:`~sslspatial.tl.hist2expr` records ``colour_normalize``,
        ``features``, ``feature_weights``, ``size_unit``, ``spot_size`` and ``pitch``, and for a backbone
        ``feature_kwargs`` and ``feature_backbone``: its input side, normalisation and weights checksum). Saved with
        the model, so that
        ``ss.tl.hist2expr(sdata, model=loaded, predict_regions=...)`` prepares new sections the same way.
    **module_kwargs
        Further :class:`~sslspatial.module._hist2expr.Hist2ExprModule` arguments (``dim``, ``transformer_depth``, ...).

    Examples
    --------
    >>> Hist2Expr.setup_anndata(adata)  # doctest: +SKIP
    >>> model = Hist2Expr(adata, patch_px=64)  # doctest: +SKIP
    >>> model.set_patch_source(source)  # doctest: +SKIP
    >>> model.train(max_epochs=20)  # doctest: +SKIP
    """

    _module_cls = Hist2ExprModule
    _training_plan_cls = TrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        patch_px: int = 32,
        likelihood: Hist2ExprLikelihood = "zinb",
        mse_weight: float = 1.0,
        likelihood_weight: float = 0.25,
        distill_weight: float = 0.5,
        patch_settings: dict[str, Any] | None = None,
        **module_kwargs: Any,
    ):
        super().__init__(adata)
        if likelihood not in ("gaussian", "none") and adata is not None:
            check_counts(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), "the training counts", likelihood)
        self.module = self._module_cls(
            self.summary_stats.n_vars,
            patch_px=patch_px,
            likelihood=likelihood,
            mse_weight=mse_weight,
            likelihood_weight=likelihood_weight,
            distill_weight=distill_weight,
            **module_kwargs,
        )
        if adata is not None:  # provisional (whole table); train() sets them from the training sections' spots
            self.module.set_target_stats(*self._target_stats())
        self.patch_source: PatchSource | None = None
        self.patch_settings = dict(patch_settings or {})
        self._model_summary_string = (
            f"Hist2Expr: {self.summary_stats.n_vars} genes, {patch_px} px patches, likelihood {likelihood}, "
            f"weights mse {mse_weight} / likelihood {likelihood_weight} / distill {distill_weight}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _targets(self, rows: np.ndarray) -> np.ndarray:
        """Dense targets ``log1p(x / library * target_sum)`` of the registered rows ``rows``."""
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        library = np.asarray(self.adata_manager.get_from_registry(KEYS.LIBRARY_KEY), dtype=np.float64).reshape(-1, 1)
        block = counts[rows]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block, dtype=np.float64)
        return log_normalize(block, self.module.target_sum, library=library[rows], min_library=1e-8)

    def _target_stats(self, rows: np.ndarray | None = None, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-gene mean and standard deviation of the targets ``log1p(x / library * target_sum)`` of ``rows``.

        Accumulated over row chunks, so a large (sparse) training table is never densified at once.
        """
        n_obs, n_vars = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY).shape
        rows = np.arange(n_obs) if rows is None else np.asarray(rows)
        total, total_sq = np.zeros(n_vars), np.zeros(n_vars)
        for start in range(0, len(rows), chunk):
            target = self._targets(rows[start : start + chunk])
            total += target.sum(0)
            total_sq += (target**2).sum(0)
        mean = total / len(rows)
        std = np.sqrt(np.maximum(total_sq / len(rows) - mean**2, 0.0))
        return torch.as_tensor(mean), torch.as_tensor(std)

    def _target_basis(self, n_components: int, rows: np.ndarray, max_rows: int = 10_000) -> torch.Tensor:
        """Leading principal axes ``(n_components, n_genes)`` of the standardised targets of ``rows``.

        From at most ``max_rows`` of them (a seeded random subset), scaled with the module's target mean and standard
        deviation.
        """
        rows = np.asarray(rows)
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(0).choice(rows, max_rows, replace=False))
        mean, std = self.module.target_mean.cpu().numpy(), self.module.target_std.cpu().numpy()
        z = ((self._targets(rows) - mean) / std).astype(np.float32)
        _, _, axes = np.linalg.svd(z - z.mean(0), full_matrices=False)
        if axes.shape[0] < n_components:
            raise ValueError(
                f"n_components={n_components} exceeds the rank of the {len(rows)} training spots: pass a smaller "
                "n_components in model_kwargs, or None."
            )
        return torch.as_tensor(axes[:n_components])

    def _section_offsets(self, source: PatchSource, validation_sections) -> tuple[torch.Tensor, torch.Tensor]:
        """Section index of every registered row and each training section's mean target minus ``target_mean``."""
        n_obs = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY).shape[0]
        row_section = np.full(n_obs, -1, dtype=np.int64)
        offsets = []
        for section in (s for s in source.sections if s.name not in validation_sections):
            row_section[section.rows] = len(offsets)
            offsets.append(self._target_stats(section.rows)[0].numpy() - self.module.target_mean.cpu().numpy())
        return torch.as_tensor(row_section), torch.as_tensor(np.stack(offsets))

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, library_key: str | None = None, **kwargs):
        """Register the raw counts (``X`` or ``layer``) and optionally the library size column.

        Parameters
        ----------
        adata
            Table of the training spots (genes to predict as variables).
        layer
            Layer with raw counts (default ``X``).
        library_key
            ``obs`` column with each spot's total counts over the whole transcriptome (targets are
            ``log1p(x / total * 1e4)``); default: the sum over the registered genes.

        Examples
        --------
        >>> Hist2Expr.setup_anndata(adata, library_key="total_counts")  # doctest: +SKIP
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if library_key is None:
            x = adata.layers[layer] if layer else adata.X
            adata.obs[_LIBRARY] = np.asarray(x.sum(1)).ravel().astype(np.float64)
            library_key = _LIBRARY
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            NumericalObsField(KEYS.LIBRARY_KEY, library_key),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def set_patch_source(self, source: PatchSource) -> None:
        """Attach the images and spots (rows index the registered AnnData) used for training and prediction."""
        if not isinstance(source, PatchSource):
            raise TypeError(f"Expected a PatchSource, got {type(source).__name__}.")
        if source.patch_px != self.module.patch_px:
            raise ValueError(
                f"The source gives {source.patch_px} px patches; this model expects {self.module.patch_px}."
            )
        for section in source.sections if self.module.n_features else []:
            if _features(section).shape[1] != self.module.n_features:
                raise ValueError(
                    f"Section {section.name!r} has {_features(section).shape[1]} image features; the model expects "
                    f"{self.module.n_features} (compute them with the same image_features method)."
                )
        self.patch_source = source

    def _require_source(self, source: PatchSource | None) -> PatchSource:
        if source is not None and source is not self.patch_source:
            current, self.patch_source = self.patch_source, None
            try:
                self.set_patch_source(source)  # validates
            finally:
                self.patch_source = current
        source = source or self.patch_source
        if source is None:
            raise ValueError("No images attached: call model.set_patch_source(source) (ss.tl.hist2expr does this).")
        return source

    def train(
        self,
        max_epochs: int = TRAIN_DEFAULTS["max_epochs"],
        lr: float = TRAIN_DEFAULTS["lr"],
        weight_decay: float = 1e-4,
        validation_sections: list[str] | tuple[str, ...] = (),
        window_size: int = TRAIN_DEFAULTS["window_size"],
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = False,
        plan_kwargs: dict | None = None,
        seed: int = 0,
        encoder_lr_scale: float = 1.0,
        **trainer_kwargs: Any,
    ):
        """Train on the attached sections, windows of ``window_size`` spots per step.

        Parameters
        ----------
        max_epochs
            Passes over the training windows.
        lr, weight_decay
            Adam(W) settings.
        validation_sections
            Sections held out for validation (needed for ``early_stopping``).
        window_size
            Maximum spots per minibatch window (attention spans one window).
        accelerator, devices
            Lightning device settings (``accelerator="gpu"`` uses a GPU).
        early_stopping
            Stop when ``validation_loss`` stops improving (needs ``validation_sections``).
        plan_kwargs
            Extra :class:`~scvi.train.TrainingPlan` arguments (e.g. loss-weight overrides ``mse_weight``).
        seed
            Seed of the random windows.
        encoder_lr_scale
            The patch encoder's learning rate is ``lr * encoder_lr_scale`` (e.g. 0.1 to fine-tune an encoder pretrained
            by ``ss.tl.pretrain_image``; a frozen encoder, ``freeze_encoder=True``, is not trained at all).
        **trainer_kwargs
            Passed to :class:`~scvi.train.Trainer`. A progress bar over the epochs shows by default, as in
            scvi-tools; ``enable_progress_bar=False`` turns it off.
        """
        check_numbers({"max_epochs": max_epochs, "lr": lr, "weight_decay": weight_decay, "window_size": window_size,
                       "seed": seed, "devices": devices, "accelerator": accelerator})  # fmt: skip
        source = self._require_source(None)
        if early_stopping and not validation_sections:
            raise ValueError("early_stopping needs validation_sections (a section held out for validation).")
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        library = np.asarray(self.adata_manager.get_from_registry(KEYS.LIBRARY_KEY)).ravel()
        if not self.is_trained_:  # target statistics of the training spots; the gene head starts at their mean
            rows = np.concatenate([s.rows for s in source.sections if s.name not in validation_sections])
            self.module.set_target_stats(*self._target_stats(rows))
            if self.module.n_components is not None:
                self.module.set_gene_basis(self._target_basis(self.module.n_components, rows))
            target = self._targets(rows)
            with torch.no_grad():  # standardised targets: the training mean is carried by the target_mean buffer
                start = np.zeros(target.shape[1]) if self.module.standardize else target.mean(0)
                self.module.gene_head.bias.copy_(torch.as_tensor(start, dtype=torch.float32))
                if self.module.n_features:
                    feats = np.concatenate([_features(s) for s in source.sections])
                    self.module.feature_mean.copy_(torch.as_tensor(feats.mean(0)))
                    self.module.feature_std.copy_(torch.as_tensor(feats.std(0) + 1e-6))
        if self.module.centre_sections:
            self.module.set_section_offsets(*self._section_offsets(source, validation_sections))
        self.window_size_ = int(window_size)
        splitter = PatchWindowSplitter(source, counts, library, validation_sections, window_size, seed=seed)
        plan = {"lr": lr, "weight_decay": weight_decay, "optimizer": "AdamW", **(plan_kwargs or {})}
        if encoder_lr_scale != 1.0 and not self.module.freeze_encoder:
            plan |= {"optimizer": "Custom", "optimizer_creator": self._optimizer_creator(lr, weight_decay,
                                                                                        encoder_lr_scale)}  # fmt: skip
        if not validation_sections:
            trainer_kwargs.setdefault("check_val_every_n_epoch", None)
        return super().train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            early_stopping=early_stopping,
            datamodule=splitter,
            plan_kwargs=plan,
            **trainer_kwargs,
        )

    def _optimizer_creator(self, lr: float, weight_decay: float, encoder_lr_scale: float):
        """AdamW with the patch encoder in its own parameter group, at ``lr * encoder_lr_scale``."""
        if encoder_lr_scale < 0:
            raise ValueError(f"encoder_lr_scale={encoder_lr_scale} must be >= 0.")
        module = self.module

        def create(params):
            trainable = {id(p) for p in params}
            encoder = [p for p in module.encoder.parameters() if id(p) in trainable]
            ids = {id(p) for p in encoder}
            rest = [p for p in module.parameters() if id(p) in trainable and id(p) not in ids]
            groups = [{"params": rest}, {"params": encoder, "lr": lr * encoder_lr_scale}]
            return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)

        return create

    @torch.inference_mode()
    def _run(self, source: PatchSource, what: str, window_size: int, tta: bool) -> list[np.ndarray]:
        self.module.eval()
        device = self.device
        out = []
        for section in source.sections:
            single = PatchSource([section], source.patch_px)
            ds = WindowDataset(single, window_size=window_size)
            values = None
            for item in range(len(ds)):
                _, idx = ds.fixed[item]
                batch = {k: v.to(device) for k, v in ds[item].items()}
                views = range(8) if tta else range(1)
                acc = 0
                for c in views:
                    p = torch.rot90(batch[KEYS.PATCHES_KEY], c % 4, dims=(2, 3))
                    batch_v = {**batch, KEYS.PATCHES_KEY: torch.flip(p, dims=(3,)) if c >= 4 else p}
                    z = self.module.inference(**self.module._get_inference_input(batch_v))["z"]
                    acc = acc + (z if what == "z" else self.module.generative(z)["y_hat"])
                res = (acc / len(views)).cpu().numpy()
                if values is None:
                    values = np.zeros((len(section), res.shape[1]), np.float32)
                values[idx] = res
            out.append(values)
        return out

    def predict(
        self, source: PatchSource | None = None, window_size: int | None = None, tta: bool = False
    ) -> np.ndarray | list[np.ndarray]:
        """Predicted log-normalised expression ``log1p(x / total * 1e4)``.

        Parameters
        ----------
        source
            Spots to predict (any sections, with or without measurements); default: the attached source.
        window_size
            Maximum spots per window (default: the training window size, so the context matches training).
        tta
            Average over the 8 rotations / flips of the patches.

        Returns
        -------
        With the attached source: ``(n_obs, n_genes)`` in the registered table's order (NaN for rows without a
        spot). With another source: one ``(n_spots, n_genes)`` array per section.
        """
        return self._gather(source, "y_hat", window_size, tta)

    def get_latent_representation(
        self, source: PatchSource | None = None, window_size: int | None = None, tta: bool = False
    ) -> np.ndarray | list[np.ndarray]:
        """Spot representations before the gene head (same layout as :meth:`predict`)."""
        return self._gather(source, "z", window_size, tta)

    def _gather(self, source, what, window_size, tta):
        window_size = window_size or getattr(self, "window_size_", 32)
        own = source is None
        source = self._require_source(source)
        per_section = self._run(source, what, window_size, tta)
        if not own:
            return per_section
        out = np.full((self.adata.n_obs, per_section[0].shape[1]), np.nan, np.float32)
        for section, values in zip(source.sections, per_section, strict=True):
            keep = section.rows >= 0
            out[section.rows[keep]] = values[keep]
        return out
