"""Query adaptation of a reference model without labels: only the query's input adapter trains (scArches-style)."""

from __future__ import annotations

import torch

from .._constants import REGISTRY_KEYS as KEYS
from .._provenance import seed_everything
from ..data._loaders import SubgraphDataLoader

#: Objectives whose models have a query loss to adapt against (see ``SpatialPretrainModule.adaptation_loss``).
ADAPTABLE = ("pseudolabel", "mask")


def adaptation_device(accelerator: str, devices) -> str | None:
    """The torch device of an adaptation run from Lightning-style ``accelerator`` / ``devices`` (None: leave as is).

    Examples
    --------
    >>> adaptation_device("auto", "auto") is None, adaptation_device("cpu", "auto"), adaptation_device("gpu", [1])
    (True, 'cpu', 'cuda:1')
    """
    if not isinstance(accelerator, str) or accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise ValueError(f"accelerator={accelerator!r}: use 'auto', 'cpu', 'gpu' (or 'cuda') or 'mps'.")
    if accelerator == "auto":
        return None
    if accelerator in ("cpu", "mps"):
        return accelerator
    if devices in ("auto", 1):
        return "cuda"
    if isinstance(devices, list | tuple) and len(devices) == 1:
        return f"cuda:{int(devices[0])}"
    raise ValueError(f"devices={devices!r}: the adaptation runs on one device; pass 1 or a one-element list [index].")


def query_loss(model, batch_size: int = 4096, seed: int = 0) -> float:
    """The adaptation loss of all the model's cells (fixed order and masks), weighted by seeds per minibatch.

    Examples
    --------
    >>> before = query_loss(query_model)  # doctest: +SKIP
    """
    module = model.module
    loader = SubgraphDataLoader(
        model.adata_manager, n_hops=module.n_hops, batch_size=min(batch_size, model.adata.n_obs), shuffle=False
    )
    module.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        device = model.device
        for tensors in loader:
            tensors = {k: v.to(device) for k, v in tensors.items()}
            n = int(tensors[KEYS.N_SEEDS_KEY])
            total += float(module.adaptation_loss(tensors)) * n
            count += n
    return total / max(count, 1)


def adapt_query(
    model,
    *,
    max_epochs: int = 50,
    lr: float = 1e-2,
    batch_size: int = 256,
    penalty: float = 1.0,
    seed: int | None = 0,
) -> dict[str, float]:
    """Fit the query model's input adapter on the query's own self-supervised loss; every other weight stays frozen.

    Parameters
    ----------
    model
        A query :class:`~sslspatial.model.SpatialPretrainModel` from ``load_query_data(..., input_adapter=True)``.
    max_epochs
        Passes over the query cells.
    lr
        Adam learning rate of the adapter.
    batch_size
        Seed cells per minibatch (drawn uniformly, so each batch's cluster mix is the query's).
    penalty
        Weight of the adapter's squared distance from the identity.
    seed
        Seeds the batch order (and the masks of a masked-reconstruction model).

    Returns
    -------
    ``{"loss_before", "loss_after"}`` (the query loss over all its cells, without the penalty) and ``"epochs"``.

    Examples
    --------
    >>> query_model = SpatialPretrainModel.load_query_data(query, reference, input_adapter=True)  # doctest: +SKIP
    >>> adapt_query(query_model, max_epochs=50)  # doctest: +SKIP
    """
    module = model.module
    if module.input_adapter is None:
        raise ValueError("The model has no input adapter: build it with load_query_data(..., input_adapter=True).")
    if module.objective_name not in ADAPTABLE:
        raise TypeError(
            f"Adaptation needs a model pretrained with objective in {ADAPTABLE}, not {module.objective_name!r}."
        )
    if model.adata.n_obs < 2:
        raise ValueError("Adaptation needs at least two query cells.")
    seed_everything(seed)
    before = query_loss(model, seed=0 if seed is None else seed)
    trainable = {name: p.requires_grad for name, p in module.named_parameters()}
    adapter = list(module.input_adapter.parameters())
    optimiser = torch.optim.Adam(adapter, lr=lr)
    loader = SubgraphDataLoader(
        model.adata_manager,
        n_hops=module.n_hops,
        batch_size=min(batch_size, model.adata.n_obs),
        shuffle=True,
        drop_last=model.adata.n_obs > batch_size,
    )
    try:
        for name, p in module.named_parameters():
            p.requires_grad_(name.startswith("input_adapter."))
        module.eval()  # no dropout, and normalisation statistics of the reference stay as they are
        device = model.device
        for _ in range(max_epochs):
            for tensors in loader:
                tensors = {k: v.to(device) for k, v in tensors.items()}
                loss = module.adaptation_loss(tensors) + penalty * module.input_adapter.penalty()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        for name, p in module.named_parameters():
            p.requires_grad_(trainable[name])
    after = query_loss(model, seed=0 if seed is None else seed)
    return {"loss_before": before, "loss_after": after, "epochs": int(max_epochs)}
