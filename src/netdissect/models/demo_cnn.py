"""The demo CNN: a small VGG-like network trained only on the toy world's scene labels.

It is what `netdissect demo` dissects: trained to classify toy-world scenes (street, park,
forest, harbor, bedroom, kitchen), its top layer grows units that detect the objects and parts
that tell those scenes apart, which Network Dissection then finds without being told.

Architecture, for 224x224 input: five stages `conv1`..`conv5`, each an `nn.Sequential` of
(max-pool,) 3x3 convolution and ReLU, no batch normalisation; `conv1` has stride 2, stages 2-4
start with a 2x2 max-pool, so `conv5` is 256 channels at 14x14; then a `head` (2x2 max-pool,
3x3 convolution to 256 channels at 7x7, ReLU), global average pooling (`pool`), dropout 0.3 in
training and a linear classifier (`fc`).  About 1.1M parameters (4.5 MB of float32).  The
dissected layers are `conv1`..`conv5`; `head` plays the part of AlexNet's fc6: without it
`conv5` would be the layer right before the classifier, and trained on six classes its 256
units collapse onto a handful of class directions (7 principal components hold 90% of the
variance; see docs/method.md section 10), so a random rotation of them is as interpretable as
the units themselves.  Metadata without `head_width` (weights of the first demo CNN, which
had no head) builds the network without it.

The trained weights ship in `netdissect/assets/demo_cnn.pt` (a state dict, loadable with
`torch.load(..., weights_only=True)`) next to `demo_cnn.json` (class names, input
normalisation, the toy world and the accuracies of the training run); `train_demo.py`
reproduces them.  The input normalisation is ImageNet's (`MEAN`, `STD`; docs/method.md
section 3).  In the zoo the model is `demo_cnn` (`netdissect.models.builders.demo`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from netdissect.models.preprocess import IMAGENET_MEAN as MEAN
from netdissect.models.preprocess import IMAGENET_STD as STD
from netdissect.models.weights import load_weights

__all__ = ["DemoCNN", "load_demo_cnn", "new_demo_cnn", "demo_cnn_metadata", "ASSETS", "WEIGHTS",
           "METADATA", "MEAN", "STD", "WIDTHS", "HEAD_WIDTH", "DROPOUT", "LAYERS"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WEIGHTS = ASSETS / "demo_cnn.pt"
METADATA = ASSETS / "demo_cnn.json"
WIDTHS = (32, 64, 128, 128, 256)
HEAD_WIDTH = 256
DROPOUT = 0.3
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _stage(in_channels: int, out_channels: int, pool: bool, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    layers += [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
               nn.ReLU(inplace=False)]
    return nn.Sequential(*layers)


class DemoCNN(nn.Module):
    """A five-stage VGG-like scene classifier; `conv1`..`conv5` are the layers to dissect.

    `head_width` 0 leaves out the head (the first demo CNN's shape: `conv5` feeds the pool).
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = WIDTHS,
                 head_width: int = HEAD_WIDTH, dropout: float = DROPOUT):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.conv1 = _stage(3, w1, pool=False, stride=2)   # 112x112 for a 224 input
        self.conv2 = _stage(w1, w2, pool=True)             # 56x56
        self.conv3 = _stage(w2, w3, pool=True)             # 28x28
        self.conv4 = _stage(w3, w4, pool=True)             # 14x14
        self.conv5 = _stage(w4, w5, pool=False)            # 14x14
        self.head = _stage(w5, head_width, pool=True) if head_width else nn.Identity()  # 7x7
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_width or w5, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) of normalised images (N, 3, H, W); any H, W >= 32."""
        for name in LAYERS:
            x = getattr(self, name)(x)
        return self.fc(self.dropout(torch.flatten(self.pool(self.head(x)), 1)))


def demo_cnn_metadata(path: str | os.PathLike | None = None) -> dict:
    """The metadata stored with the demo weights: class names, mean/std, training record."""
    path = Path(path) if path is not None else METADATA
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: demo CNN metadata missing; reinstall netdissect or "
                                "retrain with `python -m netdissect.train_demo`.") from None


def new_demo_cnn(meta: dict) -> DemoCNN:
    """An untrained demo CNN shaped by the weights' metadata, in eval mode.

    The model carries `class_names` (scene label names, index = output unit), `mean` and
    `std` (input normalisation on 0-1 RGB) from the metadata.
    """
    model = DemoCNN(len(meta["class_names"]), tuple(meta.get("widths", WIDTHS)),
                    head_width=meta.get("head_width", 0))
    model.class_names = list(meta["class_names"])
    model.mean = tuple(meta.get("mean", MEAN))
    model.std = tuple(meta.get("std", STD))
    return model.eval()


def load_demo_cnn(pretrained: bool = True, weights: str | os.PathLike | None = None) -> DemoCNN:
    """The demo CNN in eval mode, with the shipped (or given) trained weights if `pretrained`.

    `weights` is a state-dict file written by `train_demo`; its metadata is read from the
    .json file of the same name (see `new_demo_cnn` for what the model carries).  The file is
    loaded through the one weight-loading path, `netdissect.models.weights.load_weights`.
    """
    path = Path(weights) if weights is not None else WEIGHTS
    model = new_demo_cnn(demo_cnn_metadata(path.with_suffix(".json")))
    if pretrained:
        load_weights(model, path)
    return model
