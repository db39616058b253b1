"""Joint-embedding objectives: Barlow Twins and BYOL (with a target network that is really updated).

Views of a subgraph are made in input space (log1p-normalised expression): Gaussian noise of scale ``noise`` and
random entry masking (mask token) with rate ``dropout``; both views of a seed share its subgraph. Losses are computed
on seed embeddings only.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .._constants import REGISTRY_KEYS as KEYS
from ..nn import MLPHead
from ._base import ObjectiveOutput, seed_slice


def augment(x_t: torch.Tensor, noise: float, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a noisy view of ``x_t`` and its entry mask (``True`` = hidden behind the mask token).

    Examples
    --------
    >>> view, mask = augment(torch.zeros(4, 3), noise=0.0, dropout=0.0)
    >>> bool(view.eq(0).all()), bool(mask.any())
    (True, False)
    """
    view = x_t + noise * torch.randn_like(x_t) if noise > 0 else x_t
    mask = torch.rand_like(x_t) < dropout if dropout > 0 else torch.zeros_like(x_t, dtype=torch.bool)
    return view, mask


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    """Barlow Twins loss of two batches of embeddings.

    Barlow Twins: ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` with ``C`` the cross-correlation of the batch-
    standardised embeddings.

    Examples
    --------
    >>> z = torch.randn(64, 8)
    >>> float(barlow_twins_loss(z, z, lambd=0.0)) < 1e-6  # identical views: C has a unit diagonal
    True
    """
    n = z1.shape[0]
    z1 = (z1 - z1.mean(0)) / (z1.std(0, unbiased=False) + 1e-6)
    z2 = (z2 - z2.mean(0)) / (z2.std(0, unbiased=False) + 1e-6)
    c = z1.T @ z2 / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def byol_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row ``2 - 2 cos(online, target)`` (the target is detached).

    Examples
    --------
    >>> byol_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])).tolist()
    [4.0]
    """
    return 2 - 2 * F.cosine_similarity(online, target.detach(), dim=-1)


class BarlowTwins(nn.Module):
    """Barlow Twins on the seed embeddings of two augmented views.

    Barlow Twins on seed embeddings of two augmented views (projector ``n_latent -> 512 -> 512``, ``lambd`` 0.0051 as in
    the reference).

    Examples
    --------
    >>> BarlowTwins(8).lambd
    0.0051
    """

    uses_clean_latent = False

    def __init__(
        self, n_latent: int, projector: int = 512, lambd: float = 0.0051, noise: float = 0.2, dropout: float = 0.2
    ):
        super().__init__()
        self.lambd, self.noise, self.dropout = float(lambd), float(noise), float(dropout)
        self.projector = MLPHead(n_latent, projector, projector, n_layers=2)

    def forward(self, module, batch: dict, inference_outputs: dict) -> ObjectiveOutput:
        """Two views, one projector, the Barlow Twins loss (0 for a batch of one seed)."""
        n_seeds = int(inference_outputs[KEYS.N_SEEDS_KEY])
        zs = []
        for _ in range(2):
            view, mask = augment(inference_outputs[KEYS.X_T_KEY], self.noise, self.dropout)
            z = module.encode(
                view,
                inference_outputs[KEYS.EDGE_INDEX_KEY],
                inference_outputs.get(KEYS.DEGREE_KEY),
                mask=mask,
                hops=inference_outputs.get(KEYS.HOPS_KEY),
            )
            zs.append(seed_slice(z, n_seeds))
        if n_seeds < 2:
            loss = 0.0 * (zs[0].sum() + zs[1].sum())
        else:
            loss = barlow_twins_loss(self.projector(zs[0]), self.projector(zs[1]), self.lambd)
        return ObjectiveOutput(loss, loss.detach().expand(n_seeds), {})


class BYOL(nn.Module):
    """BYOL with an exponential-moving-average target network.

    BYOL: an online encoder + projector + predictor regresses the projection of a target network, which is an
    exponential moving average (``tau``) of the online encoder and projector, updated after every optimiser step by
    :meth:`update_target` (the model's training loop calls it through a Lightning callback).

    Parameters
    ----------
    encoder
        The online encoder, copied to initialise the target (not kept as a submodule).
    n_latent
        Latent dimension.
    projection, hidden
        Projector / predictor output and hidden widths.
    tau
        EMA decay of the target.
    noise, dropout
        View augmentation.

    Examples
    --------
    >>> from sslspatial.nn import GraphEncoder
    >>> obj = BYOL(GraphEncoder(5, 4, 8, kind="mlp"), 4)
    >>> sum(p.requires_grad for p in obj.target_encoder.parameters())
    0
    """

    uses_clean_latent = False

    def __init__(
        self,
        encoder: nn.Module,
        n_latent: int,
        projection: int = 256,
        hidden: int = 1024,
        tau: float = 0.99,
        noise: float = 0.2,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.tau, self.noise, self.dropout = float(tau), float(noise), float(dropout)
        self.projector = MLPHead(n_latent, hidden, projection)
        self.predictor = MLPHead(projection, hidden, projection)
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)

    @torch.no_grad()
    def update_target(self, encoder: nn.Module) -> None:
        """EMA step: ``target <- tau * target + (1 - tau) * online`` for the encoder and the projector."""
        for online, target in ((encoder, self.target_encoder), (self.projector, self.target_projector)):
            for p_o, p_t in zip(online.parameters(), target.parameters(), strict=True):
                p_t.mul_(self.tau).add_(p_o.detach(), alpha=1 - self.tau)
            for b_o, b_t in zip(online.buffers(), target.buffers(), strict=True):
                b_t.copy_(b_o)

    def forward(self, module, batch: dict, inference_outputs: dict) -> ObjectiveOutput:
        """Symmetric BYOL loss over two views, averaged over seeds."""
        n_seeds = int(inference_outputs[KEYS.N_SEEDS_KEY])
        edge_index, degree = inference_outputs[KEYS.EDGE_INDEX_KEY], inference_outputs.get(KEYS.DEGREE_KEY)
        hops = inference_outputs.get(KEYS.HOPS_KEY)
        views = [augment(inference_outputs[KEYS.X_T_KEY], self.noise, self.dropout) for _ in range(2)]
        online, target = [], []
        for view, mask in views:
            z = seed_slice(module.encode(view, edge_index, degree, mask=mask, hops=hops), n_seeds)
            online.append(self.predictor(self.projector(z)))
            with torch.no_grad():
                self.target_encoder.train(self.training)
                zt = seed_slice(
                    module.encode(view, edge_index, degree, mask=mask, encoder=self.target_encoder, hops=hops),
                    n_seeds,
                )
                target.append(self.target_projector(zt))
        if n_seeds < 2:  # batch norm in the heads needs two seeds
            per_seed = 0.0 * online[0].sum(-1)
        else:
            per_seed = byol_loss(online[0], target[1]) + byol_loss(online[1], target[0])
        return ObjectiveOutput(per_seed.mean(), per_seed.detach(), {})
