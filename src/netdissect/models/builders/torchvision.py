"""torchvision classifiers: the classic CNNs of the zoo and any other torchvision model name.

Weights (``weights=``, CLI ``--weights``):

- ``"imagenet"``: torchvision's ImageNet weights, downloaded into the torch hub cache with
  their hash checked when they are not there yet (:mod:`netdissect.models.fetch`);
- ``"places365"``: the Places365 CNNs of the CSAIL authors (alexnet, resnet18, resnet50,
  densenet161), downloaded into the hub cache and checked against the sha256 recorded at the
  first download;
- a file path: a state dict, including Places365-style checkpoints
  (``{'state_dict': {'module.conv1.weight': ...}}``) whose class count is read from the final
  layer, so ``resnet18`` + ``resnet18_places365.pth.tar`` builds a 365-class ResNet-18 with
  NetDissect-Lite's Places365 normalisation (docs/method.md section 3);
- ``"random"``: seeded random initialisation, an untrained baseline;
- None: torchvision's ImageNet weights if they are already in the hub cache (downloaded only
  with ``pretrained_cache_only=False``); otherwise WeightsError lists the four choices above.

For the classic CNNs the conv aliases (``conv5``, ``conv5_3``) point at the ReLU after the
convolution: the Caffe models of the original paper applied ReLU in place, so the dissected
``conv5`` blob was rectified. In-place activations are switched off so a hook on a convolution
sees its output unmodified by the activation that follows.
"""
from __future__ import annotations

import difflib
import os
import re
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from netdissect.errors import ModelError, WeightsError
from netdissect.models import fetch
from netdissect.models import weights as weights_io
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import (RANDOM_WEIGHTS, register_model, registered_models,
                                        spec_forms)

from .common import disable_inplace, last_spatial_child

__all__ = ["alexnet", "vgg16", "resnet18", "resnet50", "resnet152", "densenet161", "googlenet",
           "build_torchvision", "torchvision_layers", "cached_imagenet_weights",
           "IMAGENET_WEIGHTS", "PLACES365_WEIGHTS"]

#: Pass as ``weights`` to use torchvision's ImageNet weights, downloaded when not cached.
IMAGENET_WEIGHTS = "imagenet"
#: Pass as ``weights`` to use the published Places365 weights (fetch.PLACES365_ARCHS).
PLACES365_WEIGHTS = "places365"

_AUX_HEADS = ("aux1", "aux2", "AuxLogits")


@register_model("alexnet")
def alexnet(weights: str | None = None, **options) -> Probe:
    return build_torchvision("alexnet", weights, **options)


@register_model("vgg16")
def vgg16(weights: str | None = None, **options) -> Probe:
    return build_torchvision("vgg16", weights, **options)


@register_model("resnet18")
def resnet18(weights: str | None = None, **options) -> Probe:
    return build_torchvision("resnet18", weights, **options)


@register_model("resnet50")
def resnet50(weights: str | None = None, **options) -> Probe:
    return build_torchvision("resnet50", weights, **options)


@register_model("resnet152")
def resnet152(weights: str | None = None, **options) -> Probe:
    return build_torchvision("resnet152", weights, **options)


@register_model("densenet161")
def densenet161(weights: str | None = None, **options) -> Probe:
    return build_torchvision("densenet161", weights, **options)


@register_model("googlenet")
def googlenet(weights: str | None = None, **options) -> Probe:
    return build_torchvision("googlenet", weights, **options)


def build_torchvision(name: str, weights: str | None = None, *, spec: str | None = None,
                      pretrained_cache_only: bool = True, **_options) -> Probe:
    """Any torchvision classification model ``name`` with the given, fetched or cached weights.

    ``weights`` is a file path, ``"imagenet"``, ``"places365"``, ``"random"`` or None (see the
    module docstring); ``spec`` is the user's spelling of the name, for the unknown-model
    message.
    """
    from torchvision import models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        raise ModelError(unknown_model_message(spec or name, available))
    path, from_cache = _weights_file(name, weights, pretrained_cache_only)
    state = weights_io.read_state_dict(path) if path is not None else None
    if state is not None and name.startswith("densenet"):
        state = _rename_legacy_densenet_keys(state)
    kwargs = _model_kwargs(name, state, from_cache)
    model = tvm.get_model(name, weights=None, **kwargs)
    loaded = (weights_io.load_weights(model, path, state=state, check_hash=from_cache)
              if path is not None else None)
    if state is not None and _has_aux_heads(state):
        _drop_aux_heads(model)
    disable_inplace(model)
    return _probe(name, model, kwargs, loaded)


def _weights_file(name: str, weights: str | None, cache_only: bool) -> tuple[Path | None, bool]:
    """The weights file to load (None: random init) and whether it is torchvision's own.

    ``"imagenet"`` and ``"places365"`` are fetched into the hub cache when missing; None takes
    torchvision's ImageNet file from the cache (downloading it only when not ``cache_only``)
    and raises WeightsError, listing the choices, when it is not there.
    """
    if weights == RANDOM_WEIGHTS:
        return None, False
    if weights == PLACES365_WEIGHTS:
        return fetch.fetch_places365(name), False
    if weights == IMAGENET_WEIGHTS:
        path, _ = cached_imagenet_weights(name, download=True)
        if path is None:
            raise ModelError(f"torchvision publishes no ImageNet weights for {name!r}; pass a "
                             "weights FILE or 'random'.")
        return path, True
    if weights is not None:
        return Path(weights), False
    path, url = cached_imagenet_weights(name, download=not cache_only)
    if path is None:
        raise WeightsError(no_weights_message(name, url))
    return path, True


def _model_kwargs(name: str, state: dict[str, torch.Tensor] | None, from_cache: bool) -> dict:
    """The ``get_model`` arguments that make the architecture fit ``state``."""
    kwargs: dict[str, object] = {}
    if state is not None:
        num_classes = _num_classes_in_state(name, state)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = state is not None and _has_aux_heads(state)
        kwargs["init_weights"] = state is None
        if from_cache:  # torchvision's ImageNet weights expect its input transform.
            kwargs["transform_input"] = True
    return kwargs


def _probe(name: str, model: nn.Module, kwargs: dict, loaded: dict | None) -> Probe:
    """The Probe of a built torchvision model: preset, input size, layers, weights."""
    from torchvision import models as tvm

    input_size = 227 if name == "alexnet" else _torchvision_input_size(name)
    aliases, default_aliases = torchvision_layers(model)
    default_layers = [aliases[a] for a in default_aliases] or last_spatial_child(
        lambda: tvm.get_model(name, weights=None, **kwargs), input_size)
    # Places365 CNNs (365 classes) were dissected with NetDissect-Lite's normalisation.
    preset = "places365" if kwargs.get("num_classes") == 365 else "imagenet"
    return Probe(model, preprocess=Preprocess.preset(preset, size=input_size), name=name,
                 default_layers=default_layers, aliases=aliases,
                 weights=loaded["path"] if loaded else None,
                 weights_fingerprint=loaded["sha256"] if loaded else "")


def unknown_model_message(spec: str, torchvision_names: list[str]) -> str:
    """Why ``spec`` names no model: close matches among the zoo and torchvision, the forms."""
    zoo = registered_models()
    candidates = zoo + [n for n in torchvision_names if n not in zoo]
    close = difflib.get_close_matches(spec.lower(), candidates, n=5, cutoff=0.5)
    lines = [f"unknown model {spec!r}."]
    if close:
        lines.append(f"Did you mean: {', '.join(close)}?")
    lines.append(spec_forms())
    if spec.endswith((".pth", ".pt", ".tar", ".safetensors", ".bin")):
        lines.append("To load a weights file, give the architecture name and weights=PATH.")
    return " ".join(lines)


def cached_imagenet_weights(name: str, download: bool) -> tuple[Path | None, str | None]:
    """Find torchvision's ImageNet weights for ``name`` in the torch hub cache.

    Prefers IMAGENET1K_V1 (the classic training recipe), then the default, then other
    ImageNet-1k weights of the same input size. Returns (path or None, url of the first
    candidate). With ``download`` the first candidate is downloaded (hash checked, see
    :func:`netdissect.models.fetch.fetch_torchvision`) when none is cached.
    """
    candidates = _imagenet_candidates(name)
    if not candidates:
        return None, None
    folder = fetch.checkpoints_dir()
    for url in candidates:
        path = folder / os.path.basename(urlparse(url).path)
        if path.is_file():
            return path, url
    first = candidates[0]
    if not download:
        return None, first
    return fetch.fetch_torchvision(first), first


def _imagenet_candidates(name: str) -> list[str]:
    """The urls of torchvision's ImageNet-1k weights for ``name``, preferred first."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (KeyError, ValueError):
        return []
    members = list(enum)
    ordered = [m for m in members if m.name == "IMAGENET1K_V1"]
    ordered += [enum.DEFAULT] if enum.DEFAULT not in ordered else []
    ordered += [m for m in members if m.name.startswith("IMAGENET1K") and "SWAG" not in m.name]
    return [m.url for m in dict.fromkeys(ordered)]


def no_weights_message(name: str, url: str | None) -> str:
    """Why ``name`` was not built without weights, and the four choices, in one line."""
    folder = fetch.checkpoints_dir()
    if url:
        file = os.path.basename(urlparse(url).path)
        found = f"torchvision's ImageNet weights ({file}) are not in the torch hub cache ({folder})"
        imagenet = f"'imagenet' downloads them from {fetch.torchvision_url(url)} into {folder}"
    else:
        found = "torchvision publishes no ImageNet weights for it"
        imagenet = f"'imagenet' (not published for {name})"
    return (
        f"{name}: no weights given, and {found}. Choose the weights with --weights (API: "
        f"weights=): {imagenet}; 'places365' downloads the Places365 weights of the CSAIL "
        f"authors ({', '.join(fetch.PLACES365_ARCHS)} only); a FILE path loads a state dict "
        "(.pth/.pt/.pth.tar or .safetensors); 'random' builds seeded random weights, an "
        "untrained baseline."
    )


def _rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old DenseNet keys (``norm.1.weight``) to current ones (``norm1.weight``).

    torchvision's DenseNet ImageNet files and the Places365 DenseNet-161 use the old names.
    """
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))"
        r"\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def _num_classes_in_state(name: str, state: dict[str, torch.Tensor]) -> int | None:
    """Read the class count from the final layer's weight in ``state``, if it is there."""
    from torchvision import models as tvm

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skeleton = tvm.get_model(name, weights=None)
    final = None
    for module_name, module in skeleton.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not module_name.startswith(_AUX_HEADS):
            final = module_name
    if final is None:
        return None
    if f"{final}.weight" in state:
        return int(state[f"{final}.weight"].shape[0])
    canonical = {weights_io.strip_wrapper_names(key): key for key in state}
    key = canonical.get(f"{final}.weight")
    return int(state[key].shape[0]) if key else None


def _has_aux_heads(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds GoogLeNet/Inception auxiliary classifier weights."""
    return any(key.split(".")[0] in _AUX_HEADS for key in state)


def _drop_aux_heads(model: nn.Module) -> None:
    """Remove GoogLeNet/Inception auxiliary classifiers after their weights were loaded."""
    model.aux_logits = False
    for attr in _AUX_HEADS:
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)


def _torchvision_input_size(name: str) -> int:
    """The crop size of the model's default torchvision weights (224 when unknown)."""
    from torchvision.models import get_model_weights

    try:
        transforms = get_model_weights(name).DEFAULT.transforms
        return int(transforms.keywords.get("crop_size", 224))
    except (AttributeError, KeyError, ValueError, TypeError):
        return 224


def torchvision_layers(model: nn.Module) -> tuple[dict[str, str], list[str]]:
    """Aliases (alias -> module name) and default layer aliases of the classic families."""
    from torchvision import models as tvm

    if isinstance(model, tvm.AlexNet):
        aliases = _relu_after_conv_aliases(model.features, "features", vgg_style=False)
        return {**aliases, "features": "features"}, list(aliases)
    if isinstance(model, tvm.VGG):
        aliases = _relu_after_conv_aliases(model.features, "features", vgg_style=True)
        return {**aliases, "features": "features"}, [list(aliases)[-1]]
    if isinstance(model, tvm.ResNet):
        aliases = {"conv1": "relu"}
        aliases.update({f"layer{i}": f"layer{i}" for i in range(1, 5)})
        return aliases, ["layer4"]
    if isinstance(model, tvm.DenseNet):
        aliases = {"features": "features"}
        for child, _ in model.features.named_children():
            if child.startswith(("denseblock", "transition", "norm5")):
                aliases[child] = f"features.{child}"
        return aliases, ["features"]
    if isinstance(model, tvm.GoogLeNet):
        names = ["conv1", "conv2", "conv3"]
        names += [f"inception{s}" for s in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
        return {n: n for n in names}, ["inception5b"]
    return {}, []


def _relu_after_conv_aliases(features: nn.Module, prefix: str, vgg_style: bool) -> dict[str, str]:
    """Name each convolution's ReLU: ``conv{i}`` (AlexNet) or ``conv{block}_{i}`` (VGG)."""
    aliases: dict[str, str] = {}
    block, index, count, pending = 1, 0, 0, False
    for child_name, child in features.named_children():
        if isinstance(child, nn.Conv2d):
            index, count, pending = index + 1, count + 1, True
        elif isinstance(child, nn.ReLU) and pending:
            alias = f"conv{block}_{index}" if vgg_style else f"conv{count}"
            aliases[alias] = f"{prefix}.{child_name}"
            pending = False
        elif isinstance(child, nn.MaxPool2d):
            block, index = block + 1, 0
    return aliases
