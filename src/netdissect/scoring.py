"""The IoU and detector rules of docs/method.md sections 6, 7 and 14, on plain tensors.

`results.LayerResult` applies them to a layer's tallies and `significance` to stacks of
tallies (the null's draws, the bootstrap's replicates), so both score alike.
"""
from __future__ import annotations

import torch

__all__ = ["reaches_threshold", "threshold_text", "iou_table", "best_per_category_table"]


def reaches_threshold(iou, threshold: float, definition: str):
    """Whether an IoU (a float or a tensor) makes a detector: IoU >= threshold, or IoU >
    threshold under the pnas definition (docs/method.md sections 7 and 14)."""
    return iou > threshold if definition == "pnas" else iou >= threshold


def threshold_text(threshold: float, definition: str) -> str:
    """The detector rule as the report writes it: "IoU >= 0.04" (or "> 0.04" for pnas)."""
    return f"IoU {'>' if definition == 'pnas' else '>='} {threshold:g}"


def iou_table(intersection: torch.Tensor, activation: torch.Tensor, truth: torch.Tensor,
              category: torch.Tensor) -> torch.Tensor:
    """IoU[..., k, c] = I / (A[..., k, cat(c)] + G[..., c] - I), float64, 0 where undefined
    or the label is not scored.  intersection (..., K, L+1), activation (..., K, C), truth
    (..., L+1), category (L+1,) primary category index (-1: not scored); leading dimensions
    (replicates) broadcast."""
    scored = category >= 0
    inter = intersection.double()
    act = activation.double()[..., category.clamp(min=0)]
    union = act + truth.double().unsqueeze(-2) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou * scored


def best_per_category_table(iou: torch.Tensor, category: torch.Tensor,
                            num_categories: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., K, C) label numbers (0 = none) and IoUs: each category's best label per unit of
    an IoU table (..., K, L+1); the first maximum (lowest label) wins ties."""
    shape = (*iou.shape[:-1], num_categories)
    best_label = torch.zeros(shape, dtype=torch.int64)
    best_iou = torch.zeros(shape, dtype=torch.float64)
    for c in range(num_categories):
        columns = torch.nonzero(category == c)[:, 0]
        if len(columns):
            value, position = iou[..., columns].max(dim=-1)
            best_label[..., c], best_iou[..., c] = columns[position], value
    return best_label.masked_fill(best_iou <= 0, 0), best_iou
