"""Patch cache of the histology loaders: cut once, at the resolution the model uses, the same from any resolution."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sslspatial.data import _patch_cache
from sslspatial.data._patch_cache import as_float, cached_patches, pyramid_levels, working_level
from sslspatial.data._patch_loader import PATCHES_KEY, PatchSection, PatchSource, WindowDataset
from sslspatial.pp._patches import crop_patches, resize_patches, to_unit_range

FULL, FACTOR, PATCH = 768, 4, 16


def _image() -> np.ndarray:
    """A smooth RGB uint8 ``(3, FULL, FULL)`` image: blobs of a few pixels' scale over gradients."""
    y, x = np.mgrid[0:FULL, 0:FULL] / FULL
    channels = [
        0.5 + 0.4 * np.sin(2 * np.pi * 3 * x) * np.cos(2 * np.pi * 2 * y),
        0.3 + 0.6 * x * y,
        0.5 + 0.4 * np.cos(2 * np.pi * 5 * (x + y)),
    ]
    return np.rint(np.clip(np.stack(channels), 0, 1) * 255).astype(np.uint8)


def _block_mean(image: np.ndarray, f: int) -> np.ndarray:
    c, h, w = image.shape
    return np.rint(image.reshape(c, h // f, f, w // f, f).mean((2, 4))).astype(np.uint8)


def _spots(n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(100, FULL - 100, size=(n, 2))


def test_full_resolution_and_downscaled_images_give_the_same_cached_patches():
    image, centres = _image(), _spots()
    full = PatchSection("full", image, centres, centres, np.arange(len(centres)), 96)
    small = PatchSection("small", _block_mean(image, FACTOR), centres / FACTOR, centres, np.arange(len(centres)), 24)
    a, b = as_float(cached_patches(full, PATCH)), as_float(cached_patches(small, PATCH))
    assert a.shape == b.shape == (len(centres), 3, PATCH, PATCH)
    assert a.std(0).mean() > 0.05  # the patches differ from spot to spot, so agreement is not trivial
    assert np.abs(a - b).mean() < 0.01 and np.abs(a - b).max() < 0.1  # registration: <= half a coarse pixel
    # the patches of other spots are much further apart than the two resolutions of the same spot
    assert np.abs(a - b[np.roll(np.arange(len(b)), 1)]).mean() > 5 * np.abs(a - b).mean()


def test_cached_patches_are_the_uncached_float_patches_to_uint8_precision():
    image, centres = _image(), _spots()
    section = PatchSection("s", image, centres, centres, np.arange(len(centres)), 50)
    idx = np.array([3, 0, 7, 7, 12])
    got = PatchSource([section], PATCH).patches(section, idx)
    expected = resize_patches(to_unit_range(crop_patches(image, centres[idx], 50), (0.0, 255.0)), PATCH)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=0.5 / 255 + 1e-6)


def test_patches_are_cut_once_for_every_epoch_and_prediction(monkeypatch):
    image, centres = _image(), _spots(60)
    calls = []

    def counting_crop(img, c, size, **kw):
        calls.append(len(c))
        return crop_patches(img, c, size, **kw)

    monkeypatch.setattr(_patch_cache, "crop_patches", counting_crop)
    monkeypatch.setattr(_patch_cache, "CHUNK", 16)
    section = PatchSection("s", image, centres, centres, np.arange(len(centres)), 40)
    source = PatchSource([section], PATCH)
    train = WindowDataset(source, window_size=8, random_windows=True)
    for _epoch in range(3):
        for item in range(len(train)):
            train[item]
    predict = WindowDataset(PatchSource([section], PATCH), window_size=8)  # prediction: a new source, same section
    batches = [predict[item][PATCHES_KEY].numpy() for item in range(len(predict))]
    assert sum(calls) == len(centres) and len(calls) == 4  # every spot cut exactly once (4 blocks of <= 16)
    assert section.cache_seconds > 0
    cache = cached_patches(section, PATCH)
    for (_, idx), batch in zip(predict.fixed, batches, strict=True):
        np.testing.assert_array_equal(batch, as_float(cache[idx]))
    # a copy with other centres (e.g. shuffled spots) gets its own patches, cut again
    perm = np.random.default_rng(1).permutation(len(centres))
    shuffled = dataclasses.replace(section, centres_px=centres[perm])
    np.testing.assert_array_equal(cached_patches(shuffled, PATCH), cache[perm])
    assert sum(calls) == 2 * len(centres)


def test_multiscale_image_patches_come_from_the_coarsest_level_that_keeps_patch_px():
    from spatialdata.models import Image2DModel

    image, centres = _image(), _spots()
    tree = Image2DModel.parse(image, dims=("c", "y", "x"), scale_factors=[2, 2, 2])
    levels = pyramid_levels(tree)
    assert [(fx, fy) for _, fx, fy in levels] == [(2.0, 2.0), (4.0, 4.0), (8.0, 8.0)]
    rows = np.arange(len(centres))
    # 96 px at level 0: 48 at x2, 24 at x4, 12 at x8 < 16, so the x4 level is the one
    section = PatchSection("s", tree["scale0"]["image"], centres, centres, rows, 96, levels=levels)
    array, level_centres, size, factor = working_level(section, PATCH)
    assert (factor, size, array.shape[-1]) == (4.0, 24, FULL // 4)
    np.testing.assert_allclose(level_centres, centres / 4)
    flat = PatchSection("flat", image, centres, centres, rows, 96)  # the same image, single-scale
    a, b = as_float(cached_patches(section, PATCH)), as_float(cached_patches(flat, PATCH))
    assert np.abs(a - b).mean() < 0.01 and np.abs(a - b).max() < 0.1  # registration: <= half a coarse pixel
    assert working_level(dataclasses.replace(section, size_px=40), PATCH)[3] == 2.0  # 20 px at x2, 10 at x4
    assert working_level(dataclasses.replace(section, size_px=20), PATCH)[3] == 1.0  # no level keeps 16 px


@pytest.mark.parametrize("colour", [False, True])
def test_colour_normalised_patches_are_cached_after_normalisation(colour):
    from sslspatial.pp._patches import ColourStats, colour_normalize

    image, centres = _image(), _spots()
    stats = ColourStats(np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.1, 0.3], np.float32))
    section = PatchSection("s", image, centres, centres, np.arange(len(centres)), 32, colour=stats if colour else None)
    x = to_unit_range(crop_patches(image, centres, 32), (0.0, 255.0))
    expected = resize_patches(colour_normalize(x, stats) if colour else x, PATCH)
    np.testing.assert_allclose(as_float(cached_patches(section, PATCH)), expected, atol=0.5 / 255 + 1e-6)
