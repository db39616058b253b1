"""Patches for the observations of a SpatialData table: which image belongs to which region, and the crops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..io._access import get_coordinates, get_image, get_table, is_spatialdata, table_attrs
from ._patches import ColourStats, colour_normalize, section_patches


def resolve_region_images(
    sdata: Any, table_key: str, image_key: str | Mapping[str, str] | None, regions: list[str] | None = None
) -> dict[str, tuple[str, str]]:
    """Map each region a table annotates to ``(image_key, coordinate_system)``.

    ``image_key`` may be one image name (used for every region), a mapping region -> image, or None (the only image
    of the SpatialData, or the image sharing a coordinate system with the region when there are several).
    """
    from spatialdata.transformations import get_transformation

    table = get_table(sdata, table_key)
    regions = list(regions) if regions is not None else _table_regions(table)
    out: dict[str, tuple[str, str]] = {}
    for region in regions:
        if isinstance(image_key, Mapping):
            if region not in image_key:
                raise KeyError(f"image_key has no entry for region {region!r}; give one image per region.")
            key = image_key[region]
        elif isinstance(image_key, str):
            key = image_key
        else:
            key = _guess_image(sdata, region)
        if key not in sdata.images:
            available = ", ".join(map(repr, sdata.images)) or "none"
            raise KeyError(f"Image {key!r} (for region {region!r}) is not in the SpatialData; images: {available}.")
        image_systems = set(get_transformation(sdata.images[key], get_all=True))
        region_systems = set(get_transformation(sdata[region], get_all=True)) if region in sdata else image_systems
        shared = sorted(image_systems & region_systems)
        if not shared:
            raise ValueError(
                f"Image {key!r} has no transformation to a coordinate system of region {region!r} (image: "
                f"{sorted(image_systems)}, region: {sorted(region_systems)}). Add one with "
                "spatialdata.transformations.set_transformation."
            )
        cs = region if region in shared else ("global" if "global" in shared else shared[0])
        out[region] = (key, cs)
    return out


def _table_regions(table) -> list[str]:
    attrs = table_attrs(table)
    if not attrs:
        return []
    region = attrs["region"]
    return [region] if isinstance(region, str) else list(region)


def _guess_image(sdata: Any, region: str) -> str:
    from spatialdata.transformations import get_transformation

    images = list(sdata.images)
    if len(images) == 1:
        return images[0]
    if region in sdata:
        systems = set(get_transformation(sdata[region], get_all=True))
        matches = [k for k in images if systems & set(get_transformation(sdata.images[k], get_all=True))]
        if len(matches) == 1:
            return matches[0]
    raise ValueError(
        f"Cannot tell which image belongs to region {region!r} (images: {images}). Pass image_key=<name> or a "
        "mapping {region: image_key}."
    )


def extract_patches(
    sdata: Any,
    *,
    table_key: str = "table",
    image_key: str | Mapping[str, str] | None = None,
    size: float = 100.0,
    unit: Literal["coords", "px"] = "coords",
    out_px: int | None = None,
    value_range: tuple[float, float] | None = None,
    normalize: Literal["reinhard"] | None = None,
    spatial_key: str = "spatial",
    obs_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Cut an image patch around every observation of a SpatialData table, per region through its own image.

    Spot centres are ``obsm[spatial_key]`` (or the centroids of the annotated shapes) in the coordinate system the
    image shares with the region, mapped into the image's pixels through spatialdata transformations.

    Parameters
    ----------
    sdata
        SpatialData with the table and the image(s).
    table_key
        Table whose observations get patches.
    image_key
        Image name, mapping region -> image, or None to infer.
    size
        Patch side, in coordinate units (e.g. µm, ``unit="coords"``) or in full-resolution pixels (``unit="px"``).
    unit
        Unit of ``size``.
    out_px
        Resize the patches to this many pixels.
    value_range
        Range of pixel values, required unless the image is RGB uint8.
    normalize
        ``"reinhard"``: per-region colour normalisation (per-channel mean / std matching), or None.
    spatial_key
        ``obsm`` key with the spot centres.
    obs_mask
        Boolean mask of the observations to cut (default all); the result has one patch per selected observation.

    Returns
    -------
    ``(n, 3, p, p)`` float32 patches in ``[0, 1]``, in table order. For large sections, prefer the patch loader (it
    cuts patches per minibatch).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=300, spot_layouts=("st",))
    >>> ss.pp.extract_patches(sdata, table_key="table_st", image_key="he", size=50, out_px=16).shape[1:]
    (3, 16, 16)
    """
    if not is_spatialdata(sdata):
        raise TypeError("extract_patches needs a SpatialData holding the image(s); use crop_patches for arrays.")
    if normalize not in (None, "reinhard"):
        raise ValueError(f"normalize={normalize!r} is not one of None, 'reinhard'.")
    table = get_table(sdata, table_key)
    mask = np.ones(table.n_obs, bool) if obs_mask is None else np.asarray(obs_mask, bool)
    regions, region_of_obs = obs_regions(table)
    mapping = resolve_region_images(sdata, table_key, image_key, regions or None)
    patches = None
    for region, (key, cs) in mapping.items():
        rows = np.flatnonzero(mask & (region_of_obs == region)) if regions else np.flatnonzero(mask)
        if len(rows) == 0:
            continue
        image = get_image(sdata, key, cs)
        coords = get_coordinates(sdata, table_key, spatial_key, cs, rows=rows)
        p = section_patches(image, coords, size, unit=unit, value_range=value_range, out_px=out_px)
        if normalize == "reinhard":
            p = colour_normalize(p, ColourStats.of(p))
        if patches is None:
            patches = np.empty((int(mask.sum()),) + p.shape[1:], np.float32)
        patches[np.searchsorted(np.flatnonzero(mask), rows)] = p
    if patches is None:
        raise ValueError("No observation was selected, so there are no patches to cut.")
    return patches


def obs_regions(table) -> tuple[list[str], np.ndarray]:
    """Return the table's regions and the region of every observation (empty / None without annotation)."""
    attrs = table_attrs(table)
    regions = _table_regions(table)
    if not regions:
        return [], np.full(table.n_obs, None)
    if len(regions) == 1:
        return regions, np.full(table.n_obs, regions[0], dtype=object)
    return regions, table.obs[attrs["region_key"]].astype(str).to_numpy()
