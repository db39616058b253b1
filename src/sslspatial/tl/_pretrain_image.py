"""``ss.tl.pretrain_image``: self-supervised pretraining of the hist2expr patch encoder on H&E tiles, no expression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .._constants import check_key
from .._logging import info
from .._provenance import run_record, seed_everything
from .._types import DataLike
from .._validate import check_absent, check_numbers
from ..io._access import get_coordinates, get_image, get_table, require_spatialdata
from ..model._image_encoder import ImageEncoder
from ..module._image_ssl import CONTEXT
from ..pp._patches import check_image_values, crop_patches, resize_patches, size_in_pixels, to_unit_range
from ..pp._patches_sdata import obs_regions, resolve_region_images
from ..pp._tissue import tissue_grid


def _images(sdata, table, table_key: str, image_key) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Image -> coordinate system of every image to tile, and region -> (image, coordinate system) of the table."""
    from spatialdata.transformations import get_transformation

    regions = list(dict.fromkeys(obs_regions(table)[1].astype(str))) if table is not None else []
    linked = resolve_region_images(sdata, table_key, None, regions) if regions and image_key is None else {}
    if image_key is None:
        if not linked:
            raise ValueError("The table annotates no region with an image: name the images to tile in image_key.")
        return dict(linked.values()), linked
    names = [image_key] if isinstance(image_key, str) else list(image_key)
    missing = [n for n in names if n not in sdata.images]
    if missing:
        raise KeyError(f"image_key {missing} not in the SpatialData; images: {list(sdata.images)}.")
    try:  # the spots' coordinate system where an image is linked to the table's regions
        linked = resolve_region_images(sdata, table_key, None, regions) if regions else {}
    except (KeyError, ValueError):
        linked = {}
    systems = dict(linked.values())
    out = {n: systems.get(n, sorted(get_transformation(sdata.images[n], get_all=True))[0]) for n in names}
    return out, {r: v for r, v in linked.items() if v[0] in out}


def _tiles(image, value_range, tile_size: float, size_unit: str, patch_px: int, n_max: int, rng) -> np.ndarray:
    """uint8 ``(n, 3, t, t)`` tiles (``t = CONTEXT * patch_px``) centred on a grid over the tissue of ``image``."""
    size_px = size_in_pixels(image, tile_size, size_unit)
    spacing = tile_size / 2 / (image.pixels_per_unit if size_unit == "px" else 1.0)
    centres = tissue_grid(image, spacing)
    if len(centres) > n_max:
        centres = centres[np.sort(rng.choice(len(centres), n_max, replace=False))]
    out = np.zeros((len(centres), 3, int(round(CONTEXT * patch_px)), int(round(CONTEXT * patch_px))), np.uint8)
    vr = check_image_values(image, value_range, name="image")
    for start in range(0, len(centres), 512):
        px = image.to_pixels(centres[start : start + 512])
        raw = crop_patches(image.image, px, int(round(CONTEXT * size_px)))[:, :3]
        x = resize_patches(to_unit_range(raw, vr), out.shape[-1])
        out[start : start + 512] = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
    return out


def pretrain_image(
    data: DataLike,
    *,
    table_key: str = "table",
    image_key: str | Sequence[str] | None = None,
    tile_size: float | None = None,
    size_unit: Literal["coords", "px"] = "coords",
    patch_px: int = 32,
    tiles_per_image: int = 4000,
    value_range: tuple[float, float] | None = None,
    max_epochs: int = 30,
    batch_size: int = 256,
    lr: float = 2e-3,
    key_added: str = "pretrain_image",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> ImageEncoder:
    """Pretrain the hist2expr patch encoder on H&E tiles without expression (Barlow Twins, histology augmentations).

    Tiles are cut on a grid (half a tile apart) over the tissue of every image (tissue found by
    :func:`~sslspatial.pp._tissue.tissue_grid`), up to ``tiles_per_image`` of them, with a margin of a quarter of the
    tile so that crops can move and zoom. The encoder is hist2expr's ConvMixer (same architecture and patch
    preparation: a tile of ``tile_size`` resampled to ``patch_px``), trained with Barlow Twins on two views of each
    tile: random crop (60 % to 125 % of the tile), rotations by 90 degrees and flips, stain (optical-density) and
    colour jitter, Gaussian blur (:func:`~sslspatial.module._image_ssl.histology_views`). No expression is read, so
    images without measurements (the tissue to predict) may be included. Pass the returned encoder to
    ``ss.tl.hist2expr(..., image_encoder=encoder)`` to train on top of it, frozen (``encoder_lr_scale=0``) or
    fine-tuned at a lower learning rate.

    Writes ``obsm[f"X_{key_added}"]`` of the table: the encoder's output for every spot whose region has an image
    (NaN for the others), and ``uns[key_added]``: the run record, the loss of every epoch, tile counts and settings.

    Parameters
    ----------
    data
        SpatialData with H&E image(s) and a table whose regions are linked to them.
    table_key
        Table whose spots get the features (and the run record).
    image_key
        Images to tile: one name or several (e.g. image-only tissue besides the measured sections); None: the images
        of the table's regions.
    tile_size
        Tile side, in coordinate units (``size_unit="coords"``) or pixels: the patch side hist2expr will use
        (its ``spot_size``). Default: hist2expr's default patch side, ``patch_scale`` (1.5) times the median spot
        diameter of the table's regions.
    size_unit
        ``"coords"`` or ``"px"``.
    patch_px
        Side the tiles are resampled to (hist2expr's ``patch_px``).
    tiles_per_image
        At most this many tiles per image (a seeded random subset of the tissue grid).
    value_range
        Pixel value range, required unless images are RGB uint8.
    max_epochs, batch_size, lr
        Training settings (AdamW, cosine decay).
    key_added
        Name of the outputs (``obsm[f"X_{key_added}"]``, ``uns[key_added]``).
    overwrite
        Replace existing outputs (else :class:`~sslspatial.OutputExistsError`).
    seed
        Seeds Python, NumPy and torch (tile subset, initialisation, augmentations); None: leave the state.
    accelerator, devices
        ``"gpu"`` / ``"cpu"`` / ``"auto"`` and one device (an int index in a list, or 1).
    model_kwargs
        :class:`~sslspatial.module._image_ssl.ImageSSLModule` arguments (``channels``, ``depth``,
        ``projector_dim``, ``lambd``, ...).
    train_kwargs
        More :meth:`~sslspatial.model._image_encoder.ImageEncoder.train` arguments (``weight_decay``, ``log_every``).

    Returns
    -------
    The trained :class:`~sslspatial.model._image_encoder.ImageEncoder` (``save`` / ``ImageEncoder.load``).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=500, n_sections=2, spot_layouts=("visium",))
    >>> enc = ss.tl.pretrain_image(sdata, table_key="table_visium", max_epochs=2)  # doctest: +SKIP
    >>> ss.tl.hist2expr(sdata, table_key="table_visium", library_key="section", image_encoder=enc)  # doctest: +SKIP
    """
    check_numbers(dict(locals()))  # sizes, epochs, lr, seed, devices: before any work (shared checks)
    params = {k: v for k, v in locals().items() if k != "data"}
    require_spatialdata(data, "pretrain_image", "the H&E image(s)")
    check_key(key_added, "key_added")
    if size_unit not in ("coords", "px"):
        raise ValueError(f"size_unit={size_unit!r} is not one of 'coords', 'px'.")
    table = get_table(data, table_key)
    check_absent(f"X_{key_added}" in table.obsm and not overwrite, f"obsm['X_{key_added}']")
    check_absent(key_added in table.uns and not overwrite, f"uns[{key_added!r}]")
    images, linked = _images(data, table, table_key, image_key)
    if tile_size is None:
        if not linked or size_unit != "coords":
            raise ValueError("tile_size is needed (no spot shapes to take the spot diameter from): pass tile_size.")
        from ..io._hist2expr import _spot_size
        from ._hist2expr import DEFAULT_PATCH_SCALE

        diameter = float(np.median([_spot_size(data, table, region, cs) for region, (_, cs) in linked.items()]))
        tile_size = DEFAULT_PATCH_SCALE * diameter
    seed_everything(seed)
    rng = np.random.default_rng(0 if seed is None else seed)
    parts, counts = [], {}
    for key, cs in images.items():
        tiles = _tiles(get_image(data, key, cs), value_range, tile_size, size_unit, patch_px, tiles_per_image, rng)
        parts.append(tiles)
        counts[key] = len(tiles)
    tiles = np.concatenate(parts)
    info(f"pretrain_image: {len(tiles)} tiles from {counts}, tile side {tile_size:g} {size_unit}, {patch_px} px")
    settings = {"tile_size": float(tile_size), "size_unit": size_unit, "images": list(images), "n_tiles": counts,
                "objective": "barlow_twins"}  # fmt: skip
    encoder = ImageEncoder(patch_px=patch_px, settings=settings, **(model_kwargs or {}))
    extra = dict(train_kwargs or {})
    if {"accelerator", "devices"} & set(extra):
        raise TypeError("Pass accelerator and devices as arguments of pretrain_image, not inside train_kwargs.")
    encoder.train(tiles, max_epochs=max_epochs, batch_size=batch_size, lr=lr, accelerator=accelerator,
                  devices=devices, seed=seed, **extra)  # fmt: skip
    _spot_features(data, table, table_key, linked, encoder, tile_size, size_unit, value_range, key_added)
    table.uns[key_added] = {**run_record("pretrain_image", params), "loss_history": list(encoder.history_),
                            "n_tiles": counts, "tile_size": float(tile_size),
                            "train_seconds": encoder.train_seconds_}  # fmt: skip
    return encoder


def _spot_features(sdata, table, table_key, linked, encoder, tile_size, size_unit, value_range, key_added) -> None:
    """``obsm[f"X_{key_added}"]``: the encoder's output for the patch of every spot (NaN without an image)."""
    out = np.full((table.n_obs, encoder.module.encoder.out_dim), np.nan, np.float32)
    region_of_obs = obs_regions(table)[1].astype(str)
    for region, (key, cs) in linked.items():
        rows = np.flatnonzero(region_of_obs == region)
        image = get_image(sdata, key, cs)
        vr = check_image_values(image, value_range, name=f"image {key!r}")
        px = image.to_pixels(get_coordinates(sdata, table_key, "spatial", cs, rows=rows))
        size_px = size_in_pixels(image, tile_size, size_unit)
        for start in range(0, len(rows), 1024):
            raw = crop_patches(image.image, px[start : start + 1024], size_px)[:, :3]
            patches = resize_patches(to_unit_range(raw, vr), encoder.patch_px)
            out[rows[start : start + 1024]] = encoder.features(patches)
    table.obsm[f"X_{key_added}"] = out
