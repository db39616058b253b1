"""Real backbone architectures (timm / torchvision) built with random weights, saved to a file and loaded back.

These need timm (and torchvision, which timm imports). CI's CPU torch build has no matching torchvision wheel, so
there they are skipped; they run wherever ``pip install "sslspatial[backbones]"`` works (see docs/guide/hist2expr.md).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import sslspatial as ss
from sslspatial.pp import _backbones, _patches

timm = pytest.importorskip("timm", reason="timm (and a torchvision matching torch) is not installed")

# (name passed to sslspatial, builder of the same architecture straight from the library)
ARCHITECTURES = {
    "timm:resnet50": lambda: timm.create_model("resnet50", pretrained=False, num_classes=0),
    "timm:vit_small_patch16_224": lambda: timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0),
}


def _saved(tmp_path, name: str, seed: int, prefix: str = "") -> tuple[torch.nn.Module, str]:
    torch.manual_seed(seed)
    module = ARCHITECTURES[name]().eval()
    path = tmp_path / f"{name.replace(':', '_')}_{seed}.pt"
    torch.save({prefix + k: v for k, v in module.state_dict().items()}, path)
    return module, str(path)


def _by_hand(module, img, centres, size, input_px, mean, std) -> np.ndarray:
    """Crop, scale to [0, 1], resize to the backbone's side, normalise, forward: what image_features must do."""
    crops = _patches.crop_patches(img, centres, size).astype(np.float32) / 255.0
    x = torch.as_tensor(_patches.resize_patches(crops, input_px))
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return module(x).numpy()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_backbone_from_a_file_uses_its_weights_and_the_library_input_config(tmp_path, name):
    reference, path = _saved(tmp_path, name, seed=0)
    loaded = ss.pp.load_backbone(name, path)
    for key, value in reference.state_dict().items():  # every tensor is the file's, not a fresh initialisation
        torch.testing.assert_close(loaded.module.state_dict()[key], value)
    cfg = timm.data.resolve_model_data_config(reference)
    assert loaded.info["input_px"] == cfg["input_size"][-1] == 224
    np.testing.assert_allclose(loaded.info["mean"], cfg["mean"], rtol=1e-6)
    np.testing.assert_allclose(loaded.info["std"], cfg["std"], rtol=1e-6)
    assert loaded.info["weights_sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert loaded.info["tensors_loaded"] == len(reference.state_dict())

    img = np.random.default_rng(1).integers(0, 255, (3, 120, 120), dtype=np.uint8)
    centres = np.array([[40.0, 50.0], [80.0, 70.0]])
    feats = ss.pp.image_features(img, centres, 48, method=name, weights=path)
    expected = _by_hand(reference, img, centres, 48, 224, cfg["mean"], cfg["std"])
    np.testing.assert_allclose(feats, expected, rtol=1e-3, atol=1e-4)
    other, other_path = _saved(tmp_path, name, seed=1)  # other weights give other features
    assert np.abs(ss.pp.image_features(img, centres, 48, method=name, weights=other_path) - feats).max() > 1e-3
    if "vit" in name:  # this config's normalisation is not ImageNet's, and it matters
        assert cfg["mean"] == pytest.approx((0.5, 0.5, 0.5))
        imagenet = _by_hand(reference, img, centres, 48, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert np.abs(imagenet - feats).max() > 1e-3


def test_weights_that_do_not_fit_are_refused_and_wrapper_prefixes_are_stripped(tmp_path):
    _, vit = _saved(tmp_path, "timm:vit_small_patch16_224", seed=0)
    with pytest.raises(ValueError, match="do not fit backbone 'timm:resnet50'.*missing"):
        ss.pp.load_backbone("timm:resnet50", vit)
    torch.manual_seed(0)
    wide = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, embed_dim=192, num_heads=3)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="another shape"):
        ss.pp.load_backbone("timm:vit_small_patch16_224", str(tmp_path / "wide.pt"))
    reference, wrapped = _saved(tmp_path, "timm:resnet50", seed=2, prefix="module.")  # saved from DDP
    loaded = ss.pp.load_backbone("timm:resnet50", wrapped)
    torch.testing.assert_close(loaded.module.conv1.weight, reference.conv1.weight)
    # constructor arguments reach the library: a depth-6 ViT loads only with backbone_kwargs={'depth': 6}
    torch.manual_seed(0)
    shallow = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=6)
    torch.save(shallow.state_dict(), tmp_path / "shallow.pt")
    with pytest.raises(ValueError, match="do not fit"):
        ss.pp.load_backbone("timm:vit_small_patch16_224", str(tmp_path / "shallow.pt"))
    ok = ss.pp.load_backbone("timm:vit_small_patch16_224", str(tmp_path / "shallow.pt"), {"depth": 6})
    assert len(ok.module.blocks) == 6


def test_hist2expr_trains_on_backbone_features_from_a_file_and_checks_them_on_reload(tmp_path):
    from sslspatial.datasets import synthetic_tissue

    sdata = synthetic_tissue(n_cells=400, n_genes=6, n_sections=3, spot_layouts=("visium",), seed=3)
    _, path = _saved(tmp_path, "timm:resnet50", seed=0)
    common = {"table_key": "table_visium", "image_key": "he", "library_key": "section"}
    model = ss.tl.hist2expr(
        sdata, **common, train_regions=["section_0", "section_1"], predict_regions=["section_2"],
        features="timm:resnet50", patch_kwargs={"feature_weights": path}, use_patches=False, n_validation_sections=0,
        max_epochs=2,
        model_kwargs={"dim": 16, "transformer_depth": 1, "gnn_depth": 1}, train_kwargs={"enable_progress_bar": False},
    )  # fmt: skip
    record = model.patch_settings["feature_backbone"]
    assert record["weights_sha256"] == _backbones.file_sha256(path) and record["input_px"] == 224
    assert model.module.n_features == 2048  # ResNet-50's pooled features reach the model
    first = sdata.tables["hist2expr"]
    model.save(tmp_path / "m", save_anndata=True)
    loaded = ss.model.Hist2Expr.load(tmp_path / "m")
    ss.tl.hist2expr(sdata, **common, model=loaded, predict_regions=["section_2"], key_added="again")
    np.testing.assert_allclose(
        sdata.tables["again"].X, first[first.obs["section"] == "section_2"].X, rtol=1e-4, atol=1e-4
    )
    torch.manual_seed(5)  # other weights at the recorded path
    torch.save(ARCHITECTURES["timm:resnet50"]().state_dict(), path)
    with pytest.raises(ValueError, match="not the file this model was trained with"):
        ss.tl.hist2expr(sdata, **common, model=loaded, predict_regions=["section_2"], key_added="third")
