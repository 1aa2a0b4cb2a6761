"""What a segmenter is: the one interface `netdissect segment` runs over a folder of images.

A segmenter turns images into concepts (PNAS 2020's "segment once, dissect anything"): it
names its labels, each with its Broden category, and maps a batch of images to integer label
planes.  Every source of concepts (the toy world's own segmenter, torchvision's and Hugging
Face's semantic segmentation models, the colour namer, the user's own code) implements it, and
`netdissect.data.segment.writer` turns its output into a Broden-format folder.

    class MySegmenter:
        def labels(self) -> list[SegmenterLabel]:
            return [SegmenterLabel("tree", "object"), SegmenterLabel("trunk", "part")]

        def segment(self, images: torch.Tensor) -> torch.Tensor:
            # images: (B, 3, H, W) float32 RGB in [0, 1] on `device`
            # returns (B, P, h, w) int64: 0 = no label, n = labels()[n - 1]
            ...

A plane may mix categories (one plane of ADE20K's 150 classes holds objects and parts): the
writer splits it by category.  Planes may have any size; the writer resizes them (nearest) to
the dataset's label size.  A label number outside 0..len(labels()) is an error that names the
segmenter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

__all__ = ["SegmenterLabel", "Segmenter", "PIXEL_CATEGORIES"]

#: The pixel categories of Broden a segmenter's labels may belong to.
PIXEL_CATEGORIES = ("color", "object", "part", "material")


@dataclass(frozen=True)
class SegmenterLabel:
    """One label of a segmenter: its Broden name and category ("object", "part", ...)."""

    name: str
    category: str


@runtime_checkable
class Segmenter(Protocol):
    """Images to label planes; see the module docstring."""

    def labels(self) -> list[SegmenterLabel]:
        """The segmenter's labels; label number n in its planes is labels()[n - 1]."""
        ...

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 RGB in [0, 1] -> (B, P, h, w) int64 label numbers (0 = none)."""
        ...
