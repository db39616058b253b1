"""Feature backbones for image patches: a registry, timm / torchvision architectures with weights from a local file.

:func:`load_backbone` builds the architecture, loads every tensor from the file (or refuses it), and takes the input
side and normalisation from the library's configuration; :func:`backbone_features` runs it over patches. torchvision
and timm are imported lazily: neither is needed for the default image statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))


@dataclass
class Backbone:
    """A feature extractor: a factory building the torch module, its input size and input normalisation."""

    factory: Callable[[], Any]
    input_px: int = 224
    mean: np.ndarray = field(default_factory=lambda: _IMAGENET[0].copy())
    std: np.ndarray = field(default_factory=lambda: _IMAGENET[1].copy())


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(
    name: str,
    factory: Callable[[], Any],
    *,
    input_px: int = 224,
    mean: tuple[float, float, float] = tuple(_IMAGENET[0]),
    std: tuple[float, float, float] = tuple(_IMAGENET[1]),
) -> None:
    """Register a feature backbone under ``name`` so ``image_features(method=name)`` uses it.

    Parameters
    ----------
    name
        Method name.
    factory
        Callable returning a ``torch.nn.Module`` mapping ``(n, 3, input_px, input_px)`` to ``(n, d)`` (or more dims,
        which are averaged).
    input_px
        Patch side fed to the backbone.
    mean, std
        Per-channel input normalisation.

    Examples
    --------
    >>> import torch
    >>> register_backbone("tiny", lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    """
    _REGISTRY[name] = Backbone(factory, int(input_px), np.asarray(mean, np.float32), np.asarray(std, np.float32))


_HEAD_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "head_drop.")
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.")


@dataclass
class LoadedBackbone:
    """A built feature backbone: the module in eval mode, its input spec, and where its weights came from.

    ``info`` records the name, the input side and normalisation the patches get, the weights file and its SHA-256,
    and how many tensors were loaded from it; :func:`sslspatial.tl.hist2expr` saves it with the model.
    """

    module: Any
    spec: Backbone
    info: dict[str, Any]


def load_backbone(name: str, weights: str | None, backbone_kwargs: Mapping[str, Any] | None = None) -> LoadedBackbone:
    """Build a backbone by name and load its weights from a local file.

    Parameters
    ----------
    name
        A name registered with :func:`register_backbone`, ``"timm:<architecture>"``, ``"torchvision:<architecture>"``,
        or a bare architecture name (torchvision first, then timm). ``"cnn"`` means ResNet-18.
    weights
        A local state-dict file (``.pt`` / ``.pth`` / ``.bin`` via ``torch.load``, or ``.safetensors``); ``"hub"`` lets
        the library download its default pretrained weights (needs network); ``"random"`` keeps the random
        initialisation (for tests). Registered backbones load their own weights and ignore this.
    backbone_kwargs
        Keyword arguments of ``timm.create_model`` / ``torchvision.models.get_model``, e.g. UNI's
        ``{"init_values": 1e-5, "dynamic_img_size": True}``.

    Returns
    -------
    The module (classification head removed) with the input side and normalisation of the library's configuration
    for that architecture (timm's ``pretrained_cfg``, torchvision's default weights' transforms).

    Raises
    ------
    ValueError
        When the file does not fit the architecture: tensors of the backbone missing from it, or of another shape.

    Examples
    --------
    >>> import sslspatial as ss
    >>> uni = ss.pp.load_backbone("timm:vit_large_patch16_224", "uni/pytorch_model.bin",
    ...                           {"init_values": 1e-5, "dynamic_img_size": True})  # doctest: +SKIP
    >>> uni.info["input_px"], uni.info["weights_sha256"][:8]  # doctest: +SKIP
    >>> ss.pp.image_features(image, centres, 100.0, method=uni)  # doctest: +SKIP
    """
    if name in _REGISTRY:
        spec = _REGISTRY[name]
        module = spec.factory()
        info = {"name": name, "source": "registered"}
    else:
        source, _, arch = name.partition(":") if ":" in name else ("", "", name)
        arch = "resnet18" if arch == "cnn" else arch
        if weights is None:
            raise ValueError(
                f"method={name!r} needs weights: pass weights=<path to a local state-dict file>, weights='hub' to let "
                "the library download its default pretrained weights, or weights='random' (untrained; for tests)."
            )
        built, errors = None, []
        for lib in [source] if source else ["torchvision", "timm"]:
            try:
                built = _build_from_library(lib, arch, weights, dict(backbone_kwargs or {}))
                break
            except ImportError as err:
                errors.append(f"{lib}: {err}")
        if built is None:
            raise ImportError(
                f"Backbone {name!r} needs torchvision or timm, which could not be imported ({'; '.join(errors)}). "
                "Install one of them (pip install timm), use method='stats', or pass a torch.nn.Module as method."
            )
        module, spec, lib = built
        info = {"name": name, "source": lib}
        if weights not in ("hub", "random"):
            info |= _load_weights(module, weights, name)
        info["weights"] = str(weights)
    info |= {"input_px": int(spec.input_px), "mean": [float(v) for v in spec.mean], "std": [float(v) for v in spec.std]}
    return LoadedBackbone(module.eval(), spec, info)


def load_backbone_for(
    features: str | None,
    weights: str | None,
    kwargs: Mapping[str, Any] | None,
    trained_settings: Mapping[str, Any] | None = None,
) -> LoadedBackbone | None:
    """The backbone ``features`` of a run, built once (None for ``"stats"`` / None), checked against a trained model.

    ``trained_settings`` are a trained model's ``patch_settings``: when they record the SHA-256 of the weights it was
    trained with, another weights file is refused.

    Raises
    ------
    ValueError
        When the weights file is not the one the model was trained with.
    """
    if features is None or features == "stats":
        return None
    loaded = load_backbone(features, weights, kwargs)
    trained = (trained_settings or {}).get("feature_backbone") or {}
    saved, now = trained.get("weights_sha256"), loaded.info.get("weights_sha256")
    if saved is not None and saved != now:
        raise ValueError(
            f"The backbone weights {weights!r} are not the file this model was trained with (SHA-256 {now} vs "
            f"{saved}): its predictions would be meaningless. Put the original file at that path."
        )
    return loaded


def file_sha256(path: str) -> str:
    """SHA-256 of a file (read in 1 MiB blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_weights(module: Any, path: str, name: str) -> dict[str, Any]:
    """Load a state dict from ``path`` into ``module``; every backbone tensor must be in it, with its shape."""
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state dict (a mapping of tensor names to tensors).")
    expected = module.state_dict()
    for prefix in _WRAPPER_PREFIXES:  # checkpoints saved from a wrapper: strip its prefix when that makes keys fit
        if not any(k in expected for k in state) and any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        what = f"{len(missing)} of its {len(expected)} tensors are missing (e.g. {missing[:3]})" if missing else ""
        what += ("; " if what else "") + (f"{len(wrong)} have another shape (e.g. {wrong[:3]})" if wrong else "")
        raise ValueError(
            f"The weights in {path!r} do not fit backbone {name!r}: {what}. Check the architecture name and its "
            "backbone_kwargs (e.g. img_size, patch_size, init_values), or register the model with "
            "ss.pp.register_backbone."
        )
    unused = [k for k in state if k not in expected]
    if [k for k in unused if not k.startswith(_HEAD_PREFIXES)]:
        from .. import _logging as logg

        logg.warning(f"{len(unused)} tensors of {path!r} are not part of backbone {name!r} and were ignored.")
    module.load_state_dict({k: state[k] for k in expected})
    return {"weights_sha256": file_sha256(path), "tensors_loaded": len(expected)}


def _build_from_library(lib: str, arch: str, weights: str, kwargs: dict[str, Any]) -> tuple[Any, Backbone, str]:
    import torch

    if lib == "timm":
        import timm

        model = timm.create_model(arch, pretrained=weights == "hub", num_classes=0, **kwargs)
        cfg = timm.data.resolve_model_data_config(model)
        spec = Backbone(lambda: model, int(cfg["input_size"][-1]), np.asarray(cfg["mean"], np.float32),
                        np.asarray(cfg["std"], np.float32))  # fmt: skip
        return model, spec, "timm"
    if lib == "torchvision":
        import torchvision.models as tvm

        model = tvm.get_model(arch, weights="DEFAULT" if weights == "hub" else None, **kwargs)
        for attr in ("fc", "classifier", "head", "heads"):
            if hasattr(model, attr):
                setattr(model, attr, torch.nn.Identity())
        try:  # the input size and normalisation of the architecture's default weights
            transforms = tvm.get_model_weights(arch).DEFAULT.transforms()
        except (AttributeError, KeyError, ValueError):  # no default weights: ImageNet's 224 px
            return model, Backbone(lambda: model), "torchvision"
        spec = Backbone(lambda: model, int(transforms.crop_size[0]), np.asarray(transforms.mean, np.float32),
                        np.asarray(transforms.std, np.float32))  # fmt: skip
        return model, spec, "torchvision"
    raise ValueError(f"Unknown backbone library {lib!r}: use 'torchvision:<name>' or 'timm:<name>'.")


def backbone_features(
    patches: np.ndarray, module: Any, spec: Backbone | None = None, *, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Run a torch module over ``(n, 3, s, s)`` patches in ``[0, 1]`` (resized + normalised per ``spec``)."""
    import torch
    import torch.nn.functional as F

    spec = spec or Backbone(lambda: module)
    module = module.to(device).eval()
    mean = torch.as_tensor(spec.mean).view(1, 3, 1, 1).to(device)
    std = torch.as_tensor(spec.std).view(1, 3, 1, 1).to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(patches), batch_size):
            x = torch.as_tensor(np.ascontiguousarray(patches[start : start + batch_size]), dtype=torch.float32)
            x = x.to(device)
            if x.shape[-1] != spec.input_px:
                x = F.interpolate(x, size=(spec.input_px,) * 2, mode="bilinear", antialias=True, align_corners=False)
            y = module((x - mean) / std)
            y = y[0] if isinstance(y, tuple | list) else y
            out.append(y.reshape(len(x), y.shape[1], -1).mean(-1).float().cpu().numpy())
    return np.concatenate(out, 0).astype(np.float32)
