"""hist2expr's reader: the table rows, genes and image patches of every section, in one pass over the SpatialData.

:func:`read_sections` checks the sections, genes and columns of a run (:class:`Plan`, before any work) and cuts and
describes the patches of every section (:class:`Patches` -> :class:`Sections`), which
:class:`~sslspatial.model.Hist2Expr` trains on and predicts (:mod:`sslspatial.io._hist2expr_write` writes the
predictions). Nothing below this module sees a SpatialData.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .._constants import check_key
from .._validate import check_absent
from ..data._patch_cache import pyramid_levels
from ..data._patch_loader import PatchSection
from ..pp._image_features import image_features
from ..pp._patches import ColourStats, check_centres_inside, check_image_values, crop_patches, to_unit_range
from ..pp._patches_sdata import obs_regions, resolve_region_images
from ..pp._tissue import tissue_grid
from ._access import get_coordinates, get_image, get_table, linear_scale

__all__ = ["PATCH_DEFAULTS", "Options", "Patches", "Plan", "Sections", "read_sections"]


@dataclass
class Options:
    """The arguments of one run, as the helpers read them (see :func:`sslspatial.tl.hist2expr` for each).

    The fields after ``train_kwargs`` are the keys of ``patch_kwargs`` (:data:`PATCH_DEFAULTS`) and the
    ``encoder_lr_scale`` of ``train_kwargs``.
    """

    table_key: str
    image_key: str | Mapping[str, str] | None
    genes: Sequence[str] | None
    train_regions: Sequence[str] | None
    predict_regions: Sequence[str] | None
    library_key: str | None
    spot_size: float | None
    patch_scale: float
    patch_px: int
    features: str | None
    use_patches: bool
    layer: str | None
    size_factor_key: str | None
    likelihood: str
    n_validation_sections: int
    max_epochs: int
    lr: float
    window_size: int
    colour_normalize: bool
    image_encoder: Any
    baseline: bool
    key_added: str
    overwrite: bool
    seed: int | None
    accelerator: str
    devices: Any
    model_kwargs: dict | None
    train_kwargs: dict | None
    encoder_lr_scale: float
    size_unit: str = "coords"
    value_range: tuple[float, float] | None = None
    grid_spacing: float | None = None
    tta: bool = False
    feature_weights: str | None = None
    feature_kwargs: dict | None = None

    @classmethod
    def of(cls, params: Mapping[str, Any], encoder_lr_scale: float) -> Options:
        """The options of the arguments ``params`` of :func:`sslspatial.tl.hist2expr` (``patch_kwargs`` expanded)."""
        patch = dict(params.get("patch_kwargs") or {})
        unknown = sorted(set(patch) - set(PATCH_DEFAULTS))
        if unknown:
            raise TypeError(f"Unknown patch_kwargs {unknown}: use {sorted(PATCH_DEFAULTS)}.")
        args = {k: v for k, v in params.items() if k not in ("patch_kwargs", "model")}
        return cls(**args, encoder_lr_scale=encoder_lr_scale, **patch)

    def for_model(self, model: Any) -> Options:
        """Checks of prediction-only use (``model=``); these options with the model's genes and patch settings."""
        from ..model._hist2expr import Hist2Expr

        if not isinstance(model, Hist2Expr):
            raise TypeError(f"model must be a trained sslspatial.model.Hist2Expr, not {type(model).__name__}.")
        if self.train_regions:
            raise ValueError("With model= nothing is trained: leave train_regions empty, or pass model=None to train.")
        if not self.predict_regions:
            raise ValueError("With model=, name the sections, shapes or images to predict in predict_regions.")
        if self.image_encoder is not None:
            raise ValueError("With model= nothing is trained, so image_encoder is unused: leave it None.")
        if model.adata is None:
            raise ValueError(
                "The model carries no AnnData, so its genes are unknown: load it with Hist2Expr.load(path, adata=...) "
                "or save it with model.save(path, save_anndata=True)."
            )
        if self.genes is not None and list(self.genes) != list(model.adata.var_names):
            raise ValueError("With model=, genes are the model's (model.adata.var_names): leave genes=None.")
        settings = model.patch_settings
        return replace(
            self,
            genes=list(model.adata.var_names),
            patch_px=model.module.patch_px,
            use_patches=model.module.use_patches,
            features=settings.get("features"),
            feature_weights=settings.get("feature_weights"),
            feature_kwargs=settings.get("feature_kwargs"),
            colour_normalize=bool(settings.get("colour_normalize", False)),
            size_unit=settings.get("size_unit", self.size_unit),
            spot_size=self.spot_size if self.spot_size is not None else settings.get("spot_size"),
            grid_spacing=self.grid_spacing if self.grid_spacing is not None else settings.get("pitch"),
            train_regions=[],
            n_validation_sections=0,
        )


#: ``patch_kwargs`` of :func:`sslspatial.tl.hist2expr`: how patches are cut, described and predicted, and their defaults.
PATCH_DEFAULTS = {
    "size_unit": "coords", "value_range": None, "grid_spacing": None, "tta": False, "feature_weights": None,
    "feature_kwargs": None,
}  # fmt: skip


@dataclass
class Plan:
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
class Sections:
    """The patch sections of one run: measured ones (training and held-out table sections) and extra ones."""

    measured: dict[str, PatchSection] = field(default_factory=dict)
    extra: dict[str, tuple[PatchSection, str, pd.Index | None]] = field(default_factory=dict)  # (section, region, ids)
    baseline_features: dict[str, np.ndarray] | None = None  # the yardstick's inputs (None: baseline=False)
    train_size: float | None = None  # patch side of the training spots
    pitch: float | None = None  # spot pitch of the training sections

    def in_order(self, plan: Plan) -> list[PatchSection]:
        """Training, held-out and extra sections, in the order of the output table."""
        measured = [self.measured[n] for n in plan.train_regions + plan.table_units]
        return measured + [v[0] for v in self.extra.values()]


@dataclass
class Patches:
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


def _patch_side(opts: Options, sdata, table, region: str, cs: str) -> float:
    """``spot_size`` when given, else ``patch_scale`` spot diameters of ``region``."""
    return opts.spot_size if opts.spot_size is not None else opts.patch_scale * _spot_size(sdata, table, region, cs)


def _plan(sdata, opts: Options, trained: bool) -> Plan:
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
    plan = Plan(
        table, unit_of_obs, obs_regions(table)[1] if table is not None else None, genes, train,
        [u for u in predict if u in units], other, validation, opts.key_added,
    )  # fmt: skip
    if table is not None:
        x = table.layers[opts.layer] if opts.layer else table.X
        key = opts.size_factor_key
        plan.library = table.obs[key].to_numpy(np.float64) if key else np.asarray(x.sum(1)).ravel()
        plan.counts = x[:, table.var_names.get_indexer(genes)] if plan.table_units or not trained else None
    return plan


def _image_for(sdata, opts: Options, name: str, region: str) -> tuple[str, str]:
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


def _sections(opts: Options, plan: Plan, patches: Patches, trained: bool) -> Sections:
    """Patches of every section (every image and coordinate check before training); the yardstick's statistics."""
    from spatialdata.transformations import get_transformation

    sdata, out, sizes = patches.sdata, Sections(baseline_features={} if opts.baseline else None), {}
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


def read_sections(sdata, opts: Options, *, trained: bool, features: tuple[Any, str] | None) -> tuple[Plan, Sections]:
    """The plan of a run and the patch sections of every section it trains on or predicts.

    Parameters
    ----------
    sdata
        The SpatialData with the table, its spot shapes and the image(s).
    opts
        The run's options (see :func:`sslspatial.tl.hist2expr`).
    trained
        Whether a trained model was given (prediction only).
    features
        ``("stats" or a loaded backbone, torch device)`` of the precomputed patch features, or None.

    Returns
    -------
    The checked table rows, genes and sections (:class:`Plan`) and their patches (:class:`Sections`).
    """
    plan = _plan(sdata, opts, trained)
    patches = Patches(sdata, opts.size_unit, opts.value_range, features, opts.colour_normalize)
    return plan, _sections(opts, plan, patches, trained)
