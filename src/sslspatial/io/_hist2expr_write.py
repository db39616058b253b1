"""hist2expr's writer: the predictions, measurements and per-gene scores as a new table, in one pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data._patch_loader import PatchSection
from ..metrics import pearson_per_gene
from ..model._yardsticks import RIDGE_BASELINE, ridge_on_image_statistics
from ._access import table_attrs
from ._hist2expr import Plan, Sections

__all__ = ["log_target", "write_predictions"]


def log_target(counts, library, rows, target_sum) -> np.ndarray:
    x = counts[rows]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    return np.log1p(x / np.maximum(library[rows, None], 1e-8) * target_sum).astype(np.float32)


def _ridge_yardstick(plan: Plan, sections: Sections, target_sum: float) -> tuple[dict[str, np.ndarray], Any]:
    """Ridge-on-image-statistics predictions of every measured section, fitted on the model's fitting sections."""
    if not sections.baseline_features:
        return {}, None
    fit = [n for n in plan.train_regions if n not in plan.validation]
    x = np.concatenate([sections.baseline_features[n] for n in fit])
    y = np.concatenate([log_target(plan.counts, plan.library, sections.measured[n].rows, target_sum) for n in fit])
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


def write_predictions(sdata, plan: Plan, sections: Sections, target_sum: float, preds, run: dict) -> None:
    """Write the predictions, measurements and per-gene scores (model and yardstick) as ``tables[key_added]``."""
    import anndata as ad
    from spatialdata.models import TableModel

    table, key_added = plan.table, plan.key_added
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
            truth = log_target(plan.counts, plan.library, rows, target_sum)
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
