"""``timm:NAME`` specs: any timm model (an optional dependency: pip install timm).

Pretrained weights come only from an explicit weights file (nothing is downloaded); without one
the model is randomly initialised with a RandomWeightsWarning.  The normalisation and input
size are the model's own (its ``pretrained_cfg``), recorded as preset ``timm``
(docs/method.md section 3).  Aliases are the modules of ``feature_info``; the last one is the
default layer when it outputs spatial maps (not transformer tokens).
"""
from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from types import ModuleType

from torch import nn

from netdissect.errors import ModelError
from netdissect.models import weights as weights_io
from netdissect.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import RANDOM_WEIGHTS, RandomWeightsWarning

from .common import disable_inplace, has_submodule, output_is_spatial

__all__ = ["build_timm"]


def build_timm(weights: str | None = None, *, name: str, **_options) -> Probe:
    """The timm model ``name`` with the weights file ``weights`` (or random initialisation)."""
    timm = _import_timm(name)
    path = None if weights in (None, RANDOM_WEIGHTS) else Path(weights)
    state = weights_io.read_state_dict(path) if path is not None else None
    model = timm.create_model(name, pretrained=False)
    head = model.pretrained_cfg.get("classifier")
    if state is not None and isinstance(head, str) and f"{head}.weight" in state:
        num_classes = int(state[f"{head}.weight"].shape[0])
        if num_classes != model.num_classes:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    loaded = weights_io.load_weights(model, path, state=state) if path is not None else None
    if weights is None:
        warnings.warn(
            f"timm:{name}: no weights given, so the model is RANDOMLY initialised. Pass "
            "weights=PATH with its state dict (.pth or .safetensors), or weights='random'.",
            RandomWeightsWarning, stacklevel=4)
    disable_inplace(model)
    return _probe(timm, name, model, loaded)


def _import_timm(name: str) -> ModuleType:
    """timm itself, checked to know ``name``; ModelError with the fix otherwise."""
    try:
        import timm
    except ImportError as err:
        raise ModelError(
            f"'timm:{name}' needs the timm package: pip install 'netdissect[timm]' "
            "(or pip install timm)."
        ) from err
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelError(f"timm has no model {name!r}.{hint}")
    return timm


def _probe(timm: ModuleType, name: str, model: nn.Module, loaded: dict | None) -> Probe:
    """The Probe of a built timm model: its own normalisation, size, feature layers."""
    cfg = model.pretrained_cfg
    size = int(cfg["input_size"][-1]) if cfg.get("input_size") else None
    aliases = {}
    for entry in getattr(model, "feature_info", None) or []:
        module = entry.get("module") if isinstance(entry, dict) else None
        if module and has_submodule(model, module):
            aliases[module] = module
    default_layers: list[str] = []
    if aliases:
        last = list(aliases)[-1]
        factory = lambda: timm.create_model(name, pretrained=False)  # noqa: E731
        if output_is_spatial(factory, last, size or 224):
            default_layers = [last]
    preprocess = Preprocess(tuple(cfg.get("mean", IMAGENET_MEAN)),
                            tuple(cfg.get("std", IMAGENET_STD)), size, "timm")
    return Probe(model, preprocess=preprocess, name=f"timm:{name}", aliases=aliases,
                 default_layers=default_layers, weights=loaded["path"] if loaded else None,
                 weights_fingerprint=loaded["sha256"] if loaded else "")
