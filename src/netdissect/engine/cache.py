"""The on-disk activation cache: pass 1's layer outputs and label maps, read back by pass 2.

Pass 2 needs every layer output again.  Writing them to disk in pass 1 and reading them back
is cheaper than running the model again when the model is slow for its output size; `decide`
measures that on the first batch.  The decoded label planes and image-level labels go to the
cache too (`LabelLayout`), so pass 2 reads no file of the dataset at all: each label PNG is
decoded once.  When the layer outputs are not worth caching (too large, or the model is
faster than the disk) the labels alone are, if they fit: pass 2 then runs the model on the
images but still decodes no label file.  One file per stream (a layer, the planes, the image
labels), in batch order; a saved state records how many bytes each file held, so a resumed
run cuts the files back to it.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netdissect.errors import DissectError

__all__ = ["ActivationCache", "LabelLayout", "decide", "CACHE_BYTES_PER_SECOND"]

# Writing a float32 activation to the cache in pass 1 and reading it back in pass 2 costs
# about this much (measured on a 2-core machine with an SSD); a model that computes its
# activations faster than this is simply run again in pass 2.
CACHE_BYTES_PER_SECOND = 300e6
# The names of the label streams.
PLANES, IMAGE_LABELS = "planes", "image-labels"


@dataclass(frozen=True)
class LabelLayout:
    """How one image's labels are stored: `planes` planes of `size` pixels and `width`
    image-level labels, zero-padded, as `dtype` (uint16 when every label number fits)."""

    planes: int
    size: tuple[int, int]
    width: int
    dtype: str

    @classmethod
    def of(cls, broden) -> "LabelLayout":
        rows = broden.rows
        return cls(max((len(r.planes) for r in rows), default=0), tuple(broden.label_size),
                   max((len(r.image_labels) for r in rows), default=0),
                   "uint16" if len(broden.label_names) <= 65536 else "int32")

    def bytes_per_image(self) -> int:
        return (self.planes * self.size[0] * self.size[1] + self.width) * np.dtype(self.dtype).itemsize


class ActivationCache:
    """A file per stream (each layer's outputs, float32; with a `LabelLayout`, the label
    planes and image labels) in batch order, read back batch by batch."""

    def __init__(self, folder: Path, layers: list[str], sizes: dict[str, int] | None = None,
                 labels: LabelLayout | None = None):
        self.folder = folder
        self.labels = labels
        self.layers = list(layers)  # [] for a cache of the labels alone
        folder.mkdir(parents=True, exist_ok=True)
        streams = _streams(folder, layers, labels)
        self.paths = {name: path for name, (path, _) in streams.items()}
        self.dtypes = {name: dtype for name, (_, dtype) in streams.items()}
        for name, path in self.paths.items():  # drop what was written after the saved state
            with open(path, "ab") as f:
                f.truncate((sizes or {}).get(name, 0))
        self.files = {name: open(path, "ab") for name, path in self.paths.items()}

    @property
    def holds_activations(self) -> bool:
        """Whether the layer outputs are cached (else only the labels are)."""
        return bool(self.layers)

    def write(self, name: str, acts: torch.Tensor) -> None:
        data = acts.detach().cpu().contiguous().numpy().astype(self.dtypes[name], copy=False)
        self.files[name].write(data.tobytes())

    def write_labels(self, planes: torch.Tensor, image_labels: torch.Tensor) -> None:
        """One batch's planes (B, P, sh, sw) and image labels (B, M), padded to the layout."""
        layout = self.labels
        B = planes.shape[0]
        padded = planes.new_zeros((B, layout.planes, *layout.size))
        padded[:, :planes.shape[1]] = planes
        self.write(PLANES, padded)
        wide = image_labels.new_zeros((B, layout.width))
        wide[:, :image_labels.shape[1]] = image_labels
        self.write(IMAGE_LABELS, wide)

    def read_labels(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next `count` images' planes and image labels (int64), without the planes and
        columns that are zero for all of them."""
        layout = self.labels
        planes = self.read(PLANES, (layout.planes, *layout.size), count).long()
        image_labels = self.read(IMAGE_LABELS, (layout.width,), count).long()
        used = planes.reshape(count, layout.planes, -1).any(2).any(0)
        depth = int(torch.nonzero(used).max()) + 1 if bool(used.any()) else 0
        width = int((image_labels > 0).sum(1).max()) if image_labels.numel() else 0
        return planes[:, :depth], image_labels[:, :width]

    def sizes(self) -> dict[str, int]:
        """Bytes written per layer, flushed to disk (recorded in saved states)."""
        for f in self.files.values():
            if not f.closed:
                f.flush()
        return {name: self.paths[name].stat().st_size for name in self.paths}

    @staticmethod
    def reopen(folder: Path, layers: list[str], sizes: dict[str, int] | None,
               labels: LabelLayout | None = None) -> "ActivationCache | None":
        """The cache of an interrupted run, cut back to its saved state; None if it is gone
        (or was written without the label streams).  A cache of the labels alone records no
        layer stream."""
        if sizes is not None and not any(name in sizes for name in layers):
            layers = []
        streams = _streams(folder, layers, labels)
        if sizes is None or set(sizes) != set(streams) or any(
                not path.is_file() or path.stat().st_size < sizes[name]
                for name, (path, _) in streams.items()):
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return ActivationCache(folder, layers, sizes, labels)

    def finish_writing(self) -> None:
        """Switch to reading, with plain reads: a memory map would count the whole cache in the
        process's resident memory as it is read."""
        for f in self.files.values():
            f.close()
        self.files = {name: open(path, "rb") for name, path in self.paths.items()}

    def seek(self, name: str, values: int) -> None:
        self.files[name].seek(values * self.dtypes[name].itemsize)

    def seek_images(self, images: int) -> None:
        """Past the first `images` images of the label streams."""
        layout = self.labels
        self.seek(PLANES, images * layout.planes * layout.size[0] * layout.size[1])
        self.seek(IMAGE_LABELS, images * layout.width)

    def read(self, name: str, shape: tuple[int, ...], count: int) -> torch.Tensor:
        values = np.empty(count * int(np.prod(shape)), dtype=self.dtypes[name])
        if self.files[name].readinto(values) != values.nbytes:
            raise DissectError(f"{self.paths[name]}: the activation cache is shorter than expected; "
                               "was it removed during the run? Start again with --restart.")
        return torch.from_numpy(values).view(count, *shape)

    def close(self, remove: bool = True) -> None:
        for f in self.files.values():
            f.close()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)


def _streams(folder: Path, layers: list[str], labels: LabelLayout | None) -> dict:
    """Each stream's file and dtype: a float32 file per layer, then the label streams."""
    streams = {name: (folder / f"layer{i}.f32", np.dtype(np.float32)) for i, name in enumerate(layers)}
    if labels is not None:
        for name in (PLANES, IMAGE_LABELS):
            streams[name] = (folder / f"{name}.{labels.dtype}", np.dtype(labels.dtype))
    return streams


def decide(outputs: dict[str, torch.Tensor], images: int, limit_gb: float, folder: Path | None,
           forward: Callable[[], object], layers: list[str], policy: str = "auto",
           labels: LabelLayout | None = None) -> ActivationCache | None:
    """A cache for pass 2 when it fits `limit_gb` and the disk, and (policy "auto") when
    writing and reading it back is faster than running the model again: `forward()` runs the
    model once more on the first batch (`outputs`, after the warm-up of its first pass) to
    time it.  When the layer outputs are not cached, a cache of the labels alone (if they
    fit).  Policy "always" skips the timing, "never" caches nothing.  `images` is the number
    of images this process will cache; `labels` their label streams' layout."""
    if policy == "never":
        return None
    batch = next(iter(outputs.values())).shape[0]
    per_image = sum(int(np.prod(a.shape[1:])) for a in outputs.values()) * 4
    label_bytes = (labels.bytes_per_image() if labels else 0) * images
    cached = layers if (per_image * images + label_bytes) <= limit_gb * 2**30 else []
    if cached and policy == "auto":
        start = time.perf_counter()
        forward()
        if per_image / CACHE_BYTES_PER_SECOND > (time.perf_counter() - start) / batch:
            cached = []
    if not cached and (labels is None or label_bytes > limit_gb * 2**30):
        return None
    needed = per_image * images * bool(cached) + label_bytes
    folder = folder or Path(tempfile.mkdtemp(prefix="netdissect-cache-"))
    folder.mkdir(parents=True, exist_ok=True)
    if needed * 1.2 > shutil.disk_usage(folder).free:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return ActivationCache(folder, cached, labels=labels)
