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

from typing import NamedTuple

import torch

from netdissect.engine.settings import DEFINITIONS
from netdissect.stats import resampling
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

    With `null` N > 0 it also counts I and A under N image permutations within each batch
    (unit masks of image j against the labels of image perm[n, j]; G does not change), and
    with `bootstrap` R > 0 the counts I, A, G and the image count of R Poisson bootstrap
    replicates (each image weighted by its Poisson(1) draw): docs/method.md section 15.  The
    draws depend on `seed` and the dataset rows only (`resampling`), so they need the batch's
    rows in `update`.
    """

    def __init__(self, units: int, label_category: torch.Tensor, num_categories: int,
                 device: torch.device | str = "cpu", null: int = 0, bootstrap: int = 0,
                 seed: int = 0):
        self.units = units
        self.num_labels = len(label_category)
        self.num_categories = num_categories
        self.label_category = label_category.to(device=device, dtype=torch.int64)
        self.null, self.bootstrap, self.seed = null, bootstrap, seed
        # (L+1, categories) one-hot of each scored label's primary category
        scored = torch.nonzero(self.label_category >= 0).flatten()
        self.category_of = torch.zeros((self.num_labels, num_categories), device=device)
        self.category_of[scored, self.label_category[scored]] = 1.0

        def counts(*lead: int) -> tuple[torch.Tensor, dict]:
            return (torch.zeros((*lead, units, self.num_labels), dtype=torch.int64, device=device),
                    {d: torch.zeros((*lead, units, num_categories), dtype=torch.int64, device=device)
                     for d in DEFINITIONS})

        self.intersection, self.activation = counts()
        self.truth = torch.zeros(self.num_labels, dtype=torch.int64, device=device)
        self.images = 0
        if null:
            self.null_intersection, self.null_activation = counts(null)
        if bootstrap:
            self.boot_intersection, self.boot_activation = counts(bootstrap)
            self.boot_truth = torch.zeros((bootstrap, self.num_labels), dtype=torch.int64, device=device)
            self.boot_images = torch.zeros(bootstrap, dtype=torch.int64, device=device)

    # -- per batch ------------------------------------------------------------------------
    def update(self, activations: torch.Tensor, thresholds: torch.Tensor, planes: torch.Tensor,
               image_labels: torch.Tensor, sets: tuple[torch.Tensor, torch.Tensor] | None = None,
               rows: torch.Tensor | None = None) -> None:
        """Tally one batch.

        activations (B, units, h, w) float; thresholds (units,); planes (B, P, sh, sw) int64
        global label numbers (0 = none, already de-duplicated per pixel); image_labels (B, M)
        int64 (0 = padding); `sets`: `labelsets.pixel_label_sets(planes, image_labels)` when
        the caller has it already (several layers share it); `rows` (B,): the images' dataset
        rows, needed with `null` or `bootstrap`.
        """
        device = self.intersection.device
        B = activations.shape[0]
        sh, sw = planes.shape[-2:]
        pixels = sh * sw
        planes = planes.to(device)
        image_labels = image_labels.to(device)
        set_rows, inverse = sets if sets is not None else pixel_label_sets(planes, image_labels, canonical=False)
        pixel_counts, image_counts = self._label_counts(planes, image_labels)
        labels = _BatchLabels(set_rows.to(device), inverse.to(device), pixels,
                              self._present(pixel_counts), self._present(image_counts))
        truth = pixel_counts + pixels * image_counts  # an image-level label covers every pixel
        self.images += B
        self.truth += truth.sum(0)
        permutations = weights = None
        if self.null or self.bootstrap:
            if rows is None or len(rows) != B:
                raise ValueError("IoUTally.update: the null and the bootstrap need the batch's dataset rows")
        if self.null:
            permutations = resampling.image_permutations(rows, self.null, self.seed).to(device)
        if self.bootstrap:
            weights = resampling.poisson_weights(rows, self.bootstrap, self.seed).to(device)
            self.boot_truth += weights @ truth
            self.boot_images += weights.sum(1)
        for b, k, mask in unit_masks(activations, thresholds, (sh, sw), device):
            i, p = torch.nonzero(mask, as_tuple=True)  # the mask pixels
            # shared by every draw of the null: the mask pixels, their key offsets, the
            # pixels per map (bincount is much faster than summing a boolean tensor)
            where = (i, i * len(labels.rows), p, torch.bincount(i, minlength=len(b)), k)
            observed = self._count(where, b, labels)
            self._add(self.intersection, self.activation, *observed, k)
            if weights is not None:
                self._add_weighted(*observed, k, weights[:, b])
            for n in range(self.null):  # the same masks against other images' labels
                self._add(self.null_intersection[n], {d: a[n] for d, a in self.null_activation.items()},
                          *self._count(where, permutations[n][b], labels), k)

    def _label_counts(self, planes: torch.Tensor, image_labels: torch.Tensor):
        """(B, L+1) int64 each: pixels of each label per image, and how many times each
        image-level label is listed per image (label 0, "none", counts nothing)."""
        B, L = planes.shape[0], self.num_labels
        offset = torch.arange(B, device=planes.device)[:, None] * L

        def per_image(labels: torch.Tensor) -> torch.Tensor:
            counts = torch.bincount((labels.reshape(B, -1) + offset).reshape(-1), minlength=B * L)
            counts = counts.reshape(B, L)
            counts[:, 0] = 0
            return counts
        return per_image(planes), per_image(image_labels)

    def _present(self, counts: torch.Tensor) -> torch.Tensor:
        """(B, categories) bool: the categories of which a label has a count in each image."""
        return ((counts > 0).float() @ self.category_of) > 0

    def _count(self, where, source: torch.Tensor, labels: "_BatchLabels"):
        """What the masks of the maps (b[j], k[j]) add when each is laid over the labels of
        image source[j] of the batch (source = b for the data as it is): per map and label
        set, its pixels there, then each set's labels.  Returns (map, position k*L + label,
        count) of I's entries and the (maps, C) contribution to A of each definition."""
        i, i_key, p, mask_count, k = where
        n, C, L, S = len(k), self.num_categories, self.num_labels, len(labels.rows)
        # Mask pixels per (map, label set): a histogram, or a sort when it would be too large.
        key = i_key + labels.inverse[(source * labels.pixels)[i] + p]
        if n * S <= HISTOGRAM_BINS:
            histogram = torch.bincount(key, minlength=n * S)
            key = torch.nonzero(histogram).flatten()
            count = histogram[key]
        else:
            key, count = torch.unique(key, return_counts=True)
        pair, set_labels = key // S, labels.rows[key % S]  # each set's labels, image-level ones included
        hit = set_labels > 0
        entries = (pair[:, None].expand_as(set_labels)[hit], (k[pair][:, None] * L + set_labels)[hit],
                   count[:, None].expand_as(set_labels)[hit])
        # A, original: the category occurs anywhere in the image.
        present = labels.pixel_present[source] | labels.image_present[source]
        # A, lite: a category counts where one of its labels lies under the mask (an
        # image-level label lies under every mask pixel of its image).
        cats = self.label_category[set_labels]
        under = torch.bincount((pair[:, None] * C + cats)[hit & (cats >= 0)], minlength=n * C)
        activation = {"original": mask_count[:, None] * present,
                      "lite": mask_count[:, None] * (under.reshape(n, C) > 0),
                      # A, pnas: plain IoU, every mask pixel counts whatever the category.
                      "pnas": mask_count[:, None].expand(n, C)}
        return entries, activation

    @staticmethod
    def _add(intersection, activation, entries, contributions, k) -> None:
        _, position, count = entries
        intersection.view(-1).index_add_(0, position, count)
        for d, a in contributions.items():
            activation[d].index_add_(0, k, a)

    def _add_weighted(self, entries, contributions, k, weights) -> None:
        """The bootstrap replicates: each map's counts times its image's weight (R, maps)."""
        pair, position, count = entries
        R = self.bootstrap
        self.boot_intersection.view(R, -1).index_add_(1, position, weights[:, pair] * count[None])
        for d, a in contributions.items():
            self.boot_activation[d].index_add_(1, k, weights[:, :, None] * a[None])

    # -- merging and saving ---------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every count by state-dict name (all of them add up when shares merge)."""
        out = {"intersection": self.intersection, "truth": self.truth,
               **{f"activation_{d}": a for d, a in self.activation.items()}}
        if self.null:
            out["null_intersection"] = self.null_intersection
            out.update({f"null_activation_{d}": a for d, a in self.null_activation.items()})
        if self.bootstrap:
            out.update({"boot_intersection": self.boot_intersection, "boot_truth": self.boot_truth,
                        "boot_images": self.boot_images})
            out.update({f"boot_activation_{d}": a for d, a in self.boot_activation.items()})
        return out

    def merge(self, other: "IoUTally") -> None:
        theirs = other._tensors()
        for name, mine in self._tensors().items():
            mine += theirs[name].to(mine.device)
        self.images += other.images

    def state_dict(self) -> dict:
        return {**{name: t.cpu().clone() for name, t in self._tensors().items()}, "images": self.images}

    def load_state_dict(self, state: dict) -> None:
        for name, mine in self._tensors().items():
            mine.copy_(state[name])
        self.images = int(state["images"])


class _BatchLabels(NamedTuple):
    """One batch's labels as the tally reads them: label sets (`rows`), each pixel's set
    (`inverse`, image-major), pixels per image and which categories each image has."""

    rows: torch.Tensor
    inverse: torch.Tensor
    pixels: int
    pixel_present: torch.Tensor
    image_present: torch.Tensor
