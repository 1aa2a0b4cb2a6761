"""Exact per-unit top quantile of the UPSAMPLED activations: the PNAS threshold.

The PNAS rule (docs/method.md section 14) takes T_k as the (1 - q) quantile, q = 0.01, of unit
k's maps upsampled to the label size: sh*sw values per image, 12,544 for Broden, so q*N is
far too many values to buffer as `quantile.TopQuantile` does.  Instead the quantile is found
by radix selection on the float32 values' bit patterns, in three rounds over the data:

    round 0 (pass 1)   per unit, a histogram of the top 12 bits of every value
    round 1            among the values in the bin holding the quantile, the next 12 bits
    round 2            among those, the last 8 bits: the value itself

Histograms are int64 counts (4,096 bins per unit and target), so memory does not grow with
the data, every split of the data merges exactly, and the result equals numpy's `linear`
quantile of all values (the two order statistics around the quantile are both selected).

Most maps never need upsampling.  In round 0 each unit keeps a floor: the lowest bin such
that at least m values lie at or above it, m being the number of values at or above the
quantile for the largest possible N (the data's capacity).  The quantile cannot be below the
floor, so values below it are not counted and maps whose maximum is below it are skipped;
the floor rises as data comes in.  Rounds 1 and 2 only look at maps that reach the bins
selected so far.
"""
from __future__ import annotations

import math

import torch

from netdissect.stats.quantile import interpolate_order_statistics, quantile_buffer_size, virtual_index
from netdissect.stats.upsample import upsampled_maps

__all__ = ["UpsampledQuantile", "float_keys", "keys_to_float", "ROUND_BITS"]

ROUND_BITS = (12, 12, 8)  # bits of the 32-bit key decided in each round
_OFFSET = 1 << 31


def float_keys(values: torch.Tensor) -> torch.Tensor:
    """float32 values -> int64 keys in [0, 2^32) with the same order (-0.0 just below +0.0)."""
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + _OFFSET


def keys_to_float(keys: torch.Tensor) -> torch.Tensor:
    """The inverse of `float_keys`."""
    signed = keys - _OFFSET
    bits = torch.where(signed < 0, signed ^ 0x7FFFFFFF, signed)
    return bits.to(torch.int32).view(torch.float32)


def _lowest_value(keys: torch.Tensor) -> torch.Tensor:
    """The float value of keys that start a bin, -inf for keys at or below -inf's (the lowest
    bins start among NaN bit patterns)."""
    minus_inf = int(float_keys(torch.tensor([-math.inf]))[0])
    return torch.where(keys <= minus_inf, -math.inf, keys_to_float(keys))


def _shift(round_: int) -> int:
    """How far keys are shifted right to get the bits decided up to and including round_."""
    return 32 - sum(ROUND_BITS[:round_ + 1])


class UpsampledQuantile:
    """Per-unit exact (1 - q) quantile of maps upsampled to the label size (see module doc).

    `update(activations, size)` feeds one batch's raw maps (B, units, h, w) and the label
    size; after every image was fed, `advance(merged)` closes the round with the statistics
    of every share (`merged`: this one without processes); `rounds_left` says how many more
    passes are needed, then `thresholds()` gives T_k.  `capacity_count` bounds the values one
    unit can see in all (images x sh x sw).
    """

    def __init__(self, units: int, q: float, capacity_count: int, device: torch.device | str = "cpu"):
        self.units, self.q, self.device = units, q, torch.device(device)
        self.capacity_count = capacity_count
        self.m_capacity = quantile_buffer_size(max(capacity_count, 1), q)
        self.round = 0
        self.count = 0            # values per unit seen by this share in round 0
        self.total = 0            # values per unit in all shares (after round 0)
        bins = 1 << max(ROUND_BITS)
        self.hist = torch.zeros((units, 2, bins), dtype=torch.int64, device=self.device)
        self.floor = torch.zeros(units, dtype=torch.int64, device=self.device)  # round-0 bin
        # The two order statistics around the quantile (ascending positions lo and lo + 1):
        # the key bits decided so far, and each one's rank from the top among the values
        # that share those bits.
        self.prefix = torch.zeros((units, 2), dtype=torch.int64, device=self.device)
        self.rank = torch.zeros((units, 2), dtype=torch.int64, device=self.device)

    @property
    def rounds_left(self) -> int:
        return len(ROUND_BITS) - self.round

    # -- per batch ------------------------------------------------------------------------
    def update(self, activations: torch.Tensor, size: tuple[int, int]) -> None:
        """Count one batch's upsampled values (activations (B, units, h, w), finite)."""
        if self.round == 0:
            self.count += activations.shape[0] * size[0] * size[1]
            self._count_round0(activations, size)
        elif self.round < len(ROUND_BITS):
            self._count_refinement(activations, size)

    def _count_round0(self, activations: torch.Tensor, size) -> None:
        shift, bins = _shift(0), 1 << ROUND_BITS[0]
        floor_value = _lowest_value(self.floor << shift)
        flat = self.hist[:, 0, :bins].reshape(-1)
        for _, k, values in upsampled_maps(activations, floor_value, size, self.device):
            # A float comparison first: keys are computed only for the few values kept.
            keep = values >= floor_value[k][:, None]
            digit = float_keys(values[keep]) >> shift
            unit = k[:, None].expand_as(keep)[keep]
            flat += torch.bincount(unit * bins + digit, minlength=self.units * bins)
        self.hist[:, 0, :bins] = flat.reshape(self.units, bins)
        # Raise the floor: the highest bin with at least m_capacity values at or above it.
        at_or_above = self.hist[:, 0, :bins].flip(-1).cumsum(-1).flip(-1)
        self.floor = ((at_or_above >= self.m_capacity).sum(-1) - 1).clamp(min=0)

    def _count_refinement(self, activations: torch.Tensor, size) -> None:
        r = self.round
        prev_shift, shift, bins = _shift(r - 1), _shift(r), 1 << ROUND_BITS[r]
        low = _lowest_value(self.prefix.amin(dim=1) << prev_shift)  # lowest value of interest
        targets = (0,) if bool((self.prefix[:, 0] == self.prefix[:, 1]).all()) else (0, 1)
        for _, k, values in upsampled_maps(activations, low, size, self.device):
            above = values >= low[k][:, None]  # cheap; keys only for the values kept
            keys = float_keys(values[above])
            unit = k[:, None].expand_as(above)[above]
            for t in targets:
                keep = (keys >> prev_shift) == self.prefix[unit, t]
                index = unit[keep] * bins + ((keys[keep] >> shift) & (bins - 1))
                self.hist[:, t, :bins] += torch.bincount(index, minlength=self.units * bins).reshape(self.units, bins)
        if targets == (0,):
            self.hist[:, 1] = self.hist[:, 0]

    # -- between rounds -------------------------------------------------------------------
    def advance(self, merged: "UpsampledQuantile") -> None:
        """Close the round with `merged` (every share's counts): decide the next bits of both
        order statistics, and start the next round with empty histograms."""
        r = self.round
        bins = 1 << ROUND_BITS[r]
        hist = merged.hist[:, :, :bins].to(self.device)
        if r == 0:
            if merged.count == 0:
                raise ValueError("no values were seen")
            if quantile_buffer_size(merged.count, self.q) > self.m_capacity:
                raise ValueError("more values were seen than the capacity allows")
            self.total = merged.count
            lo = math.floor(virtual_index(self.total, 1.0 - self.q))
            m = self.total - lo  # x_lo is the m-th largest value, x_(lo+1) the (m-1)-th
            self.rank = torch.tensor([m - 1, max(m - 2, 0)], device=self.device).repeat(self.units, 1)
            hist = hist[:, :1].expand(-1, 2, -1)
        # Per target: the bin holding its rank from the top, and its rank within that bin.
        above = hist.flip(-1).cumsum(-1).flip(-1)  # values in this bin or higher
        digit = (above > self.rank[:, :, None]).sum(-1) - 1
        higher = (above - hist).gather(2, digit[:, :, None])[:, :, 0]  # values in higher bins
        self.rank = self.rank - higher
        self.prefix = (self.prefix << ROUND_BITS[r]) | digit
        self.round += 1
        self.hist.zero_()

    def thresholds(self) -> torch.Tensor:
        """The exact (1 - q) quantile of each unit's upsampled values, float32 (units,)."""
        if self.rounds_left:
            raise ValueError(f"{self.rounds_left} more pass(es) over the data are needed")
        lo = math.floor(virtual_index(self.total, 1.0 - self.q))
        gamma = virtual_index(self.total, 1.0 - self.q) - lo
        below, above = keys_to_float(self.prefix[:, 0]), keys_to_float(self.prefix[:, 1])
        return interpolate_order_statistics(below, above, gamma)

    # -- merging and saving ---------------------------------------------------------------
    def merge(self, other: "UpsampledQuantile") -> None:
        """Fold in the counts of another share of the same round."""
        if other.units != self.units or other.round != self.round:
            raise ValueError("cannot merge quantile statistics of different shapes or rounds")
        self.count += other.count
        self.hist += other.hist.to(self.device)
        self.floor = torch.maximum(self.floor, other.floor.to(self.device))

    def state_dict(self) -> dict:
        return {"q": self.q, "capacity": self.capacity_count, "round": self.round,
                "count": self.count, "total": self.total, "hist": self.hist.cpu().clone(),
                "floor": self.floor.cpu().clone(), "prefix": self.prefix.cpu().clone(),
                "rank": self.rank.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity_count or state["hist"].shape[0] != self.units:
            raise ValueError("saved quantile statistics do not fit this run")
        self.round, self.count, self.total = int(state["round"]), int(state["count"]), int(state["total"])
        for name in ("hist", "floor", "prefix", "rank"):
            setattr(self, name, state[name].to(self.device))
