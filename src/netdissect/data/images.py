"""The one image loader: a file as a uint8 RGB tensor, resized when asked."""
from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

__all__ = ["load_rgb", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None,
             data: bytes | None = None) -> torch.Tensor:
    """The image at `path` (or its bytes `data`, already read) as uint8 (3, H, W) RGB, resized
    bilinearly to `size` (H, W) when it differs.  ValueError naming the file when it cannot be
    read; callers add what to do."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read the image ({e}).") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
