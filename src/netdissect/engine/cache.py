"""The on-disk activation cache: pass 1's layer outputs, read back by pass 2.

Pass 2 needs every layer output again.  Writing them to disk in pass 1 and reading them back
is cheaper than running the model again when the model is slow for its output size; `decide`
measures that on the first batch.  One file per layer, float32, in batch order; a saved state
records how many bytes each file held, so a resumed run cuts the files back to it.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from netdissect.errors import DissectError

__all__ = ["ActivationCache", "decide", "CACHE_BYTES_PER_SECOND"]

# Writing a float32 activation to the cache in pass 1 and reading it back in pass 2 costs
# about this much (measured on a 2-core machine with an SSD); a model that computes its
# activations faster than this is simply run again in pass 2.
CACHE_BYTES_PER_SECOND = 300e6


class ActivationCache:
    """A file per layer holding pass 1's outputs in batch order, read back batch by batch."""

    def __init__(self, folder: Path, layers: list[str], sizes: dict[str, int] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = {name: folder / f"layer{i}.f32" for i, name in enumerate(layers)}
        for name, path in self.paths.items():  # drop what was written after the saved state
            with open(path, "ab") as f:
                f.truncate((sizes or {}).get(name, 0))
        self.files = {name: open(path, "ab") for name, path in self.paths.items()}

    def write(self, name: str, acts: torch.Tensor) -> None:
        self.files[name].write(acts.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())

    def sizes(self) -> dict[str, int]:
        """Bytes written per layer, flushed to disk (recorded in saved states)."""
        for f in self.files.values():
            if not f.closed:
                f.flush()
        return {name: self.paths[name].stat().st_size for name in self.paths}

    @staticmethod
    def reopen(folder: Path, layers: list[str], sizes: dict[str, int] | None) -> "ActivationCache | None":
        """The cache of an interrupted run, cut back to its saved state; None if it is gone."""
        if sizes is None or any(not (folder / f"layer{i}.f32").is_file()
                                or (folder / f"layer{i}.f32").stat().st_size < sizes.get(name, 0)
                                for i, name in enumerate(layers)):
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return ActivationCache(folder, layers, sizes)

    def finish_writing(self) -> None:
        """Switch to reading, with plain reads: a memory map would count the whole cache in the
        process's resident memory as it is read."""
        for f in self.files.values():
            f.close()
        self.files = {name: open(path, "rb") for name, path in self.paths.items()}

    def seek(self, name: str, values: int) -> None:
        self.files[name].seek(values * 4)

    def read(self, name: str, shape: tuple[int, ...], count: int) -> torch.Tensor:
        values = np.empty(count * int(np.prod(shape)), dtype=np.float32)
        if self.files[name].readinto(values) != values.nbytes:
            raise DissectError(f"{self.paths[name]}: the activation cache is shorter than expected; "
                               "was it removed during the run? Start again with --restart.")
        return torch.from_numpy(values).view(count, *shape)

    def close(self, remove: bool = True) -> None:
        for f in self.files.values():
            f.close()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)


def decide(outputs: dict[str, torch.Tensor], images: int, limit_gb: float, folder: Path | None,
           forward: Callable[[], object], layers: list[str], policy: str = "auto"
           ) -> ActivationCache | None:
    """A cache for pass 2 when it fits `limit_gb` and the disk, and (policy "auto") when
    writing and reading it back is faster than running the model again: `forward()` runs the
    model once more on the first batch (`outputs`, after the warm-up of its first pass) to
    time it.  Policy "always" skips the timing, "never" caches nothing.  `images` is the
    number of images this process will cache."""
    batch = next(iter(outputs.values())).shape[0]
    per_image = sum(int(np.prod(a.shape[1:])) for a in outputs.values()) * 4
    needed = per_image * images
    if policy == "never" or needed > limit_gb * 2**30:
        return None
    if policy == "auto":
        start = time.perf_counter()
        forward()
        if per_image / CACHE_BYTES_PER_SECOND > (time.perf_counter() - start) / batch:
            return None
    folder = folder or Path(tempfile.mkdtemp(prefix="netdissect-cache-"))
    folder.mkdir(parents=True, exist_ok=True)
    if needed * 1.2 > shutil.disk_usage(folder).free:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return ActivationCache(folder, layers)
