"""Image strips: a unit's top images with its mask (docs/method.md section 8), as small JPEGs.

For one unit, all of its top images are processed at once with torch: the raw activation maps
are upsampled bilinearly (align_corners=False) to the image size, the mask is where the
upsampled map exceeds the unit's threshold T_k, and the overlay is `image * (0.2 + 0.8*mask)`.
The overlay is then shrunk to a thumbnail and the mask's outline drawn on it, one pixel wide,
so the outline stays thin whatever the dataset's image size.  Only the top images are read
from the dataset folder; a small cache keeps images shared by several units.
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.data.images import load_rgb
from netdissect.files import confined

DIM = 0.2  # brightness kept outside the mask: image * (DIM + (1 - DIM) * mask)
OUTLINE_RGB = (255, 214, 0)
GAP = 2  # white pixels between the thumbnails of a strip


def mask_overlay(images: torch.Tensor, maps: torch.Tensor,
                 threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlay and mask of one unit on a batch of images of one size.

    images: (n, 3, H, W) pixel values (any float range); maps: (n, h, w) raw activations.
    Returns the overlay (n, 3, H, W) float32 and the mask (n, H, W) bool, where
    mask = bilinear-upsampled map > threshold and overlay = images * (0.2 + 0.8 * mask).
    """
    size = images.shape[-2:]
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    mask = up > threshold
    overlay = images.float() * (DIM + (1 - DIM) * mask[:, None].float())
    return overlay, mask


def mask_outline(mask: torch.Tensor) -> torch.Tensor:
    """The inner boundary of each mask (n, H, W) bool: mask pixels with a 4- or 8-neighbour
    outside the mask.  The image border does not count as outside."""
    m = mask[:, None].float()
    eroded = -F.max_pool2d(-m, kernel_size=3, stride=1, padding=1)
    return (mask & (eroded[:, 0] < 0.5))


def thumbnails(overlay: torch.Tensor, mask: torch.Tensor, height: int) -> torch.Tensor:
    """Shrink (or grow) overlays to `height` pixels high and draw the mask's outline.

    Returns (n, 3, height, width) uint8, width keeping the aspect ratio."""
    h, w = overlay.shape[-2:]
    width = max(1, round(w * height / h))
    small = F.interpolate(overlay, size=(height, width), mode="bilinear", align_corners=False,
                          antialias=True)
    small_mask = F.interpolate(mask[:, None].float(), size=(height, width), mode="area")[:, 0] >= 0.5
    edge = mask_outline(small_mask)[:, None]
    colour = torch.tensor(OUTLINE_RGB, dtype=small.dtype)[None, :, None, None]
    small = torch.where(edge, colour, small)
    return small.round().clamp(0, 255).to(torch.uint8)


class StripMaker:
    """Makes the strip of one unit from its top images, reading them from `images_dir`.

    `image_names[i]` is the path (relative to images_dir) of dataset row i, as recorded in
    dissection.json.  Paths that leave images_dir are refused.
    """

    def __init__(self, images_dir: str | os.PathLike, image_names: list[str], height: int = 112,
                 cache_size: int = 1024, quality: int = 80):
        self.images_dir = Path(images_dir)
        self.image_names = image_names
        self.height = height
        self.quality = quality
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def image(self, index: int) -> torch.Tensor:
        """Dataset row `index` as a (3, H, W) uint8 tensor (cached)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        name = self.image_names[index]
        try:
            path = confined(self.images_dir, name)
        except ValueError:
            raise ValueError(f"image {name!r} (row {index}) leaves {self.images_dir}; refusing to read it.") from None
        pixels = load_rgb(path)
        self._cache[index] = pixels
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return pixels

    def strip(self, indices: torch.Tensor, maps: torch.Tensor, threshold: float,
              count: int = 10) -> Image.Image | None:
        """The strip of the first `count` top images (rows `indices`, -1 = none) of one unit:
        thumbnails side by side, separated by white gaps.  None when the unit has no images."""
        keep = [i for i, index in enumerate(indices.tolist()[:count]) if index >= 0]
        if not keep:
            return None
        images = [self.image(int(indices[i])) for i in keep]
        pieces: list[torch.Tensor | None] = [None] * len(keep)
        sizes: dict[tuple[int, int], list[int]] = {}
        for j, img in enumerate(images):
            sizes.setdefault(tuple(img.shape[-2:]), []).append(j)
        for group in sizes.values():  # one vectorised pass per image size (usually just one)
            batch = torch.stack([images[j] for j in group])
            overlay, mask = mask_overlay(batch, maps[[keep[j] for j in group]], threshold)
            for j, thumb in zip(group, thumbnails(overlay, mask, self.height)):
                pieces[j] = thumb
        width = sum(p.shape[-1] for p in pieces) + GAP * (len(pieces) - 1)
        canvas = torch.full((3, self.height, width), 255, dtype=torch.uint8)
        x = 0
        for p in pieces:
            canvas[:, :, x:x + p.shape[-1]] = p
            x += p.shape[-1] + GAP
        return Image.fromarray(canvas.permute(1, 2, 0).numpy())

    def encode(self, strip: Image.Image) -> bytes:
        """The strip as JPEG bytes (progressive, optimised)."""
        buffer = io.BytesIO()
        strip.save(buffer, format="JPEG", quality=self.quality, optimize=True, progressive=True)
        return buffer.getvalue()
