"""Run by sphinx-gallery before each example of the gallery (``reset_modules`` in ``docs/conf.py``)."""

from __future__ import annotations


def one_torch_thread(gallery_conf: dict, fname: str) -> None:
    """One torch thread: faster than several when the build shares its CPU cores with other work."""
    import torch

    torch.set_num_threads(1)
