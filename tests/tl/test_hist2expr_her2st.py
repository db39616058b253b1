"""REAL DATA: ``ss.tl.hist2expr`` on her2st (../shared/data/her2st): train on C2 + C3, predict C4 from its image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sslspatial as ss
from sslspatial.data import PatchSource


@pytest.mark.slow  # real data
def test_her2st_prediction_beats_shuffled_patches(shared_data):
    sdata = ss.datasets.her2st(["C2", "C3", "C4"], path=shared_data / "her2st", genes="all", image_downscale=4)
    table = sdata.tables["table"]
    table.obs["total"] = np.asarray(table.X.sum(1)).ravel()
    train_rows = table.obs["section"].isin(["C2", "C3"]).to_numpy()
    x = table.X[train_rows].toarray()
    target = np.log1p(x / table.obs["total"].to_numpy()[train_rows, None] * 1e4)
    genes = list(table.var_names[np.argsort(-target.var(0))[:50]])  # 50 most variable on the training sections
    diameter = 2 * float(np.median(sdata.shapes["C4_spots"]["radius"]))
    model = ss.tl.hist2expr(
        sdata, genes=genes, train_regions=["C2_spots", "C3_spots"], predict_regions=["C4_spots"],
        spot_size=1.5 * diameter, size_factor_key="total", n_validation_sections=0, max_epochs=15,
        train_kwargs={"enable_progress_bar": False},
    )  # fmt: skip
    out = sdata.tables["hist2expr"]
    r = out.var["pearson_C4_spots"].to_numpy()
    mean_r = float(np.nanmean(r))
    # control: the same model fed the held-out section's patches (and features) shuffled across its spots
    test_rows = np.flatnonzero(table.obs["section"].to_numpy() == "C4")
    section = model.patch_source.sections[0]
    from sslspatial.tl._hist2expr import _Patches

    patches = _Patches(sdata, size_unit="coords", value_range=None, features=("stats", None))
    c4 = patches.section("C4", "C4_image", "C4", table.obsm["spatial"][test_rows], test_rows, 1.5 * diameter)
    perm = np.random.default_rng(0).permutation(len(c4))
    shuffled = dataclasses.replace(c4, centres_px=c4.centres_px[perm])
    shuffled.features = c4.features[perm]
    pred_shuffled = model.predict(PatchSource([shuffled], model.module.patch_px))[0]
    truth = out[out.obs["section"] == "C4_spots"].layers["measured"]
    mean_shuffled = float(np.nanmean(ss.metrics.pearson_per_gene(truth, pred_shuffled)))
    print(f"her2st C4 (50 HVGs): mean Pearson {mean_r:.3f}, shuffled patches {mean_shuffled:.3f}")
    assert section.name == "C2_spots"
    assert mean_r > 0.1
    assert mean_r > mean_shuffled + 0.1
