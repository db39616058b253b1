"""Self-supervised pretraining of the hist2expr patch encoder on H&E tiles, without expression (Barlow Twins).

Two views of every tile are drawn with histology augmentations (:func:`histology_views`): a random crop of 60 % to
125 % of the patch side (the tiles are cut with a margin, ``context`` times the patch side), one of the 8 rotations by
90 degrees / flips, a stain jitter in optical-density space (per channel scale and shift), brightness / contrast /
saturation jitter and, for half of the tiles, a Gaussian blur. The encoder is the same
:class:`~sslspatial.nn._hist2st.ConvMixerEncoder` as :class:`~sslspatial.module.Hist2ExprModule`'s, so its weights
initialise (or replace, frozen) the patch encoder of ``ss.tl.hist2expr``; a projector (two layers, batch norm) maps
its output to the space where the Barlow Twins loss (:func:`~sslspatial.objectives._contrastive.barlow_twins_loss`)
decorrelates the two views' embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn._hist2st import ConvMixerEncoder
from ..objectives._contrastive import barlow_twins_loss

#: the tile margin: tiles are cut ``CONTEXT`` times the patch side, so that crops can move and zoom out
CONTEXT = 1.25


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator)).to(device)


def centre_crop(tiles: torch.Tensor, patch_px: int, context: float = CONTEXT) -> torch.Tensor:
    """The central patch (``1 / context`` of the tile side), resampled to ``patch_px``: what hist2expr sees.

    Examples
    --------
    >>> centre_crop(torch.rand(2, 3, 40, 40), 32).shape
    torch.Size([2, 3, 32, 32])
    """
    side = tiles.shape[-1]
    core = int(round(side / context))
    start = (side - core) // 2
    core_px = tiles[..., start : start + core, start : start + core]
    if core == patch_px:
        return core_px.contiguous()
    return F.interpolate(core_px, size=(patch_px, patch_px), mode="bilinear", antialias=True, align_corners=False)


def histology_views(
    tiles: torch.Tensor,
    patch_px: int,
    *,
    context: float = CONTEXT,
    min_scale: float = 0.6,
    stain: float = 0.1,
    jitter: float = 0.1,
    blur_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random augmented view of every tile: crop / zoom, dihedral transform, stain and colour jitter, blur.

    Parameters
    ----------
    tiles
        ``(n, 3, t, t)`` tiles in ``[0, 1]``, cut ``context`` times the patch side.
    patch_px
        Side of the returned views.
    context
        Tile side / patch side.
    min_scale
        Smallest crop, as a fraction of the patch side (the largest is the whole tile).
    stain
        Scale of the per-channel optical-density jitter (stain amount) and brightness / contrast / saturation jitter.
    jitter
        Brightness and contrast jitter.
    blur_p
        Probability of a Gaussian blur (sigma 0.1 to 1 px).
    generator
        Random generator (CPU).

    Returns
    -------
    ``(n, 3, patch_px, patch_px)`` views in ``[0, 1]``.

    Examples
    --------
    >>> views = histology_views(torch.rand(4, 3, 40, 40), 32, generator=torch.Generator().manual_seed(0))
    >>> views.shape, bool((views >= 0).all() and (views <= 1).all())
    (torch.Size([4, 3, 32, 32]), True)
    """
    n, device = tiles.shape[0], tiles.device
    # crop / zoom and one of 8 dihedral transforms, in one resampling (affine grid over the tile in [-1, 1])
    scale = _uniform(n, min_scale / context, 1.0, generator, device)
    shift = (2 * torch.rand(n, 2, generator=generator).to(device) - 1) * (1 - scale)[:, None]
    k = torch.randint(0, 4, (n,), generator=generator).to(device)
    flip = torch.where(torch.rand(n, generator=generator).to(device) < 0.5, -1.0, 1.0)
    angle = k.float() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip * scale, -sin * scale
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip * scale, cos * scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, (n, 3, patch_px, patch_px), align_corners=False)
    x = F.grid_sample(tiles, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # stain jitter: scale and shift each channel's optical density
    od = -torch.log(x.clamp_min(1e-3))
    a = 1 + stain * (2 * torch.rand(n, 3, 1, 1, generator=generator).to(device) - 1)
    b = stain / 2 * (2 * torch.rand(n, 3, 1, 1, generator=generator).to(device) - 1)
    x = torch.exp(-(od * a + b).clamp_min(0))
    # brightness, contrast, saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator).to(device) - 1)
    bright = jitter / 2 * (2 * torch.rand(n, 1, 1, 1, generator=generator).to(device) - 1)
    x = (x - mean) * contrast + mean + bright
    grey = x.mean(dim=1, keepdim=True)
    saturation = 1 + 2 * stain * (2 * torch.rand(n, 1, 1, 1, generator=generator).to(device) - 1)
    x = grey + (x - grey) * saturation
    # Gaussian blur (3 x 3) on a random half
    if blur_p > 0:
        sigma = _uniform(n, 0.1, 1.0, generator, device)
        sigma = torch.where(torch.rand(n, generator=generator).to(device) < blur_p, sigma, torch.full_like(sigma, 1e-3))
        taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], device=device)[None] / (2 * sigma[:, None] ** 2))
        taps = taps / taps.sum(1, keepdim=True)
        kernel = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(3, 0)[:, None]  # (3n, 1, 3, 3)
        x = F.conv2d(
            F.pad(x.reshape(1, 3 * n, patch_px, patch_px), (1, 1, 1, 1), mode="replicate"), kernel, groups=3 * n
        )
        x = x.reshape(n, 3, patch_px, patch_px)
    return x.clamp(0, 1)


class ImageSSLModule(nn.Module):
    """Patch encoder (hist2expr's ConvMixer) + projector, trained with Barlow Twins on two views of each tile.

    Parameters
    ----------
    patch_px, embed_kernel, channels, depth, mixer_kernel, down_channels
        :class:`~sslspatial.nn._hist2st.ConvMixerEncoder` settings (the defaults are hist2expr's, so the encoder's
        weights fit :class:`~sslspatial.module.Hist2ExprModule`'s ``encoder``).
    projector_dim
        Width of the projector's two layers.
    lambd
        Weight of the off-diagonal (redundancy) term of the Barlow Twins loss.
    context
        Tile side / patch side (the margin random crops move and zoom in).
    stain
        Strength of the stain and colour jitter of the views (see :func:`histology_views`).

    Examples
    --------
    >>> module = ImageSSLModule(patch_px=16, channels=8, depth=1, down_channels=2, projector_dim=32)
    >>> module.encoder.out_dim, float(module.loss(torch.rand(8, 3, 20, 20))) > 0
    (32, True)
    """

    def __init__(
        self,
        patch_px: int = 32,
        embed_kernel: int = 4,
        channels: int = 32,
        depth: int = 2,
        mixer_kernel: int = 5,
        down_channels: int = 4,
        projector_dim: int = 512,
        lambd: float = 0.0051,
        context: float = CONTEXT,
        stain: float = 0.1,
    ):
        super().__init__()
        self.patch_px, self.lambd, self.context = int(patch_px), float(lambd), float(context)
        self.stain = float(stain)
        self.encoder = ConvMixerEncoder(patch_px, embed_kernel, channels, depth, mixer_kernel, down_channels, 0.0)
        self.projector = nn.Sequential(
            nn.Linear(self.encoder.out_dim, projector_dim),
            nn.BatchNorm1d(projector_dim),
            nn.ReLU(),
            nn.Linear(projector_dim, projector_dim),
        )

    def loss(self, tiles: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Barlow Twins loss of two augmented views of ``(n, 3, t, t)`` tiles in ``[0, 1]``."""
        v1 = histology_views(tiles, self.patch_px, context=self.context, stain=self.stain, generator=generator)
        v2 = histology_views(tiles, self.patch_px, context=self.context, stain=self.stain, generator=generator)
        return barlow_twins_loss(self.projector(self.encoder(v1)), self.projector(self.encoder(v2)), self.lambd)
