"""``ss.tl.pretrain_contrastive``: joint-embedding pretraining (Barlow Twins, BYOL) through the pretraining harness.

Checks, table and model setup, training and writing are :mod:`sslspatial.tl._pretrain`'s (``_prepare``,
``_train_and_write``), shared with ``pretrain_mask`` and ``pretrain_pseudolabel``; only the objective differs.
"""

from __future__ import annotations

from typing import Literal, get_args

from .._constants import Key
from .._types import DataLike
from .._validate import check_choice, check_numbers
from ..model import SpatialPretrainModel
from ..nn._graph_encoders import Encoder
from ..nn._likelihoods import Likelihood
from ._pretrain import Devices, _prepare, _train_and_write

ContrastiveMethod = Literal["barlow", "byol"]


def pretrain_contrastive(
    data: DataLike,
    *,
    method: ContrastiveMethod = "barlow",
    encoder: Encoder = "gat",
    likelihood: Likelihood = "nb",
    layer: str | None = None,
    table_key: str = Key.DEFAULT_TABLE,
    connectivity_key: str = Key.CONNECTIVITIES,
    n_latent: int = 32,
    n_hidden: int = 128,
    n_layers: int = 2,
    dropout: float = 0.0,
    noise: float = 0.2,
    view_dropout: float = 0.2,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    key_added: str = "pretrain_contrastive",
    overwrite: bool = False,
    seed: int | None = 0,
    accelerator: str = "auto",
    devices: Devices = "auto",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    objective_kwargs: dict | None = None,
) -> SpatialPretrainModel:
    """Joint-embedding pretraining: Barlow Twins (``method="barlow"``) or BYOL (``method="byol"``, EMA target).

    Two views of each seed's subgraph are made by Gaussian noise (``noise``) and random entry masking
    (``view_dropout``) of the log-normalised input; ``likelihood`` only decides the input transform (``log1p`` of
    normalised counts unless ``"gaussian"``) and which values are accepted.

    Parameters
    ----------
    data, encoder, likelihood, layer, table_key, connectivity_key, n_latent, n_hidden, n_layers, dropout
        As in :func:`pretrain_mask`.
    method
        ``"barlow"`` or ``"byol"``.
    noise, view_dropout
        View augmentation strengths.
    max_epochs, batch_size, lr, key_added, overwrite, seed, accelerator, devices, model_kwargs, train_kwargs
        As in :func:`pretrain_mask`.
    objective_kwargs
        More objective arguments (``lambd``, ``projector`` for Barlow Twins; ``tau``, ``projection``, ``hidden`` for
        BYOL).

    Returns
    -------
    The trained model.

    Examples
    --------
    >>> model = ss.tl.pretrain_contrastive(adata, method="byol", max_epochs=10)  # doctest: +SKIP
    """
    params = dict(locals())
    check_numbers(params)  # sizes, rates, lr, seed: before any work
    check_choice(method, get_args(ContrastiveMethod), "method")
    table = _prepare(data, table_key, key_added, overwrite, layer, batch_size, encoder, connectivity_key)
    kwargs = {"noise": noise, "dropout": view_dropout, **(objective_kwargs or {})}
    return _train_and_write(table, "pretrain_contrastive", params, method, kwargs, None)
