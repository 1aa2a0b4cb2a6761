"""The random draws of the significance statistics (docs/method.md section 15), reproducible
image by image.

Both the permutation null and the Poisson bootstrap draw their randomness from a hash of
(seed, stream, draw, dataset row) rather than from a generator advanced batch after batch, so
a resumed run draws the same, and an image's bootstrap weights do not depend on how the data
is split (batches, processes).  The null permutes the images of one batch, so its draws
depend on which images share a batch.

    image_permutations(rows, draws, seed)  (N, B): for draw n, image j is paired with the
                                           labels of image perm[n, j] of the same batch
    poisson_weights(rows, draws, seed)     (R, B) int64: each image's weight in replicate r,
                                           Poisson(1)
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["image_permutations", "poisson_weights", "uniforms"]

_PERMUTATION, _BOOTSTRAP = 1, 2  # streams
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def uniforms(rows: torch.Tensor, draws: int, seed: int, stream: int) -> np.ndarray:
    """(draws, B) float64 uniforms in [0, 1), a function of (seed, stream, draw, row) only."""
    row = np.asarray(rows.cpu(), dtype=np.uint64)
    draw = np.arange(draws, dtype=np.uint64)[:, None]
    key = _splitmix64(np.uint64(seed & 0xFFFFFFFF) ^ (np.uint64(stream) << np.uint64(32)))
    with np.errstate(over="ignore"):
        x = _splitmix64(_splitmix64(key ^ draw) ^ row[None, :])
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def image_permutations(rows: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """(draws, B) int64: a uniformly random permutation of the batch's positions per draw,
    decided by the rows' random keys (their order), so the same rows always pair alike."""
    keys = uniforms(rows, draws, seed, _PERMUTATION)
    return torch.from_numpy(np.argsort(keys, axis=1, kind="stable")).to(torch.int64)


# P(Poisson(1) <= n) for n = 0, 1, ...: the inverse CDF turns a uniform into a weight.
_POISSON_CDF = np.cumsum([math.exp(-1) / math.factorial(n) for n in range(20)])


def poisson_weights(rows: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """(draws, B) int64 Poisson(1) weights of the rows in each bootstrap replicate."""
    u = uniforms(rows, draws, seed, _BOOTSTRAP)
    return torch.from_numpy(np.searchsorted(_POISSON_CDF, u, side="right")).to(torch.int64)
