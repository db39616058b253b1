"""``ss.tl.hist2expr``: train histology -> expression on sections with measurements, predict sections with images.

Check the arguments (a trained ``model=`` replaces the patch settings) -> read the plan and the patch sections
(:func:`sslspatial.io._hist2expr.read_sections`) -> set up and train :class:`~sslspatial.model.Hist2Expr` -> predict
and write the new table (:func:`sslspatial.io._hist2expr_write.write_predictions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, get_args

from .._constants import check_key
from .._docs import inject_docs
from .._logging import info
from .._provenance import run_record, seed_everything
from .._types import DataLike
from .._validate import check_absent, check_numbers, trainer_options
from ..data._patch_loader import PatchSource
from ..io._access import require_spatialdata
from ..io._hist2expr import Options, Plan, Sections, read_sections
from ..io._hist2expr import Patches as _Patches  # noqa: F401 (its old import path, used by tests)
from ..io._hist2expr_write import write_predictions as _write
from ..model._hist2expr import DEFAULT_ENCODER_LR_SCALE, TRAIN_DEFAULTS, Hist2Expr, Hist2ExprLikelihood
from ..pp._backbones import LoadedBackbone, load_backbone

SIZE_UNITS = get_args(Literal["coords", "px"])

#: Default patch side, in spot diameters (chosen on folds B4 and C5 of ``benchmarks/hist2expr_her2st.py``).
DEFAULT_PATCH_SCALE = 1.5


def _backbone(features, weights, kwargs, model) -> LoadedBackbone | None:
    """Build a backbone ``features`` once (None for ``"stats"`` / None); a reloaded model checks the weights file."""
    if features is None or features == "stats":
        return None
    loaded = load_backbone(features, weights, kwargs)
    trained = (model.patch_settings if model is not None else {}).get("feature_backbone") or {}
    saved, now = trained.get("weights_sha256"), loaded.info.get("weights_sha256")
    if saved is not None and saved != now:
        raise ValueError(
            f"The backbone weights {weights!r} are not the file this model was trained with (SHA-256 {now} vs "
            f"{saved}): its predictions would be meaningless. Put the original file at that path."
        )
    return loaded


def _torch_device(accelerator: str) -> str:
    """The torch device the backbone features are computed on, from the trainer's ``accelerator``."""
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "mps" if accelerator == "mps" else "cpu"


def _image_encoder(opts: Options):
    """The pretrained encoder (loaded from its folder when a path), checked against the run's patch settings."""
    from ..model._image_encoder import ImageEncoder

    enc = opts.image_encoder
    if enc is None:
        return None
    if not isinstance(enc, ImageEncoder):
        enc = ImageEncoder.load(enc)
    if enc.patch_px != opts.patch_px:
        raise ValueError(
            f"The image encoder takes {enc.patch_px} px patches, but patch_px={opts.patch_px}: pass "
            f"patch_px={enc.patch_px}."
        )
    fixed = set(enc.encoder_kwargs) & set(opts.model_kwargs or {})
    if any((opts.model_kwargs or {})[k] != enc.encoder_kwargs[k] for k in fixed):
        raise ValueError(
            f"model_kwargs {sorted(fixed)} change the encoder's architecture; the pretrained one has "
            f"{enc.encoder_kwargs}: leave them out."
        )
    if not opts.encoder_lr_scale >= 0:
        raise ValueError(f"encoder_lr_scale={opts.encoder_lr_scale} must be >= 0 (0 freezes the encoder).")
    tile, unit = enc.settings.get("tile_size"), enc.settings.get("size_unit")
    if tile and opts.spot_size and unit == opts.size_unit and not 0.8 <= opts.spot_size / tile <= 1.25:
        import warnings

        warnings.warn(
            f"The image encoder was pretrained on tiles of {tile:g} {unit}, the patches here are {opts.spot_size:g}: "
            "pretrain it with tile_size=spot_size for features at the scale it learnt.",
            stacklevel=3,
        )
    return enc


def _with_model_settings(opts: Options, model) -> Options:
    """Checks of prediction-only use (``model=``); the options with the model's genes and patch settings."""
    if not isinstance(model, Hist2Expr):
        raise TypeError(f"model must be a trained sslspatial.model.Hist2Expr, not {type(model).__name__}.")
    if opts.train_regions:
        raise ValueError("With model= nothing is trained: leave train_regions empty, or pass model=None to train.")
    if not opts.predict_regions:
        raise ValueError("With model=, name the sections, shapes or images to predict in predict_regions.")
    if model.adata is None:
        raise ValueError(
            "The model carries no AnnData, so its genes are unknown: load it with Hist2Expr.load(path, adata=...) "
            "or save it with model.save(path, save_anndata=True)."
        )
    if opts.genes is not None and list(opts.genes) != list(model.adata.var_names):
        raise ValueError("With model=, genes are the model's (model.adata.var_names): leave genes=None.")
    settings = model.patch_settings
    return replace(
        opts,
        genes=list(model.adata.var_names),
        patch_px=model.module.patch_px,
        use_patches=model.module.use_patches,
        features=settings.get("features"),
        feature_weights=settings.get("feature_weights"),
        feature_kwargs=settings.get("feature_kwargs"),
        colour_normalize=bool(settings.get("colour_normalize", False)),
        size_unit=settings.get("size_unit", opts.size_unit),
        spot_size=opts.spot_size if opts.spot_size is not None else settings.get("spot_size"),
        grid_spacing=opts.grid_spacing if opts.grid_spacing is not None else settings.get("pitch"),
        train_regions=[],
        n_validation_sections=0,
    )


def _train(opts: Options, plan: Plan, sections: Sections, backbone: LoadedBackbone | None) -> Hist2Expr:
    """Set up and train :class:`~sslspatial.model.Hist2Expr` on the training sections' patches and counts."""
    view = plan.table[:, plan.genes]
    adata = view.copy() if opts.layer is None else _with_layer(view, opts.layer)
    adata.obs["_hist2expr_total"] = plan.library
    Hist2Expr.setup_anndata(adata, library_key="_hist2expr_total")
    first = sections.measured[plan.train_regions[0]].features
    settings = {"colour_normalize": opts.colour_normalize, "features": opts.features,
                "feature_weights": opts.feature_weights, "size_unit": opts.size_unit, "spot_size": sections.train_size,
                "pitch": sections.pitch}  # fmt: skip
    if backbone is not None:
        settings |= {"feature_kwargs": dict(opts.feature_kwargs or {}), "feature_backbone": backbone.info}
    encoder, module_kwargs = opts.image_encoder, dict(opts.model_kwargs or {})
    if encoder is not None:
        settings["image_encoder"] = {**encoder.info, "lr_scale": opts.encoder_lr_scale}
        module_kwargs |= {**encoder.encoder_kwargs, "freeze_encoder": opts.encoder_lr_scale == 0}
    seed_everything(opts.seed)
    model = Hist2Expr(
        adata, patch_px=opts.patch_px, likelihood=opts.likelihood, n_features=0 if first is None else first.shape[1], use_patches=opts.use_patches, patch_settings=settings,
        **module_kwargs,
    )  # fmt: skip
    if encoder is not None:
        model.module.encoder.load_state_dict(encoder.module.encoder.state_dict())
    model.set_patch_source(PatchSource([sections.measured[n] for n in plan.train_regions], opts.patch_px))
    info(f"hist2expr: training on {plan.train_regions} (validation {plan.validation}), {len(plan.genes)} genes")
    model.train(
        max_epochs=opts.max_epochs, lr=opts.lr, validation_sections=plan.validation, window_size=opts.window_size,
        early_stopping=bool(plan.validation), encoder_lr_scale=opts.encoder_lr_scale if encoder is not None else 1.0,
        **trainer_options("hist2expr", opts.accelerator, opts.devices, opts.train_kwargs),
    )  # fmt: skip
    return model


@inject_docs
def hist2expr(
    data: DataLike,
    *,
    table_key: str = "table",
    image_key: str | Mapping[str, str] | None = None,
    genes: Sequence[str] | None = None,
    train_regions: Sequence[str] | None = None,
    predict_regions: Sequence[str] | None = None,
    library_key: str | None = None,
    spot_size: float | None = None,
    patch_scale: float = DEFAULT_PATCH_SCALE,
    patch_px: int = 32,
    features: str | None = "stats",
    use_patches: bool = True,
    layer: str | None = None,
    size_factor_key: str | None = None,
    likelihood: Hist2ExprLikelihood = "zinb",
    n_validation_sections: int = 0,
    max_epochs: int = TRAIN_DEFAULTS["max_epochs"],
    lr: float = TRAIN_DEFAULTS["lr"],
    window_size: int = TRAIN_DEFAULTS["window_size"],
    colour_normalize: bool = False,
    image_encoder: Any = None,
    model: Hist2Expr | None = None,
    baseline: bool = True,
    key_added: str = "hist2expr",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    patch_kwargs: dict | None = None,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> Hist2Expr:
    """Predict spot expression from H&E (Hist2ST): train where expression was measured, predict image-only tissue.

    Writes ``tables[f"{key_added}"]``: predicted ``log1p(x / total * 1e4)`` of ``genes`` for every spot of the
    training and prediction regions, annotating their shapes (obs ``split`` = train / validation / predict); var
    ``pearson_<name>`` holds per-gene Pearson correlations for every predicted section with measurements, and
    ``uns[key_added]["mean_pearson"]`` their means. Next to them, as a yardstick, ``var["baseline_pearson_<name>"]``
    and ``uns[key_added]["baseline_mean_pearson"]`` hold the same metric, on the same spots and genes, for a
    training-free baseline (``uns[key_added]["baseline"]``: ridge regression on image statistics, fitted on the
    spots the model trains on; see ``baseline``). The rows of measured spots keep the training table's
    ``obs_names``, so ``sdata[key_added][table.obs_names]`` aligns predictions with the table; the training table
    itself is left untouched (only the predicted genes are stored, once, in the new table). Image names in ``predict_regions`` are covered by a grid of pseudo-spots generated
    from the image's tissue mask (new shapes ``f"{image}_{key_added}_grid"``). Each spot's patch is cut once per run,
    from the coarsest pyramid level of the image that keeps ``patch_px`` pixels, and cached (``uns[key_added]
    ["patch_seconds"]``: the seconds this took per section), so full-resolution images train about as fast as downscaled ones.

    Parameters
    ----------
    data
        SpatialData with the table (raw counts), its spot shapes and H&E image(s) (from a squidpy-style Visium
        AnnData: ``spatialdata_io.experimental.from_legacy_anndata(adata)``).
    table_key
        Table with the measured spots.
    image_key
        Image name, mapping region / section -> image, or None (inferred per region).
    genes
        Genes to predict (default all of the table's).
    train_regions
        Sections (regions, or ``library_key`` values) to train on; default all sections of the table not in
        ``predict_regions``.
    predict_regions
        What to predict: sections of the table (held out), shapes elements without measurements, or image names
        (pseudo-spot grid over the tissue). Default: none besides the training sections.
    library_key
        ``obs`` column splitting one region into sections (default: regions are sections).
    spot_size
        Patch side in coordinate units (``patch_kwargs={"size_unit": "coords"}``, the default) or image pixels. Default: ``patch_scale`` times
        each section's spot diameter (from ``uns["spot_geometry"]`` or the spot shapes' radius).
    patch_scale
        Patch side in spot diameters when ``spot_size`` is None. Default ``1.5``: a patch with some tissue around the
        spot, the configuration chosen on folds B4 and C5 of ``benchmarks/hist2expr_her2st.py`` (issue 4) and
        measured there as the default row.
    patch_px
        Patches are resampled to this side for the encoder.
    features
        Precomputed image features of every patch fed alongside the ConvMixer (frozen encoder): ``"stats"``
        (colour / texture statistics), a backbone name (see :func:`~sslspatial.pp.image_features`), or None.
    use_patches
        Train the ConvMixer on the patches (False: the precomputed ``features`` only, much faster).
    layer, size_factor_key
        Counts layer (default X) and ``obs`` column of total counts (default: sum over the table's genes).
    likelihood
        Count likelihood of the loss (``"none"``: no likelihood term); the weights of the loss terms are
        ``model_kwargs`` ``mse_weight`` (1.0), ``likelihood_weight`` (0.25) and ``distill_weight`` (0.5) (see
        :class:`~sslspatial.module._hist2expr.Hist2ExprModule`).
    n_validation_sections
        Training sections held out for early stopping. Default ``0``: train on every section for ``max_epochs``,
        the configuration of the benchmark's default row (with few sections, as the five of her2st, one less
        training section cost more than early stopping saved).
    max_epochs, lr, window_size
        Training settings (``window_size`` spots per minibatch).
    colour_normalize
        Reinhard colour normalisation per section: each section's patches are shifted and scaled, channel by channel,
        so that its tissue pixels (from up to 512 of its patches) share one mean and standard deviation. Meant for
        staining differences between sections; on her2st leave-one-out it changed nothing measurable
        (``benchmarks/results/hist2expr_her2st.md``, row ``hist2expr_colour_normalize``).
    image_encoder
        A patch encoder pretrained without expression (:func:`~sslspatial.tl.pretrain_image`'s
        :class:`~sslspatial.model.ImageEncoder`, or the folder it was saved to): the model's ConvMixer starts from its
        weights and takes its architecture (``model_kwargs`` may not change it); ``patch_px`` must be the encoder's.
        Its checksum, tile side and training record are saved with the model (``patch_settings["image_encoder"]``),
        and the weights themselves are part of the model's. None: the ConvMixer starts at random.
    model
        An already trained :class:`~sslspatial.model.Hist2Expr` (e.g. ``Hist2Expr.load(path, adata=...)``): nothing
        is trained, ``predict_regions`` are predicted with it, and their patches are prepared as for its training
        (``patch_px``, ``features``, colour normalisation, ``size_unit``, and unless given ``spot_size`` and
        ``grid_spacing``, from ``model.patch_settings``; ``spot_size`` and ``grid_spacing`` are in the training
        data's coordinate units, so pass them for data in other units). ``genes`` are the model's.
    baseline
        Store the yardstick next to ``mean_pearson``: ``StandardScaler`` + ``RidgeCV`` (penalties
        ``np.logspace(-1, 4, 12)``, one for all genes, chosen by leave-one-out) from the 34 colour / texture
        statistics of each spot's patch (``ss.pp.image_features(method="stats")``, computed even when ``features``
        is another backbone) to the same ``log1p(x / total * 1e4)`` targets, fitted on the training sections the
        model fits (validation sections excluded), as the ``ridge_stats`` row of ``benchmarks/hist2expr_her2st.py``.
        Without training (``model=``) there are no training spots, so no baseline is stored
        (``uns[key_added]["baseline"]`` says so).
    key_added
        Name of the new table.
    overwrite
        Replace an existing table / grid named ``key_added`` (else :class:`~sslspatial.OutputExistsError`).
    %(seed)s
    %(accelerator_devices)s
    patch_kwargs
        Rarely changed patch settings, each with its default:

        - ``size_unit="coords"``: unit of ``spot_size``, ``"coords"`` or ``"px"``;
        - ``value_range=None``: pixel value range, required unless images are RGB uint8;
        - ``grid_spacing=None``: pseudo-spot grid step for image-only predictions (default: the training spot pitch);
        - ``tta=False``: average predictions over the 8 rotations / flips of the patches;
        - ``feature_weights=None``: local weights file of a backbone ``features`` (``"hub"``: the library's download;
          ``"random"``: untrained). Every tensor of the backbone must be in it (see
          :func:`~sslspatial.pp.load_backbone`); its SHA-256, the patch side and the input normalisation used (from
          the library's configuration of the architecture) are saved with the model, and a reloaded model refuses a
          weights file with another checksum;
        - ``feature_kwargs=None``: keyword arguments of the backbone's constructor (``timm.create_model``), e.g.
          UNI's ``{"init_values": 1e-5, "dynamic_img_size": True}``; saved with the model.
    model_kwargs
        More :class:`~sslspatial.model.Hist2Expr` arguments (the loss weights above, the architecture).
    train_kwargs
        More :meth:`Hist2Expr.train <sslspatial.model.Hist2Expr.train>` arguments. ``encoder_lr_scale`` (default 0.1)
        applies with ``image_encoder``: the encoder trains at ``lr * encoder_lr_scale`` (fine-tuning); 0 freezes it
        (weights and batch-norm statistics).

    Returns
    -------
    The trained :class:`~sslspatial.model._hist2expr.Hist2Expr` (its ``patch_source`` covers the training table).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.her2st(path="data/her2st", genes="hvg", image_downscale=4)  # doctest: +SKIP
    >>> model = ss.tl.hist2expr(sdata, train_regions=["B4_spots", "C2_spots"], predict_regions=["C3_spots"])  # doctest: +SKIP
    >>> sdata["hist2expr"].uns["hist2expr"]["mean_pearson"]  # doctest: +SKIP
    >>> model.save("her2st_model", save_anndata=True)  # doctest: +SKIP
    >>> loaded = ss.model.Hist2Expr.load("her2st_model")  # doctest: +SKIP
    >>> ss.tl.hist2expr(other_sdata, model=loaded, predict_regions=["he_image"])  # doctest: +SKIP
    """
    check_numbers(dict(locals()))  # sizes, rates, lr, seed: before any work (shared checks)
    params = {k: v for k, v in locals().items() if k not in ("data", "model")}
    require_spatialdata(data, "hist2expr", "the table, the spot shapes and the image(s)")
    check_key(key_added, "key_added")
    check_absent(key_added in data.tables and not overwrite, f"tables[{key_added!r}]")  # before any weights load
    train_kwargs = dict(train_kwargs or {})
    encoder_lr_scale = train_kwargs.pop("encoder_lr_scale", DEFAULT_ENCODER_LR_SCALE)
    opts = Options.of({**params, "train_kwargs": train_kwargs}, encoder_lr_scale)
    if model is not None:  # prediction only: the patch settings and genes are the trained model's
        if image_encoder is not None:
            raise ValueError("With model= nothing is trained, so image_encoder is unused: leave it None.")
        opts = _with_model_settings(opts, model)
    else:
        opts = replace(opts, image_encoder=_image_encoder(opts))
    if not opts.use_patches and opts.features is None:
        raise ValueError("use_patches=False needs features (e.g. features='stats').")
    if opts.size_unit not in SIZE_UNITS:
        raise ValueError(f"size_unit={opts.size_unit!r} is not one of 'coords', 'px'.")
    if not opts.patch_scale > 0:
        raise ValueError(f"patch_scale={opts.patch_scale} must be positive (patch side in spot diameters).")
    backbone = _backbone(opts.features, opts.feature_weights, opts.feature_kwargs, model)

    feats = None if opts.features is None else (backbone or opts.features, _torch_device(accelerator))
    plan, sections = read_sections(data, opts, trained=model is not None, features=feats)

    if model is None:
        model = _train(opts, plan, sections, backbone)
    else:
        info(f"hist2expr: predicting {opts.predict_regions} with the given model, {len(plan.genes)} genes")
    preds = model.predict(PatchSource(sections.in_order(plan), opts.patch_px), window_size=window_size, tta=opts.tta)
    _write(data, plan, sections, model.module.target_sum, preds, run_record("hist2expr", params))
    return model


def _with_layer(view, layer):
    adata = view.copy()
    adata.X = adata.layers[layer]
    return adata
