"""Shared plumbing of the real-data readers: locating files (local folder or cached download) and reading images.

Every reader takes ``path``. With a folder, the files are read from it, laid out as the reader's docstring says. Without
one, the same files are downloaded once from their original public source with :mod:`pooch` into
``pooch.os_cache("sslspatial") / <dataset>`` and read from there. Files on GitHub are fetched from a URL pinned to a
commit, so their content cannot change under the reader; other files carry a SHA-256 checksum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._arguments import ArgumentError

CACHE_NAME = "sslspatial"


@dataclass(frozen=True)
class Remote:
    """Where a file comes from: its URL and (if the URL is not pinned to a commit) its SHA-256 checksum."""

    url: str
    sha256: str | None = None


def github_raw(repo: str, commit: str, path: str) -> str:
    """Return the raw-content URL of ``path`` in GitHub repository ``repo`` at ``commit`` (immutable content)."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def cache_dir(dataset: str) -> Path:
    """Return the folder into which ``dataset`` is downloaded when no ``path`` is given."""
    import pooch

    return Path(pooch.os_cache(CACHE_NAME)) / dataset


def check_path(path: str | Path | None, dataset: str) -> Path | None:
    """Return ``path`` as a :class:`~pathlib.Path` (or None), raising if it is given but is not a folder."""
    if path is None:
        return None
    if not isinstance(path, str | Path):
        raise TypeError(f"path must be a str, a pathlib.Path or None, got {type(path).__name__}.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"path={str(path)!r} is not a folder. Pass the folder holding the {dataset} files, or path=None to "
            "download them from the original source."
        )
    return root


def fetch(
    dataset: str,
    path: Path | None,
    required: Mapping[str, Remote | None],
    optional: Mapping[str, Remote | None] | None = None,
) -> Path:
    """Make the files of a dataset available and return the folder that holds them.

    Parameters
    ----------
    dataset
        Name of the dataset (sub-folder of the download cache, and used in messages).
    path
        Local folder (already checked by :func:`check_path`), or None to download.
    required
        Relative file paths the reader needs, each with its remote source (None when it has no public download).
    optional
        Relative file paths read only if present locally (and downloaded when a remote source is known).

    Returns
    -------
    The folder in which the relative paths resolve.
    """
    optional = dict(optional or {})
    if path is not None:
        missing = [rel for rel in required if not (path / rel).is_file()]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise FileNotFoundError(
                f"{dataset}: missing file(s) under {str(path)!r}: {shown}. Lay the folder out as the reader's "
                "docstring describes, or pass path=None to download the data from the original source."
            )
        return path
    import pooch

    root = cache_dir(dataset)
    for rel, remote in [*required.items(), *((k, v) for k, v in optional.items() if v is not None)]:
        if remote is None:
            raise ArgumentError(
                "path",
                None,
                f"a local folder holding {dataset}'s {rel}, which has no public download",
                f"data/{dataset}",
            )
        target = root / rel
        if target.is_file() and remote.sha256 is None:
            continue
        pooch.retrieve(remote.url, known_hash=remote.sha256, fname=target.name, path=target.parent, progressbar=False)
    return root


def first_existing(root: Path, candidates: Iterable[str]) -> Path | None:
    """Return the first of ``candidates`` (relative paths) that exists under ``root``, or None."""
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    return None


def read_rgb(file: Path, downscale: int = 1) -> np.ndarray:
    """Read an RGB image as a ``(3, height, width)`` uint8 array, reduced by an integer factor.

    JPEGs are decoded directly at 1/2, 1/4 or 1/8 resolution where ``downscale`` allows (Pillow's ``draft``), and the
    remaining factor is applied by box averaging (Pillow's ``reduce``). Output pixel ``j`` covers input pixels
    ``[j * downscale, (j + 1) * downscale)`` along each axis, so ``Scale(downscale)`` maps it back to full resolution.

    Parameters
    ----------
    file
        Image file (any format Pillow reads; converted to RGB).
    downscale
        Integer reduction factor (1 keeps full resolution).

    Returns
    -------
    Array of shape ``(3, ceil(height / downscale), ceil(width / downscale))`` (a transposed view of the decoded
    ``(height, width, 3)`` pixels).
    """
    from PIL import Image

    guard = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the H&E images are larger than Pillow's decompression-bomb guard
    try:
        with Image.open(file) as img:
            width = img.size[0]
            remaining = downscale
            draft = math.gcd(downscale, 8)  # JPEG decodes at 1/2, 1/4, 1/8 with the pixel grid kept aligned
            if draft > 1 and img.format == "JPEG":
                img.draft("RGB", (math.ceil(width / draft), math.ceil(img.size[1] / draft)))
                got = round(width / img.size[0])
                if downscale % got:
                    raise RuntimeError(f"JPEG decoded at 1/{got}, which does not divide downscale={downscale}.")
                remaining = downscale // got
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            if remaining > 1:
                rgb = rgb.reduce(remaining)
            array = _to_array(rgb)
            del rgb
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    return array.transpose(2, 0, 1)  # a view: no second copy of a full-resolution image


def _to_array(img: object, band: int = 512) -> np.ndarray:
    """Copy a Pillow RGB image into a ``(height, width, 3)`` uint8 array band by band (no full-size bytes copy)."""
    width, height = img.size  # type: ignore[attr-defined]
    out = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, band):
        bottom = min(top + band, height)
        out[top:bottom] = np.asarray(img.crop((0, top, width, bottom)), dtype=np.uint8)  # type: ignore[attr-defined]
    return out
