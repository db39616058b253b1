"""``ss.tl.superres``: enhance spot-level profiles to sub-spot resolution (soScope re-implementation).

Check the arguments -> read the spots (:func:`sslspatial.io._superres.read_spots`) -> set up and train
:class:`~sslspatial.model.SUPERRES` -> write the sub-spots (:func:`sslspatial.io._superres.write_subspots`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from .. import _logging
from .._constants import Key, check_key
from .._docs import inject_docs
from .._provenance import run_record, seed_everything
from .._types import DataLike
from .._validate import check_absent, check_choice, check_numbers, trainer_options
from ..io._access import require_spatialdata
from ..io._superres import (
    SUBSPOT_FEATURES,
    ImageSpec,
    _representation,  # noqa: F401 (its old import path, used by tests)
    check_layout,
    read_spots,
    write_subspots,
)
from ..model._superres import SUPERRES, TL_MODEL_DEFAULTS, TRAIN_DEFAULTS, UNIFORM_WEIGHT
from ..nn._likelihoods import LIKELIHOODS, Likelihood
from ..pp._subspots import Layout

__all__ = ["superres"]

SpotMean = Literal["observed", "fitted"]
SPOT_MEANS = get_args(SpotMean)


@inject_docs
def superres(
    data: DataLike,
    *,
    shapes_key: str,
    table_key: str = Key.DEFAULT_TABLE,
    image_key: str | None = None,
    layout: Layout = "hexagon",
    n_subspots: int | None = None,
    likelihood: Likelihood = "nb",
    modalities: Mapping[str, str] | None = None,
    layer: str | None = None,
    use_graph: bool = True,
    connectivity_key: str = Key.CONNECTIVITIES,
    image_method: str = "stats",
    patch_size: float | None = None,
    value_range: tuple[float, float] | None = None,
    key_added: str = "{shapes_key}_subspots",
    table_key_added: str = "{table_key}_superres",
    sample: bool = False,
    spot_mean: SpotMean = "observed",
    max_epochs: int | None = None,
    batch_size: int = TRAIN_DEFAULTS["batch_size"],
    lr: float = TRAIN_DEFAULTS["lr"],
    n_hidden: int = TL_MODEL_DEFAULTS["n_hidden"],
    n_latent: int = TL_MODEL_DEFAULTS["n_latent"],
    count_aware: bool = True,
    n_layers: int = TL_MODEL_DEFAULTS["n_layers"],
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
        Names of the new shapes and table; ``{shapes_key}`` and ``{table_key}`` are replaced by those arguments
        (default ``"<shapes_key>_subspots"``, ``"<table_key>_superres"``).
    sample
        Also write ``layers["sample"]``.
    spot_mean
        ``"observed"``: the sub-spots of a spot sum exactly to its measured profile; ``"fitted"``: to the model's
        fitted (denoised) spot mean.
    max_epochs, batch_size, lr
        Training (default 30 epochs, with early stopping an upper bound; the sizes, batch and epochs were chosen on
        STARmap pseudo-spots by ``benchmarks/superres_tuning.py``).
        Early stopping (``train_kwargs={"early_stopping": True}``) holds out 10 % of the spots and stops when their
        sub-spot-sum negative log-likelihood (the loss of the branch that gives the enhanced profiles) has not
        improved by 0.1 % for 2 epochs; the held-out spots are enhanced all the same. By default it is on for
        ``max_epochs=None`` with at least 5,000 spots (a Visium HD-sized run needs a few epochs, not 30), off
        otherwise (small data keep every spot for training); see :meth:`SUPERRES.train`.
    n_hidden, n_latent
        Model sizes (default 64 and 32, chosen with the training defaults; ``model_kwargs={"image_weight": ...}``:
        the image-regulariser weight, default 1).
    count_aware
        Let the sub-spot branch predict absolute rates, explaining each spot's total count as well as its composition
        (learns where the transcripts are, e.g. from nuclear-stain density in the image). False: the branch only
        splits the observed total by composition (``benchmarks/results/superres.md`` compares both).
    n_layers
        Graph-transformer layers of the spot encoder (= hops of the subgraph each minibatch carries). The enhanced
        profiles with ``spot_mean="observed"`` do not depend on the encoder (it only fits the denoised spot mean), so
        one layer (soScope: 3) keeps training fast.
    overwrite
        Replace existing output elements (else :class:`~sslspatial.OutputExistsError`).
    %(seed)s
    %(accelerator_devices)s
    model_kwargs
        More :class:`~sslspatial.model.SUPERRES` arguments. ``uniform_weight`` (default 0.1) shrinks each spot's
        sub-spot allocation toward the uniform split where the sub-spot features carry no evidence (penalty on the
        within-spot variance of the sub-spot log-means; see :class:`~sslspatial.module._superres.SuperResModule`).
        Without it the graph-only model fell below the uniform split on osmFISH hexagonal pseudo-spots
        (``benchmarks/results/superres.md``); 0 disables it.
    train_kwargs
        More :meth:`SUPERRES.train` arguments (e.g. ``early_stopping``, ``enable_progress_bar=False``,
        ``plan_kwargs``).

    Returns
    -------
    The trained model.

    Notes
    -----
    ``sdata.tables[table_key_added].uns[key_added]`` records the function, its parameters and the package version.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=1000, spot_layouts=("visium",))
    >>> ss.pp.build_graph(sdata, table_key="table_visium", method="knn", n_neighs=6)
    >>> model = ss.tl.superres(sdata, table_key="table_visium", shapes_key="spots_visium", max_epochs=5)
    >>> sdata.tables["table_visium_superres"].n_obs == 7 * sdata.tables["table_visium"].n_obs
    True
    """
    check_numbers(dict(locals()))  # sizes, rates, lr, seed: before any work (shared checks)
    params = {k: v for k, v in locals().items() if k != "data"}
    require_spatialdata(data, "superres", "spot shapes and the table(s) annotating them")
    train_kwargs = trainer_options("superres", accelerator, devices, train_kwargs)
    layout, k, _ = check_layout(layout, n_subspots)
    check_choice(spot_mean, SPOT_MEANS, "spot_mean")
    mods = dict(modalities) if modalities is not None else {table_key: likelihood}
    for name, lik in mods.items():
        if lik not in LIKELIHOODS:
            raise ValueError(f"Unknown likelihood {lik!r} for {name!r}: use one of {LIKELIHOODS}.")
    key_added = check_key(key_added.format(shapes_key=shapes_key), "key_added")
    table_key_added = check_key(table_key_added.format(table_key=table_key), "table_key_added")
    if not overwrite:
        check_absent(key_added in data.shapes, f"shapes[{key_added!r}]")
        check_absent(table_key_added in data.tables, f"tables[{table_key_added!r}]", "table_key_added")

    image = None if image_key is None else ImageSpec(image_key, image_method, patch_size, value_range)
    work, spots, n_image = read_spots(
        data, shapes_key=shapes_key, table_key=table_key, layout=layout, n_subspots=n_subspots, modalities=mods,
        layer=layer, connectivity_key=connectivity_key if use_graph else None, image=image,
    )  # fmt: skip

    SUPERRES.setup_anndata(
        work,
        subspot_features_key=SUBSPOT_FEATURES,
        n_subspots=k,
        n_image_features=n_image,
        connectivity_key=connectivity_key if use_graph else None,
        modality_key="modality" if len(mods) > 1 else None,
    )
    seed_everything(seed)
    model = SUPERRES(
        work, likelihood=list(mods.values()), n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers,
        use_graph=use_graph, count_aware=count_aware, **{"uniform_weight": UNIFORM_WEIGHT, **(model_kwargs or {})},
    )  # fmt: skip
    n_per = work.obsm[SUBSPOT_FEATURES].shape[1] // k
    _logging.info(f"superres: {work.n_obs} spots x K={k}, {work.n_vars} features, {n_per} per sub-spot")
    model.train(max_epochs=max_epochs, batch_size=batch_size, lr=lr, **train_kwargs)

    out = model.get_subspot_expression(sample=sample, spot_mean=spot_mean)
    values = out if sample else (out, None)
    write_subspots(data, spots, work.var, values, key_added, table_key_added, run_record("superres", params))
    return model
