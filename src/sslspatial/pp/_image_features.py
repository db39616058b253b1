"""Image feature vectors around arbitrary centres: cheap colour / texture statistics, or a pretrained backbone.

Backbones (timm / torchvision architectures with weights from a local file, registered factories, any
``torch.nn.Module``) are built by :mod:`sslspatial.pp._backbones`; neither library is needed for the statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from .._constants import check_key
from .._validate import check_absent
from ..io._access import SectionImage, get_coordinates, get_image, get_table, is_spatialdata
from ._backbones import Backbone, LoadedBackbone, backbone_features, load_backbone
from ._patches import section_patches, size_in_pixels
from ._patches_sdata import obs_regions, resolve_region_images

# Ruifrok & Johnston H&E(+DAB) stain vectors (optical density per RGB channel), rows: haematoxylin, eosin, residual
_STAINS = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]])
_STAINS = _STAINS / np.linalg.norm(_STAINS, axis=1, keepdims=True)
_UNMIX = np.linalg.inv(_STAINS).astype(np.float32)  # OD (rgb) @ _UNMIX -> stain concentrations

STATS_FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"{c}_{s}" for s in ("mean", "std", "q10", "q50", "q90") for c in "rgb"]
    + ["od_r", "od_g", "od_b", "haem_mean", "haem_std", "eosin_mean", "eosin_std", "haem_q90"]
    + ["background_frac", "dark_frac", "grad_mean", "grad_std", "laplace_mean", "local_contrast"]
    + ["centre_r", "centre_g", "centre_b", "centre_haem", "centre_eosin"]
)


def stats_features(patches: np.ndarray) -> np.ndarray:
    """Colour and texture statistics of ``(n, 3, s, s)`` float patches in ``[0, 1]`` (see STATS_FEATURE_NAMES).

    Parameters
    ----------
    patches
        RGB patches scaled to ``[0, 1]``.

    Returns
    -------
    ``(n, 34)`` float32.

    Examples
    --------
    >>> stats_features(np.full((2, 3, 8, 8), 0.5, np.float32))[:, 0].tolist()
    [0.5, 0.5]
    """
    x = np.asarray(patches, dtype=np.float32)
    n, _, h, w = x.shape
    flat = x.reshape(n, 3, -1)
    q = np.quantile(flat, [0.1, 0.5, 0.9], axis=-1)  # (3, n, 3)
    colour = [flat.mean(-1), flat.std(-1), q[0], q[1], q[2]]
    od = -np.log(np.clip(flat, 1 / 255, 1.0))  # (n, 3, p)
    stains = np.einsum("ncp,cs->nsp", od, _UNMIX)
    haem, eosin = stains[:, 0], stains[:, 1]
    grey = x.mean(1)
    brightness = flat.mean(1)
    gy, gx = np.diff(grey, axis=1)[:, :, :-1], np.diff(grey, axis=2)[:, :-1, :]
    grad = np.sqrt(gx**2 + gy**2).reshape(n, -1)
    lap = np.abs(
        4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    )
    b = max(h // 4, 1)
    blocks = grey[:, : (h // b) * b, : (w // b) * b].reshape(n, h // b, b, w // b, b)
    local = blocks.std(axis=(2, 4)).reshape(n, -1).mean(1)
    r0, r1, c0, c1 = h // 4, h - h // 4, w // 4, w - w // 4
    centre = x[:, :, r0:r1, c0:c1].reshape(n, 3, -1)
    centre_od = -np.log(np.clip(centre, 1 / 255, 1.0))
    centre_st = np.einsum("ncp,cs->nsp", centre_od, _UNMIX).mean(-1)
    columns = colour + [
        od.mean(-1),
        np.stack([haem.mean(-1), haem.std(-1), eosin.mean(-1), eosin.std(-1), np.quantile(haem, 0.9, axis=-1)], 1),
        np.stack([(brightness > 0.85).mean(-1), (brightness < 0.35).mean(-1), grad.mean(1), grad.std(1)], 1),
        np.stack([lap.reshape(n, -1).mean(1), local], 1),
        centre.mean(-1),
        centre_st[:, :2],
    ]
    return np.concatenate(columns, axis=1).astype(np.float32)


CHANNEL_FEATURE_NAMES: tuple[str, ...] = ("mean", "std", "q10", "q50", "q90", "centre_mean", "grad_mean")


def channel_ranges(
    image: SectionImage | Any,
    value_range: tuple[float, float] | None = None,
    quantiles: tuple[float, float] = (0.01, 0.99),
    max_pixels: int = 1_000_000,
) -> np.ndarray:
    """Per-channel ``(low, high)`` of an image with any number of channels (fluorescence, H&E, ...).

    ``value_range`` gives every channel the same range. Otherwise ``uint8`` images map from ``(0, 255)`` and other
    images from the ``quantiles`` of each channel, read on a regular sub-grid of at most ``max_pixels`` pixels (so a
    whole-slide or lazy image is never loaded in full); a constant channel gets a range of width 1.

    Parameters
    ----------
    image
        ``(c, y, x)`` array, xarray or :class:`~sslspatial._io.SectionImage`.
    value_range
        One ``(low, high)`` for all channels, or None.
    quantiles
        Lower and upper quantiles used when ``value_range`` is None and the image is not ``uint8``.
    max_pixels
        Pixels per channel read to estimate the quantiles.

    Returns
    -------
    ``(c, 2)`` float64, each row ``(low, high)`` with ``high > low``.

    Examples
    --------
    >>> img = np.stack([np.arange(100).reshape(10, 10), 10 * np.arange(100).reshape(10, 10)]).astype(np.uint16)
    >>> channel_ranges(img, quantiles=(0.0, 1.0)).tolist()
    [[0.0, 99.0], [0.0, 990.0]]
    """
    from ._patches import _as_array

    array = _as_array(image.image if isinstance(image, SectionImage) else image)
    n_channels = int(array.shape[0])
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not np.isfinite([low, high]).all() or high <= low:
            raise ValueError(f"value_range must be two finite numbers (low, high) with high > low, got {value_range}.")
        return np.tile([low, high], (n_channels, 1))
    if np.dtype(array.dtype) == np.uint8:
        return np.tile([0.0, 255.0], (n_channels, 1))
    lo_q, hi_q = quantiles
    if not 0 <= lo_q < hi_q <= 1:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}.")
    height, width = int(array.shape[1]), int(array.shape[2])
    step = max(int(np.ceil(np.sqrt(height * width / max_pixels))), 1)
    sample = array[:, ::step, ::step]
    sample = np.asarray(sample.compute() if hasattr(sample, "compute") else sample, dtype=np.float64)
    sample = sample.reshape(n_channels, -1)
    if not np.isfinite(sample).all():
        raise ValueError("The image has NaN or infinite pixel values: fill them, or pass value_range=(low, high).")
    ranges = np.quantile(sample, [lo_q, hi_q], axis=1).T
    flat = ranges[:, 1] <= ranges[:, 0]
    ranges[flat, 1] = ranges[flat, 0] + 1.0
    return ranges


def channel_stats_features(patches: np.ndarray) -> np.ndarray:
    """Per-channel statistics of ``(n, c, s, s)`` float patches (any number of channels, e.g. DAPI + polyT).

    For every channel: mean, standard deviation, 10 / 50 / 90 % quantiles, mean of the central half and mean gradient
    magnitude (:data:`CHANNEL_FEATURE_NAMES`), channel by channel.

    Parameters
    ----------
    patches
        Patches, each channel scaled to ``[0, 1]`` (:func:`channel_patches`).

    Returns
    -------
    ``(n, 7 * c)`` float32.

    Examples
    --------
    >>> channel_stats_features(np.full((2, 2, 8, 8), 0.5, np.float32)).shape
    (2, 14)
    """
    x = np.asarray(patches, dtype=np.float32)
    n, c, h, w = x.shape
    flat = x.reshape(n, c, -1)
    q = np.quantile(flat, [0.1, 0.5, 0.9], axis=-1)  # (3, n, c)
    r0, r1, c0, c1 = h // 4, h - h // 4, w // 4, w - w // 4
    centre = x[:, :, r0:r1, c0:c1].reshape(n, c, -1).mean(-1)
    gy, gx = np.diff(x, axis=2)[:, :, :, :-1], np.diff(x, axis=3)[:, :, :-1, :]
    grad = np.sqrt(gx**2 + gy**2).reshape(n, c, -1).mean(-1) if h > 1 and w > 1 else np.zeros((n, c), np.float32)
    per_channel = np.stack([flat.mean(-1), flat.std(-1), q[0], q[1], q[2], centre, grad], axis=-1)  # (n, c, 7)
    return per_channel.reshape(n, -1).astype(np.float32)


def channel_patches(
    image: SectionImage, centres: np.ndarray, size: float, ranges: np.ndarray, out_px: int | None = None
) -> np.ndarray:
    """Patches of every channel, each scaled to ``[0, 1]`` from its own ``(low, high)`` (clipped).

    Parameters
    ----------
    image
        The section image (``centres`` and ``size`` in its coordinate units).
    centres
        ``(n, 2)`` patch centres, x then y.
    size
        Patch side in coordinate units.
    ranges
        ``(c, 2)`` per-channel ranges (:func:`channel_ranges`).
    out_px
        Resample patches to this side (default: the cropped size).

    Returns
    -------
    ``(n, c, p, p)`` float32.

    Examples
    --------
    >>> from sslspatial.io._access import SectionImage
    >>> img = SectionImage(np.ones((2, 20, 20), np.uint16), np.eye(3))
    >>> channel_patches(img, np.array([[10.0, 10.0]]), 4, np.array([[0.0, 2.0], [0.0, 1.0]]))[0, :, 0, 0].tolist()
    [0.5, 1.0]
    """
    from ._patches import crop_patches, resize_patches

    size_px = size_in_pixels(image, size, "coords")
    raw = crop_patches(image.image, image.to_pixels(np.asarray(centres, dtype=np.float64).reshape(-1, 2)), size_px)
    low = np.asarray(ranges[:, 0], np.float32)[None, :, None, None]
    width = np.asarray(ranges[:, 1] - ranges[:, 0], np.float32)[None, :, None, None]
    patches = np.clip((np.asarray(raw, dtype=np.float32) - low) / width, 0.0, 1.0)
    return resize_patches(patches, out_px) if out_px else patches


def image_features(
    image: SectionImage | np.ndarray | Any,
    centres: np.ndarray,
    size: float,
    method: str | Any = "stats",
    *,
    unit: Literal["coords", "px"] = "coords",
    weights: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    value_range: tuple[float, float] | None = None,
    out_px: int | None = None,
    batch_size: int = 512,
    device: str = "cpu",
) -> np.ndarray:
    """Image feature vectors of square patches centred at arbitrary positions.

    Patches are cut in batches (never all at once), so whole-slide images and many centres are fine.

    Parameters
    ----------
    image
        A :class:`~sslspatial._io.SectionImage` (from ``ss._io.get_image``; ``centres`` and ``size`` in its
        coordinate system's units, e.g. µm) or a ``(c, y, x)`` array (``centres`` as pixel ``(col, row)``).
    centres
        ``(n, 2)`` patch centres, x then y.
    size
        Patch side in coordinate units (or pixels with ``unit="px"``; always pixels for a plain array).
    method
        ``"stats"`` (34 colour, stain and texture statistics; :data:`STATS_FEATURE_NAMES`), ``"cnn"`` (ResNet-18),
        a backbone name (``"resnet50"``, ``"timm:<name>"``, ``"torchvision:<name>"``, or one registered with
        :func:`register_backbone`; see :func:`load_backbone`), a :class:`LoadedBackbone`, or a ``torch.nn.Module``
        taking ImageNet-normalised 224 px patches. Library backbones get the input side and normalisation of their
        library's configuration.
    unit
        Unit of ``size``: ``"coords"`` or ``"px"``.
    weights
        For library backbones: a local state-dict file, ``"hub"`` (download the library's default weights), or
        ``"random"``.
    backbone_kwargs
        Keyword arguments of the library's model constructor (see :func:`load_backbone`).
    value_range
        Range of pixel values, required unless the image is RGB uint8.
    out_px
        Resample patches to this side before computing features (default: 64 px for stats, the backbone's input
        size otherwise).
    batch_size
        Patches cut and processed per batch.
    device
        Torch device for backbones.

    Returns
    -------
    ``(n, d)`` float32 features.

    Examples
    --------
    >>> img = np.random.default_rng(0).integers(0, 255, (3, 100, 100), dtype=np.uint8)
    >>> image_features(img, np.array([[50.0, 50.0], [20.0, 30.0]]), 16).shape
    (2, 34)
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(centres).all():
        raise ValueError("centres contain NaN or infinite values.")
    unit = unit if isinstance(image, SectionImage) else "px"
    size_in_pixels(image, size, unit)  # validates size / unit before any work
    if isinstance(method, str) and method == "stats":
        module, spec, px = None, None, out_px or min(size_in_pixels(image, size, unit), 64)
    elif isinstance(method, str | LoadedBackbone):
        loaded = method if isinstance(method, LoadedBackbone) else load_backbone(method, weights, backbone_kwargs)
        module, spec = loaded.module, loaded.spec
        px = out_px or spec.input_px
    elif callable(method):
        module, spec = method, Backbone(lambda: method)
        px = out_px or spec.input_px
    else:
        raise TypeError(
            f"method must be 'stats', a backbone name, a LoadedBackbone or a torch.nn.Module, got {type(method).__name__}."
        )
    out = []
    for start in range(0, len(centres), batch_size):
        patches = section_patches(image, centres[start : start + batch_size], size, unit=unit, out_px=px,
                                  value_range=value_range)  # fmt: skip
        if module is None:
            out.append(stats_features(patches))
        else:
            out.append(backbone_features(patches, module, spec, device=device))
    if not out:
        return np.zeros((0, len(STATS_FEATURE_NAMES)), np.float32)
    return np.concatenate(out, 0)


def add_image_features(
    sdata: Any,
    *,
    table_key: str = "table",
    image_key: str | Mapping[str, str] | None = None,
    size: float = 100.0,
    unit: Literal["coords", "px"] = "coords",
    method: str = "stats",
    weights: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    value_range: tuple[float, float] | None = None,
    spatial_key: str = "spatial",
    key_added: str = "X_image_features",
    overwrite: bool = False,
) -> np.ndarray:
    """Compute image features for every observation of a SpatialData table and cache them in ``obsm[key_added]``.

    A second call with the same parameters returns the cached features; different parameters need
    ``overwrite=True``.

    Parameters
    ----------
    sdata
        SpatialData with the table and its image(s).
    table_key, image_key, size, unit, method, weights, backbone_kwargs, value_range
        See :func:`image_features`; ``image_key`` may map region -> image.
    spatial_key
        ``obsm`` key of the observation centres.
    key_added
        ``obsm`` key receiving the features; the parameters go to ``uns[key_added + "_params"]``.
    overwrite
        Replace existing features computed with other parameters.

    Returns
    -------
    The ``(n_obs, d)`` features (also written in place).

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=300, spot_layouts=("st",))
    >>> ss.pp.add_image_features(sdata, table_key="table_st", image_key="he", size=50).shape[1]
    34
    """
    if not is_spatialdata(sdata):
        raise TypeError("add_image_features needs a SpatialData with image(s); for arrays use image_features.")
    table = get_table(sdata, table_key)
    check_key(key_added, "key_added")
    params = {"image_key": image_key if isinstance(image_key, str | None) else dict(image_key), "size": float(size),
              "unit": unit, "method": method if isinstance(method, str) else repr(method), "weights": weights,
              "backbone_kwargs": dict(backbone_kwargs or {})}  # fmt: skip
    params_key = f"{key_added}_params"
    if key_added in table.obsm and not overwrite:
        if table.uns.get(params_key) == params:
            return np.asarray(table.obsm[key_added])
        check_absent(True, f"obsm[{key_added!r}] (computed with other parameters)")
    regions, region_of_obs = obs_regions(table)
    mapping = resolve_region_images(sdata, table_key, image_key, regions or None)
    if isinstance(method, str) and method != "stats":  # build (and load) the backbone once for every region
        method = load_backbone(method, weights, backbone_kwargs)
    features = None
    for region, (key, cs) in mapping.items():
        rows = np.flatnonzero(region_of_obs == region) if regions else np.arange(table.n_obs)
        coords = get_coordinates(sdata, table_key, spatial_key, cs, rows=rows)
        f = image_features(get_image(sdata, key, cs), coords, size, method, unit=unit, weights=weights,
                           value_range=value_range)  # fmt: skip
        if features is None:
            features = np.zeros((table.n_obs, f.shape[1]), np.float32)
        features[rows] = f
    table.obsm[key_added] = features
    table.uns[params_key] = params
    return features
