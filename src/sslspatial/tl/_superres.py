"""``ss.tl.superres``: enhance spot-level profiles to sub-spot resolution (soScope re-implementation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _io, _logging, _validate
from .._constants import Key, check_key
from .._provenance import run_record, seed_everything
from .._validate import check_absent, check_counts, check_finite, check_graph, trainer_options
from ..model._superres import SUPERRES, RelativeEarlyStopping
from ..nn._likelihoods import LIKELIHOODS
from ..pp._normalize import log_normalize, standardize
from ..pp._subspot_elements import SpotGeometry, graph_context_features, spot_geometry, subspot_centres
from ..pp._subspots import make_subspot_shapes

__all__ = ["superres"]

_FEATURES = "X_subspot_features"
_EARLY_STOPPING_MIN_SPOTS = 5000


def _early_stopping_options() -> dict:
    """Trainer options of ``early_stopping=True``: 10 % of the spots held out, stop on their sub-spot-sum loss."""
    stop = RelativeEarlyStopping("subspot_sum_nll_validation", rel_delta=1e-3, patience=2)
    return {"train_size": 0.9, "validation_size": 0.1, "check_val_every_n_epoch": 1, "callbacks": [stop]}


@dataclass
class _Spots:
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
class _ImageSpec:
    """Which image gives the sub-spot features and how they are computed (see :func:`superres`)."""

    key: str
    method: str = "stats"
    patch_size: float | None = None
    value_range: tuple[float, float] | None = None


def _layout(layout: str, n_subspots: int | None) -> tuple[str, int, int]:
    if layout not in ("hexagon", "square"):
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


def _spot_rows(table: AnnData, shapes_key: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the table annotating ``shapes_key`` and, for each, the position of its spot in the shapes."""
    attrs = _io.table_attrs(table)
    if shapes_key not in _io.annotated_regions(table):
        raise ValueError(
            f"The table does not annotate shapes {shapes_key!r} (it annotates {_io.annotated_regions(table)}): "
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


def _image_block(sdata, spec: _ImageSpec, spots: _Spots) -> tuple[np.ndarray, int]:
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
    img = _io.get_image(sdata, image_key, cs)
    centres_nk = spots.centres_nk
    n, k, _ = centres_nk.shape
    pts = _io.map_points(centres_nk.reshape(-1, 2), geom.transformations[cs])
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
    size = size * _io.linear_scale(geom.transformations[cs])
    array = _as_array(img.image)
    _validate.check_float_image_range(array, value_range, name=f"image {image_key!r}")  # as hist2expr
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
        if lik != "gaussian":
            block = log_normalize(block, "median", min_library=1e-12)
        parts.append(standardize(block, eps=1e-8))
        start += s
    counts = [x[:, a : a + s].sum(1) for a, s, lik in zip(np.cumsum([0, *sizes[:-1]]), sizes, likelihoods, strict=True)
              if lik != "gaussian"]  # fmt: skip
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


def superres(
    data: Any,
    *,
    shapes_key: str,
    table_key: str = Key.DEFAULT_TABLE,
    image_key: str | None = None,
    layout: Literal["hexagon", "square"] = "hexagon",
    n_subspots: int | None = None,
    likelihood: Literal["nb", "zinb", "poisson", "gaussian"] = "nb",
    modalities: Mapping[str, str] | None = None,
    layer: str | None = None,
    use_graph: bool = True,
    connectivity_key: str = Key.CONNECTIVITIES,
    image_method: str = "stats",
    patch_size: float | None = None,
    value_range: tuple[float, float] | None = None,
    key_added: str | None = None,
    table_key_added: str | None = None,
    sample: bool = False,
    spot_mean: Literal["observed", "fitted"] = "observed",
    max_epochs: int | None = None,
    early_stopping: bool | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    n_hidden: int = 128,
    n_latent: int = 128,
    image_weight: float = 1.0,
    count_aware: bool = True,
    uniform_weight: float = 0.1,
    n_layers: int = 1,
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
) -> SUPERRES:
    """Enhance spot profiles to K sub-spots per spot and write them as new elements.

    Trains :class:`~sslspatial.model.SUPERRES` (spot graph-transformer encoder, sub-spot ResNet-MLP decoder on image
    and directional graph-context features, proper NB / ZINB / Poisson / Gaussian likelihoods of each spot given the
    sum of its sub-spot means) and writes, in memory:

    - ``sdata.shapes[key_added]``: the sub-spot circles (see :func:`sslspatial.pp.subspots`), spot by spot;
    - ``sdata.tables[table_key_added]``: one row per sub-spot annotating them (``region`` / ``instance_id``), ``X``
      the enhanced raw-scale means (the K sub-spot means of a spot sum exactly to the spot's fitted mean), obs
      ``spot`` (parent spot id), ``spot_obs`` (parent row of the spot table), ``subspot`` (k), var ``modality``;
      ``layers["sample"]`` a posterior-predictive draw if ``sample=True``.

    The spot table is left untouched.

    Parameters
    ----------
    data
        SpatialData with spot shapes and the table(s) annotating them (from a squidpy-style Visium AnnData:
        ``spatialdata_io.experimental.from_legacy_anndata(adata)``).
    shapes_key
        Spot shapes: circles (points with ``radius``) or polygons.
    table_key
        Spot table (its rows for ``shapes_key`` are enhanced; its ``obsp[connectivity_key]`` is the spot graph).
    image_key
        Image giving sub-spot features (None: graph only): H&E (RGB) or fluorescence with any number of channels
        (e.g. DAPI + polyT).
    layout, n_subspots
        ``"hexagon"`` (K = 7) or ``"square"`` (K = ``n_subspots``, a square number, default 4).
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` or ``"gaussian"`` (single modality).
    modalities
        Multi-omics: ``{table name: likelihood}``, tables annotating the same spots (e.g. ``{"rna": "nb",
        "protein": "poisson"}``); overrides ``likelihood``. The graph is read from ``table_key``.
    layer
        Layer of the spot table(s) holding the profiles (default ``X``).
    use_graph
        False: no-graph ablation (no graph encoder, no graph-context features).
    connectivity_key
        ``obsp`` key of the spot graph (``ss.pp.build_graph``).
    image_method, patch_size
        Image features (``sslspatial.pp._image_features.image_features`` method) and patch side in the spots'
        coordinate units (default the sub-spot diameter). RGB images get ``image_method``'s features; other images
        (fluorescence, any number of channels) get per-channel statistics (``image_method="stats"`` only).
    value_range
        Pixel value range ``(low, high)`` of the image, mapped to ``[0, 1]``. Default: ``(0, 255)`` for ``uint8``;
        for other dtypes each channel is scaled between its own 1 % and 99 % quantiles (fluorescence channels differ
        in brightness), which is also how 3-channel non-``uint8`` images are then treated.
    key_added, table_key_added
        Names of the new shapes and table (default ``f"{shapes_key}_subspots"``, ``f"{table_key}_superres"``).
    sample
        Also write ``layers["sample"]``.
    spot_mean
        ``"observed"``: the sub-spots of a spot sum exactly to its measured profile; ``"fitted"``: to the model's
        fitted (denoised) spot mean.
    max_epochs, batch_size, lr
        Training (default epochs: ``min(300, max(30, 30000 // n_spots))``, with ``early_stopping`` an upper bound).
    early_stopping
        Hold out 10 % of the spots and stop when their sub-spot-sum negative log-likelihood (the loss of the branch that
        gives the enhanced profiles) has not improved by 0.1 % for 2 epochs; the held-out spots are enhanced all the
        same. ``None``: on for ``max_epochs=None`` with at least 5,000 spots (a Visium HD-sized run needs a few
        epochs, not 30), off otherwise (small data keep every spot for training and the epoch formula).
    n_hidden, n_latent, image_weight
        Model sizes and the image-regulariser weight.
    count_aware
        Let the sub-spot branch predict absolute rates, explaining each spot's total count as well as its composition
        (learns where the transcripts are, e.g. from nuclear-stain density in the image). False: the branch only
        splits the observed total by composition (``benchmarks/results/superres.md`` compares both).
    uniform_weight
        Shrink each spot's sub-spot allocation toward the uniform split where the sub-spot features carry no evidence
        (penalty on the within-spot variance of the sub-spot log-means; see
        :class:`~sslspatial.module._superres.SuperResModule`). Without it the graph-only model fell below the uniform
        split on osmFISH hexagonal pseudo-spots (``benchmarks/results/superres.md``); 0 disables it.
    n_layers
        Graph-transformer layers of the spot encoder (= hops of the subgraph each minibatch carries). The enhanced
        profiles with ``spot_mean="observed"`` do not depend on the encoder (it only fits the denoised spot mean), so
        one layer (soScope: 3) keeps training fast.
    overwrite
        Replace existing output elements (else :class:`~sslspatial.OutputExistsError`).
    seed
        Seeds Python, NumPy and torch before the model is built (``None``: leave the random state as it is).
    accelerator, devices
        Lightning's hardware options (``accelerator="gpu"``, ``devices=1``).
    model_kwargs
        More :class:`~sslspatial.model.SUPERRES` arguments.
    train_kwargs
        More :meth:`SUPERRES.train` arguments (e.g. ``enable_progress_bar=False``, ``plan_kwargs``).

    Notes
    -----
    ``sdata.tables[table_key_added].uns[key_added]`` records the function, its parameters and the package version.

    Returns
    -------
    The trained model.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000, spot_layouts=("visium",))
    >>> ss.pp.build_graph(sdata, table_key="table_visium", method="knn", n_neighs=6)
    >>> model = ss.tl.superres(sdata, table_key="table_visium", shapes_key="spots_visium", max_epochs=5)
    >>> sdata.tables["table_visium_superres"].n_obs == 7 * sdata.tables["table_visium"].n_obs
    True
    """
    _validate.check_numbers(dict(locals()))  # sizes, rates, lr, seed: before any work (shared checks)
    params = {k: v for k, v in locals().items() if k != "data"}
    _io.require_spatialdata(data, "superres", "spot shapes and the table(s) annotating them")
    sdata = data
    train_kwargs = trainer_options("superres", accelerator, devices, train_kwargs)
    layout, k, side = _layout(layout, n_subspots)
    if spot_mean not in ("observed", "fitted"):
        raise ValueError(f"spot_mean must be 'observed' or 'fitted', got {spot_mean!r}.")
    mods = dict(modalities) if modalities is not None else {table_key: likelihood}
    for name, lik in mods.items():
        if lik not in LIKELIHOODS:
            raise ValueError(f"Unknown likelihood {lik!r} for {name!r}: use one of {LIKELIHOODS}.")
    key_added = check_key(key_added or f"{shapes_key}_subspots", "key_added")
    table_key_added = check_key(table_key_added or f"{table_key}_superres", "table_key_added")
    if not overwrite:
        check_absent(key_added in sdata.shapes, f"shapes[{key_added!r}]")
        check_absent(table_key_added in sdata.tables, f"tables[{table_key_added!r}]", "table_key_added")
    table = _io.get_table(sdata, table_key)
    spots = _read_spots(sdata, table, shapes_key, layout, side, k)
    x, sizes, var = _profiles(sdata, spots, shapes_key, mods, layer, table_key)
    adjacency = _spot_graph(table, spots, connectivity_key) if use_graph else None
    image = None if image_key is None else _ImageSpec(image_key, image_method, patch_size, value_range)
    work, n_image = _work_table(sdata, spots, x, var, image, _graph_context(spots, x, adjacency, mods, sizes))
    if adjacency is not None:
        work.obsp[connectivity_key] = adjacency
    SUPERRES.setup_anndata(
        work,
        subspot_features_key=_FEATURES,
        n_subspots=k,
        n_image_features=n_image,
        connectivity_key=connectivity_key if use_graph else None,
        modality_key="modality" if len(mods) > 1 else None,
    )
    seed_everything(seed)
    model = SUPERRES(
        work, likelihood=list(mods.values()), n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers,
        use_graph=use_graph, image_weight=image_weight, count_aware=count_aware, uniform_weight=uniform_weight,
        **(model_kwargs or {}),
    )  # fmt: skip
    n_spots = len(spots.rows)
    if early_stopping is None:
        early_stopping = max_epochs is None and n_spots >= _EARLY_STOPPING_MIN_SPOTS
    if max_epochs is None:
        max_epochs = int(min(300, max(30, 30000 // n_spots)))
    warmup = 1 if early_stopping else max(1, max_epochs // 3)
    plan_kwargs = {"lr": lr, "n_epochs_kl_warmup": warmup, **train_kwargs.pop("plan_kwargs", {})}
    if early_stopping:
        train_kwargs = {**_early_stopping_options(), **train_kwargs}
    train_kwargs.setdefault("train_size", 1.0)
    n_per = work.obsm[_FEATURES].shape[1] // k
    _logging.info(f"superres: {n_spots} spots x K={k}, {x.shape[1]} features, {n_per} per sub-spot")
    model.train(max_epochs=max_epochs, batch_size=batch_size, plan_kwargs=plan_kwargs, **train_kwargs)

    out = model.get_subspot_expression(sample=sample, spot_mean=spot_mean)
    means, draws = out if sample else (out, None)
    _write(sdata, spots, work.var, (means, draws), key_added, table_key_added)
    sdata.tables[table_key_added].uns[key_added] = run_record("superres", params)
    return model


def _read_spots(sdata, table: AnnData, shapes_key: str, layout: str, side: int, k: int) -> _Spots:
    """The spot shapes and the rows of the spot table annotating them."""
    geom = spot_geometry(sdata, shapes_key, layout)
    rows, pos = _spot_rows(table, shapes_key, geom.index)
    return _Spots(geom, rows, pos, table.obs_names[rows], layout, side, k)


def _profiles(sdata, spots: _Spots, shapes_key: str, mods: dict[str, str], layer: str | None, table_key: str):
    """Profiles of the spots in every modality table (spot-table order), checked against their likelihood.

    Returns the ``(n, sum of genes)`` profiles, the number of features of each modality and the ``var`` of the
    enhanced table (unique names; ``modality``).
    """
    blocks, sizes, names = [], [], []
    for name, lik in mods.items():
        t = _io.get_table(sdata, name)
        t_rows, t_pos = _spot_rows(t, shapes_key, spots.geom.index)
        order = pd.Series(t_rows, index=t_pos).reindex(spots.pos)
        if order.isna().any():
            raise ValueError(f"Table {name!r} lacks {int(order.isna().sum())} spots of {table_key!r}.")
        x = _matrix(t, order.to_numpy(dtype=np.int64), layer)
        where = f"table {name!r} ({'X' if layer is None else f'layer {layer!r}'})"
        check_counts(x, where, lik) if lik != "gaussian" else check_finite(x, where)
        blocks.append(x)
        sizes.append(x.shape[1])
        names += [name] * x.shape[1]
    var = pd.DataFrame({"modality": pd.Categorical(names)}, index=_unique_names(mods, sdata))
    return np.concatenate(blocks, 1), sizes, var


def _spot_graph(table: AnnData, spots: _Spots, connectivity_key: str) -> sp.csr_matrix:
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


def _graph_context(spots: _Spots, x: np.ndarray, adjacency, mods: dict[str, str], sizes: list[int]):
    """Directional graph-context features of every sub-spot ``(n, K * F)``, or None without the graph."""
    if adjacency is None:
        return None
    rep = _representation(x, list(mods.values()), sizes)
    return graph_context_features(adjacency, spots.centres, spots.centres_nk, rep)


def _work_table(sdata, spots: _Spots, x: np.ndarray, var: pd.DataFrame, image: _ImageSpec | None, context):
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
    work.obsm[_FEATURES] = feats.astype(np.float32)
    return work, n_image


def _unique_names(mods, sdata) -> pd.Index:
    names = []
    for name in mods:
        names += list(sdata.tables[name].var_names.astype(str))
    idx = pd.Index(names)
    if idx.is_unique:
        return idx
    return pd.Index([f"{m}:{v}" for m in mods for v in sdata.tables[m].var_names.astype(str)])


def _write(sdata, spots: _Spots, var: pd.DataFrame, values: tuple, key_added: str, table_key_added: str) -> None:
    """Write the sub-spot shapes ``key_added`` and the table ``table_key_added`` of their ``(means, draws)``."""
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
