"""``ss.tl.hist2expr``: train histology -> expression on sections with measurements, predict sections with images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._constants import check_key
from .._io import get_coordinates, get_image, get_table, require_spatialdata, table_attrs
from .._logging import info
from .._provenance import run_record, seed_everything
from .._validate import check_absent, trainer_options
from ..data._patch_loader import PatchSection, PatchSource
from ..metrics import pearson_per_gene
from ..model._hist2expr import Hist2Expr
from ..pp._backbones import LoadedBackbone, load_backbone
from ..pp._image_features import image_features
from ..pp._patches import ColourStats, check_centres_inside, check_image_values, crop_patches, to_unit_range
from ..pp._patches_sdata import obs_regions, resolve_region_images
from ..pp._tissue import tissue_grid
from ._yardsticks import RIDGE_BASELINE, ridge_on_image_statistics


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
    geometry = table.uns.get("spot_geometry", {})
    if "spot_diameter" in geometry:
        return float(geometry["spot_diameter"])
    if region in sdata.shapes and "radius" in sdata.shapes[region]:
        from spatialdata.transformations import get_transformation

        scale = get_transformation(sdata.shapes[region], to_coordinate_system=cs).to_affine_matrix(
            ("x", "y"), ("x", "y")
        )
        return float(2 * np.median(sdata.shapes[region]["radius"]) * np.sqrt(abs(np.linalg.det(scale[:2, :2]))))
    raise ValueError(f"Cannot infer the spot size of region {region!r}: pass spot_size=<diameter in coordinate units>.")


def _section(
    sdata, name, image_key, cs, coords, rows, size, unit, value_range, features, normalize=False
) -> PatchSection:
    image = get_image(sdata, image_key, cs)
    vr = check_image_values(image, value_range, name=f"image {image_key!r}")
    px = image.to_pixels(coords)
    check_centres_inside(image, px, what=f"spots of {name!r}")
    size_px = max(int(round(size * (image.pixels_per_unit if unit == "coords" else 1.0))), 1)
    section = PatchSection(name, image.image, px, coords, rows, size_px, vr)
    if normalize:  # Reinhard: this section's tissue colour statistics, from up to 512 of its patches
        pick = np.random.default_rng(0).permutation(len(px))[:512]
        section.colour = ColourStats.of(to_unit_range(crop_patches(image.image, px[np.sort(pick)], size_px), vr))
    if features is not None:
        method, device = features
        section.features = image_features(image, coords, size, method, unit=unit, value_range=vr, device=device)
    return section


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


def _trained_settings(model, train_regions, predict_regions, genes) -> dict:
    """Checks of prediction-only use (``model=``); the model's patch settings."""
    if not isinstance(model, Hist2Expr):
        raise TypeError(f"model must be a trained sslspatial.model.Hist2Expr, not {type(model).__name__}.")
    if train_regions:
        raise ValueError("With model= nothing is trained: leave train_regions empty, or pass model=None to train.")
    if not predict_regions:
        raise ValueError("With model=, name the sections, shapes or images to predict in predict_regions.")
    if model.adata is None:
        raise ValueError(
            "The model carries no AnnData, so its genes are unknown: load it with Hist2Expr.load(path, adata=...) "
            "or save it with model.save(path, save_anndata=True)."
        )
    if genes is not None and list(genes) != list(model.adata.var_names):
        raise ValueError("With model=, genes are the model's (model.adata.var_names): leave genes=None.")
    return model.patch_settings


def _shape_centres(sdata, region: str, cs: str) -> tuple[np.ndarray, pd.Index]:
    from spatialdata import get_centroids

    centroids = get_centroids(sdata[region], coordinate_system=cs)
    centroids = centroids.compute() if hasattr(centroids, "compute") else centroids
    return centroids[["x", "y"]].to_numpy(np.float64), sdata[region].index


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
    n_validation_sections: int = 1,
    max_epochs: int = 60,
    lr: float = 1e-2,
    window_size: int = 32,
    grid_spacing: float | None = None,
    value_range: tuple[float, float] | None = None,
    tta: bool = False,
    colour_normalize: bool = False,
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
    from the image's tissue mask (new shapes ``f"{image}_{key_added}_grid"``).

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
        Patch side (default: the spot diameter) in coordinate units (``size_unit="coords"``) or image pixels.
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
        Training sections held out for early stopping (0: train on all, no validation).
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
    params = {k: v for k, v in locals().items() if k not in ("data", "model")}
    require_spatialdata(data, "hist2expr", "the table, the spot shapes and the image(s)")
    sdata = data
    check_key(key_added, "key_added")
    if model is not None:  # prediction only: the patch settings and genes are the trained model's
        settings = _trained_settings(model, train_regions, predict_regions, genes)
        genes, patch_px, use_patches = list(model.adata.var_names), model.module.patch_px, model.module.use_patches
        features, feature_weights = settings.get("features"), settings.get("feature_weights")
        feature_kwargs = settings.get("feature_kwargs")
        colour_normalize = bool(settings.get("colour_normalize", False))
        size_unit = settings.get("size_unit", size_unit)
        spot_size = spot_size if spot_size is not None else settings.get("spot_size")
        grid_spacing = grid_spacing if grid_spacing is not None else settings.get("pitch")
        train_regions, n_validation_sections = [], 0
    if not use_patches and features is None:
        raise ValueError("use_patches=False needs features (e.g. features='stats').")
    backbone = _backbone(features, feature_weights, feature_kwargs, model)
    feats = None if features is None else (backbone or features, _torch_device(accelerator))
    if size_unit not in ("coords", "px"):
        raise ValueError(f"size_unit={size_unit!r} is not one of 'coords', 'px'.")
    check_absent(key_added in sdata.tables and not overwrite, f"tables[{key_added!r}]")
    table = get_table(sdata, table_key) if model is None or table_key in sdata.tables else None
    unit_of_obs, units = _units(table, library_key) if table is not None else (np.array([]), [])
    regions_of_obs = obs_regions(table)[1] if table is not None else None
    predict_regions = list(predict_regions or [])
    train_regions = list(train_regions) if train_regions is not None else [u for u in units if u not in predict_regions]
    unknown = [u for u in train_regions if u not in units]
    if unknown:
        raise ValueError(f"train_regions {unknown} are not sections of table {table_key!r} ({units}).")
    if not train_regions and model is None:
        raise ValueError("No training section: train_regions is empty.")
    if genes is not None and (model is None or any(u in units for u in predict_regions)):
        missing = [g for g in genes if g not in table.var_names]
        if missing:
            raise ValueError(f"{len(missing)} requested gene(s) are missing from table {table_key!r}: {missing[:10]}.")
    genes = list(table.var_names) if genes is None else list(genes)
    if size_factor_key is not None and table is not None and size_factor_key not in table.obs:
        raise KeyError(f"size_factor_key={size_factor_key!r} is not a column of obs of table {table_key!r}.")
    if n_validation_sections >= len(train_regions) and model is None:
        raise ValueError(
            f"{len(train_regions)} training section(s) leave no room for {n_validation_sections} validation "
            "section(s): add training sections, or pass n_validation_sections=0 to train without validation."
        )

    # --- images and sections (every check before training) ----------------------------------------------------
    def image_for(name: str, region: str) -> tuple[str, str]:
        key = image_key.get(name, image_key.get(region)) if isinstance(image_key, Mapping) else image_key
        if isinstance(image_key, Mapping) and key is None:
            raise KeyError(f"Section {name!r} has no image: image_key has no entry for it (or its region {region!r}).")
        return resolve_region_images(sdata, table_key, key, [region])[region]

    table_units = [u for u in predict_regions if u in units]
    other = [r for r in predict_regions if r not in units]
    for name in other:
        if name not in sdata.shapes and name not in sdata.images:
            raise ValueError(
                f"predict region {name!r} is neither a section of the table, a shapes element, nor an image, so it "
                "has no image to predict from."
            )
    measured_sections: dict[str, PatchSection] = {}
    # image statistics of the measured spots, for the yardstick (None: not asked for, or nothing is trained here)
    baseline_features: dict[str, np.ndarray] | None = {} if baseline else None
    sizes = {}
    for name in train_regions + table_units:
        rows = np.flatnonzero(unit_of_obs == name)
        region = str(regions_of_obs[rows[0]])
        key, cs = image_for(name, region)
        size = spot_size if spot_size is not None else _spot_size(sdata, table, region, cs)
        sizes[name] = size
        coords = get_coordinates(sdata, table_key, "spatial", cs, rows=rows)
        measured_sections[name] = _section(
            sdata, name, key, cs, coords, rows, size, size_unit, value_range, feats, colour_normalize
        )
        if baseline and model is None:
            stats = measured_sections[name].features if features == "stats" else None
            if stats is None:
                image = get_image(sdata, key, cs)
                vr = check_image_values(image, value_range, name=f"image {key!r}")
                stats = image_features(image, coords, size, "stats", unit=size_unit, value_range=vr)
            baseline_features[name] = stats
    if model is None:
        train_size = float(np.median([sizes[n] for n in train_regions]))
        pitch = float(np.median([measured_sections[n].pitch for n in train_regions]))
    else:
        train_size, pitch = spot_size, grid_spacing
    extra_sections: dict[str, tuple[PatchSection, str, pd.Index | None]] = {}
    for name in other:
        if name in sdata.shapes:
            key, cs = image_for(name, name)
            coords, index = _shape_centres(sdata, name, cs)
            size = spot_size if spot_size is not None else _spot_size(sdata, table, name, cs)
            section = _section(sdata, name, key, cs, coords, np.full(len(coords), -1), size, size_unit, value_range,
                               feats, colour_normalize)  # fmt: skip
            extra_sections[name] = (section, name, index)
        else:
            from spatialdata.transformations import get_transformation

            cs = sorted(get_transformation(sdata.images[name], get_all=True))[0]
            image = get_image(sdata, name, cs)
            if train_size is None or (grid_spacing or pitch) is None:
                raise ValueError(
                    f"Predicting image {name!r} on a pseudo-spot grid needs spot_size and grid_spacing (this model "
                    "does not record its training spot size and pitch)."
                )
            coords = tissue_grid(image, grid_spacing or pitch)
            if len(coords) == 0:
                raise ValueError(f"No tissue found in image {name!r}: pass grid_spacing or predict on spot shapes.")
            grid_name = check_key(f"{name}_{key_added}_grid", "grid shapes name")
            check_absent(grid_name in sdata.shapes and not overwrite, f"shapes[{grid_name!r}]")
            section = _section(sdata, name, name, cs, coords, np.full(len(coords), -1), train_size, size_unit,
                               value_range, feats, colour_normalize)  # fmt: skip
            extra_sections[name] = (section, grid_name, None)

    # --- model -----------------------------------------------------------------------------------------------
    counts, library = None, None
    if table is not None:
        x = table.layers[layer] if layer else table.X
        library = table.obs[size_factor_key].to_numpy(np.float64) if size_factor_key else np.asarray(x.sum(1)).ravel()
        counts = x[:, table.var_names.get_indexer(genes)] if table_units or model is None else None
    validation = list(train_regions[-n_validation_sections:]) if n_validation_sections else []
    if model is None:
        adata = table[:, genes].copy() if layer is None else _with_layer(table[:, genes], layer)
        adata.obs["_hist2expr_total"] = library
        Hist2Expr.setup_anndata(adata, library_key="_hist2expr_total")
        n_features = 0 if feats is None else measured_sections[train_regions[0]].features.shape[1]
        settings = {"colour_normalize": colour_normalize, "features": features, "feature_weights": feature_weights,
                    "size_unit": size_unit, "spot_size": train_size, "pitch": pitch}  # fmt: skip
        if backbone is not None:
            settings |= {"feature_kwargs": dict(feature_kwargs or {}), "feature_backbone": backbone.info}
        seed_everything(seed)
        model = Hist2Expr(adata, patch_px=patch_px, likelihood=likelihood, mse_weight=mse_weight,
                          likelihood_weight=likelihood_weight, distill_weight=distill_weight, n_features=n_features,
                          use_patches=use_patches, patch_settings=settings, **(model_kwargs or {}))  # fmt: skip
        model.set_patch_source(PatchSource([measured_sections[n] for n in train_regions], patch_px))
        info(f"hist2expr: training on {train_regions} (validation {validation}), {len(genes)} genes")
        model.train(max_epochs=max_epochs, lr=lr, validation_sections=validation, window_size=window_size,
                    early_stopping=bool(validation), **trainer_options("hist2expr", accelerator, devices, train_kwargs))  # fmt: skip
    else:
        info(f"hist2expr: predicting {predict_regions} with the given model, {len(genes)} genes")

    # --- predictions -----------------------------------------------------------------------------------------
    all_sections = [measured_sections[n] for n in train_regions + table_units] + [v[0] for v in extra_sections.values()]
    preds = model.predict(PatchSource(all_sections, patch_px), window_size=window_size, tta=tta)
    _write(sdata, table, counts, library, model, genes, train_regions, validation, table_units,
           extra_sections, measured_sections, preds, regions_of_obs, key_added, baseline_features,
           run=run_record("hist2expr", params))  # fmt: skip
    return model


def _with_layer(view, layer):
    adata = view.copy()
    adata.X = adata.layers[layer]
    return adata


def _log_target(counts, library, rows, target_sum) -> np.ndarray:
    x = counts[rows]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    return np.log1p(x / np.maximum(library[rows, None], 1e-8) * target_sum).astype(np.float32)


def _ridge_yardstick(counts, library, model, train_regions, validation, measured, baseline_features):
    """Ridge-on-image-statistics predictions of every measured section, fitted on the model's fitting sections."""
    if not baseline_features:
        return {}, None
    fit = [n for n in train_regions if n not in validation]
    x = np.concatenate([baseline_features[n] for n in fit])
    y = np.concatenate([_log_target(counts, library, measured[n].rows, model.module.target_sum) for n in fit])
    return ridge_on_image_statistics(x, y, baseline_features)


def _write(sdata, table, counts, library, model, genes, train_regions, validation, table_units, extra_sections,
           measured, preds, regions_of_obs, key_added, baseline_features=None, run=None):  # fmt: skip
    import anndata as ad
    import geopandas as gpd
    from shapely import points
    from spatialdata.models import ShapesModel, TableModel

    attrs = table_attrs(table) if table is not None else {}
    instance_key = attrs.get("instance_key", "instance_id")
    names = train_regions + table_units + list(extra_sections)
    obs_parts, x_parts, measured_parts, coord_parts, var_pearson, means = [], [], [], [], {}, {}
    ridge, alpha = _ridge_yardstick(counts, library, model, train_regions, validation, measured, baseline_features)
    baseline_means = {}
    for name, pred in zip(names, preds, strict=True):
        if name in measured:
            rows = measured[name].rows
            split = "validation" if name in validation else ("train" if name in train_regions else "predict")
            obs = pd.DataFrame({"region": regions_of_obs[rows].astype(str), "instance_id": table.obs[instance_key]
                                .to_numpy()[rows], "section": name, "split": split}, index=table.obs_names[rows])  # fmt: skip
            truth = _log_target(counts, library, rows, model.module.target_sum)
            r = pearson_per_gene(truth, pred)
            var_pearson[f"pearson_{name}"] = r
            means[name] = {"mean": float(np.nanmean(r)), "median": float(np.nanmedian(r)), "split": split}
            if name in ridge:  # the yardstick: same metric, same spots, same genes
                rb = pearson_per_gene(truth, ridge[name])
                var_pearson[f"baseline_pearson_{name}"] = rb
                baseline_means[name] = {"mean": float(np.nanmean(rb)), "median": float(np.nanmedian(rb)),
                                        "split": split}  # fmt: skip
            measured_parts.append(truth)
            coord_parts.append(np.asarray(measured[name].coords, dtype=np.float64))
        else:
            section, region, index = extra_sections[name]
            if index is None:  # pseudo-spot grid: a new shapes element
                # instance ids must share one dtype across the regions of the table: follow the measured table's ids
                ids_are_numeric = table is None or pd.api.types.is_integer_dtype(table.obs[instance_key])
                index = (
                    pd.RangeIndex(len(pred))
                    if ids_are_numeric
                    else pd.Index([f"{name}_grid_{i}" for i in range(len(pred))])
                )
                gdf = gpd.GeoDataFrame({"radius": np.full(len(pred), section.size_px / 2)},
                                       geometry=points(section.centres_px), index=index)  # fmt: skip
                from spatialdata.transformations import get_transformation

                img_t = get_transformation(sdata.images[name], get_all=True)
                cs = sorted(img_t)[0]
                sdata.shapes[region] = ShapesModel.parse(gdf, transformations={cs: img_t[cs]})
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
    out = ad.AnnData(np.concatenate(x_parts).astype(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    out.layers["measured"] = np.concatenate(measured_parts)
    out.obsm["spatial"] = np.concatenate(coord_parts)
    for k, v in var_pearson.items():
        out.var[k] = v
    out.uns[key_added] = {**(run or {}), "mean_pearson": means, "genes": len(genes), "target": "log1p(x / total * 1e4)"}
    if ridge:
        fit = [n for n in train_regions if n not in validation]
        out.uns[key_added].update({
            "baseline_mean_pearson": baseline_means,
            "baseline": RIDGE_BASELINE,
            "baseline_fit_sections": fit,
            "baseline_ridge_alpha": alpha,
        })  # fmt: skip
    elif means:
        out.uns[key_added]["baseline"] = (
            "none: baseline=False" if baseline_features is None
            else "none: nothing was trained here (model=), so there are no training spots"
        )  # fmt: skip
    sdata.tables[key_added] = TableModel.parse(out, region=regions, region_key="region", instance_key="instance_id")
    return model
