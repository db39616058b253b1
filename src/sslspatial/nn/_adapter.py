"""Query-specific input adapter for reference mapping (scArches-style: only the query's own parameters train)."""

from __future__ import annotations

import torch
from torch import nn


class InputAdapter(nn.Module):
    """Per-gene affine map of the encoder input, ``x * (1 + scale) + shift``, initialised to the identity.

    It sits in front of a frozen reference encoder: on genes the query measures it absorbs per-gene shifts of the
    log-expression between platforms or sections (a column scaling and bias of the encoder's first layer); on reference
    genes the query lacks (fed the mask token) it learns the value the encoder sees instead.

    Parameters
    ----------
    n_input
        Number of genes (the reference panel).

    Examples
    --------
    >>> adapter = InputAdapter(3)
    >>> adapter(torch.ones(2, 3)).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    >>> float(adapter.penalty())
    0.0
    """

    def __init__(self, n_input: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(n_input))
        self.shift = nn.Parameter(torch.zeros(n_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-gene affine map."""
        return x * (1.0 + self.scale) + self.shift

    def penalty(self) -> torch.Tensor:
        """Mean squared distance from the identity (keeps the adapted input close to the reference's)."""
        return (self.scale.square() + self.shift.square()).mean()
