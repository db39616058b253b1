"""Supervised cell-type classification head (fine-tuning, or training from scratch), class-weighted."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._constants import REGISTRY_KEYS as KEYS
from ._base import ObjectiveOutput, seed_slice


def balanced_class_weights(codes: np.ndarray, n_classes: int) -> list[float]:
    """``n / (C * count_c)`` for every class present among ``codes >= 0`` (1.0 for absent classes).

    Examples
    --------
    >>> balanced_class_weights(np.array([0, 0, 0, 1, -1]), 2)
    [0.6666666666666666, 2.0]
    """
    codes = np.asarray(codes)
    codes = codes[codes >= 0]
    counts = np.bincount(codes, minlength=n_classes).astype(float)
    weights = np.where(counts > 0, codes.size / (n_classes * np.maximum(counts, 1)), 1.0)
    return weights.tolist()


class Classification(nn.Module):
    """Linear head on the seed embeddings; weighted cross-entropy on raw logits; label ``-1`` = not scored.

    Examples
    --------
    >>> Classification(8, 3).head.out_features
    3
    """

    uses_clean_latent = True

    def __init__(self, n_latent: int, n_classes: int, class_weights: list[float] | None = None, dropout: float = 0.1):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"Classification needs at least 2 classes, got {n_classes}.")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_latent, n_classes)
        weights = (
            torch.ones(n_classes) if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Class logits of embeddings ``z``."""
        return self.head(self.dropout(z))

    def forward(self, module, batch: dict, inference_outputs: dict) -> ObjectiveOutput:
        """Weighted CE over the labelled seeds (mean weighted by class weight, like ``F.cross_entropy``)."""
        n_seeds = int(inference_outputs[KEYS.N_SEEDS_KEY])
        if KEYS.TARGET_PREFIX + "labels" not in batch:
            raise KeyError("objective='classify' needs targets={'labels': codes} when training.")
        labels = seed_slice(batch[KEYS.TARGET_PREFIX + "labels"], n_seeds).long()
        logits = self.logits(inference_outputs["z"])
        labelled = labels >= 0
        safe = labels.clamp(min=0)
        per_seed = F.cross_entropy(logits, safe, weight=self.class_weights, reduction="none") * labelled
        denom = (self.class_weights[safe] * labelled).sum().clamp(min=1e-12)
        accuracy = ((logits.argmax(-1) == labels) & labelled).sum() / labelled.sum().clamp(min=1)
        return ObjectiveOutput(per_seed.sum() / denom, per_seed.detach(), {"accuracy": accuracy.detach().float()})
