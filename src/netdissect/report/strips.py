"""Image strips: a unit's top images with its mask (docs/method.md section 8), as small JPEGs.

For one unit, all of its top images are processed at once with torch: the raw activation maps
are upsampled bilinearly (align_corners=False) to the image size, the mask is where the
upsampled map exceeds the unit's threshold T_k, and the overlay is `image * (0.2 + 0.8*mask)`.
The overlay, rounded to 8 bits, is then shrunk to a thumbnail (antialiased bilinear) and the
mask's outline drawn on it, one pixel wide, so the outline stays thin whatever the dataset's
image size.

Speed (a report draws one strip per unit, thousands per run): each image is decoded once per
layer and kept with its dimmed copy as packed RGBX pixels (one int32 each), so a unit's overlay
is an integer selection between the two; the maps are upsampled by two small matrix products
(`upsample`), image by image while the pixels are in the CPU's cache; the thumbnail is shrunk
from 8-bit pixels (torch's vectorised uint8 path); the mask is shrunk, outlined and drawn with
integer and boolean operations; the per-unit tensors at image size reuse buffers (fresh ones
cost page faults).  `encoded_strips` draws and encodes the strips of many units on a pool of
threads (torch and PIL release the GIL).  `thumbnails` is the same computation for any overlay,
so a strip is exactly `thumbnails(*mask_overlay(...))` of its images.
"""
from __future__ import annotations

import functools
import io
import os
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.files import confined

DIM = 0.2  # brightness kept outside the mask: image * (DIM + (1 - DIM) * mask)
OUTLINE_RGB = (255, 214, 0)
GAP = 2  # white pixels between the thumbnails of a strip

# mask_overlay's weights outside and inside the mask (float32, by its own expression) and what
# they make of each 8-bit value, rounded as thumbnails rounds the overlay (None: the value)
_WEIGHTS = DIM + (1 - DIM) * torch.tensor([False, True]).float()
_TABLES = [None if bool(weight == 1) else
           (torch.arange(256).float() * weight).round().clamp(0, 255).to(torch.uint8).numpy()
           for weight in _WEIGHTS]
_OUTLINE = int(torch.tensor((*OUTLINE_RGB, 0), dtype=torch.uint8).view(torch.int32))  # one RGBX pixel


def mask_overlay(images: torch.Tensor, maps: torch.Tensor,
                 threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlay and mask of one unit on a batch of images of one size.

    images: (n, 3, H, W) pixel values (any float range); maps: (n, h, w) raw activations.
    Returns the overlay (n, 3, H, W) float32 and the mask (n, H, W) bool, where
    mask = bilinear-upsampled map > threshold and overlay = images * (0.2 + 0.8 * mask).
    """
    size = images.shape[-2:]
    mask = _upsampled_mask(maps, size, threshold)
    overlay = images.float() * (DIM + (1 - DIM) * mask[:, None].float())
    return overlay, mask


def _upsampled_mask(maps: torch.Tensor, size, threshold: float) -> torch.Tensor:
    return upsample(maps.float(), size) > threshold


def upsample(maps: torch.Tensor, size, out: torch.Tensor | None = None) -> torch.Tensor:
    """Maps (n, h, w) float32 upsampled bilinearly (align_corners=False) to size (H, W): as
    F.interpolate up to float rounding (a few units in the last place), by two small matrix
    products per map (several times faster than F.interpolate from a 7x7 map to 224x224, and
    each map's result the same whatever the batch)."""
    rows = _bilinear_weights(maps.shape[-2], int(size[0]))
    columns = _bilinear_weights(maps.shape[-1], int(size[1])).T
    if out is None:
        out = torch.empty(maps.shape[0], int(size[0]), int(size[1]))
    for one, up in zip(maps, out):
        torch.mm(torch.mm(rows, one), columns, out=up)
    return out


@functools.lru_cache(maxsize=64)
def _bilinear_weights(source: int, target: int) -> torch.Tensor:
    """(target, source) float32: row i holds the weights of target pixel i's source pixels in
    bilinear interpolation with align_corners=False (F.interpolate's rule: the source position
    (i + 0.5) * source / target - 0.5, clamped at 0, between its two neighbours)."""
    position = ((torch.arange(target, dtype=torch.float64) + 0.5) * (source / target) - 0.5).clamp(min=0)
    low = position.floor().long().clamp(max=source - 1)
    high = (low + 1).clamp(max=source - 1)
    weights = torch.zeros(target, source, dtype=torch.float64)
    target_rows = torch.arange(target)
    weights.index_put_((target_rows, low), 1 - (position - low), accumulate=True)
    weights.index_put_((target_rows, high), position - low, accumulate=True)
    return weights.float()


def mask_outline(mask: torch.Tensor) -> torch.Tensor:
    """The inner boundary of each mask (n, H, W) bool: mask pixels with a 4- or 8-neighbour
    outside the mask.  The image border does not count as outside."""
    outside = F.pad(~mask, (1, 1, 1, 1), value=False)  # the border: not outside
    across = outside[..., :, :-2] | outside[..., :, 1:-1] | outside[..., :, 2:]
    return mask & (across[..., :-2, :] | across[..., 1:-1, :] | across[..., 2:, :])


def shrink_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Masks (n, H, W) bool shrunk to (n, height, width): a pixel is in when at least half of
    the area it covers is ('area' interpolation >= 0.5).  Counted with integers when the sizes
    divide evenly (the same answer, without floats)."""
    n, h, w = mask.shape
    fy, fx = h // height, w // width
    if fy * height == h and fx * width == w and fy * fx < 256:
        bits = mask.view(torch.uint8)
        rows = bits[:, 0::fy]
        for dy in range(1, fy):
            rows = rows + bits[:, dy::fy]
        count = rows[..., 0::fx]
        for dx in range(1, fx):
            count = count + rows[..., dx::fx]
        return count >= (fy * fx + 1) // 2  # mean >= 1/2
    return F.interpolate(mask[:, None].float(), size=(height, width), mode="area")[:, 0] >= 0.5


def _shrink_rgbx(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Packed pixels (n, H, W, 4) uint8 shrunk to (n, height, width, 4): bilinear with
    antialiasing, on the channels-last uint8 tensor (torch's vectorised path)."""
    small = F.interpolate(pixels.permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
                          align_corners=False, antialias=True)
    return small.permute(0, 2, 3, 1).contiguous()


def _thumbs(pixels: torch.Tensor, mask: torch.Tensor, height: int) -> torch.Tensor:
    """Overlays as packed pixels (n, H, W, 4) uint8 and their masks (n, H, W) bool: the
    thumbnails (n, height, width, 4) uint8 with the masks' outlines drawn."""
    h, w = mask.shape[-2:]
    width = max(1, round(w * height / h))
    small = _shrink_rgbx(pixels, height, width)
    small.view(torch.int32)[..., 0].masked_fill_(mask_outline(shrink_mask(mask, height, width)), _OUTLINE)
    return small


def thumbnails(overlay: torch.Tensor, mask: torch.Tensor, height: int) -> torch.Tensor:
    """Shrink (or grow) overlays to `height` pixels high and draw the mask's outline.

    The overlay is rounded to 8 bits, then shrunk.  Returns (n, 3, height, width) uint8,
    width keeping the aspect ratio."""
    n, _, h, w = overlay.shape
    pixels = torch.zeros(n, h, w, 4, dtype=torch.uint8)
    pixels[..., :3] = overlay.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return _thumbs(pixels, mask, height)[..., :3].permute(0, 3, 1, 2)


class StripMaker:
    """Makes the strip of one unit from its top images, reading them from `images_dir`.

    `image_names[i]` is the path (relative to images_dir) of dataset row i, as recorded in
    dissection.json.  Paths that leave images_dir are refused.  Decoded images are kept (up to
    `cache_size` images and `cache_bytes` bytes, least recently used out first; during
    `encoded_strips`, images that no later unit shows go first, so that each is decoded once
    per layer unless a layer's images in use at one time exceed the bounds).
    """

    def __init__(self, images_dir: str | os.PathLike, image_names: list[str], height: int = 112,
                 cache_size: int = 1024, quality: int = 80, cache_bytes: int = 256 << 20,
                 workers: int | None = None):
        self.images_dir = Path(images_dir)
        self.image_names = image_names
        self.height = height
        self.quality = quality
        self.workers = workers
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._bytes = 0
        self._uses: Counter | None = None  # during encoded_strips: later uses of each image
        self._lock = threading.Lock()
        self._local = threading.local()

    def _pixels(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset row `index` as packed RGBX pixels (H, W) int32: the overlay outside the mask
        (the dimmed image) and the bits that turn it into the overlay inside the mask (the
        image), so that the overlay is outside ^ (flip * mask), cheaper than torch.where
        (cached)."""
        with self._lock:
            hit = self._cache.get(index)
            if hit is not None:
                self._cache.move_to_end(index)
                return hit
        name = self.image_names[index]
        try:
            path = confined(self.images_dir, name)
        except ValueError:
            raise ValueError(f"image {name!r} (row {index}) leaves {self.images_dir}; "
                             "refusing to read it.") from None
        rgbx = _read_rgbx(path)
        outside, inside = (rgbx if table is None else np.take(table, rgbx) for table in _TABLES)
        outside = np.require(outside, requirements="W").view(np.int32)[..., 0]
        entry = (torch.from_numpy(outside), torch.from_numpy(inside.view(np.int32)[..., 0] ^ outside))
        with self._lock:
            if index in self._cache:
                return self._cache[index]
            self._cache[index] = entry
            self._bytes += 2 * entry[0].nbytes
            while len(self._cache) > 1 and (len(self._cache) > self._cache_size
                                            or self._bytes > self._cache_bytes):
                _, old = self._cache.popitem(last=False)
                self._bytes -= 2 * old[0].nbytes
        return entry

    def image(self, index: int) -> torch.Tensor:
        """Dataset row `index` as a (3, H, W) uint8 tensor."""
        outside, flip = self._pixels(index)
        inside = outside ^ flip
        return inside.view(torch.uint8).view(*inside.shape, 4)[..., :3].permute(2, 0, 1)

    def _release(self, rows: list[int]) -> None:
        """A unit's images are drawn: those no later unit shows are the first to leave."""
        with self._lock:
            if self._uses is None:
                return
            for index in rows:
                self._uses[index] -= 1
                if self._uses[index] <= 0 and index in self._cache:
                    self._cache.move_to_end(index, last=False)

    @staticmethod
    def _rows(indices: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
        """The places (among the first `count`) holding an image, and their dataset rows."""
        rows = indices.tolist()[:count]
        keep = [i for i, index in enumerate(rows) if index >= 0]
        return keep, [int(rows[i]) for i in keep]

    def _buffers(self, n: int, height: int, width: int) -> tuple[torch.Tensor, ...]:
        """This thread's tensors for n images of height x width: an upsampled map, masks,
        overlays (reused from unit to unit)."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None or buffers[1].shape != (n, height, width):
            buffers = (torch.empty(height, width), torch.empty(n, height, width, dtype=torch.bool),
                       torch.empty(n, height, width, dtype=torch.int32))
            self._local.buffers = buffers
        return buffers

    def _draw(self, keep: list[int], rows: list[int], maps: torch.Tensor,
              threshold: float) -> torch.Tensor:
        """The strip of images `rows` (with their maps maps[keep]) as RGBX pixels
        (height, width, 4) uint8."""
        pixels = [self._pixels(index) for index in rows]
        pieces: list[torch.Tensor | None] = [None] * len(rows)
        sizes: dict[tuple[int, int], list[int]] = {}
        for j, (outside, _) in enumerate(pixels):
            sizes.setdefault(tuple(outside.shape), []).append(j)
        for (h, w), group in sizes.items():  # one vectorised pass per image size (usually just one)
            up, mask, overlay = self._buffers(len(group), h, w)
            rows_weights = _bilinear_weights(maps.shape[-2], h)
            columns_weights = _bilinear_weights(maps.shape[-1], w).T
            bound = torch.tensor(threshold, dtype=torch.float32)  # as `up > threshold` compares
            for i, (j, one) in enumerate(zip(group, maps[[keep[j] for j in group]].float())):
                # image by image, while its pixels are in the CPU's cache
                torch.mm(torch.mm(rows_weights, one), columns_weights, out=up)  # as upsample()
                torch.gt(up, bound, out=mask[i])
                torch.mul(pixels[j][1], mask[i], out=overlay[i]).bitwise_xor_(pixels[j][0])
            thumbs = _thumbs(overlay.view(torch.uint8).view(len(group), h, w, 4), mask, self.height)
            for i, j in enumerate(group):
                pieces[j] = thumbs[i]
        gap = torch.full((self.height, GAP, 4), 255, dtype=torch.uint8)
        return torch.cat([part for piece in pieces for part in (gap, piece)][1:], dim=1)

    def strip(self, indices: torch.Tensor, maps: torch.Tensor, threshold: float,
              count: int = 10) -> Image.Image | None:
        """The strip of the first `count` top images (rows `indices`, -1 = none) of one unit:
        thumbnails side by side, separated by white gaps.  None when the unit has no images."""
        keep, rows = self._rows(indices, count)
        if not rows:
            return None
        return _rgbx_image(self._draw(keep, rows, maps, threshold)).convert("RGB")

    def encode(self, strip: Image.Image) -> bytes:
        """The strip as baseline JPEG bytes (the same pixels as a progressive or optimised
        JPEG, which take two to three times longer to encode)."""
        buffer = io.BytesIO()
        strip.save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()

    def _encoded(self, key, keep: list[int], rows: list[int], maps: torch.Tensor, threshold: float):
        try:
            if not rows:
                return key, None, 0, 0
            canvas = self._draw(keep, rows, maps, threshold)
            return key, self.encode(_rgbx_image(canvas)), canvas.shape[1], canvas.shape[0]
        finally:
            self._release(rows)

    def encoded_strips(self, units: Iterable[tuple[object, torch.Tensor, torch.Tensor, float]],
                       count: int = 10) -> Iterator[tuple[object, bytes | None, int, int]]:
        """The JPEG strips of many units, in their order: for each (key, indices, maps,
        threshold), yields (key, JPEG bytes or None when the unit has no images, width, height).

        Units are drawn and encoded on `workers` threads (default: the usable CPUs, at most 8),
        a few units ahead of the one yielded; each image is decoded once while a later unit
        still shows it.  Call with torch at one thread (write_report does): the threads are
        the parallelism."""
        jobs = []
        for key, indices, maps, threshold in units:
            keep, rows = self._rows(indices, count)
            jobs.append((key, keep, rows, maps, float(threshold)))
        with self._lock:
            self._uses = Counter(index for job in jobs for index in job[2])
        try:
            workers = self.workers or default_workers()
            if workers <= 1:
                for job in jobs:
                    yield self._encoded(*job)
                return
            with ThreadPoolExecutor(workers, thread_name_prefix="strips") as pool:
                pending: deque = deque()
                try:
                    for job in jobs:
                        pending.append(pool.submit(self._encoded, *job))
                        if len(pending) >= 2 * workers:
                            yield pending.popleft().result()
                    while pending:
                        yield pending.popleft().result()
                finally:
                    for future in pending:
                        future.cancel()
        finally:
            with self._lock:
                self._uses = None


def _read_rgbx(path: Path) -> np.ndarray:
    """The image at `path` as (H, W, 4) uint8 RGBX, read-only: load_rgb's pixels (and its
    error, a ValueError naming the file), in the layout the strips pack."""
    try:
        with Image.open(path) as image:
            rgbx = (image if image.mode == "RGB" else image.convert("RGB")).convert("RGBX")
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read the image ({e}).") from None
    return np.frombuffer(rgbx.tobytes(), np.uint8).reshape(rgbx.height, rgbx.width, 4)


def _rgbx_image(pixels: torch.Tensor) -> Image.Image:
    """(height, width, 4) uint8 RGBX pixels as a PIL image sharing their memory."""
    height, width = pixels.shape[:2]
    return Image.frombuffer("RGBX", (width, height), pixels.numpy(), "raw", "RGBX", 0, 1)


def default_workers() -> int:
    """Threads for drawing strips: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))
