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
from .._provenance import run_record
from .._types import DataLike
from .._validate import check_absent, check_numbers
from ..data._patch_loader import PatchSource
from ..io._access import require_spatialdata
from ..io._hist2expr import Options, read_sections
from ..io._hist2expr import Patches as _Patches  # noqa: F401 (its old import path, used by tests)
from ..io._hist2expr_write import write_predictions as _write
from ..model._hist2expr import DEFAULT_ENCODER_LR_SCALE, TRAIN_DEFAULTS, Hist2Expr, Hist2ExprLikelihood
from ..model._hist2expr_setup import checked_image_encoder, torch_device, train_on_sections
from ..pp._backbones import load_backbone_for

SIZE_UNITS = get_args(Literal["coords", "px"])

#: Default patch side, in spot diameters (chosen on folds B4 and C5 of ``benchmarks/hist2expr_her2st.py``).
DEFAULT_PATCH_SCALE = 1.5


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
        opts = opts.for_model(model)
    else:
        opts = replace(opts, image_encoder=checked_image_encoder(opts))
    if not opts.use_patches and opts.features is None:
        raise ValueError("use_patches=False needs features (e.g. features='stats').")
    if opts.size_unit not in SIZE_UNITS:
        raise ValueError(f"size_unit={opts.size_unit!r} is not one of 'coords', 'px'.")
    if not opts.patch_scale > 0:
        raise ValueError(f"patch_scale={opts.patch_scale} must be positive (patch side in spot diameters).")
    trained = model.patch_settings if model is not None else None
    backbone = load_backbone_for(opts.features, opts.feature_weights, opts.feature_kwargs, trained)

    feats = None if opts.features is None else (backbone or opts.features, torch_device(accelerator))
    plan, sections = read_sections(data, opts, trained=model is not None, features=feats)

    if model is None:
        model = train_on_sections(opts, plan, sections, backbone)
    else:
        info(f"hist2expr: predicting {opts.predict_regions} with the given model, {len(plan.genes)} genes")
    preds = model.predict(PatchSource(sections.in_order(plan), opts.patch_px), window_size=window_size, tta=opts.tta)
    _write(data, plan, sections, model.module.target_sum, preds, run_record("hist2expr", params))
    return model
