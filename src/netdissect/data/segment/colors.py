"""The colour namer (`netdissect segment --colors`): pixels to the 11 Broden colour names.

PNAS 2020 added a colour segmenter to its concept sources; ours names colours by rule, the
same rule that makes the toy world's ground-truth colour planes (`toyworld.color_codes`), so
the namer run on a toy-world image gives exactly that image's colour plane.  As the toy world
does, it names the colours of the image averaged down to the label size (2x2 blocks for the
usual 224 -> 112; area averaging for other ratios), on 8-bit pixel values.

`ColorNamer` is a Segmenter on its own; `with_colors(segmenter)` adds its plane to another
segmenter's planes (the label numbers of the colours come after the other's labels).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from netdissect.data.segment.base import Segmenter, SegmenterLabel
from netdissect.data.segment.checks import check_planes
from netdissect.data.toyworld import COLORS, color_codes

__all__ = ["ColorNamer", "WithColors", "with_colors", "COLOR_NAMES", "resize_planes"]

#: The 11 Broden colour names, in the order of the namer's label numbers 1..11.
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)


def resize_planes(planes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, P, h, w) integer label planes resized to `size` with nearest neighbour (pixel
    centres, as PIL's NEAREST); returned as they are when they already have that size."""
    if tuple(planes.shape[-2:]) == tuple(size):
        return planes
    if planes.numel() == 0:
        return planes.new_zeros(planes.shape[:2] + tuple(size))
    # float64 holds every label number exactly; nearest-exact samples at pixel centres
    resized = F.interpolate(planes.to(torch.float64), size=tuple(size), mode="nearest-exact")
    return resized.to(planes.dtype)


class ColorNamer:
    """Names the colour of every label pixel: one plane of label numbers 1..11 (COLOR_NAMES).

    `label_size` (H, W) or a side: the size of the plane, the image averaged down to it;
    None: half the image's size (Broden's ratio of label maps to images).
    """

    name = "colors"

    def __init__(self, label_size: int | tuple[int, int] | None = None):
        self.label_size = (label_size, label_size) if isinstance(label_size, int) else label_size

    def labels(self) -> list[SegmenterLabel]:
        """The 11 colour names, category "color"."""
        return [SegmenterLabel(name, "color") for name in COLOR_NAMES]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 1, h, w) int64 colour numbers (never 0)."""
        size = self.label_size or (images.shape[-2] // 2, images.shape[-1] // 2)
        pixels = torch.round(images.detach().to("cpu", torch.float32) * 255.0)  # 8-bit values
        small = F.adaptive_avg_pool2d(pixels, size).permute(0, 2, 3, 1).numpy()
        codes = np.stack([color_codes(rgb) for rgb in small])[:, None]
        return torch.from_numpy(codes.astype(np.int64)).to(images.device)


class WithColors:
    """Another segmenter's planes plus the colour namer's plane (its numbers shifted past the
    other's labels); the other's planes are resized (nearest) to the colour plane's size."""

    def __init__(self, segmenter: Segmenter, label_size: int | tuple[int, int] | None = None):
        self.segmenter = segmenter
        self.colors = ColorNamer(label_size)
        self.name = f"{getattr(segmenter, 'name', type(segmenter).__qualname__)}+colors"
        self.weights_sha256 = getattr(segmenter, "weights_sha256", None)

    def labels(self) -> list[SegmenterLabel]:
        """The other segmenter's labels, then the 11 colours."""
        return list(self.segmenter.labels()) + self.colors.labels()

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """The other's planes (resized to the colour plane's size) and the colour plane."""
        planes = check_planes(self.segmenter.segment(images), self.segmenter, len(images))
        colors = self.colors.segment(images)
        shift = len(self.segmenter.labels())
        planes = resize_planes(planes, tuple(colors.shape[-2:]))
        return torch.cat([planes, colors.to(planes.device) + shift], dim=1)


def with_colors(segmenter: Segmenter,
                label_size: int | tuple[int, int] | None = None) -> WithColors:
    """`segmenter` with the colour namer's plane added (`--colors`); see WithColors."""
    return WithColors(segmenter, label_size)
