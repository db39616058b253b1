"""``ss.tl.hist2expr``: train histology -> expression on sections with measurements, predict sections with images.

:func:`hist2expr` reads its arguments into :class:`_Options` (a trained ``model=`` replaces the patch settings),
plans the run (:class:`_Plan`: the table rows, genes and sections that train, validate and predict, all checked
before any work), cuts and describes the patches of every section (:class:`_Patches` -> :class:`_Sections`), trains
:class:`~sslspatial.model.Hist2Expr` (:func:`_train`) and writes the predictions as a new table (:func:`_write`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._constants import check_key
from .._io import get_coordinates, get_image, get_table, linear_scale, require_spatialdata, table_attrs
from .._logging import info
from .._provenance import run_record, seed_everything
from .._validate import check_absent, check_numbers, trainer_options
from ..data._patch_cache import pyramid_levels
from ..data._patch_loader import PatchSection, PatchSource
from ..metrics import pearson_per_gene
from ..model._hist2expr import Hist2Expr
from ..pp._backbones import LoadedBackbone, load_backbone
from ..pp._image_features import image_features
from ..pp._patches import ColourStats, check_centres_inside, check_image_values, crop_patches, to_unit_range
from ..pp._patches_sdata import obs_regions, resolve_region_images
from ..pp._tissue import tissue_grid
from ._yardsticks import RIDGE_BASELINE, ridge_on_image_statistics

#: Default patch side, in spot diameters (chosen on folds B4 and C5 of ``benchmarks/hist2expr_her2st.py``).
DEFAULT_PATCH_SCALE = 1.5


@dataclass
class _Options:
    """The arguments of one run, as the helpers read them (see :func:`hist2expr` for each)."""

    table_key: str
    image_key: str | Mapping[str, str] | None
    genes: Sequence[str] | None
    train_regions: Sequence[str] | None
    predict_regions: Sequence[str] | None
    library_key: str | None
    spot_size: float | None
    patch_scale: float
    size_unit: str
    patch_px: int
    features: str | None
    use_patches: bool
    feature_weights: str | None
    feature_kwargs: dict | None
    layer: str | None
    size_factor_key: str | None
    likelihood: str
    mse_weight: float
    likelihood_weight: float
    distill_weight: float
    n_validation_sections: int
    max_epochs: int
    lr: float
    window_size: int
    grid_spacing: float | None
    value_range: tuple[float, float] | None
    tta: bool
    colour_normalize: bool
    image_encoder: Any
    encoder_lr_scale: float
    baseline: bool
    key_added: str
    overwrite: bool
    seed: int | None
    accelerator: str
    devices: Any
    model_kwargs: dict | None
    train_kwargs: dict | None


@dataclass
class _Plan:
    """The table rows, genes and sections of one run (checked before any work)."""

    table: Any  # the AnnData; None when a trained model predicts shapes or images only
    unit_of_obs: np.ndarray  # section of every table row
    regions_of_obs: np.ndarray | None  # annotated region of every table row
    genes: list[str]
    train_regions: list[str]
    table_units: list[str]  # held-out sections of the table, predicted and scored
    other: list[str]  # shapes elements and images, predicted
    validation: list[str]
    key_added: str
    counts: Any = None  # (n_obs, n_genes) counts of the predicted genes, when something is scored
    library: np.ndarray | None = None  # total counts of every table row


@dataclass
class _Sections:
    """The patch sections of one run: measured ones (training and held-out table sections) and extra ones."""

    measured: dict[str, PatchSection] = field(default_factory=dict)
    extra: dict[str, tuple[PatchSection, str, pd.Index | None]] = field(default_factory=dict)  # (section, region, ids)
    baseline_features: dict[str, np.ndarray] | None = None  # the yardstick's inputs (None: baseline=False)
    train_size: float | None = None  # patch side of the training spots
    pitch: float | None = None  # spot pitch of the training sections

    def in_order(self, plan: _Plan) -> list[PatchSection]:
        """Training, held-out and extra sections, in the order of the output table."""
        measured = [self.measured[n] for n in plan.train_regions + plan.table_units]
        return measured + [v[0] for v in self.extra.values()]


@dataclass
class _Patches:
    """How the patches of every section are cut and described: the same for training and prediction."""

    sdata: Any
    size_unit: str
    value_range: tuple[float, float] | None
    features: tuple[Any, str] | None  # ("stats" / a loaded backbone, torch device), or None
    colour_normalize: bool = False

    def section(self, name: str, image_key: str, cs: str, coords: np.ndarray, rows: np.ndarray, size: float):
        """The :class:`PatchSection` of spots at ``coords`` (coordinate system ``cs``) on image ``image_key``."""
        image = get_image(self.sdata, image_key, cs)
        vr = check_image_values(image, self.value_range, name=f"image {image_key!r}")
        px = image.to_pixels(coords)
        check_centres_inside(image, px, what=f"spots of {name!r}")
        size_px = max(int(round(size * (image.pixels_per_unit if self.size_unit == "coords" else 1.0))), 1)
        levels = pyramid_levels(self.sdata.images[image_key])  # patches are cut once, from the coarsest level that fits
        section = PatchSection(name, image.image, px, coords, rows, size_px, vr, levels=levels)
        if self.colour_normalize:  # Reinhard: this section's tissue colour statistics, from up to 512 of its patches
            pick = np.random.default_rng(0).permutation(len(px))[:512]
            section.colour = ColourStats.of(to_unit_range(crop_patches(image.image, px[np.sort(pick)], size_px), vr))
        if self.features is not None:
            method, device = self.features
            section.features = image_features(
                image, coords, size, method, unit=self.size_unit, value_range=vr, device=device
            )
        return section

    def stats(self, image_key: str, cs: str, coords: np.ndarray, size: float) -> np.ndarray:
        """The yardstick's colour / texture statistics of the patches at ``coords``."""
        image = get_image(self.sdata, image_key, cs)
        vr = check_image_values(image, self.value_range, name=f"image {image_key!r}")
        return image_features(image, coords, size, "stats", unit=self.size_unit, value_range=vr)


def _units(table, library_key: str | None) -> tuple[np.ndarray, list[str]]:
    """Unit (section) name of every observation: ``obs[library_key]`` or the region."""
    if library_key is not None:
        if library_key not in table.obs:
            raise KeyError(f"library_key={library_key!r} is not a column of obs.")
        names = table.obs[library_key].astype(str).to_numpy()
    else:
        regions, names = obs_regions(table)
        if not regions:
            raise ValueError(
                "The table annotates no region: hist2expr needs a SpatialData table linked to spot shapes."
            )
    return names, list(pd.unique(names))


def _spot_size(sdata, table, region: str, cs: str) -> float:
    geometry = table.uns.get("spot_geometry", {}) if table is not None else {}
    if "spot_diameter" in geometry:
        return float(geometry["spot_diameter"])
    if region in sdata.shapes and "radius" in sdata.shapes[region]:
        from spatialdata.transformations import get_transformation

        scale = linear_scale(get_transformation(sdata.shapes[region], to_coordinate_system=cs))
        return float(2 * np.median(sdata.shapes[region]["radius"]) * scale)
    raise ValueError(f"Cannot infer the spot size of region {region!r}: pass spot_size=<diameter in coordinate units>.")


def _patch_side(opts: _Options, sdata, table, region: str, cs: str) -> float:
    """``spot_size`` when given, else ``patch_scale`` spot diameters of ``region``."""
    return opts.spot_size if opts.spot_size is not None else opts.patch_scale * _spot_size(sdata, table, region, cs)


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


def _image_encoder(opts: _Options):
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


def _with_model_settings(opts: _Options, model) -> _Options:
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


def _plan(sdata, opts: _Options, trained: bool) -> _Plan:
    """Check the sections, genes and columns of a run and pick its table rows (``trained``: a model was given)."""
    table = get_table(sdata, opts.table_key) if not trained or opts.table_key in sdata.tables else None
    unit_of_obs, units = _units(table, opts.library_key) if table is not None else (np.array([]), [])
    predict = list(opts.predict_regions or [])
    train = list(opts.train_regions) if opts.train_regions is not None else [u for u in units if u not in predict]
    unknown = [u for u in train if u not in units]
    if unknown:
        raise ValueError(f"train_regions {unknown} are not sections of table {opts.table_key!r} ({units}).")
    if not train and not trained:
        raise ValueError("No training section: train_regions is empty.")
    genes = opts.genes
    if genes is not None and (not trained or any(u in units for u in predict)):
        missing = [g for g in genes if g not in table.var_names]
        if missing:
            raise ValueError(
                f"{len(missing)} requested gene(s) are missing from table {opts.table_key!r}: {missing[:10]}."
            )
    genes = list(table.var_names) if genes is None else list(genes)
    if opts.size_factor_key is not None and table is not None and opts.size_factor_key not in table.obs:
        raise KeyError(f"size_factor_key={opts.size_factor_key!r} is not a column of obs of table {opts.table_key!r}.")
    if opts.n_validation_sections >= len(train) and not trained:
        raise ValueError(
            f"{len(train)} training section(s) leave no room for {opts.n_validation_sections} validation "
            "section(s): add training sections, or pass n_validation_sections=0 to train without validation."
        )
    other = [r for r in predict if r not in units]
    for name in other:
        if name not in sdata.shapes and name not in sdata.images:
            raise ValueError(
                f"predict region {name!r} is neither a section of the table, a shapes element, nor an image, so it "
                "has no image to predict from."
            )
    validation = list(train[-opts.n_validation_sections :]) if opts.n_validation_sections else []
    plan = _Plan(
        table, unit_of_obs, obs_regions(table)[1] if table is not None else None, genes, train,
        [u for u in predict if u in units], other, validation, opts.key_added,
    )  # fmt: skip
    if table is not None:
        x = table.layers[opts.layer] if opts.layer else table.X
        key = opts.size_factor_key
        plan.library = table.obs[key].to_numpy(np.float64) if key else np.asarray(x.sum(1)).ravel()
        plan.counts = x[:, table.var_names.get_indexer(genes)] if plan.table_units or not trained else None
    return plan


def _image_for(sdata, opts: _Options, name: str, region: str) -> tuple[str, str]:
    """The image of section ``name`` (of ``region``) and the coordinate system it shares with the spots."""
    image_key = opts.image_key
    key = image_key.get(name, image_key.get(region)) if isinstance(image_key, Mapping) else image_key
    if isinstance(image_key, Mapping) and key is None:
        raise KeyError(f"Section {name!r} has no image: image_key has no entry for it (or its region {region!r}).")
    return resolve_region_images(sdata, opts.table_key, key, [region])[region]


def _shape_centres(sdata, region: str, cs: str) -> tuple[np.ndarray, pd.Index]:
    from spatialdata import get_centroids

    centroids = get_centroids(sdata[region], coordinate_system=cs)
    centroids = centroids.compute() if hasattr(centroids, "compute") else centroids
    return centroids[["x", "y"]].to_numpy(np.float64), sdata[region].index


def _sections(opts: _Options, plan: _Plan, patches: _Patches, trained: bool) -> _Sections:
    """Patches of every section (every image and coordinate check before training); the yardstick's statistics."""
    from spatialdata.transformations import get_transformation

    sdata, out, sizes = patches.sdata, _Sections(baseline_features={} if opts.baseline else None), {}
    for name in plan.train_regions + plan.table_units:
        rows = np.flatnonzero(plan.unit_of_obs == name)
        region = str(plan.regions_of_obs[rows[0]])
        key, cs = _image_for(sdata, opts, name, region)
        sizes[name] = size = _patch_side(opts, sdata, plan.table, region, cs)
        coords = get_coordinates(sdata, opts.table_key, "spatial", cs, rows=rows)
        out.measured[name] = patches.section(name, key, cs, coords, rows, size)
        if opts.baseline and not trained:  # the yardstick's inputs: the stats features when the model has them
            stats = out.measured[name].features if opts.features == "stats" else None
            out.baseline_features[name] = stats if stats is not None else patches.stats(key, cs, coords, size)
    if trained:
        out.train_size, out.pitch = opts.spot_size, opts.grid_spacing
    else:
        out.train_size = float(np.median([sizes[n] for n in plan.train_regions]))
        out.pitch = float(np.median([out.measured[n].pitch for n in plan.train_regions]))
    for name in plan.other:
        if name in sdata.shapes:  # spot shapes without measurements
            key, cs = _image_for(sdata, opts, name, name)
            coords, index = _shape_centres(sdata, name, cs)
            size = _patch_side(opts, sdata, plan.table, name, cs)
            out.extra[name] = (patches.section(name, key, cs, coords, np.full(len(coords), -1), size), name, index)
            continue
        cs = sorted(get_transformation(sdata.images[name], get_all=True))[0]  # an image: a pseudo-spot grid
        spacing = opts.grid_spacing or out.pitch
        if out.train_size is None or spacing is None:
            raise ValueError(
                f"Predicting image {name!r} on a pseudo-spot grid needs spot_size and grid_spacing (this model "
                "does not record its training spot size and pitch)."
            )
        coords = tissue_grid(get_image(sdata, name, cs), spacing)
        if len(coords) == 0:
            raise ValueError(f"No tissue found in image {name!r}: pass grid_spacing or predict on spot shapes.")
        grid_name = check_key(f"{name}_{opts.key_added}_grid", "grid shapes name")
        check_absent(grid_name in sdata.shapes and not opts.overwrite, f"shapes[{grid_name!r}]")
        section = patches.section(name, name, cs, coords, np.full(len(coords), -1), out.train_size)
        out.extra[name] = (section, grid_name, None)
    return out


def _train(opts: _Options, plan: _Plan, sections: _Sections, backbone: LoadedBackbone | None) -> Hist2Expr:
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
        adata, patch_px=opts.patch_px, likelihood=opts.likelihood, mse_weight=opts.mse_weight,
        likelihood_weight=opts.likelihood_weight, distill_weight=opts.distill_weight,
        n_features=0 if first is None else first.shape[1], use_patches=opts.use_patches, patch_settings=settings,
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


def hist2expr(
    data: Any,
    *,
    table_key: str = "table",
    image_key: str | Mapping[str, str] | None = None,
    genes: Sequence[str] | None = None,
    train_regions: Sequence[str] | None = None,
    predict_regions: Sequence[str] | None = None,
    library_key: str | None = None,
    spot_size: float | None = None,
    patch_scale: float = DEFAULT_PATCH_SCALE,
    size_unit: Literal["coords", "px"] = "coords",
    patch_px: int = 32,
    features: str | None = "stats",
    use_patches: bool = True,
    feature_weights: str | None = None,
    feature_kwargs: dict | None = None,
    layer: str | None = None,
    size_factor_key: str | None = None,
    likelihood: Literal["zinb", "nb", "poisson", "gaussian", "none"] = "zinb",
    mse_weight: float = 1.0,
    likelihood_weight: float = 0.25,
    distill_weight: float = 0.5,
    n_validation_sections: int = 0,
    max_epochs: int = 60,
    lr: float = 1e-2,
    window_size: int = 32,
    grid_spacing: float | None = None,
    value_range: tuple[float, float] | None = None,
    tta: bool = False,
    colour_normalize: bool = False,
    image_encoder: Any = None,
    encoder_lr_scale: float = 0.1,
    model: Hist2Expr | None = None,
    baseline: bool = True,
    key_added: str = "hist2expr",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
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
        Patch side in coordinate units (``size_unit="coords"``) or image pixels. Default: ``patch_scale`` times
        each section's spot diameter (from ``uns["spot_geometry"]`` or the spot shapes' radius).
    patch_scale
        Patch side in spot diameters when ``spot_size`` is None. Default ``1.5``: a patch with some tissue around the
        spot, the configuration chosen on folds B4 and C5 of ``benchmarks/hist2expr_her2st.py`` (issue 4) and
        measured there as the default row.
    size_unit
        ``"coords"`` or ``"px"``.
    patch_px
        Patches are resampled to this side for the encoder.
    features
        Precomputed image features of every patch fed alongside the ConvMixer (frozen encoder): ``"stats"``
        (colour / texture statistics), a backbone name (see :func:`~sslspatial.pp.image_features`), or None.
    use_patches
        Train the ConvMixer on the patches (False: the precomputed ``features`` only, much faster).
    feature_weights
        Local weights file of a backbone ``features`` (``"hub"``: the library's download; ``"random"``: untrained).
        Every tensor of the backbone must be in it (see :func:`~sslspatial.pp.load_backbone`); its SHA-256, the
        patch side and the input normalisation used (from the library's configuration of the architecture) are
        saved with the model, and a reloaded model refuses a weights file with another checksum.
    feature_kwargs
        Keyword arguments of the backbone's constructor (``timm.create_model``), e.g. UNI's
        ``{"init_values": 1e-5, "dynamic_img_size": True}``; saved with the model.
    layer, size_factor_key
        Counts layer (default X) and ``obs`` column of total counts (default: sum over the table's genes).
    likelihood, mse_weight, likelihood_weight, distill_weight
        Loss terms (see :class:`~sslspatial.module._hist2expr.Hist2ExprModule`).
    n_validation_sections
        Training sections held out for early stopping. Default ``0``: train on every section for ``max_epochs``,
        the configuration of the benchmark's default row (with few sections, as the five of her2st, one less
        training section cost more than early stopping saved).
    max_epochs, lr, window_size
        Training settings (``window_size`` spots per minibatch).
    grid_spacing
        Pseudo-spot grid step for image-only predictions (default: the training spot pitch).
    value_range
        Pixel value range, required unless images are RGB uint8.
    tta
        Average predictions over the 8 rotations / flips.
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
    encoder_lr_scale
        With ``image_encoder``: the encoder trains at ``lr * encoder_lr_scale`` (fine-tuning); 0 freezes it (weights
        and batch-norm statistics).
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
    seed
        Seeds Python, NumPy and torch before the model is built (``None``: leave the random state as it is).
    accelerator, devices
        Lightning device settings (``accelerator="gpu"``, ``devices=1``).
    model_kwargs, train_kwargs
        Extra :class:`~sslspatial.model.Hist2Expr` / ``train`` arguments.

    Returns
    -------
    The trained :class:`~sslspatial.model._hist2expr.Hist2Expr` (its ``patch_source`` covers the training table).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.her2st(path="../shared/data/her2st", genes="hvg", image_downscale=4)  # doctest: +SKIP
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
    opts = _Options(**params)
    if model is not None:  # prediction only: the patch settings and genes are the trained model's
        if image_encoder is not None:
            raise ValueError("With model= nothing is trained, so image_encoder is unused: leave it None.")
        opts = _with_model_settings(opts, model)
    else:
        opts = replace(opts, image_encoder=_image_encoder(opts))
    if not opts.use_patches and opts.features is None:
        raise ValueError("use_patches=False needs features (e.g. features='stats').")
    backbone = _backbone(opts.features, opts.feature_weights, opts.feature_kwargs, model)
    if opts.size_unit not in ("coords", "px"):
        raise ValueError(f"size_unit={opts.size_unit!r} is not one of 'coords', 'px'.")
    if not opts.patch_scale > 0:
        raise ValueError(f"patch_scale={opts.patch_scale} must be positive (patch side in spot diameters).")
    check_absent(key_added in data.tables and not overwrite, f"tables[{key_added!r}]")
    plan = _plan(data, opts, trained=model is not None)
    feats = None if opts.features is None else (backbone or opts.features, _torch_device(accelerator))
    patches = _Patches(data, opts.size_unit, value_range, feats, opts.colour_normalize)
    sections = _sections(opts, plan, patches, trained=model is not None)
    if model is None:
        model = _train(opts, plan, sections, backbone)
    else:
        info(f"hist2expr: predicting {opts.predict_regions} with the given model, {len(plan.genes)} genes")
    preds = model.predict(PatchSource(sections.in_order(plan), opts.patch_px), window_size=window_size, tta=tta)
    _write(data, plan, sections, model, preds, run_record("hist2expr", params))
    return model


def _with_layer(view, layer):
    adata = view.copy()
    adata.X = adata.layers[layer]
    return adata


def _log_target(counts, library, rows, target_sum) -> np.ndarray:
    x = counts[rows]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    return np.log1p(x / np.maximum(library[rows, None], 1e-8) * target_sum).astype(np.float32)


def _ridge_yardstick(plan: _Plan, sections: _Sections, target_sum: float) -> tuple[dict[str, np.ndarray], Any]:
    """Ridge-on-image-statistics predictions of every measured section, fitted on the model's fitting sections."""
    if not sections.baseline_features:
        return {}, None
    fit = [n for n in plan.train_regions if n not in plan.validation]
    x = np.concatenate([sections.baseline_features[n] for n in fit])
    y = np.concatenate([_log_target(plan.counts, plan.library, sections.measured[n].rows, target_sum) for n in fit])
    return ridge_on_image_statistics(x, y, sections.baseline_features)


def _grid_shapes(sdata, name: str, section: PatchSection, index: pd.Index) -> Any:
    """Pseudo-spot circles of an image-only prediction, in the image's first coordinate system."""
    import geopandas as gpd
    from shapely import points
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    gdf = gpd.GeoDataFrame({"radius": np.full(len(index), section.size_px / 2)},
                           geometry=points(section.centres_px), index=index)  # fmt: skip
    img_t = get_transformation(sdata.images[name], get_all=True)
    cs = sorted(img_t)[0]
    return ShapesModel.parse(gdf, transformations={cs: img_t[cs]})


def _write(sdata, plan: _Plan, sections: _Sections, model, preds, run: dict) -> None:
    """Write the predictions, measurements and per-gene scores (model and yardstick) as ``tables[key_added]``."""
    import anndata as ad
    from spatialdata.models import TableModel

    table, key_added, target_sum = plan.table, plan.key_added, model.module.target_sum
    instance_key = (table_attrs(table) if table is not None else {}).get("instance_key", "instance_id")
    names = plan.train_regions + plan.table_units + list(sections.extra)
    obs_parts, x_parts, measured_parts, coord_parts, var_pearson, means = [], [], [], [], {}, {}
    ridge, alpha = _ridge_yardstick(plan, sections, target_sum)
    baseline_means = {}
    for name, pred in zip(names, preds, strict=True):
        if name in sections.measured:
            rows = sections.measured[name].rows
            split = "validation" if name in plan.validation else ("train" if name in plan.train_regions else "predict")
            obs = pd.DataFrame({"region": plan.regions_of_obs[rows].astype(str), "instance_id": table.obs[instance_key]
                                .to_numpy()[rows], "section": name, "split": split}, index=table.obs_names[rows])  # fmt: skip
            truth = _log_target(plan.counts, plan.library, rows, target_sum)
            r = pearson_per_gene(truth, pred)
            var_pearson[f"pearson_{name}"] = r
            means[name] = {"mean": float(np.nanmean(r)), "median": float(np.nanmedian(r)), "split": split}
            if name in ridge:  # the yardstick: same metric, same spots, same genes
                rb = pearson_per_gene(truth, ridge[name])
                var_pearson[f"baseline_pearson_{name}"] = rb
                baseline_means[name] = {"mean": float(np.nanmean(rb)), "median": float(np.nanmedian(rb)),
                                        "split": split}  # fmt: skip
            measured_parts.append(truth)
            coord_parts.append(np.asarray(sections.measured[name].coords, dtype=np.float64))
        else:
            section, region, index = sections.extra[name]
            if index is None:  # pseudo-spot grid: a new shapes element
                # instance ids must share one dtype across the regions of the table: follow the measured table's ids
                ids_are_numeric = table is None or pd.api.types.is_integer_dtype(table.obs[instance_key])
                index = (
                    pd.RangeIndex(len(pred))
                    if ids_are_numeric
                    else pd.Index([f"{name}_grid_{i}" for i in range(len(pred))])
                )
                sdata.shapes[region] = _grid_shapes(sdata, name, section, index)
            obs = pd.DataFrame({"region": region, "instance_id": np.asarray(index), "section": name,
                                "split": "predict"}, index=[f"{region}-{i}" for i in index])  # fmt: skip
            measured_parts.append(np.full(pred.shape, np.nan, np.float32))
            coord_parts.append(np.asarray(section.coords, dtype=np.float64))
        obs_parts.append(obs)
        x_parts.append(pred)
    obs = pd.concat(obs_parts)
    obs.index = obs.index.astype(str)
    regions = list(pd.unique(obs["region"]))
    obs["region"] = pd.Categorical(obs["region"], categories=regions)
    out = ad.AnnData(np.concatenate(x_parts).astype(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(plan.genes)))
    out.layers["measured"] = np.concatenate(measured_parts)
    out.obsm["spatial"] = np.concatenate(coord_parts)
    for k, v in var_pearson.items():
        out.var[k] = v
    out.uns[key_added] = {**(run or {}), "mean_pearson": means, "genes": len(plan.genes),
                          "target": "log1p(x / total * 1e4)", "patch_seconds": {n: s.cache_seconds for n, s in
                          zip(names, sections.in_order(plan), strict=True)}}  # fmt: skip
    if ridge:
        fit = [n for n in plan.train_regions if n not in plan.validation]
        out.uns[key_added].update({
            "baseline_mean_pearson": baseline_means,
            "baseline": RIDGE_BASELINE,
            "baseline_fit_sections": fit,
            "baseline_ridge_alpha": alpha,
        })  # fmt: skip
    elif means:
        out.uns[key_added]["baseline"] = (
            "none: baseline=False" if sections.baseline_features is None
            else "none: nothing was trained here (model=), so there are no training spots"
        )  # fmt: skip
    sdata.tables[key_added] = TableModel.parse(out, region=regions, region_key="region", instance_key="instance_id")
