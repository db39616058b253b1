"""A self-supervised H&E patch encoder (``ss.tl.pretrain_image``): train on tiles, save / load, features."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._logging import info
from ..module._image_ssl import ImageSSLModule, centre_crop

_FILE = "image_encoder.pt"


def _device(accelerator: str, devices: Any) -> torch.device:
    """One torch device from Lightning-style ``accelerator`` / ``devices`` (this trainer uses a single device)."""
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"accelerator={accelerator!r} but torch sees no CUDA device: pass accelerator='cpu'.")
    if not cuda:
        return torch.device("mps" if accelerator == "mps" else "cpu")
    if isinstance(devices, (list, tuple)):
        if len(devices) != 1:
            raise ValueError(f"pretrain_image trains on one device; got devices={devices!r}.")
        return torch.device(f"cuda:{int(devices[0])}")
    if isinstance(devices, int) and devices > 1:
        raise ValueError(f"pretrain_image trains on one device; got devices={devices}: pass devices=1.")
    return torch.device("cuda")


class ImageEncoder:
    """The hist2expr patch encoder pretrained without expression on H&E tiles (Barlow Twins; see ``ss.tl.pretrain_image``).

    Parameters
    ----------
    patch_px
        Side of the encoder's input patches.
    settings
        How the tiles were cut (``tile_size``, ``size_unit``, the images, ...): saved with the encoder, so that
        :func:`~sslspatial.tl.hist2expr` can check that its patches match.
    **module_kwargs
        :class:`~sslspatial.module._image_ssl.ImageSSLModule` arguments (``channels``, ``depth``, ...).

    Examples
    --------
    >>> enc = ImageEncoder(patch_px=16, channels=8, depth=1, down_channels=2, projector_dim=32)
    >>> enc.features(np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)).shape
    (3, 32)
    """

    def __init__(self, patch_px: int = 32, settings: dict | None = None, **module_kwargs: Any):
        self.init_kwargs = {"patch_px": int(patch_px), **module_kwargs}
        self.module = ImageSSLModule(**self.init_kwargs)
        self.module.eval()
        self.settings = dict(settings or {})
        self.history_: list[float] = []
        self.train_seconds_ = 0.0

    def __repr__(self) -> str:
        return f"ImageEncoder(patch_px={self.patch_px}, epochs={len(self.history_)}, sha256={self.sha256[:12]})"

    @property
    def patch_px(self) -> int:
        return self.module.patch_px

    @property
    def encoder_kwargs(self) -> dict:
        """The :class:`~sslspatial.module.Hist2ExprModule` arguments that give its ``encoder`` this architecture."""
        kw = {k: self.init_kwargs[k] for k in ("embed_kernel", "channels", "mixer_kernel", "down_channels")
              if k in self.init_kwargs}  # fmt: skip
        if "depth" in self.init_kwargs:
            kw["convmixer_depth"] = self.init_kwargs["depth"]
        defaults = {"embed_kernel": 4, "channels": 32, "convmixer_depth": 2, "mixer_kernel": 5, "down_channels": 4}
        return {**defaults, **kw}

    @property
    def sha256(self) -> str:
        """Checksum of the encoder's weights (recorded by a hist2expr model trained on top of it)."""
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in self.module.encoder.state_dict().items()}, buffer)
        return hashlib.sha256(buffer.getvalue()).hexdigest()

    @property
    def info(self) -> dict:
        """What a hist2expr model records about the encoder it was built on."""
        return {"sha256": self.sha256, "epochs": len(self.history_), "final_loss": self.history_[-1] if self.history_
                else None, **self.settings}  # fmt: skip

    def train(
        self,
        tiles: np.ndarray,
        *,
        max_epochs: int = 30,
        batch_size: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        accelerator: str = "auto",
        devices: Any = "auto",
        seed: int | None = 0,
        log_every: int = 5,
    ) -> list[float]:
        """Barlow Twins on ``(n, 3, t, t)`` uint8 tiles (``t = context * patch_px``); returns the loss of every epoch.

        AdamW with a cosine learning-rate decay over ``max_epochs``; batches are drawn without replacement, the last
        incomplete one dropped.
        """
        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[1] != 3:
            raise ValueError(f"tiles must be (n, 3, side, side) RGB, got shape {tiles.shape}.")
        batch_size = min(int(batch_size), len(tiles))
        if batch_size < 8:
            raise ValueError(f"{len(tiles)} tiles are too few for Barlow Twins' batch statistics: give more tissue.")
        device = _device(accelerator, devices)
        self.module.to(device).train()
        optimizer = torch.optim.AdamW(self.module.parameters(), lr=lr, weight_decay=weight_decay)
        steps = max(len(tiles) // batch_size, 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs * steps)
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        data = torch.from_numpy(tiles)
        t0 = time.perf_counter()
        for epoch in range(max_epochs):
            order = torch.randperm(len(tiles), generator=generator)
            total = 0.0
            for step in range(steps):
                batch = data[order[step * batch_size : (step + 1) * batch_size]].to(device).float() / 255
                loss = self.module.loss(batch, generator=generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach())
            self.history_.append(total / steps)
            if log_every and (epoch % log_every == 0 or epoch == max_epochs - 1):
                info(f"pretrain_image: epoch {epoch + 1}/{max_epochs}, Barlow Twins loss {self.history_[-1]:.2f}")
        self.train_seconds_ += time.perf_counter() - t0
        self.module.cpu().eval()
        return self.history_

    @torch.inference_mode()
    def features(self, patches: np.ndarray, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
        """Encoder output ``(n, out_dim)`` of ``(n, 3, patch_px, patch_px)`` float patches in ``[0, 1]``.

        Tiles with the margin (side ``context * patch_px``) are centre-cropped to the patch first.
        """
        self.module.eval().to(device)
        out = []
        for start in range(0, len(patches), batch_size):
            x = torch.as_tensor(np.asarray(patches[start : start + batch_size], np.float32), device=device)
            if x.shape[-1] != self.patch_px:
                x = centre_crop(x, self.patch_px, self.module.context)
            out.append(self.module.encoder(x).cpu().numpy())
        self.module.cpu()
        return np.concatenate(out) if out else np.zeros((0, self.module.encoder.out_dim), np.float32)

    def save(self, dir_path: str | Path, overwrite: bool = False) -> None:
        """Write ``dir_path/image_encoder.pt`` (weights, architecture, tile settings, loss history)."""
        path = Path(dir_path)
        if (path / _FILE).exists() and not overwrite:
            raise FileExistsError(f"{path / _FILE} exists already: pass overwrite=True.")
        path.mkdir(parents=True, exist_ok=True)
        state = {"init_kwargs": self.init_kwargs, "settings": self.settings, "history": self.history_,
                 "train_seconds": self.train_seconds_, "state_dict": self.module.state_dict()}  # fmt: skip
        torch.save(state, path / _FILE)

    @classmethod
    def load(cls, dir_path: str | Path) -> ImageEncoder:
        """Read an encoder written by :meth:`save`.

        Examples
        --------
        >>> enc = ImageEncoder.load("her2st_image_encoder")  # doctest: +SKIP
        """
        path = Path(dir_path)
        file = path / _FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"No saved image encoder at {file}: write one with ImageEncoder.save(dir).")
        state = torch.load(file, map_location="cpu", weights_only=False)
        out = cls(**state["init_kwargs"], settings=state["settings"])
        out.module.load_state_dict(state["state_dict"])
        out.history_, out.train_seconds_ = list(state["history"]), float(state.get("train_seconds", 0.0))
        return out
