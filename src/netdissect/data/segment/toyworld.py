"""The toy world's own segmenter: a small U-Net that labels objects, parts and materials.

It is the embedded default of `netdissect segment`: trained on the ground truth the toy world
draws (`netdissect.data.toyworld`), it turns any folder of toy-world-like images into a
Broden-format dataset without the original label planes, which makes "segment once, dissect
anything" testable end to end on a laptop.  Colour labels are not its job (a rule names them).

Labels (`ToyWorldSegmenter.labels()`, label number n = position + 1): the toy world's OBJECTS
(category "object"), PARTS ("part") and MATERIALS ("material") in the toy world's order; grass
and water are both an object and a material and are listed once per category.  `segment`
returns four planes at half the input resolution, like the toy world's label planes:

    plane 0  objects
    plane 1  parts (level 1: a window pane is labelled "window" here, a wheel rim "wheel")
    plane 2  parts of parts (level 2: "pane" and "rim" only)
    plane 3  materials

0 means no label; full-frame texture images get 0 everywhere.

Architecture (`ToyWorldSegNet`): the RGB input is folded losslessly to half resolution
(`PixelUnshuffle(2)`: 12 channels at H/2, the resolution of the output, so thin parts one or
two label pixels wide stay visible), then a four-level encoder (H/2 .. H/16, 3x3 convolutions
with batch normalisation and ReLU), a bottleneck with a dilated convolution and a global
context vector (the pooled image, which tells texture images from scenes), and a decoder with
skip connections back to H/2, where three 1x1 heads give logits for objects (1 + 17), parts
(1 + 20: pane and rim are classes of their own, their level-1 part is implied) and materials
(1 + 10).  Input height and width are padded to multiples of 16 internally.

The trained weights ship in `netdissect/assets/toyworld_segmenter.pt` (a state dict) with
`toyworld_segmenter.json` (labels, widths, training record, IoU on a fresh world);
`netdissect.data.segment.train` reproduces them (`netdissect train-segmenter`).  A copy
fine-tuned on renders area-averaged to 64x64 (the toy GAN's images, which the full-size
segmenter labels poorly) ships as `toyworld_segmenter64.{pt,json}` (segmenter spec
`toyworld64`, `netdissect finetune-segmenter`); its metadata's `input_size` makes
`segment` resize every image to that side first and the planes back to half the image.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from netdissect.data import toyworld as tw
from netdissect.data.segment.base import SegmenterLabel
from netdissect.data.segment.colors import resize_planes
from netdissect.errors import SettingsError, WeightsError
from netdissect.models.weights import load_weights, read_metadata

__all__ = ["ToyWorldSegNet", "ToyWorldSegmenter", "load_toyworld_segmenter",
           "toyworld_segmenter_metadata", "segmenter_labels", "HEADS", "HEAD_CLASSES", "WIDTHS",
           "WEIGHTS", "METADATA", "WEIGHTS_64", "PLANES", "head_targets", "label_planes"]

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
WEIGHTS = ASSETS / "toyworld_segmenter.pt"
METADATA = ASSETS / "toyworld_segmenter.json"
WEIGHTS_64 = ASSETS / "toyworld_segmenter64.pt"

#: Channel widths of the encoder levels (H/2, H/4, H/8, H/16).
WIDTHS = (24, 40, 80, 128)
#: The output heads and the toy-world names of their classes (class 0 of each is "no label").
HEAD_CLASSES: dict[str, list[str]] = {"object": list(tw.OBJECTS), "part": list(tw.PARTS),
                                      "material": list(tw.MATERIALS)}
HEADS = tuple(HEAD_CLASSES)
#: What the planes returned by `ToyWorldSegmenter.segment` hold.
PLANES = ("object", "part", "part2", "material")
#: Parts of parts (toy world part level 2) and the level-1 part they belong to.
PART2_PARENT = {"pane": "window", "rim": "wheel"}
_MEAN, _STD = 0.5, 0.25
_STRIDE = 16


def segmenter_labels() -> list[SegmenterLabel]:
    """The labels of the toy-world segmenter: objects, parts, materials in toy-world order."""
    return [SegmenterLabel(name, category) for category in HEADS
            for name in HEAD_CLASSES[category]]


def _label_numbers() -> dict[tuple[str, str], int]:
    return {(lab.category, lab.name): n for n, lab in enumerate(segmenter_labels(), start=1)}


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1,
          kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride,
                                   padding=dilation * (kernel // 2), dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ToyWorldSegNet(nn.Module):
    """A small U-Net from RGB in [0, 1] (B, 3, H, W) to logits at (H/2, W/2); see the module doc.

    `forward` returns the logits of the three heads concatenated along channels, in the order
    of `HEADS` (sizes 1 + len(HEAD_CLASSES[head])); H and W must be multiples of 16.
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.fold = nn.PixelUnshuffle(2)
        self.enc1 = _conv(12, w1)                                               # H/2
        self.enc2 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))              # H/4
        self.enc3 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3))              # H/8
        self.enc4 = nn.Sequential(_conv(w3, w4, 2), _conv(w4, w4, dilation=2))  # H/16
        self.context = nn.Sequential(nn.Conv2d(w4, w4 // 4, 1), nn.ReLU(inplace=True))
        self.dec3 = nn.Sequential(_conv(w4 + w4 // 4 + w3, w3, kernel=1), _conv(w3, w3))
        self.dec2 = nn.Sequential(_conv(w3 + w2, w2, kernel=1), _conv(w2, w2))
        self.dec1 = nn.Sequential(_conv(w2 + w1, w1, kernel=1), _conv(w1, w1))
        self.sizes = [1 + len(HEAD_CLASSES[h]) for h in HEADS]
        self.head = nn.Conv2d(w1, sum(self.sizes), 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, sum(self.sizes), H/2, W/2) of images (B, 3, H, W) in [0, 1]."""
        x1 = self.enc1(self.fold((x - _MEAN) / _STD))
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        x4 = self.enc4(x3)
        glob = self.context(x4.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x4.shape[-2:])
        y = self.dec3(torch.cat([self._up(torch.cat([x4, glob], 1), x3), x3], 1))
        y = self.dec2(torch.cat([self._up(y, x2), x2], 1))
        y = self.dec1(torch.cat([self._up(y, x1), x1], 1))
        return self.head(y)

    def split(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The logits of `forward` per head: {"object": (B, 18, h, w), "part": ..., ...}."""
        return dict(zip(HEADS, torch.split(logits, self.sizes, dim=1)))


def _lookups() -> dict[str, torch.Tensor]:
    """Head class -> segmenter label number, per output plane (int64 lookup tables)."""
    numbers = _label_numbers()
    luts = {}
    for plane, head in (("object", "object"), ("part", "part"), ("part2", "part"),
                        ("material", "material")):
        lut = torch.zeros(1 + len(HEAD_CLASSES[head]), dtype=torch.int64)
        for k, name in enumerate(HEAD_CLASSES[head], start=1):
            if plane == "part":
                name = PART2_PARENT.get(name, name)
            elif plane == "part2" and name not in PART2_PARENT:
                continue
            lut[k] = numbers[(head, name)]
        luts[plane] = lut
    return luts


def head_targets(image: tw.RenderedImage) -> torch.Tensor:
    """The training targets of a rendered toy-world image: (3, 112, 112) uint8 head classes.

    Planes in `HEADS` order; a part of a part (pane, rim) overrides its level-1 part, and a
    texture image gets class 0 everywhere.
    """
    out = torch.zeros(len(HEADS), tw.LABEL_SIZE, tw.LABEL_SIZE, dtype=torch.uint8)
    for i, head in enumerate(HEADS):
        lut = torch.zeros(tw.NUM_LABELS + 1, dtype=torch.uint8)
        for k, name in enumerate(HEAD_CLASSES[head], start=1):
            lut[tw.LABELS[name]] = k
        for plane in image.planes.get(head, []):
            plane = torch.from_numpy(plane.astype("int64"))
            out[i] = torch.where(plane > 0, lut[plane], out[i])
    return out


def label_planes(image: tw.RenderedImage) -> torch.Tensor:
    """The ground truth of a rendered toy-world image as the segmenter's output would be.

    (4, 112, 112) int64 segmenter label numbers in the order of `PLANES` (objects, level-1
    parts, level-2 parts, materials); all 0 for a texture image.
    """
    numbers = _label_numbers()
    out = torch.zeros(len(PLANES), tw.LABEL_SIZE, tw.LABEL_SIZE, dtype=torch.int64)
    for i, (plane_name, category, level) in enumerate((("object", "object", 0),
                                                        ("part", "part", 0),
                                                        ("part2", "part", 1),
                                                        ("material", "material", 0))):
        planes = image.planes.get(category, [])
        if level >= len(planes):
            continue
        lut = torch.zeros(tw.NUM_LABELS + 1, dtype=torch.int64)
        for name in HEAD_CLASSES[category]:
            lut[tw.LABELS[name]] = numbers[(category, name)]
        out[i] = lut[torch.from_numpy(planes[level].astype("int64"))]
    return out


class ToyWorldSegmenter:
    """The Segmenter (netdissect.data.segment.base) of the toy world, around a `ToyWorldSegNet`.

    `segment` accepts any image size (it pads to multiples of 16 and crops the output back)
    and returns planes of ceil(H/2) x ceil(W/2) on the device of the model; `batch_size`
    bounds how many images go through the network at once.  With `input_size` (a model
    trained at that side) images are first resized to input_size x input_size (area
    averaging down, bilinear up) and the planes resized back (nearest neighbour).
    """

    def __init__(self, model: ToyWorldSegNet, device: str | torch.device = "cpu",
                 batch_size: int = 32, input_size: int | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.input_size = input_size
        self._labels = segmenter_labels()
        self._luts = {k: v.to(self.device) for k, v in _lookups().items()}

    def labels(self) -> list[SegmenterLabel]:
        """Objects, parts and materials of the toy world; number n is labels()[n - 1]."""
        return list(self._labels)

    def _check(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise SettingsError(f"toyworld segmenter: expected images of shape (B, 3, H, W), got "
                                f"{shape}; stack RGB images into one batch tensor.")
        if not images.is_floating_point():
            raise SettingsError(f"toyworld segmenter: expected float RGB in [0, 1], got "
                                f"{images.dtype}; divide uint8 images by 255.")
        if images.shape[-1] < 2 or images.shape[-2] < 2:
            raise SettingsError(f"toyworld segmenter: images of {tuple(images.shape[-2:])} "
                                "pixels are too small; give at least 2x2 pixels.")

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head logits at ceil(H/2) x ceil(W/2) of (B, 3, H, W) images in [0, 1] (at
        input_size/2 when the segmenter has an `input_size`)."""
        self._check(images)
        x = images.to(self.device, torch.float32)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size,) * 2:
            side = (self.input_size, self.input_size)
            down = x.shape[-2] >= self.input_size and x.shape[-1] >= self.input_size
            x = (F.interpolate(x, size=side, mode="area") if down else
                 F.interpolate(x, size=side, mode="bilinear", align_corners=False).clamp(0, 1))
        h, w = x.shape[-2:]
        ph, pw = (-h) % _STRIDE, (-w) % _STRIDE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.model(x)[..., :(h + 1) // 2, :(w + 1) // 2]
        return self.model.split(out)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float RGB in [0, 1] -> (B, 4, ceil(H/2), ceil(W/2)) int64 label numbers.

        Planes: objects, parts, parts of parts, materials (see the module docstring).
        """
        self._check(images)
        was_training = self.model.training
        self.model.eval()
        try:
            chunks = []
            for start in range(0, len(images), self.batch_size):
                heads = self.logits(images[start:start + self.batch_size])
                obj = heads["object"].argmax(1)
                part = heads["part"].argmax(1)
                mat = heads["material"].argmax(1)
                planes = torch.stack([self._luts["object"][obj], self._luts["part"][part],
                                      self._luts["part2"][part], self._luts["material"][mat]],
                                     dim=1)
                h, w = images.shape[-2:]
                chunks.append(resize_planes(planes, ((h + 1) // 2, (w + 1) // 2)))
        finally:
            self.model.train(was_training)
        if not chunks:
            h, w = images.shape[-2:]
            return torch.zeros(0, len(PLANES), (h + 1) // 2, (w + 1) // 2, dtype=torch.int64,
                               device=self.device)
        return torch.cat(chunks)


def toyworld_segmenter_metadata(path: str | os.PathLike | None = None) -> dict:
    """The metadata stored with the segmenter's weights: labels, widths, training, IoU."""
    return read_metadata(path if path is not None else METADATA, "toyworld segmenter",
                         "netdissect train-segmenter")


def load_toyworld_segmenter(device: str | torch.device = "cpu",
                            weights: str | os.PathLike | None = None) -> ToyWorldSegmenter:
    """The trained toy-world segmenter on `device`, from the shipped (or given) weights.

    `weights` is a state-dict file written by `train_segmenter`, with its metadata in the
    .json file of the same name; the labels recorded there must be this version's labels.
    """
    path = Path(weights) if weights is not None else WEIGHTS
    meta = toyworld_segmenter_metadata(path.with_suffix(".json"))
    expected = [[lab.name, lab.category] for lab in segmenter_labels()]
    if meta.get("labels") != expected:
        raise WeightsError(f"{path}: its labels differ from this version's toy world labels; "
                           "retrain with `netdissect train-segmenter`.")
    model = ToyWorldSegNet(tuple(meta.get("widths", WIDTHS)))
    load_weights(model, path)
    return ToyWorldSegmenter(model, device=device, input_size=meta.get("input_size"))
