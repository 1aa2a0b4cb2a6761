"""Pixels grouped by the set of labels they carry (their planes' labels and their image's).

Most statistics of a batch depend on a pixel only through its label set, and a batch of
hundreds of thousands of pixels has a few hundred distinct sets: counting per set, then
expanding each set to its labels, replaces work per pixel and plane by work per set.  Used by
the IoU tally (`tally.IoUTally`) and the compositional explanations.
"""
from __future__ import annotations

import torch

__all__ = ["pixel_label_sets", "unique_rows"]


def pixel_label_sets(planes: torch.Tensor, image_labels: torch.Tensor,
                     canonical: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The label sets of one batch's pixels: (rows (A, K): each distinct set, its labels
    ascending and 0-padded on the left, in row order; inverse (B*sh*sw,): the set of every
    pixel, image-major).  `planes` (B, P, sh, sw) and `image_labels` (B, M) as `BrodenImages`
    gives them (0: none): a label appears at most once per pixel across both, and an
    image-level label belongs to every pixel of its image.  `canonical=False` skips sorting
    each pixel's labels: one set may then appear as several rows (its labels in other
    orders), which is cheaper and as good for counting within the batch."""
    B = planes.shape[0]
    pixels = planes.shape[-2] * planes.shape[-1]
    if planes.shape[1] + image_labels.shape[1] == 0:  # no label anywhere: one empty set
        return planes.new_zeros((1, 0)), planes.new_zeros(B * pixels)
    per_pixel = planes.reshape(B, planes.shape[1], pixels).transpose(1, 2)
    labels = torch.cat([per_pixel, image_labels[:, None, :].expand(B, pixels, image_labels.shape[1])], 2)
    labels = labels.reshape(B * pixels, -1)
    if canonical:
        labels = labels.sort(dim=1).values
        labels = labels[:, labels.shape[1] - int((labels != 0).sum(1).max()):]
    else:
        labels = labels[:, (labels != 0).any(0)]
    if labels.shape[1] == 0:
        return labels.new_zeros((1, 0)), labels.new_zeros(B * pixels)
    return unique_rows(labels)


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(rows, dim=0, return_inverse=True) for rows of non-negative integers,
    sorted lexicographically, computed on 1-D int64 keys (several times faster than sorting
    whole rows): one key per row when the row's numbers fit in 63 bits, else column by column."""
    base = int(rows.max()) + 1
    bits = max(1, (base - 1).bit_length())
    if bits * rows.shape[1] <= 63:
        shifts = torch.arange(rows.shape[1] - 1, -1, -1, device=rows.device) * bits
        keys, ids = torch.unique((rows << shifts).sum(1), return_inverse=True)
        return (keys[:, None] >> shifts) & ((1 << bits) - 1), ids
    ids = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
    for column in rows.T:
        ids = torch.unique(ids * base + column, return_inverse=True)[1]
    count = int(ids.max()) + 1
    first = torch.full((count,), rows.shape[0], dtype=torch.int64, device=rows.device)
    first.scatter_reduce_(0, ids, torch.arange(rows.shape[0], device=rows.device), "amin")
    return rows[first], ids
