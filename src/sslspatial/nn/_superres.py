"""Building blocks of the super-resolution model (soScope-style).

A graph-transformer spot encoder and a ResNet-MLP sub-spot decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ResidualBlock", "SpotGraphEncoder", "SubspotDecoder"]


class SpotGraphEncoder(nn.Module):
    """A gene-reduction layer, then graph-transformer layers over the spot graph, giving a Gaussian posterior per spot.

    ``Linear(n_input -> n_reduce) -> TransformerConv(n_reduce -> n_hidden) -> ReLU -> ... -> TransformerConv(n_hidden
    -> 2 * n_latent)``; the first half of the output is the posterior mean, the second goes through ``softplus(.) +
    var_eps`` to give the standard deviation (soScope's ``GraphEncoder``). The reduction is linear, a low-rank
    factorisation of the first layer's query / key / value / root projections: with hundreds of genes those
    projections of every node of the subgraph dominate a training step, and the reduction cuts them to ``n_reduce``
    columns. Each ``TransformerConv`` keeps its root weight, so with an empty ``edge_index`` the encoder is a plain MLP
    on the spot's own profile (the no-graph ablation).

    Parameters
    ----------
    n_input
        Input features per spot.
    n_hidden
        Hidden width.
    n_latent
        Latent dimension.
    n_layers
        Number of TransformerConv layers (3 in soScope).
    heads
        Attention heads (outputs of the heads are averaged, so widths do not depend on it).
    dropout
        Dropout on the attention coefficients.
    var_eps
        Floor added to the standard deviation.
    n_reduce
        Width of the gene-reduction layer; ``None`` (or ``n_reduce >= n_input``) feeds the profiles to the first
        graph layer directly.

    Examples
    --------
    >>> enc = SpotGraphEncoder(5, n_hidden=8, n_latent=2)
    >>> x = torch.randn(3, 5)
    >>> mu, sd = enc(x, torch.tensor([[0, 1], [1, 2]]))
    >>> tuple(mu.shape), bool((sd > 0).all())
    ((3, 2), True)
    """

    def __init__(
        self,
        n_input: int,
        n_hidden: int = 128,
        n_latent: int = 128,
        n_layers: int = 3,
        heads: int = 1,
        dropout: float = 0.0,
        var_eps: float = 1e-4,
        n_reduce: int | None = None,
    ):
        super().__init__()
        from torch_geometric.nn import TransformerConv

        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
        if n_reduce is not None and n_reduce < 1:
            raise ValueError(f"n_reduce must be >= 1 (or None for no reduction), got {n_reduce}.")
        reduce = n_reduce is not None and n_reduce < n_input
        self.reduce = nn.Linear(n_input, n_reduce) if reduce else nn.Identity()
        widths = [n_reduce if reduce else n_input] + [n_hidden] * (n_layers - 1) + [2 * n_latent]
        self.convs = nn.ModuleList(
            TransformerConv(w_in, w_out, heads=heads, concat=False, dropout=dropout)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.n_latent = n_latent
        self.var_eps = var_eps

    @property
    def n_hops(self) -> int:
        """Number of message-passing hops (the k of the k-hop subgraph a seed needs)."""
        return len(self.convs)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, n_targets: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the posterior mean and standard deviation, each ``(n_nodes, n_latent)``.

        ``n_targets``: only the first ``n_targets`` nodes (the seeds of a minibatch, which come first) are needed, so
        the last layer computes its output for them alone (only the edges into them are used) and both outputs have
        ``n_targets`` rows.
        """
        h = self.reduce(x)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if i == last and n_targets is not None and n_targets < h.shape[0]:
                h = conv((h, h[:n_targets]), edge_index[:, edge_index[1] < n_targets])
            else:
                h = conv(h, edge_index)
            if i < last:
                h = F.relu(h)
        mu, raw = h[:, : self.n_latent], h[:, self.n_latent :]
        return mu, F.softplus(raw) + self.var_eps


class ResidualBlock(nn.Module):
    """``x + ReLU(Linear(ReLU(Linear(x))))`` (soScope's residual block)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return x + F.relu(self.fc2(F.relu(self.fc1(x))))


class SubspotDecoder(nn.Module):
    """ResNet-MLP mapping a sub-spot's inputs to its output parameters.

    Input per sub-spot: its feature vector (image features and/or graph-context features, may be empty)
    concatenated with a learned embedding of its position ``k`` in the spot layout. ``Linear -> ReLU -> n_blocks x
    ResidualBlock -> Linear(n_output)``.

    Parameters
    ----------
    n_features
        Feature width per sub-spot (0 allowed).
    n_subspots
        K, the number of sub-spots per spot (size of the position embedding table).
    n_output
        Output width.
    n_hidden
        Hidden width.
    n_blocks
        Number of residual blocks (2 in soScope).
    n_position
        Width of the position embedding.
    use_position
        Whether to use the position embedding. Off by default: when only the sum of a spot's sub-spots is observed,
        a per-position offset is not identifiable and adds arbitrary within-spot variation.

    Examples
    --------
    >>> dec = SubspotDecoder(n_features=3, n_subspots=4, n_output=6, n_hidden=8, use_position=True)
    >>> tuple(dec(torch.randn(2, 4, 3)).shape)
    (2, 4, 6)
    """

    def __init__(
        self,
        n_features: int,
        n_subspots: int,
        n_output: int,
        n_hidden: int = 128,
        n_blocks: int = 2,
        n_position: int = 16,
        use_position: bool = False,
    ):
        super().__init__()
        n_position = n_position if use_position else 0
        self.position = nn.Embedding(n_subspots, n_position)
        self.inp = nn.Linear(n_features + n_position, n_hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(n_hidden) for _ in range(n_blocks)])
        self.out = nn.Linear(n_hidden, n_output)
        self.n_subspots = n_subspots

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, K, n_features)`` sub-spot features to ``(B, K, n_output)``."""
        b, k = features.shape[:2]
        pos = self.position.weight[None].expand(b, k, -1)
        h = F.relu(self.inp(torch.cat([features, pos], dim=-1)))
        return self.out(self.blocks(h))
