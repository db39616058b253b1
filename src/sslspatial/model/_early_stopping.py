"""Early stopping on a relative improvement (used by :class:`~sslspatial.model.SUPERRES`)."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping

__all__ = ["RelativeEarlyStopping"]


class RelativeEarlyStopping(EarlyStopping):
    """Early stopping on a minimised metric that must improve by a fraction of its best value, not a fixed amount.

    The sub-spot-sum loss sums over genes, so its scale grows with the panel; ``rel_delta=1e-3`` asks every new best
    to be 0.1 % below the previous one, whatever the number of genes.

    Parameters
    ----------
    monitor
        Logged metric (e.g. ``"subspot_sum_nll_validation"``).
    rel_delta
        Required relative improvement.
    patience
        Validation epochs without such an improvement before training stops.

    Examples
    --------
    >>> stop = RelativeEarlyStopping("subspot_sum_nll_validation", rel_delta=0.01, patience=1)
    >>> [stop._evaluate_stopping_criteria(torch.tensor(v))[0] for v in (100.0, 90.0, 89.5)]
    [False, False, True]
    """

    def __init__(self, monitor: str, rel_delta: float = 1e-3, patience: int = 2):
        super().__init__(monitor=monitor, mode="min", patience=patience, min_delta=0.0)
        if rel_delta < 0:
            raise ValueError(f"rel_delta must be >= 0, got {rel_delta}.")
        self.rel_delta = float(rel_delta)

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        best = float(self.best_score)
        self.min_delta = -self.rel_delta * abs(best) if np.isfinite(best) else 0.0  # negative: mode "min"
        return super()._evaluate_stopping_criteria(current)
