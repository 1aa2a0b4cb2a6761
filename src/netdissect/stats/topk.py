"""Per-unit top images by the spatial maximum of the raw activation (docs/method.md section 8).

Ties are broken by the smaller image index, so the choice does not depend on batch order,
data-loader workers or how the data was split between processes.
"""
from __future__ import annotations

import math

import torch


class TopImages:
    """The k images with the largest per-unit activation maximum."""

    def __init__(self, units: int, k: int = 10, device: torch.device | str = "cpu"):
        self.units, self.k = units, k
        self.values = torch.full((units, k), -math.inf, device=device)
        self.indices = torch.full((units, k), -1, dtype=torch.int64, device=device)

    def update(self, maxima: torch.Tensor, image_index: torch.Tensor) -> None:
        """`maxima` (B, units) per-image maxima of the units; `image_index` (B,) dataset rows."""
        values = torch.cat([self.values, maxima.t().to(self.values)], dim=1)
        indices = torch.cat([self.indices, image_index.to(self.indices.device)[None].expand(self.units, -1)], dim=1)
        self._select(values, indices)

    def _select(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        # Order by index (empty slots, index -1, last), then stably by value, descending.
        by_index = torch.where(indices < 0, torch.iinfo(torch.int64).max, indices).argsort(dim=1, stable=True)
        values, indices = values.gather(1, by_index), indices.gather(1, by_index)
        order = values.argsort(dim=1, descending=True, stable=True)[:, :self.k]
        self.values, self.indices = values.gather(1, order), indices.gather(1, order)

    def merge(self, other: "TopImages") -> None:
        self._select(torch.cat([self.values, other.values.to(self.values)], dim=1),
                     torch.cat([self.indices, other.indices.to(self.indices.device)], dim=1))

    def state_dict(self) -> dict:
        return {"values": self.values.cpu().clone(), "indices": self.indices.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.values = state["values"].to(self.values.device)
        self.indices = state["indices"].to(self.indices.device)
