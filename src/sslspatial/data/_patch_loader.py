"""Minibatches of image patches for histology models: spatial windows of spots of one section.

A :class:`PatchSource` knows, per section, the image (numpy or lazy), the spots' pixel centres and their coordinates.
A minibatch is one *window*: up to ``window_size`` spots of one section that lie close together, with their patches
(each spot's patch is cut once, at the resolution the model uses, and cached on its section for the whole run: see
:mod:`sslspatial.data._patch_cache`), window-relative grid positions, a symmetric
4-nearest-neighbour graph, and optional counts. Sections larger than ``window_size`` spots are covered by several
windows, so attention never spans a whole large slide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from scipy.spatial import cKDTree

from .._arguments import check_int
from .._constants import REGISTRY_KEYS as KEYS
from ..pp._patches import ColourStats
from ._patch_cache import as_float, cached_patches

#: Keys of the window dictionaries (defined once in ``_constants.REGISTRY_KEYS``).
PATCHES_KEY = KEYS.PATCHES_KEY
POSITIONS_KEY = KEYS.POSITIONS_KEY
EDGE_INDEX_KEY = KEYS.EDGE_INDEX_KEY
COUNTS_KEY = KEYS.COUNTS_KEY
LIBRARY_KEY = KEYS.LIBRARY_KEY
ROWS_KEY = KEYS.ROWS_KEY
FEATURES_KEY = KEYS.FEATURES_KEY


@dataclass
class PatchSection:
    """One section: its image and spots.

    Attributes
    ----------
    name
        Section / region name.
    image
        ``(c, y, x)`` image (numpy, dask or xarray).
    centres_px
        ``(n, 2)`` spot centres in the image's pixels ``(col, row)``.
    coords
        ``(n, 2)`` spot coordinates (any unit; used for windows, grid positions and the neighbour graph).
    rows
        ``(n,)`` row of each spot in the table it came from (``-1`` for spots without measurements).
    size_px
        Patch side cut from the image, in its pixels.
    value_range
        Range of the image values mapped to ``[0, 1]``.
    colour
        Colour statistics for normalisation (None: none).
    features
        Optional ``(n, d)`` precomputed image features of the spots (e.g. ``ss.pp.image_features``).
    levels
        Coarser pyramid levels of a multiscale image, ``(array, x factor, y factor)`` to ``image``
        (:func:`~sslspatial.data._patch_cache.pyramid_levels`): patches are cut from the coarsest one at which they
        keep at least the model's ``patch_px`` pixels. Empty: cut from ``image``.
    patch_cache
        The spots' patches at the model's resolution, cut on first use (see
        :func:`~sslspatial.data._patch_cache.cached_patches`); not copied by ``dataclasses.replace``.
    cache_seconds
        Time spent cutting the cached patches.
    """

    name: str
    image: Any
    centres_px: np.ndarray
    coords: np.ndarray
    rows: np.ndarray
    size_px: int
    value_range: tuple[float, float] = (0.0, 255.0)
    colour: ColourStats | None = None
    features: np.ndarray | None = None
    levels: list[tuple[Any, float, float]] = field(default_factory=list, repr=False)
    pitch: float = field(init=False)
    patch_cache: tuple | None = field(init=False, default=None, repr=False, compare=False)
    cache_seconds: float = field(init=False, default=0.0, repr=False, compare=False)

    def __post_init__(self):
        self.centres_px = np.asarray(self.centres_px, np.float64)
        self.coords = np.asarray(self.coords, np.float64)
        self.rows = np.asarray(self.rows, np.int64)
        self.pitch = spot_pitch(self.coords)

    def __len__(self) -> int:
        return len(self.coords)


def spot_pitch(coords: np.ndarray) -> float:
    """Median distance from a spot to its nearest neighbour (1.0 for fewer than two spots)."""
    if len(coords) < 2:
        return 1.0
    d, _ = cKDTree(coords).query(coords, k=2)
    pitch = float(np.median(d[:, 1]))
    return pitch if pitch > 0 else 1.0


def grid_positions(coords: np.ndarray, pitch: float) -> np.ndarray:
    """Integer grid positions of spots relative to the window's lower-left spot (``round((c - min) / pitch)``)."""
    return np.rint((coords - coords.min(0)) / pitch).astype(np.int64)


def knn_edges(coords: np.ndarray, k: int = 4, max_distance: float | None = None) -> np.ndarray:
    """Symmetric k-nearest-neighbour edges ``(2, e)`` (no self-loops), pruned beyond ``max_distance``.

    Examples
    --------
    >>> knn_edges(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]), k=1, max_distance=2.0).tolist()
    [[0, 1], [1, 0]]
    """
    n = len(coords)
    if n < 2 or k < 1:
        return np.zeros((2, 0), np.int64)
    d, j = cKDTree(coords).query(coords, k=min(k, n - 1) + 1)
    d, j = d[:, 1:], j[:, 1:]
    i = np.repeat(np.arange(n), j.shape[1])
    keep = np.isfinite(d.ravel()) & ((d.ravel() <= max_distance) if max_distance is not None else True)
    src, dst = j.ravel()[keep], i[keep]
    pairs = np.unique(np.r_[np.c_[src, dst], np.c_[dst, src]], axis=0)
    return pairs.T.astype(np.int64)


def partition_windows(coords: np.ndarray, window_size: int) -> list[np.ndarray]:
    """Split spots into spatially compact windows of at most ``window_size`` (recursive median splits)."""
    check_int(window_size, "window_size", example=32)  # 0 would split forever
    out: list[np.ndarray] = []
    stack = [np.arange(len(coords))]
    while stack:
        idx = stack.pop()
        if len(idx) <= window_size:
            out.append(idx)
            continue
        span = coords[idx].max(0) - coords[idx].min(0)
        order = idx[np.argsort(coords[idx, int(np.argmax(span))], kind="stable")]
        half = len(order) // 2
        stack += [order[half:], order[:half]]
    return out


class PatchSource:
    """Sections with their images and spots; gives float patches, each cut once and cached on its section.

    Parameters
    ----------
    sections
        The :class:`PatchSection` s.
    patch_px
        Side of the patches fed to the model (each section's crop of ``size_px`` is resampled to it).
    """

    def __init__(self, sections: list[PatchSection], patch_px: int):
        if not sections:
            raise ValueError("A PatchSource needs at least one section.")
        self.sections = list(sections)
        self.patch_px = int(patch_px)

    @property
    def n_spots(self) -> int:
        return sum(len(s) for s in self.sections)

    def patches(self, section: PatchSection, index: np.ndarray) -> np.ndarray:
        """Float32 ``(len(index), 3, patch_px, patch_px)`` patches of spots ``index`` of ``section``.

        Every spot of the section is cut on the first call (:func:`~sslspatial.data._patch_cache.cached_patches`),
        later calls read the cache.
        """
        return as_float(cached_patches(section, self.patch_px)[index])

    def subset(self, names: list[str]) -> PatchSource:
        """The sections named ``names``."""
        return PatchSource([s for s in self.sections if s.name in set(names)], self.patch_px)


class WindowDataset(torch.utils.data.Dataset):
    """Windows of spots as minibatch dictionaries (one window per item).

    Parameters
    ----------
    source
        Where patches come from.
    counts
        ``(n_obs, n_genes)`` counts indexed by ``PatchSection.rows`` (None: no counts, prediction only).
    library
        ``(n_obs,)`` library sizes (total counts) for the target normalisation.
    window_size
        Maximum spots per window.
    random_windows
        Draw windows around random spots every epoch (training) instead of a fixed partition (prediction).
    n_neighbors
        Neighbours in the spot graph (pruned beyond 1.5 spot pitches).
    seed
        Seed of the random windows.
    """

    def __init__(
        self,
        source: PatchSource,
        counts: Any = None,
        library: np.ndarray | None = None,
        window_size: int = 1024,
        random_windows: bool = False,
        n_neighbors: int = 4,
        seed: int = 0,
    ):
        self.source, self.counts, self.library = source, counts, library
        self.window_size, self.random_windows, self.n_neighbors = int(window_size), random_windows, n_neighbors
        self.rng = np.random.default_rng(seed)
        self.fixed = [(k, w) for k, s in enumerate(source.sections) for w in partition_windows(s.coords, window_size)]
        self.trees = [cKDTree(s.coords) for s in source.sections] if random_windows else None

    def __len__(self) -> int:
        return len(self.fixed)

    def window(self, item: int) -> tuple[int, np.ndarray]:
        k, idx = self.fixed[item]
        section = self.source.sections[k]
        if self.random_windows and len(section) > self.window_size:
            centre = section.coords[self.rng.integers(len(section))]
            _, idx = self.trees[k].query(centre, k=self.window_size)
            idx = np.sort(idx)
        return k, idx

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        k, idx = self.window(item)
        section = self.source.sections[k]
        coords = section.coords[idx]
        batch = {
            PATCHES_KEY: torch.from_numpy(self.source.patches(section, idx)),
            POSITIONS_KEY: torch.from_numpy(grid_positions(coords, section.pitch)),
            EDGE_INDEX_KEY: torch.from_numpy(knn_edges(coords, self.n_neighbors, 1.5 * section.pitch)),
            ROWS_KEY: torch.from_numpy(section.rows[idx]),
        }
        if section.features is not None:
            batch[FEATURES_KEY] = torch.as_tensor(section.features[idx], dtype=torch.float32)
        if self.counts is not None:
            rows = section.rows[idx]
            x = self.counts[rows]
            x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
            batch[COUNTS_KEY] = torch.as_tensor(x, dtype=torch.float32)
            batch[LIBRARY_KEY] = torch.as_tensor(self.library[rows], dtype=torch.float32).view(-1, 1)
        return batch


def window_loader(dataset: WindowDataset, shuffle: bool = False, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader yielding one window dictionary per step."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=shuffle, **kwargs)


class PatchWindowSplitter(pl.LightningDataModule):
    """Section-wise train / validation split of a :class:`PatchSource` into window loaders (scvi-tools compatible).

    Parameters
    ----------
    source
        All training sections.
    counts, library
        Counts ``(n_obs, n_genes)`` and library sizes ``(n_obs,)`` indexed by the sections' rows.
    validation_sections
        Names of the sections held out for validation (early stopping); may be empty.
    window_size
        Maximum spots per window.
    n_neighbors
        Neighbours in the spot graph.
    seed
        Seed of the random training windows.
    """

    def __init__(
        self,
        source: PatchSource,
        counts: Any,
        library: np.ndarray,
        validation_sections: list[str] | tuple[str, ...] = (),
        window_size: int = 1024,
        n_neighbors: int = 4,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__()
        names = [s.name for s in source.sections]
        unknown = set(validation_sections) - set(names)
        if unknown:
            raise ValueError(f"validation_sections {sorted(unknown)} are not training sections ({names}).")
        train = [n for n in names if n not in set(validation_sections)]
        if not train:
            raise ValueError("Every section is held out for validation: keep at least one for training.")
        self.train_source = source.subset(train)
        self.val_source = source.subset(list(validation_sections)) if validation_sections else None
        self.counts, self.library, self.window_size, self.n_neighbors, self.seed = (
            counts, library, window_size, n_neighbors, seed)  # fmt: skip
        self.train_idx = np.concatenate([s.rows for s in self.train_source.sections])
        self.val_idx = (
            np.concatenate([s.rows for s in self.val_source.sections]) if self.val_source else np.zeros(0, int)
        )
        self.test_idx = np.zeros(0, int)
        self.n_train, self.n_val = len(self.train_idx), len(self.val_idx)

    def train_dataloader(self):
        ds = WindowDataset(self.train_source, self.counts, self.library, self.window_size, True, self.n_neighbors,
                           self.seed)  # fmt: skip
        return window_loader(ds, shuffle=True)

    def val_dataloader(self):
        if self.val_source is None:
            return []
        ds = WindowDataset(self.val_source, self.counts, self.library, self.window_size, False, self.n_neighbors)
        return window_loader(ds)
