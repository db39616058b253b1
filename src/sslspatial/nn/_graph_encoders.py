"""Graph (and MLP) encoders over k-hop subgraphs: GAT, GCN, GraphSAGE, graph Transformer, MLP.

Every encoder maps node features ``(n_nodes, n_input)`` and a subgraph ``edge_index`` (messages flow from row 0 into
row 1, PyG's ``source_to_target``) to node embeddings ``(n_nodes, n_latent)``. ``n_layers`` message-passing layers
need the closed ``n_layers``-hop neighbourhood of the seeds (:attr:`GraphEncoder.n_hops`); on that subgraph the seeds
get exactly the embeddings they would get on the full graph. GCN's symmetric normalisation uses the *full-graph*
degree of every node (passed as ``degree``), because boundary nodes of a subgraph lose neighbours; the other layers
only normalise over the incoming edges of a node, which are complete for every node that reaches a seed.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

#: The encoders and normalisations: one ``Literal`` each, the tuples of the runtime checks derived from them.
Encoder = Literal["gat", "gcn", "sage", "transformer", "mlp"]
Norm = Literal["layer", "batch", "none"]
ENCODERS = get_args(Encoder)
NORMS = get_args(Norm)


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` whose CPU mask comes from random 16-bit integers (about 3x faster than ``bernoulli_``).

    PyTorch's CPU dropout draws one Mersenne-Twister number per entry; here 64-bit draws are split into four 16-bit
    ones, so ``p`` is rounded to a multiple of 1/65,536. Kept entries are scaled by ``1 / (1 - p)`` as usual. Other
    devices, evaluation mode and ``p = 0`` behave exactly as :class:`torch.nn.Dropout`.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> out = Dropout(0.25)(torch.ones(1000, 100))
    >>> round(float((out == 0).float().mean()), 2), sorted({round(v, 4) for v in out.unique().tolist()})
    (0.25, [0.0, 1.3333])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each entry with probability ``p`` while training (CPU: 16-bit random integers)."""
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace or not x.is_floating_point():
            return super().forward(x)
        if self.p >= 1:
            return x * 0.0
        n = x.numel()
        bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
        keep = bits.view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep * (1.0 / (1.0 - self.p))


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return nn.Identity()


def _conv(kind: str, width: int, heads: int) -> nn.Module:
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv, TransformerConv

    if kind == "gat":
        return GATConv(width, width // heads, heads=heads, concat=True)
    if kind == "gcn":
        # normalisation done by the encoder with full-graph degrees (see module docstring)
        return GCNConv(width, width, normalize=False, add_self_loops=False)
    if kind == "sage":
        return SAGEConv(width, width, aggr="mean")
    if kind == "transformer":
        return TransformerConv(width, width // heads, heads=heads, concat=True)
    return nn.Linear(width, width)


class GraphEncoder(nn.Module):
    """Input projection, ``n_layers`` residual message-passing (or dense) blocks and a linear latent head.

    Parameters
    ----------
    n_input
        Number of input features (genes).
    n_latent
        Dimension of the embedding.
    n_hidden
        Width of the hidden layers (must be divisible by ``heads`` for ``gat`` / ``transformer``).
    n_layers
        Number of message-passing layers (dense layers for ``mlp``); a graph encoder needs the ``n_layers``-hop
        neighbourhood of its seeds.
    kind
        One of ``"gat"``, ``"gcn"``, ``"sage"``, ``"transformer"``, ``"mlp"``.
    dropout
        Dropout rate after every block.
    norm
        ``"layer"`` (default; per node, so a subset's embedding equals the full run), ``"batch"`` or ``"none"``.
    heads
        Attention heads of ``gat`` / ``transformer``.

    Examples
    --------
    >>> import torch
    >>> enc = GraphEncoder(10, n_latent=4, n_hidden=8, n_layers=2, kind="gat", heads=2)
    >>> edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])
    >>> enc(torch.randn(3, 10), edge_index).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 32,
        n_hidden: int = 128,
        n_layers: int = 2,
        kind: str = "gat",
        dropout: float = 0.1,
        norm: str = "layer",
        heads: int = 4,
    ):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"Unknown encoder={kind!r}; choose one of {', '.join(map(repr, ENCODERS))}.")
        if norm not in NORMS:
            raise ValueError(f"Unknown norm={norm!r}; choose one of {', '.join(map(repr, NORMS))}.")
        if kind in ("gat", "transformer") and n_hidden % heads:
            raise ValueError(f"n_hidden={n_hidden} must be divisible by heads={heads} for encoder={kind!r}.")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
        self.kind = kind
        self.n_layers = n_layers
        self.input = nn.Linear(n_input, n_hidden)
        self.input_norm = _norm(norm, n_hidden)
        self.convs = nn.ModuleList([_conv(kind, n_hidden, heads) for _ in range(n_layers)])
        self.norms = nn.ModuleList([_norm(norm, n_hidden) for _ in range(n_layers)])
        self.output = nn.Linear(n_hidden, n_latent)
        self.activation = nn.ELU()
        self.dropout = Dropout(dropout)

    @property
    def n_hops(self) -> int:
        """Number of hops of context the seeds need (0 for ``mlp``)."""
        return 0 if self.kind == "mlp" else self.n_layers

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        degree: torch.Tensor | None = None,
        hops: torch.Tensor | None = None,
        masked_rows: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed every node of the subgraph (or, given ``hops``, only the seeds).

        Parameters
        ----------
        x
            ``(n_nodes, n_input)`` node features.
        edge_index
            ``(2, n_edges)`` local edges (ignored by ``mlp``).
        degree
            ``(n_nodes,)`` full-graph in-degree of every node (``gcn`` only; defaults to the subgraph degree).
        hops
            ``(2, n_hops + 1)`` layout of a subgraph built by :class:`~sslspatial.data.SubgraphCollate`: nodes ordered
            by hop distance from the seeds, edges sorted by target; ``hops[0, k]`` nodes lie within ``k`` hops and
            ``hops[1, k]`` edges point into them. Layer ``l`` is then computed only for the nodes the later layers
            still need (the last one for the seeds alone), and the embeddings of the seeds ``(hops[0, 0], n_latent)``
            are returned. The seeds' values are the same as without ``hops``; the work of the halo nodes is skipped.
        masked_rows, mask_token
            ``(n_nodes,)`` boolean and ``(n_input,)``: the input of the ``masked_rows`` nodes is replaced by
            ``mask_token`` (whole cells masked). The same as passing ``x`` with those rows set to the token, but the
            token is projected once and no gradient flows into the ``(n_nodes, n_input)`` input.

        Returns
        -------
        ``(n_nodes, n_latent)`` embeddings (``(n_seeds, n_latent)`` with ``hops``).
        """
        h = self.input(x)
        if masked_rows is not None:
            token = self.input(mask_token.to(x.dtype)[None])
            h = torch.where(masked_rows[:, None], token, h)
        h = self.dropout(self.activation(self.input_norm(h)))
        extra = {}
        trim = hops is not None and self.kind != "mlp" and hops.shape[-1] == self.n_layers + 1
        if self.kind != "mlp":
            if edge_index is None:
                raise ValueError(f"encoder={self.kind!r} needs an edge_index (use kind='mlp' without a graph).")
            if trim:
                nodes, edges = hops.tolist()
                if self.kind == "gcn" and degree is None:
                    degree = torch.bincount(edge_index[1], minlength=h.shape[0])
            elif self.kind == "gcn":
                edge_index, extra = self._gcn_weights(edge_index, degree, h.shape[0])
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if self.kind == "mlp":
                out = conv(h)
            elif trim:  # sources within L - layer hops of the seeds, targets within L - layer - 1 hops
                n_dst = nodes[self.n_layers - layer - 1]
                h = h[: nodes[self.n_layers - layer]]
                edge_layer = edge_index[:, : edges[self.n_layers - layer - 1]]
                if self.kind == "gcn":
                    edge_layer, extra = self._gcn_weights(edge_layer, degree, n_dst)
                out = conv(h, edge_layer, **extra)[:n_dst]
                h = h[:n_dst]
            else:
                out = conv(h, edge_index, **extra)
            h = h + self.dropout(self.activation(norm(out)))
        if hops is not None and not trim:
            h = h[: int(hops[0, 0])]
        return self.output(h)

    @staticmethod
    def _gcn_weights(edge_index: torch.Tensor, degree: torch.Tensor | None, n_nodes: int):
        """Add self-loops (to the first ``n_nodes`` nodes) and weights ``1 / sqrt((d_i + 1)(d_j + 1))``.

        The degrees are the full-graph ones when given (a subgraph's boundary nodes lose neighbours).
        """
        if degree is None:
            degree = torch.bincount(edge_index[1], minlength=n_nodes)
        deg = degree.to(torch.float32) + 1.0
        loops = torch.arange(n_nodes, device=edge_index.device)
        edge_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
        inv_sqrt = deg.rsqrt()
        weight = inv_sqrt[edge_index[0]] * inv_sqrt[edge_index[1]]
        return edge_index, {"edge_weight": weight}


class MLPHead(nn.Module):
    """A small MLP (``n_in -> n_hidden -> ... -> n_out``) with batch norm and ReLU, used for projectors / predictors.

    Examples
    --------
    >>> import torch
    >>> MLPHead(4, 8, 3)(torch.randn(5, 4)).shape
    torch.Size([5, 3])
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, n_layers: int = 2, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(n_layers - 1):
            layers += [nn.Linear(width, n_hidden), nn.BatchNorm1d(n_hidden) if batch_norm else nn.Identity(), nn.ReLU()]
            width = n_hidden
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.net(x)
