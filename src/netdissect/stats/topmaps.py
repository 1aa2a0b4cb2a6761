"""The raw activation maps of each unit's top images (docs/method.md section 8).

Filled in the tally pass, once the top images are known: when an image that is among a
unit's top images passes by, its map of that unit is kept.  Each image is seen by one process
only, so merging shares is a sum in which every slot has a single non-zero part: exact.
"""
from __future__ import annotations

import torch

__all__ = ["TopMaps"]


class TopMaps:
    """(units, k, h, w) maps of the images in `indices` (units, k), -1 for an empty slot."""

    def __init__(self, indices: torch.Tensor, map_size: tuple[int, int],
                 device: torch.device | str = "cpu"):
        self.indices = indices.to(device)
        units, k = indices.shape
        self.maps = torch.zeros((units, k, *map_size), device=device)

    def update(self, activations: torch.Tensor, image_index: torch.Tensor) -> None:
        """`activations` (B, units, h, w) of the dataset rows `image_index` (B,)."""
        hit = self.indices[None] == image_index.to(self.indices.device)[:, None, None]  # (B, K, k)
        b, unit, slot = torch.nonzero(hit, as_tuple=True)
        self.maps[unit, slot] = activations[b, unit].to(self.maps)

    def merge(self, other: "TopMaps") -> None:
        self.maps += other.maps.to(self.maps.device)

    def state_dict(self) -> dict:
        return {"indices": self.indices.cpu().clone(), "maps": self.maps.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if not torch.equal(state["indices"], self.indices.cpu()):
            raise ValueError("saved top maps belong to other top images")
        self.maps = state["maps"].to(self.maps.device)
