"""The IoU tally of docs/method.md sections 5 and 6, vectorised over units and pixels.

For every batch: each unit's map is upsampled bilinearly (align_corners=False) to the label
size and thresholded; the mask pixels are counted per label set of the batch (pixels grouped
by the labels they carry, `labelsets`), and each set's count added to its labels with one
`index_add_`: work per set, not per pixel and plane.  Every definition's A is tallied at once, so the
choice between them is made when IoUs are computed and costs no pass.

A map whose maximum is below its threshold cannot produce a mask pixel, so only maps whose
maximum reaches the threshold are upsampled (`upsample.upsampled_maps`).
"""
from __future__ import annotations

import torch

from netdissect.engine.settings import DEFINITIONS
from netdissect.stats.labelsets import pixel_label_sets
from netdissect.stats.upsample import upsampled_maps

# Largest (map, label set) histogram counted with bincount; above it, a sort.
HISTOGRAM_BINS = 1 << 24


def unit_masks(activations: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int],
               device: torch.device | str):
    """The units' masks of one batch at the label resolution, in chunks: yields (b, k, mask)
    where mask[i] (sh*sw bool) is unit k[i]'s map of image b[i], upsampled bilinearly
    (align_corners=False) and thresholded with `> thresholds[k[i]]`.  Maps that cannot pass
    their threshold (empty masks) are not yielded."""
    thresholds = thresholds.to(device)
    for b, k, values in upsampled_maps(activations, thresholds, size, device):
        yield b, k, values > thresholds[k][:, None]


class IoUTally:
    """Exact int64 counts I[unit, label], A[unit, category] (every definition), G[label].

    `label_category` (L+1,) gives each global label's primary category index, -1 when it is
    not scored; label 0 is "unlabelled".
    """

    def __init__(self, units: int, label_category: torch.Tensor, num_categories: int,
                 device: torch.device | str = "cpu"):
        self.units = units
        self.num_labels = len(label_category)
        self.num_categories = num_categories
        self.label_category = label_category.to(device=device, dtype=torch.int64)
        self.intersection = torch.zeros((units, self.num_labels), dtype=torch.int64, device=device)
        self.activation = {d: torch.zeros((units, num_categories), dtype=torch.int64, device=device)
                           for d in DEFINITIONS}
        self.truth = torch.zeros(self.num_labels, dtype=torch.int64, device=device)
        self.images = 0

    # -- per batch ------------------------------------------------------------------------
    def update(self, activations: torch.Tensor, thresholds: torch.Tensor, planes: torch.Tensor,
               image_labels: torch.Tensor, sets: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Tally one batch.

        activations (B, units, h, w) float; thresholds (units,); planes (B, P, sh, sw) int64
        global label numbers (0 = none, already de-duplicated per pixel); image_labels (B, M)
        int64 (0 = padding); `sets`: `labelsets.pixel_label_sets(planes, image_labels)` when
        the caller has it already (several layers share it).
        """
        device = self.intersection.device
        B = activations.shape[0]
        sh, sw = planes.shape[-2:]
        pixels = sh * sw
        planes = planes.to(device)
        image_labels = image_labels.to(device)
        rows, inverse = sets if sets is not None else pixel_label_sets(planes, image_labels, canonical=False)
        rows, inverse = rows.to(device), inverse.to(device)
        planes = planes.reshape(B, -1, pixels)
        self.images += B
        self._count_truth(planes, image_labels, pixels)
        pixel_present, image_present = self._presence(planes, image_labels)
        for b, k, mask in unit_masks(activations, thresholds, (sh, sw), device):
            self._count_masks(mask, b, k, rows, inverse, pixels, pixel_present, image_present)

    def _count_truth(self, planes: torch.Tensor, image_labels: torch.Tensor, pixels: int) -> None:
        self.truth += torch.bincount(planes.reshape(-1), minlength=self.num_labels)
        self.truth += pixels * torch.bincount(image_labels.reshape(-1), minlength=self.num_labels)
        self.truth[0] = 0

    def _presence(self, planes: torch.Tensor, image_labels: torch.Tensor):
        """(B, categories) bool: categories with a pixel label / an image-level label."""
        def present(labels: torch.Tensor) -> torch.Tensor:
            B = labels.shape[0]
            cat = self.label_category[labels.reshape(B, -1)]
            rows = torch.arange(B, device=labels.device)[:, None].expand_as(cat)
            flat = (rows * self.num_categories + cat)[cat >= 0]
            counts = torch.bincount(flat, minlength=B * self.num_categories)
            return counts.reshape(B, self.num_categories) > 0
        return present(planes), present(image_labels)

    def _count_masks(self, mask, b, k, rows, inverse, pixels, pixel_present, image_present) -> None:
        """Count the masks of the maps (b[i], k[i]): per map, its pixels on each label set of
        the batch (`rows`, and `inverse`: each pixel's set), then each set's labels."""
        n, C, L, S = len(b), self.num_categories, self.num_labels, len(rows)
        # The mask pixels, and how many per selected (image, unit); bincount is much faster
        # than summing a boolean tensor.
        i, p = torch.nonzero(mask, as_tuple=True)
        mask_count = torch.bincount(i, minlength=n)
        # Mask pixels per (map, label set): a histogram, or a sort when it would be too large.
        key = i * S + inverse[b[i] * pixels + p]
        if n * S <= HISTOGRAM_BINS:
            histogram = torch.bincount(key, minlength=n * S)
            key = torch.nonzero(histogram).flatten()
            count = histogram[key]
        else:
            key, count = torch.unique(key, return_counts=True)
        pair, labels = key // S, rows[key % S]  # each set's labels, image-level ones included
        hit = labels > 0
        weight = count[:, None].expand_as(labels)
        self.intersection.view(-1).index_add_(0, (k[pair][:, None] * L + labels)[hit], weight[hit])
        # A, original: the category occurs anywhere in the image.
        present = pixel_present[b] | image_present[b]
        self.activation["original"].index_add_(0, k, mask_count[:, None] * present)
        # A, lite: a category counts where one of its labels lies under the mask (an
        # image-level label lies under every mask pixel of its image).
        cats = self.label_category[labels]
        under = torch.bincount((pair[:, None] * C + cats)[hit & (cats >= 0)], minlength=n * C)
        self.activation["lite"].index_add_(0, k, mask_count[:, None] * (under.reshape(n, C) > 0))
        # A, pnas: plain IoU, every mask pixel counts whatever the category.
        self.activation["pnas"].index_add_(0, k, mask_count[:, None].expand(n, C))

    # -- merging and saving ---------------------------------------------------------------
    def merge(self, other: "IoUTally") -> None:
        self.intersection += other.intersection.to(self.intersection.device)
        for d in self.activation:
            self.activation[d] += other.activation[d].to(self.intersection.device)
        self.truth += other.truth.to(self.truth.device)
        self.images += other.images

    def state_dict(self) -> dict:
        return {"intersection": self.intersection.cpu().clone(),
                **{f"activation_{d}": a.cpu().clone() for d, a in self.activation.items()},
                "truth": self.truth.cpu().clone(), "images": self.images}

    def load_state_dict(self, state: dict) -> None:
        device = self.intersection.device
        self.intersection = state["intersection"].to(device)
        self.activation = {d: state[f"activation_{d}"].to(device) for d in DEFINITIONS}
        self.truth = state["truth"].to(device)
        self.images = int(state["images"])
