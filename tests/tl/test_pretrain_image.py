"""``ss.tl.pretrain_image`` (Barlow Twins on H&E tiles) and ``hist2expr`` on top of the pretrained encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sslspatial as ss
from sslspatial.module._image_ssl import centre_crop, histology_views

SMALL = {"channels": 8, "depth": 1, "down_channels": 2, "projector_dim": 64}
TINY_CONTEXT = {"dim": 16, "transformer_depth": 1, "heads": 2, "gnn_depth": 2, "n_pos": 16}
QUIET = {"enable_progress_bar": False}


@pytest.fixture(scope="module")
def tissue():
    from sslspatial.datasets import synthetic_tissue

    return synthetic_tissue(n_cells=900, n_genes=12, n_sections=3, spot_layouts=("visium",), seed=1)


@pytest.fixture(scope="module")
def encoder(tissue):
    return ss.tl.pretrain_image(tissue, table_key="table_visium", patch_px=16, tiles_per_image=400, max_epochs=8,
                                batch_size=64, lr=3e-3, model_kwargs=SMALL, key_added="img")  # fmt: skip


def test_views_are_the_patch_when_nothing_is_random():
    tiles = torch.rand(3, 3, 20, 20)
    centre = centre_crop(tiles, 16)
    np.testing.assert_allclose(centre.numpy(), tiles[..., 2:18, 2:18].numpy())
    g = torch.Generator().manual_seed(0)
    views = histology_views(tiles, 16, generator=g, min_scale=0.6)
    assert views.shape == (3, 3, 16, 16) and not torch.allclose(views, centre)


def test_pretraining_loss_falls_and_spot_features_are_written(tissue, encoder):
    history = tissue.tables["table_visium"].uns["img"]["loss_history"]
    assert len(history) == 8 and np.mean(history[-2:]) < 0.8 * history[0]
    feats = tissue.tables["table_visium"].obsm["X_img"]
    assert feats.shape == (tissue.tables["table_visium"].n_obs, encoder.module.encoder.out_dim)
    assert np.isfinite(feats).all() and feats.std(0).max() > 0
    with pytest.raises(ss.OutputExistsError):
        ss.tl.pretrain_image(tissue, table_key="table_visium", key_added="img", max_epochs=1)


def test_saved_and_reloaded_encoder_gives_identical_features(encoder, tmp_path):
    patches = np.random.default_rng(0).random((10, 3, 16, 16), dtype=np.float32)
    encoder.save(tmp_path / "enc")
    loaded = ss.model.ImageEncoder.load(tmp_path / "enc")
    np.testing.assert_array_equal(encoder.features(patches), loaded.features(patches))
    assert loaded.sha256 == encoder.sha256 and loaded.history_ == encoder.history_
    with pytest.raises(FileExistsError):
        encoder.save(tmp_path / "enc")


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_hist2expr_trains_on_top_of_the_encoder_frozen_or_fine_tuned(tissue, encoder, tmp_path, scale):
    model = ss.tl.hist2expr(
        tissue, table_key="table_visium", image_key="he", library_key="section", patch_px=16,
        train_regions=["section_0", "section_1"], predict_regions=["section_2"], n_validation_sections=0,
        max_epochs=2, model_kwargs=TINY_CONTEXT, train_kwargs={**QUIET, "encoder_lr_scale": scale}, image_encoder=encoder,
        key_added="h2e_ssl", overwrite=True,
    )  # fmt: skip
    pretrained = encoder.module.encoder.state_dict()
    trained = model.module.encoder.state_dict()
    weights = [k for k in pretrained if not k.endswith("num_batches_tracked")]
    same = all(torch.equal(pretrained[k], trained[k].cpu()) for k in weights)
    assert same is (scale == 0)  # frozen: weights and batch-norm statistics untouched; fine-tuned: changed
    record = model.patch_settings["image_encoder"]
    assert record["sha256"] == encoder.sha256 and record["lr_scale"] == scale
    assert np.isfinite(tissue.tables["h2e_ssl"].uns["h2e_ssl"]["mean_pearson"]["section_2"]["mean"])
    model.save(tmp_path / "m", save_anndata=True)  # the encoder travels inside the model's weights
    loaded = ss.model.Hist2Expr.load(tmp_path / "m")
    for k in weights:
        assert torch.equal(loaded.module.encoder.state_dict()[k], trained[k].cpu())
    assert loaded.module.freeze_encoder is (scale == 0)


def test_encoder_mismatch_is_refused_before_training(tissue, encoder):
    with pytest.raises(ValueError, match="patch_px=16"):
        ss.tl.hist2expr(tissue, table_key="table_visium", image_key="he", library_key="section", patch_px=32,
                        image_encoder=encoder, key_added="bad")  # fmt: skip
    with pytest.raises(ValueError, match="architecture"):
        ss.tl.hist2expr(tissue, table_key="table_visium", image_key="he", library_key="section", patch_px=16,
                        image_encoder=encoder, model_kwargs={"channels": 32}, key_added="bad")  # fmt: skip
