"""The image encoder and the training of ``ss.tl.hist2expr``, below the SpatialData boundary.

What :func:`sslspatial.tl.hist2expr` needs beside the reader, the writer and the feature backbone
(:func:`sslspatial.pp._backbones.load_backbone_for`): the pretrained image encoder, checked against the run, and the setup and training of :class:`~sslspatial.model.Hist2Expr` on the
sections that :func:`sslspatial.io._hist2expr.read_sections` prepared.

Nothing here sees a SpatialData: the run's arguments arrive as the reader's ``Options`` (read by attribute), the
training rows as its ``Plan`` and the patches as its ``Sections``.
"""

from __future__ import annotations

import warnings
from typing import Any

from .._logging import info
from .._provenance import seed_everything
from .._validate import trainer_options
from ..data._patch_loader import PatchSource
from ._hist2expr import Hist2Expr

__all__ = ["checked_image_encoder", "torch_device", "train_on_sections"]


def torch_device(accelerator: str) -> str:
    """The torch device the backbone features are computed on, from the trainer's ``accelerator``."""
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "mps" if accelerator == "mps" else "cpu"


def checked_image_encoder(opts: Any):
    """The run's pretrained encoder (loaded from its folder when a path), checked against its patch settings.

    ``opts`` is the reader's ``Options``; None when it names no encoder.
    """
    from ._image_encoder import ImageEncoder

    enc = opts.image_encoder
    if enc is None:
        return None
    if not isinstance(enc, ImageEncoder):
        enc = ImageEncoder.load(enc)
    if enc.patch_px != opts.patch_px:
        raise ValueError(
            f"The image encoder takes {enc.patch_px} px patches, but patch_px={opts.patch_px}: pass "
            f"patch_px={enc.patch_px}."
        )
    fixed = set(enc.encoder_kwargs) & set(opts.model_kwargs or {})
    if any((opts.model_kwargs or {})[k] != enc.encoder_kwargs[k] for k in fixed):
        raise ValueError(
            f"model_kwargs {sorted(fixed)} change the encoder's architecture; the pretrained one has "
            f"{enc.encoder_kwargs}: leave them out."
        )
    if not opts.encoder_lr_scale >= 0:
        raise ValueError(f"encoder_lr_scale={opts.encoder_lr_scale} must be >= 0 (0 freezes the encoder).")
    tile, unit = enc.settings.get("tile_size"), enc.settings.get("size_unit")
    if tile and opts.spot_size and unit == opts.size_unit and not 0.8 <= opts.spot_size / tile <= 1.25:
        warnings.warn(
            f"The image encoder was pretrained on tiles of {tile:g} {unit}, the patches here are {opts.spot_size:g}: "
            "pretrain it with tile_size=spot_size for features at the scale it learnt.",
            stacklevel=3,
        )
    return enc


def train_on_sections(opts: Any, plan: Any, sections: Any, backbone: Any) -> Hist2Expr:
    """Set up and train :class:`~sslspatial.model.Hist2Expr` on the training sections' patches and counts.

    ``opts``, ``plan`` and ``sections`` are the reader's ``Options``, ``Plan`` and ``Sections``; ``backbone`` the
    loaded feature backbone (:class:`~sslspatial.pp.LoadedBackbone`, its description is saved in ``patch_settings``)
    or None.
    """
    view = plan.table[:, plan.genes]
    adata = view.copy()
    if opts.layer is not None:
        adata.X = adata.layers[opts.layer]
    adata.obs["_hist2expr_total"] = plan.library
    Hist2Expr.setup_anndata(adata, library_key="_hist2expr_total")
    first = sections.measured[plan.train_regions[0]].features
    settings = {"colour_normalize": opts.colour_normalize, "features": opts.features,
                "feature_weights": opts.feature_weights, "size_unit": opts.size_unit, "spot_size": sections.train_size,
                "pitch": sections.pitch}  # fmt: skip
    if backbone is not None:
        settings |= {"feature_kwargs": dict(opts.feature_kwargs or {}), "feature_backbone": backbone.info}
    encoder, module_kwargs = opts.image_encoder, dict(opts.model_kwargs or {})
    if encoder is not None:
        settings["image_encoder"] = {**encoder.info, "lr_scale": opts.encoder_lr_scale}
        module_kwargs |= {**encoder.encoder_kwargs, "freeze_encoder": opts.encoder_lr_scale == 0}
    seed_everything(opts.seed)
    model = Hist2Expr(
        adata, patch_px=opts.patch_px, likelihood=opts.likelihood, n_features=0 if first is None else first.shape[1], use_patches=opts.use_patches, patch_settings=settings,
        **module_kwargs,
    )  # fmt: skip
    if encoder is not None:
        model.module.encoder.load_state_dict(encoder.module.encoder.state_dict())
    model.set_patch_source(PatchSource([sections.measured[n] for n in plan.train_regions], opts.patch_px))
    info(f"hist2expr: training on {plan.train_regions} (validation {plan.validation}), {len(plan.genes)} genes")
    model.train(
        max_epochs=opts.max_epochs, lr=opts.lr, validation_sections=plan.validation, window_size=opts.window_size,
        early_stopping=bool(plan.validation), encoder_lr_scale=opts.encoder_lr_scale if encoder is not None else 1.0,
        **trainer_options("hist2expr", opts.accelerator, opts.devices, opts.train_kwargs),
    )  # fmt: skip
    return model
