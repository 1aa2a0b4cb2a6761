"""Exact per-unit top quantile (docs/method.md section 4) with per-unit top-m buffers.

The threshold T_k is numpy's default (`linear`) quantile at level 1 - q of all N values of
unit k.  Only the largest m = N - floor((N - 1)(1 - q)) values take part in it, so each unit
keeps a buffer of its m largest values seen so far: memory grows as q*N (a few MB for
Broden), not with the activations.  Values at or below a unit's current m-th largest value
cannot enter its top m and are dropped before they are stored, so most batches cost one
comparison per value.
"""
from __future__ import annotations

import math

import torch


def quantile_buffer_size(count: int, q: float) -> int:
    """How many of the largest values decide the (1 - q) quantile of `count` values."""
    if not 0.0 <= q < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {q}")
    return count - math.floor(virtual_index(count, 1.0 - q))


def virtual_index(count: int, level: float) -> float:
    """numpy's linear method: virtual index = n*level + (1 - level) - 1, computed in this order."""
    return count * level + (1.0 + level * -1.0) - 1.0


def interpolate_order_statistics(below: torch.Tensor, above: torch.Tensor, gamma: float) -> torch.Tensor:
    """numpy's linear interpolation between the order statistics around a quantile (float32):
    its _lerp, a + d*t, or b - d*(1-t) when t >= 0.5, in float64."""
    below, above = below.double(), above.double()
    diff = above - below
    value = below + diff * gamma if gamma < 0.5 else above - diff * (1.0 - gamma)
    return value.float()


class TopQuantile:
    """Per-unit exact (1 - q) quantile over a stream of values.

    `capacity_count` is an upper bound on the number of values each unit will see (images x
    positions); it sizes the buffers.  `update(values)` takes (units, n) values.  Each unit's
    pool holds at least its m largest values so far (columns beyond a unit's `filled` count
    are -inf); values not above the unit's current m-th largest are never stored.
    """

    def __init__(self, units: int, q: float, capacity_count: int, device: torch.device | str = "cpu"):
        self.units = units
        self.q = q
        self.capacity_count = capacity_count
        self.m = max(1, quantile_buffer_size(max(capacity_count, 1), q))
        self.count = 0
        self.pool = torch.full((units, 2 * self.m), -math.inf, device=device)
        self.filled = torch.zeros(units, dtype=torch.int64, device=device)
        self.floor = torch.full((units,), -math.inf, device=device)  # m-th largest once known

    def update(self, values: torch.Tensor) -> None:
        """Add (units, n) values; they must be finite (checked by the caller)."""
        self.count += values.shape[1]
        keep = values > self.floor[:, None]
        unit, position = torch.nonzero(keep, as_tuple=True)  # grouped by unit, in order
        if len(unit) == 0:
            return
        counts = torch.bincount(unit, minlength=self.units)
        if int((self.filled + counts).max()) > self.pool.shape[1]:
            self._compact()
            if int(counts.max()) > self.pool.shape[1] - self.m:
                # Many new candidates (the first batches): keep the batch's m largest per unit.
                self._compact(values.masked_fill(~keep, -math.inf).topk(min(self.m, values.shape[1]), dim=1).values)
                return
        start = torch.cumsum(counts, 0) - counts
        column = self.filled[unit] + torch.arange(len(unit), device=unit.device) - start[unit]
        self.pool[unit, column] = values[unit, position]
        self.filled += counts

    def _compact(self, extra: torch.Tensor | None = None) -> None:
        """Keep only the m largest values per unit (of the pool and `extra`)."""
        values = self.pool if extra is None else torch.cat([self.pool, extra.to(self.pool)], dim=1)
        top = values.topk(min(self.m, values.shape[1]), dim=1, sorted=True).values
        self.pool = torch.full_like(self.pool, -math.inf)
        self.pool[:, :top.shape[1]] = top
        self.filled.fill_(top.shape[1])
        if top.shape[1] == self.m:
            self.floor = top[:, -1].clone()

    def merge(self, other: "TopQuantile") -> None:
        """Fold in the statistics of another share of the data."""
        if other.m != self.m or other.units != self.units:
            raise ValueError("cannot merge quantile statistics of different shapes")
        self.count += other.count
        self._compact(other.pool)

    def thresholds(self) -> torch.Tensor:
        """The exact (1 - q) quantile of each unit's values, float32 (units,)."""
        if self.count == 0:
            raise ValueError("no values were seen")
        if quantile_buffer_size(self.count, self.q) > self.m:
            raise ValueError("more values were seen than the buffers were sized for")
        self._compact()
        level = 1.0 - self.q
        virtual = virtual_index(self.count, level)
        lo = math.floor(virtual)
        gamma = virtual - lo
        # Descending pool: ascending position j sits at column count-1-j.
        below = self.pool[:, self.count - 1 - lo]
        above = self.pool[:, max(self.count - 2 - lo, 0)]
        return interpolate_order_statistics(below, above, gamma)

    def state_dict(self) -> dict:
        self._compact()
        return {"q": self.q, "m": self.m, "count": self.count,
                "values": self.pool[:, :self.m].cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["m"] != self.m or state["values"].shape[0] != self.units:
            raise ValueError("saved quantile statistics do not fit this run")
        self.count = int(state["count"])
        self.pool.fill_(-math.inf)
        self.filled.zero_()
        self._compact(state["values"])
