"""Hist2ST building blocks: ConvMixer patch encoder, spot Transformer with grid-position embeddings, GraphSAGE + JK.

Re-implemented from the description in Zeng et al., Briefings in Bioinformatics 2022 (see METHODS.md §3), with
deliberate changes: pixels are scaled to ``[0, 1]`` and normalised per channel; positions are relative to the
window (so they transfer across sections); the GraphSAGE layers include the node's own features (``root_weight``)
over a symmetric 4-neighbour graph; the gene head is linear (no output cap).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import JumpingKnowledge, SAGEConv

#: per-channel mean / std of H&E patches in [0, 1] (typical values) used to centre the encoder input
HE_MEAN = (0.70, 0.50, 0.68)
HE_STD = (0.15, 0.18, 0.12)


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class ConvMixerEncoder(nn.Module):
    """ConvMixer patch encoder: patch embedding, depthwise / pointwise mixer blocks, 1x1 down-projection, flatten.

    Parameters
    ----------
    patch_px
        Side of the input patches in pixels (divisible by ``embed_kernel``).
    embed_kernel
        Kernel and stride of the patch embedding.
    channels
        Mixer channels.
    depth
        Number of mixer blocks.
    mixer_kernel
        Depthwise kernel size.
    down_channels
        Channels after the 1x1 down-projection; output dim = ``down_channels * (patch_px // embed_kernel) ** 2``.
    dropout
        Dropout after the patch embedding.

    Examples
    --------
    >>> enc = ConvMixerEncoder(patch_px=28, embed_kernel=7, channels=8, depth=1, down_channels=2)
    >>> enc(torch.zeros(5, 3, 28, 28)).shape
    torch.Size([5, 32])
    """

    def __init__(
        self,
        patch_px: int = 64,
        embed_kernel: int = 8,
        channels: int = 32,
        depth: int = 2,
        mixer_kernel: int = 5,
        down_channels: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if patch_px % embed_kernel:
            raise ValueError(f"patch_px={patch_px} must be divisible by embed_kernel={embed_kernel}.")
        self.register_buffer("mean", torch.tensor(HE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(HE_STD).view(1, 3, 1, 1))
        self.embed = nn.Sequential(
            nn.Conv2d(3, channels, embed_kernel, stride=embed_kernel), nn.GELU(), nn.BatchNorm2d(channels)
        )
        self.dropout = nn.Dropout(dropout)
        blocks = []
        for _ in range(depth):
            depthwise = nn.Sequential(
                nn.Conv2d(channels, channels, mixer_kernel, groups=channels, padding="same"),
                nn.GELU(),
                nn.BatchNorm2d(channels),
            )
            blocks += [_Residual(depthwise), nn.Conv2d(channels, channels, 1), nn.GELU(), nn.BatchNorm2d(channels)]
        self.mixer = nn.Sequential(*blocks)
        self.down = nn.Conv2d(channels, down_channels, 1)
        self.out_dim = down_channels * (patch_px // embed_kernel) ** 2

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Map ``(n, 3, p, p)`` patches in ``[0, 1]`` to ``(n, out_dim)``."""
        x = (patches - self.mean) / self.std
        x = self.mixer(self.dropout(self.embed(x)))
        return self.down(x).flatten(1)


class SpotContext(nn.Module):
    """Spot tokens -> Transformer over the spots of a window -> GraphSAGE over the spot graph -> jumping knowledge.

    Parameters
    ----------
    in_dim
        Dimension of the per-spot image vectors.
    dim
        Model width.
    n_pos
        Size of the learned embeddings of (window-relative) grid positions; 0 disables them.
    transformer_depth, heads, dropout
        Transformer encoder (pre-norm, GELU FFN of width ``2 * dim``).
    gnn_depth
        Number of GraphSAGE layers (mean aggregation); 0 skips the graph.
    jk
        Jumping-knowledge mode over the GNN layer outputs: ``"lstm"`` (Hist2ST), ``"max"``, ``"cat"`` or ``"last"``.

    Examples
    --------
    >>> ctx = SpotContext(in_dim=6, dim=8, n_pos=4, transformer_depth=1, heads=2, gnn_depth=2)
    >>> ctx(torch.zeros(3, 6), torch.zeros(3, 2, dtype=torch.long), torch.tensor([[0, 1], [1, 0]])).shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 128,
        n_pos: int = 64,
        transformer_depth: int = 2,
        heads: int = 4,
        gnn_depth: int = 2,
        jk: str = "lstm",
        dropout: float = 0.1,
    ):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.n_pos = n_pos
        if n_pos:
            self.pos_x = nn.Embedding(n_pos, dim)
            self.pos_y = nn.Embedding(n_pos, dim)
        self.transformer = None
        if transformer_depth:
            layer = nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            self.transformer = nn.TransformerEncoder(layer, transformer_depth, enable_nested_tensor=False)
        self.convs = nn.ModuleList(SAGEConv(dim, dim, aggr="mean") for _ in range(gnn_depth))
        self.jk_mode = jk if gnn_depth else "last"
        if self.jk_mode == "lstm":
            self.jk = JumpingKnowledge("lstm", channels=dim, num_layers=gnn_depth)
        elif self.jk_mode in ("max", "cat"):
            self.jk = JumpingKnowledge(self.jk_mode)
        self.out_dim = dim * (gnn_depth if self.jk_mode == "cat" else 1)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, features: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``(n, in_dim)`` spot vectors, ``(n, 2)`` integer grid positions, ``(2, e)`` edges -> ``(n, out_dim)``."""
        h = self.project(features)
        if self.n_pos:
            pos = positions.clamp(0, self.n_pos - 1)
            h = h + self.pos_x(pos[:, 0]) + self.pos_y(pos[:, 1])
        if self.transformer is not None:
            h = self.transformer(h.unsqueeze(0)).squeeze(0)
        if not len(self.convs):
            return self.norm(h)
        layers = []
        for conv in self.convs:
            h = nn.functional.gelu(conv(h, edge_index))
            layers.append(h)
        h = layers[-1] if self.jk_mode == "last" else self.jk(layers)
        return self.norm(h)
