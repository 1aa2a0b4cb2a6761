"""Units' maps upsampled to the label resolution (docs/method.md section 5), in bounded chunks.

Both the PNAS threshold (a quantile of the upsampled values) and the tally (upsampled maps
above T_k) need the maps at the label size, bilinearly upsampled with align_corners=False.
A bilinear value is a convex combination of the map's values, so a map whose maximum is below
a bound has no upsampled value above it: such maps are never upsampled.  The margin covers
float rounding of the interpolation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["upsampled_maps", "CHUNK_PIXELS", "ROUNDING_MARGIN"]

# Upsample at most this many label-map pixels at once (bounds the batch's working memory).
CHUNK_PIXELS = 1 << 24
# Relative margin on a map's maximum when deciding whether its upsampled map can reach a bound.
ROUNDING_MARGIN = 1e-5


def upsampled_maps(activations: torch.Tensor, bounds: torch.Tensor, size: tuple[int, int],
                   device: torch.device | str):
    """The maps of one batch that can reach `bounds` (per unit), upsampled to `size`, in
    chunks: yields (b, k, values) where values[i] (sh*sw float32, on `device`) is unit k[i]'s
    map of image b[i].  activations (B, units, h, w); bounds (units,), -inf to take all."""
    sh, sw = size
    bounds = bounds.to(device)
    maxima = activations.amax(dim=(2, 3)).to(device)
    margin = ROUNDING_MARGIN * maxima.abs()
    b_sel, k_sel = torch.nonzero(maxima + margin >= bounds[None], as_tuple=True)
    per_chunk = max(1, CHUNK_PIXELS // (sh * sw))
    for start in range(0, len(b_sel), per_chunk):
        b, k = b_sel[start:start + per_chunk], k_sel[start:start + per_chunk]
        maps = activations[b.to(activations.device), k.to(activations.device)]
        maps = maps.to(device=device, dtype=torch.float32)[:, None]
        up = F.interpolate(maps, size=(sh, sw), mode="bilinear", align_corners=False)
        yield b, k, up.reshape(len(b), sh * sw)
