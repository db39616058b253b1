"""Honest train / evaluation splits for spatial data: by section, or by spatial blocks within a section.

Splitting cells at random leaks: a graph encoder sees the neighbours of an evaluation cell while training. These
splits hold out whole sections or whole spatial blocks, and :func:`buffer_split` drops from the training set every cell
within ``n_hops`` of an evaluation cell, so no training target (and no training subgraph) touches evaluation cells.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp


class Split(NamedTuple):
    """Indices of a split: ``train`` and ``test`` (disjoint, sorted)."""

    train: np.ndarray
    test: np.ndarray


def section_split(sections, test_sections) -> Split:
    """Hold out whole sections.

    Parameters
    ----------
    sections
        Section label of every observation.
    test_sections
        Label(s) of the held-out section(s).

    Returns
    -------
    Train and test indices.

    Examples
    --------
    >>> section_split(["a", "a", "b"], "b").test.tolist()
    [2]
    """
    sections = np.asarray(sections).astype(str)
    test_sections = [test_sections] if isinstance(test_sections, str) else list(test_sections)
    unknown = set(map(str, test_sections)) - set(sections)
    if unknown:
        raise ValueError(
            f"test_sections {sorted(unknown)} are not sections of the data (have {sorted(set(sections))})."
        )
    is_test = np.isin(sections, [str(s) for s in test_sections])
    if is_test.all():
        raise ValueError("Every section is held out: keep at least one section for training.")
    return Split(np.flatnonzero(~is_test), np.flatnonzero(is_test))


def spatial_block_split(
    coordinates: np.ndarray,
    sections=None,
    block_size: float | None = None,
    n_blocks: int = 4,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> Split:
    """Hold out square spatial blocks within each section.

    Each section is tiled into square blocks of side ``block_size`` (default: the section's longer extent divided by
    ``n_blocks``); a random ``test_fraction`` of each section's blocks (at least one, at most all but one) is held out.

    Parameters
    ----------
    coordinates
        ``(n_obs, 2)`` coordinates.
    sections
        Optional section label of every observation (blocks never span sections).
    block_size
        Side of the blocks, in coordinate units.
    n_blocks
        Blocks along the longer side when ``block_size`` is not given.
    test_fraction
        Fraction of blocks held out per section.
    seed
        Random seed.

    Returns
    -------
    Train and test indices.

    Examples
    --------
    >>> xy = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    >>> split = spatial_block_split(xy, block_size=5.0, test_fraction=0.5)
    >>> sorted(map(len, split))
    [2, 2]
    """
    coordinates = np.asarray(coordinates, dtype=float)[:, :2]
    sections = np.zeros(len(coordinates), dtype=int) if sections is None else np.asarray(sections)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(coordinates), dtype=bool)
    for section in pd.unique(sections):
        idx = np.flatnonzero(sections == section)
        xy = coordinates[idx]
        lo, hi = xy.min(0), xy.max(0)
        size = block_size if block_size is not None else max(float((hi - lo).max()) / n_blocks, 1e-12)
        cell = np.floor((xy - lo) / size).astype(np.int64)
        block = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
        blocks = np.unique(block)
        if blocks.size < 2:
            raise ValueError(f"Section {section!r} fits in one block of size {size:g}: use a smaller block_size.")
        n_test = int(np.clip(round(test_fraction * blocks.size), 1, blocks.size - 1))
        held = rng.choice(blocks, n_test, replace=False)
        is_test[idx[np.isin(block, held)]] = True
    return Split(np.flatnonzero(~is_test), np.flatnonzero(is_test))


def half_split(coordinates: np.ndarray, axis: int | None = None) -> Split:
    """Split at the median of the longer axis (or ``axis``): the lower half trains, the upper half is held out.

    Examples
    --------
    >>> half_split(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])).test.tolist()
    [2, 3]
    """
    coordinates = np.asarray(coordinates, dtype=float)
    axis = int(np.ptp(coordinates[:, :2], axis=0).argmax()) if axis is None else axis
    is_test = coordinates[:, axis] > np.median(coordinates[:, axis])
    return Split(np.flatnonzero(~is_test), np.flatnonzero(is_test))


def buffer_split(split: Split, adjacency: sp.spmatrix, n_hops: int) -> Split:
    """Drop from ``split.train`` every cell within ``n_hops`` of a test cell.

    With ``n_hops`` the number of message-passing layers, no training seed then sees a test cell in its subgraph, so
    neither the labels nor the features of test cells are used during training.

    Parameters
    ----------
    split
        A split.
    adjacency
        The spatial graph (``obsp['spatial_connectivities']``).
    n_hops
        Width of the buffer in hops (0 returns the split unchanged).

    Returns
    -------
    The split with a reduced training set.

    Examples
    --------
    >>> adj = sp.diags([1.0, 1.0], [-1, 1], shape=(5, 5), format="csr")  # path 0 - 1 - 2 - 3 - 4
    >>> buffer_split(Split(np.array([0, 1, 2, 3]), np.array([4])), adj, 2).train.tolist()
    [0, 1]
    """
    near = np.zeros(adjacency.shape[0], dtype=bool)
    near[split.test] = True
    sym = sp.csr_matrix(adjacency)
    sym = ((sym + sym.T) != 0).astype(np.int8)
    for _ in range(n_hops):
        near = near | (sym @ near.astype(np.int8) > 0)
    return Split(split.train[~near[split.train]], split.test)
