"""Masked reconstruction objectives.

Masked reconstruction: mask whole cells, random entries, gene programmes or a cell type, and reconstruct the masked
values under a count (``nb``, ``zinb``, ``poisson``) or Gaussian likelihood, scoring **masked targets only**.

Masked inputs are replaced by a learned per-gene mask token (the module's), so a zero count stays distinguishable from
a hidden one. Genes missing from a transferred dataset are always masked and never scored.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from .._constants import REGISTRY_KEYS as KEYS
from ..nn._likelihoods import LIKELIHOODS as LIKELIHOODS  # re-exported by sslspatial.objectives
from ..nn._likelihoods import check_likelihood, likelihood_distribution
from ._base import ObjectiveOutput, seed_slice

Strategy = Literal["cells", "entries", "programmes", "celltype"]
STRATEGIES = get_args(Strategy)
DEFAULT_FRACTION = {"cells": 0.2, "entries": 0.5, "programmes": 0.5, "celltype": 1.0}


def mask_cells(n_nodes: int, n_genes: int, n_seeds: int, fraction: float, device=None) -> torch.Tensor:
    """Mask whole cells, at the same rate among seeds and among the other nodes.

    Mask every gene of ``round(fraction * n)`` random cells, drawn separately among seeds (at least one) and among the
    other nodes, so seeds are masked at the requested rate. The mask is a read-only expanded view of one flag per cell
    (stride 0 along genes), which lets the encoder project the mask token once instead of per entry.

    Examples
    --------
    >>> m = mask_cells(10, 3, 5, 0.2)
    >>> int(m[:5].all(1).sum()), int(m[5:].all(1).sum())
    (1, 1)
    """
    rows = torch.zeros(n_nodes, dtype=torch.bool, device=device)
    k_seed = max(1, round(fraction * n_seeds)) if n_seeds else 0
    rows[torch.randperm(n_seeds, device=device)[:k_seed]] = True
    n_rest = n_nodes - n_seeds
    k_rest = round(fraction * n_rest)
    if k_rest:
        rows[n_seeds + torch.randperm(n_rest, device=device)[:k_rest]] = True
    return rows[:, None].expand(n_nodes, n_genes)


def mask_entries(n_nodes: int, n_genes: int, fraction: float, device=None) -> torch.Tensor:
    """Mask each entry independently with probability ``fraction``.

    Examples
    --------
    >>> float(mask_entries(1000, 100, 0.5).float().mean().round(decimals=1))
    0.5
    """
    return torch.rand(n_nodes, n_genes, device=device) < fraction


def mask_programmes(n_nodes: int, membership: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mask, in each cell, the union of ``max(1, floor(fraction * P))`` random gene programmes.

    Parameters
    ----------
    n_nodes
        Number of cells.
    membership
        ``(P, n_genes)`` boolean programme membership.
    fraction
        Fraction of programmes masked per cell.

    Examples
    --------
    >>> membership = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    >>> m = mask_programmes(6, membership, 0.5)
    >>> sorted({tuple(r.tolist()) for r in m}) <= [(False, False, True, True), (True, True, False, False)]
    True
    """
    n_prog = membership.shape[0]
    k = max(1, int(fraction * n_prog))
    chosen = torch.rand(n_nodes, n_prog, device=membership.device).argsort(dim=1)[:, :k]
    picked = torch.zeros(n_nodes, n_prog, device=membership.device)
    picked.scatter_(1, chosen, 1.0)
    return (picked @ membership.float()) > 0


def mask_celltype(cell_types: torch.Tensor, n_seeds: int, n_genes: int) -> torch.Tensor:
    """Mask every cell of one cell type, drawn at random among the types of the seeds (codes < 0 are never masked).

    Like :func:`mask_cells`, returns an expanded view of one flag per cell.

    Examples
    --------
    >>> m = mask_celltype(torch.tensor([2, 2, 1, 2]), 1, 3)
    >>> m.all(1).tolist()
    [True, True, False, True]
    """
    seeds = cell_types[:n_seeds]
    seeds = seeds[seeds >= 0]
    rows = torch.zeros(cell_types.shape[0], dtype=torch.bool, device=cell_types.device)
    if seeds.numel():
        chosen = seeds[torch.randint(seeds.numel(), (1,), device=cell_types.device)]
        rows = cell_types == chosen
    return rows[:, None].expand(cell_types.shape[0], n_genes)


def masked_nll(distribution: torch.distributions.Distribution, target: torch.Tensor, mask: torch.Tensor):
    """Negative log-likelihood of the **masked** entries only.

    Parameters
    ----------
    distribution
        Predicted distribution with batch shape ``target.shape``.
    target
        Observed values.
    mask
        Boolean, ``True`` where an entry was masked (and is scored).

    Returns
    -------
    ``(mean over masked entries, per-row sum over masked entries)``. Unmasked entries do not enter either value: the
    target is replaced by the prediction's mean there before ``log_prob`` so that even NaN-producing values are inert.

    Examples
    --------
    >>> from scvi.distributions import Poisson
    >>> d = Poisson(torch.ones(1, 2))
    >>> mean, rows = masked_nll(d, torch.tensor([[0.0, 5.0]]), torch.tensor([[True, False]]))
    >>> round(float(mean), 4)  # -log Poisson(0 | 1) = 1
    1.0
    """
    safe_target = torch.where(mask, target, torch.zeros_like(target))
    nll = -distribution.log_prob(safe_target) * mask
    per_row = nll.sum(-1)
    return nll.sum() / mask.sum().clamp(min=1), per_row


class Decoder(nn.Module):
    """Latent -> distribution over genes.

    Counts: mean ``library * softmax(logits)`` over the present genes, per-gene inverse dispersion (``nb``/``zinb``),
    zero-inflation logits (``zinb``). Gaussian: identity-output mean (no sigmoid, so log-expression is not capped) and a
    per-gene scale.
    """

    def __init__(self, n_latent: int, n_genes: int, n_hidden: int = 128, likelihood: str = "nb"):
        super().__init__()
        self.likelihood = check_likelihood(likelihood)
        self.hidden = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.LayerNorm(n_hidden), nn.ELU())
        self.mean = nn.Linear(n_hidden, n_genes)
        self.dropout_logits = nn.Linear(n_hidden, n_genes) if likelihood == "zinb" else None
        self.log_dispersion = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor, library: torch.Tensor, present: torch.Tensor):
        """Return the predicted distribution for latent ``z`` (``library``: ``(n, 1)`` observed totals)."""
        h = self.hidden(z)
        out = self.mean(h)
        if self.likelihood == "gaussian":
            return likelihood_distribution(
                "gaussian", out, sigma=torch.exp(self.log_dispersion).clamp(min=1e-4).expand_as(out)
            )
        logits = out.masked_fill(~present, float("-inf"))
        scale = torch.softmax(logits, dim=-1)
        mu = library * scale + 1e-8
        theta = None if self.likelihood == "poisson" else torch.exp(self.log_dispersion)
        if self.likelihood == "zinb":
            theta = theta.expand_as(mu)  # nb keeps one value per gene (GeneDispersionNB)
        zi_logits = self.dropout_logits(h) if self.likelihood == "zinb" else None
        return likelihood_distribution(self.likelihood, mu, theta=theta, zi_logits=zi_logits, scale=scale)


class MaskedReconstruction(nn.Module):
    """Mask part of the input of the subgraph and reconstruct the masked values of the seeds.

    Parameters
    ----------
    n_latent, n_genes
        Latent and gene dimensions.
    likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` or ``"gaussian"``.
    strategy
        ``"cells"`` (all genes of a fraction of the cells, SpatialSSL), ``"entries"`` (random entries),
        ``"programmes"`` (whole gene programmes), ``"celltype"`` (every cell of one cell type).
    fraction
        Masking rate (defaults: cells 0.2, entries 0.5, programmes 0.5 of the programmes).
    programmes
        For ``"programmes"``: list of gene-index lists.
    n_hidden
        Decoder width.

    Examples
    --------
    >>> obj = MaskedReconstruction(8, 20, likelihood="poisson", strategy="entries")
    >>> obj.fraction
    0.5
    """

    uses_clean_latent = False

    def __init__(
        self,
        n_latent: int,
        n_genes: int,
        likelihood: str = "nb",
        strategy: str = "cells",
        fraction: float | None = None,
        programmes: list[list[int]] | None = None,
        n_hidden: int = 128,
    ):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown mask={strategy!r}; choose one of {', '.join(map(repr, STRATEGIES))}.")
        self.strategy = strategy
        self.fraction = float(DEFAULT_FRACTION[strategy] if fraction is None else fraction)
        if not 0 < self.fraction <= 1:
            raise ValueError(f"mask fraction must lie in (0, 1], got {self.fraction}.")
        self.decoder = Decoder(n_latent, n_genes, n_hidden, likelihood)
        membership = torch.zeros(len(programmes or []), n_genes, dtype=torch.bool)
        for p, genes in enumerate(programmes or []):
            membership[p, list(genes)] = True
        if strategy == "programmes" and membership.shape[0] == 0:
            raise ValueError("mask='programmes' needs gene programmes: pass programmes={'name': [genes, ...], ...}.")
        self.register_buffer("membership", membership, persistent=False)

    def sample_mask(self, batch: dict, n_seeds: int) -> torch.Tensor:
        """Draw the boolean mask ``(n_nodes, n_genes)`` of one minibatch."""
        n_nodes, n_genes = batch["x"].shape
        device = batch["x"].device
        if self.strategy == "cells":
            return mask_cells(n_nodes, n_genes, n_seeds, self.fraction, device)
        if self.strategy == "entries":
            return mask_entries(n_nodes, n_genes, self.fraction, device)
        if self.strategy == "programmes":
            return mask_programmes(n_nodes, self.membership, self.fraction)
        if KEYS.TARGET_PREFIX + "celltype" not in batch:
            raise KeyError("mask='celltype' needs per-cell types: pass celltype_key= when pretraining.")
        return mask_celltype(batch[KEYS.TARGET_PREFIX + "celltype"], n_seeds, n_genes)

    def reconstruction(self, module, inputs: dict, target: torch.Tensor, mask: torch.Tensor) -> ObjectiveOutput:
        """Encode ``inputs`` with ``mask`` applied, decode the seeds and score ``target`` on masked entries only."""
        n_seeds = int(inputs[KEYS.N_SEEDS_KEY])
        z = module.encode(
            inputs[KEYS.X_T_KEY],
            inputs[KEYS.EDGE_INDEX_KEY],
            inputs.get(KEYS.DEGREE_KEY),
            mask=mask,
            hops=inputs.get(KEYS.HOPS_KEY),
        )
        present = module.gene_present
        z, library, target = (
            seed_slice(z, n_seeds),
            seed_slice(inputs[KEYS.LIBRARY_KEY], n_seeds),
            seed_slice(target, n_seeds),
        )
        scored = seed_slice(mask, n_seeds) & present
        rows = scored.any(-1)
        if bool(rows.all()):
            loss, per_seed = masked_nll(self.decoder(z, library, present), target, scored)
        else:  # decode only the seeds with a scored entry (masking whole cells: a fifth of them); same loss
            picked = rows.nonzero().squeeze(1)
            dist = self.decoder(z[picked], library[picked], present)
            loss, per_picked = masked_nll(dist, target[picked], scored[picked])
            per_seed = per_picked.new_zeros(n_seeds).index_copy(0, picked, per_picked)
        return ObjectiveOutput(loss, per_seed, {"masked_fraction": scored.float().mean().detach()})

    def forward(self, module, batch: dict, inference_outputs: dict) -> ObjectiveOutput:
        """Mask, reconstruct and score one minibatch."""
        mask = self.sample_mask(batch, int(batch[KEYS.N_SEEDS_KEY]))
        return self.reconstruction(module, inference_outputs, batch["x"], mask)
