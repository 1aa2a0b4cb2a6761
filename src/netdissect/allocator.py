"""Keep freed memory in the process instead of handing it back to the system (glibc only).

A forward pass allocates and frees feature maps of tens to hundreds of megabytes per batch.
glibc's malloc serves blocks above its mmap threshold (at most 32 MB with its dynamic rule)
with fresh `mmap` pages and unmaps them when they are freed, so every batch faults the same
memory in again, page by page.  On 2 CPU cores that page faulting was most of the forward
time: EfficientNet-Lite0 at 224 px took 69 s per 2,000 images with glibc's defaults and 24 s
with the settings below (2.5 million minor page faults per 160 images, 6 thousand with them).
A dissection of the demo's two models went from 150 s to 100 s, and the ResNet-18 benchmark's
floor from 44 s to 22 s (README, Benchmarks).  The price is that the process keeps its peak
heap: EfficientNet-Lite0's dissection peaks at 1.9 GB resident instead of 1.1 GB, the ResNet-18
benchmark at 1.1-1.5 GB instead of 1.1-1.3 GB (torch's aligned allocations leave freed blocks
that only a few merged ones can serve again).

The settings are the process's own: they are applied once, by the command line and by
`netdissect.dissect`, and never when the user has set glibc's own variables
(`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`, `MALLOC_MMAP_MAX_` or
`GLIBC_TUNABLES`): setting one of them keeps glibc's behaviour as the user chose it.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# mallopt parameters (malloc.h) and their values here: blocks under 1 GiB come from the heap,
# and up to 2 GiB of free heap stays with the process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when they are in force."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both or neither: a raised mmap threshold with glibc's trimming would still hand back
    # the freed tops of the heap.
    if mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return False
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
