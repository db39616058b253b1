"""What every objective returns, and the interface it relies on."""

from __future__ import annotations

from typing import NamedTuple

import torch


class ObjectiveOutput(NamedTuple):
    """Result of an objective on one minibatch.

    Attributes
    ----------
    loss
        Scalar loss to minimise.
    per_seed
        ``(n_seeds,)`` per-seed loss (scvi-tools' per-observation reconstruction loss; only seeds are scored).
    extras
        0-d tensors logged as extra metrics.
    """

    loss: torch.Tensor
    per_seed: torch.Tensor
    extras: dict[str, torch.Tensor]


def seed_slice(tensor: torch.Tensor, n_seeds: int | torch.Tensor) -> torch.Tensor:
    """The rows of the seeds (the first ``n_seeds`` rows of a subgraph tensor)."""
    return tensor[: int(n_seeds)]
