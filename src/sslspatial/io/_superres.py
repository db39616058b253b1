"""superres's reader and writer: the one pass over the SpatialData before and after the model.

:func:`read_spots` turns spot shapes + spot table(s) + spot graph + image into the AnnData that
:class:`~sslspatial.model.SUPERRES` trains on (spot profiles in ``X``, per-sub-spot features in ``obsm``, the graph in
``obsp``); :func:`write_subspots` writes the model's sub-spot profiles back as a shapes element and a table annotating
it. Nothing below this module sees a SpatialData.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import Key
from .._validate import check_counts, check_finite, check_graph
from ..nn._likelihoods import is_count
from ..pp._normalize import log_normalize, standardize
from ..pp._subspot_elements import SpotGeometry, graph_context_features, spot_geometry, subspot_centres
from ..pp._subspots import LAYOUTS, make_subspot_shapes
from ._access import annotated_regions, get_image, get_table, linear_scale, map_points, table_attrs

__all__ = ["SUBSPOT_FEATURES", "Spots", "ImageSpec", "check_layout", "read_spots", "write_subspots"]

#: ``obsm`` key of the per-sub-spot features in the AnnData :func:`read_spots` builds.
SUBSPOT_FEATURES = "X_subspot_features"


@dataclass
class Spots:
    """The spots of one run: their shapes, the spot-table rows annotating them, and the sub-spot layout."""

    geom: SpotGeometry
    rows: np.ndarray  # rows of the spot table annotating the shapes
    pos: np.ndarray  # position of each of those rows' spot in the shapes element
    obs_names: pd.Index  # the spot table's obs_names of those rows
    layout: str
    side: int  # sub-spots per side (square layout)
    k: int  # sub-spots per spot

    @property
    def centres(self) -> np.ndarray:
        """Spot centres ``(n, 2)`` in the shapes' own coordinates."""
        return self.geom.centres[self.pos]

    @property
    def centres_nk(self) -> np.ndarray:
        """Sub-spot centres ``(n, K, 2)`` in the shapes' own coordinates."""
        return subspot_centres(self.geom, self.layout, self.side)[self.pos]


@dataclass
class ImageSpec:
    """Which image gives the sub-spot features and how they are computed (see :func:`sslspatial.tl.superres`)."""

    key: str
    method: str = "stats"
    patch_size: float | None = None
    value_range: tuple[float, float] | None = None


def check_layout(layout: str, n_subspots: int | None) -> tuple[str, int, int]:
    """``(layout, K, sub-spots per side)`` of a sub-spot layout; raises on an unknown layout or a wrong K."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}: use 'hexagon' (K = 7) or 'square' (K = n x n).")
    if layout == "hexagon":
        if n_subspots not in (None, 7):
            raise ValueError(f"layout='hexagon' has K = 7 sub-spots, got n_subspots={n_subspots}: use 7 or 'square'.")
        return layout, 7, 2
    k = 4 if n_subspots is None else int(n_subspots)
    side = int(round(np.sqrt(k)))
    if k < 1 or side * side != k:
        raise ValueError(f"layout='square' needs a square number of sub-spots (4, 9, 16, ...), got n_subspots={k}.")
    return layout, k, side


def read_spots(
    sdata,
    *,
    shapes_key: str,
    table_key: str,
    layout: str,
    n_subspots: int | None,
    modalities: dict[str, str],
    layer: str | None,
    connectivity_key: str | None,
    image: ImageSpec | None,
) -> tuple[AnnData, Spots, int]:
    """The AnnData a :class:`~sslspatial.model.SUPERRES` trains on, read from the SpatialData in one pass.

    Parameters
    ----------
    sdata
        The SpatialData with spot shapes ``shapes_key`` and the table(s) annotating them.
    shapes_key, table_key, layout, n_subspots, layer
        As in :func:`sslspatial.tl.superres`.
    modalities
        ``{table name: likelihood}`` (one entry, ``table_key``, for a single modality).
    connectivity_key
        ``obsp`` key of the spot graph of ``table_key``, or None (no graph).
    image
        Which image gives the sub-spot features, or None.

    Returns
    -------
    The spot AnnData (``X`` the profiles of every modality side by side, var ``modality``, ``obsm``
    :data:`SUBSPOT_FEATURES` image then graph-context features per sub-spot, ``obsp[connectivity_key]`` the graph), the
    spots (shapes, rows and sub-spot layout, for :func:`write_subspots`) and the number of image features per sub-spot.
    """
    layout, k, side = check_layout(layout, n_subspots)
    table = get_table(sdata, table_key)
    spots = _read_spots(sdata, table, shapes_key, layout, side, k)
    x, sizes, var = _profiles(sdata, spots, shapes_key, modalities, layer, table_key)
    adjacency = _spot_graph(table, spots, connectivity_key) if connectivity_key is not None else None
    work, n_image = _work_table(sdata, spots, x, var, image, _graph_context(spots, x, adjacency, modalities, sizes))
    if adjacency is not None:
        work.obsp[connectivity_key] = adjacency
    return work, spots, n_image


def _spot_rows(table: AnnData, shapes_key: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the table annotating ``shapes_key`` and, for each, the position of its spot in the shapes."""
    attrs = table_attrs(table)
    if shapes_key not in annotated_regions(table):
        raise ValueError(
            f"The table does not annotate shapes {shapes_key!r} (it annotates {annotated_regions(table)}): "
            "pass the spots' shapes_key or link the table with spatialdata.models.TableModel."
        )
    rows = np.flatnonzero(table.obs[attrs["region_key"]].astype(str).to_numpy() == shapes_key)
    pos = pd.Index(index).get_indexer(table.obs[attrs["instance_key"]].to_numpy()[rows])
    if (pos < 0).any():
        raise ValueError(f"{int((pos < 0).sum())} table rows name instances missing from shapes {shapes_key!r}.")
    return rows, pos


def _matrix(table: AnnData, rows: np.ndarray, layer: str | None) -> np.ndarray:
    x = table.X if layer is None else table.layers[layer]
    x = x[rows]
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def _image_block(sdata, spec: ImageSpec, spots: Spots) -> tuple[np.ndarray, int]:
    """Image features of every sub-spot ``(n, K * F)``, z-scored; checks the image covers the sub-spots first.

    RGB ``uint8`` images (and 3-channel images with ``value_range``) get ``method``'s H&E features; any other image
    (fluorescence: DAPI, polyT, ... in any number of channels) gets per-channel statistics, each channel scaled from
    ``value_range`` or, by default, its own 1-99 % quantiles.
    """
    from ..pp._image_features import channel_patches, channel_ranges, channel_stats_features, image_features
    from ..pp._patches import _as_array

    image_key, method, value_range, geom = spec.key, spec.method, spec.value_range, spots.geom
    shared = [cs for cs in geom.transformations if cs in _image_transformations(sdata, image_key)]
    if not shared:
        raise ValueError(f"Image {image_key!r} and the spots share no coordinate system: add a transformation.")
    cs = shared[0]
    img = get_image(sdata, image_key, cs)
    centres_nk = spots.centres_nk
    n, k, _ = centres_nk.shape
    pts = map_points(centres_nk.reshape(-1, 2), geom.transformations[cs])
    px = img.to_pixels(pts)
    h, w = img.image.shape[-2:]
    outside = (px[:, 0] < 0) | (px[:, 1] < 0) | (px[:, 0] > w) | (px[:, 1] > h)
    if outside.any():
        raise ValueError(
            f"Image {image_key!r} does not cover the spots: {int(outside.sum())} of {len(px)} sub-spot centres fall "
            f"outside its {w} x {h} pixels in coordinate system {cs!r}. Check the image's transformation or "
            "pass image_key=None (graph only)."
        )
    size = spec.patch_size if spec.patch_size is not None else 2 * geom.radius / np.sqrt(k)
    size = size * linear_scale(geom.transformations[cs])
    array = _as_array(img.image)
    rgb = array.shape[0] == 3 and (np.dtype(array.dtype) == np.uint8 or value_range is not None)
    if rgb:
        feats = np.asarray(image_features(img, pts, size, method=method, value_range=value_range), dtype=np.float64)
    else:
        if method != "stats":
            raise ValueError(
                f"Image {image_key!r} has {array.shape[0]} channel(s) of dtype {array.dtype}, not RGB: image_method="
                f"{method!r} needs an RGB image (pass value_range=(low, high) for a 3-channel non-uint8 image); use "
                "image_method='stats' for per-channel statistics of fluorescence images."
            )
        ranges = channel_ranges(img, value_range)
        size_px = max(int(round(size * img.pixels_per_unit)), 1)
        out_px = min(size_px, 64)
        parts = [channel_stats_features(channel_patches(img, pts[i : i + 512], size, ranges, out_px))
                 for i in range(0, len(pts), 512)]  # fmt: skip
        feats = np.concatenate(parts, 0).astype(np.float64)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    return feats.reshape(n, -1).astype(np.float32), feats.shape[1]


def _image_transformations(sdata, image_key: str) -> dict:
    from spatialdata.transformations import get_transformation

    if image_key not in sdata.images:
        raise KeyError(f"image_key={image_key!r} is not an image; available images: {list(sdata.images)}.")
    return get_transformation(sdata.images[image_key], get_all=True)


def _representation(x: np.ndarray, likelihoods: list[str], sizes: list[int], n_pcs: int = 16) -> np.ndarray:
    parts, start = [], 0
    for lik, s in zip(likelihoods, sizes, strict=True):
        block = x[:, start : start + s].astype(np.float64)
        if is_count(lik):
            block = log_normalize(block, "median", min_library=1e-12)
        parts.append(standardize(block, eps=1e-8))
        start += s
    counts = [x[:, a : a + s].sum(1) for a, s, lik in zip(np.cumsum([0, *sizes[:-1]]), sizes, likelihoods, strict=True)
              if is_count(lik)]  # fmt: skip
    log_lib = [np.log1p(c)[:, None] for c in counts]
    z = np.concatenate(parts, 1)
    z = z - z.mean(0)
    # principal components from the smaller Gram matrix: much cheaper than an SVD of the (n x d) matrix
    if z.shape[0] >= z.shape[1]:
        pcs = z @ np.linalg.eigh(z.T @ z)[1][:, ::-1][:, :n_pcs]
    else:
        evals, evecs = np.linalg.eigh(z @ z.T)
        pcs = evecs[:, ::-1][:, :n_pcs] * np.sqrt(np.maximum(evals[::-1][:n_pcs], 0))
    pcs = pcs / (pcs[:, :1].std() + 1e-12)
    libs = [(v - v.mean()) / (v.std() + 1e-8) for v in log_lib]  # neighbours' depth: sub-spot density context
    return np.concatenate([pcs, *libs], 1)


def _read_spots(sdata, table: AnnData, shapes_key: str, layout: str, side: int, k: int) -> Spots:
    """The spot shapes and the rows of the spot table annotating them."""
    geom = spot_geometry(sdata, shapes_key, layout)
    rows, pos = _spot_rows(table, shapes_key, geom.index)
    return Spots(geom, rows, pos, table.obs_names[rows], layout, side, k)


def _profiles(sdata, spots: Spots, shapes_key: str, mods: dict[str, str], layer: str | None, table_key: str):
    """Profiles of the spots in every modality table (spot-table order), checked against their likelihood.

    Returns the ``(n, sum of genes)`` profiles, the number of features of each modality and the ``var`` of the
    enhanced table (unique names; ``modality``).
    """
    blocks, sizes, names = [], [], []
    for name, lik in mods.items():
        t = get_table(sdata, name)
        t_rows, t_pos = _spot_rows(t, shapes_key, spots.geom.index)
        order = pd.Series(t_rows, index=t_pos).reindex(spots.pos)
        if order.isna().any():
            raise ValueError(f"Table {name!r} lacks {int(order.isna().sum())} spots of {table_key!r}.")
        x = _matrix(t, order.to_numpy(dtype=np.int64), layer)
        where = f"table {name!r} ({'X' if layer is None else f'layer {layer!r}'})"
        check_counts(x, where, lik) if is_count(lik) else check_finite(x, where)
        blocks.append(x)
        sizes.append(x.shape[1])
        names += [name] * x.shape[1]
    var = pd.DataFrame({"modality": pd.Categorical(names)}, index=_unique_names(mods, sdata))
    return np.concatenate(blocks, 1), sizes, var


def _spot_graph(table: AnnData, spots: Spots, connectivity_key: str) -> sp.csr_matrix:
    """The spot graph among the spots; every spot needs a neighbour."""
    check_graph(table, connectivity_key)
    rows = spots.rows
    adjacency = sp.csr_matrix(table.obsp[connectivity_key])[rows][:, rows]
    isolated = np.flatnonzero(np.asarray((adjacency != 0).sum(1)).ravel() - (adjacency.diagonal() != 0) == 0)
    if isolated.size:
        raise ValueError(
            f"{isolated.size} spots have no neighbours in obsp[{connectivity_key!r}] (e.g. "
            f"{spots.obs_names[isolated[0]]!r}): rebuild the graph with a larger radius / more neighbours "
            "(ss.pp.build_graph), drop isolated spots, or pass use_graph=False."
        )
    return adjacency


def _graph_context(spots: Spots, x: np.ndarray, adjacency, mods: dict[str, str], sizes: list[int]):
    """Directional graph-context features of every sub-spot ``(n, K * F)``, or None without the graph."""
    if adjacency is None:
        return None
    rep = _representation(x, list(mods.values()), sizes)
    return graph_context_features(adjacency, spots.centres, spots.centres_nk, rep)


def _work_table(sdata, spots: Spots, x: np.ndarray, var: pd.DataFrame, image: ImageSpec | None, context):
    """The model's own AnnData: spot profiles and, per sub-spot, image then graph-context features in ``obsm``.

    Returns it and the number of image features per sub-spot.
    """
    n, k = len(spots.rows), spots.k
    features, n_image = [np.zeros((n, 0), np.float32)], 0
    if image is not None:
        img_feats, n_image = _image_block(sdata, image, spots)
        features.insert(0, img_feats)
    if context is not None:
        features.append(context)
    feats = np.concatenate([f.reshape(n, k, -1) for f in features], axis=-1).reshape(n, -1)
    work = AnnData(X=x, obs=pd.DataFrame(index=spots.obs_names.astype(str)), var=var)
    work.obsm[SUBSPOT_FEATURES] = feats.astype(np.float32)
    return work, n_image


def _unique_names(mods, sdata) -> pd.Index:
    names = []
    for name in mods:
        names += list(sdata.tables[name].var_names.astype(str))
    idx = pd.Index(names)
    if idx.is_unique:
        return idx
    return pd.Index([f"{m}:{v}" for m in mods for v in sdata.tables[m].var_names.astype(str)])


def write_subspots(
    sdata, spots: Spots, var: pd.DataFrame, values: tuple, key_added: str, table_key_added: str, record: dict
) -> None:
    """Write the sub-spot shapes ``key_added`` and the table ``table_key_added`` of their ``(means, draws)``.

    ``record`` (the run record) goes to ``uns[key_added]`` of the new table.
    """
    from spatialdata.models import TableModel

    means, draws = values
    geom, pos = spots.geom, spots.pos
    shapes = make_subspot_shapes(
        geom.centres[pos], geom.radius, spots.layout, spots.side, spot_index=geom.index[pos],
        transformations=geom.transformations,
    )  # fmt: skip
    obs = pd.DataFrame(
        {
            "region": pd.Categorical([key_added] * len(shapes)),
            "instance_id": shapes.index.to_numpy(),
            "spot": shapes["spot"].to_numpy(),
            "spot_obs": np.repeat(spots.obs_names.astype(str).to_numpy(), spots.k),
            "subspot": shapes["subspot"].to_numpy(),
        },
        index=pd.Index(shapes.index.astype(str), name=None),
    )
    out = AnnData(X=means.astype(np.float32, copy=False), obs=obs, var=var.copy())
    out.obsm[Key.SPATIAL] = np.c_[shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()]
    if draws is not None:
        out.layers["sample"] = draws.astype(np.float32, copy=False)
    sdata.shapes[key_added] = shapes
    sdata.tables[table_key_added] = TableModel.parse(
        out, region=key_added, region_key="region", instance_key="instance_id"
    )
    sdata.tables[table_key_added].uns[key_added] = record
