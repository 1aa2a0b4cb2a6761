"""A planted generator and a colour-rule segmenter for tests/test_gan.py.

PlantedGenerator maps a latent z (B x 8) to 32 x 32 images through the layer `features`
(B x 6 x 8 x 8): unit 3 is 2 * relu(z0) on the cells rows 2-3, columns 2-3 (region A), unit 1
is relu(z0) on rows 2-3, column 4 (region B); units 0, 2, 4, 5 are |z_j| + 0.1 on rows 6-7,
columns 0-1 (region C).  `render` paints a cell pure red where units 1 + 3 are above 0 and
grey elsewhere (4 x 4 pixels per cell; outputs in [-1, 1]).  So red appears exactly on A and
B in the samples whose z0 > 0, unit 3 draws 4 cells of it and unit 1 draws 2, and no other
unit changes the image.  RedSegmenter labels red pixels "red-thing".
"""
from __future__ import annotations

import torch
from torch import nn

from netdissect.data.segment import SegmenterLabel

PLANTED = (1, 3)
CELLS = {3: 4, 1: 2}  # red cells each planted unit draws


def region(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(8, 8)
    mask[rows, cols] = 1
    return mask


class Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("a", region(slice(2, 4), slice(2, 4)))
        self.register_buffer("b", region(slice(2, 4), slice(4, 5)))
        self.register_buffer("c", region(slice(6, 8), slice(0, 2)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)
        on = torch.relu(z[:, 0])[:, None, None]
        other = (z[:, 2:6].abs() + 0.1)[:, :, None, None] * self.c
        units = [other[:, 0], on * self.b, other[:, 1], 2 * on * self.a, other[:, 2], other[:, 3]]
        return torch.stack(units, 1)


class Render(nn.Module):
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        on = (feats[:, 3] + feats[:, 1] > 0).float()[:, None]
        on = nn.functional.interpolate(on, scale_factor=4, mode="nearest")
        red = torch.tensor([1.0, -1.0, -1.0], device=feats.device).view(1, 3, 1, 1)
        return on * red  # grey (0) elsewhere


class PlantedGenerator(nn.Module):
    z_dim = 8

    def __init__(self):
        super().__init__()
        self.features = Features()
        self.render = Render()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(self.features(z))


class Planted4d(PlantedGenerator):
    """The same generator taking B x Z x 1 x 1 latents only."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4:
            raise ValueError("expected B x Z x 1 x 1 latents")
        return super().forward(z)


class NoZDim(nn.Module):
    """A generator without a z_dim attribute."""

    def __init__(self):
        super().__init__()
        self.inner = PlantedGenerator()

    def forward(self, z):
        return self.inner(z)


class RedSegmenter:
    """Red pixels (R > 0.75, G and B < 0.25) are "red-thing"; nothing else is labelled."""

    def labels(self) -> list[SegmenterLabel]:
        return [SegmenterLabel("red-thing", "object")]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        r, g, b = images[:, 0], images[:, 1], images[:, 2]
        return ((r > 0.75) & (g < 0.25) & (b < 0.25)).long()[:, None]
